// Delivers one WebhookSubscription: a durable pull consumer per source stream, the filter, the format, signing,
// the HTTP attempt, and what follows it (ack, nak with a delay, dead letter, pause). Attempts are counted from
// JetStream's delivery count, so they survive restarts; a retry is a nak with a delay, so it does too. The
// phases live beside this file: gate.ts (flow gate and pull sizes), leases.ts (kept alive), outcome.ts (pure
// decisions), retries.ts (retries known across replicas), dead-letters.ts, acks.ts (ack batching).
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type Consumer,
  type ConsumerInfo,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  jetstream,
  jetstreamManager,
} from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Registry } from 'prom-client';
import pkg from '../../package.json' with { type: 'json' };
import type { Source } from '../api/sources.ts';
import type { WebhookSubscription } from '../api/webhook-subscription.ts';
import { compileFilter } from '../filter/cel.ts';
import {
  consumerConfig,
  ensureConsumer,
  replayConsumerConfig,
  retryBacklog,
  subjectMatches,
} from '../jetstream/consumers.ts';
import { deadLetterStreamConfig } from '../jetstream/dead-letters.ts';
import { attemptStreamConfig } from '../jetstream/history.ts';
import {
  deadLetterStream,
  endpointOfStream,
  endpointStream,
  endpointSubjects,
  eventFilterSubject,
  headers as h,
  replayStream,
} from '../jetstream/layout.ts';
import { clearDeadKeys, orderingStreamConfig } from '../jetstream/ordering.ts';
import { ensureStream, isStreamNotFound } from '../jetstream/streams.ts';
import { durationMs } from '../runtime/duration.ts';
import type { Logger } from '../runtime/log.ts';
import { mapSecrets, resolveSecrets, type SecretStore } from '../runtime/secrets.ts';
import type { TraceContext, Tracer } from '../runtime/tracing.ts';
import { AckBatcher } from './acks.ts';
import { createDeadLetters, type DeadLetterOrdering } from './dead-letters.ts';
import { headerBlock, type StoredEvent, storedEvent } from './event.ts';
import { type Formatted, formatEvent } from './format.ts';
import { flowGate, pullSize, type SourceWindow } from './gate.ts';
import { createHistory } from './history.ts';
import { Leases } from './leases.ts';
import { type DispatcherMetrics, dispatcherMetrics } from './metrics.ts';
import { startOrderedIntake } from './ordered-intake.ts';
import {
  type AttemptResult,
  attemptOutcome,
  beforeAttempt,
  decide,
  describeResult,
  retryPolicy,
  statusClass,
  targetFailed,
} from './outcome.ts';
import { retrySubject, sharedRetries } from './retries.ts';
import { createSigner } from './signing.ts';
import { Target, targetTlsOptions, targetUrl } from './target.ts';
import { endAttemptSpan, startAttemptSpan, tracedSubscription } from './traces.ts';

export { deadLetterHeaders } from './dead-letters.ts';

export const userAgent = `Hookyard/${pkg.version}`;

export interface DispatcherOptions {
  subscription: WebhookSubscription;
  sources: Source[];
  secrets: SecretStore;
  /** Mounted ConfigMaps (a CA bundle), read like the Secrets; none by default. */
  configMaps?: SecretStore;
  nc: NatsConnection;
  registry: Registry;
  logger: Logger;
  /** How long one pull waits for events before asking again (ms). */
  fetchExpiresMs?: number;
  /** How often the consumer's pause state is read for the paused metric (ms). */
  statusIntervalMs?: number;
  /** With tracing on: a span per delivery attempt, the child of the receiver's, and traceparent sent. */
  tracer?: Tracer;
}

export interface Dispatcher {
  /** Stops fetching, waits for deliveries in flight, then closes the target's connections. */
  stop(): Promise<void>;
}

