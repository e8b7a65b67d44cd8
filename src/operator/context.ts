// What both reconcilers share: the caches the informers fill, the clients, and the steps every resource takes
// (its Secrets, applying its objects, reading a Deployment's availability).
import { createHash } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import type * as k8s from '@kubernetes/client-node';
import { type ConsumerConfig, JetStreamApiError, type JetStreamManager, type StreamConfig } from '@nats-io/jetstream';
import type { Condition, ConfigMapKeyRef, SecretKeyRef } from '../api/common.ts';
import { ConditionType, Reason } from '../api/conditions.ts';
import type { KindRef, ResourceKind } from '../api/kinds.ts';
import { InvalidResource, parseResource } from '../api/validate.ts';
import { ensureConsumer } from '../jetstream/consumers.ts';
import { ensureStream } from '../jetstream/streams.ts';
import type { Logger } from '../runtime/log.ts';
import type { Cache } from './informer.ts';
import type { Kube } from './kube.ts';
import type { OperatorMetrics } from './metrics.ts';
import type { RenderOptions } from './render.ts';
import type { SecretKeys } from './secrets.ts';
import { type Check, conditionsFor, readyReason, statusChanged } from './status.ts';

export type { Cache };

/** A Hookyard resource as the API server returns it: validated by the CRD's schema, parsed again before use. */
export interface RawResource extends k8s.KubernetesObject {
  kind: ResourceKind;
  metadata: k8s.V1ObjectMeta & { name: string; namespace: string };
  spec: Record<string, unknown>;
  status?: Record<string, unknown> & { conditions?: Condition[] };
}

export interface Context {
  kube: Kube;
  jsm: JetStreamManager;
  render: Omit<RenderOptions, 'secretsChecksum'>;
  metrics: OperatorMetrics;
  log: Logger;
  /** How often a subscription's counters are read again from JetStream (ms). */
  statusIntervalMs: number;
  /** How long a new resource's first status waits for its pods (writeOrHoldStatus; 0: not at all). */
  statusSettleMs: number;
  /** The values of referenced Secrets, as digests: the cache holds Secrets' metadata only. */
  secretKeys: SecretKeys;
  /** The same for referenced ConfigMaps (a CA bundle). */
  configMapKeys: SecretKeys;
  caches: {
    endpoints: Cache<RawResource>;
    subscriptions: Cache<RawResource>;
    secrets: Cache<k8s.KubernetesObject>;
    /** The operator's own ConfigMaps (the workloads' configs). */
    configMaps: Cache<k8s.V1ConfigMap>;
    /** Every ConfigMap's metadata, for those a resource references. */
    referencedConfigMaps: Cache<k8s.KubernetesObject>;
    deployments: Cache<k8s.V1Deployment>;
    services: Cache<k8s.V1Service>;
    ingresses: Cache<k8s.V1Ingress>;
  };
}

/**
 * What a reconcile asks of the queue: a status refresh after a delay (besides the full reconcile after the resync
 * period), or a retry with backoff. A problem that retrying cannot fix (JetStream refusing a config) is reported in
 * status, not retried.
 */
export type Outcome = { refreshAfterMs?: number; statusAfterMs?: number; retry?: boolean; terminal?: boolean };

/**
 * Whether retrying cannot help: the API server refused what was sent as invalid, or JetStream refused a config
 * (any refusal but its 503, unavailable). Such a failure is reported once in status and looked at again only with
 * the resync or a change, as controller-runtime's TerminalError, instead of being retried with backoff forever.
 */
export function isTerminal(err: unknown): boolean {
  if (err instanceof JetStreamApiError) return err.status !== 503;
  const code = (err as { code?: unknown }).code;
  return code === 400 || code === 422;
}

export interface ResolvedSecrets {
  check: Check;
  /** A digest of the referenced values, so a changed Secret rolls the pods; undefined while any is missing. */
  checksum?: string;
}

/**
 * Whether every referenced Secret key (and ConfigMap key) exists; the message names the first missing one (never a
 * value).
 */
