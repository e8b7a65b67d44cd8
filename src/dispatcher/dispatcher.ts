// Delivers one WebhookSubscription: a durable pull consumer per source stream, the filter, the format, signing,
// the HTTP attempt, and what follows it (ack, nak with a delay, dead letter, pause). Attempts are counted from
// JetStream's delivery count, so they survive restarts; a retry is a nak with a delay, so it does too.
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type Consumer,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  jetstream,
  jetstreamManager,
} from '@nats-io/jetstream';
import { type MsgHdrs, type NatsConnection, headers as natsHeaders } from '@nats-io/transport-node';
import type { Registry } from 'prom-client';
import pkg from '../../package.json' with { type: 'json' };
import type { Source } from '../api/sources.ts';
import type { WebhookSubscription } from '../api/webhook-subscription.ts';
import { compileFilter } from '../filter/cel.ts';
import { consumerConfig, ensureConsumer, subjectMatches } from '../jetstream/consumers.ts';
import { deadLetterStreamConfig } from '../jetstream/dead-letters.ts';
import {
  deadLetterStream,
  deadLetterSubject,
  endpointOfStream,
  endpointStream,
  endpointSubjects,
  eventFilterSubject,
  headers as h,
} from '../jetstream/layout.ts';
import { ensureStream } from '../jetstream/streams.ts';
import { durationMs } from '../runtime/duration.ts';
import type { Logger } from '../runtime/log.ts';
import { resolveSecrets, type SecretStore } from '../runtime/secrets.ts';
import { type StoredEvent, storedEvent } from './event.ts';
import { CircuitBreaker, circuitStateValue, TokenBucket } from './flow.ts';
import { formatEvent } from './format.ts';
import { dispatcherMetrics } from './metrics.ts';
import { type AttemptResult, decide, describeResult, retryPolicy, statusClass } from './outcome.ts';
import { createSigner } from './signing.ts';
import { Target, targetUrl } from './target.ts';

export const userAgent = `Hookyard/${pkg.version}`;

export interface DispatcherOptions {
  subscription: WebhookSubscription;
  sources: Source[];
  secrets: SecretStore;
  nc: NatsConnection;
  registry: Registry;
  logger: Logger;
  /** How long one pull waits for events before asking again (ms). */
  fetchExpiresMs?: number;
  /** How often the consumer's pause state is read for the paused metric (ms). */
  statusIntervalMs?: number;
}

export interface Dispatcher {
  /** Stops fetching, waits for deliveries in flight, then closes the target's connections. */
  stop(): Promise<void>;
}

/** Builds the request for one attempt and sends it: shared by delivery and dead-letter replay. */
export function createDelivery(subscription: WebhookSubscription, secrets: SecretStore) {
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
  });
  return {
    target,
    async send(event: StoredEvent, attempt: number, deliveryId = `${event.id}:${attempt}`): Promise<AttemptResult> {
      const formatted = await formatEvent(event, spec.format);
      const headers: Record<string, string> = {
        ...extraHeaders,
        ...formatted.headers,
        'user-agent': userAgent,
        'hookyard-delivery-id': deliveryId,
        'hookyard-attempt': String(attempt),
        'hookyard-event-id': event.id,
        'hookyard-event-type': event.type,
        ...signer?.(event.id, formatted.body),
      };
      return target.send({ method: spec.target.method, headers, body: formatted.body });
    },
  };
}

/** Headers of a dead letter: the original ones, and why and after how many attempts it failed. */
export function deadLetterHeaders(
  original: MsgHdrs | undefined,
  info: {
    eventId: string;
    receivedAt: Date;
    attempts: number;
    stream: string;
    sequence: number;
    result?: AttemptResult;
    error?: string;
  },
): MsgHdrs {
  const out = natsHeaders();
  if (original) {
    for (const key of original.keys()) {
      // Nats-* headers steer the publish itself (dedup id, expectations); they are not part of the event.
      if (key.toLowerCase().startsWith('nats-')) continue;
      for (const value of original.values(key)) out.append(key, value);
    }
  }
  out.set(h.deadLetterEventId, info.eventId);
  out.set(h.receivedAt, info.receivedAt.toISOString());
  if (info.result?.kind === 'Response') out.set(h.lastStatus, String(info.result.status));
  out.set(h.lastError, (info.error ?? (info.result ? describeResult(info.result) : 'unknown')).slice(0, 512));
  out.set(h.attempts, String(info.attempts));
  out.set(h.sourceStream, info.stream);
  out.set(h.sourceSequence, String(info.sequence));
  return out;
}