/** Builds the request for one attempt and sends it: shared by delivery and dead-letter replay. */
export function createDelivery(
  subscription: WebhookSubscription,
  secrets: SecretStore,
  configMaps: SecretStore = mapSecrets({}),
) {
  const spec = subscription.spec;
  const namespace = subscription.metadata.namespace ?? 'default';
  const signer = spec.signing
    ? createSigner(spec.signing, resolveSecrets(secrets, spec.signing.secretRefs))
    : undefined;
  const extraHeaders: Record<string, string> = {};
  for (const header of spec.target.headers ?? []) {
    const ref = header.valueFrom?.secretKeyRef;
    extraHeaders[header.name.toLowerCase()] = ref
      ? (resolveSecrets(secrets, [ref])[0] as Buffer).toString('utf8').trim()
      : (header.value ?? '');
  }
  const target = new Target({
    url: targetUrl(spec.target, namespace),
    timeoutMs: durationMs(spec.target.timeout),
    connections: spec.concurrency,
    allowPrivateAddresses: spec.target.allowPrivateAddresses,
    tls: targetTlsOptions(spec.target.tls, secrets, configMaps),
  });
  /** The request of one attempt: the headers in the order they are sent, set one by one (no spreads: one object per delivery). */
  function post(formatted: Formatted, event: StoredEvent, attempt: number, deliveryId: string, trace?: TraceContext) {
    const headers: Record<string, string> = Object.assign({}, extraHeaders, formatted.headers);
    headers['user-agent'] = userAgent;
    headers['hookyard-delivery-id'] = deliveryId;
    headers['hookyard-attempt'] = String(attempt);
    headers['hookyard-event-id'] = event.id;
    headers['hookyard-event-type'] = event.type;
    if (event.replay) headers['hookyard-replay'] = event.replay;
    if (event.test) headers['hookyard-test'] = 'true';
    if (signer) Object.assign(headers, signer(event.id, formatted.body));
    if (trace) {
      headers.traceparent = trace.traceparent;
      if (trace.tracestate) headers.tracestate = trace.tracestate;
    }
    return target.send({ method: spec.target.method, headers, body: formatted.body });
  }
  return {
    target,
    send(
      event: StoredEvent,
      attempt: number,
      deliveryId = defaultDeliveryId(event, attempt),
      trace?: TraceContext,
    ): Promise<AttemptResult> {
      const formatted = formatEvent(event, spec.format); // raw: no promise (format.ts)
      if (formatted instanceof Promise) return formatted.then((f) => post(f, event, attempt, deliveryId, trace));
      return post(formatted, event, attempt, deliveryId, trace);
    },
  };
}

/** A replayed event gets delivery ids of its own: a target that drops repeated delivery ids still takes it. */
const defaultDeliveryId = (event: StoredEvent, attempt: number) =>
  event.replay ? `${event.id}:replay-${event.replay}:${attempt}` : `${event.id}:${attempt}`;

/** One source stream of the subscription, as the intake sees it. */
export interface SourceLoop extends SourceWindow {
  stream: string;
  /** `<namespace>/<endpoint>`, for events stored without a Hookyard-Endpoint header. */
  endpoint: string;
  consumer: Consumer;
  /** Event-type patterns the dispatcher checks itself when JetStream could not (overlapping patterns). */
  clientSideTypes?: string[];
  /** The replay stream's loop, not a source's. */
  replay?: true;
}

/**
 * Delivers one subscription. Each event goes through typed phases: the intake pulls no more than the flow gate
 * can take (and leases what it pulls, so it is kept alive); the event is matched against the event types and the
 * filter; the gate admits it (a slot, the breaker, a token); one attempt; its outcome (ack, retry, pause, dead
 * letter); acks are batched. The phases' decisions are pure functions (outcome.ts, gate.ts).
 */
