// npm run bench:dispatcher — the dispatcher against a minimal baseline (a raw JetStream pull consumer posting each
// event with undici and acking on 2xx), both reading the same stream and posting to the same sink.
//   1. throughput: N events are published first; each side in turn drains them (its own durable consumer);
//      deliveries/s = N / (last arrival − first arrival) at the sink.
//   2. latency: both run side by side while events are published at a steady rate; end-to-end = from publish
//      to arrival at the sink, p50 and p99.
// The machine is shared (2 cores), so the throughput phase runs in rounds, dispatcher and baseline alternating,
// each round with fresh consumers over the same N events, and the median of each side is reported. Each round also
// runs the dispatcher with spec.history disabled: the cost of the attempt records (one JetStream publish per
// attempt) is the ratio of the two.
// Options: --events N (default 20000), --concurrency C (64), --rate R events/s (500), --seconds S (5),
// --rounds (3). The output is kept in docs/benchmarks/; the process exits 1 when the throughput ratio is below the
// goals of docs/benchmarks.md (0.8 of the baseline; attempt records on, 0.9 of off).
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, headers as natsHeaders } from '@nats-io/transport-node';
import pino from 'pino';
import { Registry } from 'prom-client';
import { Pool } from 'undici';
import type { ProviderEndpoint } from '../src/api/provider-endpoint.ts';
import { parseResource } from '../src/api/validate.ts';
import type { WebhookSubscription } from '../src/api/webhook-subscription.ts';
import { startDispatcher } from '../src/dispatcher/dispatcher.ts';
import { endpointStream, eventSubject, headers as h } from '../src/jetstream/layout.ts';
import { endpointStreamConfig, ensureStream } from '../src/jetstream/streams.ts';
import { mapSecrets } from '../src/runtime/secrets.ts';
import { freePort, root, startNats, tempDir } from '../test/harness/servers.ts';
import { benchReport, type Report } from './report.ts';

const { values } = parseArgs({
  options: {
    events: { type: 'string', default: '20000' },
    concurrency: { type: 'string', default: '64' },
    rate: { type: 'string', default: '500' },
    seconds: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '3' },
    sink: { type: 'string' },
  },
});

/** Milliseconds since the epoch with sub-millisecond precision, comparable across processes. */
const clock = () => performance.timeOrigin + performance.now();

if (values.sink) await runSink(Number(values.sink));
else await runBench();

/** The sink, in its own process so it does not share an event loop with what is measured. */
async function runSink(port: number) {
  const stats = new Map<string, { count: number; first: number; last: number; latencies: number[] }>();
  const server = createServer((req, res) => {
    const path = req.url ?? '';
    if (req.method === 'GET') {
      const s = stats.get(path.replace('/stats', '')) ?? { count: 0, first: 0, last: 0, latencies: [] };
      res.end(JSON.stringify({ count: s.count, first: s.first, last: s.last, latencies: s.latencies }));
      if (path.startsWith('/reset')) stats.clear();
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const now = clock();
      let s = stats.get(path);
      if (!s) {
        s = { count: 0, first: now, last: now, latencies: [] };
        stats.set(path, s);
      }
      s.count++;
      s.last = now;
      const sent = Number(/"t":([\d.]+)/.exec(Buffer.concat(chunks).toString('latin1'))?.[1]);
      if (sent) s.latencies.push(now - sent);
      res.end('ok');
    });
  });
  server.keepAliveTimeout = 60_000;
  server.listen(port, '127.0.0.1', () => process.send?.('ready'));
}

