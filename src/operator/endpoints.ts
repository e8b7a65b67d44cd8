// ProviderEndpoint → its JetStream stream, and a receiver: ConfigMap, Deployment, Service and Ingress.
import type * as k8s from '@kubernetes/client-node';
import { ConditionType, Reason } from '../api/conditions.ts';
import { kinds } from '../api/kinds.ts';
import type { ProviderEndpoint } from '../api/provider-endpoint.ts';
import { duplicateStream, endpointStream } from '../jetstream/layout.ts';
import { deleteStream, duplicateStreamConfig, endpointStreamConfig } from '../jetstream/streams.ts';
import {
  applyObject,
  type Context,
  deploymentCheck,
  ensureStreamOf,
  isTerminal,
  type Outcome,
  parseOrReport,
  type RawResource,
  type Rewrite,
  removeObject,
  removeObjects,
  resolveSecrets,
  rewriteCheck,
  writeOrHoldStatus,
} from './context.ts';
import { endpointSecretRefs, natsSecretRefs, receiverName, renderEndpoint } from './render.ts';
import type { Check } from './status.ts';

const readyFrom: string[] = [ConditionType.SecretsResolved, ConditionType.StreamReady, ConditionType.ReceiverReady];

/** `claimed`: resolves once the resource has the finalizer (controller.ts). */
export async function reconcileEndpoint(ctx: Context, raw: RawResource, claimed: Promise<void>): Promise<Outcome> {
  const endpoint = await parseOrReport<ProviderEndpoint>(ctx, raw, claimed, readyFrom);
  if (!endpoint) return {};
  const { namespace, name } = raw.metadata;
  const checks: Check[] = [];

  const secrets = await resolveSecrets(ctx, namespace, [
    ...endpointSecretRefs(endpoint.spec),
    ...natsSecretRefs(ctx.render),
  ]);
  checks.push(secrets.check);

  const objects = renderEndpoint(endpoint, { ...ctx.render, secretsChecksum: secrets.checksum });
  const { caches } = ctx;
  // All at once but the Deployment, which comes once its receivers would find their stream and their ConfigMap.
  const stream = claimed.then(() => ensureEndpointStream(ctx, raw, endpoint));
  const configMap = applyObject(ctx, objects.configMap, caches.configMaps);
  // With a Secret missing the pods could not start: the Deployment waits (an existing one keeps running).
  const deployment = Promise.all([stream, configMap]).then(() =>
    secrets.checksum
      ? applyObject(ctx, objects.deployment, caches.deployments)
      : caches.deployments.get(receiverName(name), namespace),
  );
  const [{ check, retry, terminal }, receiver] = await Promise.all([
    stream,
    deployment,
    configMap,
    applyObject(ctx, objects.service, caches.services),
    objects.ingress
      ? applyObject(ctx, objects.ingress, caches.ingresses)
      : removeObject(ctx, ingressHeader(namespace, name), caches.ingresses),
  ]);
  checks.push(check, deploymentCheck(ConditionType.ReceiverReady, 'receiver', receiver));

  const held = await writeOrHoldStatus(ctx, raw, { url: objects.url }, checks, readyFrom, ConditionType.ReceiverReady);
  return { retry, terminal, statusAfterMs: held ? ctx.statusSettleMs : undefined };
}

/** The endpoint's stream, and its StreamReady check. */
async function ensureEndpointStream(ctx: Context, raw: RawResource, endpoint: ProviderEndpoint) {
  const { namespace, name } = raw.metadata;
  const stream = endpointStream(namespace, name);
  try {
    // The stream of events and the one of its duplicate records (src/jetstream/layout.ts).
    await Promise.all([
      ensureStreamOf(ctx, raw, endpointStreamConfig(namespace, name, endpoint.spec)),
      ensureStreamOf(ctx, raw, duplicateStreamConfig(namespace, name, endpoint.spec)),
    ]);
    const message = `JetStream stream ${stream} is ready.`;
    const check: Check = { type: ConditionType.StreamReady, status: true, reason: Reason.Ready, message };
    return { check, retry: false, terminal: false };
  } catch (err) {
    // A refused config (a storage change that got past a cluster without the rule, more replicas than servers)
    // stays refused until the spec changes: reported, not retried.
    const terminal = isTerminal(err);
    const check: Check = {
      type: ConditionType.StreamReady,
      status: false,
      reason: terminal ? Reason.StreamRefused : Reason.JetStreamUnavailable,
      message: `JetStream stream ${stream}: ${err instanceof Error ? err.message : String(err)}`,
    };
    return { check, retry: !terminal, terminal };
  }
}

/** Ready again from the receiver Deployment's availability alone, or 'reconcile' when that does not do. */
export async function rewriteReceiverReady(ctx: Context, raw: RawResource): Promise<Rewrite> {
  const deployment = ctx.caches.deployments.get(receiverName(raw.metadata.name), raw.metadata.namespace);
  return await rewriteCheck(ctx, raw, deploymentCheck(ConditionType.ReceiverReady, 'receiver', deployment), readyFrom);
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
