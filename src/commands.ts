// Every command of the hookyard CLI and its flags, as data: src/cli.ts lists and dispatches them, each command's
// main() parses its arguments with its own table, and `--help` is written from it. Nothing here loads a command.
import type { Command } from './runtime/flags.ts';

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
