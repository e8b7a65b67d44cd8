// The JSON view of a request body, by content type: what event types, dedup keys and filters read. What is
// stored and delivered is always the raw bytes; this view is only read.
import type { XMLParser, XMLValidator } from 'fast-xml-parser';

export type MediaKind = 'json' | 'form' | 'multipart' | 'xml';

export class InvalidPayload extends Error {
  override name = 'InvalidPayload';
}

/** The kind of a Content-Type header, or undefined when it is missing or not one Hookyard reads. */
export function mediaKind(contentType: string | undefined): MediaKind | undefined {
  const type = contentType?.split(';')[0]?.trim().toLowerCase();
  if (!type) return undefined;
  if (type === 'application/json' || type.endsWith('+json')) return 'json';
  if (type === 'application/x-www-form-urlencoded') return 'form';
  if (type === 'multipart/form-data') return 'multipart';
  if (type === 'application/xml' || type === 'text/xml' || type.endsWith('+xml')) return 'xml';
  return undefined;
}

/** Guesses JSON or XML from the first character, for senders that forget the Content-Type. */
export function sniff(body: Uint8Array): MediaKind | undefined {
  const first = Buffer.from(body.subarray(0, 64)).toString('utf8').trimStart()[0];
  if (first === '{' || first === '[') return 'json';
  if (first === '<') return 'xml';
  return undefined;
}

/**
 * How deep a JSON or XML body may nest. Webhook bodies nest a handful of levels; much deeper ones only serve to
 * exhaust the stack of whatever reads them later (re-serializing for a signature, a subscription's filter).
 * fast-xml-parser's own default is the same.
 */
export const maxNesting = 100;

// fast-xml-parser is loaded with the first XML body: most endpoints never get one, and loaded at start it cost a
// receiver about 7 MiB of its idle RSS.
let xmlReader: Promise<{ parser: XMLParser; validator: typeof XMLValidator }> | undefined;
const xml = () =>
  (xmlReader ??= import('fast-xml-parser').then(({ XMLParser, XMLValidator }) => ({
    parser: new XMLParser({
      ignoreAttributes: false,
      attributeNamePrefix: '@',
      parseTagValue: false,
      processEntities: false,
      maxNestedTags: maxNesting,
    }),
    validator: XMLValidator,
  })));

/** Parses the body as the given kind; throws InvalidPayload with what is wrong, and nothing else. */
export async function parseAs(kind: MediaKind, body: Uint8Array, contentType?: string): Promise<unknown> {
  const charset = /;\s*charset="?([^";]+)"?/i.exec(contentType ?? '')?.[1]?.trim() ?? 'utf-8';
  try {
    switch (kind) {
      case 'json':
        return parseJson(decode(body, charset));
      case 'form':
        return parseForm(body, charset);
      case 'xml':
        return await parseXml(decode(body, charset));
      case 'multipart':
        return await parseMultipart(body, contentType);
    }
  } catch (err) {
    if (err instanceof InvalidPayload) throw err;
    // A parser's own failure (a stack overflow, an internal limit) is still the body's fault.
    throw new InvalidPayload(`body cannot be read as ${kind}: ${(err as Error).message}`);
  }
}

function parseJson(text: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new InvalidPayload(`body is not valid JSON: ${(err as Error).message}`);
  }
  if (nestsTooDeep(value)) throw new InvalidPayload(`body is not valid JSON: nested deeper than ${maxNesting} levels`);
  return value;
}

/**
 * Whether a parsed JSON value nests objects and arrays deeper than maxNesting. Checked after JSON.parse, which
 * keeps its own stack and reads any depth: walking the few objects of a webhook body costs less than reading its
 * text again character by character, and the walk keeps its own stack too.
 */
function nestsTooDeep(value: unknown): boolean {
  const pending: [object, number][] = value !== null && typeof value === 'object' ? [[value, 1]] : [];
  for (let next = pending.pop(); next; next = pending.pop()) {
    const [node, depth] = next;
    if (depth > maxNesting) return true;
    for (const child of Object.values(node)) {
      if (child !== null && typeof child === 'object') pending.push([child, depth + 1]);
    }
  }
  return false;
}

/**
 * Whether XML text nests elements deeper than maxNesting. Checked before fast-xml-parser's validator sees the
 * text: on 50,000 nested tags the validator alone grew a receiver's heap by about 160 MiB, which V8 kept.
 */
function xmlNestsTooDeep(text: string): boolean {
  let depth = 0;
  for (let i = text.indexOf('<'); i >= 0; i = text.indexOf('<', i + 1)) {
    const next = text[i + 1];
    if (next === '/') depth--;
    else if (next === '!' || next === '?') {
      // Comments, CDATA and processing instructions hold text, not elements.
      const end = text.startsWith('<!--', i) ? '-->' : text.startsWith('<![CDATA[', i) ? ']]>' : '>';
      const at = text.indexOf(end, i);
      if (at < 0) return false;
      i = at;
    } else {
      const close = tagEnd(text, i);
      if (close < 0) return false;
      if (text[close - 1] !== '/' && ++depth > maxNesting) return true;
      i = close;
    }
  }
  return false;
}

/** The index of the `>` that ends the tag starting at `start`, past quoted attribute values; -1 if none. */
function tagEnd(text: string, start: number): number {
  let quote = '';
  for (let i = start + 1; i < text.length; i++) {
    const c = text[i];
    if (quote) {
      if (c === quote) quote = '';
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '>') return i;
  }
  return -1;
}

