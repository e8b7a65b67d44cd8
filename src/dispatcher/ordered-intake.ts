// The intake of an ordered subscription (spec.ordering): one `consume` per source in the consumer's pinned
// priority group, a queue per key, and the takeover check of a newly pinned replica. Why it is built this way:
// the header of ordering.ts, docs/architecture.md and docs/dispatcher.md.
import { setTimeout as sleep } from 'node:timers/promises';
import type { ConsumerMessages, JetStreamClient, JetStreamManager, JsMsg } from '@nats-io/jetstream';
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
import { type Held, KeyQueues, keyHash, orderingLedger, takeoverComplete } from './ordering.ts';

/** The lane of events without a key: delivered without ordering, recorded like the others while retrying. */
const unkeyed = unkeyedRecord;

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
  jsm: JetStreamManager;
  js: JetStreamClient;
  registry: Registry;
  log: Logger;
  fetchExpiresMs: number;
}

export async function startOrderedIntake(sources: SourceLoop[], phases: DeliveryPhases, options: OrderedIntakeOptions) {
  const { spec, log } = options;
  for (const source of sources) {
    const info = await source.consumer.info();
    if (info.config.priority_policy !== 'pinned_client') {
      // Without a pinned consumer two replicas would deliver one key at once: refuse rather than misorder.
      throw new Error(
        `consumer ${info.name} on ${info.stream_name} is not pinned (priority_policy ${info.config.priority_policy ?? 'none'}): per-key ordering needs NATS 2.11 or later`,
      );
    }
  }
  const keyOf = compileOrderingKey(spec.ordering.key);
  const ledger = orderingLedger(options.jsm, options.js, options.namespace, options.subscription);
  const deadLetterRest = spec.ordering.onDeadLetter === 'DeadLetterRest';
  const ackWaitMs = durationMs(spec.ackWait);
  // A pull must end well within the pin's timeout (ackWait), or the pinned replica would look gone.
  const expires = Math.max(1000, Math.min(options.fetchExpiresMs, Math.floor(ackWaitMs / 2)));
  const batch = Math.min(1024, Math.max(32, spec.concurrency * 4));
  let stopping = false;
  const running = new Set<Promise<void>>();
  const states: SourceState[] = sources.map((loop) => ({
    loop,
    queues: new KeyQueues<Item>(),
    recovering: true,
    checking: false,
    recorded: new Map(),
    deadKeys: new Set(),
    unkeyedInFlight: new Set(),
    reading: Promise.resolve(),
  }));
  const metrics = orderingMetrics(options.registry, options.namespace, options.subscription, states);

  function hooks(state: SourceState, key: string): OrderingHooks {
    const stream = state.loop.stream;
    return {
      async beforeAttempt(msg) {
        const recordedKey = state.recorded.get(msg.seq);
        if (recordedKey === undefined) return;
        await ledger.clearRetry(stream, msg.seq, recordedKey);
        state.recorded.delete(msg.seq);
      },
      async beforeRetry(msg) {
        await ledger.recordRetry(stream, msg.seq, key);
        state.recorded.set(msg.seq, key);
      },
      async beforeDeadLetter() {
        if (!deadLetterRest || key === unkeyed || state.deadKeys.has(key)) return;
        await ledger.recordDeadKey(stream, key);
        state.deadKeys.add(key);
      },
      keyDeadLettered: () => deadLetterRest && key !== unkeyed && state.deadKeys.has(key),
    };
  }

  function start(state: SourceState, held: Held<Item>) {
    const { msg, event } = held.msg;
    if (held.key === unkeyed) state.unkeyedInFlight.add(held.seq);
    const p = phases.deliver(msg, state.loop, event, hooks(state, held.key)).then((outcome) => {
      running.delete(p);
      if (held.key === unkeyed) {
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
    if (state.recovering || stopping) return;
    for (let held = state.queues.next(); held; held = state.queues.next()) start(state, held);
  }

  async function enqueue(state: SourceState, msg: JsMsg) {
    const event = storedEventOf(msg, state.loop);
    let key = unkeyed;
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
    if (key === unkeyed) {
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
          const info = await state.loop.consumer.info();
          const records = await ledger.retries(state.loop.stream);
          const held = [...state.queues.seqs(), ...state.unkeyedInFlight];
          if (state.pin && takeoverComplete(info.num_ack_pending, held, info.delivered.stream_seq, records.keys())) {
            for (const [seq, key] of records) {
              state.recorded.set(seq, key);
              if (key !== unkeyed) state.queues.await(key, seq);
            }
            if (deadLetterRest) state.deadKeys = await ledger.deadKeys(state.loop.stream);
            state.recovering = false;
            log.info(
              { stream: state.loop.stream, held: state.queues.held, waitingForRetry: records.size },
              'ordering: pinned, delivering',
            );
            break;
          }
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
    for (const held of state.queues.drain()) {
      phases.leases.release(held.msg.msg);
      held.msg.msg.nak();
    }
    state.pin = undefined;
    state.recovering = true;
    log.warn({ stream: state.loop.stream }, 'ordering: another replica is pinned; events handed back');
  }

  async function watch(state: SourceState, messages: ConsumerMessages) {
    for await (const status of messages.status()) if (status.type === 'consumer_unpinned') handBack(state);
  }

  async function run(state: SourceState) {
    while (!stopping) {
      try {
        const messages = await state.loop.consumer.consume({ max_messages: batch, expires, group: orderingGroup });
        state.messages = messages;
        void watch(state, messages);
        if (stopping) messages.stop();
        for await (const msg of messages) receive(state, msg);
      } catch (err) {
        if (!stopping) log.warn({ error: (err as Error).message, stream: state.loop.stream }, 'pull failed; retrying');
      }
      if (!stopping) await sleep(500);
    }
  }

  const loops = Promise.all(states.map(run));
  return {
    get stopping() {
      return stopping;
    },
    async stop() {
      stopping = true;
      for (const state of states) {
        state.messages?.stop();
        for (const held of state.queues.drain()) {
          phases.leases.release(held.msg.msg);
          held.msg.msg.nak(); // not attempted: to whoever runs next
        }
      }
      phases.gate.close();
      await loops;
      await Promise.all(states.map((s) => s.reading));
      while (running.size > 0) await Promise.all([...running]);
    },
  };
}

/** The subscriptions of each registry whose ordering state the gauges read at scrape time, and the counter. */
type Watched = Map<string, { namespace: string; subscription: string; states: SourceState[] }>;
const watched = new WeakMap<Registry, { subscriptions: Watched; waits: Counter }>();

/** Keys blocked (and for how long), events waiting behind their key, and takeovers, read at scrape time. */
function orderingMetrics(registry: Registry, namespace: string, subscription: string, states: SourceState[]) {
  let shared = watched.get(registry);
  if (!shared) {
    const all: Watched = new Map();
    const gauge = (name: string, help: string, read: (states: SourceState[]) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['namespace', 'subscription'],
        registers: [registry],
        collect() {
          for (const s of all.values())
            this.set({ namespace: s.namespace, subscription: s.subscription }, read(s.states));
        },
      });
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
      (ss) => (ss.some((s) => s.recovering) ? 1 : 0),
    );
    const waits = new Counter({
      name: 'hookyard_dispatcher_ordering_takeover_waits_total',
      help: 'Ordered subscriptions: takeover checks (every 250 ms) that found events still held by the previous holder.',
      labelNames: ['namespace', 'subscription'],
      registers: [registry],
    });
    shared = { subscriptions: all, waits };
    watched.set(registry, shared);
  }
  shared.subscriptions.set(`${namespace}/${subscription}`, { namespace, subscription, states });
  const { waits } = shared;
  waits.inc({ namespace, subscription }, 0);
  return { takeoverWait: () => waits.inc({ namespace, subscription }) };
}
