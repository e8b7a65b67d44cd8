// `hookyard dispatcher`: delivers one WebhookSubscription until SIGTERM or SIGINT, then drains.
import { createServer } from 'node:http';
import type { NatsConnection } from '@nats-io/transport-node';
import { Registry } from 'prom-client';
import { dispatcherCommand } from '../commands.ts';
import { parseFlags } from '../runtime/flags.ts';
import { log } from '../runtime/log.ts';
import { connectNats, safeNatsUrl } from '../runtime/nats.ts';
import { registerProcessMetrics } from '../runtime/process-metrics.ts';
import { directorySecrets } from '../runtime/secrets.ts';
import { startTracing } from '../runtime/tracing.ts';
import { InvalidConfig, loadConfig } from './config.ts';
import { replayDeadLetters, startDispatcher } from './dispatcher.ts';
import { answerScrape } from './metrics.ts';

export { replayDeadLetters, startDispatcher } from './dispatcher.ts';

export async function main(args: string[]): Promise<void> {
  const flags = parseFlags(dispatcherCommand, args);
  if (!flags) return;
  const { values } = flags;
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(values.config);
  } catch (err) {
    if (!(err instanceof InvalidConfig)) throw err;
    console.error(`invalid dispatcher config: ${err.message}`);
    process.exitCode = 2;
    return;
  }
  const { subscription, sources } = config;
  const logger = log.child({ namespace: subscription.metadata.namespace, subscription: subscription.metadata.name });
  const secrets = directorySecrets(values['secrets-dir']);
  const configMaps = directorySecrets(values['config-maps-dir']);
  const tracer = await startTracing({
    endpoint: values['otlp-endpoint'],
    serviceName: 'hookyard-dispatcher',
    log: logger,
  });
  let problem = `connecting to NATS at ${safeNatsUrl(values['nats-url'])}`;
  // Reconnects forever, like the receiver: a NATS outage must not leave a dispatcher that has given up.
  const connect = () =>
    connectNats(
      {
        url: values['nats-url'],
        credsFile: values['nats-creds'],
        caFile: values['nats-ca'],
        name: `hookyard-dispatcher-${subscription.metadata.name}`,
        onAttemptFailed: (reason) => {
          problem = reason;
        },
      },
      logger,
    );

  if (values['replay-dead-letters']) {
    const { nc } = await connect();
    try {
      const result = await replayDeadLetters({ subscription, secrets, configMaps, nc, logger, tracer });
      logger.info(result, 'dead letters replayed');
      if (result.failed > 0) process.exitCode = 1;
    } finally {
      await nc.drain();
      await tracer?.shutdown();
    }
    return;
  }

  // Probes and metrics answer at once; readiness says what NATS is doing until the dispatcher runs.
  const registry = new Registry();
  registerProcessMetrics(registry);
  let nc: NatsConnection | undefined;
  let ready = false;
  const server = createServer(async (req, res) => {
    const closed = nc?.isClosed() ?? false;
    if (req.url === '/metrics') {
      await answerScrape(registry, res, logger);
    } else if (req.url === '/healthz') {
      res.statusCode = closed ? 503 : 200;
      res.end(closed ? 'NATS connection closed' : 'ok');
    } else if (req.url === '/readyz') {
      res.statusCode = ready && !closed ? 200 : 503;
      res.end(ready ? 'ok' : nc ? 'starting' : `not ready: ${problem}`);
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise<void>((ok) => server.listen(values['metrics-port'], ok));
  nc = (await connect()).nc;

  const dispatcher = await startDispatcher({
    subscription,
    sources,
    secrets,
    configMaps,
    nc,
    registry,
    logger,
    tracer,
  });
  ready = true;
  const signal = await new Promise<string>((ok) => {
    process.once('SIGTERM', () => ok('SIGTERM'));
    process.once('SIGINT', () => ok('SIGINT'));
  });
  logger.info({ signal }, 'draining');
  ready = false;
  await dispatcher.stop();
  await nc.drain();
  await tracer?.shutdown();
  await new Promise<void>((ok) => server.close(() => ok()));
}
