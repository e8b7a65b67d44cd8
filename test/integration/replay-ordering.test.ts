// A replay of an ordered subscription (spec.ordering) under live load: the operator queues a time range of
// earlier events while new events of the same keys keep arriving, and an in-process dispatcher delivers both to a
// real HTTP target that answers each request after a short wait, so deliveries of a key could overlap if the
// dispatcher let them. Against the real kube-apiserver and nats-server.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import * as k8s from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { kinds } from '../../src/api/kinds.ts';
import type { ReplayStatus } from '../../src/api/replay.ts';
import { parseResource } from '../../src/api/validate.ts';
import type { WebhookSubscription } from '../../src/api/webhook-subscription.ts';
import { type Dispatcher, startDispatcher } from '../../src/dispatcher/dispatcher.ts';
import { readStream } from '../../src/history/read.ts';
import { endpointStream } from '../../src/jetstream/layout.ts';
import { mapSecrets } from '../../src/runtime/secrets.ts';
import { shopAndOrders } from '../harness/examples.ts';
import { createNamespace, installCRDs, kubeConfig, kubectl } from '../harness/kube.ts';
import { testNats } from '../harness/nats.ts';
import { waitFor } from '../harness/wait.ts';
import { type RunningOperator, simulatePods, startOperator } from '../harness/workloads.ts';
import { publishEvent, quietLogger, startTarget } from './dispatcher-support.ts';

const keys = ['k1', 'k2', 'k3', 'k4', 'k5'];

/** What the target saw, in the order it happened: a request arriving, and its answer leaving. */
interface Seen {
  at: 'start' | 'end';
  id: string;
  key: string;
  replay: string | undefined;
}

