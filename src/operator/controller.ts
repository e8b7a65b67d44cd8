// The control loop, as kube-rs's Controller and controller-runtime's builder put it together: informers keep caches
// (one per kind, per watched namespace), the trigger table (triggers.ts) turns each change into the keys of the
// resources it concerns, and workers take keys from the work queue and reconcile them, level-based, so a reconcile
// that runs twice or after a restart does the same thing. Every reconciled resource comes back after the resync
// period even when nothing changed, the fallback for a change that was missed.
import type * as k8s from '@kubernetes/client-node';
import type { JetStreamManager } from '@nats-io/jetstream';
import { ConditionType, Reason } from '../api/conditions.ts';
import type { ResourceKind } from '../api/kinds.ts';
import { resolveSources } from '../api/sources.ts';
import type { Logger } from '../runtime/log.ts';
import {
  type Context,
  checksOf,
  forgetResource,
  isTerminal,
  type Outcome,
  type RawResource,
  resourceCache,
  writeStatus,
} from './context.ts';
import { finalizeEndpoint, reconcileEndpoint, rewriteReceiverReady } from './endpoints.ts';
import { type Cache, combined, Informer } from './informer.ts';
import { apiMessage, finalizer, isConflict, isNotFound, Kube } from './kube.ts';
import type { OperatorMetrics } from './metrics.ts';
import { WorkQueue } from './queue.ts';
import type { RenderOptions } from './render.ts';
import { SecretKeys } from './secrets.ts';
import {
  finalizeSubscription,
  reconcileSubscription,
  refreshSubscription,
  rewriteDispatcherReady,
} from './subscriptions.ts';
import { type Caches, parseKey, resourceKey, subscriptionsOf, triggers, writerOf } from './triggers.ts';

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
  /** How often every resource is reconciled and every cache listed again, changed or not (ms). */
  resyncMs?: number;
  /** First retry delay of a failed reconcile (ms); it doubles per failure. */
  retryBaseMs?: number;
  /** How long a new resource's first status waits for its pods (ms; context.ts, writeOrHoldStatus). */
  statusSettleMs?: number;
}

export interface Controller {
  /** Resolves once every cache has listed its objects and the workers run. */
  started: Promise<void>;
  stop(): Promise<void>;
}

export const defaultResyncMs = 10 * 60_000;

export function startController(options: ControllerOptions): Controller {
  const { kc, log, metrics } = options;
  // Endpoints first: a subscription needs its endpoints' streams.
  const queue = new WorkQueue({
    baseDelayMs: options.retryBaseMs,
    first: (key) => parseKey(key).kind === 'ProviderEndpoint',
  });
  const namespaces = options.namespaces?.length ? options.namespaces : [''];
  const resyncMs = options.resyncMs ?? defaultResyncMs;
  const kube = new Kube(kc);
  /** Changes seen while the reconcile that may have made them ran, by its key (see onChange). */
  const heldBack = new Map<string, { object: k8s.KubernetesObject; keys: string[]; statusOnly: boolean }[]>();
  const informers: Informer<k8s.KubernetesObject>[] = [];
  const caches = {} as Record<keyof Caches, Cache<unknown>>;
  for (const trigger of triggers(caches as Caches, options.render.natsSecret)) {
    const parts = namespaces.map((namespace) => {
      const informer = new Informer<k8s.KubernetesObject>({
        kc,
        kind: trigger.kind,
        namespace,
        labelSelector: trigger.labelSelector,
        metadataOnly: trigger.metadataOnly,
        resyncMs,
        log,
        onChange: (object, verb, previous) => {
          const keys = trigger.wakes(object, verb);
          const statusOnly = previous !== undefined && (trigger.statusOnly?.(object, previous) ?? false);
          // A change of what a running reconcile writes may be the echo of that very write, which the watch often
          // brings before the write's answer: it waits for the reconcile to end, and is dropped if it was one.
          const writer = verb === 'delete' ? undefined : writerOf(trigger.kind, object);
          if (writer && queue.isActive(writer)) {
            heldBack.set(writer, [...(heldBack.get(writer) ?? []), { object, keys, statusOnly }]);
            return;
          }
          for (const key of keys) queue.add(key, statusOnly);
        },
      });
      informers.push(informer);
      return informer;
    });
    caches[trigger.cache] = combined(parts);
  }

  const ctx: Context = {
    kube,
    jsm: options.jsm,
    render: options.render,
    metrics,
    log,
    statusIntervalMs: options.statusIntervalMs ?? 30_000,
    statusSettleMs: options.statusSettleMs ?? 2000,
    secretKeys: new SecretKeys((namespace, name) => kube.readSecret(namespace, name)),
    configMapKeys: new SecretKeys((namespace, name) => kube.readConfigMapKeys(namespace, name)),
    caches: caches as Caches,
  };
  const reconcileKey = reconciler(ctx, queue, resyncMs);

  let stopping = false;
  const workers: Promise<void>[] = [];
  const started = Promise.all(informers.map((i) => i.synced)).then(() => {
    if (stopping) return;
    for (const kind of ['ProviderEndpoint', 'WebhookSubscription'] as const) {
      const cache = kind === 'ProviderEndpoint' ? ctx.caches.endpoints : ctx.caches.subscriptions;
      for (const r of cache.list())
        for (const key of resourceKey(kind, r.metadata.namespace, r.metadata.name)) queue.add(key);
    }
    const work = async () => {
      for (let key = await queue.next(); key !== undefined; key = await queue.next()) {
        try {
          await reconcileKey(key);
        } finally {
          for (const change of heldBack.get(key) ?? []) {
            if (!kube.isOwnWrite(change.object)) for (const k of change.keys) queue.add(k, change.statusOnly);
          }
          heldBack.delete(key);
          queue.done(key);
        }
      }
    };
    for (let i = 0; i < (options.workers ?? 4); i++) workers.push(work());
    log.info({ namespaces: options.namespaces?.length ? options.namespaces : 'all' }, 'controller started');
  });

  return {
    started,
    async stop() {
      stopping = true;
      queue.close();
      await Promise.all(workers);
      for (const informer of informers) informer.stop();
    },
  };
}

