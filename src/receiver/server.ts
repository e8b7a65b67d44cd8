// The receiver's HTTP side: /hooks/<namespace>/<endpoint>[/<route>] for any number of endpoints (one in a
// receiver pod, all of them in dev mode), plus health and metrics. A 2xx means the event is in JetStream.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { JetStreamClient } from '@nats-io/jetstream';
import { headers as natsHeaders } from '@nats-io/transport-node';
import type { Registry } from 'prom-client';
import { eventSubject, headers as names } from '../jetstream/layout.ts';
import { InvalidPayload, mediaKind, parseAs, sniff } from '../payload/parse.ts';
import type { Logger } from '../runtime/log.ts';
import { type CompiledEndpoint, dedupKeyOf, eventTypeOf } from './endpoint.ts';
import { type Outcome, Refused } from './errors.ts';
import type { EndpointMetrics } from './metrics.ts';
import type { RequestView } from './verify.ts';

/** An endpoint as the router sees it: compiled, or the reason it cannot serve (such as a missing Secret). */
export type EndpointState = { metrics: EndpointMetrics } & ({ endpoint: CompiledEndpoint } | { error: string });

export interface ReceiverOptions {
  /** Current endpoints by `<namespace>/<name>`; read on every request, so a reload swaps them atomically. */
  endpoints: () => ReadonlyMap<string, EndpointState>;
  js: JetStreamClient;
  /** False while NATS is unreachable: requests get 503 at once instead of waiting for a publish timeout. */
  natsReady: () => boolean;
  /** The server's max_payload: a body that cannot fit in one message is refused with 413, not retried forever. */
  maxPayload?: () => number | undefined;
  log: Logger;
  publishTimeoutMs?: number;
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
  let outcome: Outcome | undefined;
  try {
    if (!state) throw new Refused('not_found', `no ProviderEndpoint ${key}`);
    if (req.method !== 'POST') throw new Refused('method_not_allowed', 'webhooks are sent with POST');
    if ('error' in state) throw new Refused('unavailable', `endpoint ${key} is not ready: ${state.error}`);
    const { endpoint } = state;
    const route = checkRoute(endpoint, params.route);
    const body = await readBody(req, bodyLimit(endpoint, options));
    const request = view(req, body, endpoint);
    if (!mediaKind(request.headers['content-type'])) state.metrics.contentTypeMismatch();
    const check = endpoint.registrationCheck;
    if (check && request.headers[check.header.toLowerCase()] === check.value) {
      outcome = 'registration_check';
      reply(res, 200, { status: 'ok', message: 'registration check answered; nothing was published' });
      return;
    }
    for (const verify of endpoint.verifiers) await verify(request);
    const eventType = await eventTypeOf(endpoint, route, request);
    const id = await dedupKeyOf(endpoint, request);
    const retry = endpoint.retryHeader && request.headers[endpoint.retryHeader.toLowerCase()];
    if (retry && retry !== '0') state.metrics.providerRetry();
    const duplicate = await publish(options, endpoint, state.metrics, request, eventType, id);
    outcome = duplicate ? 'duplicate' : 'accepted';
    if (!duplicate) state.metrics.event(eventType);
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

async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (declared > limit) throw new Refused('too_large', `body is larger than the ${limit} bytes this endpoint accepts`);
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) throw new Refused('too_large', `body is larger than the ${limit} bytes this endpoint accepts`);
      chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof Refused) throw err;
    throw new Refused('invalid_payload', 'the request body was cut off');
  }
  return Buffer.concat(chunks);
}

function view(req: IncomingMessage, body: Buffer, endpoint: CompiledEndpoint): RequestView {
  const headers: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(req.headers))
    headers[name] = Array.isArray(value) ? value.join(', ') : value;
  let parsed: Promise<unknown> | undefined;
  let query: URLSearchParams | undefined;
  return {
    headers,
    get query() {
      query ??= new URL(req.url ?? '/', 'http://receiver').searchParams;
      return query;
    },
    body,
    remoteAddress: req.socket.remoteAddress ?? '',
    parsed() {
      parsed ??= (async () => {
        const contentType = headers['content-type'];
        const kind = mediaKind(contentType) ?? endpoint.fallbackContentType ?? sniff(body);
        if (!kind) {
          throw new Refused(
            'unsupported_media_type',
            `Content-Type ${contentType ?? '(none)'} is not JSON, form, multipart or XML`,
          );
        }
        try {
          return await parseAs(kind, body, contentType);
        } catch (err) {
          if (err instanceof InvalidPayload) throw new Refused('invalid_payload', err.message);
          throw err;
        }
      })();
      return parsed;
    },
  };
}

/** Publishes the raw bytes with Nats-Msg-Id = the dedup key; true when JetStream says it is a duplicate. */
async function publish(
  options: ReceiverOptions,
  endpoint: CompiledEndpoint,
  metrics: EndpointMetrics,
  request: RequestView,
  eventType: string,
  id: string,
): Promise<boolean> {
  if (!options.natsReady()) throw new Refused('unavailable', 'event store unavailable; retry later');
  const h = natsHeaders();
  h.set(names.eventType, eventType);
  // A body read by the endpoint's fallback or by sniffing: tell subscribers' filters how to read it too.
  if (!mediaKind(request.headers['content-type'])) {
    const kind = endpoint.fallbackContentType ?? sniff(request.body);
    if (kind) h.set(names.bodyKind, kind);
  }
  for (const [name, value] of Object.entries(request.headers)) {
    if (value !== undefined && !dropped.has(name) && !endpoint.tokenHeaders.has(name)) {
      h.set(`${names.original}${name}`, value);
    }
  }
  const started = process.hrtime.bigint();
  try {
    const ack = await options.js.publish(eventSubject(endpoint.namespace, endpoint.name, eventType), request.body, {
      msgID: id,
      headers: h,
      timeout: options.publishTimeoutMs ?? 5000,
    });
    return ack.duplicate;
  } catch (err) {
    options.log.warn({ endpoint: `${endpoint.namespace}/${endpoint.name}`, err: String(err) }, 'publish failed');
    throw new Refused('unavailable', 'event store unavailable; retry later');
  } finally {
    metrics.publishSeconds(Number(process.hrtime.bigint() - started) / 1e9);
  }
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
      return reply(res, ok ? 200 : 503, { status: ok ? 'ready' : 'not ready: NATS unreachable or shutting down' });
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

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}
