import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { type ConnectionOptions, connect, credsAuthenticator, type NatsConnection } from '@nats-io/transport-node';
import type { Logger } from './log.ts';

export interface NatsOptions {
  url: string;
  /** A NATS .creds file (JWT and NKey seed). */
  credsFile?: string;
  /** CA bundle for a TLS connection. */
  caFile?: string;
  name: string;
  /** Give up after this many failed first connection attempts (default: never). */
  attempts?: number;
  /** Told why each failed first attempt failed, for a readiness probe to report. */
  onAttemptFailed?: (reason: string) => void;
}

export interface Nats {
  nc: NatsConnection;
  /** True while connected; false during a reconnect. */
  connected(): boolean;
  /** How many times it has connected: 1 after the first connection, one more at each reconnect. */
  connections(): number;
}

/** The URLs without user names, passwords or tokens, fit for logs and probes. */
export function safeNatsUrl(url: string): string {
  return url
    .split(',')
    .map((u) => u.replace(/^([a-z]+:\/\/)[^@/]*@/i, '$1'))
    .join(',');
}

/** A connection error as a person reads it: the code and the address (`ECONNREFUSED 127.0.0.1:4222`). */
function describe(err: unknown): string {
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  const cause = e.cause?.message ?? e.cause?.code;
  return cause && !e.message?.includes(cause) ? `${e.message}: ${cause}` : (e.message ?? String(err));
}

/**
 * Connects and keeps reconnecting forever; `connected()` tells readiness probes and request handlers the state.
 * Until the first connection succeeds, every failed attempt is logged with the URL (no credentials) and why, a
 * few seconds apart, so a wrong URL shows in the log at once instead of as a silent wait.
 */
export async function connectNats(options: NatsOptions, log: Logger): Promise<Nats> {
  const url = safeNatsUrl(options.url);
  const connection: ConnectionOptions = {
    servers: options.url.split(','),
    name: options.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    timeout: 5000,
    authenticator: options.credsFile ? credsAuthenticator(readFileSync(options.credsFile)) : undefined,
    tls: options.caFile ? { caFile: options.caFile } : undefined,
    // Errors are logged by their message, so the stack of where each request started adds nothing: nats.js would
    // build two errors with stack traces for every request to keep it (the operator's JetStream calls, an ordered
    // subscription's confirmed acks; docs/benchmarks.md).
    noAsyncTraces: true,
  };
  let nc: NatsConnection | undefined;
  for (let attempt = 1; !nc; attempt++) {
    try {
      nc = await connect(connection);
    } catch (err) {
      const reason = `cannot connect to NATS at ${url}: ${describe(err)}`;
      options.onAttemptFailed?.(reason);
      if (attempt >= (options.attempts ?? Number.POSITIVE_INFINITY)) throw new Error(reason);
      const retryMs = Math.min(500 * 2 ** (attempt - 1), 5000);
      log.warn({ nats: url, attempt, err: describe(err) }, `${reason}; retrying in ${retryMs / 1000}s`);
      await sleep(retryMs);
    }
  }
  log.info({ nats: url }, 'connected to NATS');
  const connected = nc;
  let up = true;
  let connections = 1;
  (async () => {
    for await (const s of connected.status()) {
      if (s.type === 'disconnect' || s.type === 'staleConnection') up = false;
      if (s.type === 'reconnect') {
        up = true;
        connections++;
      }
      if (s.type === 'disconnect' || s.type === 'reconnect') log.warn({ nats: s.type }, `NATS ${s.type}`);
    }
  })().catch(() => {});
  return { nc: connected, connected: () => up && !connected.isClosed(), connections: () => connections };
}