/** One reconcile of a key: the resource from the cache, its reconciler, and what the queue does next. */
function reconciler(ctx: Context, queue: WorkQueue, resyncMs: number) {
  const { caches, log, metrics } = ctx;
  return async (key: string) => {
    const { kind, namespace, name } = parseKey(key);
    const cached = resourceCache(ctx, kind).get(name, namespace);
    if (!cached) {
      if (kind === 'WebhookSubscription') metrics.forget(namespace, name);
      queue.forget(key);
      return;
    }
    // A subscription whose endpoint is being reconciled waits for its stream, rather than failing to find it.
    const busy = kind === 'WebhookSubscription' && !consumerReady(cached) && activeEndpoint(caches, queue, cached);
    if (busy) {
      queue.addWhenDone(key, busy);
      return;
    }
    const raw = structuredClone(cached);
    if (queue.statusOnly(key) && !raw.metadata.deletionTimestamp && (await rewriteReady(ctx, kind, raw))) return;
    if (queue.refreshOnly(key) && !raw.metadata.deletionTimestamp && (await refresh(ctx, kind, raw))) {
      queue.addAfter(key, ctx.statusIntervalMs, 'refresh');
      return;
    }
    const started = performance.now();
    try {
      const outcome = await reconcile(ctx, kind, raw);
      const result = outcome.retry ? 'error' : outcome.terminal ? 'terminal' : 'success';
      metrics.reconciled(kind, result, (performance.now() - started) / 1000);
      // Its stream may be what a subscription was waiting for.
      if (kind === 'ProviderEndpoint' && !outcome.retry) {
        for (const s of subscriptionsOf(caches, cached)) {
          if (!consumerReady(s)) queue.add(`WebhookSubscription/${namespace}/${s.metadata.name}`);
        }
      }
      if (outcome.retry) queue.retry(key);
      else queue.forget(key);
      // The earlier of a retry and the next look wins.
      queue.addAfter(key, resyncMs);
      if (outcome.refreshAfterMs !== undefined) queue.addAfter(key, outcome.refreshAfterMs, 'refresh');
      if (outcome.statusAfterMs !== undefined) queue.addAfter(key, outcome.statusAfterMs, 'status');
    } catch (err) {
      const message = apiMessage(err);
      const terminal = isTerminal(err);
      metrics.reconciled(kind, terminal ? 'terminal' : 'error', (performance.now() - started) / 1000);
      const retryInMs = terminal ? undefined : queue.retry(key);
      if (terminal) queue.addAfter(key, resyncMs);
      // A conflict only means the resource changed while it was being reconciled: the retry sees the new one.
      if (isConflict(err)) return;
      log.warn({ kind, namespace, name, err: message, retryInMs, terminal }, 'reconcile failed');
      if (!raw.metadata.deletionTimestamp) {
        await reportFailure(ctx, raw, message).catch((e: unknown) => {
          log.warn({ kind, namespace, name, err: apiMessage(e) }, 'could not write the failure to status');
        });
      }
    }
  };
}

/**
 * After a status change of its Deployment alone (its pods became available, or stopped being): Ready written
 * again without a reconcile. False when that does not do, and a reconcile follows.
 */
