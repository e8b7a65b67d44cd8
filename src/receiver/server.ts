// The receiver's HTTP side: /hooks/<namespace>/<endpoint>[/<route>] for any number of endpoints (one in a
// receiver pod, all of them in dev mode), plus health and metrics. A 2xx means the event is in JetStream.
import type { IncomingMessage } from 'node:http';
import type { JetStreamClient } from '@nats-io/jetstream';
import { headers as natsHeaders } from '@nats-io/transport-node';
import express from 'express';
import type { Registry } from 'prom-client';
import { eventSubject, headers as names } from '../jetstream/layout.ts';
import { InvalidPayload, mediaKind, parseAs, sniff } from '../payload/parse.ts';
import type { Logger } from '../runtime/log.ts';
import { type CompiledEndpoint, dedupKeyOf, eventTypeOf } from './endpoint.ts';
import { type Outcome, Refused } from './errors.ts';
import type { ReceiverMetrics } from './metrics.ts';
import type { RequestView } from './verify.ts';

/** An endpoint as the router sees it: compiled, or the reason it cannot serve (such as a missing Secret). */
export type EndpointState = { endpoint: CompiledEndpoint } | { labels: Labels; error: string };
type Labels = { namespace: string; endpoint: string; provider: string };

export interface ReceiverOptions {
  /** Current endpoints by `<namespace>/<name>`; read on every request, so a reload swaps them atomically. */
  endpoints: () => ReadonlyMap<string, EndpointState>;
  js: JetStreamClient;
  /** False while NATS is unreachable: requests get 503 at once instead of waiting for a publish timeout. */
  natsReady: () => boolean;
  metrics: ReceiverMetrics;
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

export function receiverRouter(options: ReceiverOptions): express.Router {
  const router = express.Router();
  router.all('/hooks/:namespace/:endpoint{/:route}', async (req, res) => {
    const started = process.hrtime.bigint();
    const key = `${req.params.namespace}/${req.params.endpoint}`;
    const state = options.endpoints().get(key);
    const labels = state && ('endpoint' in state ? labelsOf(state.endpoint) : state.labels);
    let outcome: Outcome | undefined;
    try {
      if (!state) throw new Refused('not_found', `no ProviderEndpoint ${key}`);
      if (req.method !== 'POST') throw new Refused('method_not_allowed', 'webhooks are sent with POST');
      if ('error' in state) throw new Refused('unavailable', `endpoint ${key} is not ready: ${state.error}`);
      const { endpoint } = state;
      const route = checkRoute(endpoint, req.params.route);
      const body = await readBody(req, endpoint.maxBodyBytes);
      const request = view(req, body, endpoint);
      if (!mediaKind(request.headers['content-type'])) options.metrics.contentTypeMismatches.inc(labelsOf(endpoint));
      const check = endpoint.registrationCheck;
      if (check && request.headers[check.header.toLowerCase()] === check.value) {
        outcome = 'registration_check';
        res.status(200).json({ status: 'ok', message: 'registration check answered; nothing was published' });
        return;
      }
      for (const verify of endpoint.verifiers) await verify(request);
      const eventType = await eventTypeOf(endpoint, route, request);
      const id = await dedupKeyOf(endpoint, request);
      const retry = endpoint.retryHeader && request.headers[endpoint.retryHeader.toLowerCase()];
      if (retry && retry !== '0') options.metrics.providerRetries.inc(labelsOf(endpoint));
      const duplicate = await publish(options, endpoint, request, eventType, id);
      outcome = duplicate ? 'duplicate' : 'accepted';
      if (!duplicate) options.metrics.events.inc({ ...labelsOf(endpoint), event_type: eventType });
      if (endpoint.status === 204) res.status(204).end();
      else res.status(endpoint.status).json({ status: outcome, id, type: eventType });
    } catch (err) {
      const refusal = err instanceof Refused ? err : unexpected(err, options.log, key);
      outcome = refusal.outcome;
      if (refusal.kind === 'unavailable') res.setHeader('Retry-After', '5');
      if (refusal.kind === 'too_large') res.setHeader('Connection', 'close');
      res.status(refusal.status).json({ error: refusal.kind, message: refusal.message });
    } finally {
      if (labels && outcome) {
        options.metrics.count(labels, outcome);
        options.metrics.requestDuration.observe(labels, Number(process.hrtime.bigint() - started) / 1e9);
      }
    }
  });
  return router;
}

const labelsOf = (e: CompiledEndpoint): Labels => ({ namespace: e.namespace, endpoint: e.name, provider: e.provider });

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

async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (declared > limit) throw new Refused('too_large', `body is larger than the ${limit} bytes this endpoint accepts`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new Refused('too_large', `body is larger than the ${limit} bytes this endpoint accepts`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function view(req: express.Request, body: Buffer, endpoint: CompiledEndpoint): RequestView {
  const headers: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(req.headers))
    headers[name] = Array.isArray(value) ? value.join(', ') : value;
  let parsed: Promise<unknown> | undefined;
  return {
    headers,
    query: new URL(req.originalUrl, 'http://receiver').searchParams,
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
  request: RequestView,
  eventType: string,
  id: string,
): Promise<boolean> {
  if (!options.natsReady()) throw new Refused('unavailable', 'event store unavailable; retry later');
  const h = natsHeaders();
  h.set(names.eventId, id);
  h.set(names.eventType, eventType);
  h.set(names.receivedAt, new Date().toISOString());
  h.set(names.provider, endpoint.provider);
  h.set(names.endpoint, `${endpoint.namespace}/${endpoint.name}`);
  if (request.headers['content-type']) h.set(names.contentType, request.headers['content-type']);
  const retry = endpoint.retryHeader && request.headers[endpoint.retryHeader.toLowerCase()];
  if (retry) h.set(names.providerRetry, retry);
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
    options.metrics.publishDuration.observe(labelsOf(endpoint), Number(process.hrtime.bigint() - started) / 1e9);
  }
}

function unexpected(err: unknown, log: Logger, endpoint: string): Refused {
  log.error({ endpoint, err: err instanceof Error ? err.stack : String(err) }, 'unexpected error');
  return new Refused('unavailable', 'internal error; retry later');
}

/** The whole receiver app: webhook routes, /healthz, /readyz (503 while not ready) and /metrics. */
export function receiverApp(options: ReceiverOptions & { registry: Registry; ready?: () => boolean }): express.Express {
  const ready = options.ready ?? options.natsReady;
  const app = express();
  app.disable('x-powered-by');
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', (_req, res) => {
    const ok = ready();
    res.status(ok ? 200 : 503).json({ status: ok ? 'ready' : 'not ready: NATS unreachable or shutting down' });
  });
  app.get('/metrics', async (_req, res) => {
    res.type(options.registry.contentType).send(await options.registry.metrics());
  });
  app.use(receiverRouter(options));
  app.use((_req: express.Request, res: express.Response) => {
    res.status(404).json({ error: 'not_found', message: 'webhooks go to /hooks/<namespace>/<endpoint>' });
  });
  return app;
}
