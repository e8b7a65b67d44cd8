// Every command of the hookyard CLI and its flags, as data: src/cli.ts lists and dispatches them, each command's
// main() parses its arguments with its own table, and `--help` is written from it. Nothing here loads a command.
import type { Command } from './runtime/flags.ts';
import { samplers } from './runtime/tracing.ts';

const nats = {
  'nats-url': {
    type: 'string',
    value: 'URL',
    default: 'nats://127.0.0.1:4222',
    env: 'NATS_URL',
    description: 'NATS with JetStream; several URLs separated by commas, tls:// for TLS',
  },
  'nats-creds': {
    type: 'string',
    value: 'FILE',
    env: 'NATS_CREDS',
    description: 'NATS credentials file (JWT and seed)',
  },
  'nats-ca': { type: 'string', value: 'FILE', env: 'NATS_CA', description: 'CA bundle of the NATS server certificate' },
} as const;

/** Off unless given; then OpenTelemetry's own variables (OTEL_TRACES_SAMPLER, OTEL_SERVICE_NAME, ...) apply. */
const tracing = {
  'otlp-endpoint': {
    type: 'string',
    value: 'URL',
    env: 'OTEL_EXPORTER_OTLP_ENDPOINT',
    description:
      'export traces over OTLP/HTTP to URL/v1/traces, such as http://otel-collector:4318 (default: no traces)',
  },
} as const;

const secretsDir = {
  'secrets-dir': {
    type: 'string',
    value: 'DIR',
    default: '/etc/hookyard/secrets',
    description: 'mounted Secrets, one folder per Secret with a file per key',
  },
} as const;

export const receiverCommand = {
  name: 'receiver',
  summary: 'Serves one ProviderEndpoint: verifies each webhook and stores it in JetStream before answering 2xx.',
  flags: {
    config: {
      type: 'string',
      value: 'FILE',
      default: '/etc/hookyard/config/endpoint.yaml',
      description: 'the ProviderEndpoint to serve, as YAML',
    },
    ...secretsDir,
    ...nats,
    ...tracing,
    port: { type: 'port', default: '8080', description: 'webhooks, /healthz, /readyz and /metrics' },
    'reload-interval': {
      type: 'integer',
      value: 'MS',
      min: 100,
      default: '2000',
      description: 'milliseconds between checks of the config file and Secrets for changes',
    },
  },
} as const satisfies Command;

export const dispatcherCommand = {
  name: 'dispatcher',
  summary: "Delivers one WebhookSubscription's events to its target, with retries and dead letters.",
  flags: {
    config: {
      type: 'string',
      value: 'FILE',
      required: true,
      description: 'the WebhookSubscription and its sources, as the operator renders them',
    },
    ...secretsDir,
    'config-maps-dir': {
      type: 'string',
      value: 'DIR',
      default: '/etc/hookyard/configmaps',
      description: 'mounted ConfigMaps (a CA bundle), one folder per ConfigMap with a file per key',
    },
    ...nats,
    ...tracing,
    'metrics-port': { type: 'port', default: '9090', description: '/metrics, /healthz and /readyz' },
    'replay-dead-letters': {
      type: 'boolean',
      description: "deliver the subscription's dead letters once more, then exit (non-zero if any failed)",
    },
  },
} as const satisfies Command;

