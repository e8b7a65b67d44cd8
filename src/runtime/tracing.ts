// Traces (OpenTelemetry), off unless an OTLP endpoint is given. On, the SDK is imported (./otel.ts, a chunk of its
// own in the bundle) and each webhook request and each delivery attempt is a span; off, nothing of the SDK is
// loaded and the hot paths pay one check of an undefined tracer.
import type { Logger } from './log.ts';

/** The values of OTEL_TRACES_SAMPLER that the SDK is built with (./otel.ts). */
export const samplers = [
  'parentbased_always_on',
  'parentbased_always_off',
  'parentbased_traceidratio',
  'always_on',
  'always_off',
  'traceidratio',
] as const;

/** A span's W3C trace context, as the `traceparent` and `tracestate` headers carry it. */
export interface TraceContext {
  traceparent: string;
  tracestate?: string;
}

export type SpanAttributes = Record<string, string | number | boolean | undefined>;

export interface TraceSpan {
  /** This span as the parent of the next hop. */
  readonly context: TraceContext;
  set(attributes: SpanAttributes): void;
  /** Ends the span; with `error`, its status is an error with that description. */
  end(error?: string): void;
}

export interface Tracer {
  /**
   * Starts a span: `server` for a request received, `client` for one sent. It is the child of `parent` when that
   * holds a valid traceparent, else the root of a new trace.
   */
  start(
    kind: 'server' | 'client',
    name: string,
    parent: Partial<TraceContext> | undefined,
    attributes: SpanAttributes,
  ): TraceSpan;
  /** Exports the spans still buffered, then stops. */
  shutdown(): Promise<void>;
}

export interface TracingOptions {
  /** OTLP/HTTP endpoint such as http://otel-collector:4318 (spans go to <endpoint>/v1/traces); none: no traces. */
  endpoint?: string;
  /** service.name, unless OTEL_SERVICE_NAME names another. */
  serviceName: string;
  log: Logger;
  env?: NodeJS.ProcessEnv;
}

/** The tracer, or undefined when tracing is off (no endpoint, or OTEL_SDK_DISABLED=true). */
export async function startTracing(options: TracingOptions): Promise<Tracer | undefined> {
  const env = options.env ?? process.env;
  if (!options.endpoint || env.OTEL_SDK_DISABLED === 'true') return undefined;
  const { otlpTracer } = await import('./otel.ts');
  return otlpTracer({ ...options, endpoint: options.endpoint, env });
}

/**
 * The attributes of Hookyard's spans: OpenTelemetry's stable HTTP conventions (written out here rather than
 * imported from @opentelemetry/semantic-conventions, so that tracing off loads no OpenTelemetry module), and
 * Hookyard's own.
 */
export const spanAttributes = {
  httpMethod: 'http.request.method',
  httpStatus: 'http.response.status_code',
  httpRoute: 'http.route',
  urlPath: 'url.path',
  serverAddress: 'server.address',
  serverPort: 'server.port',
  errorType: 'error.type',
  endpoint: 'hookyard.endpoint',
  subscription: 'hookyard.subscription',
  eventType: 'hookyard.event.type',
  eventId: 'hookyard.event.id',
  attempt: 'hookyard.attempt',
  outcome: 'hookyard.outcome',
  replay: 'hookyard.replay',
} as const;
