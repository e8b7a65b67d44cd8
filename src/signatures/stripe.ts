// Stripe-Signature: "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<raw body>'>[,v1=...]" (Stripe's docs).
import type { KeyObject } from 'node:crypto';
import { hmacText, signatureEquals, timestampWithin } from './hmac.ts';
import type { VerifyResult } from './standard-webhooks.ts';

/** One `v1=` per secret, in order, so a receiver holding either one accepts it while rotating (Stripe does the same). */
export function signStripe(
  secrets: Uint8Array | KeyObject | (Uint8Array | KeyObject)[],
  timestampSeconds: number,
  body: Uint8Array,
): string {
  const all = Array.isArray(secrets) ? secrets : [secrets];
  const v1 = all.map((s) => `,v1=${hmacText('sha256', s, 'hex', `${timestampSeconds}.`, body)}`);
  return `t=${timestampSeconds}${v1.join('')}`;
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
    const expected = hmacText('sha256', secret, 'hex', `${t}.`, body);
    if (received.some((r) => signatureEquals(r, expected))) return { ok: true };
  }
  return { ok: false, reason: 'no Stripe-Signature v1 signature matches' };
}