export async function resolveSecrets(
  ctx: Context,
  namespace: string,
  refs: SecretKeyRef[],
  configMapRefs: ConfigMapKeyRef[] = [],
): Promise<ResolvedSecrets> {
  const hash = createHash('sha256');
  const missing: string[] = [];
  const sources = [
    { kind: 'Secret', refs, cache: ctx.caches.secrets, keys: ctx.secretKeys },
    { kind: 'ConfigMap', refs: configMapRefs, cache: ctx.caches.referencedConfigMaps, keys: ctx.configMapKeys },
  ];
  for (const { kind, refs: some, cache, keys } of sources) {
    const sorted = [...some].sort((a, b) => `${a.name}/${a.key}`.localeCompare(`${b.name}/${b.key}`));
    for (const { name, key } of sorted) {
      const resourceVersion = cache.get(name, namespace)?.metadata?.resourceVersion;
      const digests = await keys.digests(namespace, name, resourceVersion);
      const digest = digests?.get(key);
      if (!digests) missing.push(`${kind} "${name}" not found in namespace ${namespace}`);
      else if (digest === undefined) missing.push(`${kind} "${name}" has no key "${key}"`);
      // Secrets hash as they always have, so an operator upgrade rolls no pods.
      else hash.update(`${kind === 'Secret' ? '' : `${kind}:`}${name}/${key}\0${digest}\0`);
    }
  }
  if (missing.length > 0) {
    const more = missing.length > 1 ? ` (and ${missing.length - 1} more)` : '';
    return {
      check: {
        type: ConditionType.SecretsResolved,
        status: false,
        reason: Reason.SecretNotFound,
        message: `${missing[0]}${more}: create it; the workload is not deployed until then.`,
      },
    };
  }
  const count = refs.length + configMapRefs.length;
  const what = configMapRefs.length === 0 ? 'Secret keys' : 'Secret and ConfigMap keys';
  const message = count === 0 ? 'No Secrets referenced.' : `All ${count} referenced ${what} exist.`;
  return {
    check: { type: ConditionType.SecretsResolved, status: true, reason: Reason.Resolved, message },
    checksum: hash.digest('hex'),
  };
}

/** Whether the resource was never reconciled (no status yet): its streams and consumers most likely do not exist. */
const fresh = (raw: RawResource) => raw.status?.observedGeneration === undefined;

/**
 * Creates or updates a stream. For a resource never reconciled the create goes first, one JetStream request
 * instead of a look-up and a create; when it fails (the stream exists with another config, say), the look-up
 * follows and says what to do.
 */
export async function ensureStreamOf(ctx: Context, raw: RawResource, config: Partial<StreamConfig> & { name: string }) {
  const created = fresh(raw) ? await ctx.jsm.streams.add(config).catch(() => undefined) : undefined;
  return created ?? (await ensureStream(ctx.jsm, config));
}

/** The same for a consumer: a create (refused when it exists with another config), else the look-up first. */
export async function ensureConsumerOf(
  ctx: Context,
  raw: RawResource,
  stream: string,
  config: Partial<ConsumerConfig> & { durable_name: string },
) {
  const created = fresh(raw) ? await ctx.jsm.consumers.add(stream, config).catch(() => undefined) : undefined;
  return created ?? (await ensureConsumer(ctx.jsm, stream, config));
}

const appliedHash = 'hookyard.io/applied-hash';

const isEmptyObject = (value: unknown) =>
  value !== null && typeof value === 'object' && Object.keys(value as object).length === 0;

/**
 * Whether every field of `wanted` has the same value in `actual` (fields the API server adds are ignored). An empty
 * list or object is what the API server leaves out (a projected volume with no sources comes back without them),
 * so it holds where `actual` has none: otherwise such an object would be applied again at every reconcile.
 */
