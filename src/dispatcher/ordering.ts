// Per-key ordering (spec.ordering): events with the same key reach the target one at a time, in the order the
// source stream received them; different keys go in parallel through the usual flow gate (concurrency, breaker,
// rate limit). Design and trade-offs: docs/architecture.md and docs/dispatcher.md. In short:
// - One replica delivers at a time: the consumer uses a priority group with the pinned-client policy, so JetStream
//   hands events to the pinned replica only, in stream order; the others' pulls wait.
// - The pinned replica keeps a queue per key (KeyQueues). A retry is a nak with a delay as without ordering; the
//   key's later events wait here (leased) until the retried event comes back and settles.
// - A replica that is newly pinned (a takeover, a restart) does not know what the previous holder had in flight.
//   It holds everything it receives until every event JetStream counts as pending is either held here or recorded
//   in the ordering ledger as waiting for a retry (src/jetstream/ordering.ts); then it knows each key's earliest
//   unsettled event and starts. A record is written before its nak and removed before its event is attempted
//   again, so a record always means a pending event; a missing record only makes a takeover wait longer.
import { createHash } from 'node:crypto';
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import {
  deadKeyFilter,
  deadKeySubject,
  orderingStream,
  parseRetryRecord,
  retryRecordFilter,
  retryRecordSubject,
} from '../jetstream/ordering.ts';

/** Keys are kept and recorded as a hash: never the order id itself in NATS subjects, and a bounded length. */
export const keyHash = (key: string) => createHash('sha256').update(key).digest('base64url').slice(0, 22);

export interface Held<M> {
  seq: number;
  key: string;
  msg: M;
}

interface Lane<M> {
  /** Received and not started, by stream sequence. */
  waiting: Held<M>[];
  started?: Held<M>;
  /** The sequence of this key's event that waits for a retry: the key's later events wait for it. */
  awaiting?: number;
  blockedSince?: number;
}

/**
 * The per-key queues of one source. An event may start when it is the earliest its key holds, nothing of its key
 * is being delivered, and its key does not wait for an earlier event's retry. Keys become ready in the order
 * their events arrived, so no key starves another.
 */
export class KeyQueues<M> {
  readonly #lanes = new Map<string, Lane<M>>();
  readonly #ready = new Set<string>();
  #held = 0;

  /** Events held: waiting or being delivered. */
  get held(): number {
    return this.#held;
  }

  /** Keys waiting for an earlier event's retry, and since when the longest-waiting one does (ms since epoch). */
  blocked(): { keys: number; oldestSince: number | undefined } {
    let keys = 0;
    let oldestSince: number | undefined;
    for (const lane of this.#lanes.values()) {
      if (lane.awaiting === undefined) continue;
      keys++;
      if (lane.blockedSince !== undefined && (oldestSince === undefined || lane.blockedSince < oldestSince))
        oldestSince = lane.blockedSince;
    }
    return { keys, oldestSince };
  }

