// Watch + cache of one kind, as client-go's reflector keeps them: a list, then a watch from the list's
// resourceVersion (client-node's Watch streams it). A watch that ends normally is resumed where it stopped; after
// one that failed, and every resync period, the kind is listed again and the cache replaced, so an object deleted
// while the watch was down is heard of as deleted. A metadata-only informer asks the API server for
// PartialObjectMetadata, so the objects' data (Secret values) never reach the operator.
import { setTimeout as sleep } from 'node:timers/promises';
import * as k8s from '@kubernetes/client-node';
import { fetch } from 'undici';
import { collectionPath, type KindRef } from '../api/kinds.ts';
import type { Logger } from '../runtime/log.ts';
import { apiMessage } from './kube.ts';

export type Verb = 'add' | 'update' | 'delete';

/** A cache of one kind of object, as an informer keeps it. */
export interface Cache<T> {
  get(name: string, namespace?: string): T | undefined;
  list(namespace?: string): ReadonlyArray<T>;
  /**
   * Takes in an object as one of the operator's own writes returned it, if the cache still holds the version the
   * write was based on (`basedOn`; undefined: none, a create). The next reconcile then sees what was written even
   * before the watch brings it, and that echo, at the same resourceVersion, wakes nothing: otherwise every apply
   * and status write would come back as one more reconcile.
   */
  assume(object: T, basedOn: string | undefined): void;
}

export interface InformerOptions<T> {
  kc: k8s.KubeConfig;
  kind: KindRef;
  /** '' for all namespaces. */
  namespace: string;
  labelSelector?: string;
  /** Only the objects' metadata is listed and watched (PartialObjectMetadata). */
  metadataOnly?: boolean;
  /** How often the kind is listed again even when every watch went well (ms). */
  resyncMs: number;
  log: Logger;
  /** `previous`: the cached object an update replaces. */
  onChange: (object: T, verb: Verb, previous?: T) => void;
}

const accept = {
  list: 'application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1',
  watch: 'application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1',
};

const keyOf = (o: k8s.KubernetesObject) => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
const isGone = (err: unknown) => (err as { statusCode?: number; code?: number }).statusCode === 410;

export class Informer<T extends k8s.KubernetesObject> implements Cache<T> {
  readonly synced: Promise<void>;
  readonly #options: InformerOptions<T>;
  readonly #path: string;
  readonly #watch: k8s.Watch;
  readonly #objects = new Map<string, T>();
  #resourceVersion = '';
  #request: AbortController | undefined;
  /** relist() ended the watch: no failure, list at once. */
  #relistAsked = false;
  #stopped = false;
  #resync: NodeJS.Timeout;
  #onSynced: () => void = () => {};

