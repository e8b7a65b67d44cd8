// Whether a publish would succeed now. A NATS connection alone does not say so: after a restart the server takes
// connections while JetStream is still recovering its streams, and every publish meanwhile fails (measured: about
// 70 requests answered 503 after /readyz said ready on the connection alone).
import { setTimeout as sleep } from 'node:timers/promises';
import { jetstreamManager } from '@nats-io/jetstream';
import type { Logger } from '../runtime/log.ts';
import type { Nats } from '../runtime/nats.ts';

export interface Readiness {
  /** True while connected and the last look at every stream, at most `intervalMs` ago, found it. */
  ready(): boolean;
  /** A publish failed: not ready until the next look succeeds. */
  failed(): void;
  stop(): void;
}

/** Looks up each stream the receiver publishes to (JetStream's stream info) every `intervalMs`. */
export function jetStreamReadiness(nats: Nats, streams: () => string[], log: Logger, intervalMs = 1000): Readiness {
  let found = false;
  let running = true;
  const manager = jetstreamManager(nats.nc, { checkAPI: false, timeout: intervalMs });
  const look = async () => {
    const jsm = await manager;
    for (const stream of streams()) await jsm.streams.info(stream);
  };
  (async () => {
    while (running) {
      const before = found;
      found =
        nats.connected() &&
        (await look().then(
          () => true,
          (err: unknown) => {
            if (before) log.warn({ err: String(err) }, 'JetStream does not answer for the stream: not ready');
            return false;
          },
        ));
      if (found && !before) log.info('JetStream answers for the stream: ready');
      await sleep(intervalMs, undefined, { ref: false });
    }
  })();
  return {
    ready: () => found && nats.connected(),
    failed: () => {
      found = false;
    },
    stop: () => {
      running = false;
    },
  };
}
