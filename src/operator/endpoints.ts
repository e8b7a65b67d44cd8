// ProviderEndpoint → its JetStream stream, and a receiver: ConfigMap, Deployment, Service and Ingress.
import type * as k8s from '@kubernetes/client-node';
import { ConditionType, Reason } from '../api/conditions.ts';
import { kinds } from '../api/kinds.ts';
import type { ProviderEndpoint } from '../api/provider-endpoint.ts';
import { duplicateStream, endpointStream } from '../jetstream/layout.ts';
import { deleteStream, ensureEndpointStreams } from '../jetstream/streams.ts';
import {
  applyObject,
  type Context,
  deploymentCheck,
  isTerminal,
  type Outcome,
  parseOrReport,
  type RawResource,
  removeObject,
  removeObjects,
  resolveSecrets,
  writeStatus,
} from './context.ts';
import { endpointSecretRefs, natsSecretRefs, receiverName, renderEndpoint } from './render.ts';
import type { Check } from './status.ts';

const readyFrom: string[] = [ConditionType.SecretsResolved, ConditionType.StreamReady, ConditionType.ReceiverReady];

export async function reconcileEndpoint(ctx: Context, raw: RawResource): Promise<Outcome> {
  const endpoint = await parseOrReport<ProviderEndpoint>(ctx, raw, readyFrom);
  if (!endpoint) return {};
  const { namespace, name } = raw.metadata;
  const checks: Check[] = [];
  let retry = false;
  let terminal = false;

  const secrets = await resolveSecrets(ctx, namespace, [
    ...endpointSecretRefs(endpoint.spec),
    ...natsSecretRefs(ctx.render),
  ]);
  checks.push(secrets.check);

  const stream = endpointStream(namespace, name);
  try {
    await ensureEndpointStreams(ctx.jsm, namespace, name, endpoint.spec);
    checks.push({
      type: ConditionType.StreamReady,
      status: true,
      reason: Reason.Ready,
      message: `JetStream stream ${stream} is ready.`,
    });
  } catch (err) {
    // A refused config (a storage change that got past a cluster without the rule, more replicas than servers)
    // stays refused until the spec changes: reported, not retried.
    terminal = isTerminal(err);
    retry = !terminal;
    checks.push({
      type: ConditionType.StreamReady,
      status: false,
      reason: isTerminal(err) ? Reason.StreamRefused : Reason.JetStreamUnavailable,
      message: `JetStream stream ${stream}: ${err instanceof Error ? err.message : String(err)}`,
    });
  }

  const objects = renderEndpoint(endpoint, { ...ctx.render, secretsChecksum: secrets.checksum });
  const { caches } = ctx;
  await applyObject(ctx, objects.configMap, caches.configMaps);
  await applyObject(ctx, objects.service, caches.services);
  if (objects.ingress) await applyObject(ctx, objects.ingress, caches.ingresses);
  else await removeObject(ctx, ingressHeader(namespace, name), caches.ingresses);
  // With a Secret missing the pods could not start: the Deployment waits (an existing one keeps running).
  const deployment = secrets.checksum
    ? await applyObject(ctx, objects.deployment, caches.deployments)
    : caches.deployments.get(receiverName(name), namespace);
  checks.push(deploymentCheck(ConditionType.ReceiverReady, 'receiver', deployment));

  await writeStatus(ctx, raw, { url: objects.url }, checks, readyFrom);
  return { retry, terminal };
}

const ingressHeader = (namespace: string, name: string): k8s.V1Ingress => ({
  apiVersion: kinds.Ingress.apiVersion,
  kind: kinds.Ingress.kind,
  metadata: { name: receiverName(name), namespace },
});

/** Before the resource goes: its stream (unless spec.stream.deletionPolicy is Retain) and its objects. */
export async function finalizeEndpoint(ctx: Context, raw: RawResource): Promise<void> {
  const { namespace, name } = raw.metadata;
  const policy = (raw.spec.stream as { deletionPolicy?: string } | undefined)?.deletionPolicy ?? 'Delete';
  if (policy === 'Delete') await deleteStream(ctx.jsm, endpointStream(namespace, name));
  await deleteStream(ctx.jsm, duplicateStream(namespace, name)); // counts only: nothing to retain
  await removeObjects(ctx, namespace, receiverName(name), [
    kinds.Deployment,
    kinds.Ingress,
    kinds.Service,
    kinds.ConfigMap,
  ]);
}
