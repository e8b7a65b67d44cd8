// The attempt records: one JSON record per delivery attempt in the subscription's attempt stream, published
// without waiting for its PubAck, so the record costs the delivery nothing but the publish itself. A record that
// JetStream could not store is counted and logged (at most once a minute), never retried: history is not worth
// delaying or failing a delivery for.
import { createInbox, type Msg, type NatsConnection } from '@nats-io/transport-node';
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

/** How long a record's PubAck may take before the record counts as not stored (js.publish's own default). */
const answerTimeoutMs = 5000;

/** Why JetStream did not store a record, from its answer; undefined for a PubAck. */
function refusal(answer: Msg): string | undefined {
  if (answer.headers?.hasError) return `${answer.headers.code} ${answer.headers.description}`; // 503: no stream
  try {
    const error = (answer.json() as { error?: { description?: string } }).error;
    return error ? (error.description ?? 'refused') : undefined;
  } catch {
    return 'unreadable answer';
  }
}

/**
 * Each record is a plain publish whose reply subject is one subscription of this dispatcher's, where JetStream
 * answers with its PubAck. js.publish would make each record a request (a timer, a promise and, in nats.js, errors
 * with stack traces built for every one), which cost more CPU than the rest of the delivery (docs/benchmarks.md).
 * A record counts as failed when its answer is an error, or when none comes within five seconds.
 */
export function createHistory(options: {
  enabled: boolean;
  namespace: string;
  subscription: string;
  nc: NatsConnection;
  log: Logger;
  onFailure: () => void;
  /** Runs a publish at the end of the turn of the event loop (the acks' batch). */
  later: (write: () => void) => void;
}) {
  const { namespace, subscription, nc, log } = options;
  if (!options.enabled) return { record(_record: AttemptRecord): void {}, async close(): Promise<void> {} };
  const inbox = `${createInbox()}.`;
  /** Records sent and not answered yet: number → when sent; in sending order, so the oldest come first. */
  const waiting = new Map<number, number>();
  let sent = 0;
  let lastWarning = 0;
  let allAnswered: (() => void) | undefined;
  const failed = (reason: string) => {
    options.onFailure();
    if (Date.now() - lastWarning < 60_000) return;
    lastWarning = Date.now();
    log.warn({ error: reason }, 'attempt record not stored; delivery goes on');
  };
  const answers = nc.subscribe(`${inbox}*`, {
    callback: (err, m) => {
      if (err || !waiting.delete(Number(m.subject.slice(inbox.length)))) return;
      const reason = refusal(m);
      if (reason) failed(reason);
      if (waiting.size === 0) allAnswered?.();
    },
  });
  const unanswered = (olderThanMs: number) => {
    const now = performance.now();
    for (const [n, at] of waiting) {
      if (now - at < olderThanMs) break;
      waiting.delete(n);
      failed(`no answer from JetStream within ${answerTimeoutMs / 1000}s`);
    }
  };
  const sweep = setInterval(() => unanswered(answerTimeoutMs), 1000);
  sweep.unref();
  const publish = (record: AttemptRecord) => {
    // While JetStream is slow, records wait for their PubAck; past this many, new ones are dropped (and counted)
    // rather than held in memory without bound.
    if (waiting.size >= maxPendingRecords) {
      failed(`${maxPendingRecords} records already wait for JetStream`);
      return;
    }
    const n = ++sent;
    waiting.set(n, performance.now());
    try {
      nc.publish(attemptSubject(namespace, subscription, record.eventId), JSON.stringify(record), {
        reply: `${inbox}${n}`,
      });
    } catch (err) {
      waiting.delete(n);
      failed((err as Error).message); // the connection is closed
    }
  };
  return {
    // Published at the end of the turn with the acks (`later`): nats.js writes to its socket after each run of
    // microtasks, so a record published at once was a system call of its own for each delivery.
    record(record: AttemptRecord): void {
      options.later(() => publish(record));
    },
    /** Waits for the answers to the records published so far (at most five seconds); flush `later` first. */
    async close(): Promise<void> {
      if (waiting.size > 0) {
        await new Promise<void>((ok) => {
          allAnswered = ok;
          setTimeout(ok, answerTimeoutMs).unref();
        });
      }
      unanswered(0);
      clearInterval(sweep);
      answers.unsubscribe();
    },
  };
}