export function holds(actual: unknown, wanted: unknown): boolean {
  if (wanted === undefined) return true;
  const empty = Array.isArray(wanted) ? wanted.length === 0 : isEmptyObject(wanted);
  if (empty && (actual === undefined || actual === null)) return true;
  if (Array.isArray(wanted)) {
    return Array.isArray(actual) && actual.length === wanted.length && wanted.every((w, i) => holds(actual[i], w));
  }
  if (wanted !== null && typeof wanted === 'object') {
    if (actual === null || typeof actual !== 'object') return false;
    return Object.entries(wanted).every(([k, v]) => holds((actual as Record<string, unknown>)[k], v));
  }
  return isDeepStrictEqual(actual, wanted);
}

/**
 * Server-side applies an object unless the cached copy already is what would be applied: same applied hash (so
 * a field dropped from what is wanted is still removed) and no drift in any field the operator sets. So a
 * restarted operator, or the periodic status refresh, writes nothing.
 */
export async function applyObject<T extends k8s.KubernetesObject>(
  ctx: Context,
  wanted: T,
  cache: Cache<T>,
): Promise<T> {
  const hash = createHash('sha256').update(JSON.stringify(wanted)).digest('hex').slice(0, 16);
  const object = { ...wanted, metadata: { ...wanted.metadata, annotations: { ...wanted.metadata?.annotations } } };
  object.metadata.annotations[appliedHash] = hash;
  const cached = cache.get(wanted.metadata?.name ?? '', wanted.metadata?.namespace);
  if (cached && holds(cached, object)) return cached;
  const applied = await ctx.kube.apply(object);
  cache.assume(applied, cached?.metadata?.resourceVersion);
  return applied;
}

/** The cache of a kind of resource. */
export const resourceCache = (ctx: Context, kind: ResourceKind) =>
  kind === 'ProviderEndpoint' ? ctx.caches.endpoints : ctx.caches.subscriptions;

/** Deletes an object the operator made, if the cache has it. */
export async function removeObject(ctx: Context, object: k8s.KubernetesObject, cache: Cache<k8s.KubernetesObject>) {
  const { name = '', namespace } = object.metadata ?? {};
  if (cache.get(name, namespace)) await ctx.kube.remove(object);
}

/**
 * Deletes a resource's objects of these kinds (all named `name`), whether or not the cache has them yet: an object
 * applied just before the deletion may not be there.
 */
export async function removeObjects(ctx: Context, namespace: string, name: string, kinds: KindRef[]) {
  for (const { apiVersion, kind } of kinds) await ctx.kube.remove({ apiVersion, kind, metadata: { name, namespace } });
}

/** Whether a Deployment the operator applied has pods serving, as its conditions and counts say. */
export function deploymentCheck(type: string, noun: string, deployment: k8s.V1Deployment | undefined): Check {
  if (!deployment) return { type, status: false, reason: Reason.NotDeployed, message: `The ${noun} is not deployed.` };
  const wanted = deployment.spec?.replicas ?? 1;
  if (wanted === 0) {
    return {
      type,
      status: false,
      reason: Reason.ScaledToZero,
      message: `The ${noun} has 0 replicas: set replicas above 0.`,
    };
  }
  const available = deployment.status?.availableReplicas ?? 0;
  const current = (deployment.status?.observedGeneration ?? 0) >= (deployment.metadata?.generation ?? 0);
  const counts = `${available}/${wanted} ${noun} pods available`;
  if (available > 0 && current) return { type, status: true, reason: Reason.Available, message: `${counts}.` };
  const stuck = deployment.status?.conditions?.find((c) => c.type === 'Progressing' && c.status === 'False');
  return {
    type,
    status: false,
    reason: stuck ? Reason.ProgressDeadlineExceeded : Reason.PodsNotReady,
    message: `${counts}${stuck?.message ? `: ${stuck.message}` : '; see kubectl describe deployment for why'}.`,
  };
}

const parsed = new Map<string, { key: string; value: unknown }>();

/** Forgets what is kept of a deleted resource: its parsed spec, and a status held back (writeOrHoldStatus). */
export function forgetResource(uid: string | undefined): void {
  parsed.delete(uid ?? '');
  held.delete(uid ?? '');
}

