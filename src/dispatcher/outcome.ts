// What one delivery attempt came to, and what to do about it: errors are values with a kind, mapped to a retry
// decision in one place (`decide`).
import type { WebhookSubscriptionSpec } from '../api/webhook-subscription.ts';
import { durationMs } from '../runtime/duration.ts';

export type AttemptResult =
  | { kind: 'Response'; status: number; retryAfterMs?: number }
  /** The attempt did not finish within target.timeout. */
  | { kind: 'TargetTimeout'; error: string }
  /** Connection refused, reset, DNS failure, TLS failure: the target was not reached or hung up. */
  | { kind: 'TargetUnreachable'; error: string }
  /** The target resolves to a link-local or metadata address and allowPrivateAddresses is off. */
  | { kind: 'TargetForbidden'; error: string };

export type StatusClass = '2xx' | '3xx' | '4xx' | '5xx' | 'network' | 'timeout';
export const statusClasses: StatusClass[] = ['2xx', '3xx', '4xx', '5xx', 'network', 'timeout'];

export function statusClass(result: AttemptResult): StatusClass {
  if (result.kind === 'TargetTimeout') return 'timeout';
  if (result.kind !== 'Response') return 'network';
  const c = Math.floor(result.status / 100);
  return c === 2 ? '2xx' : c === 3 ? '3xx' : c === 4 ? '4xx' : c === 5 ? '5xx' : 'network';
}

/** A short description for logs and the dead-letter headers: never a secret, never the body. */
export function describeResult(result: AttemptResult): string {
  return result.kind === 'Response' ? `HTTP ${result.status}` : `${result.kind}: ${result.error}`;
}

export type Decision =
  | { action: 'ack' }
  | { action: 'retry'; delayMs: number }
  | { action: 'dead-letter'; reason: 'exhausted' | 'permanent' }
  /** 410 Gone: the target says it is gone for good; stop the subscription, keep the event. */
  | { action: 'pause' };

export interface RetryPolicy {
  maxAttempts: number;
  /** Explicit delays before retry 1, 2, ...; the last repeats. */
  scheduleMs?: number[];
  backoff: { initialMs: number; multiplier: number; maxMs: number; jitter: boolean };
  respectRetryAfter: boolean;
  maxRetryAfterMs: number;
  retryableStatusCodes: string[];
}

export function retryPolicy(retry: WebhookSubscriptionSpec['retry']): RetryPolicy {
  const b = retry.backoff;
  return {
    maxAttempts: retry.maxAttempts,
    scheduleMs: retry.schedule?.map(durationMs),
    backoff: {
      initialMs: durationMs(b?.initialDelay ?? '10s'),
      multiplier: b?.multiplier ?? 2,
      maxMs: durationMs(b?.maxDelay ?? '1h'),
      jitter: b?.jitter ?? true,
    },
    respectRetryAfter: retry.respectRetryAfter,
    maxRetryAfterMs: durationMs(retry.maxRetryAfter),
    retryableStatusCodes: retry.retryableStatusCodes,
  };
}

export function isRetryableStatus(status: number, codes: string[]): boolean {
  const s = String(status);
  return codes.some((c) => c === s || (c.endsWith('xx') && c[0] === s[0] && s.length === 3));
}

/**
 * What to do after attempt number `attempt` (1-based) ended with `result`. Network errors and timeouts are always
 * retried; statuses as `retryableStatusCodes` says; 410 pauses; anything else is permanent. A retry waits the
 * policy's own delay for this attempt, or a longer Retry-After capped at `maxRetryAfterMs`.
 */
export function decide(result: AttemptResult, attempt: number, policy: RetryPolicy, random = Math.random): Decision {
  if (result.kind === 'Response') {
    if (result.status >= 200 && result.status < 300) return { action: 'ack' };
    if (result.status === 410) return { action: 'pause' };
    if (!isRetryableStatus(result.status, policy.retryableStatusCodes))
      return { action: 'dead-letter', reason: 'permanent' };
  } else if (result.kind === 'TargetForbidden') {
    return { action: 'dead-letter', reason: 'permanent' };
  }
  if (attempt >= policy.maxAttempts) return { action: 'dead-letter', reason: 'exhausted' };
  const ownDelay = retryDelay(attempt, policy, random);
  const retryAfter = result.kind === 'Response' && policy.respectRetryAfter ? result.retryAfterMs : undefined;
  if (retryAfter === undefined) return { action: 'retry', delayMs: ownDelay };
  // Retry-After may lengthen the wait (up to maxRetryAfter), never shorten it: `Retry-After: 0` or a date in the
  // past would otherwise use up every attempt back to back.
  return { action: 'retry', delayMs: Math.max(ownDelay, Math.min(retryAfter, policy.maxRetryAfterMs)) };
}

/** The delay before the retry that follows attempt `attempt`: the schedule, or capped exponential backoff. */
export function retryDelay(attempt: number, policy: RetryPolicy, random = Math.random): number {
  const schedule = policy.scheduleMs;
  if (schedule && schedule.length > 0) return schedule[Math.min(attempt, schedule.length) - 1] as number;
  const { initialMs, multiplier, maxMs, jitter } = policy.backoff;
  const computed = Math.min(maxMs, initialMs * multiplier ** Math.max(0, attempt - 1));
  // Full jitter (a random delay up to the computed one) spreads out retries of events that failed together.
  return jitter ? Math.floor(random() * computed) : computed;
}

/** Retry-After as milliseconds: delta-seconds or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/**
 * Before an attempt: an event the event types or the filter exclude is skipped (acked, counted as filtered); one
 * whose delivery count is already past maxAttempts (attempts cut short by crashes) goes to the dead letters
 * without another attempt; anything else is attempted.
 */
export function beforeAttempt(
  attempt: number,
  matches: boolean,
  policy: RetryPolicy,
): 'skip' | 'exhausted' | 'attempt' {
  if (!matches) return 'skip';
  return attempt > policy.maxAttempts ? 'exhausted' : 'attempt';
}

/** What an attempt's decision is called in the attempts metric. */
export const attemptOutcome = {
  ack: 'delivered',
  retry: 'retried',
  pause: 'paused',
  'dead-letter': 'dead_lettered',
} as const satisfies Record<Decision['action'], string>;

/**
 * Whether the attempt counts against the target for the circuit breaker: no answer in time, no connection, or an
 * answer that is retried (or was the last of the retries). A permanent 4xx is the request's fault, not the target's.
 */
export function targetFailed(result: AttemptResult, decision: Decision): boolean {
  return (
    result.kind === 'TargetTimeout' ||
    result.kind === 'TargetUnreachable' ||
    decision.action === 'retry' ||
    (decision.action === 'dead-letter' && decision.reason === 'exhausted')
  );
}
