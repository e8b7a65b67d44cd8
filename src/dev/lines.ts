// What dev mode prints: one readable line per webhook request and per delivery attempt, from the same structured
// log entries that `--log-format json` prints as they are.
//
//   proign      order.shipped     200 accepted       evt_abc123
//   → proign-shipments  200  12 ms
//   → proign-shipments  retry in 1m: ENOTFOUND fulfillment.shop.svc.cluster.local
import { AsyncLocalStorage } from 'node:async_hooks';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { IncomingMessage, ServerResponse } from 'node:http';
import pino from 'pino';
import { headers as names } from '../jetstream/layout.ts';
import type { JetStreamPublisher } from '../jetstream/publisher.ts';
import { dedupKeyPrefix } from '../receiver/endpoint.ts';
import type { Logger } from '../runtime/log.ts';

export type LogFormat = 'text' | 'json';

/**
 * The dev logger: pino's JSON lines, or each entry as one readable line on stdout. `targetHost` names the host a
 * subscription delivers to, for retry lines.
 */
export function devLogger(format: LogFormat, targetHost: (subscription: string) => string | undefined): Logger {
  const level = process.env.HOOKYARD_LOG_LEVEL ?? 'info';
  if (format === 'json') return pino({ level });
  const hinted = new Set<string>();
  const write = (line: string) => {
    const entry = JSON.parse(line) as Entry;
    const subscription = String(entry.subscription);
    const text = readable(entry, targetHost(subscription), !hinted.has(subscription));
    if (text.includes('--sink')) hinted.add(subscription);
    if (text) process.stdout.write(`${text}\n`);
  };
  return pino({ level }, { write });
}

interface Entry {
  level: number;
  msg?: string;
  [field: string]: unknown;
}

const levels: Record<number, string> = { 10: 'trace', 20: 'debug', 30: '', 40: 'warn', 50: 'error', 60: 'fatal' };
const unshown = new Set(['level', 'time', 'pid', 'hostname', 'msg', 'component']);

/** Entries the startup lines already say in text mode. */
const quiet = new Set(['dispatcher started', 'dispatcher stopped']);

/**
 * One log entry as a line a person reads (empty: not shown); entries of no known kind as
 * `warn: message key=value ...`. A retry to a host that does not resolve suggests --sink when `hint` is set.
 */
