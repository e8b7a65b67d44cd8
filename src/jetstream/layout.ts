// Where events live in JetStream: one stream per ProviderEndpoint, one dead-letter stream per
// WebhookSubscription, and the headers that travel with every stored event. Shared by the receiver, the
// dispatcher, the operator and dev mode, so all of them agree on names.

/** Stream names allow letters, digits, - and _; namespaces and names are DNS labels, so _ separates unambiguously. */
export const endpointStream = (namespace: string, endpoint: string) => `hookyard_${namespace}_${endpoint}`;
export const deadLetterStream = (namespace: string, subscription: string) =>
  `hookyard-dlq_${namespace}_${subscription}`;

/** Every attempt to deliver the subscription's events, one record each (src/dispatcher/history.ts). */
export const attemptStream = (namespace: string, subscription: string) =>
  `hookyard-attempts_${namespace}_${subscription}`;
/** Events asked to be sent again (a replay request), read by the subscription's dispatcher like a source. */
export const replayStream = (namespace: string, subscription: string) => `hookyard-replay_${namespace}_${subscription}`;

/**
 * The resends of each event the receiver answered as duplicates (already stored), one empty message each under the
 * event id, so `hookyard events` counts them per event. Kept as long as the endpoint's events.
 */
export const duplicateStream = (namespace: string, endpoint: string) => `hookyard-dup_${namespace}_${endpoint}`;
export const duplicateSubject = (namespace: string, endpoint: string, eventId: string) =>
  `hookyard-dup.${namespace}.${endpoint}.${Buffer.from(eventId).toString('base64url') || '_'}`;
export const duplicateSubjects = (namespace: string, endpoint: string) => `hookyard-dup.${namespace}.${endpoint}.*`;

/** `<namespace>/<endpoint>` of an endpoint stream's name (the inverse of endpointStream). */
export function endpointOfStream(stream: string): string {
  const [, namespace, endpoint] = /^hookyard_([^_]+)_(.+)$/.exec(stream) ?? [];
  return namespace && endpoint ? `${namespace}/${endpoint}` : stream;
}

export const endpointSubjects = (namespace: string, endpoint: string) => `hookyard.${namespace}.${endpoint}.>`;
export const deadLetterSubject = (namespace: string, subscription: string) =>
  `hookyard-dlq.${namespace}.${subscription}`;

/** Attempt records are published under the event id, base64url (subject-safe), so one event's are read alone. */
export const attemptSubject = (namespace: string, subscription: string, eventId: string) =>
  `hookyard-attempts.${namespace}.${subscription}.${Buffer.from(eventId).toString('base64url') || '_'}`;
export const attemptSubjects = (namespace: string, subscription: string) =>
  `hookyard-attempts.${namespace}.${subscription}.*`;
export const replaySubject = (namespace: string, subscription: string) =>
  `hookyard-replay.${namespace}.${subscription}`;

/**
 * An event type as subject tokens: each dot-separated part keeps letters, digits, - and _, and anything else
 * (spaces, *, >, slashes, ...) becomes _, so no event type can act as a wildcard or add a token.
 */
export function eventTypeTokens(eventType: string): string {
  return eventType
    .split('.')
    .map((part) => part.replace(/[^A-Za-z0-9_-]/g, '_') || '_')
    .join('.');
}

export const eventSubject = (namespace: string, endpoint: string, eventType: string) =>
  `hookyard.${namespace}.${endpoint}.${eventTypeTokens(eventType)}`;

/**
 * A subscription's event-type pattern as a filter subject: literal parts are made subject-safe the same way, and
 * `*` (one part) and a final `>` (the rest) stay wildcards.
 */
export function eventFilterSubject(namespace: string, endpoint: string, pattern: string): string {
  const tokens = pattern.split('.').map((part) => (part === '*' || part === '>' ? part : eventTypeTokens(part)));
  return `hookyard.${namespace}.${endpoint}.${tokens.join('.')}`;
}

/**
 * Headers stored with each event. They are few because each one costs on the receiver's hot path (a third of its
 * throughput with a header per fact): the event id is Nats-Msg-Id (also the dedup key), the receive time is the
 * message's stream timestamp, and endpoint and provider follow from the stream. The provider's own request headers
 * keep their (lower-case) names under a prefix.
 */
export const headers = {
  eventId: 'Nats-Msg-Id',
  eventType: 'Hookyard-Event-Type',
  /** Prefix of the provider's request headers, e.g. Hookyard-Header-x-proign-delivery-id. */
  original: 'Hookyard-Header-',
  /** The request's Content-Type, as the provider sent it. */
  contentType: 'Hookyard-Header-content-type',
  /** Only when the Content-Type was missing or unknown: how the receiver read the body (json, form, xml). */
  bodyKind: 'Hookyard-Body-Kind',
  // Dead letters drop Nats-* headers (they steer a publish) and add the original's id and receive time, and why:
  deadLetterEventId: 'Hookyard-Event-Id',
  receivedAt: 'Hookyard-Received-At',
  lastStatus: 'Hookyard-Last-Status',
  lastError: 'Hookyard-Last-Error',
  attempts: 'Hookyard-Attempts',
  sourceStream: 'Hookyard-Source-Stream',
  sourceSequence: 'Hookyard-Source-Sequence',
  /** On an event in the replay stream: the replay request's id (sent to the target as hookyard-replay). */
  replay: 'Hookyard-Replay',
  /** With tracing on: the W3C trace context of the receiver's span, the parent of every delivery attempt's. */
  traceparent: 'Hookyard-Traceparent',
  tracestate: 'Hookyard-Tracestate',
  /** On a test event (`hookyard test`): sent to the target as hookyard-test: true. */
  test: 'Hookyard-Test',
} as const;
