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
  if (nestingDepth(text) > maxNesting)
    throw new InvalidPayload(`body is not valid JSON: nested deeper than ${maxNesting} levels`);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new InvalidPayload(`body is not valid JSON: ${(err as Error).message}`);
  }
}

/** The deepest nesting of objects and arrays in JSON text, counted outside strings. */
function nestingDepth(text: string): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) deepest = Math.max(deepest, ++depth);
    else if (c === 0x7d || c === 0x5d) depth--;
  }
  return deepest;
}

async function parseXml(text: string): Promise<unknown> {
  // Webhooks carry no document type: a DOCTYPE only brings entities (external files, expansion bombs).
  if (/<!DOCTYPE/i.test(text)) throw new InvalidPayload('body is not accepted as XML: it declares a DOCTYPE');
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
 * would read them as UTF-8 only). A repeated field becomes a list.
 */
function parseForm(body: Uint8Array, charset: string): Record<string, string | string[]> {
  decode(new Uint8Array(), charset); // refuse an unknown charset up front
  const decoder = new TextDecoder(charset);
  // No prototype: a field named __proto__ or constructor is just a field.
  const fields: Record<string, string | string[]> = Object.create(null);
  const text = Buffer.from(body).toString('latin1');
  for (const pair of text.split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const [name, value] = [eq < 0 ? pair : pair.slice(0, eq), eq < 0 ? '' : pair.slice(eq + 1)].map((part) =>
      decoder.decode(percentDecode(part.replaceAll('+', ' '))),
    ) as [string, string];
    const existing = fields[name];
    fields[name] = existing === undefined ? value : [...(Array.isArray(existing) ? existing : [existing]), value];
  }
  return fields;
}

function percentDecode(latin1: string): Uint8Array {
  const bytes: number[] = [];
  for (let i = 0; i < latin1.length; i++) {
    const hex = latin1.slice(i + 1, i + 3);
    if (latin1[i] === '%' && /^[0-9a-fA-F]{2}$/.test(hex)) {
      bytes.push(Number.parseInt(hex, 16));
      i += 2;
    } else {
      bytes.push(latin1.charCodeAt(i));
    }
  }
  return Uint8Array.from(bytes);
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
