// The intake of an ordered subscription (spec.ordering): one `consume` per source in the consumer's pinned
// priority group, a queue per key, and the takeover check of a newly pinned replica. Why it is built this way:
// the header of ordering.ts, docs/architecture.md and docs/dispatcher.md.
import { setTimeout as sleep } from 'node:timers/promises';
import type { ConsumerMessages, JetStreamClient, JetStreamManager, JsMsg } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { WebhookSubscriptionSpec } from '../api/webhook-subscription.ts';
import { compileOrderingKey } from '../filter/cel.ts';
import { orderingGroup } from '../jetstream/consumers.ts';
import { unkeyedRecord } from '../jetstream/ordering.ts';
import { durationMs } from '../runtime/duration.ts';
import type { Logger } from '../runtime/log.ts';
import type { DeliveryPhases, OrderingHooks, SourceLoop } from './dispatcher.ts';
import { storedEventOf } from './dispatcher.ts';
import type { StoredEvent } from './event.ts';
import { type Held, KeyQueues, keyHash, type OrderingLedger, orderingLedger, takeoverComplete } from './ordering.ts';

interface Item {
  msg: JsMsg;
  event: StoredEvent;
}

interface SourceState {
  loop: SourceLoop;
  queues: KeyQueues<Item>;
  /** The pin JetStream gave this replica; undefined while not pinned. */
  pin?: string;
  /** Newly pinned, or not pinned: nothing keyed starts until the takeover check passes. */
  recovering: boolean;
  /** Whether anything was ever received here (a source that never had an event is not counted as recovering). */
  received: boolean;
  checking: boolean;
  /** Events of this source with a retry record: sequence → key hash. */
  recorded: Map<number, string>;
  /** Keys with a dead letter (onDeadLetter: DeadLetterRest). */
  deadKeys: Set<string>;
  /** Sequences of events without a key being delivered. */
  unkeyedInFlight: Set<number>;
  /** Keys are read one event after another, so that events enter their queues in arrival order. */
  reading: Promise<void>;
  messages?: ConsumerMessages;
}

export interface OrderedIntakeOptions {
  spec: WebhookSubscriptionSpec & { ordering: NonNullable<WebhookSubscriptionSpec['ordering']> };
  namespace: string;
  subscription: string;
  nc: NatsConnection;
  jsm: JetStreamManager;
  js: JetStreamClient;
  registry: Registry;
  log: Logger;
  fetchExpiresMs: number;
}

