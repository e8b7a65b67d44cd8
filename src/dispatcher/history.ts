// The attempt records: one JSON record per delivery attempt in the subscription's attempt stream, published
// without waiting for its PubAck, so the record costs the delivery nothing but the publish itself. A record that
// JetStream could not store is counted and logged (at most once a minute), never retried: history is not worth
// delaying or failing a delivery for.
import type { JetStreamClient } from '@nats-io/jetstream';
import { attemptSubject } from '../jetstream/layout.ts';
import type { Logger } from '../runtime/log.ts';
import type { StoredEvent } from './event.ts';
import type { AttemptResult, Decision } from './outcome.ts';

/** What one attempt came to, as `hookyard attempts` shows it. */
export interface AttemptRecord {
  /** `<namespace>/<subscription>` */
  subscription: string;
  eventId: string;
  eventType: string;
  /** `<namespace>/<endpoint>` the event came from. */
  endpoint: string;
  /** 1 for the first attempt; counted per event by JetStream, across restarts and replicas. */
  attempt: number;
  /** When the attempt started (RFC 3339, milliseconds). */
  time: string;
  durationMs: number;
  /** The target's HTTP status, when it answered. */
  status?: number;
  /** Why no status: timeout, connection refused, forbidden address. */
  error?: string;
  /** What followed: delivered, retry (after retryInMs), dead-letter (reason), pause (410). */
  decision: 'delivered' | 'retry' | 'dead-letter' | 'pause';
  retryInMs?: number;
  reason?: string;
  /** The replay request that sent the event again, if any. */
  replay?: string;
}

export function attemptRecord(
  subscription: string,
  event: StoredEvent,
  attempt: { number: number; startedAt: number; durationMs: number; replay?: string },
  result: AttemptResult,
  decision: Decision,
): AttemptRecord {
  return {
    subscription,
    eventId: event.id,
    eventType: event.type,
    endpoint: event.endpoint,
    attempt: attempt.number,
    time: new Date(attempt.startedAt).toISOString(),
    durationMs: Math.round(attempt.durationMs * 10) / 10,
    ...(result.kind === 'Response' ? { status: result.status } : { error: `${result.kind}: ${result.error}` }),
    decision: decision.action === 'ack' ? 'delivered' : decision.action,
    ...(decision.action === 'retry' ? { retryInMs: Math.round(decision.delayMs) } : {}),
    ...(decision.action === 'dead-letter' ? { reason: decision.reason } : {}),
    ...(attempt.replay ? { replay: attempt.replay } : {}),
  };
}

/** Attempt records published and not yet acknowledged, at most. */
export const maxPendingRecords = 4096;

export function createHistory(options: {
  enabled: boolean;
  namespace: string;
  subscription: string;
  js: JetStreamClient;
  log: Logger;
  onFailure: () => void;
}) {
  const { namespace, subscription, js, log } = options;
  const pending = new Set<Promise<unknown>>();
  let lastWarning = 0;
  const warn = (message: string) => {
    options.onFailure();
    if (Date.now() - lastWarning < 60_000) return;
    lastWarning = Date.now();
    log.warn({ error: message }, 'attempt record not stored; delivery goes on');
  };
  return {
    record(record: AttemptRecord): void {
      if (!options.enabled) return;
      // While JetStream is slow, records wait for their PubAck; past this many, new ones are dropped (and counted)
      // rather than held in memory without bound.
      if (pending.size >= maxPendingRecords) {
        warn(`${maxPendingRecords} records already wait for JetStream`);
        return;
      }
      const p = js
        .publish(attemptSubject(namespace, subscription, record.eventId), JSON.stringify(record))
        .catch((err: Error) => warn(err.message))
        .finally(() => pending.delete(p));
      pending.add(p);
    },
    /** Waits for the records still being published (each ends with its PubAck or its error). */
    async close(): Promise<void> {
      await Promise.all([...pending]);
    },
  };
}
