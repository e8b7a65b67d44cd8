import { createHmac, type KeyObject, timingSafeEqual } from 'node:crypto';

export type Algorithm = 'sha1' | 'sha256' | 'sha512';
export type Encoding = 'hex' | 'base64';

export function hmac(algorithm: Algorithm, key: Uint8Array | KeyObject, ...parts: (string | Uint8Array)[]): Buffer {
  const h = createHmac(algorithm, key);
  for (const part of parts) h.update(part);
  return h.digest();
}

/**
 * The HMAC as text, for a header: OpenSSL's digest encoded at once, without a Buffer of it first (a third of the
 * cost of signing a 1 KiB body per delivery, docs/benchmarks.md). `hmac` gives the bytes, to compare.
 */
export function hmacText(
  algorithm: Algorithm,
  key: Uint8Array | KeyObject,
  encoding: Encoding,
  ...parts: (string | Uint8Array)[]
): string {
  const h = createHmac(algorithm, key);
  for (const part of parts) h.update(part);
  return h.digest(encoding);
}

/**
 * Compares a received signature with the expected one in constant time. Never throws: a signature of another
 * length is simply not equal (its length tells an attacker nothing the algorithm does not).
 */
export function signatureEquals(received: string | Uint8Array, expected: string | Uint8Array): boolean {
  const a = typeof received === 'string' ? Buffer.from(received) : received;
  const b = typeof expected === 'string' ? Buffer.from(expected) : expected;
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Whether `text` is Unix seconds (up to 12 digits) within `toleranceSeconds` of now, either way. */
export function timestampWithin(text: string | undefined, toleranceSeconds: number, nowSeconds: number): boolean {
  return text !== undefined && /^\d{1,12}$/.test(text) && Math.abs(nowSeconds - Number(text)) <= toleranceSeconds;
}

/** Decodes a hex or base64 signature; undefined when it is not valid in that encoding. */
export function decodeSignature(text: string, encoding: Encoding): Buffer | undefined {
  if (encoding === 'hex') return /^([0-9a-fA-F]{2})+$/.test(text) ? Buffer.from(text, 'hex') : undefined;
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(text)) return undefined;
  return Buffer.from(text, text.includes('-') || text.includes('_') ? 'base64url' : 'base64');
}
