// WebhookSubscription → a consumer on each source stream, its dead-letter stream, and a dispatcher: ConfigMap and
// Deployment. Its status carries counters read from JetStream, refreshed every status interval.
import type * as k8s from '@kubernetes/client-node';
import { type ConsumerInfo, DeliverPolicy, JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import { parse } from 'yaml';
import { ConditionType, Reason } from '../api/conditions.ts';
import { kinds } from '../api/kinds.ts';
import type { ProviderEndpoint } from '../api/provider-endpoint.ts';
import { type ReplayStatus, replayAnnotation } from '../api/replay.ts';
import { resolveSources, type Source } from '../api/sources.ts';
import type { WebhookSubscription } from '../api/webhook-subscription.ts';
import { targetUrl } from '../dispatcher/target.ts';
import { consumerConfig } from '../jetstream/consumers.ts';
import { deadLetterStreamConfig } from '../jetstream/dead-letters.ts';
import { deadLetterStream, endpointStream, replayStream } from '../jetstream/layout.ts';
import { orderingStatus, orderingStream, orderingStreamConfig } from '../jetstream/ordering.ts';
import { deleteStream, isStreamNotFound } from '../jetstream/streams.ts';
import {
  applyObject,
  type Context,
  checksOf,
  deploymentCheck,
  ensureConsumerOf,
  ensureStreamOf,
  isTerminal,
  type Outcome,
  parseOrReport,
  type RawResource,
  type Rewrite,
  removeObjects,
  resolveSecrets,
  rewriteCheck,
  writeOrHoldStatus,
  writeStatus,
} from './context.ts';
import { matchEventTypes } from './event-types.ts';
import { deleteHistoryStreams, ensureHistoryStreams } from './history.ts';
import {
  dispatcherName,
  natsSecretRefs,
  renderSubscription,
  subscriptionConfigMapRefs,
  subscriptionSecretRefs,
} from './render.ts';
import { reconcileReplay } from './replay.ts';
import type { Check } from './status.ts';

const readyFrom: string[] = [
  ConditionType.FilterValid,
  ConditionType.SecretsResolved,
  ConditionType.ConsumerReady,
  ConditionType.EventTypesMatch,
  ConditionType.DispatcherReady,
];

/** `kubectl annotate webhooksubscription/<name> hookyard.io/resume=now` resumes a subscription a 410 paused. */
export const resumeAnnotation = 'hookyard.io/resume';

const errorMessage = (err: unknown) => (err instanceof Error ? err.message : String(err));
const notFound = (err: unknown) =>
  err instanceof JetStreamApiError &&
  (err.code === JetStreamApiCodes.StreamNotFound || err.code === JetStreamApiCodes.ConsumerNotFound);

/** `claimed`: resolves once the resource has the finalizer (controller.ts). */
export async function reconcileSubscription(ctx: Context, raw: RawResource, claimed: Promise<void>): Promise<Outcome> {
  const subscription = await parseOrReport<WebhookSubscription>(ctx, raw, claimed, readyFrom, [
    // The schema compiles the filter (so the webhook refuses one that does not); the operator names it apart.
    { field: 'spec.filter', type: ConditionType.FilterValid, reason: Reason.FilterInvalid },
  ]);
  if (!subscription) return {};
  const { namespace, name } = raw.metadata;
  const { spec } = subscription;
  const checks: Check[] = [];
  checks.push(filterCheck(spec.filter));
  const secrets = await resolveSecrets(
    ctx,
    namespace,
    [...subscriptionSecretRefs(spec), ...natsSecretRefs(ctx.render)],
    subscriptionConfigMapRefs(spec),
  );
  checks.push(secrets.check);

  const endpoints = ctx.caches.endpoints.list(namespace) as unknown as ProviderEndpoint[];
  const sources = resolveSources(subscription, endpoints);
  // The ConfigMap applied last lists where the consumers are; when it is what would be applied now, nothing moved.
  const configMap = ctx.caches.configMaps.get(dispatcherName(name), namespace);
  const objects = renderSubscription(subscription, sources, { ...ctx.render, secretsChecksum: secrets.checksum });
  const moved = configMap?.data?.['dispatcher.yaml'] !== objects.configMap.data?.['dispatcher.yaml'];
  const previous = configMap && moved ? previousSources(configMap) : undefined;
  if (moved) await removeConsumers(ctx, namespace, name, previous ?? [], sources);

  // A new subscription's ConfigMap is applied beside its finalizer and JetStream state; an existing one's after
  // its consumers, so that a source added is read from its newest event even if the operator stops in between.
  const [jetStream] = await Promise.all([
    claimed.then(() =>
      ensureJetStream(ctx, raw, subscription, sources, previous, deadLetterReplicas(endpoints, sources)),
    ),
    configMap ? undefined : applyObject(ctx, objects.configMap, ctx.caches.configMaps),
  ]);
  const { consumers, replay, deadLettered, ordering } = jetStream;
  if (raw.metadata.annotations?.[resumeAnnotation] !== undefined) await resume(ctx, raw, consumers);
  checks.push(consumerCheck(subscription, sources, consumers, jetStream.problem));
  checks.push(eventTypesCheck(spec.eventTypes, sources, endpoints));

  const counts = countersOf(ctx, raw, consumers);
  ctx.metrics.forget(
    namespace,
    name,
    sources.map((s) => s.endpoint),
  );

  if (configMap) await applyObject(ctx, objects.configMap, ctx.caches.configMaps);
  // The dispatcher starts only once it can run: its Secrets exist, its filter compiles and it has a source.
  const runnable = secrets.checksum !== undefined && checks[0]?.status === true && sources.length > 0;
  const deployment = runnable
    ? await applyObject(ctx, objects.deployment, ctx.caches.deployments)
    : ctx.caches.deployments.get(dispatcherName(name), namespace);
  checks.push(deploymentCheck(ConditionType.DispatcherReady, 'dispatcher', deployment));
  checks.push(targetCheck(spec.paused, consumers, counts.redelivered));

  const fields = { targetURL: targetUrl(spec.target, namespace), ...counts, deadLettered, ordering, replay };
  const held = await writeOrHoldStatus(ctx, raw, fields, checks, readyFrom, ConditionType.DispatcherReady);
  return {
    retry: jetStream.retry,
    terminal: jetStream.terminal,
    refreshAfterMs: ctx.statusIntervalMs,
    statusAfterMs: held ? ctx.statusSettleMs : undefined,
  };
}

/** The status counters of the consumers on the sources' streams, each also set in the operator's metrics. */
function countersOf(ctx: Context, raw: RawResource, consumers: SourceConsumer[]) {
  const { namespace, name } = raw.metadata;
  const counts = { pending: 0, ackPending: 0, redelivered: 0 };
  let lastAckTime: string | undefined;
  for (const { source, info } of consumers) {
    if (!info || source.endpoint === '') continue; // the replay stream's consumer has its own counts
    const c = { pending: info.num_pending, ackPending: info.num_ack_pending, redelivered: info.num_redelivered };
    ctx.metrics.consumer(namespace, name, source.endpoint, c);
    counts.pending += c.pending;
    counts.ackPending += c.ackPending;
    counts.redelivered += c.redelivered;
    const acked = info.ack_floor.last_active as unknown as string | undefined;
    if (acked && (!lastAckTime || Date.parse(acked) > Date.parse(lastAckTime))) lastAckTime = acked;
  }
  const acked = lastAckTime && !lastAckTime.startsWith('0001-') ? normalizeTime(lastAckTime) : undefined;
  return { ...counts, lastAckTime: acked };
}

/** The checks a status refresh works out again: the rest stay as the last reconcile wrote them. */
const refreshedChecks: string[] = [ConditionType.TargetReachable, ConditionType.DispatcherReady];

/**
 * The status refresh between reconciles (every status interval): the counters read again from JetStream (each
 * consumer, the dead letters, the ordering keys) and the status written when they, or the dispatcher's
 * availability, changed: no render, no apply, no stream set up. What the Kubernetes objects drift to comes as
 * watch events, each a reconcile. Returns false, and writes nothing, when it takes a reconcile: the status is not
 * of the current generation, a check other than those two fails, a resume or a replay waits, or a consumer or
 * stream is gone (JetStream lost it, or someone deleted it).
 */
export async function refreshSubscription(ctx: Context, raw: RawResource): Promise<boolean> {
  const { conditions = [], ...fields } = raw.status ?? {};
  const { namespace, name, annotations = {} } = raw.metadata;
  if (raw.status?.observedGeneration !== raw.metadata.generation) return false;
  const checks = checksOf(conditions);
  const target = checks.some((c) => c.type === ConditionType.TargetReachable);
  const failing = checks.some(
    (c) =>
      c.type === ConditionType.Reconciled ||
      (readyFrom.includes(c.type) && !refreshedChecks.includes(c.type) && c.status !== true),
  );
  const replay = raw.status?.replay as ReplayStatus | undefined;
  const replayWaits = annotations[replayAnnotation] !== undefined && (!replay || replay.phase === 'Sending');
  if (!target || failing || replayWaits || annotations[resumeAnnotation] !== undefined) return false;
  const subscription = await parseOrReport<WebhookSubscription>(ctx, raw, Promise.resolve(), readyFrom);
  if (!subscription) return true; // reported as invalid
  const { spec } = subscription;
  // Sources named in the spec are taken as named (one that is missing fails ConsumerReady, so no refresh comes
  // here): listing every endpoint of the namespace for each refresh was a third of the idle CPU with 1000 of them.
  const names =
    spec.sources?.map((s) => s.endpoint) ??
    resolveSources(subscription, ctx.caches.endpoints.list(namespace) as unknown as ProviderEndpoint[]).map(
      (s) => s.endpoint,
    );
  const sources: Source[] = [...new Set(names), ''].map((endpoint) => ({ namespace, endpoint }));
  let read: [SourceConsumer[], number | undefined, JetStreamParts['ordering']];
  try {
    read = await Promise.all([
      Promise.all(
        sources.map(async (source) => {
          if (source.endpoint)
            return { source, info: await ctx.jsm.consumers.info(endpointStream(namespace, source.endpoint), name) };
          // The replay stream exists only once the subscription was replayed (src/operator/history.ts).
          const info = await ctx.jsm.consumers.info(replayStream(namespace, name), name).catch((err: unknown) => {
            if (isStreamNotFound(err)) return undefined;
            throw err;
          });
          return { source, info };
        }),
      ),
      spec.deadLetter.enabled
        ? ctx.jsm.streams.info(deadLetterStream(namespace, name)).then((info) => info.state.messages)
        : undefined,
      spec.ordering ? orderingStatus(ctx.jsm, namespace, name) : undefined,
    ]);
  } catch (err) {
    if (err instanceof JetStreamApiError) return false; // the reconcile makes again what is gone, or says why not
    throw err;
  }
  const [consumers, deadLettered, ordering] = read;
  ctx.metrics.deadLetters(namespace, name, deadLettered);
  const counts = countersOf(ctx, raw, consumers);
  const deployment = ctx.caches.deployments.get(dispatcherName(name), namespace);
  const now: Record<string, Check> = {
    [ConditionType.TargetReachable]: targetCheck(spec.paused, consumers, counts.redelivered),
    [ConditionType.DispatcherReady]: deploymentCheck(ConditionType.DispatcherReady, 'dispatcher', deployment),
  };
  const refreshed = checks.map((c) => now[c.type] ?? c);
  await writeStatus(ctx, raw, { ...fields, ...counts, deadLettered, ordering }, refreshed, readyFrom);
  return true;
}

type SourceConsumer = { source: Source; info?: ConsumerInfo; problem?: string };

interface JetStreamParts {
  /** The consumer on each source stream, then the one on the replay stream (endpoint ''). */
  consumers: SourceConsumer[];
  replay?: ReplayStatus;
  deadLettered?: number;
  ordering?: { blockedKeys: number; blockedSince?: string };
  /** What is wrong with the history, dead-letter or ordering streams. */
  problem?: string;
  retry: boolean;
  terminal: boolean;
}

/**
 * The consumers, the history, dead-letter and ordering streams, all asked for at once: none needs another, so a
 * new subscription's JetStream requests take the time of the slowest instead of their sum.
 */
async function ensureJetStream(
  ctx: Context,
  raw: RawResource,
  subscription: WebhookSubscription,
  sources: Source[],
  previous: Source[] | undefined,
  replicas: number,
): Promise<JetStreamParts> {
  const { namespace, name } = raw.metadata;
  const { spec } = subscription;
  const parts: JetStreamParts = {
    consumers: [],
    replay: raw.status?.replay as ReplayStatus,
    retry: false,
    terminal: false,
  };
  const problems: { history?: string; deadLetter?: string; ordering?: string } = {};
  const failed = (part: keyof typeof problems, what: string, err: unknown) => {
    if (isTerminal(err)) parts.terminal = true;
    else parts.retry = true;
    problems[part] = `${what}: ${errorMessage(err)}`;
  };
  const sourceConsumer = async (source: Source): Promise<SourceConsumer> => {
    const config = consumerConfig(namespace, name, source.endpoint, spec);
    // A source added to a subscription that already runs is read from now on: an endpoint relabelled out of a
    // selector and back, say, must not send its whole stream to the target again.
    if (previous && !previous.some((p) => p.endpoint === source.endpoint)) config.deliver_policy = DeliverPolicy.New;
    try {
      return { source, info: await ensureConsumerOf(ctx, raw, endpointStream(namespace, source.endpoint), config) };
    } catch (err) {
      // A missing stream may come (its endpoint is being reconciled); a refused config stays refused.
      if (notFound(err) || !isTerminal(err)) parts.retry = true;
      else parts.terminal = true;
      const problem = notFound(err)
        ? `the stream of ProviderEndpoint "${source.endpoint}" does not exist yet`
        : `consumer on ProviderEndpoint "${source.endpoint}": ${errorMessage(err)}`;
      return { source, problem };
    }
  };
  const history = async () => {
    let info: ConsumerInfo | undefined;
    try {
      info = await ensureHistoryStreams(ctx, raw, spec, replicas);
      parts.replay = await reconcileReplay(ctx, raw, subscription, sources, replicas);
    } catch (err) {
      failed('history', 'history streams', err);
    }
    return info;
  };
  const deadLetters = async () => {
    if (!spec.deadLetter.enabled) return ctx.metrics.deadLetters(namespace, name, undefined);
    try {
      const config = deadLetterStreamConfig(namespace, name, spec.deadLetter.maxAge, replicas);
      parts.deadLettered = (await ensureStreamOf(ctx, raw, config)).state.messages;
      ctx.metrics.deadLetters(namespace, name, parts.deadLettered);
    } catch (err) {
      failed('deadLetter', 'dead-letter stream', err);
    }
  };
  const ordering = async () => {
    if (!spec.ordering) return;
    try {
      await ensureStreamOf(ctx, raw, orderingStreamConfig(namespace, name, spec.deadLetter.maxAge, replicas));
      parts.ordering = await orderingStatus(ctx.jsm, namespace, name);
    } catch (err) {
      failed('ordering', 'ordering stream', err);
    }
  };
  const [fromSources, replayConsumer] = await Promise.all([
    Promise.all(sources.map(sourceConsumer)),
    history(),
    deadLetters(),
    ordering(),
  ]);
  const replayed = replayConsumer ? [{ source: { namespace, endpoint: '' }, info: replayConsumer }] : [];
  parts.consumers = [...fromSources, ...replayed];
  parts.problem = [problems.deadLetter, problems.ordering].filter(Boolean).join('; ') || problems.history;
  return parts;
}

/** Ready again from the dispatcher Deployment's availability alone, or 'reconcile' when that does not do. */
export async function rewriteDispatcherReady(ctx: Context, raw: RawResource): Promise<Rewrite> {
  const deployment = ctx.caches.deployments.get(dispatcherName(raw.metadata.name), raw.metadata.namespace);
  const check = deploymentCheck(ConditionType.DispatcherReady, 'dispatcher', deployment);
  return await rewriteCheck(ctx, raw, check, readyFrom);
}

/** The dead-letter stream's replicas: those of the most replicated source stream (1 without sources). */
function deadLetterReplicas(endpoints: ProviderEndpoint[], sources: Source[]): number {
  const replicas = sources.map(
    (s) => endpoints.find((e) => e.metadata.name === s.endpoint)?.spec.stream?.replicas ?? 1,
  );
  return Math.max(1, ...replicas);
}

/** RFC 3339 with whole seconds, as Kubernetes writes times; JetStream reports nanoseconds. */
const normalizeTime = (time: string) => new Date(Date.parse(time)).toISOString().replace(/\.\d+Z$/, 'Z');

/** A parsed subscription's filter compiles (parseOrReport reported one that does not as FilterInvalid). */
function filterCheck(filter: string | undefined): Check {
  return filter
    ? { type: ConditionType.FilterValid, status: true, reason: Reason.Compiled, message: 'The filter compiles.' }
    : {
        type: ConditionType.FilterValid,
        status: true,
        reason: Reason.NoFilter,
        message: 'Every event of the chosen types.',
      };
}

function consumerCheck(
  subscription: WebhookSubscription,
  sources: Source[],
  consumers: { source: Source; problem?: string }[],
  deadLetterProblem: string | undefined,
): Check {
  const type = ConditionType.ConsumerReady;
  const namespace = subscription.metadata.namespace ?? 'default';
  const missing = (subscription.spec.sources ?? [])
    .map((s) => s.endpoint)
    .filter((endpoint) => !sources.some((s) => s.endpoint === endpoint));
  if (missing.length > 0) {
    const names = missing.map((m) => `"${m}"`).join(', ');
    return {
      type,
      status: false,
      reason: Reason.SourceNotFound,
      message: `ProviderEndpoint ${names} not found in namespace ${namespace}: create it or fix spec.sources.`,
    };
  }
  if (sources.length === 0) {
    const labels = JSON.stringify(subscription.spec.sourceSelector?.matchLabels ?? {});
    return {
      type,
      status: false,
      reason: Reason.NoSources,
      message: `No ProviderEndpoint in namespace ${namespace} has the labels ${labels} of spec.sourceSelector.`,
    };
  }
  const problem = consumers.find((c) => c.problem)?.problem ?? deadLetterProblem;
  if (problem) return { type, status: false, reason: Reason.ConsumerNotReady, message: `${problem}.` };
  const names = sources.map((s) => s.endpoint).join(', ');
  return { type, status: true, reason: Reason.Ready, message: `Consuming from ProviderEndpoint ${names}.` };
}

/** Whether the subscription's eventTypes can match anything its sources produce, naming what they do produce. */
function eventTypesCheck(eventTypes: string[], sources: Source[], endpoints: ProviderEndpoint[]): Check {
  const type = ConditionType.EventTypesMatch;
  const withSpecs = sources.flatMap((source) => {
    const endpoint = endpoints.find((e) => e.metadata.name === source.endpoint);
    return endpoint ? [{ ...source, spec: endpoint.spec }] : [];
  });
  const { matches, produced } = matchEventTypes(eventTypes, withSpecs);
  if (matches) {
    return { type, status: true, reason: Reason.Matching, message: 'spec.eventTypes match what the sources send.' };
  }
  const lists = produced.map((p) => `ProviderEndpoint "${p.endpoint}" sends ${p.types.join(', ') || 'no events'}`);
  return {
    type,
    status: false,
    reason: Reason.NoMatchingEventTypes,
    message: `spec.eventTypes ${JSON.stringify(eventTypes)} match no event the sources send (${lists.join('; ')}): use these types, or a pattern such as order.*.`,
  };
}

function targetCheck(paused: boolean, consumers: { info?: ConsumerInfo }[], redelivered: number): Check {
  const type = ConditionType.TargetReachable;
  if (paused) {
    return { type, status: 'Unknown', reason: Reason.Paused, message: 'spec.paused is true: nothing is sent.' };
  }
  if (consumers.some((c) => c.info?.paused)) {
    return {
      type,
      status: false,
      reason: Reason.TargetGone,
      message: `The target answered 410 Gone, so deliveries are paused. Fix the target, then resume with: kubectl annotate webhooksubscription <name> ${resumeAnnotation}=now`,
    };
  }
  if (redelivered > 0) {
    return {
      type,
      status: false,
      reason: Reason.Retrying,
      message: `${redelivered} events are being retried: hookyard_dispatcher_failures_total and the dispatcher's log say why.`,
    };
  }
  return { type, status: true, reason: Reason.Delivering, message: 'No delivery is failing.' };
}

/** Resumes paused consumers, then removes the annotation that asked for it. */
async function resume(ctx: Context, raw: RawResource, consumers: { source: Source; info?: ConsumerInfo }[]) {
  const { namespace, name } = raw.metadata;
  for (const { source, info } of consumers) {
    if (!info?.paused) continue;
    await ctx.jsm.consumers.resume(info.stream_name, name);
    info.paused = false;
    ctx.log.info({ namespace, subscription: name, endpoint: source.endpoint }, 'resumed the consumer');
  }
  await ctx.kube.patchMetadata(raw, { annotations: { [resumeAnnotation]: null } });
}

/** The sources in the dispatcher ConfigMap the operator applied last: where its consumers are. */
function previousSources(configMap: k8s.V1ConfigMap | undefined): Source[] {
  const text = configMap?.data?.['dispatcher.yaml'];
  if (!text) return [];
  try {
    return ((parse(text) as { sources?: Source[] }).sources ?? []).filter((s) => typeof s?.endpoint === 'string');
  } catch {
    return [];
  }
}

/** Deletes the subscription's consumers on streams it no longer reads (all of `previous` when `current` is empty). */
async function removeConsumers(ctx: Context, namespace: string, name: string, previous: Source[], current: Source[]) {
  for (const { endpoint } of previous) {
    if (current.some((s) => s.endpoint === endpoint)) continue;
    try {
      await ctx.jsm.consumers.delete(endpointStream(namespace, endpoint), name);
      ctx.log.info({ namespace, subscription: name, endpoint }, 'deleted the consumer of a former source');
    } catch (err) {
      if (!notFound(err)) throw err;
    }
  }
}

/**
 * Before the resource goes: its consumer on every stream of the namespace (its sources may have changed while the
 * operator was away), its dead-letter stream unless spec.deadLetter.deletionPolicy is Retain, and its objects.
 */
export async function finalizeSubscription(ctx: Context, raw: RawResource): Promise<void> {
  const { namespace, name } = raw.metadata;
  // The dispatcher first: one of its pods restarting meanwhile would make its streams and consumers again.
  await removeObjects(ctx, namespace, dispatcherName(name), [kinds.Deployment, kinds.ConfigMap]);
  const prefix = endpointStream(namespace, '');
  const streams: Source[] = [];
  for await (const stream of ctx.jsm.streams.names(`hookyard.${namespace}.>`)) {
    if (stream.startsWith(prefix)) streams.push({ namespace, endpoint: stream.slice(prefix.length) });
  }
  await removeConsumers(ctx, namespace, name, streams, []);
  const policy = (raw.spec.deadLetter as { deletionPolicy?: string } | undefined)?.deletionPolicy ?? 'Delete';
  if (policy === 'Delete') await deleteStream(ctx.jsm, deadLetterStream(namespace, name));
  await deleteStream(ctx.jsm, orderingStream(namespace, name)); // bookkeeping only: nothing to retain
  await deleteHistoryStreams(ctx, namespace, name);
  ctx.metrics.forget(namespace, name);
}