  /** Events waiting behind an earlier event of their key (being delivered or waiting for a retry). */
  get waitingBehind(): number {
    let n = 0;
    for (const lane of this.#lanes.values()) if (lane.started || lane.awaiting !== undefined) n += lane.waiting.length;
    return n;
  }

  /** What each blocked key waits for: sequence → key. */
  awaited(): Map<number, string> {
    const out = new Map<number, string>();
    for (const [key, lane] of this.#lanes) if (lane.awaiting !== undefined) out.set(lane.awaiting, key);
    return out;
  }

  /** Every held sequence. */
  *seqs(): Iterable<number> {
    for (const lane of this.#lanes.values()) {
      if (lane.started) yield lane.started.seq;
      for (const h of lane.waiting) yield h.seq;
    }
  }

  /**
   * Adds a received event. 'duplicate': the same event is being delivered right now (a redelivery of it), so the
   * new copy is not queued; a Held: a copy was waiting, and the newer message took its place (the old one is
   * returned, to be let go).
   */
  add(event: Held<M>): 'added' | 'duplicate' | Held<M> {
    let lane = this.#lanes.get(event.key);
    if (!lane) {
      lane = { waiting: [] };
      this.#lanes.set(event.key, lane);
    }
    if (lane.started?.seq === event.seq) return 'duplicate';
    const same = lane.waiting.findIndex((h) => h.seq === event.seq);
    if (same >= 0) {
      const replaced = lane.waiting[same] as Held<M>;
      lane.waiting[same] = event;
      return replaced;
    }
    let at = lane.waiting.length; // events usually arrive in order: look from the end
    while (at > 0 && (lane.waiting[at - 1] as Held<M>).seq > event.seq) at--;
    lane.waiting.splice(at, 0, event);
    if (lane.awaiting === event.seq) {
      lane.awaiting = undefined;
      lane.blockedSince = undefined;
    }
    this.#held++;
    this.#markReady(event.key, lane);
    return 'added';
  }

  /** Takes the next event that may start now, if any; it counts as being delivered until settled or retrying. */
  next(): Held<M> | undefined {
    for (const key of this.#ready) {
      this.#ready.delete(key);
      const lane = this.#lanes.get(key);
      if (!lane || lane.started || lane.awaiting !== undefined) continue;
      const head = lane.waiting.shift();
      if (!head) continue;
      lane.started = head;
      return head;
    }
    return undefined;
  }

  /** The started event is done with (acked, terminated, or handed back): its key's next event may start. */
  settled(event: Held<M>): void {
    const lane = this.#lanes.get(event.key);
    if (lane?.started !== event) return;
    lane.started = undefined;
    this.#held--;
    this.#markReady(event.key, lane);
  }

  /** The started event waits for a retry (a nak with a delay): its key's later events wait until it is back. */
  retrying(event: Held<M>, now = Date.now()): void {
    const lane = this.#lanes.get(event.key);
    if (lane?.started !== event) return;
    lane.started = undefined;
    this.#held--;
    this.await(event.key, event.seq, now);
  }

  /** Key `key` has an earlier event `seq` that waits for a retry (known from the ledger after a takeover). */
  await(key: string, seq: number, since = Date.now()): void {
    let lane = this.#lanes.get(key);
    if (!lane) {
      lane = { waiting: [] };
      this.#lanes.set(key, lane);
    }
    if (lane.started?.seq === seq || lane.waiting.some((h) => h.seq === seq)) return;
    if (lane.awaiting === undefined || seq < lane.awaiting) {
      lane.awaiting = seq;
      lane.blockedSince = since;
    }
  }

  /** Event `seq`, which key `key` waits for, will not come back (settled, or removed from the stream). */
  unblock(key: string, seq: number): void {
    const lane = this.#lanes.get(key);
    if (lane?.awaiting !== seq) return;
    lane.awaiting = undefined;
    lane.blockedSince = undefined;
    this.#markReady(key, lane);
  }

  /** Removes every waiting event and what each key awaits (to hand them back); started ones stay until settled. */
  drain(): Held<M>[] {
    const out: Held<M>[] = [];
    for (const [key, lane] of this.#lanes) {
      out.push(...lane.waiting);
      this.#held -= lane.waiting.length;
      lane.waiting = [];
      lane.awaiting = undefined;
      lane.blockedSince = undefined;
      if (!lane.started) this.#lanes.delete(key);
    }
    this.#ready.clear();
    return out;
  }

  #markReady(key: string, lane: Lane<M>) {
    if (lane.started || lane.awaiting !== undefined) return;
    if (lane.waiting.length === 0) this.#lanes.delete(key);
    else this.#ready.add(key);
  }
}

/**
 * Whether a newly pinned replica knows enough to start: every event the consumer counts as pending (delivered and
 * not settled) is held here or recorded as waiting for a retry. `held` must only count events delivered before the
 * consumer info was taken (sequence up to its `delivered`), or an event that came after could stand in for one
 * still held elsewhere.
 */
export function takeoverComplete(
  ackPending: number,
  held: Iterable<number>,
  delivered: number,
  recorded: Iterable<number>,
) {
  const known = new Set<number>();
  for (const seq of held) if (seq <= delivered) known.add(seq);
  for (const seq of recorded) known.add(seq);
  return ackPending <= known.size;
}

/** The ordering ledger's operations for one subscription (records: src/jetstream/ordering.ts). */
export function orderingLedger(jsm: JetStreamManager, js: JetStreamClient, namespace: string, subscription: string) {
  const stream = orderingStream(namespace, subscription);
  const subjects = async (filter: string) =>
    Object.keys((await jsm.streams.info(stream, { subjects_filter: filter })).state.subjects ?? {});
  return {
    /** Events of `source` recorded as waiting for a retry: sequence → key hash. */
    async retries(source: string): Promise<Map<number, string>> {
      const out = new Map<number, string>();
      for (const subject of await subjects(retryRecordFilter(namespace, subscription, source))) {
        const record = parseRetryRecord(subject);
        if (record) out.set(record.seq, record.key);
      }
      return out;
    },
    async recordRetry(source: string, seq: number, key: string) {
      await js.publish(retryRecordSubject(namespace, subscription, source, seq, key), new Uint8Array());
    },
    async clearRetry(source: string, seq: number, key: string) {
      await jsm.streams.purge(stream, { filter: retryRecordSubject(namespace, subscription, source, seq, key) });
    },
    /** Key hashes of `source` with a dead letter (onDeadLetter: DeadLetterRest). */
    async deadKeys(source: string): Promise<Set<string>> {
      return new Set(
        (await subjects(deadKeyFilter(namespace, subscription, source))).map((s) => s.split('.').at(-1) ?? ''),
      );
    },
    /** Whether the key still has its dead-letter mark: a replay of the dead letters may have lifted it. */
    async isDeadKey(source: string, key: string): Promise<boolean> {
      const mark = await jsm.streams.getMessage(stream, {
        last_by_subj: deadKeySubject(namespace, subscription, source, key),
      });
      return mark !== null;
    },
    async recordDeadKey(source: string, key: string) {
      await js.publish(deadKeySubject(namespace, subscription, source, key), new Uint8Array());
    },
  };
}
export type OrderingLedger = ReturnType<typeof orderingLedger>;
