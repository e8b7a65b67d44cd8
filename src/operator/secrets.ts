// The referenced Secrets' (and ConfigMaps') keys, read by name when a reconcile needs them. The operator watches
// their metadata only, so the values of the namespace's other Secrets (Helm releases, service-account tokens) never
// reach it; of a referenced one it keeps a digest per key, read again only when its resourceVersion moves.
import { createHash } from 'node:crypto';
import { isNotFound } from './kube.ts';

/** Reads one object's keys and values (a Secret's base64 data, a ConfigMap's data and binaryData). */
export type ReadKeys = (
  namespace: string,
  name: string,
) => Promise<{ metadata?: { resourceVersion?: string }; data?: Record<string, string> }>;

export class SecretKeys {
  readonly #readKeys: ReadKeys;
  readonly #read = new Map<string, { resourceVersion: string; digests: Map<string, string> }>();

  constructor(read: ReadKeys) {
    this.#readKeys = read;
  }

  /**
   * A SHA-256 of each key's value of the Secret at this resourceVersion (the one the metadata cache holds);
   * undefined when the Secret is gone (or the cache has none: resourceVersion undefined).
   */
  async digests(namespace: string, name: string, resourceVersion: string | undefined) {
    const id = `${namespace}/${name}`;
    if (resourceVersion === undefined) {
      this.#read.delete(id);
      return undefined;
    }
    const known = this.#read.get(id);
    if (known?.resourceVersion === resourceVersion) return known.digests;
    try {
      const secret = await this.#readKeys(namespace, name);
      const digests = new Map(
        Object.entries(secret.data ?? {}).map(([key, value]) => [
          key,
          createHash('sha256').update(value).digest('hex'),
        ]),
      );
      this.#read.set(id, { resourceVersion: secret.metadata?.resourceVersion ?? resourceVersion, digests });
      return digests;
    } catch (err) {
      if (!isNotFound(err)) throw err;
      this.#read.delete(id);
      return undefined;
    }
  }
}