export const operatorCommand = {
  name: 'operator',
  summary: 'Reconciles ProviderEndpoints and WebhookSubscriptions into streams, consumers and workloads.',
  flags: {
    ...nats,
    'workload-nats-secret': {
      type: 'string',
      value: 'NAME',
      description: "Secret in each resource's namespace (key creds, and ca.crt with --nats-ca) for workloads' NATS",
    },
    namespaces: { type: 'string', value: 'A,B', description: 'watch only these namespaces (default: all)' },
    image: {
      type: 'string',
      value: 'IMAGE',
      required: true,
      env: 'HOOKYARD_IMAGE',
      description: "receivers' and dispatchers' image",
    },
    'ingress-class': { type: 'string', value: 'NAME', description: 'ingress class of endpoints that name none' },
    'workload-otlp-endpoint': {
      type: 'string',
      value: 'URL',
      description: "receivers' and dispatchers' OTLP/HTTP endpoint for traces (default: no traces)",
    },
    'workload-traces-sampler': {
      type: 'string',
      value: 'NAME',
      choices: samplers,
      default: 'parentbased_always_on',
      description: "with --workload-otlp-endpoint: the workloads' OTEL_TRACES_SAMPLER",
    },
    'workload-traces-sampler-arg': {
      type: 'string',
      value: 'RATIO',
      description: 'with a traceidratio sampler: the share of traces kept, 0 to 1 (OTEL_TRACES_SAMPLER_ARG)',
    },
    'ingress-host': { type: 'string', value: 'HOST', description: 'ingress host of endpoints that name none' },
    'metrics-port': { type: 'port', default: '9090', description: '/metrics, /healthz, /readyz' },
    'webhook-port': { type: 'port', default: '9443', description: 'HTTPS admission webhook, POST /validate' },
    'webhook-cert-dir': {
      type: 'string',
      value: 'DIR',
      description: 'tls.crt and tls.key of the admission webhook; without it no webhook is served',
    },
    'webhook-cert-reload': { type: 'duration', default: '30s', description: 'how often the certificate is read again' },
    'leader-election': {
      type: 'boolean',
      default: true,
      description: 'reconcile without a Lease (one replica only)',
    },
    'lease-name': { type: 'string', value: 'NAME', default: 'hookyard-operator', description: 'the leader Lease' },
    'lease-namespace': {
      type: 'string',
      value: 'NS',
      default: 'default',
      env: 'POD_NAMESPACE',
      description: "the leader Lease's namespace",
    },
    'lease-duration': { type: 'duration', default: '15s', description: 'how long a Lease holds without renewal' },
    'renew-deadline': { type: 'duration', default: '10s', description: 'how long the leader tries to renew' },
    'retry-period': { type: 'duration', default: '2s', description: 'how often a candidate tries the Lease' },
    'status-interval': {
      type: 'duration',
      default: '30s',
      description: 'how often subscription counters are read from JetStream',
    },
    'status-settle': {
      type: 'duration',
      default: '2s',
      description: "how long a new resource's first status waits for its pods, to say Ready in one write; 0s: no wait",
    },
    'resync-period': {
      type: 'duration',
      default: '10m',
      description: 'how often every resource is reconciled and every cache listed again',
    },
    workers: { type: 'integer', min: 1, default: '4', description: 'reconciles at once' },
  },
} as const satisfies Command;

export const devCommand = {
  name: 'dev',
  summary:
    'Runs the ProviderEndpoints and WebhookSubscriptions of YAML files in one process, no cluster; reloads on change.',
  flags: {
    file: {
      type: 'string',
      short: 'f',
      value: 'PATH',
      multiple: true,
      required: true,
      description: 'a YAML file or a folder of them (ProviderEndpoints, WebhookSubscriptions, Secrets)',
    },
    'nats-url': {
      type: 'string',
      value: 'URL',
      description: 'NATS with JetStream; without it a local nats-server is started with a temporary store',
    },
    port: { type: 'port', default: '8080', description: 'every endpoint under /hooks/<namespace>/<endpoint>' },
    host: { type: 'string', value: 'ADDRESS', default: '127.0.0.1', description: 'address to listen on' },
    sink: {
      type: 'string',
      value: 'URL',
      description: 'send every delivery to URL/<subscription> instead of its target',
    },
    'log-format': {
      type: 'string',
      value: 'FORMAT',
      choices: ['text', 'json'],
      default: 'text',
      description: 'text: one readable line per request and delivery; json: the structured logs',
    },
    ...tracing,
  },
  notes: 'example: hookyard dev -f examples/ --sink http://127.0.0.1:9000',
} as const satisfies Command;

export const sendCommand = {
  name: 'send',
  summary: "Sends a provider's documented sample webhooks to an endpoint, signed the way the provider signs.",
  usage: '<provider> --url URL | --list',
  flags: {
    url: {
      type: 'string',
      value: 'URL',
      description: "the endpoint's URL, such as http://127.0.0.1:8080/hooks/default/proign",
    },
    secret: { type: 'string', value: 'SECRET', description: 'the webhook secret to sign with' },
    'secret-file': { type: 'string', value: 'FILE', description: 'read the secret from a file' },
    sample: { type: 'string', value: 'NAME', description: 'only the samples whose name contains NAME' },
    header: { type: 'string', short: 'H', value: "'NAME: VALUE'", multiple: true, description: 'an extra header' },
    list: { type: 'boolean', description: 'list the providers and their samples, send nothing' },
  },
  notes:
    'example: hookyard send proign --url http://127.0.0.1:8080/hooks/default/proign --secret replace-with-your-webhook-secret',
} as const satisfies Command;

export const versionCommand = {
  name: 'version',
  summary: 'Prints the version, the git commit it was built from, and the Node version.',
  flags: {},
} as const satisfies Command;

/** What the history commands share: where the cluster and the operator's history API are. */
const historyFlags = {
  namespace: {
    type: 'string',
    short: 'n',
    value: 'NAMESPACE',
    description: "the resource's namespace (default: the kubeconfig context's, else default)",
  },
  context: { type: 'string', value: 'NAME', description: 'the kubeconfig context (default: the current one)' },
  'operator-service': {
    type: 'string',
    value: 'NAMESPACE/NAME:PORT',
    default: 'hookyard-system/hookyard-webhook:443',
    env: 'HOOKYARD_OPERATOR_SERVICE',
    description: "the operator's webhook Service, which serves the history API, reached through the API server",
  },
  operator: {
    type: 'string',
    value: 'URL',
    env: 'HOOKYARD_OPERATOR_URL',
    description: "the history API's URL, to reach it directly (a port-forward) instead of through the API server",
  },
  'operator-ca': {
    type: 'string',
    value: 'FILE',
    env: 'HOOKYARD_OPERATOR_CA',
    description: "with --operator: the CA of the operator's certificate",
  },
  output: { type: 'string', short: 'o', choices: ['table', 'json'], default: 'table', description: 'table or json' },
  limit: { type: 'integer', value: 'N', min: 1, default: '1000', description: 'at most N items' },
} as const;

