// npm run bench:operator — how long N ProviderEndpoints and N WebhookSubscriptions (one source each) take to become
// Ready, and the operator's CPU and memory while idle afterwards, beside a baseline doing the least work that
// makes the same resources Ready: for each resource, server-side apply the same rendered objects, create the same
// stream, consumer and dead-letter stream, and write Ready into its status, with as many requests in flight as
// the operator's workers (--workers, 4), no informers, no checks, over the same keep-alive connections.
// Runs against a real kube-apiserver, etcd and nats-server (started by test/harness/run.ts). No kubelet runs here:
// a stand-in reports each Deployment's pods available, on both sides, as a cluster's controllers would; the
// operator's Ready waits for that, the baseline's does not. Both sides run with the chart's finalizer policy, as
// `helm install` sets it up on Kubernetes 1.36 or later: new resources come with the operator's finalizer.
// The operator runs with the node flags of its pod (podNodeFlags). Options: --count N (default 200),
// --idle-seconds S (60), --workers N (4), --node-flags='...' (the operator's node flags instead of the pod's).
// Ready is watched, not polled; progress goes to stderr every 10 s.
// The output is kept in docs/benchmarks/. The goals (docs/benchmarks.md): Ready within 1.3 times the baseline's
// time, at most 1.2 reconciles per resource, at most 150 MiB RSS idle afterwards, and with 1000 or more of each,
// all Ready in under 60 s; a missed goal or a failed run exits non-zero.
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import * as k8s from '@kubernetes/client-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { stringify } from 'yaml';
import { kinds } from '../src/api/kinds.ts';
import type { ProviderEndpoint } from '../src/api/provider-endpoint.ts';
import { parseResource } from '../src/api/validate.ts';
import type { WebhookSubscription } from '../src/api/webhook-subscription.ts';
import { consumerConfig, ensureConsumer } from '../src/jetstream/consumers.ts';
import { deadLetterStreamConfig } from '../src/jetstream/dead-letters.ts';
import { endpointStream } from '../src/jetstream/layout.ts';
import { endpointStreamConfig, ensureStream } from '../src/jetstream/streams.ts';
import { Informer } from '../src/operator/informer.ts';
import { Kube, keepConnectionsAlive } from '../src/operator/kube.ts';
import { renderEndpoint, renderSubscription } from '../src/operator/render.ts';
import { log } from '../src/runtime/log.ts';
import { bundleCli, operatorNodeFlags } from '../test/harness/cli.ts';
import { installFinalizerPolicy } from '../test/harness/helm.ts';
import { createNamespace, installCRDs, kubeConfig, kubectl, requireEnv } from '../test/harness/kube.ts';
import { simulatePods, startOperator } from '../test/harness/workloads.ts';
import { benchReport, cpuMs, rssMiB } from './report.ts';

const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '200' },
    'idle-seconds': { type: 'string', default: '60' },
    workers: { type: 'string', default: '4' },
    'node-flags': { type: 'string' },
  },
});
/**
 * The heap of the operator's pod: the chart's node flags for it, and the old generation Node 24 sizes from the
 * chart's default memory limit of 512 MiB (in a 512 MiB memory cgroup V8 reports a heap limit of 259 MiB: 256 MiB
 * of old generation and semi-spaces of 1 MiB, which --max-semi-space-size raises).
 */
const podNodeFlags = [...operatorNodeFlags(), '--max-old-space-size=256'];
const nodeFlags = values['node-flags']?.split(' ').filter(Boolean) ?? podNodeFlags;
const count = Number(values.count);
/** The operator's reconciles at once (its --workers, 4 by default), and the baseline's resources at once. */
const workers = Number(values.workers);
const idleSeconds = Number(values['idle-seconds']);
const stallSeconds = 120;
const natsUrl = requireEnv('HOOKYARD_TEST_NATS_URL');
const kc = keepConnectionsAlive(kubeConfig());
const custom = kc.makeApiClient(k8s.CustomObjectsApi);