/** A field whose problems have a condition of their own instead of SpecValid (a filter: FilterValid). */
export interface FieldCondition {
  field: string;
  type: string;
  reason: string;
}

/**
 * The resource parsed with the same schemas dev mode and the admission webhook use. The API server has checked the
 * CRD's schema, but not what only the webhook checks (a filter that does not compile, say): a resource that got
 * past a cluster without the webhook is reported in its status and left alone. When every problem is in a field of
 * `fieldConditions`, that field's condition says so (FilterValid: FilterInvalid); otherwise SpecValid: InvalidSpec.
 */
export async function parseOrReport<T>(
  ctx: Context,
  raw: RawResource,
  claimed: Promise<void>,
  readyFrom: string[],
  fieldConditions: FieldCondition[] = [],
): Promise<T | undefined> {
  // Parsing runs the CEL rules, the larger part of a reconcile's own CPU: the spec of one generation is parsed once.
  const key = `${raw.metadata.uid}/${raw.metadata.generation}`;
  const cached = parsed.get(raw.metadata.uid ?? '');
  if (cached?.key === key) return { ...(cached.value as object), metadata: raw.metadata } as T;
  try {
    const value = parseResource(raw);
    parsed.set(raw.metadata.uid ?? '', { key, value });
    return value as T;
  } catch (err) {
    if (!(err instanceof InvalidResource)) throw err;
    const checks = invalidSpecChecks(err.problems, fieldConditions);
    await claimed;
    await writeStatus(ctx, raw, {}, checks, [ConditionType.SpecValid, ...readyFrom]);
    return undefined;
  }
}

/**
 * The conditions of a spec the schemas refuse: when every problem is in a field of `fieldConditions`, that field's
 * condition (FilterValid: FilterInvalid); otherwise SpecValid: InvalidSpec with all of them (a CRD older than the
 * operator lets through what the operator's schemas refuse: Helm does not upgrade CRDs).
 */
export function invalidSpecChecks(problems: string[], fieldConditions: FieldCondition[]): Check[] {
  const fieldOf = (problem: string) => fieldConditions.find((f) => problem.startsWith(`${f.field}: `));
  if (!problems.every(fieldOf)) {
    return [{ type: ConditionType.SpecValid, status: false, reason: Reason.InvalidSpec, message: problems.join('; ') }];
  }
  return fieldConditions
    .map((f): Check => {
      const message = problems.filter((p) => fieldOf(p) === f).join('; ');
      return { type: f.type, status: false, reason: f.reason, message };
    })
    .filter((check) => check.message !== '');
}

/** A new resource's first status, held back by writeOrHoldStatus, by the resource's uid. */
const held = new Map<string, { generation?: number; fields: Record<string, unknown>; checks: Check[] }>();

/**
 * Writes the status, or, for a resource never given one that waits only for the pods of its Deployment (`pods`:
 * that check's type), holds it back for ctx.statusSettleMs and returns true; the caller asks for a status-only turn
 * then (Outcome.statusAfterMs). When the pods are available before it (rewriteCheck), a single write says Ready,
 * instead of one that says PodsNotReady and another that says Ready: for a burst of new resources the second
 * write was most of what the API server did beyond a minimal controller's work (docs/benchmarks.md).
 */
export async function writeOrHoldStatus(
  ctx: Context,
  raw: RawResource,
  fields: Record<string, unknown>,
  checks: Check[],
  readyFrom: string[],
  pods: string,
): Promise<boolean> {
  const waiting = checks.filter((c) => readyFrom.includes(c.type) && c.status !== true);
  const onlyPods = waiting.length === 1 && waiting[0]?.type === pods && waiting[0].reason === Reason.PodsNotReady;
  if (ctx.statusSettleMs > 0 && fresh(raw) && onlyPods) {
    held.set(raw.metadata.uid ?? '', { generation: raw.metadata.generation, fields, checks });
    return true;
  }
  await writeStatus(ctx, raw, fields, checks, readyFrom);
  return false;
}

