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

/**
 * The event of a stream message: its id is Nats-Msg-Id (Hookyard-Event-Id on a dead letter), its receive time the
 * message's stream timestamp, its endpoint the stream's.
 */
export function storedEvent(
  message: { data: Uint8Array; headers?: MsgHdrs; receivedAt?: Date },
  endpoint: string,
): StoredEvent {
  // A dead letter or a replayed copy names the stream the event was first stored in.
  const { data, headers } = message;
  // One pass over the headers, each name's first value: MsgHdrs.get copies and filters the list of names on every
  // call, which made reading an event a fifth of what a delivery allocated (docs/benchmarks.md).
  const values = new Map<string, string>();
  const originalHeaders: Record<string, string> = {};
  const prefix = h.original.toLowerCase();
  for (const [key, all] of headers ?? []) {
    const value = all[0] ?? '';
    values.set(key, value);
    if (key.toLowerCase().startsWith(prefix)) originalHeaders[key.slice(prefix.length).toLowerCase()] = value;
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