export async function startDispatcher(options: DispatcherOptions): Promise<Dispatcher> {
  const { subscription, nc, logger } = options;
  const spec = subscription.spec;
  const namespace = subscription.metadata.namespace ?? 'default';
  const name = subscription.metadata.name;
  const log = logger.child({ namespace, subscription: name });
  const metrics = dispatcherMetrics(options.registry, namespace, name);
  const jsm: JetStreamManager = await jetstreamManager(nc);
  const js: JetStreamClient = jetstream(nc);
  if (spec.deadLetter.enabled) await ensureStream(jsm, deadLetterStreamConfig(namespace, name, spec.deadLetter.maxAge));
  if (spec.history.enabled) await ensureStream(jsm, attemptStreamConfig(namespace, name, spec.history));
  const sources = await openSources(options, jsm, js);
  const replay = await openReplay(jsm, js, namespace, name, spec);
  if (replay) sources.push(replay);
  if (sources.some((s) => s.paused) || spec.paused) metrics.paused(true);

  // Shared with the phases, which pause every loop on a 410; the replay stream's is added when it comes.
  const loops = sources.map((s) => s.loop);
  const deliver = deliveryPhases(options, { js, jsm, metrics, log, sources: loops });
  const fetchExpiresMs = options.fetchExpiresMs ?? 5000;
  const ordering = spec.ordering;
  let intake: Intake;
  if (!ordering) intake = startIntake(loops, deliver, { paused: spec.paused, fetchExpiresMs, log });
  else if (spec.paused) intake = startIntake([], deliver, { paused: true, fetchExpiresMs, log });
  else {
    await ensureStream(jsm, orderingStreamConfig(namespace, name, spec.deadLetter.maxAge));
    const options_ = { spec: { ...spec, ordering }, namespace, subscription: name, nc, jsm, js, log, fetchExpiresMs };
    intake = await startOrderedIntake(loops, deliver, { ...options_, registry: options.registry });
  }
  let checking = false;
  const status = setInterval(async () => {
    if (checking) return;
    checking = true;
    try {
      // The operator makes the replay stream at the subscription's first replay request; from then on it is one
      // more source. Until then it is looked for here, so a subscription never replayed has no stream for it.
      if (!loops.some((loop) => loop.replay)) {
        const opened = await openReplay(jsm, js, namespace, name, spec);
        if (opened && !intake.stopping) {
          loops.push(opened.loop);
          await intake.add(opened.loop);
          log.info({ stream: opened.loop.stream }, 'replay stream found: reading it');
        }
      }
      let paused = spec.paused;
      for (const loop of loops) {
        if (!loop.replay) paused ||= (await jsm.consumers.info(loop.stream, name)).paused === true;
      }
      metrics.paused(paused);
      // A 410 pauses the replay consumer too; the sources' consumers say when it is over (resumed by the operator
      // or by hand), and the replay consumer follows them.
      const replay = loops.find((loop) => loop.replay);
      if (!paused && replay && (await jsm.consumers.info(replay.stream, name)).paused === true)
        await jsm.consumers.resume(replay.stream, name);
    } catch {
      // the next round tries again
    } finally {
      checking = false;
    }
  }, options.statusIntervalMs ?? 10_000);
  status.unref();
  log.info({ sources: loops.map((loop) => loop.stream), target: deliver.targetOrigin }, 'dispatcher started');

  return {
    async stop() {
      if (intake.stopping) return;
      clearInterval(status);
      await intake.stop(); // no new pulls; waiting events handed back, deliveries in flight finished
      await deliver.close();
      log.info('dispatcher stopped');
    },
  };
}

/** The durable consumer of each source, created or updated in place. */
async function openSources(options: DispatcherOptions, jsm: JetStreamManager, js: JetStreamClient) {
  const spec = options.subscription.spec;
  const name = options.subscription.metadata.name;
  const out: { loop: SourceLoop; paused: boolean }[] = [];
  for (const source of options.sources) {
    const config = consumerConfig(source.namespace, name, source.endpoint, spec);
    const info = await ensureConsumer(jsm, endpointStream(source.namespace, source.endpoint), config);
    // Patterns JetStream could not take as filter subjects (they overlap) are checked here instead.
    const all = endpointSubjects(source.namespace, source.endpoint);
    const patterns = spec.eventTypes.map((p) => eventFilterSubject(source.namespace, source.endpoint, p));
    const clientSideTypes = config.filter_subjects.includes(all) && !patterns.includes(all) ? patterns : undefined;
    const consumer = await js.consumers.get(info.stream_name, name);
    const endpoint = `${source.namespace}/${source.endpoint}`;
    const loop = sourceLoop(spec, { stream: info.stream_name, endpoint, consumer, clientSideTypes });
    out.push({ loop, paused: info.paused === true });
  }
  return out;
}

/**
 * The replay stream's source, once the operator has made the stream (at the subscription's first replay request;
 * undefined before): what a replay request queued there goes through the same phases as the sources' events.
 */
async function openReplay(
  jsm: JetStreamManager,
  js: JetStreamClient,
  namespace: string,
  name: string,
  spec: WebhookSubscription['spec'],
): Promise<{ loop: SourceLoop; paused: boolean } | undefined> {
  let info: ConsumerInfo;
  try {
    info = await ensureConsumer(jsm, replayStream(namespace, name), replayConsumerConfig(namespace, name, spec));
  } catch (err) {
    if (isStreamNotFound(err)) return undefined;
    throw err;
  }
  const consumer = await js.consumers.get(info.stream_name, name);
  const loop = sourceLoop(spec, { stream: info.stream_name, endpoint: '', consumer, replay: true });
  return { loop, paused: info.paused === true };
}

