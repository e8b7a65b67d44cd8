// Dev mode: every ProviderEndpoint and WebhookSubscription of some YAML files, run in one process with the same
// receiver and dispatcher code a cluster runs, against a given NATS or a local nats-server it starts.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, watch } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Registry } from 'prom-client';
import { resolveSources } from '../api/sources.ts';
import { type Dispatcher, startDispatcher } from '../dispatcher/dispatcher.ts';
import { endpointStreamConfig, ensureStream } from '../jetstream/streams.ts';
import { endpointState, listen, type RunningServer } from '../receiver/main.ts';
import { ReceiverMetrics } from '../receiver/metrics.ts';
import { type EndpointState, receiverHandler } from '../receiver/server.ts';
import type { Logger } from '../runtime/log.ts';
import { connectNats } from '../runtime/nats.ts';
import { freePort } from '../runtime/net.ts';
import { type Manifests, readManifests } from './manifests.ts';

export interface DevOptions {
  paths: string[];
  /** An existing NATS with JetStream; without it a local nats-server is started with a temporary store. */
  natsUrl?: string;
  port: number;
  host: string;
  /** Send every subscription's deliveries here (`<sink>/<subscription>`) instead of its target. */
  sink?: string;
  log: Logger;
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
  let manifests = readManifests(options.paths);
  const { log } = options;
  const nats = options.natsUrl ? undefined : await startLocalNats(log);
  const { nc } = await connectNats({ url: options.natsUrl ?? nats?.url ?? '', name: 'hookyard-dev' }, log);
  const jsm = await jetstreamManager(nc);
  const registry = new Registry();
  const metrics = new ReceiverMetrics(registry);
  let states = new Map<string, EndpointState>();
  let dispatchers: Dispatcher[] = [];

  const apply = async (next: Manifests) => {
    const nextStates = new Map<string, EndpointState>();
    for (const e of next.endpoints) {
      const namespace = e.metadata.namespace ?? 'default';
      await ensureStream(jsm, endpointStreamConfig(namespace, e.metadata.name, e.spec));
      nextStates.set(`${namespace}/${e.metadata.name}`, endpointState(e, next.secrets, metrics));
    }
    states = nextStates;
    await Promise.all(dispatchers.map((d) => d.stop()));
    dispatchers = [];
    for (const sub of next.subscriptions) {
      const subscription = options.sink
        ? {
            ...sub,
            spec: {
              ...sub.spec,
              target: { ...sub.spec.target, url: `${options.sink}/${sub.metadata.name}`, service: undefined },
            },
          }
        : sub;
      dispatchers.push(
        await startDispatcher({
          subscription,
          sources: resolveSources(sub, next.endpoints),
          secrets: next.secrets,
          nc,
          registry,
          logger: log.child({ subscription: `${sub.metadata.namespace}/${sub.metadata.name}` }),
        }),
      );
    }
    manifests = next;
  };
  await apply(manifests);

  const server: RunningServer = await listen(
    receiverHandler({
      endpoints: () => states,
      js: jetstream(nc),
      natsReady: () => !nc.isClosed(),
      maxPayload: () => nc.info?.max_payload,
      log,
      registry,
    }),
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
      await Promise.all(dispatchers.map((d) => d.stop()));
      await nc.drain();
      await nats?.stop();
    },
  };
  return dev;
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

/** nats-server from HOOKYARD_NATS_SERVER, the project's build cache, or the PATH. */
function natsServerBinary(): string {
  const cached = join(import.meta.dirname, '../../.cache/bin/nats-server');
  return process.env.HOOKYARD_NATS_SERVER ?? (existsSync(cached) ? cached : 'nats-server');
}

async function startLocalNats(log: Logger): Promise<{ url: string; stop(): Promise<void> }> {
  const store = mkdtempSync(join(tmpdir(), 'hookyard-dev-'));
  const port = await freePort();
  const child: ChildProcess = spawn(natsServerBinary(), ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', store], {
    stdio: 'ignore',
  });
  const exited = new Promise<void>((ok) => child.once('exit', () => ok()));
  child.once('error', (err) =>
    log.error(`cannot start nats-server: ${err.message} (pass --nats-url, or run make tools)`),
  );
  const url = `nats://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    const nc = await connect({ servers: url }).catch(() => undefined);
    if (nc) {
      await nc.close();
      break;
    }
    if (i > 100 || child.exitCode !== null) throw new Error('the local nats-server did not start');
    await sleep(100);
  }
  log.info({ url }, 'started a local nats-server with a temporary store');
  return {
    url,
    async stop() {
      child.kill('SIGTERM');
      await exited;
      rmSync(store, { recursive: true, force: true });
    },
  };
}
