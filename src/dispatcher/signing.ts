import { createSecretKey } from 'node:crypto';
import type { WebhookSubscriptionSpec } from '../api/webhook-subscription.ts';
import { withoutNewline } from '../runtime/secrets.ts';
import { hmacText } from '../signatures/hmac.ts';
import { proignHeader, signProign } from '../signatures/proign.ts';
import {
  InvalidSigningKey,
  isAsymmetricSecret,
  signStandardWebhook,
  signStandardWebhookAsymmetric,
  standardWebhookHeaders,
  standardWebhookKey,
  standardWebhookPrivateKey,
} from '../signatures/standard-webhooks.ts';
import { signStripe } from '../signatures/stripe.ts';

export { InvalidSigningKey };

type SigningSpec = NonNullable<WebhookSubscriptionSpec['signing']>;

/** Signs the exact bytes sent; returns the headers to add. */
export type Signer = (eventId: string, body: Uint8Array, nowSeconds?: number) => Record<string, string>;

/** The signature header of the schemes that send one, when `header` is left out. */
export const defaultSignatureHeader = {
  hmac: 'X-Hookyard-Signature',
  stripe: 'Stripe-Signature',
  proign: proignHeader,
};

const now = () => Math.floor(Date.now() / 1000);

/**
 * Every scheme signs with every listed secret, so that while rotating a receiver holding either key verifies:
 * - standardWebhooks: webhook-id is the event id, stable across retries so receivers can deduplicate, and one
 *   signature per secret, space-separated as the spec says: `v1,<sig>` for a `whsec_` secret, `v1a,<sig>` for a
 *   `whsk_` or PEM Ed25519 key (so a move from symmetric to asymmetric keys is a rotation like any other).
 * - hmac: `<header>: <prefix><hex or base64 HMAC of the body>`, one entry per secret joined by `, ` (what HTTP makes
 *   of a header sent once per value); with one secret the header is a single entry.
 * - stripe: `t=<seconds>,v1=<hex>[,v1=<hex>...]`, Stripe's own layout for several secrets.
 * - proign: `sha256=<hex HMAC of the re-serialized JSON>` (src/signatures/proign.ts), entries joined as for hmac.
 * A key that cannot be read throws InvalidSigningKey naming its Secret and key (never the value). Each HMAC key is
 * made a KeyObject once: given a Buffer, node:crypto makes one on every call, which cost four times the HMAC of a
 * 1 KiB body itself (docs/benchmarks.md).
 */
export function createSigner(spec: SigningSpec, secrets: Buffer[]): Signer {
  if (spec.scheme === 'standardWebhooks') {
    const signers = secrets.map((s, i) => standardWebhookSigner(s.toString('utf8'), spec.secretRefs[i]));
    return (eventId, body, nowSeconds = now()) => ({
      [standardWebhookHeaders.id]: eventId,
      [standardWebhookHeaders.timestamp]: String(nowSeconds),
      [standardWebhookHeaders.signature]: signers.map((sign) => sign(eventId, nowSeconds, body)).join(' '),
    });
  }
  const keys = secrets.map((s) => createSecretKey(withoutNewline(s)));
  const header = (spec.header ?? defaultSignatureHeader[spec.scheme]).toLowerCase();
  if (spec.scheme === 'stripe') {
    return (_eventId, body, nowSeconds = now()) => ({ [header]: signStripe(keys, nowSeconds, body) });
  }
  if (spec.scheme === 'proign') return (_eventId, body) => ({ [header]: signProign(keys, body) });
  return (_eventId, body) => ({
    [header]: keys.map((key) => `${spec.prefix}${hmacText(spec.algorithm, key, spec.encoding, body)}`).join(', '),
  });
}

function standardWebhookSigner(secret: string, ref: { name: string; key: string } | undefined) {
  if (!isAsymmetricSecret(secret)) {
    const key = createSecretKey(standardWebhookKey(secret));
    return (id: string, seconds: number, body: Uint8Array) => signStandardWebhook(key, id, seconds, body);
  }
  try {
    const key = standardWebhookPrivateKey(secret);
    return (id: string, seconds: number, body: Uint8Array) => signStandardWebhookAsymmetric(key, id, seconds, body);
  } catch (err) {
    throw new InvalidSigningKey(`signing key "${ref?.key}" of Secret "${ref?.name}" ${(err as Error).message}`);
  }
}