async function runBench() {
  const report = benchReport('dispatcher');
  const events = Number(values.events);
  const concurrency = Number(values.concurrency);
  const rate = Number(values.rate);
  const seconds = Number(values.seconds);
  const work = tempDir('hookyard-bench-');
  const nats = await startNats(work.path, join(work.path, 'nats'));
  const sinkPort = await freePort();
  const sink = spawn(process.execPath, [join(root, 'bench/dispatcher.ts'), '--sink', String(sinkPort)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  await new Promise((ok) => sink.once('message', ok));
  const sinkUrl = `http://127.0.0.1:${sinkPort}`;
  const sinkStats = async (path: string) =>
    (await (await fetch(`${sinkUrl}/stats${path}`)).json()) as {
      count: number;
      first: number;
      last: number;
      latencies: number[];
    };

  // The nats-server and the sink are stopped however the run ends.
  try {
    await measure(nats.url, sinkUrl, sinkStats, report, { events, concurrency, rate, seconds });
  } finally {
    sink.kill();
    await nats.stop();
    work.remove();
  }
}

async function measure(
  natsUrl: string,
  sinkUrl: string,
  sinkStats: (path: string) => Promise<{ count: number; first: number; last: number; latencies: number[] }>,
  report: Report,
  { events, concurrency, rate, seconds }: { events: number; concurrency: number; rate: number; seconds: number },
) {
  const nc = await connect({ servers: natsUrl });
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  const [ns, ep] = ['bench', 'proign'];
  await ensureStream(
    jsm,
    endpointStreamConfig(
      ns,
      ep,
      (
        parseResource({
          apiVersion: 'hookyard.io/v1alpha1',
          kind: 'ProviderEndpoint',
          metadata: { name: ep, namespace: ns },
          spec: { provider: 'proign', verification: [{ none: true }], stream: { maxAge: '1h' } },
        }) as ProviderEndpoint
      ).spec,
    ),
  );
  const stream = endpointStream(ns, ep);
  const padding = 'x'.repeat(900);
  let seq = 0;
  const publish = () => {
    seq++;
    const hdrs = natsHeaders();
    const id = `evt_${seq}`;
    hdrs.set(h.eventType, 'order.shipped');
    hdrs.set(h.contentType, 'application/json');
    const body = Buffer.from(`{"id":"${id}","type":"order.shipped","t":${clock()},"data":"${padding}"}`);
    return js.publish(eventSubject(ns, ep, 'order.shipped'), body, { msgID: id, headers: hdrs });
  };

  // 1 KiB events, published 256 at a time.
  for (let i = 0; i < events; i += 256) {
    await Promise.all(Array.from({ length: Math.min(256, events - i) }, publish));
  }

  const subscriptionNamed = (name: string, path: string, history: boolean) =>
    parseResource({
      apiVersion: 'hookyard.io/v1alpha1',
      kind: 'WebhookSubscription',
      metadata: { name, namespace: ns },
      spec: {
        sources: [{ endpoint: ep }],
        target: { url: `${sinkUrl}${path}` },
        concurrency,
        circuitBreaker: { enabled: false },
        history: { enabled: history },
      },
    }) as WebhookSubscription;
  const startDisp = (name: string, path: string, history = true) =>
    startDispatcher({
      subscription: subscriptionNamed(name, path, history),
      sources: [{ namespace: ns, endpoint: ep }],
      secrets: mapSecrets({}),
      nc,
      registry: new Registry(),
      logger: pino({ level: 'silent' }),
    });

  /** The baseline: what a hand-written consumer does, nothing more. */
  const startBaseline = async (name: string, path: string) => {
    await jsm.consumers.add(stream, {
      durable_name: name,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      max_ack_pending: concurrency + 1000,
    });
    const consumer = await js.consumers.get(stream, name);
    const pool = new Pool(sinkUrl, { connections: concurrency });
    const messages = await consumer.consume({ max_messages: concurrency });
    let inFlight = 0;
    let free: (() => void) | undefined;
    const done = (async () => {
      for await (const m of messages) {
        while (inFlight >= concurrency) await new Promise<void>((ok) => (free = ok));
        inFlight++;
        pool
          .request({ path, method: 'POST', headers: { 'content-type': 'application/json' }, body: m.data })
          .then(async (res) => {
            await res.body.dump();
            if (res.statusCode < 300) m.ack();
            else m.nak();
          })
          .catch(() => m.nak())
          .finally(() => {
            inFlight--;
            free?.();
          });
      }
    })();
    return {
      async stop() {
        messages.stop();
        await done;
        while (inFlight > 0) await sleep(10);
        await pool.close();
      },
    };
  };

  const perSecond = (s: { count: number; first: number; last: number }) =>
    s.count / (Math.max(1, s.last - s.first) / 1000);
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] as number;
  const waitFor = async (path: string, n: number) => {
    for (;;) {
      const s = await sinkStats(path);
      if (s.count >= n) return s;
      await sleep(100);
    }
  };

  // 1. Throughput, one at a time, alternating.
  const dRuns: number[] = [];
  const bRuns: number[] = [];
  const offRuns: number[] = [];
  const offCpu: number[] = [];
  // CPU time of this process (where the dispatcher or the baseline runs) per 1000 deliveries.
  const dCpu: number[] = [];
  const bCpu: number[] = [];
  const cpuMsPer1000 = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000 / (events / 1000);
  for (let r = 0; r < Number(values.rounds); r++) {
    let cpu = process.cpuUsage();
    const d = await startDisp(`bench-${r}`, `/dispatcher-${r}`);
    dRuns.push(perSecond(await waitFor(`/dispatcher-${r}`, events)));
    await d.stop();
    dCpu.push(cpuMsPer1000(process.cpuUsage(cpu)));
    cpu = process.cpuUsage();
    const b = await startBaseline(`baseline-${r}`, `/baseline-${r}`);
    bRuns.push(perSecond(await waitFor(`/baseline-${r}`, events)));
    await b.stop();
    bCpu.push(cpuMsPer1000(process.cpuUsage(cpu)));
    cpu = process.cpuUsage();
    const off = await startDisp(`bench-off-${r}`, `/dispatcher-off-${r}`, false);
    offRuns.push(perSecond(await waitFor(`/dispatcher-off-${r}`, events)));
    await off.stop();
    offCpu.push(cpuMsPer1000(process.cpuUsage(cpu)));
  }

  // 2. Latency, side by side, at a steady rate.
  await fetch(`${sinkUrl}/reset`);
  const d2 = await startDisp('bench-0', '/dispatcher');
  const b2 = await startBaseline('baseline-0', '/baseline');
  const total = rate * seconds;
  const started = Date.now();
  for (let i = 0; i < total; i++) {
    const due = started + (i * 1000) / rate;
    if (due > Date.now()) await sleep(due - Date.now());
    void publish();
  }
  const dLatency = await waitFor('/dispatcher', total);
  const bLatency = await waitFor('/baseline', total);
  await d2.stop();
  await b2.stop();

  const pct = (xs: number[], p: number) => {
    const sorted = [...xs].sort((x, y) => x - y);
    return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
  };
  const ms = (x: number) => x.toFixed(2);
  const rows = [
    ['', 'deliveries/s', 'CPU ms/1000', `p50 ms (at ${rate}/s)`, `p99 ms (at ${rate}/s)`],
    [
      'dispatcher',
      median(dRuns).toFixed(0),
      median(dCpu).toFixed(0),
      ms(pct(dLatency.latencies, 50)),
      ms(pct(dLatency.latencies, 99)),
    ],
    ['dispatcher, no history', median(offRuns).toFixed(0), median(offCpu).toFixed(0), '', ''],
    [
      'baseline',
      median(bRuns).toFixed(0),
      median(bCpu).toFixed(0),
      ms(pct(bLatency.latencies, 50)),
      ms(pct(bLatency.latencies, 99)),
    ],
  ];
  const ratio = Number((median(dRuns) / median(bRuns)).toFixed(2));
  const historyRatio = Number((median(dRuns) / median(offRuns)).toFixed(2));
  report.line(`events: ${events} of 1 KiB, concurrency ${concurrency}, latency phase: ${total} events at ${rate}/s`);
  for (const r of rows) report.line(r.map((c) => String(c).padStart(22)).join(''));
  report.line(
    `rounds, deliveries/s: dispatcher ${dRuns.map((x) => x.toFixed(0)).join(' ')}; no history ${offRuns.map((x) => x.toFixed(0)).join(' ')}; baseline ${bRuns.map((x) => x.toFixed(0)).join(' ')}`,
  );
  report.line(`history ratio (attempt records on / off): ${historyRatio} (goal >= 0.9)`);
  report.line(`throughput ratio (dispatcher / baseline): ${ratio} (goal >= 0.8)`);
  report.finish([
    { name: 'throughput ratio (dispatcher / baseline)', value: ratio, op: '>=', limit: 0.8 },
    { name: 'history ratio (attempt records on / off)', value: historyRatio, op: '>=', limit: 0.9 },
  ]);

  await nc.drain();
}
