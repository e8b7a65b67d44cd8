// The receiver's HTTP side: /hooks/<namespace>/<endpoint>[/<route>] for any number of endpoints (one in a
// receiver pod, all of them in dev mode), plus health and metrics. A 2xx means the event is in JetStream.
import { type IncomingMessage, type ServerResponse, STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { headers as natsHeaders } from '@nats-io/transport-node';
import type { Registry } from 'prom-client';
import { duplicateSubject, eventSubject, headers as names } from '../jetstream/layout.ts';
import type { JetStreamPublisher } from '../jetstream/publisher.ts';
import { InvalidPayload, type MediaKind, mediaKind, parseAs, sniff } from '../payload/parse.ts';
import type { Logger } from '../runtime/log.ts';
import type { TraceContext, Tracer } from '../runtime/tracing.ts';
import { type CompiledEndpoint, dedupKeyOf, eventTypeOf, isRegistrationCheck } from './endpoint.ts';
import { type Outcome, Refused } from './errors.ts';
import type { EndpointMetrics } from './metrics.ts';
import { endRequestSpan, startRequestSpan } from './traces.ts';
import type { RequestView } from './verify.ts';

/** An endpoint as the router sees it: compiled, or the reason it cannot serve (such as a missing Secret). */
export type EndpointState = { metrics: EndpointMetrics } & ({ endpoint: CompiledEndpoint } | { error: string });

export interface ReceiverOptions {
  /** Current endpoints by `<namespace>/<name>`; read on every request, so a reload swaps them atomically. */
  endpoints: () => ReadonlyMap<string, EndpointState>;
  /** Publishes each event and waits for JetStream's PubAck (src/jetstream/publisher.ts). */
  publisher: JetStreamPublisher;
  /** False while NATS is unreachable: requests get 503 at once instead of waiting for a publish timeout. */
  natsReady: () => boolean;
  /** The server's max_payload: a body that cannot fit in one message is refused with 413, not retried forever. */
  maxPayload?: () => number | undefined;
  /** Called when a publish fails, so readiness drops at once rather than at its next look. */
  publishFailed?: () => void;
  log: Logger;
  /** With tracing on: a span per webhook request, its context stored with the event. */
  tracer?: Tracer;
}

/** Request headers never stored with an event: hop-by-hop, and those that carry credentials. */
const dropped = new Set([
  'authorization',
  'proxy-authorization',
  'cookie',
  'host',
  'connection',
  'keep-alive',
  'content-length',
  'transfer-encoding',
  'te',
  'upgrade',
]);

/** Serves one webhook request to /hooks/<namespace>/<endpoint>[/<route>]. */
async function handleWebhook(
  options: ReceiverOptions,
  req: IncomingMessage,
  res: ServerResponse,
  params: { namespace: string; endpoint: string; route?: string },
): Promise<void> {
  const started = process.hrtime.bigint();
  const key = `${params.namespace}/${params.endpoint}`;
  const state = options.endpoints().get(key);
  const span = options.tracer && startRequestSpan(options.tracer, req, params);
  let outcome: Outcome | undefined;
  let body: Buffer | undefined;
  let event: { eventType: string; id: string } | undefined;
  try {
    if (!state) throw new Refused('not_found', `no ProviderEndpoint ${key}`);
    if (req.method !== 'POST') throw new Refused('method_not_allowed', 'webhooks are sent with POST');
    if ('error' in state) throw new Refused('unavailable', `endpoint ${key} is not ready: ${state.error}`);
    const { endpoint } = state;
    const route = checkRoute(endpoint, params.route);
    body = await readBody(req, bodyLimit(endpoint, options));
    const request = view(req, body, endpoint);
    if (!mediaKind(request.headers['content-type'])) state.metrics.contentTypeMismatch();
    if (isRegistrationCheck(endpoint, request.headers)) {
      outcome = 'registration_check';
      reply(res, 200, { status: 'ok', message: 'registration check answered; nothing was published' });
      return;
    }
    for (const verify of endpoint.verifiers) await verify(request);
    const bodyKind = await request.bodyKind();
    const eventType = await eventTypeOf(endpoint, route, request);
    const id = await dedupKeyOf(endpoint, request, eventType);
    if (span) event = { eventType, id };
    const retry = endpoint.retryHeader && request.headers[endpoint.retryHeader.toLowerCase()];
    if (retry !== undefined && retry !== '') state.metrics.providerRetry();
    const trace = span?.context;
    const duplicate = await publish(options, endpoint, state.metrics, request, { eventType, id, bodyKind, trace });
    outcome = duplicate ? 'duplicate' : 'accepted';
    if (duplicate) {
      logDuplicate(options.log, endpoint, request, { id, eventType });
      recordDuplicate(options, endpoint, id);
    } else state.metrics.event(eventType);
    reply(res, endpoint.status, endpoint.status === 204 ? undefined : { status: outcome, id, type: eventType });
  } catch (err) {
    const refusal = err instanceof Refused ? err : unexpected(err, options.log, key);
    outcome = refusal.outcome;
    if (refusal.kind === 'unavailable') res.setHeader('Retry-After', '5');
    if (refusal.kind === 'too_large') res.setHeader('Connection', 'close');
    reply(res, refusal.status, { error: refusal.kind, message: refusal.message });
  } finally {
    if (state && outcome) {
      state.metrics.count(outcome);
      state.metrics.requestSeconds(Number(process.hrtime.bigint() - started) / 1e9);
    }
    // Everything that read the body is done; after a publish that did not succeed the NATS client may still hold
    // it in its outbound buffer, to send on reconnect, so it is left to the GC then.
    if (body && outcome !== 'unavailable') release(body);
    if (span) endRequestSpan(span, res.statusCode, outcome, event);
  }
}

function reply(res: ServerResponse, status: number, body?: object): void {
  if (body === undefined) {
    res.writeHead(status).end();
    return;
  }
  const json = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(json),
  });
  res.end(json);
}

