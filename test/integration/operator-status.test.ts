// What a user reads off the operator when something is wrong or changes, against the real kube-apiserver and
// nats-server: the status reasons of resources it cannot make Ready, status.url with an Ingress host and TLS,
// subscriptions that pick their sources by label, and the consumer metrics. No kubelet runs here: a resource is
// done when everything but its pods is (reconciledWithoutPods); the pods' reasons are read on the real node.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as k8s from '@kubernetes/client-node';
import { ConditionType, Reason } from '../../src/api/conditions.ts';
import { kinds, type ResourceKind } from '../../src/api/kinds.ts';
import { endpointStream, eventSubject } from '../../src/jetstream/layout.ts';
import { createNamespace, installCRDs, kubeConfig, kubectl } from '../harness/kube.ts';
import { testNats } from '../harness/nats.ts';
import { root, startNats, tempDir } from '../harness/servers.ts';
import { waitFor } from '../harness/wait.ts';
import { type RunningOperator, reconciledWithoutPods, startOperator } from '../harness/workloads.ts';

interface Resource {
  metadata: k8s.V1ObjectMeta & { name: string };
  status?: {
    url?: string;
    observedGeneration?: number;
    conditions?: { type: string; status: string; reason: string; message: string }[];
  };
}

describe('operator status', () => {
  const kc = kubeConfig();
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);
  let namespace = '';
  let operator: RunningOperator;
  let nats: Awaited<ReturnType<typeof testNats>>;

  before(async () => {
    await installCRDs();
    namespace = await createNamespace('status');
    nats = await testNats();
    operator = await startOperator('operator-status', [
      '--namespaces',
      namespace,
      '--no-leader-election',
      '--status-interval',
      '1s',
    ]);
  });
  after(async () => {
    await operator?.stop();
    await nats?.nc.close();
  });

  const get = async (kind: ResourceKind, name: string) => {
    const { group, version, plural } = kinds[kind];
    return (await custom.getNamespacedCustomObject({ group, version, namespace, plural, name })) as Resource;
  };
  const condition = (r: Resource, type: string) => r.status?.conditions?.find((c) => c.type === type);
  /** Waits until the resource's condition of `type` has `reason` for its current generation. */
  const waitReason = (kind: ResourceKind, name: string, type: string, reason: string) =>
    waitFor(`${kind} ${name} ${type}=${reason}`, async () => {
      const r = await get(kind, name);
      return r.status?.observedGeneration === r.metadata.generation && condition(r, type)?.reason === reason && r;
    });
  const waitReconciled = (kind: ResourceKind, name: string) =>
    waitFor(`${kind} ${name} reconciled`, async () => {
      const r = await get(kind, name);
      return reconciledWithoutPods(r) && r;
    });
  const apply = async (yaml: string) => {
    const r = await kubectl(['apply', '--server-side', '-n', namespace, '-f', '-'], yaml);
    assert.equal(r.code, 0, r.stderr);
  };
  const endpoint = (name: string, extra = '') => `
apiVersion: hookyard.io/v1alpha1
kind: ProviderEndpoint
metadata: { name: ${name} }
spec: { provider: generic, verification: [{ none: true }]${extra} }
`;
  const subscription = (name: string, spec: string) => `
apiVersion: hookyard.io/v1alpha1
kind: WebhookSubscription
metadata: { name: ${name} }
spec: { ${spec}, target: { url: "http://orders.shop.svc" } }
`;
  const consumerNames = async (endpointName: string) =>
    (await nats.jsm.consumers.list(endpointStream(namespace, endpointName)).next()).map((c) => c.name);

  it('names a source that does not exist (SourceNotFound), and consumes it once it exists', async () => {
    await apply(subscription('orphan', 'sources: [{ endpoint: later }]'));
    const r = await waitReason('WebhookSubscription', 'orphan', ConditionType.Ready, Reason.SourceNotFound);
    assert.equal(condition(r, ConditionType.ConsumerReady)?.reason, Reason.SourceNotFound);
    assert.match(condition(r, ConditionType.Ready)?.message ?? '', /ProviderEndpoint "later" not found/);
    await apply(endpoint('later'));
    await waitReconciled('WebhookSubscription', 'orphan');
  });

  it('says when a sourceSelector matches no endpoint (NoSources)', async () => {
    await apply(subscription('nobody', 'sourceSelector: { matchLabels: { team: nobody } }'));
    const r = await waitReason('WebhookSubscription', 'nobody', ConditionType.Ready, Reason.NoSources);
    assert.match(condition(r, ConditionType.ConsumerReady)?.message ?? '', /\{"team":"nobody"\}/);
  });

  it('reports a filter that does not compile as FilterValid False (FilterInvalid), with the compiler message', async () => {
    // Only the admission webhook refuses such a filter at apply time (there is none here, as on a cluster installed
    // without it): the API server stores it and the operator is the one to say what is wrong.
    await apply(subscription('bad-filter', 'sources: [{ endpoint: later }], filter: "body.total >"'));
    const r = await waitReason('WebhookSubscription', 'bad-filter', ConditionType.Ready, Reason.FilterInvalid);
    const filterValid = condition(r, ConditionType.FilterValid);
    assert.equal(filterValid?.status, 'False');
    assert.equal(filterValid?.reason, Reason.FilterInvalid);
    assert.match(filterValid?.message ?? '', /^spec\.filter: filter is not valid CEL: <input>:1:12: /);
    assert.equal(condition(r, ConditionType.SpecValid), undefined, 'the rest of the spec is valid');
    assert.deepEqual(await consumerNames('later'), ['orphan'], 'no consumer for the subscription whose filter fails');
  });

  it('reports a spec its schemas refuse beyond the filter as SpecValid False (InvalidSpec), every problem named', async () => {
    // An ordering key that does not compile, beside a filter that does not either: like the filter, only the
    // admission webhook refuses such a key at apply time. The filter's problem joins SpecValid's message.
    const spec = 'sources: [{ endpoint: later }], ordering: { key: "body.order.id >" }, filter: "body.total >"';
    await apply(subscription('bad-key', spec));
    const r = await waitReason('WebhookSubscription', 'bad-key', ConditionType.Ready, Reason.InvalidSpec);
    const specValid = condition(r, ConditionType.SpecValid);
    assert.equal(specValid?.status, 'False');
    assert.match(specValid?.message ?? '', /spec\.ordering\.key: /);
    assert.match(specValid?.message ?? '', /spec\.filter: filter is not valid CEL/);
    assert.ok(!(await consumerNames('later')).includes('bad-key'), 'a consumer for a refused subscription');
  });

  it('publishes status.url with the Ingress host, and https:// with TLS', async () => {
    await apply(endpoint('plain', ', ingress: { host: hooks.example.com }'));
    await apply(endpoint('secure', ', ingress: { host: hooks.example.com, tls: { secretName: hooks-tls } }'));
    const plain = await waitReconciled('ProviderEndpoint', 'plain');
    assert.equal(plain.status?.url, `http://hooks.example.com/hooks/${namespace}/plain`);
    const secure = await waitReconciled('ProviderEndpoint', 'secure');
    assert.equal(secure.status?.url, `https://hooks.example.com/hooks/${namespace}/secure`);
  });

  it('follows a sourceSelector: a relabelled endpoint is consumed from then on, an unlabelled one no longer', async () => {
    await apply(
      endpoint('shop-a').replace('metadata: { name: shop-a }', 'metadata: { name: shop-a, labels: { team: shop } }'),
    );
    await apply(endpoint('shop-b'));
    await apply(subscription('team-shop', 'sourceSelector: { matchLabels: { team: shop } }'));
    await waitReconciled('WebhookSubscription', 'team-shop');
    assert.deepEqual(await consumerNames('shop-a'), ['team-shop']);
    assert.deepEqual(await consumerNames('shop-b'), []);

    // Events already in shop-b's stream are not replayed to the subscription when shop-b gets the label.
    await waitReconciled('ProviderEndpoint', 'shop-b');
    for (const n of [1, 2, 3]) await nats.js.publish(eventSubject(namespace, 'shop-b', `order.${n}`), '{}');
    const labelled = await kubectl(['label', '-n', namespace, 'providerendpoint', 'shop-b', 'team=shop']);
    assert.equal(labelled.code, 0, labelled.stderr);
    const consumer = await waitFor('a consumer on the relabelled endpoint', () =>
      nats.jsm.consumers.info(endpointStream(namespace, 'shop-b'), 'team-shop'),
    );
    assert.equal(consumer.num_pending, 0, 'events from before the label were replayed');
    await nats.js.publish(eventSubject(namespace, 'shop-b', 'order.4'), '{}');
    await waitFor(
      'the next event is pending',
      async () => (await nats.jsm.consumers.info(endpointStream(namespace, 'shop-b'), 'team-shop')).num_pending === 1,
    );

    // A source that loses the label, or is deleted, is no longer consumed; the subscription says which it reads.
    const unlabelled = await kubectl(['label', '-n', namespace, 'providerendpoint', 'shop-a', 'team-']);
    assert.equal(unlabelled.code, 0, unlabelled.stderr);
    await waitFor('the consumer on shop-a removed', async () => (await consumerNames('shop-a')).length === 0);
    await waitFor('the status names shop-b only', async () => {
      const r = await get('WebhookSubscription', 'team-shop');
      const consuming = condition(r, ConditionType.ConsumerReady)?.message;
      return reconciledWithoutPods(r) && consuming === 'Consuming from ProviderEndpoint shop-b.';
    });
    const deleted = await kubectl(['delete', '-n', namespace, 'providerendpoint', 'shop-b', '--wait=true']);
    assert.equal(deleted.code, 0, deleted.stderr);
    await waitReason('WebhookSubscription', 'team-shop', ConditionType.Ready, Reason.NoSources);
  });

  it("reports a subscription's ack-pending and redelivered events, and how long reconciles take", async () => {
    await apply(endpoint('counted'));
    await apply(subscription('counted-orders', 'sources: [{ endpoint: counted }]'));
    await waitReconciled('WebhookSubscription', 'counted-orders');
    const stream = endpointStream(namespace, 'counted');
    for (const n of [1, 2]) await nats.js.publish(eventSubject(namespace, 'counted', `order.${n}`), '{}');
    // As a dispatcher would: two events handed out and not yet acknowledged, one of them handed out again; a third
    // not yet handed out.
    const consumer = await nats.js.consumers.get(stream, 'counted-orders');
    const first = [];
    for await (const m of await consumer.fetch({ max_messages: 2, expires: 5000 })) first.push(m);
    assert.equal(first.length, 2);
    first[0]?.nak();
    const again = [];
    for await (const m of await consumer.fetch({ max_messages: 1, expires: 5000 })) again.push(m);
    assert.equal(again[0]?.info.redelivered, true);
    await nats.js.publish(eventSubject(namespace, 'counted', 'order.3'), '{}');

    const labels = { namespace, subscription: 'counted-orders', endpoint: 'counted' };
    await waitFor('the metrics show it', async () => {
      const [pending, ackPending, redelivered] = await Promise.all([
        operator.metric('hookyard_subscription_consumer_pending', labels),
        operator.metric('hookyard_subscription_consumer_ack_pending', labels),
        operator.metric('hookyard_subscription_consumer_redelivered', labels),
      ]);
      return pending === 1 && ackPending === 2 && redelivered === 1;
    });
    // Both read off one scrape, as reconciles may run meanwhile.
    const text = await (await fetch(`http://127.0.0.1:${operator.metricsPort}/metrics`)).text();
    const value = (series: string) =>
      Number(
        text
          .split('\n')
          .find((l) => l.startsWith(`${series} `))
          ?.split(' ')[1],
      );
    const observed = value('hookyard_operator_reconcile_duration_seconds_count{kind="WebhookSubscription"}');
    const reconciles = text
      .split('\n')
      .filter((l) => l.startsWith('hookyard_operator_reconciles_total{') && l.includes('kind="WebhookSubscription"'))
      .reduce((sum, l) => sum + Number(l.split(' ')[1]), 0);
    assert.ok(observed > 0, 'no reconcile duration observed');
    assert.equal(observed, reconciles, 'a reconcile without its duration');
  });

  it("makes a subscription's consumer deleted behind its back again at the next status refresh", async () => {
    await apply(endpoint('lost'));
    await apply(subscription('lost-orders', 'sources: [{ endpoint: lost }]'));
    await waitReconciled('WebhookSubscription', 'lost-orders');
    await nats.jsm.consumers.delete(endpointStream(namespace, 'lost'), 'lost-orders');
    // Within the status interval (1 s here), long before the resync period (10 min).
    await waitFor('the consumer is made again', async () => (await consumerNames('lost')).includes('lost-orders'));
  });

  it('says JetStream is unavailable while its NATS server is down, and makes the stream when it is back', async (t) => {
    // An operator of its own, on a nats-server of its own that this test stops and starts again on the same port.
    const store = tempDir('hookyard-status-nats-');
    const logs = join(root, '.cache/test-logs');
    let server = await startNats(logs, store.path);
    const own = await createNamespace('status-nats');
    const ownOperator = await startOperator('operator-status-nats', [
      ...['--namespaces', own, '--no-leader-election', '--nats-url', server.url],
    ]);
    t.after(async () => {
      await ownOperator.stop();
      await server.stop();
      store.remove();
    });
    // Stopped only once the operator is connected: one that never was retries its first connection instead.
    await waitFor('the operator ready on NATS', async () => {
      return (await fetch(`http://127.0.0.1:${ownOperator.metricsPort}/readyz`)).status === 200;
    });
    await server.stop();
    const r = await kubectl(['apply', '--server-side', '-n', own, '-f', '-'], endpoint('while-down'));
    assert.equal(r.code, 0, r.stderr);
    const { group, version, plural } = kinds.ProviderEndpoint;
    const read = async () =>
      (await custom.getNamespacedCustomObject({
        group,
        version,
        namespace: own,
        plural,
        name: 'while-down',
      })) as Resource;
    const down = await waitFor('StreamReady=JetStreamUnavailable', async () => {
      const e = await read();
      return condition(e, ConditionType.StreamReady)?.reason === Reason.JetStreamUnavailable && e;
    });
    assert.equal(condition(down, ConditionType.Ready)?.reason, Reason.JetStreamUnavailable);
    server = await startNats(logs, store.path, server.port);
    await waitFor('the stream made once NATS is back', async () => reconciledWithoutPods(await read()), 90);
  });
});
