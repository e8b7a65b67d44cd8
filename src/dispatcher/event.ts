import type { MsgHdrs } from '@nats-io/transport-node';
import { headers as h } from '../jetstream/layout.ts';

/** One stored event, as the receiver published it. */
export interface StoredEvent {
  id: string;
  type: string;
  contentType: string | undefined;
  receivedAt: string | undefined;
  provider: string | undefined;
  /** `<namespace>/<endpoint>` */
  endpoint: string;
  /** The provider's original request headers (lowercase names), without the Hookyard-Header- prefix. */
  originalHeaders: Record<string, string>;
  body: Uint8Array;
}

export function storedEvent(data: Uint8Array, headers: MsgHdrs | undefined, fallbackEndpoint: string): StoredEvent {
  const get = (name: string) => headers?.get(name) || undefined;
  const originalHeaders: Record<string, string> = {};
  if (headers) {
    const prefix = h.original.toLowerCase();
    for (const key of headers.keys()) {
      if (key.toLowerCase().startsWith(prefix))
        originalHeaders[key.slice(prefix.length).toLowerCase()] = headers.get(key);
    }
  }
  return {
    id: get(h.eventId) ?? get('Nats-Msg-Id') ?? '',
    type: get(h.eventType) ?? '',
    contentType: get(h.contentType),
    receivedAt: get(h.receivedAt),
    provider: get(h.provider),
    endpoint: get(h.endpoint) ?? fallbackEndpoint,
    originalHeaders,
    body: data,
  };
}
