// Attempt records and replays against a real nats-server and a real HTTP target on loopback: what `hookyard
// attempts` reads back is exactly what happened to each event.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { jetstream } from '@nats-io/jetstream';
import { Registry } from 'prom-client';
import { type Dispatcher, startDispatcher } from '../../src/dispatcher/dispatcher.ts';
import type { AttemptRecord } from '../../src/dispatcher/history.ts';
import { readAttempts } from '../../src/history/read.ts';
import { consumerConfig, ensureConsumer } from '../../src/jetstream/consumers.ts';
import { attemptStream } from '../../src/jetstream/layout.ts';
import { mapSecrets } from '../../src/runtime/secrets.ts';
import {
  eventually,
  metricValue,
  natsSetup,
  publishEvent,
  quietLogger,
  startTarget,
  subscription,
  uniqueNames,
} from './dispatcher-support.ts';

const fast = { backoff: { initialDelay: '50ms', maxDelay: '100ms', jitter: false } };
const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function setup(spec: Record<string, unknown>, respond: Parameters<typeof startTarget>[0]) {
  const names = uniqueNames('hist');
  const nats = await natsSetup(names.namespace, names.endpoint);
  const target = await startTarget(respond);
  const registry = new Registry();
  const sub = subscription(names, { ackWait: '5s', ...spec, target: { url: target.url, timeout: '2s' } });
  let dispatcher: Dispatcher | undefined;
  const run = async () => {
    dispatcher = await startDispatcher({
      subscription: sub,
      sources: [{ namespace: names.namespace, endpoint: names.endpoint }],
      secrets: mapSecrets({}),
      nc: nats.nc,
      registry,
      logger: quietLogger,
      fetchExpiresMs: 1000,
    });
  };
  cleanups.push(async () => {
    await dispatcher?.stop();
    await target.close();
    await nats.nc.drain();
  });
  const metric = async (name: string, labels: Record<string, string> = {}) =>
    metricValue(await registry.metrics(), name, labels);
  const base = {
    subscription: `${names.namespace}/${names.subscription}`,
    eventType: 'order.shipped',
    endpoint: `${names.namespace}/${names.endpoint}`,
  };
  return { names, nats, target, run, metric, subscription: sub, base, stop: () => dispatcher?.stop() };
}

/** What a record says, without the clock: time and duration are checked apart. */
const outcome = ({ time, durationMs, ...rest }: AttemptRecord) => {
  assert.ok(!Number.isNaN(Date.parse(time)) && durationMs >= 0);
  return rest;
};

