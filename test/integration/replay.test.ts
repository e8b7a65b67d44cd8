// Replays asked for on the resource: the operator (a process against the real kube-apiserver and nats-server)
// queues what the hookyard.io/replay annotation names, a dispatcher started from the subscription the API server
// holds sends it through the normal path, and status and Events report it. The target is a real HTTP server on
// loopback.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as k8s from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { kinds } from '../../src/api/kinds.ts';
import type { ReplayStatus } from '../../src/api/replay.ts';
import { parseResource } from '../../src/api/validate.ts';
import type { WebhookSubscription } from '../../src/api/webhook-subscription.ts';
import { type Dispatcher, startDispatcher } from '../../src/dispatcher/dispatcher.ts';
import { attemptStream, deadLetterStream, endpointStream, replayStream } from '../../src/jetstream/layout.ts';
import { orderingStream } from '../../src/jetstream/ordering.ts';
import { mapSecrets } from '../../src/runtime/secrets.ts';
import { shopAndOrders } from '../harness/examples.ts';
import { createNamespace, installCRDs, kubeConfig, kubectl } from '../harness/kube.ts';
import { testNats } from '../harness/nats.ts';
import { waitFor } from '../harness/wait.ts';
import { type RunningOperator, startOperator } from '../harness/workloads.ts';
import { metricValue, publishEvent, quietLogger, type Received, startTarget } from './dispatcher-support.ts';

