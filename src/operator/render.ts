// The objects the operator wants for each resource, as pure functions of the resource: what the reconcilers
// apply with server-side apply. A receiver or dispatcher pod runs `hookyard receiver|dispatcher` with its
// rendered config mounted from a ConfigMap and each referenced Secret key mounted at <dir>/<secret>/<key>.
import { createHash } from 'node:crypto';
import type * as k8s from '@kubernetes/client-node';
import { stringify } from 'yaml';
import type { ConfigMapKeyRef, SecretKeyRef } from '../api/common.ts';
import { apiVersion } from '../api/common.ts';
import { ownedNamePrefix } from '../api/names.ts';
import type { ProviderEndpoint } from '../api/provider-endpoint.ts';
import type { Source } from '../api/sources.ts';
import type { WebhookSubscription } from '../api/webhook-subscription.ts';

export interface RenderOptions {
  /** The image of receivers and dispatchers: the operator's own by default. */
  image: string;
  natsUrl: string;
  defaultIngressClass?: string;
  defaultHost?: string;
  /** A Secret in the resource's namespace with the workloads' NATS credentials (key `creds`). */
  natsSecret?: string;
  /** Whether NATS uses TLS with a private CA: the natsSecret's `ca.crt` is mounted too. */
  natsCa?: boolean;
  /** A digest of the referenced Secrets' data: a change rolls the pods. */
  secretsChecksum?: string;
  /** Where receivers and dispatchers export traces; none: they trace nothing. */
  tracing?: WorkloadTracing;
}

export interface WorkloadTracing {
  /** The OTLP/HTTP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT). */
  endpoint: string;
  /** OTEL_TRACES_SAMPLER */
  sampler: string;
  /** OTEL_TRACES_SAMPLER_ARG */
  samplerArg?: string;
}

/** OpenTelemetry's own variables, which the SDK and every collector understand; nothing when tracing is off. */
function tracingEnv(tracing: WorkloadTracing | undefined, namespace: string, deployment: string): k8s.V1EnvVar[] {
  if (!tracing) return [];
  return [
    { name: 'OTEL_EXPORTER_OTLP_ENDPOINT', value: tracing.endpoint },
    { name: 'OTEL_TRACES_SAMPLER', value: tracing.sampler },
    ...(tracing.samplerArg ? [{ name: 'OTEL_TRACES_SAMPLER_ARG', value: tracing.samplerArg }] : []),
    { name: 'OTEL_RESOURCE_ATTRIBUTES', value: `k8s.namespace.name=${namespace},k8s.deployment.name=${deployment}` },
  ];
}

const configDir = '/etc/hookyard/config';
const secretsDir = '/etc/hookyard/secrets';
const configMapsDir = '/etc/hookyard/configmaps';
const natsDir = '/etc/hookyard/nats';
const httpPort = 8080;
const metricsPort = 9090;

type Owner = ProviderEndpoint | WebhookSubscription;

// The API limits resource names so that these fit a DNS label (src/api/names.ts).
export const receiverName = (endpoint: string) => `${ownedNamePrefix.ProviderEndpoint}${endpoint}`;
export const dispatcherName = (subscription: string) => `${ownedNamePrefix.WebhookSubscription}${subscription}`;

function labels(component: 'receiver' | 'dispatcher', owner: Owner): Record<string, string> {
  return {
    'app.kubernetes.io/name': 'hookyard',
    'app.kubernetes.io/component': component,
    'app.kubernetes.io/instance': owner.metadata.name,
    'app.kubernetes.io/managed-by': 'hookyard-operator',
  };
}

function meta(name: string, owner: Owner, objectLabels: Record<string, string>): k8s.V1ObjectMeta {
  return {
    name,
    namespace: owner.metadata.namespace,
    labels: objectLabels,
    ownerReferences: [
      {
        apiVersion,
        kind: owner.kind,
        name: owner.metadata.name,
        uid: (owner.metadata as { uid?: string }).uid ?? '',
        controller: true,
        blockOwnerDeletion: true,
      },
    ],
  };
}