function checkRoute(endpoint: CompiledEndpoint, route: string | undefined): string | undefined {
  if (!endpoint.routes) {
    if (route !== undefined) throw new Refused('not_found', `endpoint ${endpoint.name} has no routes`);
    return undefined;
  }
  if (route === undefined || !endpoint.routes.has(route)) {
    const known = [...endpoint.routes.keys()];
    const list = known.length > 8 ? `${known.slice(0, 8).join(', ')}, ...` : known.join(', ');
    throw new Refused('not_found', `unknown route "${route ?? ''}"; this endpoint serves ${list}`);
  }
  return route;
}

/** Room left in a NATS message for the headers stored with an event (Node caps request headers at 16 KiB). */
const headerRoom = 32 << 10;

function bodyLimit(endpoint: CompiledEndpoint, options: ReceiverOptions): number {
  const maxPayload = options.maxPayload?.();
  return maxPayload ? Math.min(endpoint.maxBodyBytes, maxPayload - headerRoom) : endpoint.maxBodyBytes;
}

/**
 * A body larger than this past the limit is not read to its end: the connection is closed at once. Up to it, the
 * rest of a too-large body is read and dropped before the 413 goes out, because a sender that writes its whole
 * body before it reads (most HTTP clients) gets a connection reset, not the 413, when unread bytes are left.
 */
const drainLimit = 16 << 20;

/**
 * Reads the body with the stream's own events: an async iterator over the request (`for await`) cost a promise
 * per chunk and an end-of-stream watcher per request, a few per cent of the receiver's CPU in its bench.
 */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = () => new Refused('too_large', `body is larger than the ${limit} bytes this endpoint accepts`);
  const declared = Number(req.headers['content-length']);
  if (declared > drainLimit) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = declared > limit ? limit + 1 : 0; // known too large: read and drop, keep nothing
    const stop = () => req.off('data', onData).off('end', onEnd).off('error', onCutOff).off('close', onCutOff);
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > drainLimit) {
        stop();
        req.destroy();
        reject(tooLarge());
      } else if (size <= limit) chunks.push(chunk);
      else {
        release(chunk);
        for (const kept of chunks.splice(0)) release(kept);
      }
    };
    const onEnd = () => {
      stop();
      if (size > limit) reject(tooLarge());
      else resolve(joined(chunks, size));
    };
    const onCutOff = () => {
      stop();
      reject(new Refused('invalid_payload', 'the request body was cut off'));
    };
    req.on('data', onData).once('end', onEnd).once('error', onCutOff).once('close', onCutOff);
  });
}

/** The body from its chunks, each released once copied. */
function joined(chunks: Buffer[], size: number): Buffer {
  // A body that came in one chunk (most do) is that chunk: Node's HTTP parser gives each chunk a memory of its own.
  if (chunks.length === 1) return chunks[0] as Buffer;
  // A body of its own (not a slice of Buffer's shared pool), so that it can be released when the request is done.
  const body = Buffer.allocUnsafeSlow(size);
  let at = 0;
  for (const chunk of chunks) {
    at += chunk.copy(body, at);
    release(chunk);
  }
  return body;
}

