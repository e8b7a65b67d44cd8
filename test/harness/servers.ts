// Starts the real servers the tests talk to: etcd, kube-apiserver (RBAC, service-account signing, an admin
// token) and nats-server with JetStream, each on a free loopback port, with their output in log files.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, fetch } from 'undici';
import { freePort } from '../../src/runtime/net.ts';

export { freePort };

export const root = resolve(import.meta.dirname, '../..');
export const binDir = join(root, '.cache/bin');

export interface Server {
  name: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

export function startProcess(
  name: string,
  binary: string,
  args: string[],
  logDir: string,
  env: NodeJS.ProcessEnv = process.env,
): Server {
  const log = createWriteStream(join(logDir, `${name}.log`));
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  const exited = new Promise<void>((ok) => child.once('exit', () => ok()));
  child.once('error', (err) => log.write(`cannot start ${binary}: ${err.message}\n`));
  return {
    name,
    process: child,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const killed = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
      if (!killed) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}

/** Polls `check` until it resolves true, failing with the server's log path if the process dies first. */
export async function waitUntil(server: Server, what: string, check: () => Promise<boolean>, seconds = 90) {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    const { exitCode, pid } = server.process;
    if (exitCode !== null || pid === undefined) {
      throw new Error(
        `${server.name} is not running while waiting for ${what}; see .cache/test-logs/${server.name}.log`,
      );
    }
    if (await check().catch(() => false)) return;
    await sleep(200);
  }
  throw new Error(`${server.name}: ${what} not reached in ${seconds}s`);
}

export interface NatsServer extends Server {
  url: string;
  port: number;
  storeDir: string;
}

export async function startNats(logDir: string, storeDir: string, port?: number): Promise<NatsServer> {
  const natsPort = port ?? (await freePort());
  const monitorPort = await freePort();
  const server = startProcess(
    'nats-server',
    join(binDir, 'nats-server'),
    ['-js', '-a', '127.0.0.1', '-p', String(natsPort), '-m', String(monitorPort), '-sd', storeDir],
    logDir,
  );
  await waitUntil(server, 'JetStream healthy', async () => {
    const res = await fetch(`http://127.0.0.1:${monitorPort}/healthz?js-enabled-only=true`);
    return res.ok;
  });
  return { ...server, url: `nats://127.0.0.1:${natsPort}`, port: natsPort, storeDir };
}

export interface KubeServers {
  servers: Server[];
  server: string;
  token: string;
  kubeconfig: string;
}

export async function startKube(workDir: string, logDir: string): Promise<KubeServers> {
  const [etcdPort, etcdPeerPort, apiPort] = [await freePort(), await freePort(), await freePort()];
  const etcd = startProcess(
    'etcd',
    join(binDir, 'etcd'),
    [
      `--data-dir=${join(workDir, 'etcd')}`,
      `--listen-client-urls=http://127.0.0.1:${etcdPort}`,
      `--advertise-client-urls=http://127.0.0.1:${etcdPort}`,
      `--listen-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
      '--unsafe-no-fsync',
      '--log-level=warn',
    ],
    logDir,
  );
  await waitUntil(etcd, 'etcd health', async () => (await fetch(`http://127.0.0.1:${etcdPort}/health`)).ok);

  const pki = join(workDir, 'pki');
  mkdirSync(pki, { recursive: true });
  execFileSync('openssl', ['genrsa', '-out', join(pki, 'sa.key'), '2048'], { stdio: 'ignore' });
  execFileSync('openssl', ['rsa', '-in', join(pki, 'sa.key'), '-pubout', '-out', join(pki, 'sa.pub')], {
    stdio: 'ignore',
  });
  const token = randomBytes(24).toString('hex');
  writeFileSync(join(pki, 'tokens.csv'), `${token},hookyard-test-admin,1,"system:masters"\n`);

  const apiserver = startProcess(
    'kube-apiserver',
    join(binDir, 'kube-apiserver'),
    [
      `--etcd-servers=http://127.0.0.1:${etcdPort}`,
      `--cert-dir=${join(workDir, 'apiserver-certs')}`,
      `--secure-port=${apiPort}`,
      '--bind-address=127.0.0.1',
      '--advertise-address=127.0.0.1',
      '--endpoint-reconciler-type=none',
      '--service-cluster-ip-range=10.0.0.0/16',
      '--authorization-mode=RBAC',
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${join(pki, 'sa.pub')}`,
      `--service-account-signing-key-file=${join(pki, 'sa.key')}`,
      `--token-auth-file=${join(pki, 'tokens.csv')}`,
      '--allow-privileged=true',
      '--enable-priority-and-fairness=false',
      '--disable-admission-plugins=ServiceAccount',
    ],
    logDir,
  );
  const server = `https://127.0.0.1:${apiPort}`;
  const insecure = new Agent({ connect: { rejectUnauthorized: false } });
  await waitUntil(apiserver, 'kube-apiserver ready', async () => {
    const res = await fetch(`${server}/readyz`, {
      dispatcher: insecure,
      headers: { authorization: `Bearer ${token}` },
    });
    return res.ok;
  });
  await insecure.close();

  const kubeconfig = join(workDir, 'kubeconfig');
  writeFileSync(
    kubeconfig,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'test', cluster: { server, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'admin', user: { token } }],
      contexts: [{ name: 'test', context: { cluster: 'test', user: 'admin', namespace: 'default' } }],
      'current-context': 'test',
    }),
  );
  return { servers: [apiserver, etcd], server, token, kubeconfig };
}

/** A CA and a serving certificate for 127.0.0.1, for the admission webhook the API server calls. */
export function servingCertificate(dir: string): { caFile: string; certFile: string; keyFile: string } {
  mkdirSync(dir, { recursive: true });
  const f = (name: string) => join(dir, name);
  const run = (args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' });
  const key = (name: string) => ['-newkey', 'rsa:2048', '-nodes', '-keyout', f(`${name}.key`)];
  run(['req', '-x509', ...key('ca'), '-days', '2', '-subj', '/CN=hookyard-test-ca', '-out', f('ca.crt')]);
  run(['req', ...key('tls'), '-subj', '/CN=127.0.0.1', '-out', f('tls.csr')]);
  writeFileSync(f('ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  const ca = ['-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial'];
  run(['x509', '-req', '-in', f('tls.csr'), ...ca, '-days', '2', '-extfile', f('ext.cnf'), '-out', f('tls.crt')]);
  return { caFile: f('ca.crt'), certFile: f('tls.crt'), keyFile: f('tls.key') };
}

export function tempDir(prefix: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** One span as the collector received it, flattened from OTLP JSON. */
export interface CollectedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  /** OTLP's SpanKind: 2 server, 3 client. */
  kind: number;
  /** OTLP's status code: 0 unset, 1 ok, 2 error. */
  status: number;
  service: string;
  attributes: Record<string, string | number | boolean>;
}

export interface Collector extends Server {
  /** The OTLP/HTTP endpoint, as OTEL_EXPORTER_OTLP_ENDPOINT takes it. */
  endpoint: string;
  /** Every span the collector has written to its file so far. */
  spans(): CollectedSpan[];
}

type OtlpValue = { stringValue?: string; intValue?: string | number; boolValue?: boolean; doubleValue?: number };
type OtlpAttributes = { key: string; value: OtlpValue }[] | undefined;

function otlpAttributes(list: OtlpAttributes): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const { key, value } of list ?? []) {
    out[key] =
      value.stringValue ??
      (value.intValue !== undefined ? Number(value.intValue) : undefined) ??
      value.boolValue ??
      value.doubleValue ??
      '';
  }
  return out;
}

/**
 * The OpenTelemetry Collector of tools/otelcol (`make tools` builds it): OTLP over HTTP on a free port, each batch
 * of spans written as a line of OTLP JSON to a file that `spans()` reads. Its own telemetry is off, so it opens no
 * other port.
 */
export async function startCollector(logDir: string, workDir: string): Promise<Collector> {
  const port = await freePort();
  const file = join(workDir, 'spans.jsonl');
  const config = join(workDir, 'otelcol.yaml');
  writeFileSync(
    config,
    `receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:${port}"}
exporters:
  file: {path: "${file}", flush_interval: 100ms}
service:
  telemetry:
    metrics: {level: none}
  pipelines:
    traces: {receivers: [otlp], exporters: [file]}
`,
  );
  const server = startProcess('otelcol', join(binDir, 'otelcol'), ['--config', config], logDir);
  const endpoint = `http://127.0.0.1:${port}`;
  await waitUntil(server, 'OTLP receiver up', async () => {
    const res = await fetch(`${endpoint}/v1/traces`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    return res.ok;
  });
  return {
    ...server,
    endpoint,
    spans() {
      let text = '';
      try {
        text = readFileSync(file, 'utf8');
      } catch {
        return [];
      }
      return text
        .split('\n')
        .filter((line) => line.trim() !== '')
        .flatMap((line) => {
          const batch = JSON.parse(line) as {
            resourceSpans: {
              resource?: { attributes?: OtlpAttributes };
              scopeSpans: {
                spans: (Omit<CollectedSpan, 'attributes' | 'status' | 'service'> & {
                  attributes?: OtlpAttributes;
                  status?: { code?: number };
                })[];
              }[];
            }[];
          };
          return batch.resourceSpans.flatMap((rs) => {
            const service = String(otlpAttributes(rs.resource?.attributes)['service.name'] ?? '');
            return rs.scopeSpans.flatMap((ss) =>
              ss.spans.map((s) => ({
                traceId: s.traceId,
                spanId: s.spanId,
                parentSpanId: s.parentSpanId ?? '',
                name: s.name,
                kind: s.kind,
                status: s.status?.code ?? 0,
                service,
                attributes: otlpAttributes(s.attributes),
              })),
            );
          });
        });
    },
  };
}