/**
 * The window of one source or of the replay stream, alike. With a rate limit too: at most `concurrency` wait for
 * their tokens, each under its lease, and one pulled at a time would make a target slower than the rate get one
 * delivery at a time (seen on the real node).
 */
function sourceLoop(
  spec: WebhookSubscription['spec'],
  of: Omit<SourceLoop, 'cap' | 'outstanding' | 'held'>,
): SourceLoop {
  return { ...of, cap: spec.concurrency, outstanding: 0, held: 0 };
}

/** What the dispatcher asks of its intake, ordered or not. */
export interface Intake {
  readonly stopping: boolean;
  /** Reads one more source from now on (the replay stream, once it exists). */
  add(source: SourceLoop): Promise<void>;
  stop(): Promise<void>;
}

/** What became of one event handed to `deliver`: settled (acked, terminated, or handed back at once), or waiting for a retry. */
export type DeliveryOutcome = 'settled' | 'retrying';

/**
 * What per-key ordering needs to hear from the delivery phases (src/dispatcher/ordering.ts). Its acks and terms
 * are confirmed (`confirm`, not batched): the key's next event starts only once JetStream has settled this one.
 */
export interface OrderingHooks extends DeadLetterOrdering {
  /** Before anything settles the event (ack, term) or attempts it: its retry record, if any, is removed. */
  beforeAttempt(msg: JsMsg): Promise<void>;
  /** Before the nak of a retry (or of a 410 pause): the event is recorded as waiting. */
  beforeRetry(msg: JsMsg): Promise<void>;
  /** Whether the event's key already has a dead letter and the rest of the key follows it (DeadLetterRest). */
  keyDeadLettered(msg: JsMsg): Promise<boolean>;
  /** Right before the attempt: false when this replica may have lost its pin (out of contact with NATS). */
  inContact(): boolean;
}

/**
 * The phases after an event is pulled: match, gate, attempt, outcome, dead letter, ack. `deliver(msg, source)`
 * runs them for one event and settles it (ack, nak or term) whatever happens; it never rejects.
 */
