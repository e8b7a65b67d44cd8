// The control loop: informers keep caches of both resources, of what the operator creates and of Secrets; every
// change puts the affected resources' keys on a work queue; workers reconcile them, level-based, so a reconcile
// that runs twice or after a restart does the same thing.
import * as k8s from '@kubernetes/client-node';
import type { JetStreamManager } from '@nats-io/jetstream';
import type { Condition } from '../api/common.ts';
import { apiVersion } from '../api/common.ts';
import type { Logger } from '../runtime/log.ts';
import { type Cache, type Context, forgetParsed, type Outcome, type RawResource, writeStatus } from './context.ts';
import { finalizeEndpoint, reconcileEndpoint } from './endpoints.ts';
import { apiMessage, finalizer, isConflict, isNotFound, Kube, plurals } from './kube.ts';
import type { Kind, OperatorMetrics } from './metrics.ts';
import { WorkQueue } from './queue.ts';
import { endpointSecretRefs, type RenderOptions, subscriptionSecretRefs } from './render.ts';
import { finalizeSubscription, reconcileSubscription } from './subscriptions.ts';

export interface ControllerOptions {
  kc: k8s.KubeConfig;
  jsm: JetStreamManager;
  render: Omit<RenderOptions, 'secretsChecksum'>;
  metrics: OperatorMetrics;
  log: Logger;
  /** Watch only these namespaces; empty or undefined: all. */
  namespaces?: string[];
  workers?: number;
  statusIntervalMs?: number;
  /** First retry delay of a failed reconcile (ms); it doubles per failure. */
  retryBaseMs?: number;
}

export interface Controller {
  /** Resolves once every cache has listed its objects and the workers run. */
  started: Promise<void>;
  stop(): Promise<void>;
}

const managedBy = 'app.kubernetes.io/managed-by=hookyard-operator';

/** One cache over the informers of several namespaces (or one informer for all of them). */
function combined<T extends k8s.KubernetesObject>(parts: Map<string, k8s.ObjectCache<T>>): Cache<T> {
  const all = parts.get('');
  return {
    get: (name, namespace) => (all ?? parts.get(namespace ?? ''))?.get(name, namespace),
    list: (namespace) =>
      all
        ? all.list(namespace)
        : namespace !== undefined
          ? (parts.get(namespace)?.list(namespace) ?? [])
          : [...parts.values()].flatMap((c) => [...c.list()]),
  };
}