const replayFlags = {
  'dry-run': { type: 'boolean', description: 'only list what would be sent; send nothing' },
  id: { type: 'string', value: 'ID', description: 'the request id (default: a new one); a request runs once per id' },
  wait: { type: 'duration', value: 'DURATION', default: '2m', description: 'how long to follow the replay' },
} as const;

const since = {
  since: {
    type: 'string',
    value: 'TIME',
    description: 'only from this RFC 3339 time on, such as 2026-12-01T10:00:00Z',
  },
} as const;

export const eventsCommand = {
  name: 'events',
  summary: 'Lists the events a ProviderEndpoint received: time, type, id, size, and resends answered as duplicates.',
  usage: '<endpoint>',
  flags: {
    ...historyFlags,
    type: { type: 'string', value: 'TYPE', description: 'only events of this type' },
    id: { type: 'string', value: 'ID', description: 'only the event with this id' },
    ...since,
    until: { type: 'string', value: 'TIME', description: 'only before this RFC 3339 time' },
  },
  notes: 'example: kubectl hookyard events proign -n shop --type order.shipped --since 2026-12-01T10:00:00Z',
} as const satisfies Command;

export const eventCommand = {
  name: 'event',
  summary: 'Shows one stored event, headers and body exactly as stored, by its sequence or its id.',
  usage: '<endpoint> <sequence | id>',
  flags: historyFlags,
  notes: 'example: kubectl hookyard event proign order.shipped:evt_abc123 -n shop',
} as const satisfies Command;

export const attemptsCommand = {
  name: 'attempts',
  summary: "Lists a WebhookSubscription's delivery attempts and what followed each, all or one event's.",
  usage: '<subscription>',
  flags: {
    ...historyFlags,
    event: { type: 'string', value: 'ID', description: "only this event's attempts" },
    ...since,
  },
  notes: 'example: kubectl hookyard attempts proign-shipments -n shop --event order.shipped:evt_abc123',
} as const satisfies Command;

export const replayCommand = {
  name: 'replay',
  summary: "Sends events again through a WebhookSubscription's normal path (filter, format, signing, retries).",
  usage: '<subscription> --dead-letters | --event ID... | --since TIME [--until TIME]',
  flags: {
    ...historyFlags,
    ...replayFlags,
    'dead-letters': { type: 'boolean', description: 'every dead letter of the subscription' },
    event: { type: 'string', value: 'ID', multiple: true, description: 'this event (repeat for more)' },
    ...since,
    until: { type: 'string', value: 'TIME', description: 'with --since: only before this time' },
  },
  notes:
    'The request is the annotation hookyard.io/replay on the subscription (RBAC: patch webhooksubscriptions); the operator carries it out.\nexample: kubectl hookyard replay proign-shipments -n shop --dead-letters --dry-run',
} as const satisfies Command;

export const dlqCommand = {
  name: 'dlq',
  summary: "Lists a WebhookSubscription's dead letters, shows one as stored, replays them all or purges them all.",
  usage: 'list <subscription> | show <subscription> <sequence | id> | replay <subscription> | purge <subscription>',
  flags: { ...historyFlags, ...replayFlags },
  notes:
    'replay and purge are requests on the subscription (RBAC: patch webhooksubscriptions), which the operator carries out; --dry-run lists what they would take.\nexample: kubectl hookyard dlq show proign-shipments order.shipped:evt_abc123 -n shop',
} as const satisfies Command;

export const testCommand = {
  name: 'test',
  summary:
    'Sends a test event through a WebhookSubscription (format, signing, retries) and shows what the target answered.',
  usage: '<subscription>',
  flags: {
    ...historyFlags,
    id: replayFlags.id,
    wait: replayFlags.wait,
    type: { type: 'string', value: 'TYPE', description: 'the event type (default: hookyard.test)' },
    body: { type: 'string', value: 'JSON', description: 'the JSON body (default: a small test object)' },
  },
  notes:
    'The target sees Hookyard-Test: true and the event id hookyard-test:<request id>. The request is the annotation hookyard.io/replay (RBAC: patch webhooksubscriptions).\nexample: kubectl hookyard test proign-shipments -n shop --type order.shipped --body \'{"order":{"id":"o-1"}}\'',
} as const satisfies Command;
