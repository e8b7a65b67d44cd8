// The attempt records: one JSON record per delivery attempt in the subscription's attempt stream, published
// without waiting for its PubAck, so the record costs the delivery nothing but the publish itself. The records of
// one turn of the event loop go out together, and JetStream answers the last of them: a batch whose answer is a
// refusal, or does not come, counts all its records as not stored. They reach JetStream in one socket write and
// are stored in order within microseconds, so what refuses the last (no stream, no leader, no space) refused the
// batch. A record that JetStream could not store is counted and logged (at most once a minute), never retried:
// history is not worth delaying or failing a delivery for.
import type { NatsConnection } from '@nats-io/transport-node';
import { attemptSubject } from '../jetstream/layout.ts';
import { jetstreamPublisher } from '../jetstream/publisher.ts';
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

/** One attempt of an event, as the dispatcher saw it. */
export interface Attempt {
  number: number;
  startedAt: number;
  durationMs: number;
  replay?: string;
}

export function attemptRecord(
  subscription: string,
  event: StoredEvent,
  attempt: Attempt,
  result: AttemptResult,
  decision: Decision,
): AttemptRecord {
  // Built field by field rather than from spreads: one object per attempt on the hot path (docs/benchmarks.md).
  const record: AttemptRecord = {
    subscription,
    eventId: event.id,
    eventType: event.type,
    endpoint: event.endpoint,
    attempt: attempt.number,
    time: rfc3339(attempt.startedAt),
    durationMs: Math.round(attempt.durationMs * 10) / 10,
    decision: decision.action === 'ack' ? 'delivered' : decision.action,
  };
  if (result.kind === 'Response') record.status = result.status;
  else record.error = `${result.kind}: ${result.error}`;
  if (decision.action === 'retry') record.retryInMs = Math.round(decision.delayMs);
  if (decision.action === 'dead-letter') record.reason = decision.reason;
  if (attempt.replay) record.replay = attempt.replay;
  return record;
}

/**
 * The RFC 3339 text of a time in milliseconds. Attempts started in the same millisecond share one: a batch of
 * events starts within a millisecond or two, and formatting the time was most of the cost of building a record
 * (docs/benchmarks.md).
 */
function rfc3339(ms: number): string {
  if (ms !== lastTime.ms) lastTime = { ms, text: new Date(ms).toISOString() };
  return lastTime.text;
}
let lastTime = { ms: Number.NaN, text: '' };

type RecordArgs = [event: StoredEvent, attempt: Attempt, result: AttemptResult, decision: Decision];
/** `delivery`: JetStream's delivery count of the event's message, as `attempt` is for an attempt. */
type NotAttemptedArgs = [event: StoredEvent, delivery: number, reason: 'exhausted' | 'ordering'];

/** Attempt records published and not yet acknowledged, at most. */
export const maxPendingRecords = 4096;

/** How long a batch's PubAck may take before its records count as not stored (js.publish's own default). */
const answerTimeoutMs = 5000;

/**
 * The records of a turn are plain publishes, and only the last of them asks for an answer
 * (src/jetstream/publisher.ts): js.publish would make each record a request (a timer, a promise and, in nats.js,
 * errors with stack traces built for every one), and each answer is work for nats-server and the dispatcher.
 */
export function createHistory(options: {
  enabled: boolean;
  namespace: string;
  subscription: string;
  nc: NatsConnection;
  log: Logger;
  /** How many records JetStream did not store. */
  onFailure: (records: number) => void;
  /** Runs a publish at the end of the turn of the event loop (the acks' batch). */
  later: (write: () => void) => void;
}) {
  const { namespace, subscription, nc, log } = options;
  if (!options.enabled) {
    return { record(..._attempt: RecordArgs): void {}, notAttempted(..._args: NotAttemptedArgs) {}, async close() {} };
  }
  const name = `${namespace}/${subscription}`;
  const publisher = jetstreamPublisher(nc, answerTimeoutMs);
  /** Batches sent and not answered yet. */
  const waiting = new Set<Promise<void>>();
  let waitingRecords = 0;
  let turn: AttemptRecord[] = [];
  let lastWarning = 0;
  const failed = (records: number, reason: string) => {
    options.onFailure(records);
    if (Date.now() - lastWarning < 60_000) return;
    lastWarning = Date.now();
    log.warn({ error: reason, records }, 'attempt record not stored; delivery goes on');
  };
  const add = (record: AttemptRecord) => {
    if (turn.push(record) === 1) options.later(publish);
  };
  const subject = (record: AttemptRecord) => attemptSubject(namespace, subscription, record.eventId);
  // As bytes: nats.js encodes a string payload with a TextEncoder, a new ArrayBuffer each time, four times what
  // Buffer.from (Node's pool of small buffers) costs for a record (docs/benchmarks.md).
  const payload = (record: AttemptRecord) => Buffer.from(JSON.stringify(record));
  const publish = () => {
    const records = turn;
    turn = [];
    // While JetStream is slow, records wait for their PubAck; past this many, new ones are dropped (and counted)
    // rather than held in memory without bound.
    const room = Math.max(0, maxPendingRecords - waitingRecords);
    if (records.length > room) {
      failed(records.length - room, `${maxPendingRecords} records already wait for JetStream`);
      records.length = room;
    }
    const count = records.length;
    const last = records.pop();
    if (!last) return;
    try {
      for (const record of records) nc.publish(subject(record), payload(record));
    } catch (err) {
      failed(count, (err as Error).message); // the connection is closed
      return;
    }
    waitingRecords += count;
    const answered = publisher
      .publish(subject(last), payload(last))
      .then(
        () => {},
        (err: Error) => failed(count, err.message),
      )
      .finally(() => {
        waitingRecords -= count;
        waiting.delete(answered);
      });
    waiting.add(answered);
  };
  return {
    // Published at the end of the turn with the acks (`later`): nats.js writes to its socket after each run of
    // microtasks, so a record published at once was a system call of its own for each delivery.
    // The record is made here, not by the caller: with history off no record is built on the delivery's path.
    record(...[event, attempt, result, decision]: RecordArgs): void {
      add(attemptRecord(name, event, attempt, result, decision));
    },
    /**
     * An event dead-lettered without an attempt: its attempts were used up before this delivery (the last one's
     * outcome never settled it), or an earlier event of its key was dead-lettered (DeadLetterRest). Recorded so
     * that an event's records end with what became of it.
     */
    notAttempted(...[event, delivery, reason]: NotAttemptedArgs): void {
      const { id: eventId, type: eventType, endpoint } = event;
      const time = rfc3339(Date.now());
      const error = 'not attempted';
      add({
        subscription: name,
        eventId,
        eventType,
        endpoint,
        attempt: delivery,
        time,
        durationMs: 0,
        error,
        decision: 'dead-letter',
        reason,
      });
    },
    /** Waits for the answers to the records published so far (at most five seconds); flush `later` first. */
    async close(): Promise<void> {
      await Promise.all(waiting); // each fails by itself within five seconds
      publisher.close();
    },
  };
}
