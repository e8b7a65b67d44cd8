import type { JsMsg } from '@nats-io/jetstream';
import type { MsgHdrs } from '@nats-io/transport-node';
import { endpointOfStream, headers as h } from '../jetstream/layout.ts';
import { type MediaKind, parseAs, parseBody } from '../payload/parse.ts';
import type { TraceContext } from '../runtime/tracing.ts';

/** One stored event, as the receiver published it. */
export interface StoredEvent {
  id: string;
  type: string;
  contentType: string | undefined;
  /** When the receiver stored it (RFC 3339). */
  receivedAt: string | undefined;
  /** `<namespace>/<endpoint>` */
  endpoint: string;
  /** The replay request that queued this copy of the event, if it is one. */
  replay: string | undefined;
  /** A test event (`hookyard test`), made up by the operator rather than received. */
  test: boolean;
  /** The provider's original request headers (lowercase names), without the Hookyard-Header- prefix. */
  originalHeaders: Record<string, string>;
  /** The receiver's span, stored with the event when it traced it: the parent of each attempt's span. */
  trace: TraceContext | undefined;
  body: Uint8Array;
  /** The JSON view of the body (parsed once, on first use; undefined when it has none). */
  view(): Promise<unknown>;
}

/** Hookyard-Header-, in any case (a test rather than a lowercased copy of every name). */
const originalPrefix = new RegExp(`^${h.original}`, 'i');

/**
 * The event of a stream message: its id is Nats-Msg-Id (Hookyard-Event-Id on a dead letter), its receive time the
 * message's stream timestamp, its endpoint the stream's. `headers`: the message's MsgHdrs, or its header block as
 * received (`headerBlock`).
 */
export function storedEvent(
  message: { data: Uint8Array; headers?: MsgHdrs | Uint8Array; receivedAt?: Date },
  endpoint: string,
): StoredEvent {
  // A dead letter or a replayed copy names the stream the event was first stored in.
  const { data, headers } = message;
  const values = headers instanceof Uint8Array ? readHeaderBlock(headers) : firstValues(headers);
  const originalHeaders: Record<string, string> = {};
  for (const [key, value] of values) {
    if (originalPrefix.test(key)) originalHeaders[key.slice(h.original.length).toLowerCase()] = value;
  }
  const get = (name: string) => values.get(name) || undefined;
  const contentType = get(h.contentType);
  const traceparent = get(h.traceparent);
  let view: Promise<unknown> | undefined;
  return {
    id: get(h.deadLetterEventId) ?? get(h.eventId) ?? '',
    type: get(h.eventType) ?? '',
    contentType,
    receivedAt: get(h.receivedAt) ?? message.receivedAt?.toISOString(),
    endpoint: get(h.sourceStream) ? endpointOfStream(get(h.sourceStream) as string) : endpoint,
    replay: get(h.replay),
    test: get(h.test) === 'true',
    originalHeaders,
    trace: traceparent ? { traceparent, tracestate: get(h.tracestate) } : undefined,
    body: data,
    view() {
      const kind = get(h.bodyKind) as MediaKind | undefined;
      view ??= kind ? parseAs(kind, data, contentType).catch(() => undefined) : parseBody(data, contentType);
      return view;
    },
  };
}

/**
 * Each name's first value, in one pass: MsgHdrs.get copies and filters the list of names on every call, which made
 * reading an event a fifth of what a delivery allocated (docs/benchmarks.md).
 */
function firstValues(headers: MsgHdrs | undefined): Map<string, string> {
  const values = new Map<string, string>();
  for (const [key, all] of headers ?? []) values.set(key, all[0] ?? '');
  return values;
}

const headerText = new TextDecoder();

/**
 * Each name's first value in a NATS header block ("NATS/1.0" then "Name: value" lines), read as MsgHdrs reads it
 * (names as they are, values trimmed) but without building a MsgHdrs, whose decoding rebuilds each name character
 * by character, copies the list of names and makes a regular expression per header: 9 % of the bytes a delivery
 * allocated with three headers, more with a provider's dozen (docs/benchmarks.md).
 */
export function readHeaderBlock(block: Uint8Array): Map<string, string> {
  const values = new Map<string, string>();
  const text = headerText.decode(block);
  let end = text.indexOf('\r\n'); // the status line
  while (end !== -1) {
    const start = end + 2;
    end = text.indexOf('\r\n', start);
    const line = text.slice(start, end === -1 ? text.length : end);
    const colon = line.indexOf(':');
    if (colon === -1) continue;
    const key = line.slice(0, colon);
    if (!values.has(key)) values.set(key, line.slice(colon + 1).trim());
  }
  return values;
}

/**
 * The header block of a message as nats.js received it, or undefined (no headers, or a nats.js whose message no
 * longer has this shape: its MsgHdrs are then read instead). Not part of nats.js's API: what MsgHdrs decoding
 * costs is said at `readHeaderBlock`.
 */
export function headerBlock(msg: JsMsg): Uint8Array | undefined {
  const m = (msg as unknown as { msg?: { _msg?: { hdr?: unknown }; _rdata?: unknown } }).msg;
  const size = m?._msg?.hdr;
  return typeof size === 'number' && size > 0 && m?._rdata instanceof Uint8Array
    ? m._rdata.subarray(0, size)
    : undefined;
}
