// A work queue of resource keys, as controllers keep them: a key waits at most once however often it is added, is
// never worked on by two workers at once, and a key whose reconcile failed comes back after a per-key delay that
// doubles with each failure, so one broken resource never holds up the others. Keys `first` picks are handed out
// before the others (the operator's endpoints, whose streams the subscriptions need). A key added only for a
// status change of what it owns is handed out marked so (statusOnly), unless something else asked for it too, and
// ahead of all others: it takes one status write, where a reconcile takes many requests, and during a burst of new
// resources it would otherwise wait behind every one of them (with 1000 + 1000, no subscription was Ready until
// the last one had been reconciled once). A key added after a delay for a status refresh (a subscription's counters
// read again) is handed out marked so (refreshOnly), unless something else asked for a full reconcile; a refresh
// also does what a status-only turn does.

export interface QueueOptions {
  /** Delay after the first failure (ms); it doubles per failure. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Keys handed out before all others. */
  first?: (key: string) => boolean;
}

/** What a key's turn has to do, least first: write Ready again, refresh the counters, or reconcile it. */
export type Scope = 'status' | 'refresh' | 'full';

export class WorkQueue {
  readonly #ready: string[] = [];
  readonly #readyFirst: string[] = [];
  /** Keys added status-only: handed out before both lists above. */
  readonly #readyStatusOnly: string[] = [];
  readonly #queued = new Set<string>();
  /** Keys being worked on, and what their turn has to do. */
  readonly #active = new Map<string, Scope>();
  /** Queued or dirty keys that something other than a status change or a refresh asked for. */
  readonly #full = new Set<string>();
  /** Queued or dirty keys that a status refresh asked for. */
  readonly #refresh = new Set<string>();
  /** Keys added again while being worked on: they go back on the queue when their worker is done. */
  readonly #dirty = new Set<string>();
  /** Keys waiting for an active key to be done (see addWhenDone). */
  readonly #waiting = new Map<string, Set<string>>();
  readonly #first: (key: string) => boolean;
  readonly #timers = new Map<string, { timer: NodeJS.Timeout; due: number }>();
  readonly #failures = new Map<string, number>();
  readonly #baseDelayMs: number;
  readonly #maxDelayMs: number;
  #waiters: (() => void)[] = [];
  #closed = false;

  constructor(options: QueueOptions = {}) {
    this.#baseDelayMs = options.baseDelayMs ?? 500;
    this.#maxDelayMs = options.maxDelayMs ?? 300_000;
    this.#first = options.first ?? (() => false);
  }

  /** Queues the key; `statusOnly`: all that changed is the status of an object it owns. */
  add(key: string, statusOnly = false): void {
    this.#add(key, statusOnly ? 'status' : 'full');
  }

  #add(key: string, scope: Scope): void {
    if (this.#closed) return;
    if (scope === 'full') this.#full.add(key);
    if (scope === 'refresh') this.#refresh.add(key);
    if (this.#active.has(key)) {
      this.#dirty.add(key);
      return;
    }
    if (this.#queued.has(key)) return;
    this.#queued.add(key);
    (scope === 'status' ? this.#readyStatusOnly : this.#first(key) ? this.#readyFirst : this.#ready).push(key);
    this.#waiters.shift()?.();
  }

  /** The widest scope asked for a queued or dirty key. */
  #scopeOf(key: string): Scope {
    return this.#full.has(key) ? 'full' : this.#refresh.has(key) ? 'refresh' : 'status';
  }

  /** Adds the key once `other` is done if a worker has it now (else at once): `key` needs what `other` makes. */
  addWhenDone(key: string, other: string): void {
    if (this.#active.has(other)) this.#waiting.set(other, (this.#waiting.get(other) ?? new Set()).add(key));
    else this.add(key);
  }

  isActive(key: string): boolean {
    return this.#active.has(key);
  }

  /** Whether the active key was added only for status changes of what it owns. */
  statusOnly(key: string): boolean {
    return this.#active.get(key) === 'status';
  }

  /** Whether the active key was added only for a status refresh (and maybe status changes). */
  refreshOnly(key: string): boolean {
    return this.#active.get(key) === 'refresh';
  }

  /**
   * Adds the key after a delay, for a full reconcile, a status refresh or a status-only turn; of two pending delays
   * of the same key and scope, the one due first wins.
   */
  addAfter(key: string, delayMs: number, scope: Scope = 'full'): void {
    if (this.#closed) return;
    const due = Date.now() + delayMs;
    const slot = `${scope} ${key}`;
    const pending = this.#timers.get(slot);
    if (pending && pending.due <= due) return;
    if (pending) clearTimeout(pending.timer);
    const timer = setTimeout(() => {
      this.#timers.delete(slot);
      this.#add(key, scope);
    }, delayMs).unref();
    this.#timers.set(slot, { timer, due });
  }

  /** After a failed reconcile: the key comes back after its own, growing delay. */
  retry(key: string): number {
    const failures = (this.#failures.get(key) ?? 0) + 1;
    this.#failures.set(key, failures);
    const delay = Math.min(this.#baseDelayMs * 2 ** (failures - 1), this.#maxDelayMs);
    this.addAfter(key, delay);
    return delay;
  }

  /** After a successful reconcile: the key's next failure starts from the base delay again. */
  forget(key: string): void {
    this.#failures.delete(key);
  }

  /** The next key to work on, or undefined once the queue is closed. Call done(key) when finished. */
  async next(): Promise<string | undefined> {
    while (!this.#closed) {
      const key = this.#readyStatusOnly.shift() ?? this.#readyFirst.shift() ?? this.#ready.shift();
      if (key !== undefined) {
        this.#queued.delete(key);
        this.#active.set(key, this.#scopeOf(key));
        this.#full.delete(key);
        this.#refresh.delete(key);
        return key;
      }
      await new Promise<void>((ok) => this.#waiters.push(ok));
    }
    return undefined;
  }

  done(key: string): void {
    this.#active.delete(key);
    if (this.#dirty.delete(key)) this.#add(key, this.#scopeOf(key));
    for (const waiting of this.#waiting.get(key) ?? []) this.add(waiting);
    this.#waiting.delete(key);
  }

  get length(): number {
    return this.#readyStatusOnly.length + this.#readyFirst.length + this.#ready.length;
  }

  close(): void {
    this.#closed = true;
    for (const { timer } of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
    for (const wake of this.#waiters) wake();
    this.#waiters = [];
  }
}
