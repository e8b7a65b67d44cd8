// Standard Webhooks (standardwebhooks.com): the signed content is "<id>.<timestamp>.<body>", sent with webhook-id and
// webhook-timestamp headers and a space-separated list in webhook-signature: "v1,<base64 HMAC-SHA256>" for a
// symmetric key (whsec_<base64>), "v1a,<base64 Ed25519 signature>" for an asymmetric one (whsk_<base64>).
// Written here rather than taken from the `standardwebhooks` package because that package converts a Buffer body
// to a string before signing (changing any body that is not UTF-8), fixes the tolerance at 5 minutes, takes one
// secret and has no v1a; the tests check that both agree on v1.
import { createPrivateKey, type KeyObject, sign } from 'node:crypto';
import { hmacText, signatureEquals, timestampWithin } from './hmac.ts';

export const standardWebhookHeaders = {
  id: 'webhook-id',
  timestamp: 'webhook-timestamp',
  signature: 'webhook-signature',
} as const;

/** The key of a `whsec_<base64>` secret (or of a bare base64 one). */
export function standardWebhookKey(secret: string): Buffer {
  return Buffer.from(secret.trim().replace(/^whsec_/, ''), 'base64');
}

export function signStandardWebhook(
  key: Uint8Array | KeyObject,
  id: string,
  timestampSeconds: number,
  body: Uint8Array,
): string {
  return `v1,${hmacText('sha256', key, 'base64', `${id}.${timestampSeconds}.`, body)}`;
}

export class InvalidSigningKey extends Error {
  override name = 'InvalidSigningKey';
}

// PKCS#8 DER of an Ed25519 private key is this fixed prefix followed by the 32-byte seed (RFC 8410).
const ed25519Pkcs8Prefix = Buffer.from('302e020100300506032b657004220420', 'hex');

/**
 * The Ed25519 private key of a `whsk_<base64>` secret, or of a PEM private key as `openssl genpkey -algorithm
 * ed25519` writes it. The spec says only "a standard ed25519 key pair, base64 encoded": both serializations in use
 * are taken, the 32-byte seed and libsodium's 64 bytes (seed, then public key). Errors never quote the key.
 */
export function standardWebhookPrivateKey(secret: string): KeyObject {
  const text = secret.trim();
  if (text.startsWith('-----BEGIN')) {
    let key: KeyObject;
    try {
      key = createPrivateKey(text);
    } catch {
      throw new InvalidSigningKey('is not a PEM private key that can be read');
    }
    if (key.asymmetricKeyType !== 'ed25519') {
      throw new InvalidSigningKey(`is a ${key.asymmetricKeyType} key; Standard Webhooks' v1a needs an Ed25519 key`);
    }
    return key;
  }
  const raw = Buffer.from(text.replace(/^whsk_/, ''), 'base64');
  if (raw.length !== 32 && raw.length !== 64) {
    throw new InvalidSigningKey(`decodes to ${raw.length} bytes; a whsk_ key is 32 bytes (or 64: seed and public key)`);
  }
  const key = createPrivateKey({
    key: Buffer.concat([ed25519Pkcs8Prefix, raw.subarray(0, 32)]),
    format: 'der',
    type: 'pkcs8',
  });
  if (raw.length === 64) {
    const publicKey = key.export({ format: 'jwk' }).x as string;
    if (!Buffer.from(publicKey, 'base64url').equals(raw.subarray(32))) {
      throw new InvalidSigningKey('has 64 bytes whose second half is not the public key of the first');
    }
  }
  return key;
}

/** Whether a Standard Webhooks secret is asymmetric (signs v1a): `whsk_` or a PEM private key. */
export const isAsymmetricSecret = (secret: string) => /^\s*(whsk_|-----BEGIN)/.test(secret);

export function signStandardWebhookAsymmetric(
  key: KeyObject,
  id: string,
  timestampSeconds: number,
  body: Uint8Array,
): string {
  const content = Buffer.concat([Buffer.from(`${id}.${timestampSeconds}.`), body]);
  return `v1a,${sign(null, content, key).toString('base64')}`;
}

/** The public key a receiver verifies v1a with, as the spec serializes it: `whpk_<base64 of the 32 bytes>`. */
export function standardWebhookPublicKey(key: KeyObject): string {
  return `whpk_${Buffer.from(key.export({ format: 'jwk' }).x as string, 'base64url').toString('base64')}`;
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