export async function startOrderedIntake(sources: SourceLoop[], phases: DeliveryPhases, options: OrderedIntakeOptions) {
  const { spec, log } = options;
  await requirePinned(sources);
  const keyOf = compileOrderingKey(spec.ordering.key);
  const ledger = orderingLedger(options.jsm, options.js, options.namespace, options.subscription);
  const deadLetterRest = spec.ordering.onDeadLetter === 'DeadLetterRest';
  const ackWaitMs = durationMs(spec.ackWait);
  let stopping = false;
  const running = new Set<Promise<void>>();
  const states = sources.map(sourceState);
  const metrics = orderingMetrics(options.registry, options.namespace, options.subscription, states);
  const contact = contactFence(options.nc, ackWaitMs - durationMs(spec.target.timeout), (reason) => {
    log.warn({ reason }, 'ordering: out of contact with NATS; events handed back until the next takeover');
    for (const state of states) handBack(state);
  });
  const ctx: Context = { options, ledger, contact, metrics, deadLetterRest, ackWaitMs, stopping: () => stopping };

  function start(state: SourceState, held: Held<Item>) {
    const { msg, event } = held.msg;
    if (held.key === unkeyedRecord) state.unkeyedInFlight.add(held.seq);
    const p = phases.deliver(msg, state.loop, event, laneHooks(ctx, state, held.key)).then((outcome) => {
      running.delete(p);
      if (held.key === unkeyedRecord) {
        state.unkeyedInFlight.delete(held.seq);
        return;
      }
      if (outcome === 'retrying') state.queues.retrying(held);
      else state.queues.settled(held);
      pump(state);
    });
    running.add(p);
  }

  /** Starts every event that may start now; they wait for a slot at the flow gate, in the order they were ready. */
  function pump(state: SourceState) {
    if (state.recovering || stopping || !contact.fresh()) return;
    for (let held = state.queues.next(); held; held = state.queues.next()) start(state, held);
  }

  async function enqueue(state: SourceState, msg: JsMsg) {
    const event = storedEventOf(msg, state.loop);
    let key = unkeyedRecord;
    try {
      const value = keyOf({ type: event.type, headers: event.originalHeaders, body: await event.view() });
      if (value !== undefined) key = keyHash(value);
    } catch {
      // no key: delivered without ordering
    }
    if (stopping) {
      phases.leases.release(msg);
      msg.nak();
      return;
    }
    const held = { seq: msg.seq, key, msg: { msg, event } };
    if (key === unkeyedRecord) {
      start(state, held);
      return;
    }
    const added = state.queues.add(held);
    // A copy of an event already held: the one being delivered settles it; a waiting one was replaced.
    if (added === 'duplicate') phases.leases.release(msg);
    else if (added !== 'added') phases.leases.release(added.msg.msg);
    pump(state);
  }

  function receive(state: SourceState, msg: JsMsg) {
    if (stopping) {
      msg.nak();
      return;
    }
    state.received = true;
    const pin = msg.headers?.get('Nats-Pin-Id') || undefined;
    if (pin !== state.pin) {
      state.pin = pin;
      takeOver(state);
    }
    phases.leases.take(msg); // kept alive while it waits for its key
    state.reading = state.reading.then(() => enqueue(state, msg));
  }

  /**
   * Newly pinned: waits until every pending event of the consumer is held here or recorded as waiting for a
   * retry, so that no key starts past an earlier event the previous holder still had. Until then, what arrives
   * is held. The previous holder's events come back within ackWait (a crash) or at once (a clean stop).
   */
  function takeOver(state: SourceState) {
    state.recovering = true;
    if (state.checking) return;
    state.checking = true;
    void (async () => {
      while (state.recovering && !stopping) {
        try {
          if (state.pin && (await takeoverDone(ctx, state))) break;
          metrics.takeoverWait();
        } catch (err) {
          log.warn(
            { error: (err as Error).message, stream: state.loop.stream },
            'ordering: takeover check failed; retrying',
          );
        }
        await sleep(250);
      }
      state.checking = false;
      pump(state);
    })();
  }

  /** No longer pinned (another replica is): what waits here goes back at once; deliveries in flight finish. */
  function handBack(state: SourceState) {
    const waiting = state.queues.drain().map((held) => held.msg.msg);
    for (const msg of waiting) phases.leases.release(msg);
    contact.whenConnected(() => {
      for (const msg of waiting) {
        try {
          msg.nak();
        } catch {
          // the connection was closed: JetStream hands it out again after ackWait
        }
      }
    });
    state.pin = undefined;
    state.recovering = true;
  }

  const pulls = states.map((state) => pullLoop(ctx, state, { receive, handBack }));
  const swept = sweep(ctx, states, pump);
  return {
    get stopping() {
      return stopping;
    },
    async add(source: SourceLoop) {
      await requirePinned([source]);
      if (stopping) return;
      const state = sourceState(source);
      states.push(state);
      pulls.push(pullLoop(ctx, state, { receive, handBack }));
    },
    async stop() {
      stopping = true;
      contact.stop();
      for (const state of states) {
        state.messages?.stop();
        for (const held of state.queues.drain()) {
          phases.leases.release(held.msg.msg);
          held.msg.msg.nak(); // not attempted: to whoever runs next
        }
      }
      phases.gate.close();
      await Promise.all(pulls);
      await Promise.all(states.map((s) => s.reading));
      while (running.size > 0) await Promise.all([...running]);
      await swept;
      metrics.remove();
    },
  };
}

/** What the parts of one ordered intake share. */
interface Context {
  options: OrderedIntakeOptions;
  ledger: OrderingLedger;
  contact: ReturnType<typeof contactFence>;
  metrics: ReturnType<typeof orderingMetrics>;
  deadLetterRest: boolean;
  ackWaitMs: number;
  stopping(): boolean;
}

/** Without a pinned consumer two replicas would deliver one key at once: refuse rather than misorder. */
async function requirePinned(sources: SourceLoop[]) {
  for (const source of sources) {
    const info = await source.consumer.info();
    if (info.config.priority_policy !== 'pinned_client') {
      throw new Error(
        `consumer ${info.name} on ${info.stream_name} is not pinned (priority_policy ${info.config.priority_policy ?? 'none'}): per-key ordering needs NATS 2.11 or later`,
      );
    }
  }
}

