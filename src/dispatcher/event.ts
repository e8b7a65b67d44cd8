import type { MsgHdrs } from '@nats-io/transport-node';
import { endpointOfStream, headers as h } from '../jetstream/layout.ts';
import { type MediaKind, parseAs, parseBody } from '../payload/parse.ts';

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
  /** The provider's original request headers (lowercase names), without the Hookyard-Header- prefix. */
  originalHeaders: Record<string, string>;
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
  const get = (name: string) => headers?.get(name) || undefined;
  const originalHeaders: Record<string, string> = {};
  if (headers) {
    const prefix = h.original.toLowerCase();
    for (const key of headers.keys()) {
      if (key.toLowerCase().startsWith(prefix))
        originalHeaders[key.slice(prefix.length).toLowerCase()] = headers.get(key);
    }
  }
  const contentType = get(h.contentType);
  let view: Promise<unknown> | undefined;
  return {
    id: get(h.deadLetterEventId) ?? get(h.eventId) ?? '',
    type: get(h.eventType) ?? '',
    contentType,
    receivedAt: get(h.receivedAt) ?? message.receivedAt?.toISOString(),
    endpoint: get(h.sourceStream) ? endpointOfStream(get(h.sourceStream) as string) : endpoint,
    replay: get(h.replay),
    originalHeaders,
    body: data,
    view() {
      const kind = get(h.bodyKind) as MediaKind | undefined;
      view ??= kind ? parseAs(kind, data, contentType).catch(() => undefined) : parseBody(data, contentType);
      return view;
    },
  };
}
