// `hookyard operator`: the control plane. Every replica serves metrics, probes and the admission webhook; only the
// one holding the leader Lease reconciles.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as k8s from '@kubernetes/client-node';
import { jetstreamManager } from '@nats-io/jetstream';
import express from 'express';
import { Registry } from 'prom-client';
import { admissionRouter } from '../admission/webhook.ts';
import { durationMs } from '../runtime/duration.ts';
import { log as rootLog } from '../runtime/log.ts';
import { connectNats } from '../runtime/nats.ts';
import { type Controller, startController } from './controller.ts';
import { keepConnectionsAlive } from './kube.ts';
import { electLeader, type Leadership } from './leader.ts';
import { OperatorMetrics, serveMetrics } from './metrics.ts';

const usage = `usage: hookyard operator [options]

  --nats-url URL               NATS with JetStream (env NATS_URL)
  --nats-creds FILE            NATS credentials (env NATS_CREDS)
  --nats-ca FILE               CA bundle for NATS over TLS (env NATS_CA)
  --workload-nats-secret NAME  Secret in each resource's namespace (key creds, and ca.crt with --nats-ca)
                               mounted into receivers and dispatchers for their NATS connection
  --namespaces A,B             watch only these namespaces (default: all)
  --image IMAGE                receivers' and dispatchers' image (env HOOKYARD_IMAGE)
  --ingress-class NAME         ingress class of endpoints that name none
  --ingress-host HOST          ingress host of endpoints that name none
  --metrics-port PORT          /metrics, /healthz, /readyz (default 9090)
  --webhook-port PORT          HTTPS admission webhook, POST /validate (default 9443)
  --webhook-cert-dir DIR       tls.crt and tls.key for the webhook; without it no webhook is served
  --webhook-cert-reload D      how often the certificate files are read again (default 30s)
  --no-leader-election         reconcile without a Lease (one replica only)
  --lease-name NAME            (default hookyard-operator)
  --lease-namespace NS         (default env POD_NAMESPACE, else default)
  --lease-duration D           (default 15s); --renew-deadline D (10s); --retry-period D (2s)
  --status-interval D          how often subscription counters are read from JetStream (default 30s)
  --resync-period D            how often every resource is reconciled and every cache listed again (default 10m)
  --workers N                  reconciles at once (default 4)`;

