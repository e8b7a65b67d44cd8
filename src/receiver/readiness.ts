// Whether a publish would succeed now. A NATS connection alone does not say so: after a restart the server takes
// connections while JetStream is still recovering its streams, and every publish meanwhile fails (measured: about
// 70 requests answered 503 after /readyz said ready on the connection alone).
import { setTimeout as sleep } from 'node:timers/promises';
import { jetstreamManager } from '@nats-io/jetstream';
import type { Logger } from '../runtime/log.ts';
import type { Nats } from '../runtime/nats.ts';

export interface Readiness {
  /** True while connected and the last look at every stream, on this connection, at most `intervalMs` ago, found it. */
  ready(): boolean;
  /** A publish failed: not ready until a look begun after it succeeds. */
  failed(): void;
  stop(): void;
}

/**
 * Looks up each stream the receiver publishes to (JetStream's stream info) every `intervalMs`. A look counts only
 * for the connection it was made on: after a reconnect the server may be another one, or one still recovering,
 * and until the next look there is nothing to say a publish would succeed.
 */
export function jetStreamReadiness(nats: Nats, streams: () => string[], log: Logger, intervalMs = 1000): Readiness {
  /** The connection (`nats.connections()`) on which the last look found every stream; 0 for none. */
  let foundOn = 0;
  /** Failed publishes so far: a look that was under way when one failed does not count. */
  let failures = 0;
  /** What the log last said, so that it speaks only when that changes. */
  let saidReady = false;
  let running = true;
  const manager = jetstreamManager(nats.nc, { checkAPI: false, timeout: intervalMs });
  const look = async () => {
    const jsm = await manager;
    for (const stream of streams()) await jsm.streams.info(stream);
  };
  const ready = () => foundOn === nats.connections() && nats.connected();
  (async () => {
    while (running) {
      const on = nats.connections();
      const failuresBefore = failures;
      const found =
        nats.connected() &&
        (await look().then(
          () => true,
          (err: unknown) => {
            if (saidReady) log.warn({ err: String(err) }, 'JetStream does not answer for the stream: not ready');
            saidReady = false;
            return false;
          },
        ));
      foundOn = found && failures === failuresBefore ? on : 0;
      if (found && !saidReady) log.info('JetStream answers for the stream: ready');
      saidReady ||= found;
      await sleep(intervalMs, undefined, { ref: false });
    }
  })();
  return {
    ready,
    failed: () => {
      foundOn = 0;
      failures++;
    },
    stop: () => {
      running = false;
    },
  };
}
