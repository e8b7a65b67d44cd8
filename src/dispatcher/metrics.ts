import type { ServerResponse } from 'node:http';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Logger } from '../runtime/log.ts';
import { type StatusClass, statusClasses } from './outcome.ts';

export const attemptOutcomes = ['delivered', 'retried', 'dead_lettered', 'paused'] as const;
export type AttemptOutcome = (typeof attemptOutcomes)[number];
export const deadLetterReasons = ['exhausted', 'permanent', 'ordering'] as const;

const buckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const latencyBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60, 300, 1800, 7200, 86400];

/**
 * The dispatcher's series for one subscription, every one registered at zero so dashboards and alerts see it.
 * Several subscriptions (dev mode) or a restarted dispatcher share one registry: a metric already registered
 * there is reused.
 */
export function dispatcherMetrics(registry: Registry, namespace: string, subscription: string) {
  const base = { namespace, subscription };
  const registers: Registry[] = [];
  function shared<M>(make: new (o: never) => M, options: { name: string } & Record<string, unknown>): M {
    return (registry.getSingleMetric(options.name) as M | undefined) ?? registerAndReturn(new make(options as never));
  }
  function registerAndReturn<M>(metric: M): M {
    registry.registerMetric(metric as never);
    return metric;
  }
  const attempts = shared(Counter, {
    name: 'hookyard_dispatcher_attempts_total',
    help: 'Delivery attempts, by what followed (outcome) and the response status class.',
    labelNames: ['namespace', 'subscription', 'outcome', 'status_class'],
    registers,
  });
  const failures = shared(Counter, {
    name: 'hookyard_dispatcher_failures_total',
    help: 'Attempts that did not get a 2xx, by status class.',
    labelNames: ['namespace', 'subscription', 'status_class'],
    registers,
  });
  const retries = shared(Counter, {
    name: 'hookyard_dispatcher_retries_total',
    help: 'Retries scheduled (a nak with a delay).',
    labelNames: ['namespace', 'subscription'],
    registers,
  });
  const delivered = shared(Counter, {
    name: 'hookyard_dispatcher_delivered_total',
    help: 'Events the target accepted with a 2xx.',
    labelNames: ['namespace', 'subscription'],
    registers,
  });
  const deadLetters = shared(Counter, {
    name: 'hookyard_dispatcher_dead_letters_total',
    help: 'Events stored in the dead-letter stream: attempts exhausted, a permanent failure, or (ordering) the rest of a key that had one.',
    labelNames: ['namespace', 'subscription', 'reason'],
    registers,
  });
  const discarded = shared(Counter, {
    name: 'hookyard_dispatcher_discarded_total',
    help: 'Events that failed for good while dead letters are disabled.',
    labelNames: ['namespace', 'subscription', 'reason'],
    registers,
  });
  const filtered = shared(Counter, {
    name: 'hookyard_dispatcher_filtered_total',
    help: 'Events skipped because the filter (or the event-type patterns) did not match.',
    labelNames: ['namespace', 'subscription'],
    registers,
  });
  const duplicates = shared(Counter, {
    name: 'hookyard_dispatcher_possible_duplicates_total',
    help: 'Redeliveries no replica of the subscription scheduled (a crash or lost connection after an attempt): the target may see the event twice.',
    labelNames: ['namespace', 'subscription'],
    registers,
  });
  const replayAttempts = shared(Counter, {
    name: 'hookyard_dispatcher_replay_attempts_total',
    help: 'Attempts to deliver events a replay request sent again, by what followed (also in attempts_total).',
    labelNames: ['namespace', 'subscription', 'outcome'],
    registers,
  });
  const recordsFailed = shared(Counter, {
    name: 'hookyard_dispatcher_attempt_records_failed_total',
    help: 'Attempt records JetStream did not store (the attempt stream unavailable or full): history has gaps.',
    labelNames: ['namespace', 'subscription'],
    registers,
  });
  const duration = shared(Histogram, {
    name: 'hookyard_dispatcher_delivery_duration_seconds',
    help: 'Duration of one delivery attempt, by status class.',
    labelNames: ['namespace', 'subscription', 'status_class'],
    buckets,
    registers,
  });
  const latency = shared(Histogram, {
    name: 'hookyard_dispatcher_end_to_end_latency_seconds',
    help: 'From receipt by the receiver to a 2xx from the target.',
    labelNames: ['namespace', 'subscription'],
    buckets: latencyBuckets,
    registers,
  });
  const circuit = shared(Gauge, {
    name: 'hookyard_dispatcher_circuit_state',
    help: 'Circuit breaker state: 0 closed, 1 open, 2 half-open.',
    labelNames: ['namespace', 'subscription'],
    registers,
  });
  const paused = shared(Gauge, {
    name: 'hookyard_dispatcher_paused',
    help: '1 while the subscription is paused (spec.paused, or the target answered 410 Gone).',
    labelNames: ['namespace', 'subscription'],
    registers,
  });
  const inFlight = shared(Gauge, {
    name: 'hookyard_dispatcher_in_flight',
    help: 'Deliveries in progress.',
    labelNames: ['namespace', 'subscription'],
    registers,
  });
  const scheduledRetries = shared(Gauge, {
    name: 'hookyard_dispatcher_scheduled_retries',
    help: 'Retries scheduled by any replica of the subscription that no replica has taken yet, as this one knows them.',
    labelNames: ['namespace', 'subscription'],
    registers,
  });

  for (const status_class of statusClasses) {
    for (const outcome of attemptOutcomes) attempts.inc({ ...base, outcome, status_class }, 0);
    failures.inc({ ...base, status_class }, 0);
    duration.zero({ ...base, status_class });
  }
  for (const outcome of attemptOutcomes) replayAttempts.inc({ ...base, outcome }, 0);
  for (const reason of deadLetterReasons) {
    deadLetters.inc({ ...base, reason }, 0);
    discarded.inc({ ...base, reason }, 0);
  }
  for (const c of [retries, delivered, filtered, duplicates, recordsFailed]) c.inc(base, 0);
  latency.zero(base);
  for (const g of [circuit, paused, inFlight, scheduledRetries]) g.set(base, 0);
  // prom-client builds a key from a series' labels (sorting them, for a gauge) and checks them on every call. The
  // counters each delivery moves take their increments once per turn of the event loop, with the latest in-flight
  // value (it changes twice per delivery), and each histogram series a delivery observes is a child made once, so
  // no label objects are made per delivery (docs/benchmarks.md).
  type Tally = { counter: Counter; labels: Record<string, string>; n: number };
  const tallies: Tally[] = [];
  const tally = (counter: Counter, labels: Record<string, string>): Tally => {
    const t = { counter, labels, n: 0 };
    tallies.push(t);
    return t;
  };
  const keyed = <K extends string, T>(keys: readonly K[], make: (key: K) => T) =>
    Object.fromEntries(keys.map((k) => [k, make(k)])) as Record<K, T>;
  const attemptTallies = keyed(attemptOutcomes, (outcome) =>
    keyed(statusClasses, (status_class) => tally(attempts, { ...base, outcome, status_class })),
  );
  const failureTallies = keyed(statusClasses, (status_class) => tally(failures, { ...base, status_class }));
  const deliveredTally = tally(delivered, base);
  const durationOf = keyed(statusClasses, (status_class) => duration.labels({ ...base, status_class }));
  const latencyChild = latency.labels(base);
  let inFlightNow = 0;
  let due = false;
  const flush = () => {
    due = false;
    for (const t of tallies) {
      if (t.n === 0) continue;
      t.counter.inc(t.labels, t.n);
      t.n = 0;
    }
    inFlight.set(base, inFlightNow);
  };
  const later = () => {
    if (due) return;
    due = true;
    setImmediate(flush);
  };

  return {
    attempt(outcome: AttemptOutcome, statusClass: StatusClass, seconds: number) {
      attemptTallies[outcome][statusClass].n++;
      if (statusClass !== '2xx') failureTallies[statusClass].n++;
      later();
      durationOf[statusClass].observe(seconds);
    },
    replayAttempt: (outcome: AttemptOutcome) => replayAttempts.inc({ ...base, outcome }),
    attemptRecordFailed: (records: number) => recordsFailed.inc(base, records),
    retry: () => retries.inc(base),
    delivered(latencySeconds: number | undefined) {
      deliveredTally.n++;
      later();
      if (latencySeconds !== undefined && latencySeconds >= 0) latencyChild.observe(latencySeconds);
    },
    deadLetter: (reason: (typeof deadLetterReasons)[number]) => deadLetters.inc({ ...base, reason }),
    discarded: (reason: (typeof deadLetterReasons)[number]) => discarded.inc({ ...base, reason }),
    filtered: () => filtered.inc(base),
    possibleDuplicate: () => duplicates.inc(base),
    circuit: (value: number) => circuit.set(base, value),
    paused: (on: boolean) => paused.set(base, on ? 1 : 0),
    inFlight(n: number) {
      inFlightNow = n;
      later();
    },
    scheduledRetries: (n: number) => scheduledRetries.set(base, n),
  };
}
export type DispatcherMetrics = ReturnType<typeof dispatcherMetrics>;

/**
 * Answers a scrape of /metrics. A collector that rejects fails this scrape with a 500 and a warn line; it must
 * not end the process (an unhandled rejection would), since the next scrape may well succeed.
 */
export async function answerScrape(registry: Registry, res: ServerResponse, logger: Logger): Promise<void> {
  let text: string;
  try {
    text = await registry.metrics();
  } catch (err) {
    logger.warn({ error: (err as Error).message }, 'metrics collection failed');
    res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics collection failed\n');
    return;
  }
  res.writeHead(200, { 'content-type': registry.contentType }).end(text);
}
