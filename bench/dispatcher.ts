// npm run bench:dispatcher — the dispatcher as the image runs it (`hookyard dispatcher` from the dist/ bundle, with
// the node flags of the Dockerfile's ENTRYPOINT) against a minimal baseline (bench/baseline-dispatcher.ts: a raw
// JetStream pull consumer posting each event with undici and acking on 2xx), each in its own process, both reading
// the same stream and posting to the same sink (a third process).
//   1. throughput: N events are published first; each side in turn drains them (its own durable consumer);
//      deliveries/s = N / (last arrival − first arrival) at the sink. The side's process is sampled meanwhile: CPU
//      time per 1000 deliveries (/proc/<pid>/stat), nats-server's and the sink's too (what the side costs them: the
//      machine is shared, so it slows the side down), and its highest RSS (VmRSS, every 100 ms): RSS under load.
//   2. latency: both run side by side while events are published at a steady rate; end-to-end = from publish
//      to arrival at the sink, p50 and p99.
// The dispatcher runs with what a subscription gets by default on its hot path (attempt records on, no per-key
// ordering) and standardWebhooks signing. The machine is shared (2 cores), so the throughput phase runs in rounds,
// the sides alternating, each round with fresh consumers over the same N events, and the median of each side is
// reported. Each round also runs the dispatcher with history.enabled false: the cost of the attempt records is the
// ratio of the two.
// Both sides run with the node flags of a dispatcher pod: its own (src/operator/render.ts, semi-spaces of 8 MiB
// instead of the image's 16) and the old generation Node 24 sizes to the pod's default memory limit of 384 MiB,
// 256 MiB (`--max-old-space-size=256`; measured in a memory cgroup of 384 MiB). The baseline gets the same, so
// the ratio compares the code, not the flags.
// Options: --events N (default 20000), --concurrency C (64), --rate R events/s (500), --seconds S (5),
// --rounds (5). Environment: SIDE_NODE_FLAGS replaces the node flags of both sides (the pod's heap; '' for node's
// defaults on this machine; to profile, add `--cpu-prof --cpu-prof-dir=/tmp/prof`). The output is kept in
// docs/benchmarks/; the process exits 1 when a goal of docs/benchmarks.md is missed. With --traces each round also
// runs the dispatcher exporting a span per attempt to a real OpenTelemetry Collector (tools/otelcol): the cost of
// tracing is its ratio to the dispatcher without.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, headers as natsHeaders } from '@nats-io/transport-node';
import { stringify } from 'yaml';
import type { ProviderEndpoint } from '../src/api/provider-endpoint.ts';
import { parseResource } from '../src/api/validate.ts';
import { endpointStream, eventSubject, headers as h } from '../src/jetstream/layout.ts';
import { endpointStreamConfig, ensureStream } from '../src/jetstream/streams.ts';
import { nodeFlagsOf } from '../src/operator/render.ts';
import { bundleCli, type CliProcess, runCli, waitReady } from '../test/harness/cli.ts';
import { freePort, root, startCollector, startNats, tempDir } from '../test/harness/servers.ts';
import { benchReport, cpuMs, rssMiB } from './report.ts';

const { values } = parseArgs({
  options: {
    events: { type: 'string', default: '20000' },
    concurrency: { type: 'string', default: '64' },
    rate: { type: 'string', default: '500' },
    seconds: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '5' },
    sink: { type: 'string' },
    traces: { type: 'boolean', default: false },
  },
});

/** A dispatcher pod's node flags, and the old generation Node 24 sizes to its default memory limit (384 MiB). */
const podNodeFlags = [...(nodeFlagsOf('dispatcher') ?? []), '--max-old-space-size=256'].join(' ');

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

interface SinkStats {
  count: number;
  first: number;
  last: number;
  latencies: number[];
}

/** A side under measurement: its process, ready to deliver. */
interface Running {
  pid: number;
  stop(): Promise<void>;
}

