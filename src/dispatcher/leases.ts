// Every message this process holds, from the moment a pull hands it over until it is acked, nak'ed or terminated,
// is kept alive with `working()`: waiting for a slot, a token or the circuit breaker, being filtered, attempted or
// dead-lettered. JetStream then never hands it to another consumer while it is still being delivered here; only a
// crash (or a lost connection) makes it come back after ackWait.

/** What a lease needs of a message (a JsMsg, or a stand-in in unit tests). */
export interface Leased {
  working(): void;
}

export class Leases<M extends Leased = Leased> {
  readonly #held = new Set<M>();
  readonly #timer: NodeJS.Timeout;

  /** `ackWaitMs`: the consumer's ack_wait; each held message is touched three times within it. */
  constructor(ackWaitMs: number) {
    this.#timer = setInterval(() => this.renew(), Math.max(100, Math.floor(ackWaitMs / 3)));
    this.#timer.unref();
  }

  take(msg: M): void {
    this.#held.add(msg);
  }

  release(msg: M): void {
    this.#held.delete(msg);
  }

  get size(): number {
    return this.#held.size;
  }

  /** Resets the ack timer of every held message (the timer calls it; exposed for tests). */
  renew(): void {
    for (const msg of this.#held) msg.working();
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}