describe('attempt records', () => {
  it('read back exactly for a burst with a retry, a dead letter and a duplicate, after the dispatcher is gone', async () => {
    // ok-* answer 200; retry-1 answers 503 once; dead-1 always 500; the target decides by the event's own id.
    const seen = new Map<string, number>();
    const t = await setup({ retry: { maxAttempts: 2, ...fast } }, (r, res) => {
      const id = String(r.headers['hookyard-event-id']);
      const n = (seen.get(id) ?? 0) + 1;
      seen.set(id, n);
      res.statusCode = id === 'dead-1' ? 500 : id === 'retry-1' && n === 1 ? 503 : 200;
      res.end();
    });
    const ids = ['ok-1', 'retry-1', 'dead-1', 'ok-2'];
    for (const id of ids)
      await publishEvent(t.nats.nc, t.names.namespace, t.names.endpoint, {
        id,
        type: 'order.shipped',
        body: `{"id":"${id}"}`,
      });
    // The provider sends ok-2 again: JetStream keeps one event, so one delivery and one record.
    await publishEvent(t.nats.nc, t.names.namespace, t.names.endpoint, {
      id: 'ok-2',
      type: 'order.shipped',
      body: '{"id":"ok-2"}',
    });
    await t.run();
    await eventually(
      async () => (await t.metric('hookyard_dispatcher_dead_letters_total', { reason: 'exhausted' })) === 1,
    );
    await eventually(async () => (await t.metric('hookyard_dispatcher_delivered_total')) === 3);
    await t.stop();

    const base = t.base;
    const js = jetstream(t.nats.nc);
    const records = await readAttempts(js, t.names.namespace, t.names.subscription);
    const byEvent = (id: string) => records.filter((r) => r.eventId === id).map(outcome);
    assert.equal(records.length, 6);
    assert.deepEqual(byEvent('ok-1'), [{ ...base, eventId: 'ok-1', attempt: 1, status: 200, decision: 'delivered' }]);
    assert.deepEqual(byEvent('retry-1'), [
      { ...base, eventId: 'retry-1', attempt: 1, status: 503, decision: 'retry', retryInMs: 50 },
      { ...base, eventId: 'retry-1', attempt: 2, status: 200, decision: 'delivered' },
    ]);
    assert.deepEqual(byEvent('dead-1'), [
      { ...base, eventId: 'dead-1', attempt: 1, status: 500, decision: 'retry', retryInMs: 50 },
      { ...base, eventId: 'dead-1', attempt: 2, status: 500, decision: 'dead-letter', reason: 'exhausted' },
    ]);
    assert.deepEqual(byEvent('ok-2'), [{ ...base, eventId: 'ok-2', attempt: 1, status: 200, decision: 'delivered' }]);

    // One event's records alone, read through its own subject.
    const one = await readAttempts(js, t.names.namespace, t.names.subscription, { eventId: 'retry-1' });
    assert.deepEqual(one.map(outcome), byEvent('retry-1'));
    assert.equal(await t.metric('hookyard_dispatcher_attempt_records_failed_total'), 0);
  });

  it('end with a dead letter sent no attempt when an earlier event of its key was dead-lettered', async () => {
    const t = await setup({ ordering: { key: 'body.key', onDeadLetter: 'DeadLetterRest' } }, (r, res) => {
      res.statusCode = r.headers['hookyard-event-id'] === 'k-1' ? 400 : 200;
      res.end();
    });
    for (const id of ['k-1', 'k-2'])
      await publishEvent(t.nats.nc, t.names.namespace, t.names.endpoint, {
        id,
        type: 'order.shipped',
        body: '{"key":"k"}',
      });
    await t.run();
    await eventually(
      async () => (await t.metric('hookyard_dispatcher_dead_letters_total', { reason: 'ordering' })) === 1,
    );
    await t.stop();
    assert.deepEqual((await readAttempts(jetstream(t.nats.nc), t.names.namespace, t.names.subscription)).map(outcome), [
      { ...t.base, eventId: 'k-1', attempt: 1, status: 400, decision: 'dead-letter', reason: 'permanent' },
      { ...t.base, eventId: 'k-2', attempt: 1, error: 'not attempted', decision: 'dead-letter', reason: 'ordering' },
    ]);
  });

  it('end with a dead letter sent no attempt when the delivery of its last attempt never settled', async () => {
    const t = await setup({ retry: { maxAttempts: 1 } }, (_r, res) => {
      res.end();
    });
    await publishEvent(t.nats.nc, t.names.namespace, t.names.endpoint, {
      id: 'lost-1',
      type: 'order.shipped',
      body: '{}',
    });
    // A dispatcher that took the event and was gone before settling it: the event comes back after ackWait.
    const js = jetstream(t.nats.nc);
    const config = consumerConfig(t.names.namespace, t.names.subscription, t.names.endpoint, t.subscription.spec);
    await ensureConsumer(t.nats.jsm, t.nats.stream, config);
    assert.ok(await (await js.consumers.get(t.nats.stream, config.durable_name)).next());
    await t.run();
    await eventually(
      async () => (await t.metric('hookyard_dispatcher_dead_letters_total', { reason: 'exhausted' })) === 1,
    );
    await t.stop();
    assert.deepEqual((await readAttempts(js, t.names.namespace, t.names.subscription)).map(outcome), [
      {
        ...t.base,
        eventId: 'lost-1',
        attempt: 2,
        error: 'not attempted',
        decision: 'dead-letter',
        reason: 'exhausted',
      },
    ]);
  });

  it('keeps no records with history disabled', async () => {
    const t = await setup({ history: { enabled: false } }, (_r, res) => {
      res.end();
    });
    await publishEvent(t.nats.nc, t.names.namespace, t.names.endpoint, { type: 'order.shipped', body: '{}' });
    await t.run();
    await eventually(async () => (await t.metric('hookyard_dispatcher_delivered_total')) === 1);
    await t.stop();
    await assert.rejects(
      t.nats.jsm.streams.info(attemptStream(t.names.namespace, t.names.subscription)),
      /stream not found/,
    );
    assert.deepEqual(await readAttempts(jetstream(t.nats.nc), t.names.namespace, t.names.subscription), []);
  });

  it('count the records JetStream did not store, and the delivery goes on', async () => {
    const t = await setup({}, (_r, res) => {
      res.end();
    });
    await t.run();
    // The attempt stream is gone (deleted by hand): JetStream answers the record's publish with no responders.
    await t.nats.jsm.streams.delete(attemptStream(t.names.namespace, t.names.subscription));
    // A burst: the records of one turn go out together and JetStream answers the last; each one counts.
    const burst = 20;
    await Promise.all(
      Array.from({ length: burst }, () =>
        publishEvent(t.nats.nc, t.names.namespace, t.names.endpoint, { type: 'order.shipped', body: '{}' }),
      ),
    );
    await eventually(async () => (await t.metric('hookyard_dispatcher_delivered_total')) === burst);
    await eventually(async () => (await t.metric('hookyard_dispatcher_attempt_records_failed_total')) === burst);
    await t.stop();
  });
});
