// Running what the operator writes without a kubelet: the receiver or dispatcher of a Deployment started as a
// local process with its ConfigMap and Secrets laid out as Kubernetes mounts them, the operator itself as a
// process, what "reconciled" means where no pods run, and (for the operator benchmark only) a stand-in for the
// Deployment controller and kubelet that reports pods available.
import { createWriteStream, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as k8s from '@kubernetes/client-node';
import { type Dispatcher, fetch as undiciFetch } from 'undici';
import { ConditionType, Reason } from '../../src/api/conditions.ts';
import { kinds } from '../../src/api/kinds.ts';
import { Informer } from '../../src/operator/informer.ts';
import { keepConnectionsAlive } from '../../src/operator/kube.ts';
import { log } from '../../src/runtime/log.ts';
import { freePort } from '../../src/runtime/net.ts';
import { type Cli, type CliProcess, runCli, sourceCli, waitReady } from './cli.ts';
import { kubeConfig, requireEnv } from './kube.ts';
import { root } from './servers.ts';

/** Runs the CLI with its output also in .cache/test-logs/<name>.log, for reading after a failure. */
function runLogged(name: string, cli: Cli, args: string[], env: Record<string, string> = {}): CliProcess {
  const proc = runCli(cli, args, { ...process.env, ...env });
  const log = createWriteStream(join(root, '.cache/test-logs', `${name}.log`), { flags: 'a' });
  proc.child.stdout?.pipe(log);
  proc.child.stderr?.pipe(log);
  return proc;
}

/**
 * Starts the container of a Deployment as a local process: its args with the config and secrets mounts moved into
 * a folder (the ConfigMap's data and each projected Secret key at its path), its HTTP port replaced by `port`.
 */
export async function runDeployment(
  deployment: k8s.V1Deployment,
  configMap: k8s.V1ConfigMap,
  secretData: (name: string) => Record<string, string> | undefined,
  port: number,
  dir: string,
): Promise<CliProcess> {
  const pod = join(dir, deployment.metadata?.name ?? 'pod');
  const container = deployment.spec?.template.spec?.containers[0] as k8s.V1Container;
  const volumes = deployment.spec?.template.spec?.volumes ?? [];
  mkdirSync(join(pod, 'config'), { recursive: true });
  for (const [key, value] of Object.entries(configMap.data ?? {})) writeFileSync(join(pod, 'config', key), value);
  for (const source of volumes.find((v) => v.name === 'secrets')?.projected?.sources ?? []) {
    for (const item of source.secret?.items ?? []) {
      const file = join(pod, 'secrets', item.path);
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(file, secretData(source.secret?.name ?? '')?.[item.key] ?? '');
    }
  }
  const args = (container.args ?? []).map((a) =>
    a.replace('/etc/hookyard/config', join(pod, 'config')).replace('/etc/hookyard/secrets', join(pod, 'secrets')),
  );
  const portFlag = args.findIndex((a) => a === '--port' || a === '--metrics-port');
  args[portFlag + 1] = String(port);
  const env = Object.fromEntries((container.env ?? []).map((e) => [e.name, e.value ?? '']));
  const proc = runLogged(deployment.metadata?.name ?? 'workload', sourceCli(), args, env);
  await waitReady(proc, `http://127.0.0.1:${port}${container.readinessProbe?.httpGet?.path}`);
  return proc;
}

export interface RunningOperator extends CliProcess {
  metricsPort: number;
  /** The sum of a metric's series in the operator's /metrics that carry these labels; undefined when none do. */
  metric(name: string, labels?: Record<string, string>): Promise<number | undefined>;
}

/** `hookyard operator` as a process against the harness's API server and NATS (from the sources by default). */
export async function startOperator(
  name: string,
  args: string[],
  env: Record<string, string> = {},
  cli: Cli = sourceCli(),
): Promise<RunningOperator> {
  // `args` may be a Deployment's own (starting with the command, naming the metrics port); a repeated flag's last
  // value wins.
  const given = args.indexOf('--metrics-port');
  const metricsPort = given >= 0 ? Number(args[given + 1]) : await freePort();
  const proc = runLogged(
    name,
    cli,
    [
      'operator',
      '--image',
      'hookyard:test',
      '--nats-url',
      requireEnv('HOOKYARD_TEST_NATS_URL'),
      '--metrics-port',
      String(metricsPort),
      ...(args[0] === 'operator' ? args.slice(1) : args),
    ],
    { POD_NAME: name, ...env },
  );
  await waitReady(proc, `http://127.0.0.1:${metricsPort}/healthz`);
  return {
    ...proc,
    metricsPort,
    async metric(metric, labels = {}) {
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      let sum: number | undefined;
      for (const line of text.split('\n')) {
        const [, series, rawLabels = '', value] = /^([a-z_]+)(?:\{(.*)\})? (.+)$/.exec(line) ?? [];
        if (series !== metric) continue;
        if (Object.entries(labels).every(([k, v]) => rawLabels.includes(`${k}="${v}"`)))
          sum = (sum ?? 0) + Number(value);
      }
      return sum;
    },
  };
}

/** The conditions a resource has, as the operator writes them into its status. */
export interface WithConditions {
  metadata: { generation?: number };
  status?: { observedGeneration?: number; conditions?: { type: string; status: string; reason: string }[] };
}

/** The conditions only running pods make True: a kubelet's work, so the real node's to test (test/e2e/). */
const podConditions: string[] = [ConditionType.ReceiverReady, ConditionType.DispatcherReady];

/**
 * Whether the operator has done all it can for the resource's current generation where no pods run (the
 * apiserver-level suites have no kubelet): every condition that counts is True except the pods' ones, which wait
 * for the pods of the Deployment it wrote (PodsNotReady), and Ready says so. Pods becoming available, Ready True,
 * ProgressDeadlineExceeded and ScaledToZero are read on the real node (test/e2e/product.test.ts).
 */
export function reconciledWithoutPods(resource: WithConditions): boolean {
  if (resource.status?.observedGeneration !== resource.metadata.generation) return false;
  const conditions = resource.status?.conditions ?? [];
  if (conditions.find((c) => c.type === ConditionType.Ready)?.reason !== Reason.PodsNotReady) return false;
  return conditions.every((c) => {
    if (c.type === ConditionType.Ready || c.type === ConditionType.TargetReachable) return true;
    return podConditions.includes(c.type) ? c.reason === Reason.PodsNotReady : c.status === 'True';
  });
}

/**
 * Stand-in for the Deployment controller and kubelet, for the operator benchmark (bench/operator.ts) and the tests
 * that need Ready without a node: every Deployment in the namespace whose status does not yet say so is reported
 * as fully available for its current generation. It watches Deployments (the operator's own informer) and writes
 * statuses a few at a time over one keep-alive connection pool, as a cluster's controllers do, so that with
 * thousands of Deployments it is not what a benchmark times.
 */
export function simulatePods(namespace: string): () => void {
  const kc = keepConnectionsAlive(kubeConfig());
  const apps = kc.makeApiClient(k8s.AppsV1Api);
  const pending = new Set<string>();
  let idle: (() => void)[] = [];
  const wake = () => {
    for (const writer of idle.splice(0)) writer();
  };
  const informer = new Informer<k8s.V1Deployment>({
    kc,
    kind: kinds.Deployment,
    namespace,
    resyncMs: 60_000,
    log: log.child({ component: 'pod stand-in' }),
    onChange: (d, verb) => {
      if (verb === 'delete' || available(d)) return;
      pending.add(d.metadata?.name ?? '');
      wake();
    },
  });
  let running = true;
  const writer = async () => {
    while (running) {
      const name = pending.values().next().value;
      if (name === undefined) {
        await new Promise<void>((ok) => idle.push(ok));
        continue;
      }
      pending.delete(name);
      const d = informer.get(name, namespace);
      if (!d || available(d)) continue;
      const replicas = d.spec?.replicas ?? 1;
      const status = { observedGeneration: d.metadata?.generation ?? 0, replicas, readyReplicas: replicas };
      await apps
        .patchNamespacedDeploymentStatus(
          { namespace, name, body: { status: { ...status, availableReplicas: replicas, updatedReplicas: replicas } } },
          k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
        )
        .catch(async () => {
          await sleep(200);
          if (running) pending.add(name); // tried again, as a controller would
        });
    }
  };
  for (let i = 0; i < 4; i++) void writer();
  return () => {
    running = false;
    informer.stop();
    wake();
    idle = [];
  };
}

/** Whether a Deployment's status says all its pods are available for its current generation. */
const available = (d: k8s.V1Deployment) =>
  d.status?.observedGeneration === d.metadata?.generation && d.status?.availableReplicas === (d.spec?.replicas ?? 1);

export interface AdmissionAnswer {
  response: { allowed: boolean; status?: { message: string } };
}

/**
 * POSTs an AdmissionReview for creating `object` to an operator's webhook, as the API server would; with
 * `oldObject`, for changing that one into `object`.
 */
export async function reviewCreate(
  url: string,
  dispatcher: Dispatcher,
  object: { kind: string; [field: string]: unknown },
  oldObject?: object,
) {
  const operation = oldObject ? 'UPDATE' : 'CREATE';
  const response = await undiciFetch(url, {
    method: 'POST',
    dispatcher,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      request: { uid: 'u1', kind: { group: 'hookyard.io', kind: object.kind }, operation, object, oldObject },
    }),
  });
  return (await response.json()) as AdmissionAnswer;
}
