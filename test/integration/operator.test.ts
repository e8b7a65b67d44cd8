// `hookyard operator` as a process against the real kube-apiserver and nats-server. There is no kube-controller-
// manager or kubelet here, so no pod runs: a resource is done when everything but its pods is (reconciledWithoutPods),
// and the end-to-end case runs the receiver and dispatcher from the Deployments and ConfigMaps the operator wrote.
// Pods becoming available and Ready True are the real node's (test/e2e/product.test.ts).
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import * as k8s from '@kubernetes/client-node';
import { AckPolicy } from '@nats-io/jetstream';
import { ConditionType, Reason } from '../../src/api/conditions.ts';
import { kinds, type ResourceKind } from '../../src/api/kinds.ts';
import type { ProviderEndpoint } from '../../src/api/provider-endpoint.ts';
import type { WebhookSubscription } from '../../src/api/webhook-subscription.ts';
import { sendSample } from '../../src/dev/send.ts';
import { deadLetterStream, endpointStream, eventFilterSubject, eventSubject } from '../../src/jetstream/layout.ts';
import { dispatcherName, receiverName } from '../../src/operator/render.ts';
import { samples } from '../../src/providers/samples.ts';
import { durationNanos } from '../../src/runtime/duration.ts';
import { freePort } from '../../src/runtime/net.ts';
import type { CliProcess } from '../harness/cli.ts';
import { exampleDocuments, namesOf } from '../harness/examples.ts';
import { createNamespace, installCRDs, kubeConfig, kubectl } from '../harness/kube.ts';
import { testNats } from '../harness/nats.ts';
import { root, tempDir } from '../harness/servers.ts';
import { waitFor } from '../harness/wait.ts';
import { type RunningOperator, reconciledWithoutPods, runDeployment, startOperator } from '../harness/workloads.ts';
import { within } from './delivery-support.ts';

type Kind = ResourceKind;

interface Resource {
  metadata: k8s.V1ObjectMeta & { name: string };
  spec: Record<string, unknown>;
  status?: {
    url?: string;
    observedGeneration?: number;
    pending?: number;
    ackPending?: number;
    lastAckTime?: string;
    conditions?: { type: string; status: string; reason: string; message: string }[];
  };
}

