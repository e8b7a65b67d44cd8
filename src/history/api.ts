// The history API the operator serves beside its admission webhook, for `hookyard events|event|attempts|dlq`:
// read-only views of what JetStream keeps, each request checked against the Kubernetes RBAC of its caller. The
// caller's token (sent in X-Hookyard-Authorization, since the API server's service proxy consumes Authorization) is
// checked with a TokenReview, and the caller must be allowed to `get` the resource the data belongs to
// (SubjectAccessReview): whoever cannot read a namespace's subscriptions cannot read their events.
import * as k8s from '@kubernetes/client-node';
import { JetStreamApiCodes, JetStreamApiError, type JetStreamClient } from '@nats-io/jetstream';
import express from 'express';
import { deadLetterStream, endpointStream, eventSubject, headers as h } from '../jetstream/layout.ts';
import { isStreamNotFound } from '../jetstream/streams.ts';
import type { Logger } from '../runtime/log.ts';
import { duplicateCounts, readAttempts, readStream } from './read.ts';

/** At most this many items per answer; `limit` asks for fewer. */
export const maxItems = 10_000;

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

export function historyRouter(options: { kc: k8s.KubeConfig; js: () => JetStreamClient | undefined; log: Logger }) {
  const authn = options.kc.makeApiClient(k8s.AuthenticationV1Api);
  const authz = options.kc.makeApiClient(k8s.AuthorizationV1Api);

  /** The caller, if it may `get` the resource; else an HttpError (401, 403, or 503 when the API server fails). */
  async function authorize(req: express.Request, resource: string) {
    const header = req.get('x-hookyard-authorization') ?? req.get('authorization') ?? '';
    const token = /^Bearer (\S+)$/i.exec(header)?.[1];
    if (!token) throw new HttpError(401, 'send a Kubernetes bearer token in X-Hookyard-Authorization');
    const { namespace, name } = req.params as { namespace: string; name: string };
    const review = await authn.createTokenReview({ body: { spec: { token } } }).catch(upstream);
    const user = review.status?.user;
    if (!review.status?.authenticated || !user) throw new HttpError(401, 'the token was not accepted');
    const access = await authz
      .createSubjectAccessReview({
        body: {
          spec: {
            user: user.username,
            groups: user.groups,
            uid: user.uid,
            extra: user.extra,
            resourceAttributes: { group: 'hookyard.io', resource, verb: 'get', namespace, name },
          },
        },
      })
      .catch(upstream);
    if (!access.status?.allowed) {
      throw new HttpError(403, `${user.username} cannot get ${resource} "${name}" in namespace "${namespace}"`);
    }
  }
  const upstream = (err: unknown): never => {
    options.log.warn({ err: String(err) }, 'history API: the API server did not answer a review');
    throw new HttpError(503, 'the Kubernetes API server did not answer; try again');
  };
  const jetstream = () => {
    const js = options.js();
    if (!js) throw new HttpError(503, 'the operator is not connected to NATS yet; try again');
    return js;
  };

  /** A route whose handler runs after the caller is authorized; errors become JSON answers. */
  const route = (resource: string, handler: (req: express.Request) => Promise<unknown>) =>
    (async (req, res) => {
      try {
        checkNames(req);
        await authorize(req, resource);
        res.json(await handler(req));
      } catch (err) {
        const known = err instanceof HttpError ? err : notFound(err, req);
        if (!known) options.log.warn({ err: String(err) }, 'history API: NATS failed');
        res.status(known?.status ?? 503).json({ error: known?.message ?? 'NATS did not answer; try again' });
      }
    }) as express.RequestHandler;

  const router = express.Router();
  const base = '/history/v1/namespaces/:namespace';
  router.get(
    `${base}/webhooksubscriptions/:name/attempts`,
    route('webhooksubscriptions', async (req) => {
      const { namespace, name } = req.params as { namespace: string; name: string };
      const eventId = query(req, 'event');
      return { items: await readAttempts(jetstream(), namespace, name, { eventId, ...window(req) }) };
    }),
  );
  router.get(
    `${base}/webhooksubscriptions/:name/dead-letters`,
    route('webhooksubscriptions', async (req) => {
      const { namespace, name } = req.params as { namespace: string; name: string };
      const items = [];
      for await (const m of readStream(jetstream(), deadLetterStream(namespace, name), window(req))) {
        items.push({
          sequence: m.seq,
          time: new Date(m.info.timestampNanos / 1e6).toISOString(),
          id: m.headers?.get(h.deadLetterEventId) ?? '',
          type: m.headers?.get(h.eventType) ?? '',
          attempts: Number(m.headers?.get(h.attempts) || 0),
          lastError: m.headers?.get(h.lastError) ?? '',
          size: m.data.length,
        });
      }
      return { items };
    }),
  );
  router.get(
    `${base}/webhooksubscriptions/:name/dead-letters/:sequence`,
    route('webhooksubscriptions', async (req) => {
      const { namespace, name, sequence } = req.params as { namespace: string; name: string; sequence: string };
      const m = await storedMessage(deadLetterStream(namespace, name), sequence);
      if (!m) throw new HttpError(404, `no dead letter ${sequence} of WebhookSubscription "${name}"`);
      return { ...m, id: m.headers[h.deadLetterEventId]?.[0] ?? '' };
    }),
  );
  router.get(
    `${base}/providerendpoints/:name/events`,
    route('providerendpoints', async (req) => {
      const { namespace, name } = req.params as { namespace: string; name: string };
      const type = query(req, 'type');
      const id = query(req, 'id');
      const until = query(req, 'until');
      const { since, limit } = window(req);
      // The type is a subject filter; the limit counts the events that match, not those read past.
      const filterSubjects = type ? [eventSubject(namespace, name, type)] : undefined;
      const duplicates = await duplicateCounts(jetstream(), namespace, name);
      const items = [];
      for await (const m of readStream(jetstream(), endpointStream(namespace, name), { since, filterSubjects })) {
        const event = storedSummary(m);
        if (until && Date.parse(event.time) >= Date.parse(until)) break;
        if ((type && event.type !== type) || (id && event.id !== id)) continue;
        items.push({ ...event, duplicates: duplicates.get(event.id) ?? 0 });
        if (items.length === limit) break;
      }
      return { items };
    }),
  );
  router.get(
    `${base}/providerendpoints/:name/events/:sequence`,
    route('providerendpoints', async (req) => {
      const { namespace, name, sequence } = req.params as { namespace: string; name: string; sequence: string };
      const m = await storedMessage(endpointStream(namespace, name), sequence);
      if (!m) throw new HttpError(404, `no event ${sequence} in the stream of ProviderEndpoint "${name}"`);
      return { ...m, id: m.headers[h.eventId]?.[0] ?? '' };
    }),
  );
  /** One stored message, headers and body (base64) exactly as stored; undefined when there is none. */
  async function storedMessage(stream: string, sequence: string) {
    if (!/^[1-9][0-9]*$/.test(sequence)) throw new HttpError(400, 'name the message by its sequence, such as 42');
    const jsm = await jetstream().jetstreamManager();
    const m = await jsm.streams.getMessage(stream, { seq: Number(sequence) }).catch((err: unknown) => {
      if (isStreamNotFound(err)) return null;
      throw err;
    });
    if (!m) return undefined;
    const headers: Record<string, string[]> = {};
    for (const key of m.header?.keys() ?? []) headers[key] = m.header.values(key);
    return {
      sequence: m.seq,
      time: m.time.toISOString(),
      type: m.header?.get(h.eventType) ?? '',
      headers,
      body: Buffer.from(m.data).toString('base64'),
    };
  }
  return router;
}

