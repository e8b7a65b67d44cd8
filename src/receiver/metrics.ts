import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { type Outcome, outcomes } from './errors.ts';

/** Distinct event_type label values per endpoint; further types are counted as "other". */
const maxEventTypeLabels = 200;

type EndpointLabels = { namespace: string; endpoint: string; provider: string };

/** The receiver's metrics, registered on the given registry; every series of a known endpoint starts at zero. */
export class ReceiverMetrics {
  readonly requests: Counter<'namespace' | 'endpoint' | 'provider' | 'outcome'>;
  readonly events: Counter<'namespace' | 'endpoint' | 'provider' | 'event_type'>;
  readonly contentTypeMismatches: Counter<'namespace' | 'endpoint' | 'provider'>;
  readonly providerRetries: Counter<'namespace' | 'endpoint' | 'provider'>;
  readonly requestDuration: Histogram<'namespace' | 'endpoint' | 'provider'>;
  readonly publishDuration: Histogram<'namespace' | 'endpoint' | 'provider'>;
  readonly natsConnected: Gauge;
  private readonly bound = new Map<string, EndpointMetrics>();

  constructor(registry: Registry) {
    const registers = [registry];
    const endpointLabels = ['namespace', 'endpoint', 'provider'] as const;
    this.requests = new Counter({
      name: 'hookyard_receiver_requests_total',
      help: 'Webhook requests by outcome (duplicate: a resend of an event already stored).',
      labelNames: [...endpointLabels, 'outcome'],
      registers,
    });
    this.events = new Counter({
      name: 'hookyard_receiver_events_total',
      help: 'Events stored in JetStream, by event type (duplicates not included).',
      labelNames: [...endpointLabels, 'event_type'],
      registers,
    });
    this.contentTypeMismatches = new Counter({
      name: 'hookyard_receiver_content_type_mismatches_total',
      help: 'Requests whose Content-Type was missing or unknown, parsed by fallback or by sniffing the body.',
      labelNames: endpointLabels,
      registers,
    });
    this.providerRetries = new Counter({
      name: 'hookyard_receiver_provider_retries_total',
      help: 'Requests the provider marked as a retry (such as any X-Proign-Retry-Count).',
      labelNames: endpointLabels,
      registers,
    });
    const buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
    this.requestDuration = new Histogram({
      name: 'hookyard_receiver_request_duration_seconds',
      help: 'Time from request to response.',
      labelNames: endpointLabels,
      buckets,
      registers,
    });
    this.publishDuration = new Histogram({
      name: 'hookyard_receiver_publish_duration_seconds',
      help: 'Time from publish to JetStream PubAck.',
      labelNames: endpointLabels,
      buckets,
      registers,
    });
    this.natsConnected = new Gauge({
      name: 'hookyard_receiver_nats_connected',
      help: '1 while the receiver is connected to NATS.',
      registers,
    });
  }

  /**
   * The series of one endpoint, bound once (label lookups cost on every request otherwise) and registered at zero,
   * so rates and alerts see the endpoint before its first request.
   */
  forEndpoint(labels: EndpointLabels): EndpointMetrics {
    const key = `${labels.namespace}/${labels.endpoint}/${labels.provider}`;
    let bound = this.bound.get(key);
    if (!bound) {
      const { namespace, endpoint, provider } = labels;
      const seenTypes = new Set<string>();
      const byOutcome = new Map(outcomes.map((o) => [o, this.requests.labels(namespace, endpoint, provider, o)]));
      for (const child of byOutcome.values()) child.inc(0);
      const mismatches = this.contentTypeMismatches.labels(namespace, endpoint, provider);
      const retries = this.providerRetries.labels(namespace, endpoint, provider);
      const requestDuration = this.requestDuration.labels(namespace, endpoint, provider);
      const publishDuration = this.publishDuration.labels(namespace, endpoint, provider);
      mismatches.inc(0);
      retries.inc(0);
      this.requestDuration.zero(labels);
      this.publishDuration.zero(labels);
      bound = {
        count: (outcome) => byOutcome.get(outcome)?.inc(),
        contentTypeMismatch: () => mismatches.inc(),
        providerRetry: () => retries.inc(),
        // Event types come from verified requests, but a provider may still invent many: cap the label values.
        event: (eventType) => {
          if (!seenTypes.has(eventType) && seenTypes.size >= maxEventTypeLabels) eventType = 'other';
          seenTypes.add(eventType);
          this.events.labels(namespace, endpoint, provider, eventType).inc();
        },
        requestSeconds: (s) => requestDuration.observe(s),
        publishSeconds: (s) => publishDuration.observe(s),
      };
      this.bound.set(key, bound);
    }
    return bound;
  }
}

export interface EndpointMetrics {
  count(outcome: Outcome): void;
  contentTypeMismatch(): void;
  providerRetry(): void;
  event(eventType: string): void;
  requestSeconds(seconds: number): void;
  publishSeconds(seconds: number): void;
}
