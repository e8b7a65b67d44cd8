// What wakes a reconciler, as a table in the words of controller-runtime's builder: For (a resource itself), Owns
// (what the operator made for it, mapped to its owner) and Watches (other objects, mapped to the resources that
// refer to them). Each change becomes the keys of the resources it concerns.
import { isDeepStrictEqual } from 'node:util';
import type * as k8s from '@kubernetes/client-node';
import { apiVersion } from '../api/common.ts';
import { type KindRef, kinds, type ResourceKind } from '../api/kinds.ts';
import type { Context, RawResource } from './context.ts';
import { forgetResource } from './context.ts';
import type { Verb } from './informer.ts';
import { endpointSecretRefs, subscriptionConfigMapRefs, subscriptionSecretRefs } from './render.ts';

export type Caches = Context['caches'];

export interface Trigger {
  kind: KindRef;
  cache: keyof Caches;
  labelSelector?: string;
  /** Only the objects' metadata is cached (PartialObjectMetadata). */
  metadataOnly?: boolean;
  /** The keys of the resources a change of this object concerns. */
  wakes(object: k8s.KubernetesObject, verb: Verb): string[];
  /** Whether an update changed only the object's status, so its owner needs only its Ready written again. */
  statusOnly?(object: k8s.KubernetesObject, previous: k8s.KubernetesObject): boolean;
}

export const resourceKey = (kind: ResourceKind, namespace: string | undefined, name: string | undefined) =>
  namespace && name ? [`${kind}/${namespace}/${name}`] : [];

export function parseKey(key: string): { kind: ResourceKind; namespace: string; name: string } {
  const [kind, namespace, name] = key.split('/') as [ResourceKind, string, string];
  return { kind, namespace, name };
}

const managedBy = 'app.kubernetes.io/managed-by=hookyard-operator';
const notManagedBy = 'app.kubernetes.io/managed-by!=hookyard-operator';

/** The trigger table of both reconcilers. */
export function triggers(caches: Caches, natsSecret: string | undefined): Trigger[] {
  const wake = wakers(caches, natsSecret);
  const forKinds: Trigger[] = [
    { kind: kinds.ProviderEndpoint, cache: 'endpoints', wakes: wake.endpoint },
    { kind: kinds.WebhookSubscription, cache: 'subscriptions', wakes: wake.subscription },
  ];
  const owned = (kind: KindRef, cache: keyof Caches): Trigger => ({
    kind,
    cache,
    labelSelector: managedBy,
    wakes: wake.owner,
  });
  const owns = [
    owned(kinds.ConfigMap, 'configMaps'),
    { ...owned(kinds.Deployment, 'deployments'), statusOnly: deploymentStatusOnly },
    owned(kinds.Service, 'services'),
    owned(kinds.Ingress, 'ingresses'),
  ];
  const watches: Trigger[] = [
    { kind: kinds.Secret, cache: 'secrets', metadataOnly: true, wakes: wake.referrers },
    // Not the operator's own ConfigMaps, which no resource references: each of their changes would be one more watch
    // event, and one more look through every subscription of the namespace.
    {
      kind: kinds.ConfigMap,
      cache: 'referencedConfigMaps',
      labelSelector: notManagedBy,
      metadataOnly: true,
      wakes: wake.configMapReferrers,
    },
  ];
  return [...forKinds, ...owns, ...watches];
}

/** A Deployment's spec moves its generation; its labels and annotations are the rest of what the operator sets. */
function deploymentStatusOnly(object: k8s.KubernetesObject, previous: k8s.KubernetesObject): boolean {
  const [now, before] = [object.metadata, previous.metadata];
  return (
    now?.generation !== undefined &&
    now.generation === before?.generation &&
    isDeepStrictEqual(now.labels, before.labels) &&
    isDeepStrictEqual(now.annotations, before.annotations)
  );
}

/** The key of the resource whose reconcile writes this object: the resource itself, or the owner of what it made. */
export function writerOf(kind: KindRef, object: k8s.KubernetesObject): string | undefined {
  const { name, namespace } = object.metadata ?? {};
  if (kind.kind === 'ProviderEndpoint' || kind.kind === 'WebhookSubscription') {
    return resourceKey(kind.kind, namespace, name)[0];
  }
  return ownerKey(object);
}

/** The key of the Hookyard resource an object was made for. */
function ownerKey(object: k8s.KubernetesObject): string | undefined {
  const owner = object.metadata?.ownerReferences?.find((r) => r.controller && r.apiVersion === apiVersion);
  if (owner?.kind !== 'ProviderEndpoint' && owner?.kind !== 'WebhookSubscription') return undefined;
  return resourceKey(owner.kind, object.metadata?.namespace, owner.name)[0];
}