describe('replay', () => {
  const kc = kubeConfig();
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);
  const core = kc.makeApiClient(k8s.CoreV1Api);
  let namespace = '';
  let operator: RunningOperator;
  let nats: Awaited<ReturnType<typeof testNats>>;
  let dispatcher: Dispatcher | undefined;
  let target: Awaited<ReturnType<typeof startTarget>>;
  const registry = new Registry();
  // Events whose id starts with bad- are refused (400: dead-lettered at once) until the target is fixed.
  let fixed = false;
  // Events whose id starts with kbad- are refused until this is false (the ordered subscription's test).
  let refuseKeyed = true;

  before(async () => {
    await installCRDs();
    namespace = await createNamespace('replay');
    nats = await testNats();
    operator = await startOperator('operator-replay', [
      '--namespaces',
      namespace,
      '--status-interval',
      '1s',
      '--no-leader-election',
    ]);
    target = await startTarget((r, res) => {
      const id = String(r.headers['hookyard-event-id']);
      res.statusCode = (!fixed && id.startsWith('bad-')) || (refuseKeyed && id.startsWith('kbad-')) ? 400 : 200;
      res.end();
    });
    await apply(shopAndOrders(target.url, { eventTypes: ['order.shipped'] }));
    await waitFor("the subscription's consumer and attempt records", async () => {
      await nats.jsm.consumers.info(endpointStream(namespace, 'shop'), 'orders');
      return nats.jsm.streams.info(attemptStream(namespace, 'orders')).catch(() => undefined);
    });
    const raw = await custom.getNamespacedCustomObject({ ...plural(), name: 'orders' });
    dispatcher = await startDispatcher({
      subscription: parseResource(raw) as WebhookSubscription,
      sources: [{ namespace, endpoint: 'shop' }],
      secrets: mapSecrets({}),
      nc: nats.nc,
      registry,
      logger: quietLogger,
      fetchExpiresMs: 1000,
    });
  });
  after(async () => {
    await dispatcher?.stop();
    operator?.kill('SIGKILL');
    await target?.close();
    await nats?.nc.close();
  });

  const plural = () => {
    const { group, version, plural } = kinds.WebhookSubscription;
    return { group, version, plural, namespace };
  };
  async function apply(yaml: string) {
    const r = await kubectl(['apply', '--server-side', '-n', namespace, '-f', '-'], yaml);
    assert.equal(r.code, 0, r.stderr);
  }
  const publish = (id: string, type = 'order.shipped') =>
    publishEvent(nats.nc, namespace, 'shop', { id, type, body: `{"id":"${id}"}` });
  /** Writes the request as a user would, then waits until status reports that request done. */
  async function replay(request: object, done: ReplayStatus['phase'][] = ['Succeeded', 'DryRun'], name = 'orders') {
    const r = await kubectl([
      'annotate',
      '--overwrite',
      '-n',
      namespace,
      'webhooksubscription',
      name,
      `hookyard.io/replay=${JSON.stringify(request)}`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const id = (request as { id?: string }).id;
    return await waitFor(`replay ${id} done`, async () => {
      const sub = (await custom.getNamespacedCustomObject({ ...plural(), name })) as {
        status?: { replay?: ReplayStatus };
      };
      const status = sub.status?.replay;
      return status && status.id === id && done.includes(status.phase) ? status : undefined;
    });
  }
  const arrivals = (id: string) => target.received.filter((r) => r.headers['hookyard-event-id'] === id);
  const replayed = (r: Received) => r.headers['hookyard-replay'];
  const deadLetters = async () => (await nats.jsm.streams.info(deadLetterStream(namespace, 'orders'))).state.messages;
  const events = async (reason: string) =>
    (await core.listNamespacedEvent({ namespace })).items.filter((e) => e.reason === reason);

  it('a dry run of the dead letters lists them and sends nothing; then all dead letters reach the target once, marked', async () => {
    const noReplayStream = /stream not found/;
    await assert.rejects(
      nats.jsm.streams.info(replayStream(namespace, 'orders')),
      noReplayStream,
      'made only to replay',
    );
    for (const id of ['ok-1', 'bad-1', 'bad-2']) await publish(id);
    await waitFor('two dead letters', async () => (await deadLetters()) === 2);
    fixed = true;
    const before = target.received.length;

    const dry = await replay({ id: 'dl-dry', deadLetters: true, dryRun: true });
    assert.equal(dry.phase, 'DryRun');
    assert.deepEqual(
      dry.events?.map((e) => [e.id, e.type]),
      [
        ['bad-1', 'order.shipped'],
        ['bad-2', 'order.shipped'],
      ],
    );
    assert.equal(target.received.length, before, 'a dry run sends nothing');
    assert.equal(await deadLetters(), 2, 'a dry run keeps the dead letters');
    await assert.rejects(nats.jsm.streams.info(replayStream(namespace, 'orders')), noReplayStream, 'nor a dry run');

    const done = await replay({ id: 'dl-1', deadLetters: true });
    assert.equal(done.selected, 2);
    assert.equal(done.remaining, 0);
    for (const id of ['bad-1', 'bad-2']) {
      assert.deepEqual(arrivals(id).map(replayed), [undefined, 'dl-1'], `${id}: the first attempt, then the replay`);
      const replay = arrivals(id)[1];
      assert.equal(replay?.headers['hookyard-delivery-id'], `${id}:replay-dl-1:1`);
      assert.equal(replay?.body.toString(), `{"id":"${id}"}`);
    }
    assert.equal(arrivals('ok-1').length, 1);
    assert.equal(await deadLetters(), 0);
    assert.equal(
      metricValue(await registry.metrics(), 'hookyard_dispatcher_replay_attempts_total', { outcome: 'delivered' }),
      2,
    );
    assert.equal((await events('ReplaySucceeded')).length, 1);
    assert.equal((await events('ReplayDryRun')).length, 1);
  });

  it('replays one event by id, once, and the same request id again does nothing', async () => {
    const before = arrivals('ok-1').length;
    const done = await replay({ id: 'by-id', eventIds: ['ok-1'] });
    assert.equal(done.selected, 1);
    assert.deepEqual(arrivals('ok-1').slice(before).map(replayed), ['by-id']);
    // The annotation written again with the same id: already done, nothing is sent.
    await replay({ id: 'by-id', eventIds: ['ok-1'] });
    assert.equal(arrivals('ok-1').length, before + 1);
  });

  it('replays a time range: each event received in it once, none outside it, none of other types', async () => {
    await waitFor('every event so far settled', async () => target.received.length >= 6 && true);
    const since = new Date();
    await new Promise((ok) => setTimeout(ok, 20));
    for (const id of ['t-1', 't-2']) await publish(id);
    await publish('t-other', 'order.cancelled'); // not one of the subscription's eventTypes
    await waitFor('t-1 and t-2 delivered', async () => arrivals('t-2').length === 1 && arrivals('t-1').length === 1);
    await new Promise((ok) => setTimeout(ok, 20));
    const until = new Date();
    await publish('t-3');
    await waitFor('t-3 delivered', async () => arrivals('t-3').length === 1);
    const before = target.received.length;

    const dry = await replay({ id: 'range-dry', since: since.toISOString(), until: until.toISOString(), dryRun: true });
    assert.deepEqual(
      dry.events?.map((e) => e.id),
      ['t-1', 't-2'],
    );
    assert.equal(target.received.length, before);

    const done = await replay({ id: 'range', since: since.toISOString(), until: until.toISOString() });
    assert.equal(done.selected, 2);
    const sent = target.received.slice(before);
    assert.deepEqual(
      sent.map((r) => [r.headers['hookyard-event-id'], replayed(r)]),
      [
        ['t-1', 'range'],
        ['t-2', 'range'],
      ],
    );
    assert.equal(arrivals('t-other').length, 0);
  });

  it('refuses a request that names nothing, in status and an Event, with what to type', async () => {
    const failed = await replay({ id: 'bad-request', since: 'yesterday' }, ['Failed']);
    assert.match(failed.message ?? '', /since: must be an RFC 3339 time such as 2026-12-01T10:00:00Z/);
    const none = await replay({ id: 'nothing' }, ['Failed']);
    assert.match(
      none.message ?? '',
      /set exactly one of deadLetters, eventIds, since, purgeDeadLetters and test, such as \{"id":"r1","deadLetters":true\}/,
    );
    assert.ok((await events('ReplayInvalid')).length >= 2);
  });

  it('with ordering onDeadLetter DeadLetterRest: a replay of the dead letters lets their key take live events again', async () => {
    await apply(`
apiVersion: hookyard.io/v1alpha1
kind: WebhookSubscription
metadata: {name: keyed}
spec:
  sources: [{endpoint: shop}]
  eventTypes: [order.created]
  target: {url: "${target.url}"}
  ordering: {key: body.order, onDeadLetter: DeadLetterRest}
`);
    await waitFor('the ordering stream', () =>
      nats.jsm.streams.info(orderingStream(namespace, 'keyed')).catch(() => undefined),
    );
    const raw = await custom.getNamespacedCustomObject({ ...plural(), name: 'keyed' });
    const keyedRegistry = new Registry();
    const keyed = await startDispatcher({
      subscription: parseResource(raw) as WebhookSubscription,
      sources: [{ namespace, endpoint: 'shop' }],
      secrets: mapSecrets({}),
      nc: nats.nc,
      registry: keyedRegistry,
      logger: quietLogger,
      fetchExpiresMs: 1000,
    });
    try {
      const send = (id: string) =>
        publishEvent(nats.nc, namespace, 'shop', { id, type: 'order.created', body: `{"order":"o1","id":"${id}"}` });
      const dead = async () => (await nats.jsm.streams.info(deadLetterStream(namespace, 'keyed'))).state.messages;
      await send('kbad-1');
      await waitFor('the refused event dead-lettered', async () => (await dead()) === 1);
      await send('k-2');
      await waitFor('the rest of its key dead-lettered too', async () => (await dead()) === 2);
      refuseKeyed = false;
      const done = await replay({ id: 'keyed-dl', deadLetters: true }, ['Succeeded'], 'keyed');
      assert.equal(done.selected, 2);
      assert.deepEqual(arrivals('k-2').map(replayed), ['keyed-dl'], 'k-2 sent once, by the replay');
      // A live event of the key after the replay reaches the target instead of the dead letters.
      await send('k-3');
      await waitFor('k-3 delivered', async () => arrivals('k-3').length === 1, 60);
      assert.equal(await dead(), 0);
    } finally {
      await keyed.stop();
    }
  });

  it('deletes the attempt and replay streams with the subscription', async () => {
    await dispatcher?.stop();
    dispatcher = undefined;
    assert.ok(await nats.jsm.streams.info(attemptStream(namespace, 'orders')));
    const r = await kubectl(['delete', '-n', namespace, 'webhooksubscription', 'orders', '--wait=true']);
    assert.equal(r.code, 0, r.stderr);
    for (const stream of [attemptStream(namespace, 'orders'), replayStream(namespace, 'orders')]) {
      await assert.rejects(nats.jsm.streams.info(stream), /stream not found/);
    }
  });
});