describe('operator', () => {
  const kc = kubeConfig();
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const apps = kc.makeApiClient(k8s.AppsV1Api);
  const networking = kc.makeApiClient(k8s.NetworkingV1Api);
  const docs = exampleDocuments();
  const work = tempDir('hookyard-operator-');
  const children: CliProcess[] = [];
  const operators: RunningOperator[] = [];
  let namespace = '';
  let operator: RunningOperator;
  let nats: Awaited<ReturnType<typeof testNats>>;

  const operatorArgs = () => ['--namespaces', namespace, '--status-interval', '1s'];
  const run = async (name: string, args: string[]) => {
    const started = await startOperator(name, args);
    operators.push(started);
    return started;
  };

  before(async () => {
    await installCRDs();
    namespace = await createNamespace('operator');
    nats = await testNats();
    operator = await run('operator-1', [...operatorArgs(), '--no-leader-election']);
  });
  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    for (const o of operators) o.kill('SIGKILL');
    await nats.nc.close();
    work.remove();
  });

  const get = async (kind: Kind, name: string) => {
    const { group, version, plural } = kinds[kind];
    return (await custom.getNamespacedCustomObject({ group, version, namespace, plural, name })) as Resource;
  };
  const list = async (kind: Kind) => {
    const { group, version, plural } = kinds[kind];
    return ((await custom.listNamespacedCustomObject({ group, version, namespace, plural })) as { items: Resource[] })
      .items;
  };
  const condition = (r: Resource, type: string) => r.status?.conditions?.find((c) => c.type === type);
  /** Waits until the operator has done all it can for the resource without pods (see reconciledWithoutPods). */
  const waitReconciled = (kind: Kind, name: string) =>
    waitFor(`${kind} ${name} reconciled`, async () => {
      const r = await get(kind, name);
      return reconciledWithoutPods(r) && r;
    });
  const apply = async (yaml: string) => {
    const r = await kubectl(['apply', '--server-side', '-n', namespace, '-f', '-'], yaml);
    assert.equal(r.code, 0, r.stderr);
  };
  const patchSubscription = async (name: string, patch: object) => {
    const r = await kubectl([
      'patch',
      '-n',
      namespace,
      'webhooksubscription',
      name,
      '--type=merge',
      '-p',
      JSON.stringify(patch),
    ]);
    assert.equal(r.code, 0, r.stderr);
  };
  const secretData = async (name: string) => {
    const secret = await core.readNamespacedSecret({ namespace, name });
    return Object.fromEntries(
      Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString()]),
    );
  };

  it('creates every object, stream and consumer of each example, with the configured settings', async () => {
    const applied = await kubectl(['apply', '--server-side', '-n', namespace, '-f', join(root, 'examples')]);
    assert.equal(applied.code, 0, applied.stderr);
    const endpoints = namesOf(docs, 'ProviderEndpoint');
    const subscriptions = namesOf(docs, 'WebhookSubscription');
    for (const name of endpoints) {
      const endpoint = await waitReconciled('ProviderEndpoint', name);
      const spec = endpoint.spec as ProviderEndpoint['spec'];
      const objectName = receiverName(name);
      const owned = (o: k8s.V1ObjectMeta | undefined) => o?.ownerReferences?.[0]?.uid === endpoint.metadata.uid;
      const configMap = await core.readNamespacedConfigMap({ namespace, name: objectName });
      assert.ok(owned(configMap.metadata) && configMap.data?.['endpoint.yaml']?.includes(`provider: ${spec.provider}`));
      const deployment = await apps.readNamespacedDeployment({ namespace, name: objectName });
      assert.ok(owned(deployment.metadata));
      assert.deepEqual(deployment.spec?.template.spec?.containers[0]?.args?.slice(0, 1), ['receiver']);
      assert.ok(deployment.spec?.template.metadata?.annotations?.['hookyard.io/config-checksum']);
      assert.ok(owned((await core.readNamespacedService({ namespace, name: objectName })).metadata));
      assert.ok(owned((await networking.readNamespacedIngress({ namespace, name: objectName })).metadata));
      assert.equal(endpoint.status?.url, `/hooks/${namespace}/${name}`);
      const stream = await nats.jsm.streams.info(endpointStream(namespace, name));
      assert.equal(stream.config.max_age, durationNanos(spec.stream.maxAge));
      assert.equal(stream.config.num_replicas, spec.stream.replicas);
      assert.equal(stream.config.storage, spec.stream.storage);
      assert.deepEqual(stream.config.subjects, [`hookyard.${namespace}.${name}.>`]);
    }
    for (const name of subscriptions) {
      const subscription = await waitReconciled('WebhookSubscription', name);
      const spec = subscription.spec as { sources: { endpoint: string }[]; eventTypes: string[]; ackWait: string };
      for (const { endpoint } of spec.sources) {
        const consumer = await nats.jsm.consumers.info(endpointStream(namespace, endpoint), name);
        const filters = consumer.config.filter_subjects ?? [consumer.config.filter_subject];
        assert.deepEqual(
          filters,
          spec.eventTypes.map((t) => eventFilterSubject(namespace, endpoint, t)),
        );
        assert.equal(consumer.config.ack_wait, durationNanos(spec.ackWait));
        assert.equal(consumer.config.ack_policy, AckPolicy.Explicit);
      }
      await nats.jsm.streams.info(deadLetterStream(namespace, name));
      const target = (subscription.spec as WebhookSubscription['spec']).target;
      const resolved = target.service
        ? `http://${target.service.name}.${namespace}.svc:${target.service.port}${target.service.path}`
        : target.url;
      assert.equal((subscription.status as { targetURL?: string }).targetURL, resolved, `${name}: status.targetURL`);
      const deployment = await apps.readNamespacedDeployment({ namespace, name: dispatcherName(name) });
      assert.equal(deployment.metadata?.ownerReferences?.[0]?.uid, subscription.metadata.uid);
      assert.ok(await core.readNamespacedConfigMap({ namespace, name: dispatcherName(name) }));
      const { ConsumerReady, FilterValid, SecretsResolved, EventTypesMatch, DispatcherReady } = ConditionType;
      for (const type of [ConsumerReady, FilterValid, SecretsResolved, EventTypesMatch]) {
        assert.equal(condition(subscription, type)?.status, 'True', type);
      }
      assert.equal(condition(subscription, DispatcherReady)?.reason, Reason.PodsNotReady, 'waits for its pods');
      const labels = { namespace, subscription: name };
      for (const { endpoint } of spec.sources) {
        const metric = await operator.metric('hookyard_subscription_consumer_pending', { ...labels, endpoint });
        assert.equal(metric, 0, `consumer_pending of ${name} on ${endpoint}`);
      }
      assert.equal(await operator.metric('hookyard_subscription_dead_letters', labels), 0);
    }
  });

  it("updates a subscription's consumer in place when its event types change, keeping its position", async () => {
    const stream = endpointStream(namespace, 'proign');
    for (const type of ['document.created', 'document.signed', 'invoice.paid', 'document.archived', 'invoice.sent']) {
      await nats.js.publish(eventSubject(namespace, 'proign', type), '{}');
    }
    const consumer = await nats.js.consumers.get(stream, 'proign-documents');
    const batch = await consumer.fetch({ max_messages: 2, expires: 2000 });
    for await (const m of batch) await m.ackAck();
    const before = await nats.jsm.consumers.info(stream, 'proign-documents');
    assert.equal(before.num_pending, 1); // document.archived; the invoices are not its types

    await patchSubscription('proign-documents', { spec: { eventTypes: ['document.*', 'ticket.*', 'invoice.*'] } });
    const after = await waitFor('the consumer takes the new event types', async () => {
      const info = await nats.jsm.consumers.info(stream, 'proign-documents');
      return (info.config.filter_subjects?.length ?? 0) === 3 && info;
    });
    assert.equal(after.created, before.created, 'the consumer was recreated');
    assert.equal(after.ack_floor.stream_seq, before.ack_floor.stream_seq);
    assert.equal(after.num_pending, 3); // both invoices and document.archived
    await waitReconciled('WebhookSubscription', 'proign-documents');
  });

  it('reads a source added to a running subscription from then on, not its whole stream', async () => {
    const stream = endpointStream(namespace, 'printiq');
    for (const n of [1, 2, 3]) await nats.js.publish(eventSubject(namespace, 'printiq', `document.${n}`), '{}');
    await patchSubscription('proign-documents', {
      spec: { sources: [{ endpoint: 'proign' }, { endpoint: 'printiq' }] },
    });
    const consumer = await waitFor('a consumer on the added source', () =>
      nats.jsm.consumers.info(stream, 'proign-documents'),
    );
    assert.equal(consumer.config.deliver_policy, 'new');
    assert.equal(consumer.num_pending, 0);
    await nats.js.publish(eventSubject(namespace, 'printiq', 'document.4'), '{}');
    await waitFor('the next event is pending', async () => {
      return (await nats.jsm.consumers.info(stream, 'proign-documents')).num_pending === 1;
    });
    await waitReconciled('WebhookSubscription', 'proign-documents');
  });

  it('reports a missing Secret by name, and goes on once it exists; a changed Secret rolls the pods', async () => {
    await apply(`
apiVersion: hookyard.io/v1alpha1
kind: ProviderEndpoint
metadata: { name: late-secret }
spec:
  provider: proign
  verification:
    - hmac: { secretRefs: [{ name: late-webhook-secret, key: secret }] }
`);
    const notReady = await waitFor('Ready=False', async () => {
      const r = await get('ProviderEndpoint', 'late-secret');
      return condition(r, ConditionType.Ready)?.status === 'False' && r;
    });
    const ready = condition(notReady, ConditionType.Ready);
    assert.equal(ready?.reason, Reason.SecretNotFound);
    assert.match(ready?.message ?? '', /Secret "late-webhook-secret" not found/);
    await assert.rejects(apps.readNamespacedDeployment({ namespace, name: receiverName('late-secret') }));

    await core.createNamespacedSecret({
      namespace,
      body: { metadata: { name: 'late-webhook-secret' }, stringData: { secret: 'first' } },
    });
    await waitReconciled('ProviderEndpoint', 'late-secret');
    const checksum = async () =>
      (await apps.readNamespacedDeployment({ namespace, name: receiverName('late-secret') })).spec?.template.metadata
        ?.annotations?.['hookyard.io/config-checksum'];
    const first = await checksum();
    await core.replaceNamespacedSecret({
      namespace,
      name: 'late-webhook-secret',
      body: { metadata: { name: 'late-webhook-secret' }, stringData: { secret: 'second' } },
    });
    await waitFor('the pods roll', async () => (await checksum()) !== first);
    const events = await core.listNamespacedEvent({ namespace, fieldSelector: 'involvedObject.name=late-secret' });
    assert.ok(events.items.some((e) => e.reason === Reason.SecretNotFound && e.type === 'Warning'));
    assert.ok(
      events.items.some((e) => e.type === 'Normal'),
      'no Event for the recovery',
    );
    const all = await core.listNamespacedEvent({ namespace });
    const startingUp = all.items.filter((e) => e.type === 'Warning' && e.reason === Reason.PodsNotReady);
    assert.deepEqual(startingUp, [], 'pods starting up recorded Warnings');
    assert.ok(!JSON.stringify(await get('ProviderEndpoint', 'late-secret')).includes('second'));
  });

  it('waits for a CA bundle kept in a ConfigMap, mounts it for the dispatcher, and rolls the pods when it changes', async () => {
    await apply(`
apiVersion: hookyard.io/v1alpha1
kind: WebhookSubscription
metadata: { name: private-ca }
spec:
  sources: [{ endpoint: proign }]
  target:
    url: https://orders.partner.example/hooks
    tls: { caBundle: { configMapKeyRef: { name: partner-ca, key: ca.crt } } }
`);
    const notReady = await waitFor('SecretsResolved=False', async () => {
      const r = await get('WebhookSubscription', 'private-ca');
      return condition(r, ConditionType.SecretsResolved)?.status === 'False' && r;
    });
    assert.match(condition(notReady, ConditionType.SecretsResolved)?.message ?? '', /ConfigMap "partner-ca" not found/);
    await assert.rejects(apps.readNamespacedDeployment({ namespace, name: dispatcherName('private-ca') }));

    await core.createNamespacedConfigMap({
      namespace,
      body: { metadata: { name: 'partner-ca' }, data: { 'ca.crt': 'first CA' } },
    });
    await waitReconciled('WebhookSubscription', 'private-ca');
    const pod = async () =>
      (await apps.readNamespacedDeployment({ namespace, name: dispatcherName('private-ca') })).spec?.template;
    const first = await pod();
    const volume = first?.spec?.volumes?.find((v) => v.name === 'configmaps');
    assert.equal(volume?.projected?.sources?.[0]?.configMap?.name, 'partner-ca');
    await core.replaceNamespacedConfigMap({
      namespace,
      name: 'partner-ca',
      body: { metadata: { name: 'partner-ca' }, data: { 'ca.crt': 'second CA' } },
    });
    const checksum = (t: typeof first) => t?.metadata?.annotations?.['hookyard.io/config-checksum'];
    await waitFor('the pods roll', async () => checksum(await pod()) !== checksum(first));
  });

  /** resourceVersion of every resource and every object the operator made in the namespace. */
  const versions = async () => {
    const selector = { namespace, labelSelector: 'app.kubernetes.io/managed-by=hookyard-operator' };
    const all = [
      ...(await list('ProviderEndpoint')),
      ...(await list('WebhookSubscription')),
      ...(await core.listNamespacedConfigMap(selector)).items,
      ...(await core.listNamespacedService(selector)).items,
      ...(await apps.listNamespacedDeployment(selector)).items,
      ...(await networking.listNamespacedIngress(selector)).items,
    ];
    return Object.fromEntries(all.map((o) => [`${o.metadata?.name}/${o.metadata?.uid}`, o.metadata?.resourceVersion]));
  };

  it('changes nothing when restarted', async () => {
    const resources = (await list('ProviderEndpoint')).length + (await list('WebhookSubscription')).length;
    await sleep(2000); // status refreshes settle
    const before = await versions();
    await operator.stop();
    operator = await run('operator-2', [...operatorArgs(), '--no-leader-election']);
    await waitFor(
      'every resource reconciled',
      async () => ((await operator.metric('hookyard_operator_reconciles_total')) ?? 0) >= resources,
    );
    await sleep(3000); // several status refreshes
    assert.ok(
      ((await operator.metric('hookyard_operator_status_refreshes_total', { kind: 'WebhookSubscription' })) ?? 0) > 0,
      'status refreshes ran',
    );
    assert.deepEqual(await versions(), before);
  });

  it('lets only the leader write, gives the Lease up on SIGTERM, and stops at once when another holds it', async () => {
    await operator.stop();
    const lease = ['--lease-namespace', namespace, '--lease-name', 'hookyard-test'];
    // A Lease far longer than any wait below: only a release explains a takeover, and only seeing another holder
    // explains a leader stopping (not its renew deadline).
    const timing = ['--lease-duration', '120s', '--renew-deadline', '100s', '--retry-period', '300ms'];
    const first = await run('operator-a', [...operatorArgs(), ...lease, ...timing]);
    await waitFor('a leader', async () => (await first.metric('hookyard_operator_is_leader')) === 1);
    const second = await run('operator-b', [...operatorArgs(), ...lease, ...timing]);
    await apply(`
apiVersion: hookyard.io/v1alpha1
kind: ProviderEndpoint
metadata: { name: leader-check }
spec: { provider: generic, verification: [{ none: true }] }
`);
    await waitReconciled('ProviderEndpoint', 'leader-check');
    const reconciles = async (o: RunningOperator) =>
      (await o.metric('hookyard_operator_reconciles_total', { kind: 'ProviderEndpoint' })) ?? 0;
    assert.ok((await reconciles(first)) > 0);
    assert.equal(await reconciles(second), 0, 'the standby reconciled');
    assert.equal(await second.metric('hookyard_operator_is_leader'), 0);

    await first.stop();
    await waitFor('the standby takes over', async () => (await second.metric('hookyard_operator_is_leader')) === 1, 60);
    const coordination = kc.makeApiClient(k8s.CoordinationV1Api);
    assert.equal(
      (await coordination.readNamespacedLease({ namespace, name: 'hookyard-test' })).spec?.holderIdentity,
      'operator-b',
    );
    await apply(`
apiVersion: hookyard.io/v1alpha1
kind: ProviderEndpoint
metadata: { name: after-failover }
spec: { provider: generic, verification: [{ none: true }] }
`);
    await waitReconciled('ProviderEndpoint', 'after-failover');

    // Another replica wrote the Lease (a partition healed, say): the leader must stop acting at its next round. The
    // leader renews every 300 ms, so a write may conflict with a renewal: read again and retry.
    await waitFor('the Lease written with another holder', async () => {
      const current = await coordination.readNamespacedLease({ namespace, name: 'hookyard-test' });
      const spec = {
        ...current.spec,
        holderIdentity: 'operator-elsewhere',
        renewTime: new k8s.V1MicroTime(Date.now()),
      };
      return coordination.replaceNamespacedLease({ namespace, name: 'hookyard-test', body: { ...current, spec } });
    });
    assert.equal(await within(second.exited, 60, 'the leader exits'), 1, second.output());
    assert.match(second.output(), /lost the leadership: another replica holds the lease/);
    operator = await run('operator-c', [...operatorArgs(), '--no-leader-election']);
  });

  it('runs end to end: a signed webhook reaches the target through the workloads it wrote, and status shows it', async () => {
    const received: Buffer[] = [];
    const target = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req
        .on('data', (c) => chunks.push(c))
        .on('end', () => {
          received.push(Buffer.concat(chunks));
          res.writeHead(200).end();
        });
    });
    await new Promise<void>((ok) => target.listen(0, '127.0.0.1', ok));
    after(() => target.close());
    const targetUrl = `http://127.0.0.1:${(target.address() as { port: number }).port}/hook`;
    await patchSubscription('proign-shipments', { spec: { target: { url: targetUrl } } });
    const dispatcherConfig = await waitFor('the dispatcher config has the new target', async () => {
      const cm = await core.readNamespacedConfigMap({ namespace, name: dispatcherName('proign-shipments') });
      return cm.data?.['dispatcher.yaml']?.includes(targetUrl) && cm;
    });
    await waitReconciled('WebhookSubscription', 'proign-shipments');

    const secrets = new Map<string, Record<string, string>>();
    for (const name of ['proign-webhook', 'fulfillment-signing']) secrets.set(name, await secretData(name));
    const receiverPort = await freePort();
    const receiverDeployment = await apps.readNamespacedDeployment({ namespace, name: receiverName('proign') });
    const receiverConfig = await core.readNamespacedConfigMap({ namespace, name: receiverName('proign') });
    const dispatcherDeployment = await apps.readNamespacedDeployment({
      namespace,
      name: dispatcherName('proign-shipments'),
    });
    const lookup = (name: string) => secrets.get(name);
    children.push(await runDeployment(receiverDeployment, receiverConfig, lookup, receiverPort, work.path));
    children.push(await runDeployment(dispatcherDeployment, dispatcherConfig, lookup, await freePort(), work.path));

    const sample = samples.proign?.[0];
    assert.ok(sample);
    const endpoint = await get('ProviderEndpoint', 'proign');
    const url = `http://127.0.0.1:${receiverPort}${endpoint.status?.url}`;
    const sent = await sendSample('proign', url, sample, { secret: secrets.get('proign-webhook')?.secret });
    assert.equal(sent.status, 200, sent.body);
    await waitFor('the event reaches the target', async () => received.some((b) => b.equals(sample.body)));
    const status = await waitFor('status shows the delivery', async () => {
      const s = (await get('WebhookSubscription', 'proign-shipments')).status;
      return s?.lastAckTime !== undefined && s.pending === 0 && s.ackPending === 0 ? s : undefined;
    });
    assert.ok(Date.parse(status.lastAckTime ?? '') > Date.now() - 60_000);
  });

  it('reports a subscription its target paused (410 Gone), and resumes it when annotated', async () => {
    const stream = endpointStream(namespace, 'shopflix');
    await nats.jsm.consumers.pause(stream, 'shopflix-orders', new Date(Date.now() + 3_600_000));
    const paused = await waitFor('TargetReachable=False', async () => {
      const r = await get('WebhookSubscription', 'shopflix-orders');
      return condition(r, ConditionType.TargetReachable)?.reason === Reason.TargetGone && r;
    });
    assert.match(condition(paused, ConditionType.TargetReachable)?.message ?? '', /hookyard\.io\/resume=now/);
    const annotated = await kubectl([
      'annotate',
      '-n',
      namespace,
      'webhooksubscription',
      'shopflix-orders',
      'hookyard.io/resume=now',
    ]);
    assert.equal(annotated.code, 0, annotated.stderr);
    await waitFor(
      'the consumer resumes',
      async () => !(await nats.jsm.consumers.info(stream, 'shopflix-orders')).paused,
    );
    await waitFor('the annotation is removed', async () => {
      const r = await get('WebhookSubscription', 'shopflix-orders');
      return r.metadata.annotations?.['hookyard.io/resume'] === undefined && r;
    });
    await waitFor('TargetReachable=True', async () => {
      const r = await get('WebhookSubscription', 'shopflix-orders');
      return condition(r, ConditionType.TargetReachable)?.status === 'True';
    });
  });

  it('removes consumers, streams (per deletion policy) and objects on deletion, leaving nothing behind', async () => {
    await apply(`
apiVersion: hookyard.io/v1alpha1
kind: ProviderEndpoint
metadata: { name: kept }
spec: { provider: generic, verification: [{ none: true }], stream: { deletionPolicy: Retain } }
`);
    await waitReconciled('ProviderEndpoint', 'kept');
    const deleted = await kubectl(['delete', '-n', namespace, 'webhooksubscriptions', '--all', '--wait=true']);
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.deepEqual(await list('WebhookSubscription'), []);
    for (const endpoint of namesOf(docs, 'ProviderEndpoint')) {
      const consumers = await nats.jsm.consumers.list(endpointStream(namespace, endpoint)).next();
      assert.deepEqual(
        consumers.map((c) => c.name),
        [],
        `consumers left on ${endpoint}`,
      );
    }
    const gone = await kubectl(['delete', '-n', namespace, 'providerendpoints', '--all', '--wait=true']);
    assert.equal(gone.code, 0, gone.stderr);
    const streams: string[] = [];
    for await (const name of nats.jsm.streams.names()) streams.push(name);
    const ours = streams.filter((s) => s.includes(`_${namespace}_`));
    assert.deepEqual(ours, [endpointStream(namespace, 'kept')]);
    await nats.jsm.streams.delete(endpointStream(namespace, 'kept'));
    assert.deepEqual(Object.keys(await versions()), []);
  });
});
