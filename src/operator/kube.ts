// The operator's writes to the API server: server-side apply with one field manager, deletes that tolerate what
// is already gone, status and finalizer patches, and Events.
import * as k8s from '@kubernetes/client-node';
import { type Dispatcher, request } from 'undici';
import { collectionPath, type KindRef, kinds, type ResourceKind } from '../api/kinds.ts';

export const fieldManager = 'hookyard-operator';
export const finalizer = 'hookyard.io/cleanup';

export interface ResourceRef {
  kind: ResourceKind;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
  };
}

/**
 * client-node makes a new undici Agent for every request, so every request opens a new TLS connection: the
 * handshakes were most of the operator's CPU time. One Agent for the KubeConfig keeps connections alive. (The
 * token is a header, added per request, so a rotated service-account token still applies.)
 */
export function keepConnectionsAlive(kc: k8s.KubeConfig): k8s.KubeConfig {
  const config = kc as unknown as { createDispatcher(...args: unknown[]): unknown };
  const create = config.createDispatcher.bind(kc);
  let shared: unknown;
  config.createDispatcher = (...args: unknown[]) => {
    shared ??= create(...args);
    return shared;
  };
  return kc;
}

/** The message of a failed API call (the Status's message), without the request's headers or body. */
export function apiMessage(err: unknown): string {
  if (err instanceof k8s.ApiException) {
    try {
      const status = JSON.parse(String(err.body)) as { message?: string };
      if (status.message) return status.message;
    } catch {}
    return `the API server answered ${err.code}`;
  }
  return err instanceof Error ? err.message : String(err);
}

export const isNotFound = (err: unknown) => (err as { code?: number }).code === 404;
export const isConflict = (err: unknown) => (err as { code?: number }).code === 409;

/** How many of its own writes the operator remembers, to know their echoes (see Kube.isOwnWrite). */
const rememberedWrites = 10_000;

/** A resource's name and namespace ('default' when it has none, as kubectl takes it). */
const namespaced = (resource: ResourceRef) => ({
  metadata: { name: resource.metadata.name, namespace: resource.metadata.namespace ?? 'default' },
});

export class Kube {
  readonly objects: k8s.KubernetesObjectApi;
  readonly #kc: k8s.KubeConfig;
  readonly #core: k8s.CoreV1Api;
  /** The resourceVersions the operator's own writes produced (etcd's revision: unique across all objects). */
  readonly #written = new Set<string>();

  constructor(kc: k8s.KubeConfig) {
    this.#kc = kc;
    this.objects = k8s.KubernetesObjectApi.makeApiClient(kc);
    this.#core = kc.makeApiClient(k8s.CoreV1Api);
  }

  async apply<T extends k8s.KubernetesObject>(object: T): Promise<T> {
    const kind = Object.values(kinds).find((k) => k.apiVersion === object.apiVersion && k.kind === object.kind);
    if (!kind) throw new Error(`the operator does not apply ${object.apiVersion} ${object.kind}`);
    const query = `?fieldManager=${fieldManager}&force=true`;
    return this.#wrote(await this.#patch(kind, object, undefined, k8s.PatchStrategy.ServerSideApply, object, query));
  }

