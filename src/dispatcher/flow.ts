// Flow control of one subscription: a circuit breaker that stops hammering a target that keeps failing, and a
// token bucket for the rate limit. Both take the clock as a parameter so they can be tested by value.

export type CircuitState = 'closed' | 'open' | 'half-open';
export const circuitStateValue: Record<CircuitState, number> = { closed: 0, open: 1, 'half-open': 2 };

/**
 * Closed: deliveries flow; `failureThreshold` consecutive failures open it. Open: nothing is fetched until
 * `openMs` has passed. Half-open: one probe delivery; success closes it, failure opens it again.
 */
export class CircuitBreaker {
  readonly #threshold: number;
  readonly #openMs: number;
  readonly #now: () => number;
  #failures = 0;
  #openedAt = 0;
  #state: CircuitState = 'closed';
  #probing = false;
  onChange: (state: CircuitState) => void = () => {};

  constructor(failureThreshold: number, openMs: number, now: () => number = Date.now) {
    this.#threshold = failureThreshold;
    this.#openMs = openMs;
    this.#now = now;
  }

  get state(): CircuitState {
    if (this.#state === 'open' && this.#now() - this.#openedAt >= this.#openMs) this.#set('half-open');
    return this.#state;
  }

  /** How many deliveries may start now (given `free` slots): none while open, one probe while half-open. */
  allowance(free: number): number {
    const state = this.state;
    if (state === 'open') return 0;
    if (state === 'half-open') return this.#probing ? 0 : Math.min(1, free);
    return free;
  }

  /** A delivery started; while half-open it is the probe. */
  started(): void {
    if (this.state === 'half-open') this.#probing = true;
  }

  /** A started delivery was not sent after all: a probe may start again. */
  cancelled(): void {
    this.#probing = false;
  }

  success(): void {
    this.#failures = 0;
    this.#probing = false;
    if (this.#state !== 'closed') this.#set('closed');
  }

  failure(): void {
    this.#failures++;
    const wasProbe = this.#state === 'half-open';
    this.#probing = false;
    if (wasProbe || (this.#state === 'closed' && this.#failures >= this.#threshold)) {
      this.#openedAt = this.#now();
      this.#set('open');
    }
  }

  #set(state: CircuitState) {
    this.#state = state;
    this.onChange(state);
  }
}

/** A token bucket: `perSecond` tokens a second, at most `burst` saved up. */
export class TokenBucket {
  readonly #rate: number;
  readonly #burst: number;
  readonly #now: () => number;
  #tokens: number;
  #at: number;

  constructor(perSecond: number, burst: number, now: () => number = Date.now) {
    this.#rate = perSecond / 1000;
    this.#burst = burst;
    this.#now = now;
    this.#tokens = burst;
    this.#at = now();
  }

  /** Takes a token if there is one and returns 0, or returns how many ms until there is one. */
  take(): number {
    const now = this.#now();
    this.#tokens = Math.min(this.#burst, this.#tokens + (now - this.#at) * this.#rate);
    this.#at = now;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return 0;
    }
    return Math.ceil((1 - this.#tokens) / this.#rate);
  }
}