export async function startDispatcher(options: DispatcherOptions): Promise<Dispatcher> {
  const { subscription, nc, logger } = options;
  const spec = subscription.spec;
  const namespace = subscription.metadata.namespace ?? 'default';
  const name = subscription.metadata.name;
  const log = logger.child({ namespace, subscription: name });
  const metrics = dispatcherMetrics(options.registry, namespace, name);
  const policy = retryPolicy(spec.retry);
  const filter = spec.filter ? compileFilter(spec.filter) : undefined;
  const delivery = createDelivery(subscription, options.secrets);
  const fetchExpiresMs = options.fetchExpiresMs ?? 5000;

  const jsm: JetStreamManager = await jetstreamManager(nc);
  const js: JetStreamClient = jetstream(nc);
  if (spec.deadLetter.enabled) await ensureStream(jsm, deadLetterStreamConfig(namespace, name, spec.deadLetter.maxAge));

  interface Loop {
    stream: string;
    /** `<namespace>/<endpoint>`, for events stored without a Hookyard-Endpoint header. */
    endpoint: string;
    consumer: Consumer;
    /** Event-type patterns the dispatcher checks itself when JetStream could not (overlapping patterns). */
    clientSideTypes?: string[];
  }
  const loops: Loop[] = [];
  for (const source of options.sources) {
    const config = consumerConfig(source.namespace, name, source.endpoint, spec);
    const info = await ensureConsumer(jsm, endpointStream(source.namespace, source.endpoint), config);
    if (info.paused) metrics.paused(true);
    // Patterns JetStream could not take as filter subjects (they overlap) are checked here instead.
    const all = endpointSubjects(source.namespace, source.endpoint);
    const patterns = spec.eventTypes.map((p) => eventFilterSubject(source.namespace, source.endpoint, p));
    const clientSideTypes = config.filter_subjects.includes(all) && !patterns.includes(all) ? patterns : undefined;
    loops.push({
      stream: info.stream_name,
      endpoint: `${source.namespace}/${source.endpoint}`,
      consumer: await js.consumers.get(info.stream_name, name),
      clientSideTypes,
    });
  }
  if (spec.paused) metrics.paused(true);

  const breaker = spec.circuitBreaker.enabled
    ? new CircuitBreaker(spec.circuitBreaker.failureThreshold, durationMs(spec.circuitBreaker.openDuration))
    : undefined;
  if (breaker) {
    breaker.onChange = (state) => {
      metrics.circuit(circuitStateValue[state]);
      log.warn({ circuit: state }, `circuit breaker ${state}`);
      wake();
    };
  }
  const bucket = spec.rateLimit
    ? new TokenBucket(
        spec.rateLimit.perSecond,
        spec.rateLimit.burst ?? Math.max(1, Math.ceil(spec.rateLimit.perSecond)),
      )
    : undefined;

  let stopping = false;
  let inFlight = 0;
  const running = new Set<Promise<void>>();
  /** Messages this process nak'ed on purpose; any other redelivery may repeat an attempt that reached the target. */
  const scheduled = new Set<string>();
  /**
   * Messages that arrived while the circuit was open or probing: they wait here, in order,
   * and are kept from timing out with `working()`, so waiting never costs them a delivery attempt.
   */
  const held: { msg: JsMsg; loop: Loop }[] = [];
  let wakeUp: () => void = () => {};
  let changed = new Promise<void>((ok) => {
    wakeUp = ok;
  });
  function wake() {
    wakeUp();
    changed = new Promise<void>((ok) => {
      wakeUp = ok;
    });
  }
  const stopFetches = new Set<() => void>();

  async function pauseConsumers() {
    const until = new Date(Date.now() + 100 * 365 * 24 * 3600 * 1000);
    for (const loop of loops) await jsm.consumers.pause(loop.stream, name, until);
    metrics.paused(true);
  }

  async function deadLetter(msg: JsMsg, attempts: number, reason: 'exhausted' | 'permanent', result?: AttemptResult) {
    const error = result ? undefined : 'attempts used up by deliveries that were interrupted';
    if (!spec.deadLetter.enabled) {
      msg.term(`delivery failed (${reason}); dead letters are disabled`);
      metrics.discarded(reason);
      return;
    }
    const headers = deadLetterHeaders(msg.headers, {
      eventId: msg.headers?.get(h.eventId) ?? '',
      receivedAt: new Date(msg.info.timestampNanos / 1e6),
      attempts,
      stream: msg.info.stream,
      sequence: msg.seq,
      result,
      error,
    });
    // The PubAck says the dead letter is stored; only then is the original given up.
    await js.publish(deadLetterSubject(namespace, name), msg.data, { msgID: `${msg.info.stream}:${msg.seq}`, headers });
    msg.term(`dead-lettered (${reason})`);
    metrics.deadLetter(reason);
    log.warn(
      {
        eventId: msg.headers?.get(h.eventId),
        attempts,
        reason,
        last: error ?? describeResult(result as AttemptResult),
      },
      'event dead-lettered',
    );
    void postToSink(msg.data, headers);
  }

  // The sink goes through the same guarded pool as targets: no link-local or metadata addresses unless allowed.
  const sink =
    spec.deadLetter.sinkUrl &&
    new Target({
      url: spec.deadLetter.sinkUrl,
      timeoutMs: 10_000,
      connections: 2,
      allowPrivateAddresses: spec.target.allowPrivateAddresses,
    });

  async function postToSink(body: Uint8Array, headers: MsgHdrs) {
    if (!sink) return;
    // Best effort: the dead letter is already stored; the sink is a notification.
    const plain: Record<string, string> = { 'user-agent': userAgent };
    for (const key of headers.keys()) plain[key] = headers.get(key);
    const result = await sink.send({ method: 'POST', headers: plain, body });
    if (result.kind !== 'Response' || result.status >= 300) {
      log.warn({ result: describeResult(result) }, 'dead-letter sink did not take the dead letter');
    }
  }

  /**
   * Acks go out together once per turn of the event loop: each is a small NATS message, and writing them one
   * socket write at a time costs more than the delivery around them. An ack lost to a crash in between only
   * means a redelivery, which is counted as a possible duplicate.
   */
  let acks: JsMsg[] = [];
  function ack(msg: JsMsg) {
    if (acks.length === 0) setImmediate(flushAcks);
    acks.push(msg);
  }
  function flushAcks() {
    const batch = acks;
    acks = [];
    for (const m of batch) m.ack();
  }

  async function handle(msg: JsMsg, loop: Loop): Promise<void> {
    const attempt = msg.info.deliveryCount;
    const key = `${msg.info.stream}:${msg.seq}`;
    if (attempt > 1 && !scheduled.delete(key)) metrics.possibleDuplicate();
    const receivedAt = new Date(msg.info.timestampNanos / 1e6);
    const event = storedEvent({ data: msg.data, headers: msg.headers, receivedAt }, loop.endpoint);
    if (loop.clientSideTypes && !loop.clientSideTypes.some((p) => subjectMatches(p, msg.subject))) {
      ack(msg);
      metrics.filtered();
      return;
    }
    if (filter && !filter({ type: event.type, headers: event.originalHeaders, body: await event.view() })) {
      ack(msg);
      metrics.filtered();
      return;
    }
    if (attempt > policy.maxAttempts) {
      await deadLetter(msg, attempt - 1, 'exhausted');
      return;
    }
    const started = performance.now();
    const result = await delivery.send(event, attempt);
    const seconds = (performance.now() - started) / 1000;
    const cls = statusClass(result);
    const decision = decide(result, attempt, policy);
    const targetFailed =
      result.kind === 'TargetTimeout' ||
      result.kind === 'TargetUnreachable' ||
      decision.action === 'retry' ||
      (decision.action === 'dead-letter' && decision.reason === 'exhausted');
    if (targetFailed) breaker?.failure();
    else breaker?.success();
    const logged = { eventId: event.id, eventType: event.type, attempt, result: describeResult(result) };
    switch (decision.action) {
      case 'ack': {
        ack(msg);
        metrics.attempt('delivered', cls, seconds);
        const receivedAt = event.receivedAt ? Date.parse(event.receivedAt) : Number.NaN;
        metrics.delivered(Number.isNaN(receivedAt) ? undefined : (Date.now() - receivedAt) / 1000);
        log.debug(logged, 'delivered');
        return;
      }
      case 'retry':
        scheduled.add(key);
        msg.nak(decision.delayMs);
        metrics.attempt('retried', cls, seconds);
        metrics.retry();
        log.info({ ...logged, delayMs: decision.delayMs }, 'delivery failed, retry scheduled');
        return;
      case 'pause':
        metrics.attempt('paused', cls, seconds);
        log.error(logged, 'target answered 410 Gone: subscription paused until resumed');
        await pauseConsumers();
        scheduled.add(key);
        msg.nak();
        return;
      case 'dead-letter':
        metrics.attempt('dead_lettered', cls, seconds);
        await deadLetter(msg, attempt, decision.reason, result);
        return;
    }
  }

  function start(msg: JsMsg, loop: Loop) {
    inFlight++;
    breaker?.started();
    metrics.inFlight(inFlight);
    const p = handle(msg, loop)
      .catch((err) => {
        // NATS trouble while acking or dead-lettering: hand the event out again shortly; nothing is lost.
        log.error(
          { error: (err as Error).message, seq: msg.seq },
          'delivery bookkeeping failed; event will be redelivered',
        );
        scheduled.add(`${msg.info.stream}:${msg.seq}`);
        msg.nak(1000);
      })
      .finally(() => {
        inFlight--;
        metrics.inFlight(inFlight);
        running.delete(p);
        wake();
      });
    running.add(p);
  }

  /** Events waiting in slot(): kept alive like held ones, so a slow rate limit does not cost them an attempt. */
  const waiting = new Set<JsMsg>();

  /** Waits for a free slot and, with a rate limit, a token. */
  async function slot(msg: JsMsg): Promise<void> {
    waiting.add(msg);
    try {
      while (!stopping && inFlight >= spec.concurrency) await changed;
      for (let wait = bucket?.take() ?? 0; wait > 0 && !stopping; wait = bucket?.take() ?? 0) await sleep(wait);
    } finally {
      waiting.delete(msg);
    }
  }

  const ackWaitMs = durationMs(spec.ackWait);
  const keepHeld = setInterval(
    () => {
      for (const { msg } of held) msg.working();
      for (const msg of waiting) msg.working();
    },
    Math.max(100, Math.floor(ackWaitMs / 3)),
  );
  keepHeld.unref();

  /**
   * Consumes one source. While the circuit is closed, a pull subscription keeps up to `concurrency` events on
   * their way, and each one starts as soon as a slot is free. When the circuit opens, the subscription stops:
   * events already received wait here (kept alive with `working()`, so waiting costs no delivery attempt) and
   * go out one at a time as probes once the breaker lets them, then the subscription starts again.
   */
  async function run(loop: Loop) {
    const closed = () => !breaker || breaker.state === 'closed';
    while (!stopping) {
      if (spec.paused) {
        await Promise.race([changed, sleep(1000)]);
        continue;
      }
      if (!closed() || held.length > 0) {
        if (inFlight >= spec.concurrency || !breaker || breaker.allowance(1) === 0) {
          await Promise.race([changed, sleep(100)]);
          continue;
        }
        const next = held.findIndex((h) => h.loop === loop);
        if (next >= 0) {
          const [{ msg }] = held.splice(next, 1) as [{ msg: JsMsg; loop: Loop }];
          start(msg, loop);
        } else if (!closed()) {
          await pull(loop, { max_messages: 1, expires: fetchExpiresMs }, true);
        } else {
          await Promise.race([changed, sleep(100)]); // another source's held events go first
        }
        continue;
      }
      // With a rate limit, events are pulled one by one: one waiting for its token is kept alive, a batch
      // buffered behind it would not be, and would be handed out again once ackWait passed.
      const batch = bucket ? 1 : Math.max(1, spec.concurrency);
      await pull(loop, { max_messages: batch, expires: fetchExpiresMs }, false);
    }
  }

  async function pull(loop: Loop, options: { max_messages: number; expires: number }, once: boolean) {
    try {
      const messages = once ? await loop.consumer.fetch(options) : await loop.consumer.consume(options);
      const stop = () => messages.stop();
      stopFetches.add(stop);
      try {
        for await (const msg of messages) {
          if (stopping) {
            msg.nak(); // not attempted: hand it straight to whoever runs next
            continue;
          }
          await slot(msg);
          if (stopping) msg.nak();
          else if (breaker && breaker.allowance(1) === 0) {
            held.push({ msg, loop });
            messages.stop();
          } else start(msg, loop);
        }
      } finally {
        stopFetches.delete(stop);
      }
    } catch (err) {
      if (!stopping) {
        log.warn({ error: (err as Error).message, stream: loop.stream }, 'pull failed; retrying');
        await sleep(500);
      }
    }
  }

  const status = setInterval(async () => {
    try {
      let paused = spec.paused;
      for (const loop of loops) paused ||= (await jsm.consumers.info(loop.stream, name)).paused === true;
      metrics.paused(paused);
    } catch {
      // the next round tries again
    }
  }, options.statusIntervalMs ?? 10_000);
  status.unref();

  const loopsDone = Promise.all(loops.map((l) => run(l)));
  log.info({ sources: loops.map((l) => l.stream), target: delivery.target.url.origin }, 'dispatcher started');

  return {
    async stop() {
      if (stopping) return;
      stopping = true;
      clearInterval(status);
      clearInterval(keepHeld);
      for (const stop of stopFetches) stop();
      for (const { msg } of held.splice(0)) msg.nak();
      wake();
      await loopsDone;
      while (running.size > 0) await Promise.all([...running]);
      flushAcks();
      await delivery.target.close();
      if (sink) await sink.close();
      log.info('dispatcher stopped');
    },
  };
}