  /**
   * A PATCH whose body and answer are JSON as they are: client-node's typed serializer walked every field of every
   * object written and returned (near a tenth of the operator's CPU in a burst of new resources), and its Date fields
   * differed from the informers' strings.
   */
  async #patch<T>(
    kind: KindRef,
    object: { metadata?: { name?: string; namespace?: string } },
    subresource: string | undefined,
    contentType: string,
    body: unknown,
    query = '',
  ): Promise<T> {
    const { name = '', namespace = '' } = object.metadata ?? {};
    const path = `${collectionPath(kind, namespace)}/${name}${subresource ? `/${subresource}` : ''}`;
    const url = `${this.#kc.getCurrentCluster()?.server ?? ''}${path}${query}`;
    const context = new k8s.RequestContext(url, k8s.HttpMethod.PATCH);
    await this.#kc.applySecurityAuthentication(context);
    context.setHeaderParam('Content-Type', contentType);
    context.setHeaderParam('Accept', 'application/json');
    // undici's request rather than its fetch, whose web streams were most of the cost of a write's round trip.
    const response = await request(url, {
      method: 'PATCH',
      headers: context.getHeaders(),
      body: JSON.stringify(body),
      dispatcher: context.getDispatcher() as Dispatcher | undefined,
    });
    const text = await response.body.text();
    if (response.statusCode >= 300) throw new k8s.ApiException(response.statusCode, `PATCH ${path}`, text, {});
    return JSON.parse(text) as T;
  }

  /** Whether a watched object is as one of the operator's own writes left it: its echo. */
  isOwnWrite(object: k8s.KubernetesObject): boolean {
    const resourceVersion = object.metadata?.resourceVersion;
    return resourceVersion !== undefined && this.#written.has(resourceVersion);
  }

  #wrote<T extends k8s.KubernetesObject>(object: T): T {
    // Echoes arrive within moments: forgetting them all now and then costs at most a few extra reconciles.
    if (this.#written.size >= rememberedWrites) this.#written.clear();
    if (object.metadata?.resourceVersion) this.#written.add(object.metadata.resourceVersion);
    return object;
  }

  /** Deletes an object; one that is already gone is fine. */
  async remove(object: k8s.KubernetesObject): Promise<void> {
    try {
      await this.objects.delete(object, undefined, undefined, undefined, undefined, 'Background');
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  /** Returns the resource as the write left it. */
  async patchStatus<T extends ResourceRef>(resource: T, status: object): Promise<T> {
    const patch = this.#patch<T>(kinds[resource.kind], namespaced(resource), 'status', k8s.PatchStrategy.MergePatch, {
      status,
    });
    return this.#wrote(await patch);
  }

  /**
   * Merges metadata (finalizers, annotations; null removes a key), only if the resource has not changed since it
   * was read: the patch carries its resourceVersion. Returns the resource as the write left it.
   */
  async patchMetadata<T extends ResourceRef>(resource: T, metadata: Record<string, unknown>): Promise<T> {
    const body = { metadata: { ...metadata, resourceVersion: resource.metadata.resourceVersion } };
    return this.#wrote(
      await this.#patch<T>(kinds[resource.kind], namespaced(resource), undefined, k8s.PatchStrategy.MergePatch, body),
    );
  }

  /** A Secret with its data, read only for the Secrets a resource references. */
  async readSecret(namespace: string, name: string): Promise<k8s.V1Secret> {
    return await this.#core.readNamespacedSecret({ namespace, name });
  }

  /** A ConfigMap's keys and values (text and binary), read only for the ConfigMaps a resource references. */
  async readConfigMapKeys(
    namespace: string,
    name: string,
  ): Promise<{ metadata?: k8s.V1ObjectMeta; data: Record<string, string> }> {
    const configMap = await this.#core.readNamespacedConfigMap({ namespace, name });
    return { metadata: configMap.metadata, data: { ...configMap.data, ...configMap.binaryData } };
  }

  /** A Kubernetes Event on the resource, for `kubectl describe` and event exporters. */
  async event(resource: ResourceRef, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const namespace = resource.metadata.namespace ?? 'default';
    const now = new Date();
    await this.#core.createNamespacedEvent({
      namespace,
      body: {
        metadata: { generateName: `${resource.metadata.name}.`, namespace },
        involvedObject: {
          apiVersion: kinds[resource.kind].apiVersion,
          kind: resource.kind,
          name: resource.metadata.name,
          namespace,
          uid: resource.metadata.uid,
        },
        type,
        reason,
        message,
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
        source: { component: fieldManager },
        reportingComponent: fieldManager,
      },
    });
  }
}
