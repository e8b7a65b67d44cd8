// The flow gate: which received events may start a delivery now. Events wait here in arrival order (kept alive by
// their lease) until a slot is free (`concurrency`), the circuit breaker lets them (one probe while half-open) and,
// with a rate limit, a token is there. It also says how many events each source may pull, so that nothing is
// fetched that could not be leased and started soon.
import type { WebhookSubscriptionSpec } from '../api/webhook-subscription.ts';
import { durationMs } from '../runtime/duration.ts';
import type { Logger } from '../runtime/log.ts';
import { CircuitBreaker, type CircuitState, circuitStateValue, TokenBucket } from './flow.ts';
import type { DispatcherMetrics } from './metrics.ts';

export interface GateOptions {
  concurrency: number;
  breaker?: CircuitBreaker;
  bucket?: TokenBucket;
  /** Called whenever the number of deliveries in flight changes. */
  onInFlight?: (n: number) => void;
}

/** While the breaker is open, or a token is due, waiting events are looked at again this often at the latest. */
const recheckMs = 100;

export class FlowGate {
  readonly #options: GateOptions;
  readonly #waiting: ((admitted: boolean) => void)[] = [];
  #inFlight = 0;
  #closed = false;
  #recheck: NodeJS.Timeout | undefined;

  constructor(options: GateOptions) {
    this.#options = options;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  get waiting(): number {
    return this.#waiting.length;
  }

  /** Resolves true once the delivery may start (it then holds a slot until `done()`), false if the gate closed. */
  admit(): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    const admitted = new Promise<boolean>((ok) => this.#waiting.push(ok));
    this.pump();
    return admitted;
  }

  /**
   * True when the delivery may start now (it then holds a slot until `done()`): nothing waits before it and the
   * slot, the breaker and the bucket let it. Otherwise false, and `admit()` is the wait. Most deliveries find a
   * slot free, and a promise per delivery is a turn of the microtask queue (docs/benchmarks.md).
   */
  tryAdmit(): boolean {
    return !this.#closed && this.#waiting.length === 0 && this.#start();
  }

  /** A delivery that was admitted has finished. */
  done(): void {
    this.#inFlight--;
    this.#options.onInFlight?.(this.#inFlight);
    this.pump();
  }

  /** A delivery that was admitted did not start after all: its slot (and the breaker's probe) are free again. */
  cancel(): void {
    this.#options.breaker?.cancelled();
    this.done();
  }

  /** Starts as many waiting deliveries as may start now; call it when the breaker changes state. */
  pump(): void {
    while (this.#waiting.length > 0 && this.#start()) (this.#waiting.shift() as (admitted: boolean) => void)(true);
  }

  /** Takes a slot (and the breaker's probe, a token) if the delivery may start now; otherwise rechecks later. */
  #start(): boolean {
    const { concurrency, breaker, bucket } = this.#options;
    if (this.#inFlight >= concurrency) return false;
    if (breaker && breaker.allowance(1) === 0) {
      this.#recheckIn(recheckMs);
      return false;
    }
    const tokenInMs = bucket?.take() ?? 0;
    if (tokenInMs > 0) {
      this.#recheckIn(Math.min(tokenInMs, recheckMs));
      return false;
    }
    this.#inFlight++;
    breaker?.started();
    this.#options.onInFlight?.(this.#inFlight);
    return true;
  }

  /** Refuses every waiting and later delivery (stopping): each gets false, so its event can be handed back. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#recheck);
    for (const waiter of this.#waiting.splice(0)) waiter(false);
  }

  #recheckIn(ms: number) {
    if (this.#recheck || this.#closed) return;
    this.#recheck = setTimeout(() => {
      this.#recheck = undefined;
      this.pump();
    }, ms);
  }
}

export interface SourceWindow {
  /** Most events of one source held at once (received and not yet settled, or asked for). */
  cap: number;
  /** Events asked for in pulls still open. */
  outstanding: number;
  /** Events received from this source and not yet acked, nak'ed or terminated. */
  held: number;
}

/**
 * How many events one source should pull now. Nothing while the breaker is open; one probe while it is half-open
 * and nothing else waits or is on its way; otherwise what fits the window, once a quarter of it is free (each
 * pull is a request; many tiny ones cost more than the deliveries), or at once when nothing is on its way.
 */
export function pullSize(w: SourceWindow, breaker: CircuitState | undefined, waiting: number): number {
  const idle = w.outstanding === 0 && w.held === 0;
  if (breaker === 'open') return 0;
  if (breaker === 'half-open') return idle && waiting === 0 ? 1 : 0;
  const free = w.cap - w.outstanding - w.held;
  return free > 0 && (idle || free >= Math.ceil(w.cap / 4)) ? free : 0;
}

/** The gate a subscription's spec asks for, with its breaker reported in the metrics and the log. */
export function flowGate(spec: WebhookSubscriptionSpec, metrics: DispatcherMetrics, log: Logger) {
  const breaker = spec.circuitBreaker.enabled
    ? new CircuitBreaker(spec.circuitBreaker.failureThreshold, durationMs(spec.circuitBreaker.openDuration))
    : undefined;
  const rate = spec.rateLimit;
  const bucket = rate
    ? new TokenBucket(rate.perSecond, rate.burst ?? Math.max(1, Math.ceil(rate.perSecond)))
    : undefined;
  const gate = new FlowGate({ concurrency: spec.concurrency, breaker, bucket, onInFlight: metrics.inFlight });
  if (breaker) {
    breaker.onChange = (state) => {
      metrics.circuit(circuitStateValue[state]);
      log.warn({ circuit: state }, `circuit breaker ${state}`);
      gate.pump();
    };
  }
  return { gate, breaker };
}