function deliveryPhases(
  options: DispatcherOptions,
  ctx: { js: JetStreamClient; jsm: JetStreamManager; metrics: DispatcherMetrics; log: Logger; sources: SourceLoop[] },
) {
  const { subscription, nc } = options;
  const { metrics, log } = ctx;
  const spec = subscription.spec;
  const namespace = subscription.metadata.namespace ?? 'default';
  const name = subscription.metadata.name;
  const policy = retryPolicy(spec.retry);
  const filter = spec.filter ? compileFilter(spec.filter) : undefined;
  const delivery = createDelivery(subscription, options.secrets, options.configMaps);
  const traced = tracedSubscription(subscription, delivery.target.url);
  const deadLetters = createDeadLetters({ spec, namespace, subscription: name, js: ctx.js, metrics, log, userAgent });
  const acks = new AckBatcher<JsMsg>();
  const history = createHistory({
    enabled: spec.history.enabled,
    namespace,
    subscription: name,
    nc,
    log,
    onFailure: metrics.attemptRecordFailed,
    later: (write) => acks.later(write),
  });
  const leases = new Leases<JsMsg>(durationMs(spec.ackWait));
  const { gate, breaker } = flowGate(spec, metrics, log);
  const retries = sharedRetries(nc, retrySubject(namespace, name), {
    capacity: (options.sources.length + 1) * (spec.concurrency + retryBacklog), // the sources and the replay stream
    graceMs: durationMs(spec.ackWait),
    onSize: metrics.scheduledRetries,
  });

  const phase: AdmitContext = { filter, policy, acks, metrics, deadLetters, history, gate };

  async function pauseConsumers() {
    const until = new Date(Date.now() + 100 * 365 * 24 * 3600 * 1000);
    for (const source of ctx.sources) await ctx.jsm.consumers.pause(source.stream, name, until);
    metrics.paused(true);
  }

  /** One attempt and what follows it. Runs holding a gate slot. */
  async function attemptAndSettle(msg: JsMsg, event: StoredEvent, ordering?: OrderingHooks): Promise<DeliveryOutcome> {
    const attempt = msg.info.deliveryCount;
    const startedAt = Date.now();
    const span = options.tracer && startAttemptSpan(options.tracer, traced, event, attempt);
    const started = performance.now();
    const result = await delivery.send(event, attempt, undefined, span?.context);
    const seconds = (performance.now() - started) / 1000;
    const decision = decide(result, attempt, policy);
    if (span) endAttemptSpan(span, result, attemptOutcome[decision.action]);
    if (targetFailed(result, decision)) breaker?.failure();
    else breaker?.success();
    metrics.attempt(attemptOutcome[decision.action], statusClass(result), seconds);
    if (event.replay) metrics.replayAttempt(attemptOutcome[decision.action]);
    const record = { number: attempt, startedAt, durationMs: seconds * 1000, replay: event.replay };
    history.record(event, record, result, decision);
    // Made only for a line that is written: most deliveries log nothing.
    const logged = () => ({ eventId: event.id, eventType: event.type, attempt, result: describeResult(result) });
    switch (decision.action) {
      case 'ack': {
        if (ordering) await ordering.confirm(msg, '+ACK');
        else acks.ack(msg);
        const receivedAt = event.receivedAt ? Date.parse(event.receivedAt) : Number.NaN;
        metrics.delivered(Number.isNaN(receivedAt) ? undefined : (Date.now() - receivedAt) / 1000);
        if (log.isLevelEnabled('debug')) log.debug(logged(), 'delivered');
        return 'settled';
      }
      case 'retry':
        await ordering?.beforeRetry(msg);
        retries.schedule(msg, decision.delayMs);
        metrics.retry();
        log.info({ ...logged(), delayMs: decision.delayMs }, 'delivery failed, retry scheduled');
        return 'retrying';
      case 'pause':
        log.error(logged(), 'target answered 410 Gone: subscription paused until resumed');
        await pauseConsumers();
        await ordering?.beforeRetry(msg);
        retries.schedule(msg, null);
        return 'retrying';
      case 'dead-letter':
        await deadLetters.store(msg, attempt, decision.reason, result, ordering);
        return 'settled';
    }
  }

  /**
   * Runs every phase for one event. `event`: the event already read from `msg` (ordering reads it for the key);
   * `ordering`: the hooks of an ordered subscription.
   */
  async function deliver(
    msg: JsMsg,
    source: SourceLoop,
    event = storedEventOf(msg, source),
    ordering?: OrderingHooks,
  ): Promise<DeliveryOutcome> {
    leases.take(msg);
    try {
      const attempt = msg.info.deliveryCount;
      if (attempt > 1 && !retries.redelivered(msg)) metrics.possibleDuplicate();
      if (ordering) await ordering.beforeAttempt(msg);
      const admitted = admit(phase, msg, source, event, ordering); // mostly no promise (admit)
      if (!(typeof admitted === 'boolean' ? admitted : await admitted)) return 'settled';
      try {
        return await attemptAndSettle(msg, event, ordering);
      } finally {
        gate.done();
      }
    } catch (err) {
      // NATS trouble while acking or dead-lettering: hand the event out again shortly; nothing is lost.
      log.error(
        { error: (err as Error).message, seq: msg.seq },
        'delivery bookkeeping failed; event will be redelivered',
      );
      try {
        retries.schedule(msg, 1000);
      } catch {
        // the connection is gone: JetStream hands the event out again after ackWait
      }
      return 'retrying';
    } finally {
      leases.release(msg);
    }
  }

  return {
    deliver,
    leases,
    gate,
    breaker,
    targetOrigin: delivery.target.url.origin,
    /** After the intake stopped: waiting events are handed back, pending acks written, connections closed. */
    async close() {
      retries.close();
      leases.stop();
      acks.flush();
      await delivery.target.close();
      await deadLetters.close();
      await history.close();
    },
  };
}
export type DeliveryPhases = ReturnType<typeof deliveryPhases>;

/** What deciding whether to attempt an event needs. */
interface AdmitContext {
  filter: ReturnType<typeof compileFilter> | undefined;
  policy: ReturnType<typeof retryPolicy>;
  acks: AckBatcher<JsMsg>;
  metrics: DispatcherMetrics;
  deadLetters: ReturnType<typeof createDeadLetters>;
  history: ReturnType<typeof createHistory>;
  gate: ReturnType<typeof flowGate>['gate'];
}