/** Every Secret key a ProviderEndpoint's verification reads. */
export function endpointSecretRefs(spec: ProviderEndpoint['spec']): SecretKeyRef[] {
  return spec.verification.flatMap((v) => [
    ...(v.hmac?.secretRefs ?? []),
    ...(v.standardWebhooks?.secretRefs ?? []),
    ...(v.stripe?.secretRefs ?? []),
    ...(v.bearer?.secretRefs ?? []),
    ...(v.headerToken?.secretRefs ?? []),
    ...(v.queryToken?.secretRefs ?? []),
    ...(v.basicAuth?.secretNames.flatMap((name) => [
      { name, key: 'username' },
      { name, key: 'password' },
    ]) ?? []),
  ]);
}

/** The keys of the workloads' NATS Secret (`natsSecret`), which every receiver and dispatcher mounts. */
export function natsSecretRefs(options: Pick<RenderOptions, 'natsSecret' | 'natsCa'>): SecretKeyRef[] {
  const name = options.natsSecret;
  if (!name) return [];
  return [{ name, key: 'creds' }, ...(options.natsCa ? [{ name, key: 'ca.crt' }] : [])];
}

/** Every Secret key a WebhookSubscription's dispatcher reads. */
export function subscriptionSecretRefs(spec: WebhookSubscription['spec']): SecretKeyRef[] {
  const tls = spec.target.tls;
  const client = tls?.clientCertificate?.secretName;
  return [
    ...(spec.signing?.secretRefs ?? []),
    ...(spec.target.headers ?? []).flatMap((h) => (h.valueFrom ? [h.valueFrom.secretKeyRef] : [])),
    ...(client
      ? [
          { name: client, key: 'tls.crt' },
          { name: client, key: 'tls.key' },
        ]
      : []),
    ...(tls?.caBundle?.secretKeyRef ? [tls.caBundle.secretKeyRef] : []),
  ];
}

/** Every ConfigMap key a WebhookSubscription's dispatcher reads: a CA bundle kept in a ConfigMap. */
export function subscriptionConfigMapRefs(spec: WebhookSubscription['spec']): ConfigMapKeyRef[] {
  const ref = spec.target.tls?.caBundle?.configMapKeyRef;
  return ref ? [ref] : [];
}

/**
 * One projected volume with each referenced key at <object>/<key>, the layout `--secrets-dir` (and, for
 * ConfigMaps, `--config-maps-dir`) reads.
 */
function keysVolume(volume: 'secrets' | 'configmaps', refs: SecretKeyRef[]): k8s.V1Volume {
  const byObject = new Map<string, Set<string>>();
  for (const { name, key } of refs) byObject.set(name, (byObject.get(name) ?? new Set()).add(key));
  const source = volume === 'secrets' ? 'secret' : 'configMap';
  return {
    name: volume,
    projected: {
      sources: [...byObject].map(([name, keys]) => ({
        [source]: { name, items: [...keys].map((key) => ({ key, path: `${name}/${key}` })) },
      })),
    },
  };
}

const securityContext: k8s.V1SecurityContext = {
  runAsNonRoot: true,
  readOnlyRootFilesystem: true,
  allowPrivilegeEscalation: false,
  capabilities: { drop: ['ALL'] },
  seccompProfile: { type: 'RuntimeDefault' },
};

/** What differs between the two workloads: the config file they read and the port they serve probes on. */
/**
 * A receiver keeps serving for `drainSeconds` after its pod is marked for deletion (the preStop sleep, before
 * SIGTERM): the Service's endpoints and the Ingress controller learn of it only after a few seconds, and until
 * then send it requests. Seen on a real node: without it, requests right after a rollout waited 30 s for a 504.
 */
const workloads = {
  receiver: {
    configFile: 'endpoint.yaml',
    portFlag: '--port',
    port: { name: 'http', containerPort: httpPort },
    drainSeconds: 5,
  },
  dispatcher: {
    configFile: 'dispatcher.yaml',
    portFlag: '--metrics-port',
    port: { name: 'metrics', containerPort: metricsPort },
    drainSeconds: 0,
    // Semi-spaces of 8 MiB instead of the image's 16: under load a dispatcher holds 139-147 MiB RSS instead of
    // 152-157, at about the same CPU per delivery; Node's own 1 MiB for the memory limit cost about a tenth more
    // CPU (docs/benchmarks.md, Dispatcher).
    nodeFlags: ['--max-semi-space-size=8', '--heap-growing-percent=50'],
  },
} as const;

/** The image's node and CLI (the Dockerfile's ENTRYPOINT), for a workload that runs node with flags of its own. */
const imageNode = '/nodejs/bin/node';
const imageCli = '/app/cli.mjs';

