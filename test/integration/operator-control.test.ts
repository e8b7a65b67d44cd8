// The operator's control loop against the real kube-apiserver and nats-server: what it caches, what it repairs
// without a restart, what it refuses to retry forever. The operator talks to the API server through a recording
// proxy (test/harness/api-proxy.ts), which can also cut its connections for a while.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import * as k8s from '@kubernetes/client-node';
import { ConditionType, Reason } from '../../src/api/conditions.ts';
import { kinds } from '../../src/api/kinds.ts';
import { deadLetterStream, endpointStream } from '../../src/jetstream/layout.ts';
import { Informer } from '../../src/operator/informer.ts';
import { receiverName } from '../../src/operator/render.ts';
import { log } from '../../src/runtime/log.ts';
import { type ApiProxy, startApiProxy } from '../harness/api-proxy.ts';
import { createNamespace, installCRDs, kubeConfig, kubectl } from '../harness/kube.ts';
import { testNats } from '../harness/nats.ts';
import { tempDir } from '../harness/servers.ts';
import { waitFor } from '../harness/wait.ts';
import { type RunningOperator, reconciledWithoutPods, simulatePods, startOperator } from '../harness/workloads.ts';

interface Resource {
  metadata: k8s.V1ObjectMeta & { name: string };
  status?: { observedGeneration?: number; conditions?: { type: string; status: string; reason: string }[] };
}

