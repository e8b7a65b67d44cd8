import { readFileSync } from 'node:fs';
import { connect, credsAuthenticator, type NatsConnection } from '@nats-io/transport-node';
import type { Logger } from './log.ts';

export interface NatsOptions {
  url: string;
  /** A NATS .creds file (JWT and NKey seed). */
  credsFile?: string;
  /** CA bundle for a TLS connection. */
  caFile?: string;
  name: string;
  /**
   * Leave out the stack of where each request started from its errors (nats.js builds two errors per request for
   * it, which costs a hot path such as the receiver's publish a fifth of its CPU).
   */
  noAsyncTraces?: boolean;
}

export interface Nats {
  nc: NatsConnection;
  /** True while connected; false during a reconnect. */
  connected(): boolean;
}

/** Connects and keeps reconnecting forever; `connected()` tells readiness probes and request handlers the state. */
export async function connectNats(options: NatsOptions, log: Logger): Promise<Nats> {
  const nc = await connect({
    servers: options.url.split(','),
    name: options.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    waitOnFirstConnect: true,
    authenticator: options.credsFile ? credsAuthenticator(readFileSync(options.credsFile)) : undefined,
    tls: options.caFile ? { caFile: options.caFile } : undefined,
    noAsyncTraces: options.noAsyncTraces,
  });
  let connected = true;
  (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect' || s.type === 'staleConnection') connected = false;
      if (s.type === 'reconnect') connected = true;
      if (s.type === 'disconnect' || s.type === 'reconnect') log.warn({ nats: s.type }, `NATS ${s.type}`);
    }
  })().catch(() => {});
  return { nc, connected: () => connected && !nc.isClosed() };
}
