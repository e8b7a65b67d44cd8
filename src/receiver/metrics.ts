import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { type Outcome, outcomes } from './errors.ts';

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
      help: 'Requests the provider marked as a retry (such as X-Proign-Retry-Count above 0).',
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

  /** Registers every series of one endpoint at zero, so rates and alerts see it before its first request. */
  registerEndpoint(labels: EndpointLabels): void {
    for (const outcome of outcomes) this.requests.inc({ ...labels, outcome }, 0);
    this.contentTypeMismatches.inc(labels, 0);
    this.providerRetries.inc(labels, 0);
    this.requestDuration.zero(labels);
    this.publishDuration.zero(labels);
  }

  count(labels: EndpointLabels, outcome: Outcome): void {
    this.requests.inc({ ...labels, outcome });
  }
}