/**
 * Writes the status when it differs from what the resource has (an unchanged write would still move the
 * resourceVersion), and records an Event when Ready turns to a problem or back from one; true when it wrote. A
 * status held back is dropped: this one replaces it.
 */
export async function writeStatus(
  ctx: Context,
  raw: RawResource,
  fields: Record<string, unknown>,
  checks: Check[],
  readyFrom: string[],
): Promise<boolean> {
  held.delete(raw.metadata.uid ?? '');
  const generation = raw.metadata.generation;
  const conditions = conditionsFor(checks, readyFrom, raw.status?.conditions, generation);
  const status: Record<string, unknown> = { observedGeneration: generation, ...fields, conditions };
  if (!statusChanged(raw.status, status)) return false;
  // A merge patch keeps fields it does not name: the ones no longer set are removed with null.
  const removed = Object.keys(raw.status ?? {}).filter((key) => status[key] === undefined);
  const patched = await ctx.kube.patchStatus(raw, {
    ...status,
    ...Object.fromEntries(removed.map((key) => [key, null])),
  });
  resourceCache(ctx, raw.kind).assume(patched, raw.metadata.resourceVersion);
  const ready = conditions[0] as Condition;
  const before = readyReason(raw.status?.conditions);
  if (ready.reason === before) return true;
  // Events are for what a user has to act on: a problem, and its end. Pods still starting are not one.
  const isProblem = (reason: string | undefined) =>
    reason !== undefined && reason !== Reason.Ready && !progressing.has(reason);
  const problem = isProblem(ready.reason);
  const recovered = !problem && isProblem(before);
  if (!problem && !recovered) return true;
  await ctx.kube.event(raw, problem ? 'Warning' : 'Normal', ready.reason, ready.message).catch((err: unknown) => {
    ctx.log.warn({ err: String(err) }, 'could not record an Event');
  });
  return true;
}

/** The checks a status's conditions were written from (all but Ready, which summarizes them). */
export function checksOf(conditions: Condition[]): Check[] {
  return conditions
    .filter((c) => c.type !== ConditionType.Ready)
    .map((c) => ({
      type: c.type,
      status: c.status === 'Unknown' ? ('Unknown' as const) : c.status === 'True',
      reason: c.reason,
      message: c.message,
    }));
}

/** What a status-only turn came to: the status written, found as it should be, or a reconcile needed. */
export type Rewrite = 'written' | 'unchanged' | 'reconcile';

/**
 * Writes the status again with one check replaced (its Deployment's availability, read from the cache) and the
 * rest as the last reconcile wrote them, or held them back: no JetStream call, no apply. Writes nothing, and says
 * 'reconcile', when that is not enough: its status is not of its current generation, or a check other than this
 * one keeps it from Ready.
 */
export async function rewriteCheck(
  ctx: Context,
  raw: RawResource,
  check: Check,
  readyFrom: string[],
): Promise<Rewrite> {
  const replaced = (checks: Check[]) => checks.map((c) => (c.type === check.type ? check : c));
  const waiting = held.get(raw.metadata.uid ?? '');
  if (waiting && waiting.generation === raw.metadata.generation) {
    await writeStatus(ctx, raw, waiting.fields, replaced(waiting.checks), readyFrom);
    return 'written';
  }
  const { conditions = [], ...fields } = raw.status ?? {};
  if (raw.status?.observedGeneration !== raw.metadata.generation) return 'reconcile';
  const checks = checksOf(conditions);
  const others = checks.filter((c) => c.type !== check.type);
  if (others.length === checks.length) return 'reconcile';
  if (others.some((c) => c.type === ConditionType.Reconciled || (readyFrom.includes(c.type) && c.status !== true))) {
    return 'reconcile';
  }
  return (await writeStatus(ctx, raw, fields, replaced(checks), readyFrom)) ? 'written' : 'unchanged';
}

/** Ready reasons of a resource on its way to Ready, not stuck. */
const progressing = new Set<string>([Reason.PodsNotReady, Reason.NotDeployed]);