function sourceState(loop: SourceLoop): SourceState {
  return {
    loop,
    queues: new KeyQueues<Item>(),
    recovering: true,
    received: false,
    checking: false,
    recorded: new Map(),
    deadKeys: new Set(),
    unkeyedInFlight: new Set(),
    reading: Promise.resolve(),
  };
}

/** Pulls one source in the priority group until stopped; `consumer_unpinned` hands back what waits here. */
async function pullLoop(
  ctx: Context,
  state: SourceState,
  on: { receive: (state: SourceState, msg: JsMsg) => void; handBack: (state: SourceState) => void },
) {
  const { spec, log } = ctx.options;
  // A pull must end well within the pin's timeout (ackWait), or the pinned replica would look gone.
  const expires = Math.max(1000, Math.min(ctx.options.fetchExpiresMs, Math.floor(ctx.ackWaitMs / 2)));
  const batch = Math.min(1024, Math.max(32, spec.concurrency * 4));
  const watch = async (messages: ConsumerMessages) => {
    for await (const status of messages.status()) {
      if (status.type !== 'consumer_unpinned') continue;
      on.handBack(state);
      log.warn({ stream: state.loop.stream }, 'ordering: another replica is pinned; events handed back');
    }
  };
  while (!ctx.stopping()) {
    try {
      const messages = await state.loop.consumer.consume({ max_messages: batch, expires, group: orderingGroup });
      state.messages = messages;
      void watch(messages);
      if (ctx.stopping()) messages.stop();
      for await (const msg of messages) on.receive(state, msg);
    } catch (err) {
      if (!ctx.stopping())
        log.warn({ error: (err as Error).message, stream: state.loop.stream }, 'pull failed; retrying');
    }
    if (!ctx.stopping()) await sleep(500);
  }
}

/** The hooks the delivery phases call for one event of `key` (see OrderingHooks). */
function laneHooks(ctx: Context, state: SourceState, key: string): OrderingHooks {
  const { ledger, contact, metrics, deadLetterRest } = ctx;
  const confirmMs = Math.max(500, Math.min(5000, Math.floor(ctx.ackWaitMs / 4)));
  const stream = state.loop.stream;
  const epoch = contact.epoch;
  return {
    async beforeAttempt(msg) {
      const recordedKey = state.recorded.get(msg.seq);
      if (recordedKey === undefined) return;
      await ledger.clearRetry(stream, msg.seq, recordedKey);
      state.recorded.delete(msg.seq);
    },
    async beforeRetry(msg) {
      // Known before the publish: a record stored whose PubAck was lost is still removed before the next attempt.
      state.recorded.set(msg.seq, key);
      await ledger.recordRetry(stream, msg.seq, key);
    },
    async deadLettered() {
      if (!deadLetterRest || key === unkeyedRecord || state.deadKeys.has(key)) return;
      await ledger.recordDeadKey(stream, key);
      state.deadKeys.add(key);
    },
    async keyDeadLettered() {
      if (!deadLetterRest || key === unkeyedRecord || !state.deadKeys.has(key)) return false;
      // Asked again before dead-lettering: the marks are read only every sweep, and a replay lifts them.
      if (await ledger.isDeadKey(stream, key)) return true;
      state.deadKeys.delete(key);
      return false;
    },
    inContact() {
      if (epoch === contact.epoch && contact.fresh()) return true;
      metrics.fenced();
      return false;
    },
    async confirm(msg, how) {
      // Sent as a request: JetStream answers once it has applied it. Repeated until then; an ack or term of an
      // event already settled is answered as well.
      for (;;) {
        try {
          await ctx.options.nc.request(ackSubject(msg), how, { timeout: confirmMs });
          return;
        } catch (err) {
          if (ctx.stopping() || epoch !== contact.epoch) throw err;
        }
        await sleep(100);
      }
    },
  };
}