/** Sends every dead letter of the subscription to the target again; each one is removed only after a 2xx. */
export async function replayDeadLetters(options: {
  subscription: WebhookSubscription;
  secrets: SecretStore;
  nc: NatsConnection;
  logger: Logger;
}): Promise<{ replayed: number; failed: number }> {
  const { subscription, nc } = options;
  const namespace = subscription.metadata.namespace ?? 'default';
  const stream = deadLetterStream(namespace, subscription.metadata.name);
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  const info = await jsm.streams.info(stream).catch((err) => {
    if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound) return undefined;
    throw err;
  });
  const total = info?.state.messages ?? 0;
  if (total === 0) return { replayed: 0, failed: 0 };
  const delivery = createDelivery(subscription, options.secrets);
  let replayed = 0;
  let failed = 0;
  try {
    const ordered = await js.consumers.get(stream);
    const messages = await ordered.consume();
    for await (const m of messages) {
      const event = storedEvent(m, endpointOfStream(m.headers?.get(h.sourceStream) ?? ''));
      const attempt = Number(m.headers?.get(h.attempts) || '0') + 1;
      const result = await delivery.send(event, attempt, `${event.id}:replay:${m.seq}`);
      if (result.kind === 'Response' && result.status >= 200 && result.status < 300) {
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
  return { replayed, failed };
}
