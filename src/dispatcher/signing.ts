import type { WebhookSubscriptionSpec } from '../api/webhook-subscription.ts';
import { withoutNewline } from '../runtime/secrets.ts';
import { hmac } from '../signatures/hmac.ts';
import { signStandardWebhook, standardWebhookHeaders, standardWebhookKey } from '../signatures/standard-webhooks.ts';

type SigningSpec = NonNullable<WebhookSubscriptionSpec['signing']>;

/** Signs the exact bytes sent; returns the headers to add. */
export type Signer = (eventId: string, body: Uint8Array, nowSeconds?: number) => Record<string, string>;

/**
 * Standard Webhooks: webhook-id is the event id, stable across retries so receivers can deduplicate, and one
 * `v1,<sig>` per secret (the spec allows several), so a receiver holding either key accepts it while rotating.
 * HMAC: `<header>: <prefix><hex or base64 HMAC of the body>`, one such entry per secret joined by `, ` (what HTTP
 * makes of a header sent once per value), so a receiver holding either key finds its own entry while rotating;
 * with one secret the header is a single entry.
 */
export function createSigner(spec: SigningSpec, secrets: Buffer[]): Signer {
  if (spec.scheme === 'standardWebhooks') {
    const keys = secrets.map((s) => standardWebhookKey(s.toString('utf8')));
    return (eventId, body, nowSeconds = Math.floor(Date.now() / 1000)) => ({
      [standardWebhookHeaders.id]: eventId,
      [standardWebhookHeaders.timestamp]: String(nowSeconds),
      [standardWebhookHeaders.signature]: keys.map((k) => signStandardWebhook(k, eventId, nowSeconds, body)).join(' '),
    });
  }
  const keys = secrets.map(withoutNewline);
  const header = spec.header.toLowerCase();
  return (_eventId, body) => ({
    [header]: keys.map((key) => `${spec.prefix}${hmac(spec.algorithm, key, body).toString(spec.encoding)}`).join(', '),
  });
}
