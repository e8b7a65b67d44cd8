// hookyard receiver: serves one ProviderEndpoint from a mounted config file and mounted Secrets, reloading both
// when they change without dropping requests.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { Registry } from 'prom-client';
import { parse as parseYAML } from 'yaml';
import { checkResource } from '../api/check.ts';
import { type ProviderEndpoint, providerEndpoint } from '../api/provider-endpoint.ts';
import { receiverCommand } from '../commands.ts';
import { endpointStream } from '../jetstream/layout.ts';
import { type JetStreamPublisher, jetstreamPublisher } from '../jetstream/publisher.ts';
import { parseFlags } from '../runtime/flags.ts';
import { type Logger, log as rootLog } from '../runtime/log.ts';
import { connectNats, type Nats } from '../runtime/nats.ts';
import { registerProcessMetrics } from '../runtime/process-metrics.ts';
import { directorySecrets, type SecretStore } from '../runtime/secrets.ts';
import { startTracing } from '../runtime/tracing.ts';
import { compileEndpoint } from './endpoint.ts';
import { ReceiverMetrics } from './metrics.ts';
import { jetStreamReadiness, type Readiness } from './readiness.ts';
import { type EndpointState, type ReceiverHandler, receiverHandler, refuseClientError } from './server.ts';

/**
 * Reads and checks the mounted ProviderEndpoint: its shape, with its defaults applied. Its CEL rules are left to
 * the API server, which checked this resource with the same rules before the operator copied it here; loading
 * CEL (or the WebhookSubscription schema, with its filters) would cost the receiver about 8 MiB of idle memory.
 */
export function loadEndpoint(file: string): ProviderEndpoint {
  const manifest = parseYAML(readFileSync(file, 'utf8')) as { kind?: unknown } | null;
  if (manifest?.kind !== 'ProviderEndpoint')
    throw new Error(`${file} holds a ${manifest?.kind}, not a ProviderEndpoint`);
  return checkResource(providerEndpoint, 'ProviderEndpoint', manifest, { rules: false });
}

/** The state of one endpoint from its resource and secrets: compiled, or why it cannot serve. */
export function endpointState(
  resource: ProviderEndpoint,
  secrets: SecretStore,
  metrics: ReceiverMetrics,
): EndpointState {
  const labels = {
    namespace: resource.metadata.namespace ?? 'default',
    endpoint: resource.metadata.name,
    provider: resource.spec.provider,
  };
  const bound = metrics.forEndpoint(labels);
  try {
    return { metrics: bound, endpoint: compileEndpoint(resource, secrets) };
  } catch (err) {
    return { metrics: bound, error: (err as Error).message };
  }
}

export interface RunningServer {
  server: Server;
  port: number;
  /** Stops accepting, finishes in-flight requests, then resolves. */
  close(): Promise<void>;
}

/**
 * Serves the receiver. Webhook senders give up on a request after 10-30 s (PROIGN: 30 s), so a request whose
 * headers take over 20 s, or that is not complete after 60 s, is refused with 408 rather than held for minutes.
 * Idle keep-alive connections stay open 620 s, above the idle timeouts of common load balancers (GCLB: 600 s), so
 * the balancer closes them first and never sends a request on a connection the receiver is closing.
 */
export async function listen(handler: ReceiverHandler, port: number, host = '0.0.0.0'): Promise<RunningServer> {
  // Timeouts are checked every 5 s (Node's default is 30 s), so the 20 s header timeout holds within 25 s.
  const server = createServer({ connectionsCheckingInterval: 5_000 }, handler).listen(port, host);
  server.headersTimeout = 20_000;
  server.requestTimeout = 60_000;
  server.keepAliveTimeout = 620_000;
  server.on('clientError', refuseClientError);
  await new Promise<void>((ok, fail) => server.once('listening', ok).once('error', fail));
  return {
    server,
    port: (server.address() as { port: number }).port,
    close: () =>
      new Promise<void>((ok) => {
        // Keep-alive connections become idle as their last responses go out: close them as they do, or close()
        // would wait for the keep-alive timeout.
        const sweep = setInterval(() => server.closeIdleConnections(), 50);
        server.close(() => {
          clearInterval(sweep);
          ok();
        });
        server.closeIdleConnections();
      }),
  };
}