async function parseXml(text: string): Promise<unknown> {
  // Webhooks carry no document type: a DOCTYPE only brings entities (external files, expansion bombs).
  if (/<!DOCTYPE/i.test(text)) throw new InvalidPayload('body is not accepted as XML: it declares a DOCTYPE');
  if (xmlNestsTooDeep(text)) throw new InvalidPayload(`body is not valid XML: nested deeper than ${maxNesting} levels`);
  const { parser, validator } = await xml();
  const valid = validator.validate(text);
  if (valid !== true) throw new InvalidPayload(`body is not valid XML: ${valid.err.msg} (line ${valid.err.line})`);
  try {
    return parser.parse(text);
  } catch (err) {
    throw new InvalidPayload(`body is not valid XML: ${(err as Error).message}`);
  }
}

async function parseMultipart(body: Uint8Array, contentType: string | undefined): Promise<Record<string, unknown>> {
  // Garbage without the declared boundary is refused here: undici's parser costs far more to say the same.
  const boundary = /;\s*boundary="?([^";]+)"?/i.exec(contentType ?? '')?.[1];
  if (!boundary) throw new InvalidPayload('body is not valid multipart/form-data: the Content-Type names no boundary');
  if (Buffer.from(body.buffer, body.byteOffset, body.byteLength).indexOf(`--${boundary}`) < 0) {
    throw new InvalidPayload(`body is not valid multipart/form-data: it has no --${boundary} boundary`);
  }
  let form: FormData;
  try {
    form = await new Response(Buffer.from(body), { headers: { 'content-type': contentType ?? '' } }).formData();
  } catch (err) {
    throw new InvalidPayload(`body is not valid multipart/form-data: ${(err as Error).message}`);
  }
  const fields: Record<string, unknown> = Object.create(null);
  for (const [name, value] of form) {
    fields[name] = typeof value === 'string' ? value : { filename: value.name, size: value.size, type: value.type };
  }
  return fields;
}

function decode(body: Uint8Array, charset: string): string {
  try {
    return new TextDecoder(charset, { fatal: false }).decode(body);
  } catch {
    throw new InvalidPayload(`unknown charset "${charset}"`);
  }
}

/**
 * application/x-www-form-urlencoded in any charset: percent-escapes are bytes of that charset (URLSearchParams
 * would read them as UTF-8 only). A repeated field becomes a list. Read byte by byte into one buffer per part:
 * building a JS array per byte, as this did, grew a receiver's heap by over 100 MiB on 300 large bodies.
 */
function parseForm(body: Uint8Array, charset: string): Record<string, string | string[]> {
  decode(new Uint8Array(), charset); // refuse an unknown charset up front
  const decoder = new TextDecoder(charset);
  const text = (part: Uint8Array) => decoder.decode(formDecode(part));
  // No prototype: a field named __proto__ or constructor is just a field.
  const fields: Record<string, string | string[]> = Object.create(null);
  for (let start = 0; start < body.length; ) {
    const amp = body.indexOf(0x26, start);
    const end = amp < 0 ? body.length : amp;
    const pair = body.subarray(start, end);
    start = end + 1;
    if (pair.length === 0) continue;
    const eq = pair.indexOf(0x3d);
    const name = text(eq < 0 ? pair : pair.subarray(0, eq));
    const value = eq < 0 ? '' : text(pair.subarray(eq + 1));
    const existing = fields[name];
    if (existing === undefined) fields[name] = value;
    else if (Array.isArray(existing)) existing.push(value);
    else fields[name] = [existing, value];
  }
  return fields;
}

const hexValue = (byte: number | undefined): number => {
  if (byte === undefined) return -1;
  if (byte >= 0x30 && byte <= 0x39) return byte - 0x30;
  const lower = byte | 0x20;
  return lower >= 0x61 && lower <= 0x66 ? lower - 0x61 + 10 : -1;
};

/** One form part's bytes with `+` as a space and `%XX` as the byte XX; any other `%` stays as it is. */
function formDecode(part: Uint8Array): Uint8Array {
  const out = new Uint8Array(part.length);
  let n = 0;
  for (let i = 0; i < part.length; i++) {
    const byte = part[i] as number;
    const high = byte === 0x25 ? hexValue(part[i + 1]) : -1;
    const low = high >= 0 ? hexValue(part[i + 2]) : -1;
    if (low >= 0) {
      out[n++] = high * 16 + low;
      i += 2;
    } else out[n++] = byte === 0x2b ? 0x20 : byte;
  }
  return out.subarray(0, n);
}

/** The view for filters: the parsed body when it can be read, undefined otherwise; never throws. */
export async function parseBody(body: Uint8Array, contentType: string | undefined): Promise<unknown> {
  const kind = mediaKind(contentType) ?? sniff(body);
  if (!kind) return undefined;
  try {
    return await parseAs(kind, body, contentType);
  } catch {
    return undefined;
  }
}

/** Reads a dotted path (`order_data.eventType`, `items.0.sku`) from a parsed body. */
export function readPath(value: unknown, path: string): unknown {
  let current = value;
  for (const part of path.split('.')) {
    if (current === null || typeof current !== 'object' || !Object.hasOwn(current, part)) return undefined;
    current = (current as Record<string, unknown>)[part];
  }
  return current;
}
