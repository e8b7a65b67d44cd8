// The three delivery formats. Each returns the exact bytes to send and the headers that describe them; signing
// happens afterwards, over these bytes.
import { CloudEvent, HTTP } from 'cloudevents';
import type { StoredEvent } from './event.ts';

export type FormatSpec = { type: 'raw' | 'envelope' | 'cloudevents'; cloudEventsMode: 'binary' | 'structured' };

export interface Formatted {
  body: Uint8Array;
  headers: Record<string, string>;
}

/** The event's source as a URI reference: which ProviderEndpoint received it. */
export const eventSource = (event: StoredEvent) => `/hookyard/${event.endpoint}`;

/**
 * The bytes and headers of `event` in `format`. Raw needs nothing parsed and is returned as it is, not as a promise
 * (a promise per delivery is a turn of the microtask queue, docs/benchmarks.md); the others may parse the body.
 */
export function formatEvent(event: StoredEvent, format: FormatSpec): Formatted | Promise<Formatted> {
  if (format.type === 'raw') {
    return { body: event.body, headers: { 'content-type': event.contentType ?? 'application/octet-stream' } };
  }
  return format.type === 'envelope' ? envelope(event) : cloudEvent(event, format);
}

async function envelope(event: StoredEvent): Promise<Formatted> {
  const envelope = {
    id: event.id,
    type: event.type,
    source: eventSource(event),
    receivedAt: event.receivedAt,
    data: await dataView(event),
  };
  return { body: Buffer.from(JSON.stringify(envelope)), headers: { 'content-type': 'application/json' } };
}

async function cloudEvent(event: StoredEvent, format: FormatSpec): Promise<Formatted> {
  const contentType = event.contentType ?? 'application/octet-stream';
  const structured = format.cloudEventsMode === 'structured';
  const ce = new CloudEvent(
    {
      specversion: '1.0',
      id: event.id,
      type: event.type,
      source: eventSource(event),
      time: event.receivedAt,
      datacontenttype: contentType,
      // Binary mode sends the original bytes untouched (a provider's own signature over them still holds);
      // structured mode carries JSON as `data`, text as a string and anything else as `data_base64`.
      data: structured ? await structuredData(event, contentType) : event.body,
    },
    false,
  );
  const message = structured ? HTTP.structured(ce) : HTTP.binary(ce);
  const body = typeof message.body === 'string' ? Buffer.from(message.body) : (message.body as Uint8Array);
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(message.headers)) headers[k.toLowerCase()] = String(v);
  return { body, headers };
}

/** The JSON view of the body when it has one; otherwise its text, or base64 when it is not UTF-8. */
async function dataView(event: StoredEvent): Promise<unknown> {
  const parsed = await event.view();
  if (parsed !== undefined) return parsed;
  const text = utf8(event.body);
  return text ?? Buffer.from(event.body).toString('base64');
}

async function structuredData(event: StoredEvent, contentType: string): Promise<unknown> {
  if (/json/i.test(contentType)) {
    const parsed = await event.view();
    if (parsed !== undefined) return parsed;
  }
  if (/^text\/|xml|x-www-form-urlencoded/i.test(contentType)) {
    const text = utf8(event.body);
    if (text !== undefined) return text;
  }
  return event.body;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
function utf8(bytes: Uint8Array): string | undefined {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return undefined;
  }
}
