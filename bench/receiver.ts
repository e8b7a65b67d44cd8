// npm run bench:receiver — the receiver as the image runs it (`hookyard receiver` from the dist/ bundle, with the
// node flags of the Dockerfile's ENTRYPOINT; GitHub preset: HMAC-SHA256 over the body) and the minimal baseline
// (bench/baseline-receiver.ts) against the same nats-server, loaded by the same autocannon settings one after the
// other in one run. Prints req/s, p50/p99 latency, their ratios and both servers' idle RSS, keeps the output in
// docs/benchmarks/, and exits 1 when a goal of docs/benchmarks.md is missed or a request was not answered 2xx.
// TRACES=1 adds a third server in the same rounds: the receiver exporting a span per request to a real
// OpenTelemetry Collector (tools/otelcol), and the ratio of the two receivers, the cost of tracing.
import { type ChildProcess, spawn } from 'node:child_process';
import { createHmac, randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import autocannon from 'autocannon';
import { stringify } from 'yaml';
import type { ProviderEndpoint } from '../src/api/provider-endpoint.ts';
import { parseResource } from '../src/api/validate.ts';
import { endpointStreamConfig, ensureStream } from '../src/jetstream/streams.ts';
import { bundleCli, type CliProcess, imageNodeFlags, runCli, waitReady } from '../test/harness/cli.ts';
import { freePort, root, startCollector, startNats, tempDir } from '../test/harness/servers.ts';
import { benchReport, cpuMs, rssMiB } from './report.ts';

const connections = Number(process.env.CONNECTIONS ?? 64);
const seconds = Number(process.env.DURATION ?? 5);
const rounds = Number(process.env.ROUNDS ?? 3);
const secret = 'bench-secret';
const body = Buffer.from(JSON.stringify({ action: 'opened', pad: 'x'.repeat(960) })); // about 1 KiB
const signature = `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;

// The node flags the image starts the CLI with; RECEIVER_NODE_FLAGS replaces them, to compare flags without
// editing the Dockerfile.
const nodeFlags = process.env.RECEIVER_NODE_FLAGS?.split(' ').filter(Boolean) ?? imageNodeFlags();

const traces = process.env.TRACES === '1';
const report = benchReport(
  traces ? 'receiver-traces' : process.env.NO_ASYNC_TRACES === '1' ? 'receiver-no-async-traces' : 'receiver',
);
const work = tempDir('hookyard-bench-');
const nats = await startNats(work.path, join(work.path, 'nats'));
const collector = traces ? await startCollector(work.path, work.path) : undefined;
const children: ChildProcess[] = [];
let receiver: CliProcess | undefined;
let traced: CliProcess | undefined;
try {
  const resource = {
    apiVersion: 'hookyard.io/v1alpha1',
    kind: 'ProviderEndpoint',
    metadata: { name: 'bench', namespace: 'bench' },
    spec: { provider: 'github', verification: [{ hmac: { secretRefs: [{ name: 'bench', key: 'secret' }] } }] },
  };
  const nc = await connect({ servers: nats.url });
  const jsm = await jetstreamManager(nc);
  await ensureStream(jsm, endpointStreamConfig('bench', 'bench', (parseResource(resource) as ProviderEndpoint).spec));
  await jsm.streams.add({ name: 'bench_baseline', subjects: ['bench.baseline.>'], duplicate_window: 86_400e9 });
  await nc.close();
  mkdirSync(join(work.path, 'secrets/bench'), { recursive: true });
  writeFileSync(join(work.path, 'secrets/bench/secret'), secret);
  writeFileSync(join(work.path, 'endpoint.yaml'), stringify(resource));

  const startReceiver = async (env: NodeJS.ProcessEnv) => {
    const port = await freePort();
    const proc = runCli(
      bundleCli(nodeFlags),
      ['receiver', '--config', join(work.path, 'endpoint.yaml'), '--secrets-dir', join(work.path, 'secrets')].concat([
        '--nats-url',
        nats.url,
        '--port',
        String(port),
      ]),
      { ...env, HOOKYARD_LOG_LEVEL: 'warn' },
    );
    await waitReady(proc, `http://127.0.0.1:${port}/readyz`);
    return { proc, port };
  };
  const untracedEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OTEL_')));
  const started = await startReceiver(untracedEnv);
  receiver = started.proc;
  const receiverPort = started.port;
  const tracedServer = collector
    ? await startReceiver({ ...untracedEnv, OTEL_EXPORTER_OTLP_ENDPOINT: collector.endpoint })
    : undefined;
  traced = tracedServer?.proc;
  const baselinePort = await freePort();
  const baseline = spawn(process.execPath, [join(root, 'bench/baseline-receiver.ts'), String(baselinePort), nats.url], {
    stdio: 'ignore',
  });
  children.push(baseline);
  for (let i = 0; i < 200; i++) {
    if (
      await fetch(`http://127.0.0.1:${baselinePort}/`).then(
        () => true,
        () => false,
      )
    )
      break;
    await sleep(50);
  }
  // Idle: both up, connected, two seconds without a request.
  await sleep(2000);
  const idleRssMiB = rssMiB(receiver.child.pid as number);
  const baselineRssMiB = rssMiB(baseline.pid as number);

  const load = (url: string) =>
    autocannon({
      url,
      method: 'POST',
      connections,
      duration: seconds,
      body,
      headers: { 'content-type': 'application/json', 'x-hub-signature-256': signature, 'x-github-event': 'push' },
      requests: [
        { setupRequest: (req) => ({ ...req, headers: { ...req.headers, 'x-github-delivery': randomUUID() } }) },
      ],
    });
  // CPU time of the server per 1000 requests: what each request costs it, whatever else the machine is doing.
  const measure = async (url: string, pid: number) => {
    const before = cpuMs(pid);
    const result = await load(url);
    return { ...result, cpuPer1000: ((cpuMs(pid) - before) / result.requests.total) * 1000 };
  };
  type Round = Awaited<ReturnType<typeof measure>>;
  const baselineUrl = `http://127.0.0.1:${baselinePort}/`;
  const receiverUrl = `http://127.0.0.1:${receiverPort}/hooks/bench/bench`;
  const tracedUrl = `http://127.0.0.1:${tracedServer?.port}/hooks/bench/bench`;
  await load(baselineUrl); // warm up both the same way
  await load(receiverUrl);
  if (traced) await load(tracedUrl);
  // Alternate rounds and take the median of each, so a burst of other work on the machine hits both alike.
  const results: Record<'b' | 'r' | 't', Round[]> = { b: [], r: [], t: [] };
  // RSS under load: each server's highest VmRSS, sampled every 100 ms through the measured rounds.
  const loadedRssMiB = { b: 0, r: 0 };
  const sampler = setInterval(() => {
    loadedRssMiB.b = Math.max(loadedRssMiB.b, rssMiB(baseline.pid as number));
    loadedRssMiB.r = Math.max(loadedRssMiB.r, rssMiB(receiver?.child.pid as number));
  }, 100);
  for (let round = 0; round < rounds; round++) {
    results.b.push(await measure(baselineUrl, baseline.pid as number));
    results.r.push(await measure(receiverUrl, receiver.child.pid as number));
    if (traced) results.t.push(await measure(tracedUrl, traced.child.pid as number));
  }
  clearInterval(sampler);
  const median = (xs: Round[]) =>
    xs.toSorted((x, y) => x.requests.average - y.requests.average)[Math.floor(xs.length / 2)] as Round;
  const b = median(results.b);
  const r = median(results.r);
  const row = (name: string, x: Round, all: Round[]) =>
    `| ${name} | ${x.requests.average.toFixed(0)} | ${all.map((a) => a.requests.average.toFixed(0)).join(' · ')} | ${x.latency.p50} | ${x.latency.p99} | ${x.cpuPer1000.toFixed(0)} | ${x.non2xx + x.errors} |`;
  const throughputRatio = Number((r.requests.average / b.requests.average).toFixed(2));
  const p99Ratio = Number((r.latency.p99 / b.latency.p99).toFixed(2));
  report.line(
    `${connections} connections, median of ${rounds} alternating ${seconds}-second rounds, ${body.length}-byte signed POSTs, one nats-server (file storage)`,
  );
  report.line(
    `receiver: node ${[...nodeFlags, 'dist/cli.mjs'].join(' ')} receiver; baseline noAsyncTraces: ${process.env.NO_ASYNC_TRACES === '1' ? 'on' : 'off'}`,
  );
  report.line();
  report.line('| server | req/s | rounds | p50 ms | p99 ms | CPU ms / 1000 | non-2xx or errors |');
  report.line('| --- | --- | --- | --- | --- | --- | --- |');
  report.line(row('baseline (node:http + HMAC + js.publish)', b, results.b));
  report.line(row('hookyard receiver', r, results.r));
  const t = traced ? median(results.t) : undefined;
  if (t) report.line(row('hookyard receiver, traces exported', t, results.t));
  report.line();
  if (t) {
    report.line(`traced throughput ratio (traced / untraced): ${(t.requests.average / r.requests.average).toFixed(2)}`);
    report.line(`traced p99 ratio (traced / untraced): ${(t.latency.p99 / r.latency.p99).toFixed(2)}`);
    report.line(`spans in the collector by the end of the rounds: ${collector?.spans().length ?? 0}`);
  }
  report.line(`throughput ratio (receiver / baseline): ${throughputRatio} (goal >= 0.9)`);
  report.line(`p99 ratio (receiver / baseline): ${p99Ratio} (goal <= 1.25)`);
  report.line(
    `receiver idle RSS: ${idleRssMiB.toFixed(1)} MiB (goal < 80); baseline: ${baselineRssMiB.toFixed(1)} MiB`,
  );
  report.line(
    `RSS under ${connections} connections (highest of the measured rounds): receiver ${loadedRssMiB.r.toFixed(1)} MiB (goal <= 150); baseline ${loadedRssMiB.b.toFixed(1)} MiB`,
  );
  const unanswered = [...results.b, ...results.r, ...results.t].reduce((n, x) => n + x.non2xx + x.errors, 0);
  report.finish([
    { name: 'throughput ratio (receiver / baseline)', value: throughputRatio, op: '>=', limit: 0.9 },
    { name: 'p99 ratio (receiver / baseline)', value: p99Ratio, op: '<=', limit: 1.25 },
    { name: 'receiver idle RSS (MiB)', value: Number(idleRssMiB.toFixed(1)), op: '<', limit: 80 },
    {
      name: `receiver RSS under ${connections} connections (MiB)`,
      value: Number(loadedRssMiB.r.toFixed(1)),
      op: '<=',
      limit: 150,
    },
    { name: 'requests of the measured rounds not answered 2xx', value: unanswered, op: '<=', limit: 0 },
  ]);
} finally {
  await receiver?.stop();
  await traced?.stop();
  for (const child of children) child.kill('SIGTERM');
  await collector?.stop();
  await nats.stop();
  work.remove();
}
