// The JSON view of a request body, as filters and the envelope format see it. Shared by the receiver (event type
// and dedup key from body fields) and the dispatcher (CEL filters, envelope `data`). Never throws: a body that
// does not parse in its declared type has no JSON view (undefined).
import { XMLParser, XMLValidator } from 'fast-xml-parser';

const xml = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@',
  parseTagValue: false,
  parseAttributeValue: false,
  // Entity expansion is how XML bombs work; a webhook payload has no need for DTD entities.
  processEntities: false,
});

/**
 * JSON (`application/json`, `*+json`, or no content type at all) → its value; `application/x-www-form-urlencoded`
 * in any charset → an object of strings (repeated keys: the last wins); XML (`*xml`) → an object (attributes as
 * `@name`); `multipart/form-data` → its text fields; anything else → undefined.
 */
export function parseBody(bytes: Uint8Array, contentType: string | undefined): unknown {
  try {
    const { type, params } = mediaType(contentType);
    if (type === '' || type === 'application/json' || type.endsWith('+json') || type === 'text/json') {
      return JSON.parse(decode(bytes, params.charset));
    }
    if (type === 'application/x-www-form-urlencoded') return parseForm(bytes, params.charset);
    if (type === 'application/xml' || type === 'text/xml' || type.endsWith('+xml')) {
      const text = decode(bytes, params.charset);
      if (XMLValidator.validate(text) !== true) return undefined;
      return xml.parse(text);
    }
    if (type === 'multipart/form-data' && params.boundary) return parseMultipart(bytes, params.boundary);
    return undefined;
  } catch {
    return undefined;
  }
}

function mediaType(contentType: string | undefined): { type: string; params: Record<string, string> } {
  const [type = '', ...rest] = (contentType ?? '').split(';');
  const params: Record<string, string> = {};
  for (const p of rest) {
    const i = p.indexOf('=');
    if (i > 0)
      params[p.slice(0, i).trim().toLowerCase()] = p
        .slice(i + 1)
        .trim()
        .replace(/^"(.*)"$/, '$1');
  }
  return { type: type.trim().toLowerCase(), params };
}

function decode(bytes: Uint8Array, charset: string | undefined): string {
  let decoder: TextDecoder;
  try {
    decoder = new TextDecoder(charset ?? 'utf-8');
  } catch {
    decoder = new TextDecoder('utf-8'); // an unknown charset: UTF-8 is what nearly every sender means
  }
  return decoder.decode(bytes);
}

/** Percent-decoding yields bytes, which are then read in the declared charset (UTF-8 when none is given). */
function parseForm(bytes: Uint8Array, charset: string | undefined): Record<string, string> {
  const text = Buffer.from(bytes).toString('latin1');
  const out: Record<string, string> = {};
  for (const pair of text.split('&')) {
    if (!pair) continue;
    const i = pair.indexOf('=');
    const key = unescapeForm(i < 0 ? pair : pair.slice(0, i), charset);
    setField(out, key, unescapeForm(i < 0 ? '' : pair.slice(i + 1), charset));
  }
  return out;
}

function unescapeForm(text: string, charset: string | undefined): string {
  const raw = text.replace(/\+/g, ' ');
  const bytes: number[] = [];
  for (let i = 0; i < raw.length; i++) {
    const hex = raw[i] === '%' ? raw.slice(i + 1, i + 3) : '';
    if (/^[0-9A-Fa-f]{2}$/.test(hex)) {
      bytes.push(Number.parseInt(hex, 16));
      i += 2;
    } else {
      bytes.push(raw.charCodeAt(i) & 0xff);
    }
  }
  return decode(Uint8Array.from(bytes), charset);
}

function parseMultipart(bytes: Uint8Array, boundary: string): Record<string, string> {
  const text = Buffer.from(bytes).toString('latin1');
  const out: Record<string, string> = {};
  for (const part of text.split(`--${boundary}`).slice(1)) {
    if (part.startsWith('--')) break;
    const end = part.indexOf('\r\n\r\n');
    if (end < 0) continue;
    const head = part.slice(0, end);
    const name = /content-disposition:[^\r\n]*;\s*name="([^"]*)"/i.exec(head)?.[1];
    // File parts are left out: the JSON view is for fields a filter can test, not uploaded content.
    if (name === undefined || /;\s*filename=/i.test(head)) continue;
    const value = part.slice(end + 4).replace(/\r\n$/, '');
    setField(out, Buffer.from(name, 'latin1').toString('utf8'), Buffer.from(value, 'latin1').toString('utf8'));
  }
  return out;
}

/** An own property even for a key such as `__proto__`, which plain assignment would treat as the prototype. */
function setField(out: Record<string, string>, key: string, value: string): void {
  Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
}