export async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    allowNegative: true,
    options: {
      'nats-url': { type: 'string', default: process.env.NATS_URL ?? 'nats://127.0.0.1:4222' },
      'nats-creds': { type: 'string', default: process.env.NATS_CREDS },
      'nats-ca': { type: 'string', default: process.env.NATS_CA },
      'workload-nats-secret': { type: 'string' },
      namespaces: { type: 'string', default: '' },
      image: { type: 'string', default: process.env.HOOKYARD_IMAGE },
      'ingress-class': { type: 'string' },
      'ingress-host': { type: 'string' },
      'metrics-port': { type: 'string', default: '9090' },
      'webhook-port': { type: 'string', default: '9443' },
      'webhook-cert-dir': { type: 'string' },
      'webhook-cert-reload': { type: 'string', default: '30s' },
      'leader-election': { type: 'boolean', default: true },
      'lease-name': { type: 'string', default: 'hookyard-operator' },
      'lease-namespace': { type: 'string', default: process.env.POD_NAMESPACE ?? 'default' },
      'lease-duration': { type: 'string', default: '15s' },
      'renew-deadline': { type: 'string', default: '10s' },
      'retry-period': { type: 'string', default: '2s' },
      'status-interval': { type: 'string', default: '30s' },
      'resync-period': { type: 'string', default: '10m' },
      workers: { type: 'string', default: '4' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help || !values.image) {
    console.error(values.help ? usage : `--image (or HOOKYARD_IMAGE) is required\n\n${usage}`);
    process.exitCode = values.help ? 0 : 2;
    return;
  }
  const log = rootLog.child({ component: 'operator' });
  const kc = new k8s.KubeConfig();
  kc.loadFromDefault();
  keepConnectionsAlive(kc);
  const registry = new Registry();
  const metrics = new OperatorMetrics(registry);
  const nats = await connectNats(
    { url: values['nats-url'], credsFile: values['nats-creds'], caFile: values['nats-ca'], name: 'hookyard-operator' },
    log,
  );
  const jsm = await jetstreamManager(nats.nc);

  let controller: Controller | undefined;
  let controllerReady = false;
  let stopping = false;
  let leadership: Leadership | undefined;
  const server = createServer(async (req, res) => {
    if (req.url === '/metrics') {
      await serveMetrics(registry, log, res);
    } else if (req.url === '/healthz') {
      res.statusCode = nats.nc.isClosed() ? 503 : 200;
      res.end(nats.nc.isClosed() ? 'NATS connection closed' : 'ok');
    } else if (req.url === '/readyz') {
      // A standby is ready (it serves the webhook); the leader once its caches are filled.
      const ready = nats.connected() && (controller ? controllerReady : true);
      res.statusCode = ready ? 200 : 503;
      res.end(ready ? 'ok' : 'not ready');
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise<void>((ok) => server.listen(Number(values['metrics-port']), ok));

  const certDir = values['webhook-cert-dir'];
  const certificate = () =>
    certDir ? { cert: readFileSync(join(certDir, 'tls.crt')), key: readFileSync(join(certDir, 'tls.key')) } : undefined;
  let served = certificate();
  const webhook = served ? createHttpsServer(served, express().use(admissionRouter())) : undefined;
  if (webhook) await new Promise<void>((ok) => webhook.listen(Number(values['webhook-port']), ok));
  // cert-manager renews the certificate in the mounted Secret: new connections get the new one.
  const certReload = setInterval(() => {
    if (!webhook || !served) return;
    try {
      const next = certificate();
      if (!next) return;
      if (next.cert.equals(served.cert) && next.key.equals(served.key)) return;
      webhook.setSecureContext(next);
      served = next;
      log.info('webhook certificate reloaded');
    } catch (err) {
      log.warn({ err: String(err) }, 'could not reload the webhook certificate; keeping the current one');
    }
  }, durationMs(values['webhook-cert-reload'])).unref();

  const start = () => {
    metrics.leader(true);
    controller = startController({
      kc,
      jsm,
      metrics,
      log,
      render: {
        image: values.image as string,
        natsUrl: values['nats-url'],
        natsSecret: values['workload-nats-secret'],
        natsCa: values['nats-ca'] !== undefined,
        defaultIngressClass: values['ingress-class'],
        defaultHost: values['ingress-host'],
      },
      namespaces: values.namespaces.split(',').filter(Boolean),
      workers: Number(values.workers),
      statusIntervalMs: durationMs(values['status-interval']),
      resyncMs: durationMs(values['resync-period']),
    });
    controller.started.then(() => {
      controllerReady = true;
    });
  };
  if (values['leader-election']) {
    leadership = electLeader(
      kc,
      {
        namespace: values['lease-namespace'],
        name: values['lease-name'],
        identity: process.env.POD_NAME ?? `${hostname()}-${process.pid}`,
        leaseDurationMs: durationMs(values['lease-duration']),
        renewDeadlineMs: durationMs(values['renew-deadline']),
        retryPeriodMs: durationMs(values['retry-period']),
      },
      log,
    );
    void leadership.acquired.then(start);
    void leadership.lost.then(() => {
      if (stopping) return;
      // Another replica may already be acting: stop at once and let Kubernetes restart this one as a candidate.
      log.error('leadership lost; exiting');
      process.exit(1);
    });
  } else {
    start();
  }
  log.info({ metricsPort: values['metrics-port'], webhook: webhook !== undefined }, 'operator running');

  const signal = await new Promise<string>((ok) => {
    process.once('SIGTERM', () => ok('SIGTERM'));
    process.once('SIGINT', () => ok('SIGINT'));
  });
  stopping = true;
  log.info({ signal }, 'stopping');
  await controller?.stop();
  metrics.leader(false);
  await leadership?.release();
  await nats.nc.drain();
  clearInterval(certReload);
  webhook?.close();
  server.close();
}