  constructor(options: InformerOptions<T>) {
    this.#options = options;
    this.#path = collectionPath(options.kind, options.namespace);
    this.#watch = new k8s.Watch(options.metadataOnly ? withAccept(options.kc, accept.watch) : options.kc);
    this.synced = new Promise<void>((ok) => (this.#onSynced = ok));
    this.#resync = setInterval(() => this.relist(), options.resyncMs).unref();
    void this.#run();
  }

  get(name: string, namespace?: string): T | undefined {
    return this.#objects.get(`${namespace ?? ''}/${name}`);
  }

  list(namespace?: string): T[] {
    const all = [...this.#objects.values()];
    return namespace === undefined ? all : all.filter((o) => o.metadata?.namespace === namespace);
  }

  assume(object: T, basedOn: string | undefined): void {
    const { namespace = '' } = object.metadata ?? {};
    if (this.#options.namespace !== '' && this.#options.namespace !== namespace) return;
    if (this.#objects.get(keyOf(object))?.metadata?.resourceVersion !== basedOn) return;
    if (object.metadata) object.metadata.managedFields = undefined;
    this.#objects.set(keyOf(object), object);
  }

  /** Ends the current watch and lists the kind again. */
  relist(): void {
    this.#relistAsked = true;
    this.#resourceVersion = '';
    this.#request?.abort();
  }

  stop(): void {
    this.#stopped = true;
    clearInterval(this.#resync);
    this.#request?.abort();
  }

  async #run(): Promise<void> {
    let failures = 0;
    while (!this.#stopped) {
      try {
        if (!this.#resourceVersion) {
          this.#relistAsked = false;
          await this.#list();
        }
        this.#onSynced();
        await this.#watchUntilEnd();
        failures = 0;
      } catch (err) {
        if (this.#stopped) return;
        // A relist asked for, or a resourceVersion too old to watch from: list at once.
        if (this.#relistAsked || isGone(err)) {
          this.#resourceVersion = '';
          continue;
        }
        const delay = Math.min(1000 * 2 ** failures++, 30_000);
        this.#options.log.warn(
          { path: this.#path, err: apiMessage(err), retryInMs: delay },
          'watch failed; restarting with a fresh list',
        );
        this.#resourceVersion = '';
        await sleep(delay, undefined, { ref: false });
      }
    }
  }

  /** Replaces the cache with a fresh list: what is new is added, what changed updated, what is gone deleted. */
  async #list(): Promise<void> {
    const { kc, labelSelector, metadataOnly } = this.#options;
    const url = new URL(`${kc.getCurrentCluster()?.server ?? ''}${this.#path}`);
    if (labelSelector) url.searchParams.set('labelSelector', labelSelector);
    const context = new k8s.RequestContext(url.toString(), k8s.HttpMethod.GET);
    await kc.applySecurityAuthentication(context);
    context.setHeaderParam('Accept', metadataOnly ? accept.list : 'application/json');
    const response = await fetch(url, { headers: context.getHeaders(), dispatcher: context.getDispatcher() });
    const body = await response.text();
    if (!response.ok) throw new k8s.ApiException(response.status, `list ${this.#path}`, body, {});
    const list = JSON.parse(body) as k8s.KubernetesListObject<T>;
    const seen = new Set<string>();
    // An empty PartialObjectMetadataList comes with `"items": null`.
    for (const object of list.items ?? []) {
      seen.add(keyOf(object));
      this.#upsert(object);
    }
    for (const [key, object] of this.#objects) {
      if (seen.has(key)) continue;
      this.#objects.delete(key);
      this.#options.onChange(object, 'delete');
    }
    this.#resourceVersion = list.metadata?.resourceVersion ?? '';
  }

  #upsert(object: T): void {
    // managedFields, often larger than the rest of an object, are never read: dropped as client-go's
    // TransformStripManagedFields does, they do not fill the heap.
    if (object.metadata) object.metadata.managedFields = undefined;
    const key = keyOf(object);
    const cached = this.#objects.get(key);
    if (cached?.metadata?.resourceVersion === object.metadata?.resourceVersion) return;
    this.#objects.set(key, object);
    this.#options.onChange(object, cached ? 'update' : 'add', cached);
  }

  /** Watches from the last resourceVersion; resolves when the watch ends, rejects when it failed. */
  async #watchUntilEnd(): Promise<void> {
    const { labelSelector } = this.#options;
    const query = { resourceVersion: this.#resourceVersion, allowWatchBookmarks: true, labelSelector };
    await new Promise<void>((ok, fail) => {
      const done = (err: unknown) => {
        this.#request = undefined;
        // client-node ends a watch that was quiet for 30 s with a TimeoutError: a normal end, resumed.
        if (err && (err as Error).name !== 'TimeoutError') fail(err);
        else ok();
      };
      this.#watch
        .watch(this.#path, query, (phase, object: T & { code?: number }) => this.#event(phase, object), done)
        .then((request) => {
          this.#request = request;
          if (this.#stopped || !this.#resourceVersion) request.abort();
        }, fail);
    });
  }

  #event(phase: string, object: T & { code?: number }): void {
    if (phase === 'ERROR') {
      // Most often 410 Gone, the resourceVersion compacted away: the stream ends, and the kind is listed again.
      this.#resourceVersion = '';
      return;
    }
    if (phase === 'ADDED' || phase === 'MODIFIED') this.#upsert(object);
    if (phase === 'DELETED') {
      const key = keyOf(object);
      const cached = this.#objects.get(key);
      this.#objects.delete(key);
      if (cached) this.#options.onChange(object, 'delete');
    }
    this.#resourceVersion = object.metadata?.resourceVersion ?? this.#resourceVersion;
  }
}

/** The KubeConfig with one more header on every request it authenticates: what Watch lets a caller add. */
function withAccept(kc: k8s.KubeConfig, value: string): k8s.KubeConfig {
  const config = Object.create(kc) as k8s.KubeConfig;
  config.applySecurityAuthentication = async (context: k8s.RequestContext) => {
    await kc.applySecurityAuthentication(context);
    context.setHeaderParam('Accept', value);
  };
  return config;
}

/** One cache over the informers of several namespaces. */
export function combined<T>(parts: Cache<T>[]): Cache<T> {
  return {
    get: (name, namespace) => {
      for (const part of parts) {
        const found = part.get(name, namespace);
        if (found) return found;
      }
      return undefined;
    },
    list: (namespace) => parts.flatMap((part) => [...part.list(namespace)]),
    assume: (object, basedOn) => {
      for (const part of parts) part.assume(object, basedOn);
    },
  };
}