const dnsLabel = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Kubernetes names only: anything else could never name a resource, and must not reach a NATS subject. */
function checkNames(req: express.Request) {
  const { namespace, name } = req.params as { namespace: string; name: string };
  if (!dnsLabel.test(namespace)) throw new HttpError(400, `namespace "${namespace}" is not a Kubernetes name`);
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(name) || name.length > 253) {
    throw new HttpError(400, `"${name}" is not the name of a Hookyard resource (lower case letters, digits and -)`);
  }
}

/** A stream or message JetStream does not have: the resource has no history yet, or not that event. */
function notFound(err: unknown, req: express.Request): HttpError | undefined {
  if (!(err instanceof JetStreamApiError)) return undefined;
  const { name } = req.params as { name: string };
  if (err.code === JetStreamApiCodes.StreamNotFound) return new HttpError(404, `"${name}" has no stream in NATS`);
  if (err.code === JetStreamApiCodes.NoMessageFound)
    return new HttpError(404, `no such event in the stream of "${name}"`);
  return undefined;
}

function storedSummary(m: {
  seq: number;
  info: { timestampNanos: number };
  headers?: { get(k: string): string };
  data: Uint8Array;
}) {
  return {
    sequence: m.seq,
    time: new Date(m.info.timestampNanos / 1e6).toISOString(),
    id: m.headers?.get(h.eventId) ?? '',
    type: m.headers?.get(h.eventType) ?? '',
    size: m.data.length,
  };
}

function query(req: express.Request, name: string): string | undefined {
  const value = req.query[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value === '') throw new HttpError(400, `${name} must be given once, with a value`);
  return value;
}

/** `since` (RFC 3339) and `limit` (1 to maxItems), checked. */
function window(req: express.Request): { since?: Date; limit: number } {
  const since = query(req, 'since');
  const limit = query(req, 'limit');
  if (since !== undefined && Number.isNaN(Date.parse(since)))
    throw new HttpError(400, 'since must be an RFC 3339 time such as 2026-12-01T10:00:00Z');
  if (limit !== undefined && !(/^[0-9]+$/.test(limit) && Number(limit) >= 1 && Number(limit) <= maxItems))
    throw new HttpError(400, `limit must be a whole number from 1 to ${maxItems}`);
  return { since: since ? new Date(since) : undefined, limit: limit ? Number(limit) : 1000 };
}