function manifests(): string {
  const docs: object[] = [];
  for (let i = 0; i < count; i++) {
    docs.push({
      apiVersion: 'hookyard.io/v1alpha1',
      kind: 'ProviderEndpoint',
      metadata: { name: `endpoint-${i}` },
      spec: { provider: 'generic', verification: [{ none: true }] },
    });
    docs.push({
      apiVersion: 'hookyard.io/v1alpha1',
      kind: 'WebhookSubscription',
      metadata: { name: `subscription-${i}` },
      spec: { sources: [{ endpoint: `endpoint-${i}` }], target: { url: `http://orders.shop.svc:8080/hooks/${i}` } },
    });
  }
  return docs.map((d) => stringify(d)).join('---\n');
}

type Listed = { items: (ProviderEndpoint | WebhookSubscription)[] };
const list = async (namespace: string, plural: string) =>
  (
    (await custom.listNamespacedCustomObject({
      group: 'hookyard.io',
      version: 'v1alpha1',
      namespace,
      plural,
    })) as Listed
  ).items;

const apps = kc.makeApiClient(k8s.AppsV1Api);

type Resource = ProviderEndpoint | WebhookSubscription;
const isReady = (r: Resource) =>
  r.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True' && c.observedGeneration !== undefined) ??
  false;

/**
 * The names of the namespace's resources that say Ready, kept by watching both kinds, instead of listing all 2N
 * resources four times a second on the same two cores as what is measured.
 */
function watchReady(namespace: string) {
  const ready = new Set<string>();
  const informers = [kinds.ProviderEndpoint, kinds.WebhookSubscription].map(
    (kind) =>
      new Informer<Resource>({
        kc,
        kind,
        namespace,
        resyncMs: 10 * 60_000,
        log,
        onChange: (r, verb) => {
          const key = `${r.kind}/${r.metadata.name}`;
          if (verb !== 'delete' && isReady(r)) ready.add(key);
          else ready.delete(key);
        },
      }),
  );
  return {
    ready,
    synced: Promise.all(informers.map((i) => i.synced)),
    stop: () => {
      for (const informer of informers) informer.stop();
    },
  };
}

/** How far a side is, every 10 s on stderr: resources Ready by kind, and Deployments whose pods are available. */
async function progress(namespace: string, ready: Set<string>, extra = '') {
  const deployments = (await apps.listNamespacedDeployment({ namespace })).items;
  const available = deployments.filter((d) => (d.status?.availableReplicas ?? 0) >= (d.spec?.replicas ?? 1));
  const endpoints = [...ready].filter((key) => key.startsWith('ProviderEndpoint/')).length;
  console.error(
    `${namespace}: Ready ${endpoints} endpoints, ${ready.size - endpoints} subscriptions; ` +
      `Deployments ${available.length} available of ${deployments.length}${extra}`,
  );
}

/** Applies the manifests and waits until all 2N resources say Ready; seconds from the apply to the last Ready. */
async function timeToReady(
  namespace: string,
  whileWaiting?: () => Promise<void>,
  status: () => Promise<string> = async () => '',
): Promise<number> {
  const { ready, synced, stop } = watchReady(namespace);
  await synced;
  try {
    const started = performance.now();
    const applied = await kubectl(['apply', '--server-side', '-n', namespace, '-f', '-'], manifests());
    if (applied.code !== 0) throw new Error(applied.stderr);
    const working = whileWaiting?.();
    // A side that stops making progress fails the run instead of holding it forever.
    let [readyBefore, progressAt, shownAt] = [-1, performance.now(), performance.now()];
    while (ready.size < 2 * count) {
      if (performance.now() - shownAt > 10_000) {
        shownAt = performance.now();
        await progress(namespace, ready, await status());
      }
      if (ready.size !== readyBefore) [readyBefore, progressAt] = [ready.size, performance.now()];
      if (performance.now() - progressAt > stallSeconds * 1000) {
        throw new Error(
          `${namespace}: ${ready.size} of ${2 * count} resources Ready, none more for ${stallSeconds} s (logs in .cache/test-logs)`,
        );
      }
      await sleep(50);
    }
    const seconds = (performance.now() - started) / 1000;
    await working;
    return seconds;
  } finally {
    stop();
  }
}

