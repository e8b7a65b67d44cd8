import type { IncomingMessage, ServerResponse } from 'node:http';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { type ResourceKind, resourceKinds } from '../api/kinds.ts';
import type { Logger } from '../runtime/log.ts';

/** success; error: retried with backoff; terminal: reported in status, not retried (controller-runtime's). */
const results = ['success', 'error', 'terminal'] as const;
export type ReconcileResult = (typeof results)[number];

/**
 * Answers a scrape. A collector that fails gets the scrape a 500 and a warning in the log; it never ends the
 * process, as an unhandled rejection in the request handler would.
 */
export async function serveMetrics(registry: Registry, log: Logger, res: ServerResponse<IncomingMessage>) {
  try {
    const text = await registry.metrics();
    res.setHeader('content-type', registry.contentType);
    res.end(text);
  } catch (err) {
    log.warn({ err: err instanceof Error ? err.message : String(err) }, 'collecting metrics failed');
    res.writeHead(500, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: 'collecting metrics failed; see the operator log' }));
  }
}

/** What the subscription gauges carry for one consumer, as read from JetStream. */
export interface ConsumerCounts {
  pending: number;
  ackPending: number;
  redelivered: number;
}

export class OperatorMetrics {
  readonly #reconciles: Counter<'kind' | 'result'>;
  readonly #duration: Histogram<'kind'>;
  readonly #statusRewrites: Counter<'kind'>;
  readonly #statusRefreshes: Counter<'kind'>;
  readonly #leader: Gauge;
  readonly #pending: Gauge<'namespace' | 'subscription' | 'endpoint'>;
  readonly #ackPending: Gauge<'namespace' | 'subscription' | 'endpoint'>;
  readonly #redelivered: Gauge<'namespace' | 'subscription' | 'endpoint'>;
  readonly #deadLetters: Gauge<'namespace' | 'subscription'>;
  /** The endpoints each subscription has consumer series for, so they can be removed. */
  readonly #endpoints = new Map<string, Set<string>>();

  constructor(registry: Registry) {
    const registers = [registry];
    this.#reconciles = new Counter({
      name: 'hookyard_operator_reconciles_total',
      help: 'Reconciles, by kind and result.',
      labelNames: ['kind', 'result'],
      registers,
    });
    this.#duration = new Histogram({
      name: 'hookyard_operator_reconcile_duration_seconds',
      help: 'How long one reconcile took, by kind.',
      labelNames: ['kind'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.#statusRewrites = new Counter({
      name: 'hookyard_operator_status_rewrites_total',
      help: "Ready written again from a Deployment's availability alone, without a reconcile, by kind.",
      labelNames: ['kind'],
      registers,
    });
    this.#statusRefreshes = new Counter({
      name: 'hookyard_operator_status_refreshes_total',
      help: "A subscription's status counters read again from JetStream without a reconcile, by kind.",
      labelNames: ['kind'],
      registers,
    });
    this.#leader = new Gauge({
      name: 'hookyard_operator_is_leader',
      help: '1 while this replica holds the leader Lease and reconciles.',
      registers,
    });
    const consumerLabels = ['namespace', 'subscription', 'endpoint'] as const;
    this.#pending = new Gauge({
      name: 'hookyard_subscription_consumer_pending',
      help: "Events in a source stream that the subscription's consumer has not yet been handed.",
      labelNames: consumerLabels,
      registers,
    });
    this.#ackPending = new Gauge({
      name: 'hookyard_subscription_consumer_ack_pending',
      help: 'Events being delivered or waiting for a retry.',
      labelNames: consumerLabels,
      registers,
    });
    this.#redelivered = new Gauge({
      name: 'hookyard_subscription_consumer_redelivered',
      help: 'Events handed out more than once and not yet acknowledged.',
      labelNames: consumerLabels,
      registers,
    });
    this.#deadLetters = new Gauge({
      name: 'hookyard_subscription_dead_letters',
      help: "Events in the subscription's dead-letter stream.",
      labelNames: ['namespace', 'subscription'],
      registers,
    });
    for (const kind of resourceKinds) {
      for (const result of results) this.#reconciles.inc({ kind, result }, 0);
      this.#duration.zero({ kind });
      this.#statusRewrites.inc({ kind }, 0);
      this.#statusRefreshes.inc({ kind }, 0);
    }
    this.#leader.set(0);
  }

  reconciled(kind: ResourceKind, result: ReconcileResult, seconds: number): void {
    this.#reconciles.inc({ kind, result });
    this.#duration.observe({ kind }, seconds);
  }

  statusRewritten(kind: ResourceKind): void {
    this.#statusRewrites.inc({ kind });
  }

  statusRefreshed(kind: ResourceKind): void {
    this.#statusRefreshes.inc({ kind });
  }

  leader(isLeader: boolean): void {
    this.#leader.set(isLeader ? 1 : 0);
  }

  consumer(namespace: string, subscription: string, endpoint: string, counts: ConsumerCounts): void {
    const labels = { namespace, subscription, endpoint };
    const key = `${namespace}/${subscription}`;
    this.#endpoints.set(key, (this.#endpoints.get(key) ?? new Set()).add(endpoint));
    this.#pending.set(labels, counts.pending);
    this.#ackPending.set(labels, counts.ackPending);
    this.#redelivered.set(labels, counts.redelivered);
  }

  /** The dead-letter stream's depth; undefined removes the series (dead letters turned off). */
  deadLetters(namespace: string, subscription: string, messages: number | undefined): void {
    if (messages === undefined) this.#deadLetters.remove({ namespace, subscription });
    else this.#deadLetters.set({ namespace, subscription }, messages);
  }

  /**
   * Drops a subscription's consumer series for the endpoints it no longer reads; without `keep` (the subscription
   * is gone) all of its series.
   */
  forget(namespace: string, subscription: string, keep?: string[]): void {
    const key = `${namespace}/${subscription}`;
    const endpoints = this.#endpoints.get(key) ?? new Set();
    for (const endpoint of endpoints) {
      if (keep?.includes(endpoint)) continue;
      for (const gauge of [this.#pending, this.#ackPending, this.#redelivered]) {
        gauge.remove({ namespace, subscription, endpoint });
      }
      endpoints.delete(endpoint);
    }
    if (keep) return;
    this.#endpoints.delete(key);
    this.#deadLetters.remove({ namespace, subscription });
  }
}