/** The node flags a workload's pods run with instead of the image's; undefined: the image's. */
export function nodeFlagsOf(component: keyof typeof workloads): readonly string[] | undefined {
  const workload = workloads[component];
  return 'nodeFlags' in workload ? workload.nodeFlags : undefined;
}

/**
 * What a receiver or dispatcher pod gets when its resource sets no `resources` (one that does replaces all of it).
 * One Node process: `hookyard dev`, which runs every example's receivers and dispatchers in one process, holds about
 * 150 MiB resident when idle, so one of them fits the request and the limit leaves room for bodies in flight. No
 * CPU limit: throttling would add latency to every webhook, and the request gives the pod its share. Ephemeral
 * storage covers the /tmp emptyDir.
 */
const defaultResources: k8s.V1ResourceRequirements = {
  requests: { cpu: '50m', memory: '128Mi', 'ephemeral-storage': '64Mi' },
  limits: { memory: '384Mi', 'ephemeral-storage': '256Mi' },
};

/**
 * Replicas of one workload prefer different nodes and spread over zones, so that losing one node or zone leaves
 * the others serving. Both are preferences: a single-node cluster still runs every replica.
 */
function spread(podLabels: Record<string, string>): Pick<k8s.V1PodSpec, 'affinity' | 'topologySpreadConstraints'> {
  const labelSelector = { matchLabels: podLabels };
  return {
    affinity: {
      podAntiAffinity: {
        preferredDuringSchedulingIgnoredDuringExecution: [
          { weight: 100, podAffinityTerm: { topologyKey: 'kubernetes.io/hostname', labelSelector } },
        ],
      },
    },
    topologySpreadConstraints: [
      { maxSkew: 1, topologyKey: 'topology.kubernetes.io/zone', whenUnsatisfiable: 'ScheduleAnyway', labelSelector },
    ],
  };
}

function deployment(
  name: string,
  owner: Owner,
  component: keyof typeof workloads,
  workload: { replicas: number; resources?: unknown },
  config: string,
  refs: SecretKeyRef[],
  options: RenderOptions,
  configMapRefs: ConfigMapKeyRef[] = [],
): k8s.V1Deployment {
  const podLabels = labels(component, owner);
  const { configFile, portFlag, port, drainSeconds } = workloads[component];
  const nodeFlags = nodeFlagsOf(component);
  const nats = options.natsSecret
    ? ['--nats-creds', `${natsDir}/creds`, ...(options.natsCa ? ['--nats-ca', `${natsDir}/ca.crt`] : [])]
    : [];
  const args = [component, '--config', `${configDir}/${configFile}`, '--secrets-dir', secretsDir];
  args.push('--nats-url', options.natsUrl, portFlag, String(port.containerPort), ...nats);
  const configMaps = configMapRefs.length > 0;
  if (configMaps) args.push('--config-maps-dir', configMapsDir);
  const checksum = createHash('sha256')
    .update(config)
    .update(options.secretsChecksum ?? '')
    .digest('hex');
  const env = tracingEnv(options.tracing, owner.metadata.namespace ?? 'default', name);
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: meta(name, owner, podLabels),
    spec: {
      replicas: workload.replicas,
      selector: { matchLabels: podLabels },
      template: {
        metadata: { labels: podLabels, annotations: { 'hookyard.io/config-checksum': checksum } },
        spec: {
          automountServiceAccountToken: false,
          securityContext: { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, fsGroup: 65532 },
          ...spread(podLabels),
          containers: [
            {
              name: component,
              image: options.image,
              ...(nodeFlags ? { command: [imageNode, ...nodeFlags, imageCli] } : {}),
              args,
              ...(env.length > 0 ? { env } : {}),
              ports: [port],
              readinessProbe: probe('/readyz', port.containerPort),
              livenessProbe: probe('/healthz', port.containerPort),
              startupProbe: startupProbe(port.containerPort),
              ...(drainSeconds > 0 ? { lifecycle: { preStop: { sleep: { seconds: drainSeconds } } } } : {}),
              resources: (workload.resources as k8s.V1ResourceRequirements | undefined) ?? defaultResources,
              securityContext,
              volumeMounts: [
                { name: 'config', mountPath: configDir, readOnly: true },
                { name: 'secrets', mountPath: secretsDir, readOnly: true },
                ...(configMaps ? [{ name: 'configmaps', mountPath: configMapsDir, readOnly: true }] : []),
                { name: 'tmp', mountPath: '/tmp' },
                ...(options.natsSecret ? [{ name: 'nats', mountPath: natsDir, readOnly: true }] : []),
              ],
            },
          ],
          volumes: [
            { name: 'config', configMap: { name } },
            keysVolume('secrets', refs),
            ...(configMaps ? [keysVolume('configmaps', configMapRefs)] : []),
            { name: 'tmp', emptyDir: {} },
            ...(options.natsSecret ? [{ name: 'nats', secret: { secretName: options.natsSecret } }] : []),
          ],
        },
      },
    },
  };
}

