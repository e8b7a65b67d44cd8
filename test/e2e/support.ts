// Helpers of the real-node tests (test/e2e/, run by test/harness/node/run.ts): the images imported into the
// node, recording sinks as pods, and reading what reached them through the API server's service proxy.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { type JetStreamManager, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { stringify } from 'yaml';
import { kubectl, requireEnv } from '../harness/kube.ts';
import type { Images } from '../harness/node/images.ts';
import { binDir } from '../harness/servers.ts';

export const images = (): Images => JSON.parse(requireEnv('HOOKYARD_E2E_IMAGES')) as Images;
export const ingressUrl = () => requireEnv('HOOKYARD_E2E_INGRESS_URL');

/** The pod security the chart gives Hookyard's own pods: what every test pod runs under too. */
export const restricted = {
  pod: { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: { type: 'RuntimeDefault' } },
  container: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
};

/** A Deployment of the recording sink and its Service on `port`, and with `ingressPath` an Ingress to it. */
export function sinkManifests(namespace: string, name: string, ingressPath?: string, port = 80): string {
  const labels = { app: name };
  const docs: object[] = [
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name, namespace },
      spec: {
        replicas: 1,
        selector: { matchLabels: labels },
        template: {
          metadata: { labels },
          spec: {
            securityContext: restricted.pod,
            containers: [
              {
                name: 'sink',
                image: images().sink.ref,
                imagePullPolicy: 'Never',
                ports: [{ name: 'http', containerPort: 8080 }],
                readinessProbe: { httpGet: { path: '/_sink/healthz', port: 'http' }, periodSeconds: 1 },
                securityContext: restricted.container,
              },
            ],
          },
        },
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace },
      spec: { selector: labels, ports: [{ name: 'http', port, targetPort: 'http' }] },
    },
  ];
  if (ingressPath) {
    docs.push({
      apiVersion: 'networking.k8s.io/v1',
      kind: 'Ingress',
      metadata: { name, namespace },
      spec: {
        ingressClassName: 'traefik',
        rules: [
          {
            http: {
              paths: [
                { path: ingressPath, pathType: 'Prefix', backend: { service: { name, port: { name: 'http' } } } },
              ],
            },
          },
        ],
      },
    });
  }
  return docs.map((d) => stringify(d)).join('---\n');
}

export async function apply(yaml: string): Promise<void> {
  const r = await kubectl(['apply', '-f', '-'], yaml);
  if (r.code !== 0) throw new Error(`kubectl apply failed: ${r.stderr}`);
}

/** Waits for a Deployment's rollout; fails with the pods' state and events if it does not finish. */
export async function rolledOut(namespace: string, name: string, seconds = 120): Promise<void> {
  const r = await kubectl(['-n', namespace, 'rollout', 'status', `deployment/${name}`, `--timeout=${seconds}s`]);
  if (r.code !== 0) {
    const pods = await kubectl(['-n', namespace, 'describe', 'pods']);
    throw new Error(`deployment ${namespace}/${name} not rolled out: ${r.stderr}\n${pods.stdout}`);
  }
  // The old pods keep serving while they drain (a receiver's preStop sleep): wait until they are gone, so what
  // they count is not missed by a test that reads the live pods' metrics.
  const deployment = JSON.parse((await kubectl(['-n', namespace, 'get', 'deployment', name, '-o', 'json'])).stdout);
  const labels = deployment.spec.selector.matchLabels as Record<string, string>;
  const selector = Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  await eventually(
    `the old pods of ${namespace}/${name} gone`,
    async () => {
      const list = await kubectl(['-n', namespace, 'get', 'pods', '-l', selector, '-o', 'json']);
      const pods = JSON.parse(list.stdout).items as { metadata: { deletionTimestamp?: string } }[];
      return pods.some((p) => p.metadata.deletionTimestamp) ? undefined : true;
    },
    seconds,
  );
}

export interface Recorded {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  receivedAt: string;
  /** Requests the sink was answering when this one arrived, itself included. */
  inFlight: number;
  status: number;
}

/** Makes a sink answer each request `delayMs` late, and every `failEvery`-th with 503 (0: none). */
export async function configureSink(namespace: string, name: string, config: { delayMs: number; failEvery: number }) {
  const path = `/api/v1/namespaces/${namespace}/services/${name}:http/proxy/_sink/config`;
  const r = await kubectl(['create', '--raw', path, '-f', '-'], JSON.stringify(config));
  if (r.code !== 0) throw new Error(`configuring sink ${namespace}/${name}: ${r.stderr}`);
}

/** What reached a sink's pod, through the API server's proxy to its Service (a one-replica sink). */
export async function recorded(namespace: string, name: string): Promise<Recorded[]> {
  const path = `/api/v1/namespaces/${namespace}/services/${name}:http/proxy/_sink/requests`;
  const r = await kubectl(['get', '--raw', path]);
  if (r.code !== 0) throw new Error(`reading sink ${namespace}/${name}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as Recorded[]).map((x) => ({ ...x, body: Buffer.from(x.body, 'base64').toString() }));
}

/** Polls `check` until it returns a value other than undefined, failing after `seconds` with `what`. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined>, seconds = 60): Promise<T> {
  const deadline = Date.now() + seconds * 1000;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    await new Promise((ok) => setTimeout(ok, 500));
  }
  throw new Error(`${what}: not within ${seconds}s${last ? ` (last error: ${(last as Error).message})` : ''}`);
}

/**
 * Runs `use` with a JetStream manager connected to the nats-0 pod through `kubectl port-forward`: the way a user
 * reaches NATS inside the cluster with the `nats` CLI.
 */
export async function withNats<T>(use: (jsm: JetStreamManager) => Promise<T>): Promise<T> {
  const forward = spawn(join(binDir, 'kubectl'), [
    ...['--kubeconfig', requireEnv('KUBECONFIG'), '-n', 'nats', 'port-forward', 'pod/nats-0', ':4222'],
  ]);
  try {
    const port = await new Promise<number>((ok, fail) => {
      let out = '';
      forward.stdout.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        const m = /127\.0\.0\.1:(\d+)/.exec(out);
        if (m) ok(Number(m[1]));
      });
      forward.on('exit', (code) => fail(new Error(`kubectl port-forward exited with ${code}`)));
    });
    // The server tells clients of its peers' pod addresses, which the host cannot reach: stay on the forward.
    const nc = await connect({ servers: `127.0.0.1:${port}`, ignoreClusterUpdates: true });
    try {
      return await use(await jetstreamManager(nc));
    } finally {
      await nc.close();
    }
  } finally {
    forward.kill();
  }
}
