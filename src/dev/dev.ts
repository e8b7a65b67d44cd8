// Dev mode: every ProviderEndpoint and WebhookSubscription of some YAML files, run in one process with the same
// receiver and dispatcher code a cluster runs, against a given NATS or a local nats-server it starts.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, watch } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Registry } from 'prom-client';
import { resolveSources } from '../api/sources.ts';
import type { WebhookSubscription } from '../api/webhook-subscription.ts';
import { type Dispatcher, startDispatcher } from '../dispatcher/dispatcher.ts';
import { targetUrl } from '../dispatcher/target.ts';
import { jetstreamPublisher } from '../jetstream/publisher.ts';
import { ensureEndpointStreams } from '../jetstream/streams.ts';
import { endpointState, listen, type RunningServer } from '../receiver/main.ts';
import { ReceiverMetrics } from '../receiver/metrics.ts';
import { type EndpointState, receiverHandler } from '../receiver/server.ts';
import type { Logger } from '../runtime/log.ts';
import { connectNats } from '../runtime/nats.ts';
import { freePort } from '../runtime/net.ts';
import { registerProcessMetrics } from '../runtime/process-metrics.ts';
import type { Tracer } from '../runtime/tracing.ts';
import { loggingDeliveries, loggingRequests, notingPublishes } from './lines.ts';
import { type Manifests, readManifests } from './manifests.ts';
import { findNatsServer } from './nats-server.ts';

export interface DevOptions {
  paths: string[];
  /** An existing NATS with JetStream; without it a local nats-server is started with a temporary store. */
  natsUrl?: string;
  port: number;
  host: string;
  /** Send every subscription's deliveries here (`<sink>/<subscription>`) instead of its target. */
  sink?: string;
  log: Logger;
  /** With tracing on: the receiver's and the dispatchers' spans. */
  tracer?: Tracer;
}

export interface Dev {
  port: number;
  manifests: Manifests;
  registry: Registry;
  nc: NatsConnection;
  /** Re-reads the files; a bad change is reported and the running configuration kept. */
  reload(): Promise<void>;
  stop(): Promise<void>;
}

export async function startDev(options: DevOptions): Promise<Dev> {
  const manifests = readManifests(options.paths);
  const nats = options.natsUrl ? undefined : await startLocalNats(options.log);
  // Whatever fails from here on (a Secret a dispatcher cannot use, a stream NATS refuses) stops what was started:
  // no nats-server or temporary store is left behind.
  const started: (() => Promise<void>)[] = [async () => nats?.stop()];
  try {
    return await serve(options, manifests, options.natsUrl ?? nats?.url ?? '', started);
  } catch (err) {
    for (const stop of started.reverse()) await stop().catch(() => {});
    throw err;
  }
}

async function serve(
  options: DevOptions,
  initial: Manifests,
  natsUrl: string,
  started: (() => Promise<void>)[],
): Promise<Dev> {
  const { log } = options;
  let manifests = initial;
  const { nc } = await connectNats({ url: natsUrl, name: 'hookyard-dev', attempts: 3 }, log);
  started.push(() => nc.close());
  const jsm = await jetstreamManager(nc);
  const registry = new Registry();
  registerProcessMetrics(registry);
  const metrics = new ReceiverMetrics(registry);
  let states = new Map<string, EndpointState>();
  let dispatchers: Dispatcher[] = [];
  started.push(async () => void (await Promise.all(dispatchers.map((d) => d.stop()))));
  let targets = new Map<string, string>();
  const unwatch = loggingDeliveries(() => targets, log);
  started.push(async () => unwatch());

  const apply = async (next: Manifests) => {
    const nextStates = new Map<string, EndpointState>();
    for (const e of next.endpoints) {
      const namespace = e.metadata.namespace ?? 'default';
      await ensureEndpointStreams(jsm, namespace, e.metadata.name, e.spec);
      nextStates.set(`${namespace}/${e.metadata.name}`, endpointState(e, next.secrets, metrics));
    }
    states = nextStates;
    await Promise.all(dispatchers.map((d) => d.stop()));
    dispatchers = [];
    const subscriptions = next.subscriptions.map((sub) => withSink(sub, options.sink));
    targets = new Map(subscriptions.map((sub) => [targetKey(sub), sub.metadata.name]));
    for (const subscription of subscriptions) {
      dispatchers.push(
        await startDispatcher({
          subscription,
          sources: resolveSources(subscription, next.endpoints),
          secrets: next.secrets,
          configMaps: next.configMaps,
          nc,
          registry,
          // The dispatcher adds the namespace and subscription to each entry itself.
          logger: log,
          tracer: options.tracer,
        }),
      );
    }
    manifests = next;
  };
  await apply(manifests);

  const server: RunningServer = await listen(
    loggingRequests(
      receiverHandler({
        endpoints: () => states,
        publisher: notingPublishes(jetstreamPublisher(nc)),
        natsReady: () => !nc.isClosed(),
        maxPayload: () => nc.info?.max_payload,
        log,
        registry,
        tracer: options.tracer,
      }),
      log,
    ),
    options.port,
    options.host,
  );

  let reloading = Promise.resolve();
  const dev: Dev = {
    port: server.port,
    get manifests() {
      return manifests;
    },
    registry,
    nc,
    reload() {
      // One reload at a time, so two quick file changes never start two dispatchers for one subscription.
      reloading = reloading.then(async () => {
        try {
          await apply(readManifests(options.paths));
          log.info('reloaded');
        } catch (err) {
          log.error((err as Error).message);
        }
      });
      return reloading;
    },
    async stop() {
      await server.close();
      unwatch();
      await Promise.all(dispatchers.map((d) => d.stop()));
      await nc.drain();
      await started[0]?.(); // the local nats-server, if one was started
    },
  };
  return dev;
}