describe('operator control loop', () => {
  const kc = kubeConfig();
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const apps = kc.makeApiClient(k8s.AppsV1Api);
  const work = tempDir('hookyard-control-');
  const helmMarker = `helm-release-${randomBytes(8).toString('hex')}`;
  const operators: RunningOperator[] = [];
  let namespace = '';
  let proxy: ApiProxy;
  let nats: Awaited<ReturnType<typeof testNats>>;

  before(async () => {
    await installCRDs();
    namespace = await createNamespace('control');
    nats = await testNats();
    // A Helm release Secret in the watched namespace, as every helm install leaves one.
    await core.createNamespacedSecret({
      namespace,
      body: {
        metadata: { name: 'sh.helm.release.v1.shop.v1', labels: { owner: 'helm' } },
        type: 'helm.sh/release.v1',
        stringData: { release: helmMarker },
      },
    });
    proxy = await startApiProxy(work.path, [Buffer.from(helmMarker).toString('base64'), helmMarker]);
    const operator = await startOperator(
      'operator-control',
      ['--namespaces', namespace, '--no-leader-election', '--status-interval', '1s'],
      { KUBECONFIG: proxy.kubeconfig },
    );
    operators.push(operator);
  });
  after(async () => {
    for (const o of operators) await o.stop();
    await proxy?.close();
    await nats?.nc.close();
    work.remove();
  });

  const get = async (kind: 'ProviderEndpoint' | 'WebhookSubscription', name: string) => {
    const { group, version, plural } = kinds[kind];
    return (await custom.getNamespacedCustomObject({ group, version, namespace, plural, name })) as Resource;
  };
  const condition = (r: Resource, type: string) => r.status?.conditions?.find((c) => c.type === type);
  // No kubelet runs here: a resource is done when everything but its pods is (reconciledWithoutPods).
  const waitReconciled = (kind: 'ProviderEndpoint' | 'WebhookSubscription', name: string) =>
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

  it("watches Secrets' metadata only: a Helm release's data never reaches it, a referenced Secret still rolls the pods", async () => {
    await core.createNamespacedSecret({
      namespace,
      body: { metadata: { name: 'proign-key' }, stringData: { secret: 'first' } },
    });
    await apply(`
apiVersion: hookyard.io/v1alpha1
kind: ProviderEndpoint
metadata: { name: proign }
spec: { provider: proign, verification: [{ hmac: { secretRefs: [{ name: proign-key, key: secret }] } }] }
`);
    await waitReconciled('ProviderEndpoint', 'proign');
    const checksum = async () =>
      (await apps.readNamespacedDeployment({ namespace, name: receiverName('proign') })).spec?.template.metadata
        ?.annotations?.['hookyard.io/config-checksum'];
    const first = await checksum();
    await core.replaceNamespacedSecret({
      namespace,
      name: 'proign-key',
      body: { metadata: { name: 'proign-key' }, stringData: { secret: 'second' } },
    });
    await waitFor('the pods roll', async () => (await checksum()) !== first);

    const secretCollections = proxy.requests.filter((r) => /\/secrets(\?|$)/.test(r.url));
    assert.ok(secretCollections.length >= 2, 'Secrets are listed and watched');
    for (const r of secretCollections) assert.match(r.accept, /as=PartialObjectMetadata/, `${r.method} ${r.url}`);
    assert.ok(!proxy.sent(helmMarker) && !proxy.sent(Buffer.from(helmMarker).toString('base64')), 'Helm data read');
  });

  it('lists again after its watches were cut, and repairs an object deleted meanwhile', async () => {
    await apply(endpoint('gap'));
    await waitReconciled('ProviderEndpoint', 'gap');
    proxy.interrupt();
    await core.deleteNamespacedConfigMap({ namespace, name: receiverName('gap') });
    await sleep(1500);
    const from = proxy.requests.length;
    proxy.resume();
    await waitFor('the ConfigMap is back', () =>
      core.readNamespacedConfigMap({ namespace, name: receiverName('gap') }),
    );
    const relisted = proxy.requests
      .slice(from)
      .filter((r) => r.method === 'GET' && /\/configmaps\?/.test(r.url) && !r.url.includes('watch=true'));
    assert.ok(relisted.length > 0, 'ConfigMaps were not listed again after the gap');
  });

  const events = async (name: string, reason: string) =>
    (await core.listNamespacedEvent({ namespace, fieldSelector: `involvedObject.name=${name}` })).items.filter(
      (e) => e.reason === reason,
    );

  it('reports a stream JetStream refuses once and does not retry it; the dead letters get the sources replicas', async () => {
    // One nats-server cannot hold three replicas: what the operator asks for is read off the JetStream API.
    const requested = (stream: string) => {
      const configs: { num_replicas?: number }[] = [];
      const sub = nats.nc.subscribe(`$JS.API.STREAM.CREATE.${stream}`, {
        callback: (_err, m) => {
          configs.push(m.json());
        },
      });
      return { configs, stop: () => sub.unsubscribe() };
    };
    const endpointCreates = requested(endpointStream(namespace, 'replicated'));
    const deadLetterCreates = requested(deadLetterStream(namespace, 'replicated-orders'));
    await apply(endpoint('replicated', ', stream: { replicas: 3 }'));
    await apply(`
apiVersion: hookyard.io/v1alpha1
kind: WebhookSubscription
metadata: { name: replicated-orders }
spec: { sources: [{ endpoint: replicated }], target: { url: "http://orders.shop.svc" } }
`);
    const refused = await waitFor('StreamReady=False', async () => {
      const r = await get('ProviderEndpoint', 'replicated');
      // The receiver's Deployment is written all the same (it waits for its pods: no kubelet here).
      const deployed = condition(r, ConditionType.ReceiverReady)?.reason === Reason.PodsNotReady;
      return deployed && condition(r, ConditionType.StreamReady)?.reason === Reason.StreamRefused && r;
    });
    assert.match(JSON.stringify(condition(refused, ConditionType.StreamReady)), /replicas/);
    assert.equal(condition(refused, ConditionType.Ready)?.reason, Reason.StreamRefused);
    await waitFor('the dead-letter stream asked for', async () => deadLetterCreates.configs.length > 0);
    assert.deepEqual(
      deadLetterCreates.configs.map((c) => c.num_replicas),
      deadLetterCreates.configs.map(() => 3),
    );
    const asked = endpointCreates.configs.length;
    await sleep(4000); // a retry with backoff would ask again within 0.5 + 1 + 2 s
    assert.equal(endpointCreates.configs.length, asked, 'the refused stream was asked for again');
    endpointCreates.stop();
    deadLetterCreates.stop();
    assert.equal((await events('replicated', Reason.StreamRefused)).length, 1);
    const terminal = await operators[0]?.metric('hookyard_operator_reconciles_total', {
      kind: 'ProviderEndpoint',
      result: 'terminal',
    });
    assert.ok((terminal ?? 0) > 0, 'not counted as terminal');
  });

  it("says so when a subscription's event types can never match what its sources send", async () => {
    await apply(`
apiVersion: hookyard.io/v1alpha1
kind: ProviderEndpoint
metadata: { name: shop-fotoweb }
spec: { provider: fotoweb, verification: [{ none: true }] }
---
apiVersion: hookyard.io/v1alpha1
kind: WebhookSubscription
metadata: { name: fotoweb-typo }
spec: { sources: [{ endpoint: shop-fotoweb }], eventTypes: [order.submited], target: { url: "http://orders.shop.svc" } }
`);
    // Once its consumer is made, what keeps it from Ready is the event types.
    const stuck = await waitFor('its consumer made', async () => {
      const r = await get('WebhookSubscription', 'fotoweb-typo');
      return condition(r, ConditionType.ConsumerReady)?.status === 'True' && r;
    });
    const check = condition(stuck, ConditionType.EventTypesMatch);
    assert.equal(check?.reason, Reason.NoMatchingEventTypes);
    assert.match(JSON.stringify(check), /cart\.changed, order\.submitted, order\.approved/);
    assert.equal(condition(stuck, ConditionType.Ready)?.reason, Reason.NoMatchingEventTypes);
    await waitFor(
      'a Warning Event',
      async () => (await events('fotoweb-typo', Reason.NoMatchingEventTypes)).length === 1,
    );
    const r = await kubectl([
      'patch',
      '-n',
      namespace,
      'webhooksubscription',
      'fotoweb-typo',
      '--type=merge',
      '-p',
      JSON.stringify({ spec: { eventTypes: ['order.submitted'] } }),
    ]);
    assert.equal(r.code, 0, r.stderr);
    await waitReconciled('WebhookSubscription', 'fotoweb-typo');
  });

  it("writes a new resource's status once, saying Ready, when its pods are available in time", async () => {
    // A namespace of its own, where the pod stand-in makes every Deployment available, and an operator that holds a
    // new resource's first status for far longer than the stand-in takes; every status the API server stores is
    // seen by a watch.
    const settled = await createNamespace('control-settle');
    const stopPods = simulatePods(settled);
    const statuses = new Map<string, string[]>();
    const watches = [kinds.ProviderEndpoint, kinds.WebhookSubscription].map(
      (kind) =>
        new Informer<Resource>({
          kc,
          kind,
          namespace: settled,
          resyncMs: 10 * 60_000,
          log,
          onChange: (r) => {
            const seen = statuses.get(`${kind.kind}/${r.metadata.name}`) ?? [];
            const ready = condition(r, ConditionType.Ready);
            const status = ready ? `${ready.status} ${ready.reason}` : 'none';
            if (seen.at(-1) !== status) seen.push(status);
            statuses.set(`${kind.kind}/${r.metadata.name}`, seen);
          },
        }),
    );
    const settling = await startOperator('operator-settle', [
      '--namespaces',
      settled,
      '--no-leader-election',
      '--status-settle',
      '10m',
    ]);
    try {
      await Promise.all(watches.map((w) => w.synced));
      const applied = await kubectl(
        ['apply', '--server-side', '-n', settled, '-f', '-'],
        `${endpoint('settled')}---
apiVersion: hookyard.io/v1alpha1
kind: WebhookSubscription
metadata: { name: settled-orders }
spec: { sources: [{ endpoint: settled }], target: { url: "http://orders.shop.svc" } }
`,
      );
      assert.equal(applied.code, 0, applied.stderr);
      const keys = ['ProviderEndpoint/settled', 'WebhookSubscription/settled-orders'];
      await waitFor('both Ready', async () => keys.every((key) => statuses.get(key)?.at(-1) === 'True Ready'));
      for (const key of keys) assert.deepEqual(statuses.get(key), ['none', 'True Ready'], key);
    } finally {
      for (const w of watches) w.stop();
      stopPods();
      await settling.stop();
    }
  });

  it('comes back to every resource each resync period: a stream deleted by hand is made again', async () => {
    const resyncing = await startOperator('operator-resync', [
      '--namespaces',
      namespace,
      '--no-leader-election',
      '--resync-period',
      '2s',
    ]);
    operators.push(resyncing);
    await operators[0]?.stop();
    await apply(endpoint('resynced'));
    await waitReconciled('ProviderEndpoint', 'resynced');
    const stream = endpointStream(namespace, 'resynced');
    await nats.jsm.streams.delete(stream);
    await waitFor('the stream is made again', () => nats.jsm.streams.info(stream), 30);
    assert.equal(condition(await get('ProviderEndpoint', 'resynced'), ConditionType.StreamReady)?.reason, Reason.Ready);
  });
});
