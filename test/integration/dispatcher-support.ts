// What the dispatcher tests share: a stream shaped like the receiver's, events published the way the receiver
// publishes them, and a real HTTP target on loopback that records what it gets.
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import { type AddressInfo, connect as connectTcp, createServer as createNetServer, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { type JetStreamManager, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection, headers as natsHeaders } from '@nats-io/transport-node';
import pino from 'pino';
import { parseResource } from '../../src/api/validate.ts';
import type { WebhookSubscription } from '../../src/api/webhook-subscription.ts';
import { endpointStream, eventSubject, headers as h } from '../../src/jetstream/layout.ts';
import { endpointStreamConfig, ensureStream } from '../../src/jetstream/streams.ts';

export const natsUrl = () => {
  const url = process.env.HOOKYARD_TEST_NATS_URL;
  if (!url) throw new Error('run under test/harness/run.ts (HOOKYARD_TEST_NATS_URL is not set)');
  return url;
};

export const quietLogger = pino({ level: process.env.HOOKYARD_TEST_LOG_LEVEL ?? 'silent' });

let counter = 0;
/** A fresh namespace/endpoint pair, so tests sharing one nats-server never see each other's events. */
export function uniqueNames(prefix: string) {
  counter++;
  return { namespace: `${prefix}-${process.pid}-${counter}`, endpoint: 'proign', subscription: `sub-${counter}` };
}

export async function natsSetup(namespace: string, endpoint: string) {
  const nc = await connect({ servers: natsUrl() });
  const jsm = await jetstreamManager(nc);
  // A failed setup closes its connection, or the open socket would keep the test file from ever ending.
  await ensureStream(
    jsm,
    endpointStreamConfig(namespace, endpoint, {
      provider: 'generic',
      stream: { replicas: 1, storage: 'file', maxAge: '1h', deletionPolicy: 'Delete' },
      dedup: undefined,
    } as never),
  ).catch(async (err: unknown) => {
    await nc.close();
    throw err;
  });
  return { nc, jsm, js: jetstream(nc), stream: endpointStream(namespace, endpoint) };
}

export interface PublishedEvent {
  id: string;
  type: string;
  body: Buffer;
}

/** Publishes an event exactly as the receiver stores it. */
export async function publishEvent(
  nc: NatsConnection,
  namespace: string,
  endpoint: string,
  event: { type: string; body: string | Buffer; contentType?: string; id?: string; headers?: Record<string, string> },
): Promise<PublishedEvent> {
  const id = event.id ?? `evt_${randomUUID()}`;
  const hdrs = natsHeaders();
  hdrs.set(h.eventType, event.type);
  hdrs.set(h.contentType, event.contentType ?? 'application/json');
  for (const [k, v] of Object.entries(event.headers ?? {})) hdrs.set(`${h.original}${k}`, v);
  const body = Buffer.from(event.body);
  await jetstream(nc).publish(eventSubject(namespace, endpoint, event.type), body, { msgID: id, headers: hdrs });
  return { id, type: event.type, body };
}

export function subscription(
  names: { namespace: string; endpoint: string; subscription: string },
  spec: Record<string, unknown>,
): WebhookSubscription {
  return parseResource({
    apiVersion: 'hookyard.io/v1alpha1',
    kind: 'WebhookSubscription',
    metadata: { name: names.subscription, namespace: names.namespace },
    spec: { sources: [{ endpoint: names.endpoint }], ...spec },
  }) as WebhookSubscription;
}

export interface Received {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A real HTTP server on 127.0.0.1. `respond` decides each answer; by default 200. */
export async function startTarget(
  respond: (req: Received, res: ServerResponse, index: number) => void | Promise<void> = (_r, res) => {
    res.end('ok');
  },
) {
  const received: Received[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const waiters = new Set<() => void>();
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const r = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) };
    const index = received.push(r) - 1;
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    for (const w of waiters) w();
    res.on('close', () => inFlight--);
    try {
      await respond(r, res, index);
    } catch {
      res.destroy();
    }
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/hooks`,
    received,
    get maxInFlight() {
      return maxInFlight;
    },
    /** Resolves once at least `n` requests have arrived. */
    async waitFor(n: number, what = `${n} requests`) {
      while (received.length < n) {
        await new Promise<void>((ok) => {
          const t = setTimeout(ok, 200);
          waiters.add(() => {
            clearTimeout(t);
            ok();
          });
        });
        waiters.clear();
      }
      return what;
    },
    close() {
      server.closeAllConnections();
      return new Promise<void>((ok) => server.close(() => ok()));
    },
  };
}

/** Polls until `check` is true; the test runner's timeout bounds it. */
export async function eventually(check: () => boolean | Promise<boolean>, intervalMs = 50): Promise<void> {
  while (!(await check())) await sleep(intervalMs);
}

/** The value of one series in a Prometheus text exposition. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.split(' ').pop());
  }
  return Number.NaN;
}

export type { JetStreamManager };

/** What the relay does once the dispatcher writes the watched line (see startNatsRelay). */
export type RelayCut = 'stop-writes' | 'stop-answers' | 'pass';

/**
 * A TCP relay on loopback between one client and the real nats-server, watching the protocol lines the client
 * writes. A SIGKILL cannot be timed to a line of code from outside, so the relay makes the instant: once the client
 * writes a line containing `marker`, it either passes nothing more the client writes, that line included (the
 * process died just before writing it: 'stop-writes'), or passes the line and nothing more the server answers (the
 * process died waiting for the answer: 'stop-answers'), or passes everything ('pass'). `seen` resolves then; the
 * test kills the process.
 */
export async function startNatsRelay(marker: string, cut: RelayCut) {
  const upstreamPort = Number(new URL(natsUrl()).port);
  let seen!: () => void;
  const markerSeen = new Promise<void>((ok) => {
    seen = ok;
  });
  let triggered = false;
  const sockets = new Set<Socket>();
  const server = createNetServer((client) => {
    const upstream = connectTcp(upstreamPort, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    let answersStopped = false;
    let writesStopped = false;
    upstream.on('data', (d) => {
      if (!answersStopped) client.write(d);
    });
    // What the client wrote is passed on whole lines only, so a marker split over two reads is still found.
    let pending = Buffer.alloc(0);
    client.on('data', (d) => {
      if (writesStopped) return;
      pending = Buffer.concat([pending, d]);
      const at = triggered ? -1 : pending.indexOf(marker);
      if (at >= 0) {
        triggered = true;
        const lineStart = pending.lastIndexOf('\r\n', at);
        if (cut === 'stop-writes') {
          upstream.write(pending.subarray(0, lineStart < 0 ? 0 : lineStart + 2));
          writesStopped = true;
        } else {
          answersStopped = cut === 'stop-answers';
          upstream.write(pending);
        }
        pending = Buffer.alloc(0);
        seen();
        return;
      }
      const end = pending.lastIndexOf('\r\n');
      if (end < 0) return;
      upstream.write(pending.subarray(0, end + 2));
      pending = pending.subarray(end + 2);
    });
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  return {
    url: `nats://127.0.0.1:${(server.address() as AddressInfo).port}`,
    markerSeen,
    close() {
      for (const s of sockets) s.destroy();
      return new Promise<void>((ok) => server.close(() => ok()));
    },
  };
}
