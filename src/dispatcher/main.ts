// `hookyard dispatcher`: delivers one WebhookSubscription until SIGTERM or SIGINT, then drains.
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { Registry } from 'prom-client';
import { log } from '../runtime/log.ts';
import { connectNats } from '../runtime/nats.ts';
import { directorySecrets } from '../runtime/secrets.ts';
import { InvalidConfig, loadConfig } from './config.ts';
import { replayDeadLetters, startDispatcher } from './dispatcher.ts';
import { answerScrape } from './metrics.ts';

export { replayDeadLetters, startDispatcher } from './dispatcher.ts';

const usage = `usage: hookyard dispatcher --config <file> [--secrets-dir <dir>] [--nats-url <url>] [--metrics-port <port>]
                           [--replay-dead-letters]`;

export async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: 'string' },
      'secrets-dir': { type: 'string', default: '/etc/hookyard/secrets' },
      'nats-url': { type: 'string', default: process.env.NATS_URL ?? 'nats://127.0.0.1:4222' },
      'nats-creds': { type: 'string', default: process.env.NATS_CREDS },
      'nats-ca': { type: 'string', default: process.env.NATS_CA },
      'metrics-port': { type: 'string', default: '9090' },
      'replay-dead-letters': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help || !values.config) {
    console.error(usage);
    process.exitCode = values.help ? 0 : 2;
    return;
  }
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
  // Reconnects forever, like the receiver: a NATS outage must not leave a dispatcher that has given up.
  const { nc } = await connectNats(
    {
      url: values['nats-url'],
      credsFile: values['nats-creds'],
      caFile: values['nats-ca'],
      name: `hookyard-dispatcher-${subscription.metadata.name}`,
    },
    logger,
  );

  if (values['replay-dead-letters']) {
    try {
      const result = await replayDeadLetters({ subscription, secrets, nc, logger });
      logger.info(result, 'dead letters replayed');
      if (result.failed > 0) process.exitCode = 1;
    } finally {
      await nc.drain();
    }
    return;
  }

  const registry = new Registry();
  let ready = false;
  const server = createServer(async (req, res) => {
    if (req.url === '/metrics') {
      await answerScrape(registry, res, logger);
    } else if (req.url === '/healthz') {
      res.statusCode = nc.isClosed() ? 503 : 200;
      res.end(nc.isClosed() ? 'NATS connection closed' : 'ok');
    } else if (req.url === '/readyz') {
      res.statusCode = ready && !nc.isClosed() ? 200 : 503;
      res.end(ready ? 'ok' : 'starting');
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise<void>((ok) => server.listen(Number(values['metrics-port']), ok));

  const dispatcher = await startDispatcher({ subscription, sources, secrets, nc, registry, logger });
  ready = true;
  const signal = await new Promise<string>((ok) => {
    process.once('SIGTERM', () => ok('SIGTERM'));
    process.once('SIGINT', () => ok('SIGINT'));
  });
  logger.info({ signal }, 'draining');
  ready = false;
  await dispatcher.stop();
  await nc.drain();
  await new Promise<void>((ok) => server.close(() => ok()));
}