export function readable(entry: Entry, host?: string, hint = true): string {
  const f = entry as Record<string, string | number | undefined>;
  switch (entry.msg) {
    case 'request':
      return [
        String(f.endpoint).padEnd(12),
        String(f.eventType ?? '-').padEnd(17),
        `${f.status} ${f.outcome}`.padEnd(22),
        withoutType(f.eventId, f.eventType) ?? f.message ?? '',
      ].join(' ');
    case 'delivery answered':
      return `→ ${f.subscription}  ${f.status}  ${f.ms} ms`;
    case 'delivery failed, retry scheduled': {
      const result = String(f.result).replace(/^Target(Unreachable|Timeout): /, '');
      const unresolved = /^(ENOTFOUND|EAI_AGAIN)$/.test(result);
      const why = unresolved && host ? `${result} ${host}` : result;
      const sink =
        unresolved && hint ? ' (does not resolve here: run with --sink URL to deliver to a local server)' : '';
      return `→ ${f.subscription}  retry in ${seconds(Number(f.delayMs))}: ${why}${sink}`;
    }
    case 'event dead-lettered':
      return `→ ${f.subscription}  dead-lettered after ${f.attempts} attempts (${f.reason}): ${f.last}`;
  }
  if (entry.level <= 30 && quiet.has(entry.msg ?? '')) return '';
  const level = levels[entry.level] ?? '';
  const fields = Object.entries(entry)
    .filter(([k]) => !unshown.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  return [level && `${level}:`, entry.msg, ...fields].filter(Boolean).join(' ');
}

const seconds = (ms: number) => (ms >= 60_000 && ms % 60_000 === 0 ? `${ms / 60_000}m` : `${ms / 1000}s`);

interface RequestNote {
  eventType?: string;
  eventId?: string;
  duplicate?: boolean;
  body?: string;
}

const notes = new AsyncLocalStorage<RequestNote>();

/** The publisher with each publish noted on the request that made it: its event type, id and dedup answer. */
export function notingPublishes(publisher: JetStreamPublisher): JetStreamPublisher {
  return {
    async publish(subject, data, options) {
      const ack = await publisher.publish(subject, data, options);
      const note = notes.getStore();
      if (note) {
        note.eventType = options?.headers?.get(names.eventType);
        note.eventId = options?.msgID;
        note.duplicate = ack.duplicate;
      }
      return ack;
    },
    close: () => publisher.close(),
  };
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** Logs one `request` entry per webhook: endpoint, event type, status, outcome, and the event id or the refusal. */
export function loggingRequests(handler: Handler, log: Logger): Handler {
  return (req, res) => {
    const [, hooks, namespace, endpoint] = (req.url ?? '').split('?', 1)[0]?.split('/') ?? [];
    if (hooks !== 'hooks') return handler(req, res);
    const note: RequestNote = {};
    const end = res.end.bind(res) as (...args: unknown[]) => ServerResponse;
    res.end = ((...args: unknown[]) => {
      if (typeof args[0] === 'string') note.body = args[0];
      return end(...args);
    }) as ServerResponse['end'];
    res.once('finish', () => {
      const answer = parseAnswer(note.body);
      const outcome = answer.error ?? (note.duplicate ? 'duplicate' : res.statusCode < 300 ? 'accepted' : '');
      log[res.statusCode >= 500 ? 'warn' : 'info'](
        {
          endpoint: namespace === 'default' ? endpoint : `${namespace}/${endpoint}`,
          eventType: note.eventType,
          status: res.statusCode,
          outcome: answer.status === 'ok' ? 'registration_check' : outcome,
          ...(note.eventId ? { eventId: note.eventId } : { message: answer.message }),
        },
        'request',
      );
    });
    notes.run(note, () => handler(req, res));
  };
}

/** The event id less the `<type>:` the receiver puts first (the line shows the type already). */
function withoutType(id: string | number | undefined, type: string | number | undefined): string | undefined {
  if (id === undefined) return undefined;
  const prefix = dedupKeyPrefix(String(type));
  return String(id).startsWith(prefix) ? String(id).slice(prefix.length) : String(id);
}

function parseAnswer(body: string | undefined): { status?: string; error?: string; message?: string } {
  try {
    return body ? JSON.parse(body) : {};
  } catch {
    return {};
  }
}

interface UndiciRequest {
  origin?: string | URL;
  path?: string;
}

/**
 * Logs one `delivery answered` entry per answered delivery attempt (subscription, status, milliseconds), from undici's
 * diagnostics channels: `targets` maps each target URL (origin and path) to its subscription. Returns the unsubscribe.
 */
export function loggingDeliveries(targets: () => Map<string, string>, log: Logger): () => void {
  const started = new WeakMap<object, number>();
  const subscription = (request: UndiciRequest) => targets().get(`${String(request.origin ?? '')}${request.path}`);
  const onCreate = (message: unknown) => {
    const { request } = message as { request: UndiciRequest };
    if (subscription(request)) started.set(request, performance.now());
  };
  const onHeaders = (message: unknown) => {
    const { request, response } = message as { request: UndiciRequest; response: { statusCode: number } };
    const since = started.get(request);
    if (since === undefined) return;
    const ms = Math.round(performance.now() - since);
    log.info({ subscription: subscription(request), status: response.statusCode, ms }, 'delivery answered');
  };
  subscribe('undici:request:create', onCreate);
  subscribe('undici:request:headers', onHeaders);
  return () => {
    unsubscribe('undici:request:create', onCreate);
    unsubscribe('undici:request:headers', onHeaders);
  };
}