export async function main(args: string[]): Promise<void> {
  const flags = parseFlags(receiverCommand, args);
  if (!flags) return;
  const { values } = flags;
  const configFile = values.config;
  const secretsDir = values['secrets-dir'];
  let resource = loadEndpoint(configFile);
  const log: Logger = rootLog.child({ endpoint: `${resource.metadata.namespace}/${resource.metadata.name}` });
  const registry = new Registry();
  registerProcessMetrics(registry);
  const metrics = new ReceiverMetrics(registry);
  const tracer = await startTracing({ endpoint: values['otlp-endpoint'], serviceName: 'hookyard-receiver', log });
  const configHash = () => createHash('sha256').update(readFileSync(configFile)).digest('hex');
  const initialSecrets = directorySecrets(secretsDir);
  let last = { config: configHash(), secrets: initialSecrets.fingerprint };
  let endpoints = stateMap(resource, endpointState(resource, initialSecrets, metrics));
  logState(log, endpoints);

  // Webhooks get 503 and /readyz says not ready until NATS connects; /healthz and /metrics answer at once.
  let nats: Nats | undefined;
  let publisher: JetStreamPublisher | undefined;
  let jetStream: Readiness | undefined;
  let stopping = false;
  const natsReady = () => {
    const up = nats?.connected() ?? false;
    metrics.natsConnected.set(up ? 1 : 0);
    return up;
  };
  const running = await listen(
    receiverHandler({
      endpoints: () => endpoints,
      // Read at each publish, which waits for natsReady(): set by then.
      get publisher() {
        return publisher as JetStreamPublisher;
      },
      maxPayload: () => nats?.nc.info?.max_payload,
      natsReady,
      publishFailed: () => jetStream?.failed(),
      log,
      registry,
      tracer,
      // Ready when a publish would succeed, and not while shutting down, so the Service stops routing here;
      // in-flight requests still publish.
      ready: () => natsReady() && (jetStream?.ready() ?? false) && !stopping,
    }),
    values.port,
  );
  log.info({ port: running.port }, 'receiver listening');
  nats = await connectNats(
    {
      url: values['nats-url'],
      credsFile: values['nats-creds'],
      caFile: values['nats-ca'],
      name: 'hookyard-receiver',
    },
    log,
  );
  publisher = jetstreamPublisher(nats.nc);
  jetStream = jetStreamReadiness(
    nats,
    () => [endpointStream(resource.metadata.namespace ?? 'default', resource.metadata.name)],
    log,
  );

  // Kubernetes swaps mounted ConfigMaps and Secrets in place: poll, and swap the compiled endpoint atomically.
  const reload = setInterval(() => {
    try {
      const secrets = directorySecrets(secretsDir);
      const now = { config: configHash(), secrets: secrets.fingerprint };
      if (now.config === last.config && now.secrets === last.secrets) return;
      const configOnly = now.secrets === last.secrets;
      last = now;
      const next = loadEndpoint(configFile);
      const state = endpointState(next, secrets, metrics);
      // A pod's Secrets are fixed when it starts: a new config that needs one this pod lacks comes with a rollout
      // that replaces the pod, and until then the config it has keeps serving rather than answering 503.
      if (configOnly && 'error' in state && ![...endpoints.values()].some((s) => 'error' in s)) {
        log.warn({ reason: state.error }, 'new configuration cannot serve in this pod; keeping the previous one');
        return;
      }
      resource = next;
      endpoints = stateMap(resource, state);
      log.info('configuration reloaded');
      logState(log, endpoints);
    } catch (err) {
      log.error({ err: (err as Error).message }, 'reload failed; keeping the previous configuration');
    }
  }, values['reload-interval']);

  await new Promise<void>((ok) => {
    process.once('SIGTERM', ok);
    process.once('SIGINT', ok);
  });
  log.info('shutting down: finishing in-flight requests');
  stopping = true;
  clearInterval(reload);
  jetStream.stop();
  await running.close();
  await nats.nc.drain();
  await tracer?.shutdown();
}

function stateMap(resource: ProviderEndpoint, state: EndpointState): Map<string, EndpointState> {
  return new Map([[`${resource.metadata.namespace ?? 'default'}/${resource.metadata.name}`, state]]);
}

function logState(log: Logger, endpoints: Map<string, EndpointState>): void {
  for (const [key, state] of endpoints) {
    if ('error' in state) log.error({ key, reason: state.error }, 'endpoint cannot serve');
  }
}
