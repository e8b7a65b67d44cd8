// The operator's writes to the API server: server-side apply with one field manager, deletes that tolerate what
// is already gone, status and finalizer patches, and Events.
import * as k8s from '@kubernetes/client-node';
import { kinds, type ResourceKind } from '../api/kinds.ts';

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

const mergePatch = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);

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

export class Kube {
  readonly objects: k8s.KubernetesObjectApi;
  readonly #custom: k8s.CustomObjectsApi;
  readonly #core: k8s.CoreV1Api;

  constructor(kc: k8s.KubeConfig) {
    this.objects = k8s.KubernetesObjectApi.makeApiClient(kc);
    this.#custom = kc.makeApiClient(k8s.CustomObjectsApi);
    this.#core = kc.makeApiClient(k8s.CoreV1Api);
  }

  async apply<T extends k8s.KubernetesObject>(object: T): Promise<T> {
    return await this.objects.patch(
      object,
      undefined,
      undefined,
      fieldManager,
      true,
      k8s.PatchStrategy.ServerSideApply,
    );
  }

  /** Deletes an object; one that is already gone is fine. */
  async remove(object: k8s.KubernetesObject): Promise<void> {
    try {
      await this.objects.delete(object, undefined, undefined, undefined, undefined, 'Background');
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  async patchStatus(resource: ResourceRef, status: object): Promise<void> {
    await this.#custom.patchNamespacedCustomObjectStatus(
      {
        group: kinds[resource.kind].group,
        version: kinds[resource.kind].version,
        namespace: resource.metadata.namespace ?? 'default',
        plural: kinds[resource.kind].plural,
        name: resource.metadata.name,
        body: { status },
      },
      mergePatch,
    );
  }

  /**
   * Merges metadata (finalizers, annotations; null removes a key), only if the resource has not changed since it
   * was read: the patch carries its resourceVersion. Returns the new resourceVersion.
   */
  async patchMetadata(resource: ResourceRef, metadata: Record<string, unknown>): Promise<string | undefined> {
    const patched = await this.#custom.patchNamespacedCustomObject(
      {
        group: kinds[resource.kind].group,
        version: kinds[resource.kind].version,
        namespace: resource.metadata.namespace ?? 'default',
        plural: kinds[resource.kind].plural,
        name: resource.metadata.name,
        body: { metadata: { ...metadata, resourceVersion: resource.metadata.resourceVersion } },
      },
      mergePatch,
    );
    return (patched as ResourceRef).metadata.resourceVersion;
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