/** One takeover check; when it passes, the ledger's records block their keys and delivery starts. */
async function takeoverDone(ctx: Context, state: SourceState): Promise<boolean> {
  const { ledger } = ctx;
  const { log } = ctx.options;
  const info = await state.loop.consumer.info();
  const records = await stillPending(ctx, state, await ledger.retries(state.loop.stream), info.ack_floor.stream_seq);
  const held = [...state.queues.seqs(), ...state.unkeyedInFlight];
  if (!takeoverComplete(info.num_ack_pending, held, info.delivered.stream_seq, records.keys())) return false;
  for (const [seq, key] of records) {
    state.recorded.set(seq, key);
    if (key !== unkeyedRecord) state.queues.await(key, seq);
  }
  if (ctx.deadLetterRest) state.deadKeys = await ledger.deadKeys(state.loop.stream);
  state.recovering = false;
  log.info(
    { stream: state.loop.stream, held: state.queues.held, waitingForRetry: records.size },
    'ordering: pinned, delivering',
  );
  return true;
}

/**
 * The records whose event can still come back: one at or below the consumer's ack floor was settled (its
 * record outlived it), one below the stream's first sequence was removed by the stream's limits. Those are
 * purged, so that they neither block a key nor stand in for an event still in flight elsewhere.
 */
async function stillPending(ctx: Context, state: SourceState, records: Map<number, string>, ackFloor: number) {
  if (records.size === 0) return records;
  const firstSeq = (await ctx.options.jsm.streams.info(state.loop.stream)).state.first_seq;
  for (const [seq, key] of records) {
    if (seq > ackFloor && seq >= firstSeq) continue;
    await ctx.ledger.clearRetry(state.loop.stream, seq, key);
    records.delete(seq);
    state.recorded.delete(seq);
    state.queues.unblock(key, seq);
  }
  return records;
}

/**
 * While pinned, every few seconds: events a key waits for that will never come back (settled, or removed by
 * the stream's limits while waiting for their retry) stop blocking it, and the keys with a dead letter are read
 * again (a replay of the dead letters clears them).
 */
async function sweep(ctx: Context, states: SourceState[], pump: (state: SourceState) => void) {
  const { ledger } = ctx;
  const { log } = ctx.options;
  while (!ctx.stopping()) {
    await sleep(Math.max(1000, Math.min(10_000, ctx.ackWaitMs)));
    for (const state of states) {
      if (state.recovering || ctx.stopping()) continue;
      try {
        const awaited = state.queues.awaited();
        if (awaited.size > 0) {
          const info = await state.loop.consumer.info();
          await stillPending(ctx, state, awaited, info.ack_floor.stream_seq);
        }
        if (ctx.deadLetterRest) state.deadKeys = await ledger.deadKeys(state.loop.stream);
      } catch (err) {
        log.warn({ error: (err as Error).message, stream: state.loop.stream }, 'ordering: sweep failed');
      }
      pump(state);
    }
  }
}

/** The subject JetStream takes a message's acks on (the message's reply subject, which JsMsg does not type). */
const ackSubject = (msg: JsMsg) => (msg as JsMsg & { reply: string }).reply;

/**
 * Whether this replica can still count on its pin. JetStream moves the pin after ackWait without pulls, and hands
 * this replica's events to the next one after ackWait without `working()`; neither reaches the server while the
 * connection is down or stalled (a partition is noticed by the client's pings only after minutes). So a round trip
 * to the server is timed every so often: an attempt starts only if the last one began less than
 * `ackWait - target.timeout` ago (it then ends before the pin can have moved), and a disconnect or a longer gap
 * counts as having lost the pin (`lost`: what waits is handed back, and a takeover check follows).
 */
function contactFence(nc: NatsConnection, freshMs: number, lost: (reason: string) => void) {
  let stopped = false;
  let epoch = 0;
  let at = Date.now();
  let connected = true;
  const afterReconnect: (() => void)[] = [];
  const statuses = nc.status();
  const lose = (reason: string) => {
    epoch++;
    lost(reason);
  };
  void (async () => {
    for await (const status of statuses) {
      if (stopped) break;
      if (status.type === 'disconnect') {
        connected = false;
        lose('disconnected');
      } else if (status.type === 'reconnect') {
        connected = true;
        for (const send of afterReconnect.splice(0)) send();
      }
    }
  })();
  void (async () => {
    const every = Math.max(50, Math.min(1000, Math.floor(freshMs / 4)));
    while (!stopped) {
      const sent = Date.now();
      try {
        await nc.flush();
      } catch {
        await sleep(every);
        continue;
      }
      if (stopped) break;
      const gap = sent - at;
      at = sent;
      if (gap >= freshMs) lose(`no answer from NATS for ${gap} ms`);
      await sleep(every);
    }
  })();
  return {
    get epoch() {
      return epoch;
    },
    fresh: () => Date.now() - at < freshMs,
    /**
     * Runs `send` now, or once reconnected: nats.js drops what is published while disconnected (each dial empties
     * its outbound buffer), so a nak sent then would leave the event with this replica until ackWait.
     */
    whenConnected(send: () => void) {
      if (connected) send();
      else afterReconnect.push(send);
    },
    stop() {
      stopped = true;
      (statuses as { stop?: () => void }).stop?.();
    },
  };
}

