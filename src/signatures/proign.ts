// PROIGN's sender model (its webhook document): `X-Proign-Signature: sha256=<hex HMAC-SHA256>` of
// `JSON.stringify(payload)`, where `payload` is the body as the receiver's JSON parser hands it over. So a receiver
// that follows PROIGN's snippet signs what it re-serialized, not the bytes on the wire: key order is kept, but
// whitespace, escapes (`\u00e9`), number spellings (`1.0`, `1e2`) and repeated keys are not. Signing the
// re-serialization, made by the same JSON.parse and JSON.stringify, is what that receiver reproduces whatever the
// bytes look like.
import type { KeyObject } from 'node:crypto';
import { hmacText } from './hmac.ts';

export const proignHeader = 'X-Proign-Signature';

/**
 * What PROIGN's snippet hashes for this body: `JSON.stringify(JSON.parse(body))`. A body that is not JSON (PROIGN
 * sends only JSON; another provider's XML, say) is signed over its exact bytes, as scheme hmac does.
 */
export function proignSignedContent(body: Uint8Array): Uint8Array {
  const text = Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8');
  try {
    return Buffer.from(JSON.stringify(JSON.parse(text)));
  } catch {
    return body;
  }
}

/** One `sha256=<hex>` per secret, joined by `, ` when several are listed (see docs/dispatcher.md for rotation). */
export function signProign(secrets: (Uint8Array | KeyObject)[], body: Uint8Array): string {
  const content = proignSignedContent(body);
  return secrets.map((s) => `sha256=${hmacText('sha256', s, 'hex', content)}`).join(', ');
}