/**
 * Match and gate: whether the event is attempted now (true), or was settled without an attempt (false). Without a
 * filter or ordering, and with a slot free at the gate, the answer is no promise: each promise is a turn of the
 * microtask queue, and a delivery went through about ten (docs/benchmarks.md).
 */
function admit(
  ctx: AdmitContext,
  msg: JsMsg,
  source: SourceLoop,
  event: StoredEvent,
  ordering?: OrderingHooks,
): boolean | Promise<boolean> {
  const { filter } = ctx;
  const typeMatches = !source.clientSideTypes || source.clientSideTypes.some((p) => subjectMatches(p, msg.subject));
  if (!typeMatches || !filter) return admitMatched(ctx, msg, event, typeMatches, ordering);
  const matches = (body: unknown) => filter({ type: event.type, headers: event.originalHeaders, body });
  return event.view().then((body) => admitMatched(ctx, msg, event, matches(body), ordering));
}

/** `admit` once the event types and the filter have been checked (`matches`). */
function admitMatched(
  ctx: AdmitContext,
  msg: JsMsg,
  event: StoredEvent,
  matches: boolean,
  ordering?: OrderingHooks,
): boolean | Promise<boolean> {
  const { policy, acks, metrics, deadLetters, history, gate } = ctx;
  const attempt = msg.info.deliveryCount;
  switch (beforeAttempt(attempt, matches, policy)) {
    case 'skip':
      acks.ack(msg);
      metrics.filtered();
      return false;
    case 'exhausted':
      return deadLetters.store(msg, attempt - 1, 'exhausted', undefined, ordering).then(() => {
        history.notAttempted(event, attempt, 'exhausted');
        return false;
      });
    case 'attempt':
      if (ordering) return admitOrdered(ctx, msg, event, ordering);
      if (gate.tryAdmit()) return true;
      return gate.admit().then((admitted) => {
        if (!admitted) msg.nak(); // stopping: not attempted, handed straight to whoever runs next
        return admitted;
      });
  }
}

/** The gate of an ordered subscription: not while its key has a dead letter, nor once out of contact with NATS. */
async function admitOrdered(
  ctx: AdmitContext,
  msg: JsMsg,
  event: StoredEvent,
  ordering: OrderingHooks,
): Promise<boolean> {
  const { deadLetters, gate } = ctx;
  if (await ordering.keyDeadLettered(msg)) {
    await deadLetters.store(msg, msg.info.deliveryCount - 1, 'ordering', undefined, ordering);
    ctx.history.notAttempted(event, msg.info.deliveryCount, 'ordering');
    return false;
  }
  if (!(gate.tryAdmit() || (await gate.admit()))) {
    msg.nak(); // stopping: not attempted, handed straight to whoever runs next
    return false;
  }
  if (!ordering.inContact()) {
    // The wait at the gate may have outlasted the pin: another replica may have this key now.
    gate.cancel();
    throw new Error('out of contact with NATS: not attempted');
  }
  return true;
}

/** The event a stream message holds, with its receive time and endpoint. */
export function storedEventOf(msg: JsMsg, source: SourceLoop): StoredEvent {
  const receivedAt = new Date(msg.info.timestampNanos / 1e6);
  return storedEvent({ data: msg.data, headers: headerBlock(msg) ?? msg.headers, receivedAt }, source.endpoint);
}

/**
 * The fetch phase: per source, pulls of at most what the window and the breaker allow (`pullSize`), each event
 * handed to `deliver` as it arrives, so no event sits in a buffer unleased. Stopping ends the pulls, refuses what
 * still waits at the gate (nak'ed at once), and waits for the deliveries in flight.
 */
