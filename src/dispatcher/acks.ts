/**
 * Acks go out together once per turn of the event loop: each is a small NATS message, and writing them one
 * socket write at a time costs more than the delivery around them. An ack lost to a crash in between only
 * means a redelivery, which is counted as a possible duplicate.
 */
export class AckBatcher<M extends { ack(): void } = { ack(): void }> {
  #pending: M[] = [];

  ack(msg: M): void {
    if (this.#pending.length === 0) setImmediate(() => this.flush());
    this.#pending.push(msg);
  }

  /** Writes every ack queued so far (at the end of the turn, and when the dispatcher stops). */
  flush(): void {
    const batch = this.#pending;
    this.#pending = [];
    for (const m of batch) m.ack();
  }
}