/** The subscriptions of each registry whose ordering state the gauges read at scrape time, and the counter. */
type Watched = Map<string, { namespace: string; subscription: string; states: SourceState[] }>;
const watched = new WeakMap<Registry, { subscriptions: Watched; waits: Counter; fenced: Counter; gauges: Gauge[] }>();

/** Keys blocked (and for how long), events waiting behind their key, and takeovers, read at scrape time. */
function orderingMetrics(registry: Registry, namespace: string, subscription: string, states: SourceState[]) {
  let shared = watched.get(registry);
  if (!shared) {
    const all: Watched = new Map();
    const gauges: Gauge[] = [];
    const gauge = (name: string, help: string, read: (states: SourceState[]) => number) => {
      const g = new Gauge({
        name,
        help,
        labelNames: ['namespace', 'subscription'],
        registers: [registry],
        collect() {
          for (const s of all.values())
            this.set({ namespace: s.namespace, subscription: s.subscription }, read(s.states));
        },
      });
      gauges.push(g);
    };
    gauge(
      'hookyard_dispatcher_ordering_blocked_keys',
      'Ordered subscriptions: keys whose next event waits for an earlier event of the key to be retried.',
      (ss) => ss.reduce((n, s) => n + s.queues.blocked().keys, 0),
    );
    gauge(
      'hookyard_dispatcher_ordering_blocked_seconds',
      'Ordered subscriptions: how long the longest-blocked key has waited for its retried event (0: none blocked).',
      (ss) => {
        const since = Math.min(...ss.map((s) => s.queues.blocked().oldestSince ?? Number.POSITIVE_INFINITY));
        return Number.isFinite(since) ? (Date.now() - since) / 1000 : 0;
      },
    );
    gauge(
      'hookyard_dispatcher_ordering_waiting_events',
      'Ordered subscriptions: events held because an earlier event of their key is being delivered or retried.',
      (ss) => ss.reduce((n, s) => n + s.queues.waitingBehind, 0),
    );
    gauge(
      'hookyard_dispatcher_ordering_recovering',
      "Ordered subscriptions: 1 while this replica is not pinned, or is pinned and waits for the previous holder's events.",
      // The replay stream is usually empty: it counts once something was replayed to this replica.
      (ss) => (ss.some((s) => s.recovering && (s.received || !s.loop.replay)) ? 1 : 0),
    );
    const waits = new Counter({
      name: 'hookyard_dispatcher_ordering_takeover_waits_total',
      help: 'Ordered subscriptions: takeover checks (every 250 ms) that found events still held by the previous holder.',
      labelNames: ['namespace', 'subscription'],
      registers: [registry],
    });
    const fenced = new Counter({
      name: 'hookyard_dispatcher_ordering_fenced_total',
      help: 'Ordered subscriptions: events not attempted because this replica was out of contact with NATS and may have lost its pin.',
      labelNames: ['namespace', 'subscription'],
      registers: [registry],
    });
    shared = { subscriptions: all, waits, fenced, gauges };
    watched.set(registry, shared);
  }
  const id = `${namespace}/${subscription}`;
  shared.subscriptions.set(id, { namespace, subscription, states });
  const { waits, fenced, gauges } = shared;
  const labels = { namespace, subscription };
  waits.inc(labels, 0);
  fenced.inc(labels, 0);
  return {
    takeoverWait: () => waits.inc(labels),
    fenced: () => fenced.inc(labels),
    /** The subscription stopped: its series go (a dispatcher in dev mode runs many subscriptions in turn). */
    remove() {
      if (shared.subscriptions.get(id)?.states !== states) return;
      shared.subscriptions.delete(id);
      for (const metric of [waits, fenced, ...gauges]) metric.remove(labels);
    },
  };
}
