import {
  AckPolicy,
  type ConsumerConfig,
  type ConsumerInfo,
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamManager,
} from '@nats-io/jetstream';
import type { WebhookSubscriptionSpec } from '../api/webhook-subscription.ts';
import { durationNanos } from '../runtime/duration.ts';
import { endpointSubjects, eventFilterSubject, replaySubject } from './layout.ts';
import { configHolds } from './streams.ts';

/**
 * JetStream's own delivery limit is off (-1). The dispatcher counts attempts (the delivery count) and dead-letters
 * an event itself once retry.maxAttempts are used up, publishing the dead letter before it terminates the
 * original. A server-side limit would end redelivery without a dead letter whenever that publish kept failing
 * (the dead-letter stream unavailable for a while) or crashes used up deliveries: the event would be lost.
 */
const unlimitedDeliveries = -1;

/**
 * Events waiting for a retry (nak with a delay) count as ack pending. A limit equal to the concurrency would let a
 * few failing events stall the whole subscription, so the server-side limit leaves room for this many waiting
 * retries; the dispatcher itself never has more than `concurrency` deliveries in flight.
 */
export const retryBacklog = 1000;

export type ConsumerSpec = Pick<WebhookSubscriptionSpec, 'eventTypes' | 'ackWait' | 'retry' | 'concurrency'> &
  Partial<Pick<WebhookSubscriptionSpec, 'ordering'>>;

/**
 * The priority group of an ordered subscription's consumers. With the pinned-client policy JetStream hands its
 * events to one dispatcher replica at a time (the pinned one); the others' pulls wait until the pinned one has
 * not pulled for `priority_timeout` (then one of them is pinned). See src/dispatcher/ordering.ts.
 */
export const orderingGroup = 'hookyard';

/** The durable pull consumer of one subscription on one ProviderEndpoint's stream. */
export function consumerConfig(
  namespace: string,
  subscription: string,
  endpoint: string,
  spec: ConsumerSpec,
): Partial<ConsumerConfig> & { durable_name: string; filter_subjects: string[] } {
  return {
    durable_name: subscription,
    description: `Hookyard WebhookSubscription ${namespace}/${subscription}`,
    filter_subjects: filterSubjects(namespace, endpoint, spec.eventTypes),
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: durationNanos(spec.ackWait),
    max_deliver: unlimitedDeliveries,
    max_ack_pending: spec.concurrency + retryBacklog,
    ...(spec.ordering
      ? {
          priority_groups: [orderingGroup],
          priority_policy: 'pinned_client' as const,
          // A replica that stopped pulling (killed, cut off) loses its pin after ackWait, the time JetStream
          // also gives its events before handing them out again.
          priority_timeout: durationNanos(spec.ackWait),
        }
      : {}),
  };
}

/** The subscription's consumer on its replay stream: the events there already matched its event types. */
export function replayConsumerConfig(namespace: string, subscription: string, spec: ConsumerSpec) {
  return {
    ...consumerConfig(namespace, subscription, '', spec),
    filter_subjects: [replaySubject(namespace, subscription)],
  };
}

/**
 * Filter subjects for the event-type patterns. JetStream refuses filter subjects that overlap, so a pattern that
 * another one already covers is dropped; when two patterns still overlap without one covering the other (`a.*`
 * and `*.b`), the consumer takes the whole endpoint and the dispatcher matches event types itself
 * (see `subjectMatches`).
 */
export function filterSubjects(namespace: string, endpoint: string, patterns: string[]): string[] {
  const subjects = [...new Set(patterns.map((p) => eventFilterSubject(namespace, endpoint, p)))];
  const kept = subjects.filter(
    (s, i) => !subjects.some((other, j) => j !== i && covers(other, s) && (!covers(s, other) || j < i)),
  );
  for (let i = 0; i < kept.length; i++) {
    for (let j = i + 1; j < kept.length; j++) {
      if (collide(kept[i] as string, kept[j] as string)) return [endpointSubjects(namespace, endpoint)];
    }
  }
  return kept;
}

/** Whether a subject (no wildcards) matches a filter subject with `*` and a final `>`. */
export function subjectMatches(filter: string, subject: string): boolean {
  const f = filter.split('.');
  const s = subject.split('.');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '>') return s.length > i;
    if (i >= s.length || (f[i] !== '*' && f[i] !== s[i])) return false;
  }
  return f.length === s.length;
}

/** Whether every subject that `b` matches is matched by `a`. */
export function covers(a: string, b: string): boolean {
  const x = a.split('.');
  const y = b.split('.');
  for (let i = 0; i < x.length; i++) {
    if (x[i] === '>') return y.length > i;
    if (i >= y.length || y[i] === '>') return false;
    if (x[i] !== '*' && (y[i] === '*' || x[i] !== y[i])) return false;
  }
  return x.length === y.length;
}

/** Whether some subject matches both filters. */
export function collide(a: string, b: string): boolean {
  const x = a.split('.');
  const y = b.split('.');
  for (let i = 0; ; i++) {
    if (x[i] === '>' || y[i] === '>') return i < x.length && i < y.length;
    if (i >= x.length || i >= y.length) return x.length === y.length;
    if (x[i] !== '*' && y[i] !== '*' && x[i] !== y[i]) return false;
  }
}

/**
 * Creates the consumer, or updates it in place. A consumer is never deleted and recreated: that would lose its
 * position and every pending retry. A pause (410 Gone, or the operator's) is kept across updates, since an update
 * without `pause_until` would otherwise resume the consumer.
 */
export async function ensureConsumer(
  jsm: JetStreamManager,
  stream: string,
  config: Partial<ConsumerConfig> & { durable_name: string },
): Promise<ConsumerInfo> {
  let existing: ConsumerInfo | undefined;
  try {
    existing = await jsm.consumers.info(stream, config.durable_name);
  } catch (err) {
    if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.ConsumerNotFound)) throw err;
  }
  if (!existing) {
    try {
      return await jsm.consumers.add(stream, config);
    } catch (err) {
      // Another replica created it first: fall through to an update.
      existing = await jsm.consumers.info(stream, config.durable_name).catch(() => undefined);
      if (!existing) throw err;
    }
  }
  const { deliver_policy: _immutable, ...update } = config;
  // Reconciles run often (the operator refreshes status every few seconds): an update that would change nothing
  // is not sent, as each one is a write the cluster replicates.
  if (configHolds(existing.config, update)) return existing;
  const pause = existing.config.pause_until;
  return await jsm.consumers.update(stream, config.durable_name, {
    ...update,
    ...(pause && Date.parse(pause) > Date.now() ? { pause_until: pause } : {}),
  } as never);
}
