// Standard Webhooks (standardwebhooks.com): signature = base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>")),
// sent as "v1,<signature>" (several separated by spaces) with webhook-id and webhook-timestamp headers.
// Written here rather than taken from the `standardwebhooks` package because that package converts a Buffer body
// to a string before signing (changing any body that is not UTF-8), fixes the tolerance at 5 minutes, and takes
// one secret; the tests check that both agree.
import { hmac, signatureEquals, timestampWithin } from './hmac.ts';

export const standardWebhookHeaders = {
  id: 'webhook-id',
  timestamp: 'webhook-timestamp',
  signature: 'webhook-signature',
} as const;

/** The key of a `whsec_<base64>` secret (or of a bare base64 one). */
export function standardWebhookKey(secret: string): Buffer {
  return Buffer.from(secret.trim().replace(/^whsec_/, ''), 'base64');
}

export function signStandardWebhook(key: Uint8Array, id: string, timestampSeconds: number, body: Uint8Array): string {
  return `v1,${hmac('sha256', key, `${id}.${timestampSeconds}.`, body).toString('base64')}`;
}

export type VerifyResult = { ok: true } | { ok: false; reason: string };

export function verifyStandardWebhook(
  keys: Uint8Array[],
  headers: { id?: string; timestamp?: string; signature?: string },
  body: Uint8Array,
  toleranceSeconds: number,
  nowSeconds = Math.floor(Date.now() / 1000),
): VerifyResult {
  const { id, timestamp, signature } = headers;
  if (!id || !timestamp || !signature) {
    return { ok: false, reason: 'missing webhook-id, webhook-timestamp or webhook-signature header' };
  }
  if (!timestampWithin(timestamp, toleranceSeconds, nowSeconds)) {
    return { ok: false, reason: 'webhook-timestamp is not Unix seconds within the tolerance' };
  }
  const received = signature
    .split(' ')
    .filter((s) => s.startsWith('v1,'))
    .map((s) => s.slice(3));
  for (const key of keys) {
    const expected = signStandardWebhook(key, id, Number(timestamp), body).slice(3);
    if (received.some((r) => signatureEquals(r, expected))) return { ok: true };
  }
  return { ok: false, reason: 'no webhook-signature matches' };
}