/** Subscriptions whose sources name the endpoint or whose selector matches its labels. */
export function subscriptionsOf(caches: Caches, endpoint: RawResource): RawResource[] {
  return caches.subscriptions.list(endpoint.metadata.namespace).filter((s) => {
    const spec = s.spec as { sources?: { endpoint: string }[]; sourceSelector?: { matchLabels?: object } };
    if (spec.sources) return spec.sources.some((source) => source.endpoint === endpoint.metadata.name);
    const labels = endpoint.metadata.labels ?? {};
    return Object.entries(spec.sourceSelector?.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
  });
}

const subscriptionKeys = (subscriptions: RawResource[]) =>
  subscriptions.flatMap((s) => resourceKey('WebhookSubscription', s.metadata.namespace, s.metadata.name));

function wakers(caches: Caches, natsSecret: string | undefined) {
  /**
   * What in a resource asks for a reconcile, by key. Status is left out: the operator writes it itself, and each
   * write would otherwise come back as one more reconcile.
   */
  const intents = new Map<string, string>();
  const intentChanged = (kind: ResourceKind, r: RawResource, verb: Verb) => {
    const key = `${kind}/${r.metadata.namespace}/${r.metadata.name}`;
    if (verb === 'delete') {
      intents.delete(key);
      forgetResource(r.metadata.uid);
      return true;
    }
    const { generation, labels, annotations, finalizers, deletionTimestamp } = r.metadata;
    const intent = JSON.stringify([generation, labels, annotations, finalizers, deletionTimestamp]);
    if (intents.get(key) === intent) return false;
    intents.set(key, intent);
    return true;
  };
  const previousLabels = new Map<string, Record<string, string>>();

  return {
    endpoint(object: k8s.KubernetesObject, verb: Verb): string[] {
      const e = object as RawResource;
      if (!intentChanged('ProviderEndpoint', e, verb)) return [];
      const labelsKey = `${e.metadata.namespace}/${e.metadata.name}`;
      // A label change can move an endpoint out of a selector: the subscriptions it matched before hear of it too.
      const before = previousLabels.get(labelsKey);
      if (verb === 'delete') previousLabels.delete(labelsKey);
      else previousLabels.set(labelsKey, e.metadata.labels ?? {});
      const formerly = before ? subscriptionsOf(caches, { ...e, metadata: { ...e.metadata, labels: before } }) : [];
      return [
        ...resourceKey('ProviderEndpoint', e.metadata.namespace, e.metadata.name),
        ...subscriptionKeys([...subscriptionsOf(caches, e), ...formerly]),
      ];
    },
    subscription(object: k8s.KubernetesObject, verb: Verb): string[] {
      const s = object as RawResource;
      return intentChanged('WebhookSubscription', s, verb)
        ? resourceKey('WebhookSubscription', s.metadata.namespace, s.metadata.name)
        : [];
    },
    owner(object: k8s.KubernetesObject): string[] {
      const owner = ownerKey(object);
      return owner ? [owner] : [];
    },
    /** The resources that reference a Secret; the workloads' NATS Secret concerns every resource of its namespace. */
    referrers(secret: k8s.KubernetesObject): string[] {
      const namespace = secret.metadata?.namespace;
      const everyone = secret.metadata?.name === natsSecret;
      const named = (refs: () => { name: string }[]) => {
        try {
          return everyone || refs().some((r) => r.name === secret.metadata?.name);
        } catch {
          return false; // a spec the reconcile reports as invalid
        }
      };
      const endpoints = caches.endpoints
        .list(namespace)
        .filter((e) => named(() => endpointSecretRefs(e.spec as never)));
      const subscriptions = caches.subscriptions
        .list(namespace)
        .filter((s) => named(() => subscriptionSecretRefs(s.spec as never)));
      return [
        ...endpoints.flatMap((e) => resourceKey('ProviderEndpoint', namespace, e.metadata.name)),
        ...subscriptionKeys(subscriptions),
      ];
    },
    /** The subscriptions that read a ConfigMap (a CA bundle). */
    configMapReferrers(configMap: k8s.KubernetesObject): string[] {
      const namespace = configMap.metadata?.namespace;
      const subscriptions = caches.subscriptions.list(namespace).filter((s) => {
        try {
          return subscriptionConfigMapRefs(s.spec as never).some((r) => r.name === configMap.metadata?.name);
        } catch {
          return false; // a spec the reconcile reports as invalid
        }
      });
      return subscriptionKeys(subscriptions);
    },
  };
}
