// The OpenTelemetry SDK behind src/runtime/tracing.ts, imported only when tracing is on: a tracer provider with a
// batch span processor and the OTLP/HTTP exporter, configured by OpenTelemetry's own environment variables
// (OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, OTEL_BSP_*, OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES). No global provider, propagator or context manager is registered: each span's parent
// is passed in, so nothing else in the process is traced by accident.
import { type Attributes, DiagLogLevel, diag, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  type Sampler,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from '@opentelemetry/sdk-trace';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import { buildInfo } from './build.ts';
import { type SpanAttributes, samplers, type TraceContext, type Tracer, type TracingOptions } from './tracing.ts';

/** The sampler OTEL_TRACES_SAMPLER names (default parentbased_always_on), with OTEL_TRACES_SAMPLER_ARG as ratio. */
export function samplerFromEnv(env: NodeJS.ProcessEnv): Sampler {
  const name = env.OTEL_TRACES_SAMPLER || 'parentbased_always_on';
  const arg = env.OTEL_TRACES_SAMPLER_ARG;
  const ratio = arg === undefined || arg === '' ? 1 : Number(arg);
  if (!(ratio >= 0 && ratio <= 1)) throw new Error(`OTEL_TRACES_SAMPLER_ARG=${arg} is not a ratio between 0 and 1`);
  switch (name) {
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return new TraceIdRatioBasedSampler(ratio);
    case 'parentbased_always_on':
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) });
    default:
      throw new Error(`OTEL_TRACES_SAMPLER=${name} is not one of ${samplers.join(', ')}`);
  }
}

/** Where OTLP/HTTP takes spans: the signal's path under the endpoint, as OTEL_EXPORTER_OTLP_ENDPOINT means it. */
export const tracesUrl = (endpoint: string) => `${endpoint.replace(/\/+$/, '')}/v1/traces`;

const positive = (value: string | undefined) => (value && Number(value) > 0 ? Number(value) : undefined);

const propagator = new W3CTraceContextPropagator();
const carrierGetter = {
  get: (carrier: Partial<TraceContext>, key: string) => carrier[key as keyof TraceContext],
  keys: (carrier: Partial<TraceContext>) => Object.keys(carrier),
};
const carrierSetter = {
  set: (carrier: Record<string, string>, key: string, value: string) => {
    carrier[key] = value;
  },
};

function attributes(values: SpanAttributes): Attributes {
  const out: Attributes = {};
  for (const [key, value] of Object.entries(values)) if (value !== undefined) out[key] = value;
  return out;
}

export function otlpTracer(options: TracingOptions & { endpoint: string; env: NodeJS.ProcessEnv }): Tracer {
  const { env, log } = options;
  // The SDK reports failed exports through its diagnostic logger, silent unless one is set.
  diag.setLogger(
    {
      error: (message) => log.warn({ message }, 'trace export failed'),
      warn: (message) => log.warn({ message }, 'tracing'),
      info: () => {},
      debug: () => {},
      verbose: () => {},
    },
    DiagLogLevel.WARN,
  );
  const resource = resourceFromAttributes({
    [ATTR_SERVICE_NAME]: options.serviceName,
    [ATTR_SERVICE_VERSION]: buildInfo().version,
  }).merge(detectResources({ detectors: [envDetector] }));
  const processor = new BatchSpanProcessor({
    exporter: new OTLPTraceExporter({ url: tracesUrl(options.endpoint) }),
    scheduledDelayMillis: positive(env.OTEL_BSP_SCHEDULE_DELAY),
    maxQueueSize: positive(env.OTEL_BSP_MAX_QUEUE_SIZE),
    maxExportBatchSize: positive(env.OTEL_BSP_MAX_EXPORT_BATCH_SIZE),
    exportTimeoutMillis: positive(env.OTEL_BSP_EXPORT_TIMEOUT),
  });
  const provider = new TracerProvider({ resource, sampler: samplerFromEnv(env), spanProcessors: [processor] });
  const tracer = provider.getTracer('hookyard', buildInfo().version);
  log.info({ endpoint: tracesUrl(options.endpoint) }, 'exporting traces');
  return {
    start(kind, name, parent, values) {
      const parentContext = parent?.traceparent
        ? propagator.extract(ROOT_CONTEXT, parent, carrierGetter)
        : ROOT_CONTEXT;
      const spanKind = kind === 'server' ? SpanKind.SERVER : SpanKind.CLIENT;
      const span = tracer.startSpan(name, { kind: spanKind, attributes: attributes(values) }, parentContext);
      const carrier: Record<string, string> = {};
      propagator.inject(trace.setSpan(ROOT_CONTEXT, span), carrier, carrierSetter);
      return {
        context: carrier as unknown as TraceContext,
        set: (more) => span.setAttributes(attributes(more)),
        end(error) {
          if (error !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: error });
          span.end();
        },
      };
    },
    shutdown: () => provider.shutdown(),
  };
}