/** The subscription as dev mode runs it: with `--sink`, its deliveries go to `<sink>/<subscription>`. */
function withSink(sub: WebhookSubscription, sink: string | undefined): WebhookSubscription {
  if (!sink) return sub;
  const target = { ...sub.spec.target, url: `${sink}/${sub.metadata.name}`, service: undefined };
  return { ...sub, spec: { ...sub.spec, target } };
}

/** A target as undici's diagnostics name its requests: origin and path. */
function targetKey(sub: WebhookSubscription): string {
  const url = new URL(targetUrl(sub.spec.target, sub.metadata.namespace ?? 'default'));
  return `${url.origin}${url.pathname}${url.search}`;
}

/** Calls `onChange` (debounced) when a file under the paths changes. */
export function watchFiles(paths: string[], onChange: () => void): () => void {
  let timer: NodeJS.Timeout | undefined;
  const watchers = paths.map((p) =>
    watch(p, () => {
      clearTimeout(timer);
      timer = setTimeout(onChange, 300);
    }),
  );
  return () => {
    clearTimeout(timer);
    for (const w of watchers) w.close();
  };
}

async function startLocalNats(log: Logger): Promise<{ url: string; stop(): Promise<void> }> {
  const binary = findNatsServer();
  const port = await freePort();
  // From here to the 'exit' handler nothing awaits: a signal in between would leave the store behind.
  const store = mkdtempSync(join(tmpdir(), 'hookyard-dev-'));
  const child: ChildProcess = spawn(binary, ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', store], {
    stdio: 'ignore',
  });
  const exited = new Promise<void>((ok) => child.once('exit', () => ok()));
  // A process that ends before stop() (Ctrl-C while starting, an uncaught error) takes its nats-server and store along.
  const leftBehind = () => {
    // SIGKILL: a nats-server shutting down gracefully writes into its store again after the rmSync below.
    child.kill('SIGKILL');
    rmSync(store, { recursive: true, force: true });
  };
  process.once('exit', leftBehind);
  let failed: Error | undefined;
  child.once('error', (err) => {
    failed = err;
  });
  const url = `nats://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    const nc = await connect({ servers: url }).catch(() => undefined);
    if (nc) {
      await nc.close();
      break;
    }
    if (failed || i > 100 || child.exitCode !== null) {
      process.off('exit', leftBehind);
      child.kill('SIGKILL');
      rmSync(store, { recursive: true, force: true });
      throw new Error(`the local nats-server (${binary}) did not start${failed ? `: ${failed.message}` : ''}`);
    }
    await sleep(100);
  }
  log.info({ url }, 'started a local nats-server with a temporary store');
  return {
    url,
    async stop() {
      process.off('exit', leftBehind);
      child.kill('SIGTERM');
      await exited;
      rmSync(store, { recursive: true, force: true });
    },
  };
}
