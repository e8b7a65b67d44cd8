// The dispatcher against a real nats-server and real HTTP targets on loopback: what a subscriber relies on.
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { type NatsConnection, headers as natsHeaders } from '@nats-io/transport-node';
import { HTTP } from 'cloudevents';
import { Registry } from 'prom-client';
import { Webhook } from 'standardwebhooks';
import { type Dispatcher, replayDeadLetters, startDispatcher } from '../../src/dispatcher/dispatcher.ts';
import { headerBlock, type StoredEvent, storedEvent } from '../../src/dispatcher/event.ts';
import { consumerConfig, ensureConsumer } from '../../src/jetstream/consumers.ts';
import { replayStreamConfig } from '../../src/jetstream/history.ts';
import { deadLetterStream, headers as h, replaySubject } from '../../src/jetstream/layout.ts';
import { ensureStream } from '../../src/jetstream/streams.ts';
import { mapSecrets } from '../../src/runtime/secrets.ts';
import {
  eventually,
  metricValue,
  natsSetup,
  type PublishedEvent,
  publishEvent,
  quietLogger,
  startTarget,
  subscription,
  uniqueNames,
} from './dispatcher-support.ts';

const whsec = `whsec_${randomBytes(24).toString('base64')}`;
const whsecOld = `whsec_${randomBytes(24).toString('base64')}`;
const hmacKey = 'fulfillment-signing-key';
const hmacKeyNext = 'fulfillment-signing-key-2';
const secrets = mapSecrets({
  signing: {
    current: Buffer.from(whsec),
    previous: Buffer.from(whsecOld),
    hmac: Buffer.from(hmacKey),
    hmacNext: Buffer.from(`${hmacKeyNext}\n`),
  },
  auth: { token: Buffer.from('s3cr3t-token') },
});
const fast = { backoff: { initialDelay: '50ms', maxDelay: '200ms', jitter: false } };

const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function setup(spec: Record<string, unknown>, respond?: Parameters<typeof startTarget>[0]) {
  const names = uniqueNames('disp');
  const nats = await natsSetup(names.namespace, names.endpoint);
  const target = await startTarget(respond);
  const registry = new Registry();
  const sub = subscription(names, {
    ackWait: '5s',
    ...spec,
    target: { url: target.url, timeout: '2s', ...(spec.target as object) },
  });
  let dispatcher: Dispatcher | undefined;
  const run = async () => {
    dispatcher = await startDispatcher({
      subscription: sub,
      sources: [{ namespace: names.namespace, endpoint: names.endpoint, provider: 'proign' }],
      secrets,
      nc: nats.nc,
      registry,
      logger: quietLogger,
      fetchExpiresMs: 1000,
      statusIntervalMs: 100,
    });
    return dispatcher;
  };
  cleanups.push(async () => {
    await dispatcher?.stop();
    await target.close();
    await nats.nc.drain();
  });
  const publish = (event: Parameters<typeof publishEvent>[3]) =>
    publishEvent(nats.nc, names.namespace, names.endpoint, event);
  const metric = async (name: string, labels: Record<string, string> = {}) =>
    metricValue(await registry.metrics(), name, labels);
  const consumerInfo = () => nats.jsm.consumers.info(nats.stream, names.subscription);
  return { names, nats, target, registry, sub, run, publish, metric, consumerInfo, stop: () => dispatcher?.stop() };
}

const proignPayload = (carrier = 'UPS') => ({
  id: `evt_${randomBytes(6).toString('hex')}`,
  type: 'order.shipped',
  timestamp: '2024-01-15T10:30:00Z',
  tenant_id: 'tenant_xyz',
  data: { order_id: 'ord_123', tracking_number: '1Z999AA10123456784', carrier, shipped_at: '2024-01-15T10:30:00Z' },
});

