// `hookyard operator`: the control plane. Every replica serves metrics, probes and the admission webhook; only the
// one holding the leader Lease reconciles.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { hostname } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { type JetStreamClient, jetstreamManager } from '@nats-io/jetstream';
import express from 'express';
import { Registry } from 'prom-client';
import { admissionRouter } from '../admission/webhook.ts';
import { operatorCommand } from '../commands.ts';
import { historyRouter } from '../history/api.ts';
import { parseFlags } from '../runtime/flags.ts';
import { log as rootLog } from '../runtime/log.ts';
import { connectNats, type Nats, safeNatsUrl } from '../runtime/nats.ts';
import { registerProcessMetrics } from '../runtime/process-metrics.ts';
import { type Controller, startController } from './controller.ts';
import { keepConnectionsAlive } from './kube.ts';
import { electLeader, type Leadership } from './leader.ts';
import { OperatorMetrics, serveMetrics } from './metrics.ts';

export async function main(args: string[]): Promise<void> {
  const flags = parseFlags(operatorCommand, args);
  if (!flags) return;
  const { values } = flags;
  const log = rootLog.child({ component: 'operator' });
  const kc = new k8s.KubeConfig();
  kc.loadFromDefault();
  keepConnectionsAlive(kc);
  const registry = new Registry();
  registerProcessMetrics(registry);
  const metrics = new OperatorMetrics(registry);
  // Probes, metrics and the admission webhook need no NATS: they answer at once, and readiness says what NATS
  // is doing until it connects.
  let nats: Nats | undefined;
  let natsProblem = `connecting to NATS at ${safeNatsUrl(values['nats-url'])}`;
  let controller: Controller | undefined;
  let controllerReady = false;
  let stopping = false;
  let leadership: Leadership | undefined;
  const server = createServer(async (req, res) => {
    if (req.url === '/metrics') {
      await serveMetrics(registry, log, res);
    } else if (req.url === '/healthz') {
      const closed = nats?.nc.isClosed() ?? false;
      res.statusCode = closed ? 503 : 200;
      res.end(closed ? 'NATS connection closed' : 'ok');
    } else if (req.url === '/readyz') {
      // A standby is ready (it serves the webhook); the leader once its caches are filled.
      const natsUp = nats?.connected() ?? false;
      const ready = natsUp && (controller ? controllerReady : true);
      res.statusCode = ready ? 200 : 503;
      res.end(ready ? 'ok' : `not ready: ${natsUp ? 'filling caches' : natsProblem}`);
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise<void>((ok) => server.listen(values['metrics-port'], ok));

  const certDir = values['webhook-cert-dir'];
  const certificate = () =>
    certDir ? { cert: readFileSync(join(certDir, 'tls.crt')), key: readFileSync(join(certDir, 'tls.key')) } : undefined;
  let served = certificate();
  // Every replica serves the history API too (reads only): `hookyard attempts` and the rest reach it through the
  // API server's service proxy, on the webhook's Service.
  let js: JetStreamClient | undefined;
  const app = express()
    .use(admissionRouter())
    .use(historyRouter({ kc, js: () => js, log }));
  const webhook = served ? createHttpsServer(served, app) : undefined;
  if (webhook) await new Promise<void>((ok) => webhook.listen(values['webhook-port'], ok));
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
  }, values['webhook-cert-reload']).unref();
  log.info({ metricsPort: values['metrics-port'], webhook: webhook !== undefined }, 'operator serving probes');

  nats = await connectNats(
    {
      url: values['nats-url'],
      credsFile: values['nats-creds'],
      caFile: values['nats-ca'],
      name: 'hookyard-operator',
      onAttemptFailed: (reason) => {
        natsProblem = reason;
      },
    },
    log,
  );
  // No API check: a NATS cluster that has just started answers JetStream requests only once it has a meta leader,
  // and until then reconciles report JetStreamUnavailable and retry instead of the operator exiting (seen on a
  // real node: both operator pods restarted 5 s after connecting, and admission calls failed meanwhile).
  const jsm = await jetstreamManager(nats.nc, { checkAPI: false });
  js = jsm.jetstream();

  const start = () => {
    metrics.leader(true);
    controller = startController({
      kc,
      jsm,
      metrics,
      log,
      render: {
        image: values.image,
        natsUrl: values['nats-url'],
        natsSecret: values['workload-nats-secret'],
        natsCa: values['nats-ca'] !== undefined,
        defaultIngressClass: values['ingress-class'],
        defaultHost: values['ingress-host'],
        tracing: values['workload-otlp-endpoint']
          ? {
              endpoint: values['workload-otlp-endpoint'],
              sampler: values['workload-traces-sampler'],
              samplerArg: values['workload-traces-sampler-arg'],
            }
          : undefined,
      },
      namespaces: (values.namespaces ?? '').split(',').filter(Boolean),
      workers: values.workers,
      statusIntervalMs: values['status-interval'],
      statusSettleMs: values['status-settle'],
      resyncMs: values['resync-period'],
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
        leaseDurationMs: values['lease-duration'],
        renewDeadlineMs: values['renew-deadline'],
        retryPeriodMs: values['retry-period'],
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
  log.info('operator running');

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
