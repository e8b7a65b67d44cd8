// npm run bench:ordering — per-key ordering's cost: the dispatcher delivers the same N events (1 KiB) with
// spec.ordering over 1, 100 and 10,000 distinct keys, and without ordering, each from a fresh durable consumer on
// one stream, to the sink of bench/dispatcher.ts (its own process). deliveries/s = N / (last − first arrival).
// With one key deliveries go one at a time by definition, so that row measures one attempt's round trip; the goal
// is about many keys: with 10,000 keys, ordered delivery keeps at least half of the unordered throughput.
// Options: --events N (default 10000), --concurrency C (64), --rounds R (2; the median is reported).
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, headers as natsHeaders } from '@nats-io/transport-node';
import pino from 'pino';
import { Registry } from 'prom-client';
import { parseResource } from '../src/api/validate.ts';
import type { WebhookSubscription } from '../src/api/webhook-subscription.ts';
import { startDispatcher } from '../src/dispatcher/dispatcher.ts';
import { eventSubject, headers as h } from '../src/jetstream/layout.ts';
import { endpointStreamConfig, ensureStream } from '../src/jetstream/streams.ts';
import { mapSecrets } from '../src/runtime/secrets.ts';
import { freePort, root, startNats, tempDir } from '../test/harness/servers.ts';
import { benchReport } from './report.ts';

const { values } = parseArgs({
  options: {
    events: { type: 'string', default: '10000' },
    concurrency: { type: 'string', default: '64' },
    rounds: { type: 'string', default: '2' },
  },
});
const events = Number(values.events);
const concurrency = Number(values.concurrency);
const rounds = Number(values.rounds);
const keyCounts = [1, 100, 10_000];

const report = benchReport('ordering');
const work = tempDir('hookyard-bench-ordering-');
const nats = await startNats(work.path, join(work.path, 'nats'));
const sinkPort = await freePort();
const sink = spawn(process.execPath, [join(root, 'bench/dispatcher.ts'), '--sink', String(sinkPort)], {
  stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
});
try {
  await new Promise((ok) => sink.once('message', ok));
  await measure(`http://127.0.0.1:${sinkPort}`);
} finally {
  sink.kill();
  await nats.stop();
  work.remove();
}

async function measure(sinkUrl: string) {
  const nc = await connect({ servers: nats.url, noAsyncTraces: true }); // as a dispatcher's (connectNats)
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  const ns = 'bench';
  const padding = 'x'.repeat(900);
  // One endpoint (stream) per key count, so each event's key is i mod keys.
  for (const keys of keyCounts) {
    const ep = `keys-${keys}`;
    const spec = { provider: 'generic', stream: { replicas: 1, storage: 'file', maxAge: '1h' } };
    await ensureStream(jsm, endpointStreamConfig(ns, ep, spec as never));
    for (let i = 0; i < events; i += 256) {
      await Promise.all(
        Array.from({ length: Math.min(256, events - i) }, (_x, j) => {
          const n = i + j;
          const hdrs = natsHeaders();
          hdrs.set(h.eventType, 'order.updated');
          hdrs.set(h.contentType, 'application/json');
          const body = `{"id":"evt_${n}","order":"o${n % keys}","data":"${padding}"}`;
          return js.publish(eventSubject(ns, ep, 'order.updated'), body, { msgID: `evt_${n}`, headers: hdrs });
        }),
      );
    }
  }

  const waitFor = async (path: string) => {
    for (;;) {
      const s = (await (await fetch(`${sinkUrl}/stats${path}`)).json()) as {
        count: number;
        first: number;
        last: number;
      };
      if (s.count >= events) return s.count / (Math.max(1, s.last - s.first) / 1000);
      await sleep(100);
    }
  };
  let run = 0;
  /** One drain of the endpoint's N events by a fresh subscription; deliveries/s. */
  const drain = async (keys: number, ordered: boolean) => {
    const name = `run-${++run}`;
    const subscription = parseResource({
      apiVersion: 'hookyard.io/v1alpha1',
      kind: 'WebhookSubscription',
      metadata: { name, namespace: ns },
      spec: {
        sources: [{ endpoint: `keys-${keys}` }],
        target: { url: `${sinkUrl}/${name}` },
        concurrency,
        circuitBreaker: { enabled: false },
        ...(ordered ? { ordering: { key: 'body.order' } } : {}),
      },
    }) as WebhookSubscription;
    const d = await startDispatcher({
      subscription,
      sources: [{ namespace: ns, endpoint: `keys-${keys}` }],
      secrets: mapSecrets({}),
      nc,
      registry: new Registry(),
      logger: pino({ level: 'silent' }),
    });
    const perSecond = await waitFor(`/${name}`);
    await d.stop();
    return perSecond;
  };

  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] as number;
  const rows: { keys: number; unordered: number; ordered: number; all: number[] }[] = [];
  for (const keys of keyCounts) {
    const u: number[] = [];
    const o: number[] = [];
    // Alternating, so a busy moment of the shared machine does not fall on one side only.
    for (let r = 0; r < rounds; r++) {
      o.push(await drain(keys, true));
      u.push(await drain(keys, false));
    }
    rows.push({ keys, unordered: median(u), ordered: median(o), all: o });
  }
  report.line(`events: ${events} of 1 KiB per key count, concurrency ${concurrency}, median of ${rounds} rounds`);
  report.line(['keys', 'unordered/s', 'ordered/s', 'ratio', 'ordered rounds/s'].map((c) => c.padStart(18)).join(''));
  for (const r of rows) {
    report.line(
      [
        String(r.keys),
        r.unordered.toFixed(0),
        r.ordered.toFixed(0),
        (r.ordered / r.unordered).toFixed(2),
        r.all.map((x) => x.toFixed(0)).join(' '),
      ]
        .map((c) => c.padStart(18))
        .join(''),
    );
  }
  const many = rows.at(-1) as (typeof rows)[number];
  const ratio = Number((many.ordered / many.unordered).toFixed(2));
  report.finish([{ name: 'throughput ratio (ordered, 10,000 keys / unordered)', value: ratio, op: '>=', limit: 0.5 }]);
  await nc.drain();
}