describe('replay of an ordered subscription under load', () => {
  const custom = kubeConfig().makeApiClient(k8s.CustomObjectsApi);
  let namespace = '';
  let stopPods = () => {};
  let operator: RunningOperator | undefined;
  let nats: Awaited<ReturnType<typeof testNats>>;
  let dispatcher: Dispatcher | undefined;
  let target: Awaited<ReturnType<typeof startTarget>>;
  const seen: Seen[] = [];

  before(async () => {
    await installCRDs();
    namespace = await createNamespace('replay-order');
    stopPods = simulatePods(namespace);
    nats = await testNats();
    operator = await startOperator('operator-replay-order', [
      ...['--namespaces', namespace, '--status-interval', '1s', '--no-leader-election'],
    ]);
    target = await startTarget(async (r, res) => {
      const entry = {
        id: String(r.headers['hookyard-event-id']),
        key: (JSON.parse(r.body.toString()) as { key: string }).key,
        replay: r.headers['hookyard-replay'] as string | undefined,
      };
      seen.push({ at: 'start', ...entry });
      await sleep(5 + Math.floor(Math.random() * 10)); // long enough for a second delivery of the key to overlap
      seen.push({ at: 'end', ...entry });
      res.end();
    });
    const r = await kubectl(
      ['apply', '--server-side', '-n', namespace, '-f', '-'],
      shopAndOrders(target.url, { concurrency: 8, ordering: { key: 'body.key' } }),
    );
    assert.equal(r.code, 0, r.stderr);
    await waitFor("the subscription's consumer", () =>
      nats.jsm.consumers.info(endpointStream(namespace, 'shop'), 'orders').catch(() => undefined),
    );
    const { group, version, plural } = kinds.WebhookSubscription;
    const raw = await custom.getNamespacedCustomObject({ group, version, plural, namespace, name: 'orders' });
    dispatcher = await startDispatcher({
      subscription: parseResource(raw) as WebhookSubscription,
      sources: [{ namespace, endpoint: 'shop' }],
      secrets: mapSecrets({}),
      nc: nats.nc,
      registry: new Registry(),
      logger: quietLogger,
      fetchExpiresMs: 1000,
    });
  });
  after(async () => {
    await dispatcher?.stop();
    stopPods();
    operator?.kill('SIGKILL');
    await target?.close();
    await nats?.nc.close();
  });

  /** Publishes n events per key, keys interleaved, all at once (faster than the target takes them). */
  async function publishRound(prefix: string, n: number): Promise<string[]> {
    const ids = Array.from({ length: n }, (_, i) => keys.map((key) => `${prefix}-${key}-${i}`)).flat();
    await Promise.all(
      ids.map((id) =>
        publishEvent(nats.nc, namespace, 'shop', {
          id,
          type: 'order.updated',
          body: JSON.stringify({ key: keyOf(id) }),
        }),
      ),
    );
    return ids;
  }

  /** The ids of the stream's events (those of `ids`), in the order the stream received them. */
  async function streamOrder(ids: string[]): Promise<string[]> {
    const wanted = new Set(ids);
    const out: string[] = [];
    for await (const m of readStream(nats.js, endpointStream(namespace, 'shop'))) {
      const id = m.headers?.get('Nats-Msg-Id') ?? '';
      if (wanted.has(id)) out.push(id);
    }
    return out;
  }

  const keyOf = (id: string) => id.split('-')[1] as string;

  /** For each key, the ids of the requests that started (live or replayed ones), in order, never two at once. */
  function perKey(replayed: boolean): Map<string, string[]> {
    const order = new Map<string, string[]>();
    const inFlight = new Map<string, string>();
    for (const s of seen) {
      if ((s.replay !== undefined) !== replayed) continue;
      if (s.at === 'start') {
        const other = inFlight.get(s.key);
        assert.equal(other, undefined, `${s.id} started while ${other} of key ${s.key} was in flight`);
        inFlight.set(s.key, s.id);
        order.set(s.key, [...(order.get(s.key) ?? []), s.id]);
      } else inFlight.delete(s.key);
    }
    return order;
  }

  it('keeps live events in key order, one at a time per key, and sends each replayed event once, in its key order', async () => {
    const since = new Date().toISOString();
    const old = await publishRound('old', 6);
    const until = new Date().toISOString();
    await target.waitFor(old.length, 'the first events');

    // Live load: rounds of new events; the replay of the old ones is asked for while they keep coming.
    const live: string[] = [];
    const load = (async () => {
      for (let round = 0; round < 8; round++) live.push(...(await publishRound(`live${round}`, 10)));
    })();
    await waitFor('live events arriving', async () => live.length >= 50);
    const annotated = await kubectl([
      ...['annotate', '--overwrite', '-n', namespace, 'webhooksubscription', 'orders'],
      `hookyard.io/replay=${JSON.stringify({ id: 'under-load', since, until })}`,
    ]);
    assert.equal(annotated.code, 0, annotated.stderr);
    await load;
    const { group, version, plural } = kinds.WebhookSubscription;
    const status = await waitFor('the replay done', async () => {
      const sub = (await custom.getNamespacedCustomObject({ group, version, plural, namespace, name: 'orders' })) as {
        status?: { replay?: ReplayStatus };
      };
      const s = sub.status?.replay;
      return s?.id === 'under-load' && s.phase === 'Succeeded' ? s : undefined;
    });
    assert.equal(status.selected, old.length);
    await target.waitFor(old.length * 2 + live.length, 'every live and replayed event');
    await sleep(500); // nothing more may come: a second copy would show below

    const expected = (ids: string[]) => new Map(keys.map((k) => [k, ids.filter((id) => keyOf(id) === k)]));
    // Live: every event once, in the order the stream received it, per key; the replay did not get in between.
    const stored = await streamOrder([...old, ...live]);
    assert.equal(stored.length, old.length + live.length);
    assert.deepEqual(perKey(false), expected(stored));
    // Replayed: each old event once, marked, in its key's original order, one at a time per key.
    assert.deepEqual(perKey(true), expected(stored.filter((id) => id.startsWith('old-'))));
    assert.ok(seen.filter((s) => s.replay !== undefined).every((s) => s.replay === 'under-load'));
    // Not an assertion (the machine decides the interleaving): how much of the replay ran beside live traffic.
    const lastLive = seen.findLastIndex((s) => s.replay === undefined);
    const beside = seen.filter((s, i) => s.at === 'start' && s.replay !== undefined && i < lastLive).length;
    console.log(`${beside} of ${old.length} replayed events were sent while live events were still being sent`);
  });
});