const probe = (path: string, port: number): k8s.V1Probe => ({
  httpGet: { path, port: port as never },
  periodSeconds: 5,
  failureThreshold: 3,
});

/**
 * Liveness counts only once /healthz has answered: on a node short of CPU a receiver took more than the liveness
 * probe's 15 s to listen, the kubelet restarted it before it ever served, and its pods stayed in CrashLoopBackOff
 * (seen on the real node at load 25-40 on 2 cores). This gives a start up to 120 s.
 */
const startupProbe = (port: number): k8s.V1Probe => ({
  httpGet: { path: '/healthz', port: port as never },
  periodSeconds: 2,
  failureThreshold: 60,
});

export interface EndpointObjects {
  configMap: k8s.V1ConfigMap;
  deployment: k8s.V1Deployment;
  service: k8s.V1Service;
  ingress?: k8s.V1Ingress;
  /** What to paste into the provider's console. */
  url: string;
}

export function renderEndpoint(endpoint: ProviderEndpoint, options: RenderOptions): EndpointObjects {
  const { metadata, spec } = endpoint;
  const name = receiverName(metadata.name);
  const namespace = metadata.namespace ?? 'default';
  const config = stringify({
    apiVersion,
    kind: 'ProviderEndpoint',
    metadata: { name: metadata.name, namespace },
    spec,
  });
  const podLabels = labels('receiver', endpoint);
  const path = `/hooks/${namespace}/${metadata.name}`;
  const ingressSpec = spec.ingress ?? { enabled: true };
  const host = ingressSpec.host ?? options.defaultHost;
  const ingress: k8s.V1Ingress | undefined = ingressSpec.enabled
    ? {
        apiVersion: 'networking.k8s.io/v1',
        kind: 'Ingress',
        metadata: { ...meta(name, endpoint, podLabels), annotations: ingressSpec.annotations },
        spec: {
          ingressClassName: ingressSpec.className ?? options.defaultIngressClass,
          tls: ingressSpec.tls && host ? [{ hosts: [host], secretName: ingressSpec.tls.secretName }] : undefined,
          rules: [
            {
              host,
              http: {
                paths: [{ path, pathType: 'Prefix', backend: { service: { name, port: { name: 'http' } } } }],
              },
            },
          ],
        },
      }
    : undefined;
  return {
    configMap: {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: meta(name, endpoint, podLabels),
      data: { 'endpoint.yaml': config },
    },
    deployment: deployment(name, endpoint, 'receiver', spec.receiver, config, endpointSecretRefs(spec), options),
    service: {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta(name, endpoint, podLabels),
      spec: {
        selector: podLabels,
        ports: [{ name: 'http', port: 80, targetPort: 'http' as never }],
      },
    },
    ingress,
    url: host && ingress ? `${ingressSpec.tls ? 'https' : 'http'}://${host}${path}` : path,
  };
}

export interface SubscriptionObjects {
  configMap: k8s.V1ConfigMap;
  deployment: k8s.V1Deployment;
}

export function renderSubscription(
  subscription: WebhookSubscription,
  sources: Source[],
  options: RenderOptions,
): SubscriptionObjects {
  const { metadata, spec } = subscription;
  const name = dispatcherName(metadata.name);
  const config = stringify({
    subscription: {
      apiVersion,
      kind: 'WebhookSubscription',
      metadata: { name: metadata.name, namespace: metadata.namespace ?? 'default' },
      spec,
    },
    sources,
  });
  return {
    configMap: {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: meta(name, subscription, labels('dispatcher', subscription)),
      data: { 'dispatcher.yaml': config },
    },
    deployment: deployment(
      name,
      subscription,
      'dispatcher',
      spec.dispatcher,
      config,
      subscriptionSecretRefs(spec),
      options,
      subscriptionConfigMapRefs(spec),
    ),
  };
}