function startIntake(
  sources: SourceLoop[],
  phases: DeliveryPhases,
  options: { paused: boolean; fetchExpiresMs: number; log: Logger },
) {
  let stopping = false;
  const running = new Set<Promise<unknown>>();
  const openPulls = new Set<{ stop(): void }>();
  // One promise that every waiting source loop shares, replaced each time it is resolved.
  let wakeUp: () => void = () => {};
  let changed = new Promise<void>((ok) => (wakeUp = ok));
  const wake = () => {
    wakeUp();
    changed = new Promise<void>((ok) => (wakeUp = ok));
  };

  function receive(msg: JsMsg, source: SourceLoop) {
    if (stopping) {
      msg.nak(); // not attempted: hand it straight to whoever runs next
      return;
    }
    source.held++;
    const p = phases.deliver(msg, source).finally(() => {
      source.held--;
      running.delete(p);
      wake();
    });
    running.add(p);
  }

  async function pull(source: SourceLoop, size: number) {
    source.outstanding += size;
    let received = 0;
    try {
      const messages = await source.consumer.fetch({ max_messages: size, expires: options.fetchExpiresMs });
      if (stopping) messages.stop();
      openPulls.add(messages);
      try {
        for await (const msg of messages) {
          received++;
          source.outstanding--;
          receive(msg, source);
        }
      } finally {
        openPulls.delete(messages);
      }
    } catch (err) {
      if (!stopping) {
        options.log.warn({ error: (err as Error).message, stream: source.stream }, 'pull failed; retrying');
        await sleep(500);
      }
    } finally {
      source.outstanding -= size - received;
      wake();
    }
  }

  async function run(source: SourceLoop) {
    if (options.paused) return; // spec.paused: nothing is pulled until the operator starts it unpaused
    while (!stopping) {
      const breaker = phases.breaker?.state;
      const size = pullSize(source, breaker, phases.gate.waiting);
      if (size > 0) void pull(source, size);
      // Every settled event wakes the loop; an open breaker turns half-open by the clock alone, so it is polled.
      else if (breaker === undefined || breaker === 'closed') await changed;
      else await Promise.race([changed, sleep(100)]);
    }
  }

  const runs = sources.map(run);
  return {
    get stopping() {
      return stopping;
    },
    async add(source: SourceLoop) {
      if (!stopping) runs.push(run(source));
    },
    async stop() {
      stopping = true;
      for (const p of openPulls) p.stop();
      phases.gate.close();
      wake();
      await Promise.all(runs);
      while (running.size > 0) await Promise.all([...running]);
    },
  };
}

/** Sends every dead letter of the subscription to the target again; each one is removed only after a 2xx. */
export async function replayDeadLetters(options: {
  subscription: WebhookSubscription;
  secrets: SecretStore;
  configMaps?: SecretStore;
  nc: NatsConnection;
  logger: Logger;
  tracer?: Tracer;
}): Promise<{ replayed: number; failed: number }> {
  const { subscription, nc } = options;
  const namespace = subscription.metadata.namespace ?? 'default';
  const stream = deadLetterStream(namespace, subscription.metadata.name);
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  const info = await jsm.streams.info(stream).catch((err) => {
    if (isStreamNotFound(err)) return undefined;
    throw err;
  });
  const total = info?.state.messages ?? 0;
  if (total === 0) {
    await forgetDeadKeys(subscription, jsm);
    return { replayed: 0, failed: 0 };
  }
  const delivery = createDelivery(subscription, options.secrets, options.configMaps);
  const traced = tracedSubscription(subscription, delivery.target.url);
  let replayed = 0;
  let failed = 0;
  try {
    const ordered = await js.consumers.get(stream);
    const messages = await ordered.consume();
    for await (const m of messages) {
      const event = storedEvent(m, endpointOfStream(m.headers?.get(h.sourceStream) ?? ''));
      const attempt = Number(m.headers?.get(h.attempts) || '0') + 1;
      const span = options.tracer && startAttemptSpan(options.tracer, traced, event, attempt);
      const result = await delivery.send(event, attempt, `${event.id}:replay:${m.seq}`, span?.context);
      const delivered = result.kind === 'Response' && result.status >= 200 && result.status < 300;
      if (span) endAttemptSpan(span, result, delivered ? 'delivered' : 'dead_lettered');
      if (delivered) {
        await jsm.streams.deleteMessage(stream, m.seq);
        replayed++;
      } else {
        failed++;
        options.logger.warn({ eventId: event.id, result: describeResult(result) }, 'replay failed; dead letter kept');
      }
      if (m.info.pending === 0) break;
    }
    messages.stop();
  } finally {
    await delivery.target.close();
  }
  if (failed === 0) await forgetDeadKeys(subscription, jsm);
  return { replayed, failed };
}

/** With onDeadLetter DeadLetterRest: once no dead letter is left, the keys that had one are delivered again. */
async function forgetDeadKeys(subscription: WebhookSubscription, jsm: JetStreamManager) {
  if (subscription.spec.ordering?.onDeadLetter !== 'DeadLetterRest') return;
  await clearDeadKeys(jsm, subscription.metadata.namespace ?? 'default', subscription.metadata.name);
}