/**
 * Frees a buffer's memory now rather than at V8's next full GC. Body chunks outlive a young-generation GC while
 * a request is in flight, so V8 moves them to the old generation, whose GC runs rarely: under a stream of large
 * bodies tens of MiB of them piled up there, and the process kept that memory (docs/benchmarks.md, fuzz). Only for
 * a buffer that owns its whole ArrayBuffer (Node's HTTP body chunks, and bodies read here), once nothing reads it.
 */
function release(buffer: Buffer): void {
  const whole = buffer.buffer;
  if (whole instanceof ArrayBuffer && buffer.byteOffset === 0 && whole.byteLength === buffer.length) whole.transfer(0);
}

/** What a request's body is read as, decided once: parsed on first use, and never parsed again. */
interface BodyReading {
  /** The kind the body was read as; undefined when it is kept as raw bytes only. */
  kind?: MediaKind;
  value?: unknown;
  /** Why the body cannot be read: invalid_payload when it is not what it says, unsupported_media_type otherwise. */
  refusal?: Refused;
}

/**
 * The body's kind comes from its Content-Type, else the endpoint's fallback: a body that does not parse as that
 * kind is refused. Without either, the kind is guessed from the first character; a guess that does not parse is
 * no kind at all (the bytes are kept, nothing reads them), since nothing said the body was JSON or XML.
 */
async function readAs(contentType: string | undefined, body: Buffer, fallback?: MediaKind): Promise<BodyReading> {
  const declared = mediaKind(contentType) ?? fallback;
  const kind = declared ?? sniff(body);
  if (kind) {
    try {
      return { kind, value: await parseAs(kind, body, contentType) };
    } catch (err) {
      if (!(err instanceof InvalidPayload)) throw err;
      if (declared) return { refusal: new Refused('invalid_payload', err.message) };
    }
  }
  const what = contentType ? `Content-Type ${contentType}` : 'a body without Content-Type';
  return { refusal: new Refused('unsupported_media_type', `${what} is not JSON, form, multipart or XML`) };
}

function view(req: IncomingMessage, body: Buffer, endpoint: CompiledEndpoint): RequestView & ParsedView {
  const headers: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(req.headers))
    headers[name] = Array.isArray(value) ? value.join(', ') : value;
  let reading: Promise<BodyReading> | undefined;
  const read = () => {
    reading ??= readAs(headers['content-type'], body, endpoint.fallbackContentType);
    return reading;
  };
  let query: URLSearchParams | undefined;
  return {
    headers,
    get query() {
      query ??= new URL(req.url ?? '/', 'http://receiver').searchParams;
      return query;
    },
    body,
    remoteAddress: req.socket.remoteAddress ?? '',
    async parsed() {
      const { value, refusal } = await read();
      if (refusal) throw refusal;
      return value;
    },
    async bodyKind() {
      const { kind, refusal } = await read();
      if (refusal?.kind === 'invalid_payload') throw refusal;
      return kind;
    },
  };
}

interface ParsedView {
  /** The kind the body is read as (undefined: raw bytes); throws Refused when it says JSON or XML and is not. */
  bodyKind(): Promise<MediaKind | undefined>;
}

/** Publishes the raw bytes with Nats-Msg-Id = the dedup key; true when JetStream says it is a duplicate. */
async function publish(
  options: ReceiverOptions,
  endpoint: CompiledEndpoint,
  metrics: EndpointMetrics,
  request: RequestView,
  event: { eventType: string; id: string; bodyKind?: MediaKind; trace?: TraceContext },
): Promise<boolean> {
  const { eventType, id } = event;
  if (!options.natsReady()) throw new Refused('unavailable', 'event store unavailable; retry later');
  // append, not set: each name comes once, and set first scans the headers for the name to delete.
  const h = natsHeaders();
  h.append(names.eventType, eventType);
  // A body read by the endpoint's fallback or by sniffing: tell subscribers' filters how to read it too.
  if (event.bodyKind && !mediaKind(request.headers['content-type'])) h.append(names.bodyKind, event.bodyKind);
  if (event.trace) {
    h.append(names.traceparent, event.trace.traceparent);
    if (event.trace.tracestate) h.append(names.tracestate, event.trace.tracestate);
  }
  for (const [name, value] of Object.entries(request.headers)) {
    if (value !== undefined && !dropped.has(name) && !endpoint.tokenHeaders.has(name)) {
      h.append(`${names.original}${name}`, value);
    }
  }
  await nextTurn();
  const started = process.hrtime.bigint();
  try {
    const ack = await options.publisher.publish(
      eventSubject(endpoint.namespace, endpoint.name, eventType),
      request.body,
      {
        msgID: id,
        headers: h,
      },
    );
    return ack.duplicate;
  } catch (err) {
    options.publishFailed?.();
    options.log.warn({ endpoint: `${endpoint.namespace}/${endpoint.name}`, err: String(err) }, 'publish failed');
    throw new Refused('unavailable', 'event store unavailable; retry later');
  } finally {
    metrics.publishSeconds(Number(process.hrtime.bigint() - started) / 1e9);
  }
}