/** The API server's count of write requests so far, by verb and resource (its apiserver_request_total). */
async function apiWrites(): Promise<Map<string, number>> {
  const writes = new Map<string, number>();
  for (const line of (await kubectl(['get', '--raw', '/metrics'])).stdout.split('\n')) {
    if (!line.startsWith('apiserver_request_total{')) continue;
    const labels = Object.fromEntries([...line.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (!['APPLY', 'PATCH', 'POST', 'PUT', 'UPDATE', 'DELETE'].includes(labels.verb ?? '')) continue;
    const key = `${labels.verb} ${labels.resource}${labels.subresource ? `/${labels.subresource}` : ''}`;
    writes.set(key, (writes.get(key) ?? 0) + Number(line.split(' ').at(-1)));
  }
  return writes;
}

/** CPU seconds (user + system) a process has used. */
const cpuSeconds = (pid: number) => cpuMs(pid) / 1000;

/** The API server's and etcd's processes (test/harness/run.ts), for the CPU they spend on each side. */
const controlPlane = requireEnv('HOOKYARD_TEST_KUBE_PIDS').split(',').map(Number);
const natsServer = Number(requireEnv('HOOKYARD_TEST_NATS_PID'));

/**
 * CPU seconds so far of what both sides share: the API server and etcd, nats-server, and this process (its watches
 * of Ready, the pod stand-in, and on the baseline's side the baseline itself).
 */
const sharedCpu = () => {
  const own = process.cpuUsage();
  return {
    controlPlane: controlPlane.reduce((sum, pid) => sum + cpuSeconds(pid), 0),
    nats: cpuSeconds(natsServer),
    bench: (own.user + own.system) / 1e6,
  };
};
type SharedCpu = ReturnType<typeof sharedCpu>;

/** The writes `during` made, most first ("APPLY deployments 400, ..."), and the CPU seconds of sharedCpu it took. */
async function costDuring<T>(during: () => Promise<T>): Promise<[T, string, SharedCpu]> {
  const before = await apiWrites();
  const cpuBefore = sharedCpu();
  const result = await during();
  const cpuAfter = sharedCpu();
  const cpu = {
    controlPlane: cpuAfter.controlPlane - cpuBefore.controlPlane,
    nats: cpuAfter.nats - cpuBefore.nats,
    bench: cpuAfter.bench - cpuBefore.bench,
  };
  const rows = [...(await apiWrites())]
    .map(([key, n]) => [key, n - (before.get(key) ?? 0)] as const)
    .filter(([, n]) => n > 0)
    .sort((x, y) => y[1] - x[1]);
  return [result, rows.map(([key, n]) => `${key} ${n}`).join(', '), cpu];
}

/** The baseline: the same objects and JetStream state, applied once per resource, then Ready written. */
async function baseline(namespace: string) {
  const kube = new Kube(kc);
  const nc = await connect({ servers: natsUrl });
  const jsm = await jetstreamManager(nc);
  const options = { image: 'hookyard:bench', natsUrl };
  const ready = (generation: number) => ({
    observedGeneration: generation,
    conditions: [
      {
        type: 'Ready',
        status: 'True',
        reason: 'Ready',
        message: 'baseline',
        lastTransitionTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
        observedGeneration: generation,
      },
    ],
  });
  const done = new Set<string>();
  const work = async (raw: ProviderEndpoint | WebhookSubscription) => {
    const resource = parseResource(raw);
    if (resource.kind === 'ProviderEndpoint') {
      await ensureStream(jsm, endpointStreamConfig(namespace, resource.metadata.name, resource.spec));
      const o = renderEndpoint(resource, options);
      for (const object of [o.configMap, o.deployment, o.service, o.ingress]) if (object) await kube.apply(object);
    } else {
      const endpoint = resource.spec.sources?.[0]?.endpoint ?? '';
      const stream = endpointStream(namespace, endpoint);
      // The endpoint's stream may not exist yet: the operator would retry, so the baseline waits for it.
      while (!(await jsm.streams.info(stream).catch(() => undefined))) await sleep(20);
      await ensureConsumer(jsm, stream, consumerConfig(namespace, resource.metadata.name, endpoint, resource.spec));
      await ensureStream(
        jsm,
        deadLetterStreamConfig(namespace, resource.metadata.name, resource.spec.deadLetter.maxAge),
      );
      const o = renderSubscription(resource, [{ namespace, endpoint }], options);
      for (const object of [o.configMap, o.deployment]) await kube.apply(object);
    }
    await kube.patchStatus(raw as never, ready(Number(raw.metadata.generation ?? 1)));
  };
  while (done.size < 2 * count) {
    const pending = [
      ...(await list(namespace, 'providerendpoints')),
      ...(await list(namespace, 'webhooksubscriptions')),
    ]
      .filter((r) => !done.has(`${r.kind}/${r.metadata.name}`))
      .sort((a, b) => a.kind.localeCompare(b.kind)); // endpoints first
    const queue = [...pending];
    await Promise.all(
      Array.from({ length: workers }, async () => {
        for (let r = queue.shift(); r; r = queue.shift()) {
          await work(r);
          done.add(`${r.kind}/${r.metadata.name}`);
        }
      }),
    );
  }
  await nc.close();
}

const report = benchReport('operator');
await installCRDs();

/** The operator's side: time to Ready, then a quiet minute; the operator and the pod stand-in stop however it ends. */
async function measureOperator() {
  const namespace = await createNamespace('bench-operator');
  const removePolicy = await installFinalizerPolicy([namespace]);
  const stopPods = simulatePods(namespace);
  // The operator as the image runs it: the dist/ bundle (npm run build).
  const operator = await startOperator(
    'bench-operator',
    ['--namespaces', namespace, '--no-leader-election', '--workers', String(workers)],
    {},
    bundleCli(nodeFlags),
  );
  try {
    const pid = operator.child.pid as number;
    await sleep(2000);
    const startupRss = rssMiB(pid);
    const cpuAtStart = cpuSeconds(pid);
    const seconds = await timeToReady(namespace, undefined, async () => {
      const reconciles = (await operator.metric('hookyard_operator_reconciles_total')) ?? 0;
      const rewrites = (await operator.metric('hookyard_operator_status_rewrites_total')) ?? 0;
      return `; operator: ${reconciles} reconciles, ${rewrites} Ready rewrites`;
    });
    const busyRss = rssMiB(pid);
    const burstCpu = cpuSeconds(pid) - cpuAtStart;
    const reconciles = async () => (await operator.metric('hookyard_operator_reconciles_total')) ?? 0;
    const reconcilesToReady = await reconciles();
    const reconcileSeconds = (await operator.metric('hookyard_operator_reconcile_duration_seconds_sum')) ?? 0;
    const rewritesToReady = (await operator.metric('hookyard_operator_status_rewrites_total')) ?? 0;
    const cpuBefore = cpuSeconds(pid);
    await sleep(idleSeconds * 1000);
    const idleCpu = ((cpuSeconds(pid) - cpuBefore) / idleSeconds) * 100;
    const idleRss = rssMiB(pid);
    const idleHeap = ((await operator.metric('nodejs_heap_size_used_bytes')) ?? 0) / 2 ** 20;
    const idleReconciles = (await reconciles()) - reconcilesToReady;
    return {
      seconds,
      startupRss,
      busyRss,
      burstCpu,
      reconcilesToReady,
      rewritesToReady,
      reconcileSeconds,
      idleCpu,
      idleRss,
      idleHeap,
      idleReconciles,
    };
  } finally {
    await operator.stop();
    stopPods();
    await removePolicy();
  }
}

const [op, operatorWrites, operatorCpu] = await costDuring(measureOperator);

/** The baseline's side, in the same cluster: the pod stand-in makes its Deployments available too. */
async function measureBaseline() {
  const namespace = await createNamespace('bench-baseline');
  const removePolicy = await installFinalizerPolicy([namespace]);
  const stopPods = simulatePods(namespace);
  try {
    return await timeToReady(namespace, () => baseline(namespace));
  } finally {
    stopPods();
    await removePolicy();
  }
}

const [baselineSeconds, baselineWrites, baselineCpu] = await costDuring(measureBaseline);

const ratio = op.seconds / baselineSeconds;
const perResource = op.reconcilesToReady / (2 * count);
const row = (cells: (string | number)[]) => `| ${cells.join(' | ')} |`;
report.line(`${count} ProviderEndpoints + ${count} WebhookSubscriptions, one source each`);
report.line(`operator node flags: ${nodeFlags.join(' ')}`);
report.line();
report.line(row(['', 'hookyard operator', 'baseline', 'ratio']));
report.line(row(['---', '---', '---', '---']));
report.line(row(['apply to all Ready (s)', op.seconds.toFixed(1), baselineSeconds.toFixed(1), ratio.toFixed(2)]));
report.line();
report.line(
  `operator idle for ${idleSeconds}s afterwards: CPU ${op.idleCpu.toFixed(1)}% of one core, RSS ${op.idleRss.toFixed(0)} MiB ` +
    `(heap used ${op.idleHeap.toFixed(0)} MiB)`,
);
report.line(`operator RSS: ${op.startupRss.toFixed(0)} MiB at start, ${op.busyRss.toFixed(0)} MiB when all were Ready`);
report.line(`operator CPU from the apply to all Ready: ${op.burstCpu.toFixed(1)} s`);
report.line(`API server writes, operator side (until it had idled): ${operatorWrites}`);
report.line(`API server writes, baseline: ${baselineWrites}`);
report.line(
  `API server and etcd CPU: ${operatorCpu.controlPlane.toFixed(1)} s on the operator's side (until it had idled), ` +
    `${baselineCpu.controlPlane.toFixed(1)} s on the baseline's; nats-server ${operatorCpu.nats.toFixed(1)} and ` +
    `${baselineCpu.nats.toFixed(1)} s; this process (watching Ready, the pod stand-in, the baseline) ` +
    `${operatorCpu.bench.toFixed(1)} and ${baselineCpu.bench.toFixed(1)} s`,
);
report.line(
  `operator reconciles until all were Ready: ${op.reconcilesToReady} (${perResource.toFixed(2)} per resource, ` +
    `${((op.reconcileSeconds / op.reconcilesToReady) * 1000).toFixed(0)} ms each on average), and ${op.rewritesToReady} ` +
    `Ready rewrites from a Deployment's availability alone; while idle: ${op.idleReconciles} reconciles (status refreshes)`,
);
report.finish([
  { name: 'time to all Ready (operator / baseline)', value: Number(ratio.toFixed(2)), op: '<=', limit: 1.3 },
  { name: 'reconciles per resource until all were Ready', value: Number(perResource.toFixed(2)), op: '<=', limit: 1.2 },
  { name: 'operator RSS idle afterwards (MiB)', value: Math.round(op.idleRss), op: '<=', limit: 150 },
  ...(count >= 1000
    ? [
        {
          name: 'operator time to all Ready (s)',
          value: Number(op.seconds.toFixed(1)),
          op: '<' as const,
          limit: 60,
        },
      ]
    : []),
]);