async function runBench() {
  const report = benchReport(values.traces ? 'dispatcher-traces' : 'dispatcher');
  const events = Number(values.events);
  const concurrency = Number(values.concurrency);
  const rate = Number(values.rate);
  const seconds = Number(values.seconds);
  const nodeFlags = (process.env.SIDE_NODE_FLAGS ?? podNodeFlags).split(' ').filter(Boolean);
  const work = tempDir('hookyard-bench-');
  const nats = await startNats(work.path, join(work.path, 'nats'));
  const collector = values.traces ? await startCollector(work.path, work.path) : undefined;
  const sinkPort = await freePort();
  const sink = spawn(process.execPath, [join(root, 'bench/dispatcher.ts'), '--sink', String(sinkPort)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  await new Promise((ok) => sink.once('message', ok));
  const sinkUrl = `http://127.0.0.1:${sinkPort}`;
  const sinkStats = async (path: string) => (await (await fetch(`${sinkUrl}/stats${path}`)).json()) as SinkStats;
  const [ns, ep] = ['bench', 'proign'];
  const stream = endpointStream(ns, ep);
  mkdirSync(join(work.path, 'secrets/signing'), { recursive: true });
  writeFileSync(
    join(work.path, 'secrets/signing/secret'),
    `whsec_${Buffer.from('bench-signing-secret').toString('base64')}`,
  );

  // Sides still running when the run fails are stopped with the rest.
  const alive = new Set<Running>();
  const running = (side: Running): Running => {
    alive.add(side);
    return {
      pid: side.pid,
      stop: () => {
        alive.delete(side);
        return side.stop();
      },
    };
  };

  /** `hookyard dispatcher` for one subscription posting to `path`; resolves once it answers /readyz. */
  const startDispatcher = async (name: string, path: string, history = true, traced = false): Promise<Running> => {
    const subscription = {
      apiVersion: 'hookyard.io/v1alpha1',
      kind: 'WebhookSubscription',
      metadata: { name, namespace: ns },
      spec: {
        sources: [{ endpoint: ep }],
        target: { url: `${sinkUrl}${path}` },
        concurrency,
        circuitBreaker: { enabled: false },
        history: { enabled: history },
        signing: { scheme: 'standardWebhooks', secretRefs: [{ name: 'signing', key: 'secret' }] },
      },
    };
    const config = join(work.path, `${name}.yaml`);
    writeFileSync(config, stringify({ subscription, sources: [{ namespace: ns, endpoint: ep }] }));
    const metricsPort = await freePort();
    const proc: CliProcess = runCli(
      bundleCli(nodeFlags),
      ['dispatcher', '--config', config, '--secrets-dir', join(work.path, 'secrets'), '--nats-url', nats.url].concat(
        ['--metrics-port', String(metricsPort)],
        traced && collector ? ['--otlp-endpoint', collector.endpoint] : [],
      ),
      { ...process.env, HOOKYARD_LOG_LEVEL: 'warn' },
    );
    const side = running({
      pid: proc.child.pid as number,
      async stop() {
        const code = await proc.stop(30);
        if (code !== 0) throw new Error(`hookyard dispatcher exited ${code}:\n${proc.output()}`);
      },
    });
    await waitReady(proc, `http://127.0.0.1:${metricsPort}/readyz`);
    return side;
  };

  /** bench/baseline-dispatcher.ts with its own durable consumer; resolves once it consumes. */
  const startBaseline = async (name: string, path: string): Promise<Running> => {
    const args = [nats.url, stream, name, `${sinkUrl}${path}`, String(concurrency)];
    const child: ChildProcess = spawn(
      process.execPath,
      [...nodeFlags, join(root, 'bench/baseline-dispatcher.ts'), ...args],
      {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      },
    );
    const exited = new Promise<number>((ok) => child.once('exit', (code) => ok(code ?? 1)));
    const side = running({
      pid: child.pid as number,
      async stop() {
        child.kill('SIGTERM');
        const code = await exited;
        if (code !== 0) throw new Error(`baseline exited ${code}`);
      },
    });
    await Promise.race([
      new Promise((ok) => child.once('message', ok)),
      exited.then((code) => Promise.reject(new Error(`baseline exited ${code} before it was ready`))),
    ]);
    return side;
  };

  // The nats-server, the sink and any side still running are stopped however the run ends.
  try {
    const nc = await connect({ servers: nats.url });
    const jsm = await jetstreamManager(nc);
    const js = jetstream(nc);
    const endpoint = parseResource({
      apiVersion: 'hookyard.io/v1alpha1',
      kind: 'ProviderEndpoint',
      metadata: { name: ep, namespace: ns },
      spec: { provider: 'proign', verification: [{ none: true }], stream: { maxAge: '1h' } },
    }) as ProviderEndpoint;
    await ensureStream(jsm, endpointStreamConfig(ns, ep, endpoint.spec));
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

    const waitFor = async (path: string, n: number) => {
      for (;;) {
        const s = await sinkStats(path);
        if (s.count >= n) return s;
        await sleep(100);
      }
    };
    /** One side drains the N events: deliveries/s at the sink, CPU ms per 1000 and highest RSS of its process. */
    const drain = async (start: (name: string, path: string) => Promise<Running>, name: string) => {
      const path = `/${name}`;
      const side = await start(name, path);
      // Deliveries made before the first sample (between ready and now) are left out of the CPU figure.
      const cpuBefore = cpuMs(side.pid);
      const natsBefore = cpuMs(nats.process.pid as number);
      const sinkBefore = cpuMs(sink.pid as number);
      const before = (await sinkStats(path)).count;
      let peakRss = rssMiB(side.pid);
      const sampler = setInterval(() => {
        peakRss = Math.max(peakRss, rssMiB(side.pid));
      }, 100);
      const s = await waitFor(path, events);
      clearInterval(sampler);
      peakRss = Math.max(peakRss, rssMiB(side.pid));
      const perThousand = (s.count - before) / 1000;
      const cpu = (cpuMs(side.pid) - cpuBefore) / perThousand;
      const natsCpu = (cpuMs(nats.process.pid as number) - natsBefore) / perThousand;
      const sinkCpu = (cpuMs(sink.pid as number) - sinkBefore) / perThousand;
      await side.stop();
      return { perSecond: s.count / (Math.max(1, s.last - s.first) / 1000), cpu, natsCpu, sinkCpu, peakRss };
    };
    type Run = Awaited<ReturnType<typeof drain>>;

    // 1. Throughput, one at a time, alternating.
    const runs: Record<'d' | 'off' | 'b' | 'traced', Run[]> = { d: [], off: [], b: [], traced: [] };
    for (let r = 0; r < Number(values.rounds); r++) {
      runs.d.push(await drain(startDispatcher, `dispatcher-${r}`));
      runs.b.push(await drain(startBaseline, `baseline-${r}`));
      runs.off.push(await drain((n, p) => startDispatcher(n, p, false), `dispatcher-off-${r}`));
      if (collector)
        runs.traced.push(await drain((n, p) => startDispatcher(n, p, true, true), `dispatcher-traced-${r}`));
    }

    // 2. Latency, side by side, at a steady rate; the consumers of round 0 have nothing left to deliver.
    await fetch(`${sinkUrl}/reset`);
    const d2 = await startDispatcher('dispatcher-0', '/dispatcher');
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
    await nc.drain();

    const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] as number;
    const pct = (xs: number[], p: number) => {
      const sorted = [...xs].sort((x, y) => x - y);
      return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
    };
    const perSecond = (xs: Run[]) => median(xs.map((x) => x.perSecond));
    const peakRss = (xs: Run[]) => Math.max(...xs.map((x) => x.peakRss));
    const ms = (x: number) => x.toFixed(2);
    const cpuOf = (xs: Run[], of: 'cpu' | 'natsCpu' | 'sinkCpu') => median(xs.map((x) => x[of])).toFixed(0);
    const row = (side: string, xs: Run[], latencies?: number[]) =>
      `| ${side} | ${perSecond(xs).toFixed(0)} | ${xs.map((x) => x.perSecond.toFixed(0)).join(' · ')} | ${cpuOf(xs, 'cpu')} | ${cpuOf(xs, 'natsCpu')} | ${cpuOf(xs, 'sinkCpu')} | ${peakRss(xs).toFixed(0)} | ${latencies ? ms(pct(latencies, 50)) : ''} | ${latencies ? ms(pct(latencies, 99)) : ''} |`;
    const ratio = Number((perSecond(runs.d) / perSecond(runs.b)).toFixed(2));
    const historyRatio = Number((perSecond(runs.d) / perSecond(runs.off)).toFixed(2));
    const dispatcherRss = Number(peakRss(runs.d).toFixed(0));
    report.line(`events: ${events} of 1 KiB, concurrency ${concurrency}, latency phase: ${total} events at ${rate}/s`);
    report.line(
      `dispatcher: node ${[...nodeFlags, 'dist/cli.mjs'].join(' ')} dispatcher, standardWebhooks signing, attempt records on unless said`,
    );
    report.line(`baseline: node ${[...nodeFlags, 'bench/baseline-dispatcher.ts'].join(' ')}`);
    report.line(
      `CPU ms / 1000 (of the side, of nats-server, of the sink, while the side drained): median of the rounds; RSS under load: highest VmRSS of the side's process in any round`,
    );
    report.line();
    report.line(
      '| side | deliveries/s | rounds | CPU ms / 1000 | nats-server CPU ms / 1000 | sink CPU ms / 1000 | RSS under load MiB | p50 ms | p99 ms |',
    );
    report.line('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
    report.line(row('dispatcher', runs.d, dLatency.latencies));
    report.line(row('dispatcher, attempt records off', runs.off));
    report.line(row('baseline', runs.b, bLatency.latencies));
    if (collector) report.line(row('dispatcher, tracing on', runs.traced));
    report.line();
    report.line(`throughput ratio (dispatcher / baseline): ${ratio} (goal >= 0.9)`);
    report.line(`history ratio (attempt records on / off): ${historyRatio} (goal >= 0.9)`);
    report.line(`dispatcher RSS under load: ${dispatcherRss} MiB (goal <= 150)`);
    if (collector) {
      const cpu = (xs: Run[]) => median(xs.map((x) => x.cpu));
      report.line(
        `tracing on / off: throughput ${(perSecond(runs.traced) / perSecond(runs.d)).toFixed(2)}, CPU per delivery ${(cpu(runs.traced) / cpu(runs.d)).toFixed(2)}`,
      );
    }
    report.finish([
      { name: 'throughput ratio (dispatcher / baseline)', value: ratio, op: '>=', limit: 0.9 },
      { name: 'history ratio (attempt records on / off)', value: historyRatio, op: '>=', limit: 0.9 },
      { name: 'dispatcher RSS under load (MiB)', value: dispatcherRss, op: '<=', limit: 150 },
    ]);
  } finally {
    for (const side of alive) await side.stop().catch(() => {});
    sink.kill();
    await collector?.stop();
    await nats.stop();
    work.remove();
  }
}
