// Which redeliveries were scheduled on purpose (a retry is a nak with a delay), so that only the others (a crash, a
// lost connection) count as possible duplicates. Replicas of one subscription share one consumer, so a retry one
// replica schedules usually reaches another: each replica announces the retries it schedules, and the one that
// takes a retry announces that, on a core NATS subject of the subscription. Nothing is stored; a replica that
// starts later does not know earlier retries and counts them as possible duplicates (the safe side).
import { randomUUID } from 'node:crypto';
import type { JsMsg } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';

/** A note on the subscription's retry subject; `from` tells a replica its own notes, which it already applied. */
export type RetryNote = { from: string } & (
  | { op: 'scheduled'; key: string; delayMs: number | null }
  | { op: 'taken'; key: string }
);

export interface RetryLedgerOptions {
  /** Most entries kept: the consumers' max_ack_pending bounds how many retries can be waiting at once. */
  capacity: number;
  /** How long past its due time a retry is remembered: one picked up later counts as a possible duplicate. */
  graceMs: number;
  /** Sends a note to every replica. */
  announce: (note: RetryNote) => void;
  now?: () => number;
}

export class RetryLedger {
  /** key (`<stream>:<seq>`) → when to forget it; in insertion order, so the oldest is evicted first. */
  readonly #due = new Map<string, number>();
  readonly #options: RetryLedgerOptions;
  readonly #now: () => number;
  readonly #id = randomUUID();

  constructor(options: RetryLedgerOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  get size(): number {
    return this.#due.size;
  }

  /** This replica nak'ed `key` on purpose; `delayMs` null: until taken (a paused subscription). Call before the nak. */
  schedule(key: string, delayMs: number | null): void {
    this.#remember(key, delayMs);
    this.#options.announce({ from: this.#id, op: 'scheduled', key, delayMs });
  }

  /** A redelivery arrived here: true when some replica scheduled it (then every replica forgets it). */
  redelivered(key: string): boolean {
    const due = this.#due.get(key);
    this.#due.delete(key);
    if (due === undefined || due < this.#now()) return false;
    this.#options.announce({ from: this.#id, op: 'taken', key });
    return true;
  }

  /** A note from the subject; anything that is not a note is ignored. */
  heard(note: unknown): void {
    const n = note as Partial<{ from: unknown; op: string; key: unknown; delayMs: unknown }> | null;
    if (typeof n?.key !== 'string' || n.from === this.#id) return;
    if (n.op === 'taken') this.#due.delete(n.key);
    else if (n.op === 'scheduled' && (n.delayMs === null || typeof n.delayMs === 'number'))
      this.#remember(n.key, n.delayMs);
  }

  /** Forgets entries past their grace (called now and then). */
  prune(): void {
    const now = this.#now();
    for (const [key, due] of this.#due) if (due < now) this.#due.delete(key);
  }

  #remember(key: string, delayMs: number | null) {
    this.#due.delete(key); // re-inserted at the end: the newest
    this.#due.set(key, delayMs === null ? Number.POSITIVE_INFINITY : this.#now() + delayMs + this.#options.graceMs);
    while (this.#due.size > this.#options.capacity) this.#due.delete(this.#due.keys().next().value as string);
  }
}

/** The core NATS subject on which a subscription's replicas tell each other about the retries they schedule. */
export const retrySubject = (namespace: string, subscription: string) =>
  `hookyard-retries.${namespace}.${subscription}`;

/** A ledger whose notes travel on `subject`: what the delivery phases use to nak on purpose and to spot the rest. */
export function sharedRetries(
  nc: NatsConnection,
  subject: string,
  options: Omit<RetryLedgerOptions, 'announce' | 'now'> & { onSize: (n: number) => void },
) {
  const ledger = new RetryLedger({ ...options, announce: (note) => nc.publish(subject, JSON.stringify(note)) });
  const notes = nc.subscribe(subject, {
    callback: (err, m) => {
      if (err) return;
      try {
        ledger.heard(m.json());
      } catch {
        // not JSON: not a note
      }
      options.onSize(ledger.size);
    },
  });
  const pruning = setInterval(() => {
    ledger.prune();
    options.onSize(ledger.size);
  }, 60_000);
  pruning.unref();
  const key = (msg: JsMsg) => `${msg.info.stream}:${msg.seq}`;
  return {
    /** A retry on purpose: announced before the nak, so the replica that gets it knows. null: a plain nak. */
    schedule(msg: JsMsg, delayMs: number | null) {
      ledger.schedule(key(msg), delayMs);
      options.onSize(ledger.size);
      if (delayMs === null) msg.nak();
      else msg.nak(delayMs);
    },
    /** Whether a redelivery (delivery count above 1) was scheduled; otherwise it may repeat an attempt. */
    redelivered(msg: JsMsg): boolean {
      const scheduled = ledger.redelivered(key(msg));
      options.onSize(ledger.size);
      return scheduled;
    },
    close() {
      clearInterval(pruning);
      notes.unsubscribe();
    },
  };
}
