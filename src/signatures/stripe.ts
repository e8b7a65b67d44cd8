// Stripe-Signature: "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<raw body>'>[,v1=...]" (Stripe's docs).
import { hmac, signatureEquals, timestampWithin } from './hmac.ts';
import type { VerifyResult } from './standard-webhooks.ts';

export function signStripe(secret: Uint8Array, timestampSeconds: number, body: Uint8Array): string {
  return `t=${timestampSeconds},v1=${hmac('sha256', secret, `${timestampSeconds}.`, body).toString('hex')}`;
}

export function verifyStripe(
  secrets: Uint8Array[],
  header: string | undefined,
  body: Uint8Array,
  toleranceSeconds: number,
  nowSeconds = Math.floor(Date.now() / 1000),
): VerifyResult {
  if (!header) return { ok: false, reason: 'missing Stripe-Signature header' };
  const pairs = header.split(',').map((p) => p.trim().split('=', 2) as [string, string | undefined]);
  const t = pairs.find(([k]) => k === 't')?.[1];
  if (!timestampWithin(t, toleranceSeconds, nowSeconds)) {
    return { ok: false, reason: 'Stripe-Signature has no timestamp, or one outside the tolerance' };
  }
  const received = pairs.filter(([k, v]) => k === 'v1' && v).map(([, v]) => v as string);
  for (const secret of secrets) {
    const expected = hmac('sha256', secret, `${t}.`, body).toString('hex');
    if (received.some((r) => signatureEquals(r, expected))) return { ok: true };
  }
  return { ok: false, reason: 'no Stripe-Signature v1 signature matches' };
}