const rewriteReady = (ctx: Context, kind: ResourceKind, raw: RawResource) =>
  statusTurn(ctx, kind, raw, 'could not write Ready; reconciling instead', async () => {
    const turn = await (kind === 'ProviderEndpoint' ? rewriteReceiverReady : rewriteDispatcherReady)(ctx, raw);
    if (turn === 'written') ctx.metrics.statusRewritten(kind);
    return turn !== 'reconcile';
  });

/**
 * A subscription's status refresh: its counters read again from JetStream, without a reconcile. False when that
 * does not do (an endpoint has no counters), and a reconcile follows.
 */
const refresh = (ctx: Context, kind: ResourceKind, raw: RawResource) =>
  statusTurn(ctx, kind, raw, 'could not refresh the status; reconciling instead', async () => {
    if (kind !== 'WebhookSubscription') return false;
    const done = await refreshSubscription(ctx, raw);
    if (done) ctx.metrics.statusRefreshed(kind);
    return done;
  });

/** A turn that writes status without a reconcile: false when it did not do, or failed (logged), so one follows. */
async function statusTurn(
  ctx: Context,
  kind: ResourceKind,
  raw: RawResource,
  failure: string,
  write: () => Promise<boolean>,
): Promise<boolean> {
  try {
    return await write();
  } catch (err) {
    ctx.log.warn({ kind, namespace: raw.metadata.namespace, name: raw.metadata.name, err: apiMessage(err) }, failure);
    return false;
  }
}

/** The key of an endpoint the subscription reads that a worker is reconciling now, if any. */
function activeEndpoint(caches: Caches, queue: WorkQueue, subscription: RawResource): string | undefined {
  const { namespace } = subscription.metadata;
  return resolveSources(subscription as never, caches.endpoints.list(namespace) as never)
    .map((source) => `ProviderEndpoint/${namespace}/${source.endpoint}`)
    .find((endpointKey) => queue.isActive(endpointKey));
}

const consumerReady = (subscription: RawResource) =>
  subscription.status?.conditions?.some((c) => c.type === ConditionType.ConsumerReady && c.status === 'True');

async function reconcile(ctx: Context, kind: ResourceKind, raw: RawResource): Promise<Outcome> {
  const finalizers = raw.metadata.finalizers ?? [];
  if (raw.metadata.deletionTimestamp) {
    if (!finalizers.includes(finalizer)) return {};
    await (kind === 'ProviderEndpoint' ? finalizeEndpoint : finalizeSubscription)(ctx, raw);
    forgetResource(raw.metadata.uid);
    try {
      await ctx.kube.patchMetadata(raw, { finalizers: finalizers.filter((f) => f !== finalizer) });
    } catch (err) {
      if (!isNotFound(err)) throw err; // a queued repeat of a deletion that has already finished
      return {};
    }
    ctx.log.info({ kind, namespace: raw.metadata.namespace, name: raw.metadata.name }, 'cleaned up');
    return {};
  }
  // A new resource's finalizer is written beside its first Kubernetes objects, which it owns (they go with it
  // whatever happens); each kind waits for it before it makes anything in JetStream, and before its status.
  const claimed = finalizers.includes(finalizer) ? Promise.resolve() : addFinalizer(ctx, kind, raw);
  const reconciled = (kind === 'ProviderEndpoint' ? reconcileEndpoint : reconcileSubscription)(ctx, raw, claimed);
  // Both settle before the reconcile ends, whichever fails.
  const [outcome, claim] = await Promise.allSettled([reconciled, claimed]);
  if (claim.status === 'rejected') throw claim.reason;
  if (outcome.status === 'rejected') throw outcome.reason;
  return outcome.value;
}

async function addFinalizer(ctx: Context, kind: ResourceKind, raw: RawResource): Promise<void> {
  const finalizers = raw.metadata.finalizers ?? [];
  const patched = await ctx.kube.patchMetadata(raw, { finalizers: [...finalizers, finalizer] });
  resourceCache(ctx, kind).assume(patched, raw.metadata.resourceVersion);
  raw.metadata.resourceVersion = patched.metadata.resourceVersion;
}

/** After a reconcile threw: Ready=False with the error (and an Event), the rest of the status as it was. */
async function reportFailure(ctx: Context, raw: RawResource, message: string) {
  const { conditions = [], ...fields } = raw.status ?? {};
  const checks = checksOf(conditions).filter((c) => c.type !== ConditionType.Reconciled);
  checks.push({ type: ConditionType.Reconciled, status: false, reason: Reason.ReconcileFailed, message });
  await writeStatus(ctx, raw, fields, checks, [ConditionType.Reconciled]);
}