export function startController(options: ControllerOptions): Controller {
  const { kc, log, metrics } = options;
  const kube = new Kube(kc);
  const queue = new WorkQueue({ baseDelayMs: options.retryBaseMs });
  const namespaces = options.namespaces?.length ? options.namespaces : [''];
  const informers: k8s.Informer<k8s.KubernetesObject>[] = [];
  const synced: Promise<void>[] = [];
  let stopping = false;

  /** An informer per namespace for one kind, restarted after errors, as one cache. */
  function watch<T extends k8s.KubernetesObject>(
    path: (namespace: string) => string,
    list: (namespace: string) => Promise<k8s.KubernetesListObject<T>>,
    onChange: (object: T, verb: 'add' | 'update' | 'delete') => void,
    labelSelector?: string,
  ): Cache<T> {
    const parts = new Map<string, k8s.ObjectCache<T>>();
    for (const namespace of namespaces) {
      const informer = k8s.makeInformer(kc, path(namespace), () => list(namespace), labelSelector);
      for (const verb of [k8s.ADD, k8s.UPDATE, k8s.DELETE] as const) {
        informer.on(verb, (o) => {
          // The cache holds this very object. Its managedFields, often larger than the rest of it, are never read:
          // dropped here as client-go's TransformStripManagedFields does, they no longer fill the heap.
          if (o.metadata) o.metadata.managedFields = undefined;
          onChange(o, verb);
        });
      }
      let failures = 0;
      let onSynced: () => void = () => {};
      synced.push(new Promise<void>((ok) => (onSynced = ok)));
      // client-node stops an informer on an error: it is started again after a growing delay, with exactly one
      // handler registered at a time (each handler removes itself), so restarts never pile up.
      const start = async () => {
        let failed = false;
        const onError = (err: unknown) => {
          informer.off(k8s.ERROR, onError);
          failed = true;
          if (stopping) return;
          const delay = Math.min(1000 * 2 ** failures++, 30_000);
          log.warn({ path: path(namespace), err: apiMessage(err), retryInMs: delay }, 'watch failed; restarting');
          setTimeout(() => void start(), delay).unref();
        };
        informer.on(k8s.ERROR, onError);
        await informer.start();
        if (failed) return;
        failures = 0;
        onSynced();
      };
      void start();
      informers.push(informer as unknown as k8s.Informer<k8s.KubernetesObject>);
      parts.set(namespace, informer);
    }
    return combined(parts);
  }

  /** The informers of one kind (`resource` is its plural), in each watched namespace or in all of them. */
  const watchKind = <T extends k8s.KubernetesObject>(
    apiVersion: string,
    kind: string,
    resource: string,
    onChange: (object: T, verb: 'add' | 'update' | 'delete') => void,
    labelSelector?: string,
  ) =>
    watch<T>(
      (n) => `${apiVersion === 'v1' ? '/api/v1' : `/apis/${apiVersion}`}${n ? `/namespaces/${n}` : ''}/${resource}`,
      (n) =>
        kube.objects.list<T>(
          apiVersion,
          kind,
          n || undefined,
          undefined,
          undefined,
          undefined,
          undefined,
          labelSelector,
        ),
      onChange,
      labelSelector,
    );
  const enqueue = (kind: Kind, namespace: string | undefined, name: string | undefined) => {
    if (namespace && name) queue.add(`${kind}/${namespace}/${name}`);
  };

  /** Subscriptions whose sources name the endpoint or whose selector matches its labels. */
  const subscriptionsOf = (endpoint: RawResource) =>
    caches.subscriptions.list(endpoint.metadata.namespace).filter((s) => {
      const spec = s.spec as { sources?: { endpoint: string }[]; sourceSelector?: { matchLabels?: object } };
      if (spec.sources) return spec.sources.some((source) => source.endpoint === endpoint.metadata.name);
      const labels = endpoint.metadata.labels ?? {};
      return Object.entries(spec.sourceSelector?.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
    });

  /**
   * What in a resource asks for a reconcile, by key. Status is left out: the operator writes it itself, and each
   * write would otherwise come back as one more reconcile.
   */
  const intents = new Map<string, string>();
  const intentChanged = (kind: Kind, r: RawResource, verb: string) => {
    const key = `${kind}/${r.metadata.namespace}/${r.metadata.name}`;
    if (verb === 'delete') {
      intents.delete(key);
      forgetParsed(r.metadata.uid);
      return true;
    }
    const { generation, labels, annotations, finalizers, deletionTimestamp } = r.metadata;
    const intent = JSON.stringify([generation, labels, annotations, finalizers, deletionTimestamp]);
    if (intents.get(key) === intent) return false;
    intents.set(key, intent);
    return true;
  };

  const previousLabels = new Map<string, Record<string, string>>();
  const onEndpoint = (e: RawResource, verb: string) => {
    if (!intentChanged('ProviderEndpoint', e, verb)) return;
    enqueue('ProviderEndpoint', e.metadata.namespace, e.metadata.name);
    const key = `${e.metadata.namespace}/${e.metadata.name}`;
    // A label change can move an endpoint out of a selector: the subscriptions it matched before hear of it too.
    const before = previousLabels.get(key);
    previousLabels.set(key, e.metadata.labels ?? {});
    for (const s of subscriptionsOf(e)) enqueue('WebhookSubscription', s.metadata.namespace, s.metadata.name);
    if (before) {
      for (const s of subscriptionsOf({ ...e, metadata: { ...e.metadata, labels: before } })) {
        enqueue('WebhookSubscription', s.metadata.namespace, s.metadata.name);
      }
    }
  };
  const onOwned = (o: k8s.KubernetesObject) => {
    const owner = o.metadata?.ownerReferences?.find((r) => r.controller && r.apiVersion === apiVersion);
    if (owner && (owner.kind === 'ProviderEndpoint' || owner.kind === 'WebhookSubscription')) {
      enqueue(owner.kind, o.metadata?.namespace, owner.name);
    }
  };
  const onSecret = (secret: k8s.V1Secret) => {
    const namespace = secret.metadata?.namespace;
    // The workloads' NATS Secret concerns every resource of its namespace.
    const everyone = secret.metadata?.name === options.render.natsSecret;
    const named = (refs: () => { name: string }[]) => {
      try {
        return refs().some((r) => r.name === secret.metadata?.name);
      } catch {
        return false; // a spec the reconcile reports as invalid
      }
    };
    for (const e of caches.endpoints.list(namespace)) {
      if (everyone || named(() => endpointSecretRefs(e.spec as never))) {
        enqueue('ProviderEndpoint', namespace, e.metadata.name);
      }
    }
    for (const s of caches.subscriptions.list(namespace)) {
      if (everyone || named(() => subscriptionSecretRefs(s.spec as never))) {
        enqueue('WebhookSubscription', namespace, s.metadata.name);
      }
    }
  };

  const caches: Context['caches'] = {
    endpoints: watchKind<RawResource>(apiVersion, 'ProviderEndpoint', plurals.ProviderEndpoint, onEndpoint),
    subscriptions: watchKind<RawResource>(apiVersion, 'WebhookSubscription', plurals.WebhookSubscription, (s, verb) => {
      if (intentChanged('WebhookSubscription', s, verb)) {
        enqueue('WebhookSubscription', s.metadata.namespace, s.metadata.name);
      }
    }),
    secrets: watchKind('v1', 'Secret', 'secrets', onSecret),
    configMaps: watchKind('v1', 'ConfigMap', 'configmaps', onOwned, managedBy),
    services: watchKind('v1', 'Service', 'services', onOwned, managedBy),
    deployments: watchKind('apps/v1', 'Deployment', 'deployments', onOwned, managedBy),
    ingresses: watchKind('networking.k8s.io/v1', 'Ingress', 'ingresses', onOwned, managedBy),
  };

  const ctx: Context = {
    kube,
    jsm: options.jsm,
    render: options.render,
    metrics,
    log,
    statusIntervalMs: options.statusIntervalMs ?? 30_000,
    caches,
  };

  async function reconcile(kind: Kind, raw: RawResource): Promise<Outcome> {
    const finalizers = raw.metadata.finalizers ?? [];
    if (raw.metadata.deletionTimestamp) {
      if (!finalizers.includes(finalizer)) return {};
      await (kind === 'ProviderEndpoint' ? finalizeEndpoint : finalizeSubscription)(ctx, raw);
      forgetParsed(raw.metadata.uid);
      try {
        await kube.patchMetadata(raw, { finalizers: finalizers.filter((f) => f !== finalizer) });
      } catch (err) {
        if (!isNotFound(err)) throw err; // a queued repeat of a deletion that has already finished
        return {};
      }
      log.info({ kind, namespace: raw.metadata.namespace, name: raw.metadata.name }, 'cleaned up');
      return {};
    }
    if (!finalizers.includes(finalizer)) {
      raw.metadata.resourceVersion = await kube.patchMetadata(raw, { finalizers: [...finalizers, finalizer] });
    }
    return await (kind === 'ProviderEndpoint' ? reconcileEndpoint : reconcileSubscription)(ctx, raw);
  }

  /** After a reconcile threw: Ready=False with the error (and an Event), the rest of the status as it was. */
  async function reportFailure(raw: RawResource, message: string) {
    const { conditions = [], ...fields } = raw.status ?? {};
    const checks = conditions
      .filter((c) => c.type !== 'Ready' && c.type !== 'Reconciled')
      .map((c: Condition) => ({
        type: c.type,
        status: c.status === 'Unknown' ? ('Unknown' as const) : c.status === 'True',
        reason: c.reason,
        message: c.message,
      }));
    checks.push({ type: 'Reconciled', status: false, reason: 'ReconcileFailed', message });
    await writeStatus(ctx, raw, fields, checks, ['Reconciled']);
  }

  async function work() {
    for (let key = await queue.next(); key !== undefined; key = await queue.next()) {
      const [kind, namespace, name] = key.split('/') as [Kind, string, string];
      const cached = (kind === 'ProviderEndpoint' ? caches.endpoints : caches.subscriptions).get(name, namespace);
      if (!cached) {
        if (kind === 'WebhookSubscription') metrics.forget(namespace, name);
        previousLabels.delete(`${namespace}/${name}`);
        queue.forget(key);
        queue.done(key);
        continue;
      }
      const raw = structuredClone(cached);
      const started = performance.now();
      try {
        const outcome = await reconcile(kind, raw);
        metrics.reconciled(kind, !outcome.retry, (performance.now() - started) / 1000);
        // Its stream may be what a subscription was waiting for.
        if (kind === 'ProviderEndpoint' && !outcome.retry) {
          for (const s of subscriptionsOf(cached)) {
            const consumerReady = s.status?.conditions?.find((c) => c.type === 'ConsumerReady');
            if (consumerReady?.status !== 'True') enqueue('WebhookSubscription', namespace, s.metadata.name);
          }
        }
        if (outcome.retry) queue.retry(key);
        else queue.forget(key);
        // A retrying subscription still has its counters refreshed: the earlier of the two delays wins.
        if (outcome.requeueAfterMs) queue.addAfter(key, outcome.requeueAfterMs);
      } catch (err) {
        metrics.reconciled(kind, false, (performance.now() - started) / 1000);
        const message = apiMessage(err);
        const retryInMs = queue.retry(key);
        // A conflict only means the resource changed while it was being reconciled: the retry sees the new one.
        if (isConflict(err)) continue;
        log.warn({ kind, namespace, name, err: message, retryInMs }, 'reconcile failed');
        if (!raw.metadata.deletionTimestamp) {
          await reportFailure(raw, message).catch((e: unknown) => {
            log.warn({ kind, namespace, name, err: apiMessage(e) }, 'could not write the failure to status');
          });
        }
      } finally {
        queue.done(key);
      }
    }
  }

  const workers: Promise<void>[] = [];
  const started = Promise.all(synced).then(() => {
    if (stopping) return;
    for (const e of caches.endpoints.list()) enqueue('ProviderEndpoint', e.metadata.namespace, e.metadata.name);
    for (const s of caches.subscriptions.list()) {
      enqueue('WebhookSubscription', s.metadata.namespace, s.metadata.name);
    }
    for (let i = 0; i < (options.workers ?? 4); i++) workers.push(work());
    log.info({ namespaces: options.namespaces?.length ? options.namespaces : 'all' }, 'controller started');
  });

  return {
    started,
    async stop() {
      stopping = true;
      queue.close();
      await Promise.all(workers);
      await Promise.all(informers.map((i) => i.stop()));
    },
  };
}
