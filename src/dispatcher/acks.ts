/**
 * Acks go out together once per turn of the event loop: each is a small NATS message, and writing them one
 * socket write at a time costs more than the delivery around them. Other writes that can wait as long (the attempt
 * records) go out with them, in the same socket write. An ack lost to a crash in between only means a redelivery,
 * which is counted as a possible duplicate.
 */
export class AckBatcher<M extends { ack(): void } = { ack(): void }> {
  #pending: M[] = [];
  #writes: (() => void)[] = [];

  ack(msg: M): void {
    this.#schedule();
    this.#pending.push(msg);
  }

  /** Another NATS write for the end of the turn, after the acks. */
  later(write: () => void): void {
    this.#schedule();
    this.#writes.push(write);
  }

  /** Writes every ack and write queued so far (at the end of the turn, and when the dispatcher stops). */
  flush(): void {
    const batch = this.#pending;
    const writes = this.#writes;
    this.#pending = [];
    this.#writes = [];
    for (const m of batch) m.ack();
    for (const write of writes) write();
  }

  #schedule() {
    if (this.#pending.length === 0 && this.#writes.length === 0) setImmediate(() => this.flush());
  }
}