describe('dispatcher', () => {
  it('delivers each event once, raw, with a Standard Webhooks signature the standardwebhooks package accepts', async () => {
    const t = await setup({
      signing: {
        scheme: 'standardWebhooks',
        secretRefs: [
          { name: 'signing', key: 'current' },
          { name: 'signing', key: 'previous' },
        ],
      },
      target: { headers: [{ name: 'Authorization', valueFrom: { secretKeyRef: { name: 'auth', key: 'token' } } }] },
    });
    const events: PublishedEvent[] = [];
    for (let i = 0; i < 5; i++) {
      const payload = proignPayload();
      events.push(await t.publish({ type: 'order.shipped', id: payload.id, body: JSON.stringify(payload) }));
    }
    await t.run();
    await t.target.waitFor(5);
    await eventually(async () => (await t.metric('hookyard_dispatcher_delivered_total')) === 5);
    assert.equal(t.target.received.length, 5);
    assert.deepEqual(
      new Set(t.target.received.map((r) => r.headers['hookyard-event-id'])),
      new Set(events.map((e) => e.id)),
    );
    for (const r of t.target.received) {
      const event = events.find((e) => e.id === r.headers['hookyard-event-id']);
      assert.ok(event);
      assert.deepEqual(r.body, event.body, 'raw sends the original bytes');
      assert.equal(r.headers['content-type'], 'application/json');
      assert.equal(r.headers['hookyard-attempt'], '1');
      assert.equal(r.headers['hookyard-delivery-id'], `${event.id}:1`);
      assert.equal(r.headers['hookyard-event-type'], 'order.shipped');
      assert.match(String(r.headers['user-agent']), /^Hookyard\//);
      assert.equal(r.headers.authorization, 's3cr3t-token');
      assert.equal(r.headers['webhook-id'], event.id);
      const hdrs = {
        'webhook-id': String(r.headers['webhook-id']),
        'webhook-timestamp': String(r.headers['webhook-timestamp']),
        'webhook-signature': String(r.headers['webhook-signature']),
      };
      // Both keys of a rotation verify it.
      assert.deepEqual(new Webhook(whsec).verify(r.body.toString(), hdrs), JSON.parse(r.body.toString()));
      assert.deepEqual(new Webhook(whsecOld).verify(r.body.toString(), hdrs), JSON.parse(r.body.toString()));
    }
    const info = await t.consumerInfo();
    assert.equal(info.num_pending + info.num_ack_pending, 0);
  });

  it('signs with an HMAC header that the PROIGN snippet reproduces', async () => {
    const t = await setup({
      signing: { scheme: 'hmac', header: 'X-Hookyard-Signature', secretRefs: [{ name: 'signing', key: 'hmac' }] },
    });
    const payload = proignPayload();
    await t.publish({ type: 'order.shipped', id: payload.id, body: JSON.stringify(payload) });
    await t.run();
    await t.target.waitFor(1);
    const r = t.target.received[0];
    assert.ok(r);
    // PROIGN's verifyWebhook(payload, signature, secret), with the parsed body as payload.
    const expected = createHmac('sha256', hmacKey)
      .update(JSON.stringify(JSON.parse(r.body.toString())))
      .digest('hex');
    assert.equal(r.headers['x-hookyard-signature'], `sha256=${expected}`);
  });

  it('signs an HMAC header with both keys while rotating: a receiver holding either one verifies it', async () => {
    const t = await setup({
      signing: {
        scheme: 'hmac',
        header: 'X-Hookyard-Signature',
        secretRefs: [
          { name: 'signing', key: 'hmac' },
          { name: 'signing', key: 'hmacNext' },
        ],
      },
    });
    await t.publish({ type: 'order.shipped', body: JSON.stringify(proignPayload()) });
    await t.run();
    await t.target.waitFor(1);
    const r = t.target.received[0];
    assert.ok(r);
    // A receiver's check: split the header on commas, accept if one entry is its own HMAC.
    const verifies = (key: string) =>
      String(r.headers['x-hookyard-signature'])
        .split(',')
        .some((entry) => entry.trim() === `sha256=${createHmac('sha256', key).update(r.body).digest('hex')}`);
    assert.ok(verifies(hmacKey), 'the old key verifies');
    assert.ok(verifies(hmacKeyNext), 'the new key verifies');
    assert.ok(!verifies('some-other-key'));
  });

  it('sends the envelope format', async () => {
    const t = await setup({ format: { type: 'envelope' } });
    const form = await t.publish({
      type: 'order.created',
      body: 'order=42&note=caf%E9',
      contentType: 'application/x-www-form-urlencoded; charset=iso-8859-1',
    });
    await t.run();
    await t.target.waitFor(1);
    const r = t.target.received[0];
    assert.ok(r);
    assert.equal(r.headers['content-type'], 'application/json');
    const envelope = JSON.parse(r.body.toString());
    assert.equal(envelope.id, form.id);
    assert.equal(envelope.type, 'order.created');
    assert.equal(envelope.source, `/hookyard/${t.names.namespace}/${t.names.endpoint}`);
    assert.ok(!Number.isNaN(Date.parse(envelope.receivedAt)));
    assert.deepEqual(envelope.data, { order: '42', note: 'café' });
  });

  for (const mode of ['binary', 'structured'] as const) {
    it(`sends CloudEvents in ${mode} mode that the cloudevents package reads`, async () => {
      const t = await setup({ format: { type: 'cloudevents', cloudEventsMode: mode } });
      const payload = proignPayload();
      const e = await t.publish({ type: 'order.shipped', id: payload.id, body: JSON.stringify(payload) });
      await t.run();
      await t.target.waitFor(1);
      const r = t.target.received[0];
      assert.ok(r);
      const ce = HTTP.toEvent({ headers: r.headers, body: r.body.toString() });
      assert.ok(!Array.isArray(ce));
      assert.equal(ce.id, e.id);
      assert.equal(ce.type, 'order.shipped');
      assert.equal(ce.source, `/hookyard/${t.names.namespace}/${t.names.endpoint}`);
      assert.equal(ce.datacontenttype, 'application/json');
      assert.deepEqual(ce.data, payload);
      if (mode === 'binary') assert.deepEqual(r.body, e.body, 'binary mode keeps the original bytes');
      else assert.match(String(r.headers['content-type']), /^application\/cloudevents\+json/);
    });
  }

  it('gives a target that fails twice then succeeds exactly three attempts, and counts two retries', async () => {
    const t = await setup({ retry: { maxAttempts: 5, ...fast } }, (_r, res, i) => {
      res.statusCode = i < 2 ? 503 : 200;
      res.end();
    });
    const e = await t.publish({ type: 'order.shipped', body: '{}' });
    await t.run();
    await eventually(async () => (await t.metric('hookyard_dispatcher_delivered_total')) === 1);
    assert.equal(t.target.received.length, 3);
    assert.deepEqual(
      t.target.received.map((r) => r.headers['hookyard-attempt']),
      ['1', '2', '3'],
    );
    assert.deepEqual(
      t.target.received.map((r) => r.headers['hookyard-delivery-id']),
      [`${e.id}:1`, `${e.id}:2`, `${e.id}:3`],
    );
    assert.equal(await t.metric('hookyard_dispatcher_retries_total'), 2);
    assert.equal(await t.metric('hookyard_dispatcher_attempts_total', { outcome: 'retried', status_class: '5xx' }), 2);
    // The failure-ratio alert divides these by the attempts: two failed, the delivery is no failure.
    assert.equal(await t.metric('hookyard_dispatcher_failures_total', { status_class: '5xx' }), 2);
    assert.equal(await t.metric('hookyard_dispatcher_failures_total', { status_class: '2xx' }), 0);
    assert.equal(
      await t.metric('hookyard_dispatcher_attempts_total', { outcome: 'delivered', status_class: '2xx' }),
      1,
    );
    assert.equal(await t.metric('hookyard_dispatcher_possible_duplicates_total'), 0);
  });

  it('dead-letters after exactly maxAttempts attempts, with the last status, and removes the original', async () => {
    const t = await setup({ retry: { maxAttempts: 3, ...fast } }, (_r, res, i) => {
      res.statusCode = i < 2 ? 500 : 502;
      res.end('upstream down');
    });
    const e = await t.publish({
      type: 'order.shipped',
      body: '{"n":1}',
      headers: { 'X-Proign-Delivery-Id': 'd-1' },
    });
    await t.run();
    await eventually(
      async () => (await t.metric('hookyard_dispatcher_dead_letters_total', { reason: 'exhausted' })) === 1,
    );
    assert.equal(t.target.received.length, 3);
    const dlq = deadLetterStream(t.names.namespace, t.names.subscription);
    const stored = await t.nats.jsm.streams.getMessage(dlq, {
      last_by_subj: `hookyard-dlq.${t.names.namespace}.${t.names.subscription}`,
    });
    assert.ok(stored);
    assert.deepEqual(Buffer.from(stored.data), e.body);
    assert.equal(stored.header.get(h.lastStatus), '502');
    assert.equal(stored.header.get(h.attempts), '3');
    assert.equal(stored.header.get(h.lastError), 'HTTP 502');
    assert.equal(stored.header.get(h.sourceStream), t.nats.stream);
    assert.equal(stored.header.get(h.sourceSequence), '1');
    assert.equal(stored.header.get(h.deadLetterEventId), e.id);
    assert.equal(stored.header.get(`${h.original}X-Proign-Delivery-Id`), 'd-1');
    await eventually(async () => {
      const info = await t.consumerInfo();
      return info.num_pending === 0 && info.num_ack_pending === 0;
    });
    // Nothing more is sent for it.
    assert.equal(t.target.received.length, 3);

    // Replay: the target now accepts; the dead letter is delivered and removed.
    await t.stop();
    const before = t.target.received.length;
    const okTarget = await startTarget();
    const replaySub = { ...t.sub, spec: { ...t.sub.spec, target: { ...t.sub.spec.target, url: okTarget.url } } };
    const result = await replayDeadLetters({ subscription: replaySub, secrets, nc: t.nats.nc, logger: quietLogger });
    await okTarget.close();
    assert.deepEqual(result, { replayed: 1, failed: 0 });
    assert.equal(t.target.received.length, before);
    assert.deepEqual(okTarget.received[0]?.body, e.body);
    assert.equal((await t.nats.jsm.streams.info(dlq)).state.messages, 0);
  });

  it('with dead letters disabled, terminates an event that failed for good and counts it as discarded', async () => {
    const t = await setup({ retry: { maxAttempts: 2, ...fast }, deadLetter: { enabled: false } }, (r, res) => {
      res.statusCode = r.body.toString() === '{"bad":true}' ? 400 : 503;
      res.end();
    });
    await t.publish({ type: 'order.shipped', body: '{"n":1}' });
    await t.publish({ type: 'order.shipped', body: '{"bad":true}' });
    await t.run();
    await eventually(async () => {
      const info = await t.consumerInfo();
      return t.target.received.length === 3 && info.num_pending === 0 && info.num_ack_pending === 0;
    });
    assert.equal(t.target.received.length, 3, 'two attempts for the 503, one for the 400');
    for (const reason of ['exhausted', 'permanent']) {
      assert.equal(await t.metric('hookyard_dispatcher_discarded_total', { reason }), 1, reason);
      assert.equal(await t.metric('hookyard_dispatcher_dead_letters_total', { reason }), 0, reason);
    }
    const dlq = deadLetterStream(t.names.namespace, t.names.subscription);
    const stored = await t.nats.jsm.streams.info(dlq).then(
      (info) => info.state.messages,
      () => 0,
    );
    assert.equal(stored, 0, 'nothing in the dead-letter stream');
  });

  it('dead-letters, without another attempt, an event whose delivery count is already past maxAttempts', async () => {
    const t = await setup({ retry: { maxAttempts: 2, ...fast } });
    const e = await t.publish({ type: 'order.shipped', body: '{"n":1}' });
    // Attempts cut short: a consumer that took the event twice and never settled it (as a crashed replica does).
    await ensureConsumer(
      t.nats.jsm,
      t.nats.stream,
      consumerConfig(t.names.namespace, t.names.subscription, t.names.endpoint, t.sub.spec),
    );
    const consumer = await t.nats.js.consumers.get(t.nats.stream, t.names.subscription);
    for (let i = 1; i <= 2; i++) {
      const msg = await consumer.next({ expires: 5000 });
      assert.equal(msg?.info.deliveryCount, i);
      msg?.nak();
    }
    await t.run();
    await eventually(async () => {
      const info = await t.consumerInfo();
      return info.num_pending === 0 && info.num_ack_pending === 0;
    });
    assert.equal(t.target.received.length, 0, 'no third attempt');
    assert.equal(await t.metric('hookyard_dispatcher_dead_letters_total', { reason: 'exhausted' }), 1);
    const dlq = deadLetterStream(t.names.namespace, t.names.subscription);
    const stored = await t.nats.jsm.streams.getMessage(dlq, { seq: 1 });
    assert.deepEqual(Buffer.from(stored?.data ?? []), e.body);
    assert.equal(stored?.header.get(h.attempts), '2');
    assert.equal(stored?.header.get(h.deadLetterEventId), e.id);
    assert.match(String(stored?.header.get(h.lastError)), /interrupted/);
  });

  it('dead-letters an event of a stream made again at a sequence an earlier dead letter came from', async () => {
    const t = await setup({ retry: { maxAttempts: 5, ...fast } }, (_r, res) => {
      res.statusCode = 400;
      res.end();
    });
    const dlq = deadLetterStream(t.names.namespace, t.names.subscription);
    const deadLettered = async () => (await t.nats.jsm.streams.info(dlq).catch(() => undefined))?.state.messages;
    await t.publish({ type: 'order.shipped', body: '{"n":1}' });
    await t.run();
    await eventually(async () => (await deadLettered()) === 1);
    await t.stop();
    // Deleted and made again, as when a ProviderEndpoint is deleted and created again: its sequences restart.
    await t.nats.jsm.streams.delete(t.nats.stream);
    await natsSetup(t.names.namespace, t.names.endpoint).then((again) => again.nc.close());
    const second = await t.publish({ type: 'order.shipped', body: '{"n":2}' });
    await t.run();
    await eventually(async () => {
      const info = await t.consumerInfo();
      return t.target.received.length === 2 && info.num_pending === 0 && info.num_ack_pending === 0;
    });
    assert.equal(await deadLettered(), 2, 'the second dead letter was not stored');
    const stored = await t.nats.jsm.streams.getMessage(dlq, {
      last_by_subj: `hookyard-dlq.${t.names.namespace}.${t.names.subscription}`,
    });
    assert.equal(stored?.header.get(h.deadLetterEventId), second.id);
  });

  it('dead-letters a permanent failure (400) at once', async () => {
    const t = await setup({ retry: { maxAttempts: 5, ...fast } }, (_r, res) => {
      res.statusCode = 400;
      res.end();
    });
    await t.publish({ type: 'order.shipped', body: '{}' });
    await t.run();
    await eventually(
      async () => (await t.metric('hookyard_dispatcher_dead_letters_total', { reason: 'permanent' })) === 1,
    );
    assert.equal(t.target.received.length, 1);
  });

  it('waits out a 429 Retry-After longer than its own backoff', async () => {
    const at: number[] = [];
    const t = await setup(
      { retry: { maxAttempts: 3, backoff: { initialDelay: '50ms', maxDelay: '50ms', jitter: false } } },
      (_r, res, i) => {
        at.push(performance.now());
        if (i === 0) {
          res.statusCode = 429;
          res.setHeader('Retry-After', '1');
        }
        res.end();
      },
    );
    await t.publish({ type: 'order.shipped', body: '{}' });
    await t.run();
    await eventually(async () => (await t.metric('hookyard_dispatcher_delivered_total')) === 1);
    assert.equal(t.target.received.length, 2);
    const gap = (at[1] as number) - (at[0] as number);
    assert.ok(gap >= 990, `second attempt ${gap}ms after a Retry-After of 1 s`);
    assert.equal(await t.metric('hookyard_dispatcher_attempts_total', { outcome: 'retried', status_class: '4xx' }), 1);
  });

  for (const [what, retryAfter] of [
    ['`Retry-After: 0`', '0'],
    ['a Retry-After date in the past', 'Wed, 21 Oct 2015 07:28:00 GMT'],
  ]) {
    it(`spaces retries by the backoff after ${what}, not back to back`, async () => {
      const at: number[] = [];
      const t = await setup(
        { retry: { maxAttempts: 3, backoff: { initialDelay: '300ms', multiplier: 2, maxDelay: '1s', jitter: false } } },
        (_r, res) => {
          at.push(performance.now());
          res.statusCode = 503;
          res.setHeader('Retry-After', retryAfter as string);
          res.end();
        },
      );
      await t.publish({ type: 'order.shipped', body: '{}' });
      await t.run();
      await eventually(
        async () => (await t.metric('hookyard_dispatcher_dead_letters_total', { reason: 'exhausted' })) === 1,
      );
      assert.equal(at.length, 3);
      const gaps = [(at[1] as number) - (at[0] as number), (at[2] as number) - (at[1] as number)];
      assert.ok((gaps[0] as number) >= 290 && (gaps[1] as number) >= 590, `attempts ${gaps.join(' and ')}ms apart`);
    });
  }

  it('pauses the subscription on 410 Gone, keeps the event, and delivers it once resumed', async () => {
    let gone = true;
    const t = await setup({ retry: { maxAttempts: 3, ...fast } }, (_r, res) => {
      res.statusCode = gone ? 410 : 200;
      res.end();
    });
    await t.publish({ type: 'order.shipped', body: '{}' });
    await t.run();
    await eventually(async () => (await t.metric('hookyard_dispatcher_paused')) === 1);
    assert.equal((await t.consumerInfo()).paused, true);
    await t.publish({ type: 'order.shipped', body: '{}' });
    const info = await t.consumerInfo();
    assert.equal(info.num_pending + info.num_ack_pending, 2, 'both events are still there');
    assert.equal(t.target.received.length, 1);
    assert.equal(await t.metric('hookyard_dispatcher_dead_letters_total', { reason: 'permanent' }), 0);

    // A restarted dispatcher keeps the pause.
    await t.stop();
    await t.run();
    assert.equal((await t.consumerInfo()).paused, true);

    // The operator (or a person) resumes it once the target is back.
    gone = false;
    await t.nats.jsm.consumers.resume(t.nats.stream, t.names.subscription);
    await eventually(async () => (await t.metric('hookyard_dispatcher_delivered_total')) === 2);
    await eventually(async () => (await t.metric('hookyard_dispatcher_paused')) === 0);
  });

  const slowTargets: [string, Parameters<typeof startTarget>[0]][] = [
    [
      'times out a target slow to answer and retries',
      async (_r, res, i) => {
        if (i === 0) await new Promise((ok) => setTimeout(ok, 1500));
        res.end();
      },
    ],
    [
      'bounds the whole attempt by target.timeout: headers in time and a trickling body still time out',
      async (_r, res, i) => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        // Each byte comes well within the timeout, the whole body long after it.
        for (let n = 0; i === 0 && n < 20 && !res.destroyed; n++) {
          res.write('.');
          await new Promise((ok) => setTimeout(ok, 100));
        }
        res.end();
      },
    ],
  ];
  for (const [what, respond] of slowTargets) {
    it(what, async () => {
      const t = await setup({ target: { timeout: '400ms' }, retry: { maxAttempts: 3, ...fast } }, respond);
      await t.publish({ type: 'order.shipped', body: '{}' });
      await t.run();
      await eventually(async () => (await t.metric('hookyard_dispatcher_delivered_total')) === 1);
      assert.equal(t.target.received.length, 2);
      assert.equal(
        await t.metric('hookyard_dispatcher_attempts_total', { outcome: 'retried', status_class: 'timeout' }),
        1,
      );
    });
  }

  it('never sends events the event types or the filter exclude', async () => {
    const t = await setup({
      eventTypes: ['order.shipped', 'order.*'],
      filter: "has(body.data.carrier) && body.data.carrier == 'UPS'",
    });
    const ups = await t.publish({ type: 'order.shipped', body: JSON.stringify(proignPayload('UPS')) });
    await t.publish({ type: 'order.shipped', body: JSON.stringify(proignPayload('DHL')) });
    await t.publish({ type: 'order.packed', body: '<not json' });
    await t.publish({ type: 'ticket.created', body: JSON.stringify(proignPayload('UPS')) });
    const last = await t.publish({ type: 'order.packed', body: JSON.stringify(proignPayload('UPS')) });
    await t.run();
    await eventually(async () => (await t.metric('hookyard_dispatcher_filtered_total')) === 2);
    await eventually(async () => (await t.metric('hookyard_dispatcher_delivered_total')) === 2);
    await eventually(async () => (await t.consumerInfo()).num_ack_pending === 0);
    assert.deepEqual(t.target.received.map((r) => r.headers['hookyard-event-id']).sort(), [ups.id, last.id].sort());
  });

  it('keeps at most `concurrency` deliveries in flight', async () => {
    const t = await setup({ concurrency: 3 }, async (_r, res) => {
      await new Promise((ok) => setTimeout(ok, 30));
      res.end();
    });
    for (let i = 0; i < 30; i++) await t.publish({ type: 'order.shipped', body: `{"i":${i}}` });
    await t.run();
    await eventually(async () => (await t.metric('hookyard_dispatcher_delivered_total')) === 30);
    assert.equal(t.target.received.length, 30);
    assert.equal(t.target.maxInFlight, 3);
  });

  it('keeps `concurrency` deliveries in flight under a rate limit too, not one at a time', async () => {
    // The rate allows far more than a slow target takes: the concurrency is what binds.
    const t = await setup({ concurrency: 3, rateLimit: { perSecond: 1000 } }, async (_r, res) => {
      await new Promise((ok) => setTimeout(ok, 200));
      res.end();
    });
    for (let i = 0; i < 12; i++) await t.publish({ type: 'order.shipped', body: `{"i":${i}}` });
    await t.run();
    await eventually(async () => (await t.metric('hookyard_dispatcher_delivered_total')) === 12);
    assert.equal(t.target.maxInFlight, 3);
  });

  it('keeps `concurrency` replayed deliveries in flight under a rate limit too', async () => {
    const t = await setup({ concurrency: 3, rateLimit: { perSecond: 1000 } }, async (_r, res) => {
      await new Promise((ok) => setTimeout(ok, 200));
      res.end();
    });
    await t.run();
    // Made after the dispatcher started, as the operator does at the first replay request: the dispatcher finds it.
    await ensureStream(t.nats.jsm, replayStreamConfig(t.names.namespace, t.names.subscription));
    for (let i = 0; i < 12; i++) {
      const headers = natsHeaders();
      headers.set(h.eventType, 'order.shipped');
      headers.set(h.contentType, 'application/json');
      headers.set(h.eventId, `evt_replayed_${i}`);
      headers.set(h.replay, 'r1');
      headers.set(h.sourceStream, t.nats.stream);
      await t.nats.js.publish(replaySubject(t.names.namespace, t.names.subscription), `{"i":${i}}`, { headers });
    }
    await eventually(async () => (await t.metric('hookyard_dispatcher_delivered_total')) === 12);
    assert.equal(t.target.maxInFlight, 3);
  });

  it('refuses a link-local target unless allowed', async () => {
    const t = await setup({
      target: { url: 'http://169.254.169.254/latest/meta-data' },
      retry: { maxAttempts: 3, ...fast },
    });
    await t.publish({ type: 'order.shipped', body: '{}' });
    await t.run();
    await eventually(
      async () => (await t.metric('hookyard_dispatcher_dead_letters_total', { reason: 'permanent' })) === 1,
    );
    const dlq = deadLetterStream(t.names.namespace, t.names.subscription);
    const stored = await t.nats.jsm.streams.getMessage(dlq, { seq: 1 });
    assert.match(String(stored?.header.get(h.lastError)), /^TargetForbidden/);
  });

  it('opens the circuit after failureThreshold failures and probes the target again only after openDuration', async () => {
    const at: number[] = [];
    const t = await setup(
      {
        concurrency: 1,
        retry: { maxAttempts: 10, backoff: { initialDelay: '10ms', maxDelay: '10ms', jitter: false } },
        circuitBreaker: { failureThreshold: 3, openDuration: '400ms' },
      },
      (_r, res, i) => {
        at.push(performance.now());
        res.statusCode = i < 3 ? 503 : 200;
        res.end();
      },
    );
    for (let i = 0; i < 3; i++) await t.publish({ type: 'order.shipped', body: `{"i":${i}}` });
    await t.run();
    await eventually(async () => (await t.metric('hookyard_dispatcher_delivered_total')) === 3);
    assert.equal(t.target.received.length, 6, '3 failures, then the probe and the two others');
    // The retries alone would come after 10ms; the breaker holds the probe back for openDuration.
    assert.ok((at[3] as number) - (at[2] as number) >= 390, `probe after ${(at[3] as number) - (at[2] as number)}ms`);
    assert.equal(await t.metric('hookyard_dispatcher_circuit_state'), 0, 'closed again');
    assert.equal(await t.metric('hookyard_dispatcher_possible_duplicates_total'), 0);
  });

  it('paces deliveries with the rate limit', async () => {
    const at: number[] = [];
    const t = await setup({ rateLimit: { perSecond: 20, burst: 1 } }, (_r, res) => {
      at.push(performance.now());
      res.end();
    });
    for (let i = 0; i < 5; i++) await t.publish({ type: 'order.shipped', body: `{"i":${i}}` });
    await t.run();
    await eventually(async () => (await t.metric('hookyard_dispatcher_delivered_total')) === 5);
    // 20 a second with no burst: at least 50ms between deliveries, 200ms for five.
    assert.ok(
      (at[4] as number) - (at[0] as number) >= 195,
      `five deliveries in ${(at[4] as number) - (at[0] as number)}ms`,
    );
  });

  it('keeps events waiting for the rate limit alive past ackWait: no redelivery, no duplicate', async () => {
    const t = await setup({ rateLimit: { perSecond: 5, burst: 1 }, ackWait: '1s', target: { timeout: '500ms' } });
    for (let i = 0; i < 8; i++) await t.publish({ type: 'order.shipped', body: `{"i":${i}}` });
    await t.run();
    // Eight events at five a second take about 1.6 s, longer than the 1 s ack window.
    await eventually(async () => (await t.metric('hookyard_dispatcher_delivered_total')) === 8);
    await new Promise((ok) => setTimeout(ok, 1200));
    assert.equal(t.target.received.length, 8);
    assert.equal(await t.metric('hookyard_dispatcher_possible_duplicates_total'), 0);
  });

  it('keeps an event alive while it is being delivered: waiting, then attempted, longer than ackWait', async () => {
    // One at a time, each delivery takes 2.7s of a 3s ackWait: an event that waited for the one before it is
    // held for more than ackWait in all. JetStream must not hand it out again meanwhile.
    const t = await setup({ concurrency: 1, ackWait: '3s', target: { timeout: '2950ms' } }, async (_r, res) => {
      await new Promise((ok) => setTimeout(ok, 2700));
      res.end();
    });
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push((await t.publish({ type: 'order.shipped', body: `{"i":${i}}` })).id);
    await t.run();
    await eventually(async () => (await t.metric('hookyard_dispatcher_delivered_total')) >= 4);
    await new Promise((ok) => setTimeout(ok, 1000)); // a redelivery of the last one would come by now
    assert.deepEqual(t.target.received.map((r) => r.headers['hookyard-event-id']).sort(), ids.sort());
    assert.equal(await t.metric('hookyard_dispatcher_possible_duplicates_total'), 0);
  });

  it('with two replicas on one subscription: retries counted once, no false duplicates, bookkeeping back to 0', async () => {
    const failedOnce = new Set<string>();
    const spec = { concurrency: 2, retry: { maxAttempts: 5, ...fast }, circuitBreaker: { enabled: false } };
    const t = await setup(spec, (r, res) => {
      const id = String(r.headers['hookyard-event-id']);
      res.statusCode = failedOnce.has(id) ? 200 : 503;
      failedOnce.add(id);
      res.end();
    });
    const second = await natsSetup(t.names.namespace, t.names.endpoint);
    const registry = new Registry();
    const total = 20;
    await t.run();
    const replica = await startDispatcher({
      subscription: t.sub,
      sources: [{ namespace: t.names.namespace, endpoint: t.names.endpoint, provider: 'proign' }],
      secrets,
      nc: second.nc,
      registry,
      logger: quietLogger,
      fetchExpiresMs: 1000,
    });
    cleanups.push(async () => {
      await replica.stop();
      await second.nc.drain();
    });
    for (let i = 0; i < total; i++) await t.publish({ type: 'order.shipped', body: `{"i":${i}}` });
    const both = async (name: string) =>
      (await t.metric(name)) + metricValue(await registry.metrics(), name, { namespace: t.names.namespace });
    await eventually(async () => (await both('hookyard_dispatcher_delivered_total')) === total);
    assert.equal(t.target.received.length, 2 * total, 'one failed attempt and one delivery per event');
    assert.equal(await both('hookyard_dispatcher_retries_total'), total);
    const attempts = async (r: Registry) =>
      metricValue(await r.metrics(), 'hookyard_dispatcher_attempts_total', {
        outcome: 'retried',
        status_class: '5xx',
      }) +
      metricValue(await r.metrics(), 'hookyard_dispatcher_attempts_total', {
        outcome: 'delivered',
        status_class: '2xx',
      });
    assert.ok((await attempts(t.registry)) > 0 && (await attempts(registry)) > 0, 'both replicas delivered');
    assert.equal(await both('hookyard_dispatcher_possible_duplicates_total'), 0);
    await eventually(async () => (await both('hookyard_dispatcher_scheduled_retries')) === 0);
  });

  it('also posts a dead letter to the sink URL', async () => {
    const sink = await startTarget();
    cleanups.push(() => sink.close());
    const t = await setup({ retry: { maxAttempts: 1 }, deadLetter: { sinkUrl: sink.url } }, (_r, res) => {
      res.statusCode = 500;
      res.end();
    });
    const e = await t.publish({ type: 'order.shipped', body: '{"x":1}' });
    await t.run();
    await sink.waitFor(1);
    const r = sink.received[0];
    assert.ok(r);
    assert.deepEqual(r.body, e.body);
    assert.equal(r.headers['hookyard-last-status'], '500');
    assert.equal(r.headers['hookyard-attempts'], '1');
    assert.equal(r.headers['hookyard-event-id'], e.id);
  });

  it('updates its consumer in place: a changed spec keeps the position', async () => {
    const t = await setup({});
    await t.publish({ type: 'order.shipped', body: '{}' });
    await t.run();
    await eventually(async () => (await t.metric('hookyard_dispatcher_delivered_total')) === 1);
    await t.stop();
    const before = await t.consumerInfo();
    const changed = { ...t.sub, spec: { ...t.sub.spec, concurrency: 3, eventTypes: ['order.*'], ackWait: '7s' } };
    const config = consumerConfig(t.names.namespace, t.names.subscription, t.names.endpoint, changed.spec);
    const after = await ensureConsumer(t.nats.jsm, t.nats.stream, config);
    assert.equal(after.created, before.created);
    assert.equal(after.delivered.stream_seq, 1);
    assert.equal(after.ack_floor.stream_seq, 1);
    assert.deepEqual(after.config.filter_subjects, [`hookyard.${t.names.namespace}.${t.names.endpoint}.order.*`]);
    assert.equal(after.config.max_ack_pending, 3 + 1000);
    // Running it again changes nothing.
    const again = await ensureConsumer(t.nats.jsm, t.nats.stream, config);
    assert.equal(again.created, before.created);
  });

  it("reads a stored event from the header block nats.js received as from the message's headers", async () => {
    const t = await setup({});
    const published = await t.publish({
      type: 'order.shipped',
      body: '{}',
      headers: { 'X-Proign-Delivery-Id': ' dlv_1 ', 'x-trace': 'a: b' },
    });
    const msg = await (await t.nats.js.consumers.get(t.nats.stream)).next();
    assert.ok(msg);
    const block = headerBlock(msg);
    assert.ok(block, "this nats.js's messages keep their header block where headerBlock reads it");
    const fields = ({ view: _, ...e }: StoredEvent) => e;
    const event = fields(storedEvent({ data: msg.data, headers: block }, 'shop/orders'));
    assert.deepEqual(event, fields(storedEvent({ data: msg.data, headers: msg.headers }, 'shop/orders')));
    assert.equal(event.id, published.id);
    assert.deepEqual(event.originalHeaders, {
      'content-type': 'application/json',
      'x-proign-delivery-id': 'dlv_1',
      'x-trace': 'a: b',
    });
  });

  it('registers every series at zero, every label combination the docs list, before any event', async () => {
    const t = await setup({});
    await t.run();
    const text = await t.registry.metrics();
    const own = (name: string) =>
      text
        .split('\n')
        .filter((l) => l.startsWith(`${name}{`) && l.includes(`namespace="${t.names.namespace}"`))
        .map((l) => l.slice(l.indexOf('{')));
    const series = (labels: Record<string, string>) =>
      `{${Object.entries({ namespace: t.names.namespace, subscription: t.names.subscription, ...labels })
        .map(([k, v]) => `${k}="${v}"`)
        .join(',')}} 0`;
    const expect = (name: string, combinations: Record<string, string>[]) =>
      assert.deepEqual(own(name).sort(), combinations.map(series).sort(), name);
    // As docs/dispatcher.md lists them.
    const outcomes = ['delivered', 'retried', 'dead_lettered', 'paused'];
    const statusClasses = ['2xx', '3xx', '4xx', '5xx', 'network', 'timeout'];
    const reasons = ['exhausted', 'permanent', 'ordering'];
    expect(
      'hookyard_dispatcher_attempts_total',
      outcomes.flatMap((outcome) => statusClasses.map((status_class) => ({ outcome, status_class }))),
    );
    expect(
      'hookyard_dispatcher_failures_total',
      statusClasses.map((status_class) => ({ status_class })),
    );
    for (const name of ['hookyard_dispatcher_dead_letters_total', 'hookyard_dispatcher_discarded_total']) {
      expect(
        name,
        reasons.map((reason) => ({ reason })),
      );
    }
    for (const name of [
      'hookyard_dispatcher_retries_total',
      'hookyard_dispatcher_delivered_total',
      'hookyard_dispatcher_filtered_total',
      'hookyard_dispatcher_possible_duplicates_total',
      'hookyard_dispatcher_circuit_state',
      'hookyard_dispatcher_paused',
      'hookyard_dispatcher_in_flight',
      'hookyard_dispatcher_scheduled_retries',
      'hookyard_dispatcher_end_to_end_latency_seconds_count',
    ]) {
      expect(name, [{}]);
    }
    expect(
      'hookyard_dispatcher_delivery_duration_seconds_count',
      statusClasses.map((status_class) => ({ status_class })),
    );
  });
});

export type { NatsConnection };