let turn: Promise<void> | undefined;

/**
 * Resolves once per turn of the event loop, for every request that reached its publish in that turn, so that their
 * publishes leave in one socket write: nats.js writes what was published at the end of the current microtask
 * queue, which otherwise held one publish each, and a write was a quarter of the receiver's CPU in its bench.
 */
function nextTurn(): Promise<void> {
  turn ??= new Promise((ok) =>
    setImmediate(() => {
      turn = undefined;
      ok();
    }),
  );
  return turn;
}

/**
 * One empty record per duplicate answered, under the event id, for `hookyard events` to count per event. Not
 * waited for: the provider's answer does not depend on it, and a record lost (NATS busy, no stream) only makes a
 * count lower.
 */
function recordDuplicate(options: ReceiverOptions, endpoint: CompiledEndpoint, id: string) {
  options.publisher.publish(duplicateSubject(endpoint.namespace, endpoint.name, id)).catch((err: unknown) => {
    options.log.debug({ err: String(err) }, 'duplicate record not stored');
  });
}

/**
 * A resend of an event already stored is answered like the first, so the provider stops; this line is where a
 * user finds which delivery it was (PROIGN's X-Proign-Delivery-ID and X-Proign-Retry-Count).
 */
function logDuplicate(
  log: Logger,
  endpoint: CompiledEndpoint,
  request: RequestView,
  event: { id: string; eventType: string },
) {
  const header = (name?: string) => (name ? request.headers[name.toLowerCase()] : undefined);
  log.info(
    {
      endpoint: `${endpoint.namespace}/${endpoint.name}`,
      id: event.id,
      type: event.eventType,
      deliveryId: header(endpoint.deliveryHeader),
      retryCount: header(endpoint.retryHeader),
    },
    'duplicate not stored',
  );
}

function unexpected(err: unknown, log: Logger, endpoint: string): Refused {
  log.error({ endpoint, err: err instanceof Error ? err.stack : String(err) }, 'unexpected error');
  return new Refused('unavailable', 'internal error; retry later');
}

export type ReceiverHandler = (req: IncomingMessage, res: ServerResponse) => void;

/**
 * The whole receiver: webhook routes, /healthz, /readyz (503 while not ready) and /metrics, on plain node:http.
 * Express is left out of this hot path: its per-request work cost a third of the throughput in
 * `npm run bench:receiver`, and routing here is four fixed shapes.
 */
export function receiverHandler(
  options: ReceiverOptions & { registry: Registry; ready?: () => boolean },
): ReceiverHandler {
  const ready = options.ready ?? options.natsReady;
  return (req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0] as string;
    if (path.startsWith('/hooks/')) {
      const [namespace, endpoint, route, ...rest] = path.slice('/hooks/'.length).split('/').map(decodeSegment);
      if (namespace && endpoint && rest.length === 0 && route !== '') {
        void handleWebhook(options, req, res, { namespace, endpoint, route });
        return;
      }
    }
    if (req.method === 'GET' && path === '/healthz') return reply(res, 200, { status: 'ok' });
    if (req.method === 'GET' && path === '/readyz') {
      const ok = ready();
      const status = ok ? 'ready' : 'not ready: NATS or its JetStream stream unreachable, or shutting down';
      return reply(res, ok ? 200 : 503, { status });
    }
    if (req.method === 'GET' && path === '/metrics') {
      options.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': options.registry.contentType }).end(text),
        () => reply(res, 503, { error: 'unavailable', message: 'metrics unavailable' }),
      );
      return;
    }
    reply(res, 404, { error: 'not_found', message: 'webhooks go to /hooks/<namespace>/<endpoint>' });
  };
}

/**
 * The server's `clientError` handler: requests Node's HTTP layer refuses before any handler sees them (headers
 * over 16 KiB, broken framing, a request not received in time) get the same JSON error body as every other
 * refusal, instead of Node's bare status line.
 */
export function refuseClientError(err: NodeJS.ErrnoException & { reason?: string }, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const [status, error, message] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'headers_too_large', 'request headers are larger than the 16 KiB this server reads']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'timeout', 'the request was not received in time']
        : [400, 'bad_request', `not a valid HTTP/1.1 request: ${err.reason ?? err.code ?? 'malformed'}`];
  const json = JSON.stringify({ error, message });
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(json)}\r\nConnection: close\r\n\r\n${json}`,
  );
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}
