import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { V1Container } from '@kubernetes/client-node';
import fc from 'fast-check';
import { pino } from 'pino';
import { Gauge, Registry } from 'prom-client';
import { maxNameLength } from '../../src/api/names.ts';
import type { ProviderEndpoint } from '../../src/api/provider-endpoint.ts';
import { parseResource } from '../../src/api/validate.ts';
import type { WebhookSubscription } from '../../src/api/webhook-subscription.ts';
import { holds, invalidSpecChecks } from '../../src/operator/context.ts';
import { matchEventTypes, producedEventTypes } from '../../src/operator/event-types.ts';
import { serveMetrics } from '../../src/operator/metrics.ts';
import { WorkQueue } from '../../src/operator/queue.ts';
import { nodeFlagsOf, renderEndpoint, renderSubscription } from '../../src/operator/render.ts';
import { conditionsFor } from '../../src/operator/status.ts';
import { imageEntrypoint } from '../harness/cli.ts';

describe('work queue', () => {
  it('hands out a key once however often it was added, and never to two workers at once', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.constantFrom('a', 'b', 'c', 'd'), { minLength: 1, maxLength: 40 }), async (keys) => {
        const queue = new WorkQueue();
        for (const k of keys) queue.add(k);
        const active = new Set<string>();
        const handled: string[] = [];
        const worker = async () => {
          for (;;) {
            const key = await Promise.race([queue.next(), sleep(20).then(() => undefined)]);
            if (key === undefined) return;
            assert.ok(!active.has(key), `${key} handed to two workers`);
            active.add(key);
            await sleep(1);
            active.delete(key);
            handled.push(key);
            queue.done(key);
          }
        };
        await Promise.all([worker(), worker(), worker()]);
        queue.close();
        assert.deepEqual(handled.sort(), [...new Set(keys)].sort());
      }),
      { numRuns: 30 },
    );
  });

  it('gives a key added while it is worked on one more turn after it is done', async () => {
    const queue = new WorkQueue();
    queue.add('a');
    const key = await queue.next();
    queue.add('a');
    queue.add('a');
    assert.equal(queue.length, 0);
    queue.done(key as string);
    assert.equal(queue.length, 1);
    queue.close();
  });

  it('backs off per key: a failing key waits longer each time, others are not delayed', () => {
    const queue = new WorkQueue({ baseDelayMs: 100, maxDelayMs: 1000 });
    assert.deepEqual(
      [1, 2, 3, 4, 5].map(() => queue.retry('broken')),
      [100, 200, 400, 800, 1000],
    );
    assert.equal(queue.retry('other'), 100);
    queue.forget('broken');
    assert.equal(queue.retry('broken'), 100);
    queue.close();
  });

  it('keeps the earlier of two delays for the same key', async () => {
    const queue = new WorkQueue();
    queue.addAfter('a', 60_000);
    queue.addAfter('a', 10);
    assert.equal(await Promise.race([queue.next(), sleep(1000).then(() => 'late')]), 'a');
    queue.close();
  });

  it('hands out the keys `first` picks before the others, and holds a key for one being worked on', async () => {
    const queue = new WorkQueue({ first: (key) => key.startsWith('endpoint/') });
    queue.add('subscription/a');
    queue.add('endpoint/a');
    const endpoint = await queue.next();
    assert.equal(endpoint, 'endpoint/a');
    assert.equal(await queue.next(), 'subscription/a');
    queue.addWhenDone('subscription/a', 'endpoint/a');
    queue.done('subscription/a');
    assert.equal(queue.length, 0, 'waits while endpoint/a is worked on');
    queue.done('endpoint/a');
    assert.equal(await queue.next(), 'subscription/a');
    queue.close();
  });

  it('hands a key out status-only only when nothing but status changes asked for it', async () => {
    const queue = new WorkQueue();
    queue.add('a', true);
    queue.add('b', true);
    queue.add('b');
    const a = (await queue.next()) as string;
    assert.equal(queue.statusOnly(a), true);
    const b = (await queue.next()) as string;
    assert.equal(queue.statusOnly(b), false, 'a full wake is not lost to a status-only one');
    queue.add('a', true); // while a is worked on
    queue.done(a);
    assert.equal(queue.statusOnly((await queue.next()) as string), true);
    queue.close();
  });

  it('hands a key out refresh-only when only its status refresh asked for it; a full wake wins', async () => {
    const queue = new WorkQueue();
    queue.addAfter('a', 1, 'refresh');
    queue.addAfter('b', 1, 'refresh');
    queue.add('c', true);
    queue.addAfter('c', 1, 'refresh');
    await sleep(50);
    queue.add('b');
    const turns = [];
    for (let i = 0; i < 3; i++) {
      const key = (await queue.next()) as string;
      turns.push([key, queue.refreshOnly(key), queue.statusOnly(key)]);
    }
    // c: a refresh also writes what a status-only turn would.
    assert.deepEqual(turns, [
      ['c', true, false],
      ['a', true, false],
      ['b', false, false],
    ]);
    queue.close();
  });

  it('hands a key out status-only after a delay asked for a status-only turn (a held first status)', async () => {
    const queue = new WorkQueue();
    queue.addAfter('a', 1, 'status');
    queue.addAfter('a', 100);
    const held = (await queue.next()) as string;
    assert.deepEqual([held, queue.statusOnly(held)], ['a', true]);
    queue.done(held);
    const reconciled = (await queue.next()) as string;
    assert.deepEqual([reconciled, queue.statusOnly(reconciled)], ['a', false]);
    queue.close();
  });

  it("keeps a key's full reconcile due beside its status refresh", async () => {
    const queue = new WorkQueue();
    queue.addAfter('a', 100);
    queue.addAfter('a', 1, 'refresh');
    const refreshed = (await queue.next()) as string;
    assert.equal(queue.refreshOnly(refreshed), true);
    queue.done(refreshed);
    const reconciled = (await queue.next()) as string;
    assert.deepEqual([reconciled, queue.refreshOnly(reconciled)], ['a', false]);
    queue.close();
  });

  it('hands out status-only keys before every other, so a Ready write does not wait behind a burst', async () => {
    const queue = new WorkQueue({ first: (key) => key.startsWith('endpoint/') });
    queue.add('subscription/new');
    queue.add('endpoint/new');
    queue.add('subscription/deployed', true);
    assert.equal(await queue.next(), 'subscription/deployed');
    assert.equal(await queue.next(), 'endpoint/new');
    assert.equal(await queue.next(), 'subscription/new');
    queue.close();
  });
});

describe('status conditions', () => {
  const checks = [
    { type: 'SecretsResolved', status: true, reason: 'Resolved', message: 'ok' },
    { type: 'StreamReady', status: false, reason: 'StreamRefused', message: 'storage cannot change' },
    { type: 'ReceiverReady', status: false, reason: 'PodsNotReady', message: '0/2' },
  ];
  const readyFrom = ['SecretsResolved', 'StreamReady', 'ReceiverReady'];

  it("makes Ready the first failing check's reason and message, in order", () => {
    const [ready] = conditionsFor(checks, readyFrom, undefined, 3);
    assert.deepEqual(
      { ...ready, lastTransitionTime: undefined },
      {
        type: 'Ready',
        status: 'False',
        reason: 'StreamRefused',
        message: 'storage cannot change',
        observedGeneration: 3,
        lastTransitionTime: undefined,
      },
    );
  });

  it('moves lastTransitionTime only for conditions whose status changed', () => {
    const earlier = conditionsFor(checks, readyFrom, undefined, 1, new Date('2026-01-01T00:00:00Z'));
    const fixed = checks.map((c) => ({ ...c, status: c.type === 'ReceiverReady' ? c.status : true }));
    const later = conditionsFor(fixed, readyFrom, earlier, 2, new Date('2026-01-02T00:00:00Z'));
    const time = (type: string) => later.find((c) => c.type === type)?.lastTransitionTime;
    assert.equal(time('SecretsResolved'), '2026-01-01T00:00:00Z');
    assert.equal(time('StreamReady'), '2026-01-02T00:00:00Z');
    assert.equal(time('ReceiverReady'), '2026-01-01T00:00:00Z');
    assert.equal(time('Ready'), '2026-01-01T00:00:00Z'); // still False, now for the receiver
    assert.equal(later[0]?.reason, 'PodsNotReady');
  });

  it("reports a refused spec as its field's own condition when it is the only one wrong, else as SpecValid", () => {
    // The operator's schemas refuse what a cluster without the webhook, or with an older CRD, lets through.
    const filter = { field: 'spec.filter', type: 'FilterValid', reason: 'FilterInvalid' };
    const filterProblem = 'spec.filter: filter is not valid CEL: <input>:1:12: found > but expecting end of input';
    assert.deepEqual(invalidSpecChecks([filterProblem], [filter]), [
      { type: 'FilterValid', status: false, reason: 'FilterInvalid', message: filterProblem },
    ]);
    const both = [filterProblem, 'spec.retry.maxAttempts: must be at least 1'];
    assert.deepEqual(invalidSpecChecks(both, [filter]), [
      { type: 'SpecValid', status: false, reason: 'InvalidSpec', message: both.join('; ') },
    ]);
    assert.equal(invalidSpecChecks(['spec.filterx: no'], [filter])[0]?.reason, 'InvalidSpec', 'a field, not a prefix');
    const [ready] = conditionsFor(invalidSpecChecks(both, [filter]), ['SpecValid', 'FilterValid'], undefined, 1);
    assert.equal(ready?.reason, 'InvalidSpec');
  });

  it('is True when every counted check is, whatever the informational ones say', () => {
    const informational = { type: 'TargetReachable', status: false, reason: 'Retrying', message: '2 retried' };
    const all = [...checks.map((c) => ({ ...c, status: true })), informational];
    assert.equal(conditionsFor(all, readyFrom, undefined, 1)[0]?.status, 'True');
  });
});

describe('rendered workloads', () => {
  const endpoint = parseResource({
    apiVersion: 'hookyard.io/v1alpha1',
    kind: 'ProviderEndpoint',
    metadata: { name: 'proign', namespace: 'shop', uid: 'u1' },
    spec: { provider: 'proign', verification: [{ hmac: { secretRefs: [{ name: 'proign-webhook', key: 'secret' }] } }] },
  }) as ProviderEndpoint;
  const container = (d: { spec?: { template: { spec?: { containers: V1Container[] } } } }) =>
    d.spec?.template.spec?.containers[0] as V1Container;

  it("run dispatchers with their own node flags around the image's node and CLI, receivers as the image does", () => {
    const options = { image: 'hookyard:1', natsUrl: 'nats://nats:4222' };
    const subscription = parseResource({
      apiVersion: 'hookyard.io/v1alpha1',
      kind: 'WebhookSubscription',
      metadata: { name: 'orders', namespace: 'shop' },
      spec: { sources: [{ endpoint: 'proign' }], target: { url: 'http://orders.shop.svc' } },
    }) as WebhookSubscription;
    assert.equal(container(renderEndpoint(endpoint, options).deployment).command, undefined);
    const entrypoint = imageEntrypoint();
    assert.deepEqual(container(renderSubscription(subscription, [], options).deployment).command, [
      entrypoint[0],
      ...(nodeFlagsOf('dispatcher') ?? []),
      entrypoint.at(-1),
    ]);
    assert.ok(nodeFlagsOf('dispatcher')?.includes('--max-semi-space-size=8'));
  });

  it('hold as the API server returns them, which leaves out an empty list, so they are not applied again', () => {
    const generic = parseResource({
      apiVersion: 'hookyard.io/v1alpha1',
      kind: 'ProviderEndpoint',
      metadata: { name: 'plain', namespace: 'shop', uid: 'u2' },
      spec: { provider: 'generic', verification: [{ none: true }] },
    }) as ProviderEndpoint;
    const { deployment } = renderEndpoint(generic, { image: 'hookyard:1', natsUrl: 'nats://nats:4222' });
    const returned = structuredClone(deployment);
    const secrets = returned.spec?.template.spec?.volumes?.find((v) => v.projected);
    assert.deepEqual(secrets?.projected?.sources, [], 'no Secret to project');
    delete secrets?.projected?.sources;
    assert.ok(holds(returned, deployment));
    returned.spec = { ...returned.spec, replicas: 3 } as typeof returned.spec;
    assert.ok(!holds(returned, deployment), 'a changed field still does not hold');
  });

  it('mount the workload NATS Secret and point the NATS flags at it, the CA only when NATS uses one', () => {
    const options = { image: 'hookyard:1', natsUrl: 'tls://nats:4222', natsSecret: 'nats-creds' };
    for (const natsCa of [false, true]) {
      const { deployment } = renderEndpoint(endpoint, { ...options, natsCa });
      const { args = [], volumeMounts = [] } = container(deployment);
      assert.equal(args[args.indexOf('--nats-creds') + 1], '/etc/hookyard/nats/creds');
      assert.equal(args.includes('--nats-ca'), natsCa);
      if (natsCa) assert.equal(args[args.indexOf('--nats-ca') + 1], '/etc/hookyard/nats/ca.crt');
      assert.ok(volumeMounts.some((m) => m.name === 'nats' && m.mountPath === '/etc/hookyard/nats' && m.readOnly));
      const volume = deployment.spec?.template.spec?.volumes?.find((v) => v.name === 'nats');
      assert.equal(volume?.secret?.secretName, 'nats-creds');
    }
    const plain = container(renderEndpoint(endpoint, { image: 'hookyard:1', natsUrl: 'nats://nats:4222' }).deployment);
    assert.ok(!plain.args?.includes('--nats-creds'));
    assert.ok(!plain.volumeMounts?.some((m) => m.name === 'nats'));
  });

  it('give receivers and dispatchers 120 s to start before liveness counts', () => {
    const options = { image: 'hookyard:1', natsUrl: 'nats://nats:4222' };
    const subscription = parseResource({
      apiVersion: 'hookyard.io/v1alpha1',
      kind: 'WebhookSubscription',
      metadata: { name: 'orders', namespace: 'shop', uid: 'u2' },
      spec: { sources: [{ endpoint: 'proign' }], target: { url: 'http://orders.shop.svc/hooks' } },
    }) as WebhookSubscription;
    const sources = [{ namespace: 'shop', endpoint: 'proign', provider: 'proign' }];
    for (const deployment of [
      renderEndpoint(endpoint, options).deployment,
      renderSubscription(subscription, sources, options).deployment,
    ]) {
      const { startupProbe, livenessProbe } = container(deployment);
      assert.equal(startupProbe?.httpGet?.path, livenessProbe?.httpGet?.path);
      assert.equal((startupProbe?.periodSeconds ?? 10) * (startupProbe?.failureThreshold ?? 3), 120);
    }
  });

  it("give receivers and dispatchers OpenTelemetry's variables when tracing is on, and no env at all when off", () => {
    const options = { image: 'hookyard:1', natsUrl: 'nats://nats:4222' };
    assert.equal(container(renderEndpoint(endpoint, options).deployment).env, undefined);
    const tracing = { endpoint: 'http://otel-collector:4318', sampler: 'parentbased_traceidratio', samplerArg: '0.1' };
    const { env = [] } = container(renderEndpoint(endpoint, { ...options, tracing }).deployment);
    assert.deepEqual(Object.fromEntries(env.map((e) => [e.name, e.value])), {
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://otel-collector:4318',
      OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
      OTEL_TRACES_SAMPLER_ARG: '0.1',
      OTEL_RESOURCE_ATTRIBUTES: 'k8s.namespace.name=shop,k8s.deployment.name=hookyard-receiver-proign',
    });
  });

  it('roll the pods when a referenced Secret changes, and only then', () => {
    const options = { image: 'hookyard:1', natsUrl: 'nats://nats:4222' };
    const checksum = (secretsChecksum: string) =>
      renderEndpoint(endpoint, { ...options, secretsChecksum }).deployment.spec?.template.metadata?.annotations?.[
        'hookyard.io/config-checksum'
      ];
    assert.equal(checksum('a'), checksum('a'));
    assert.notEqual(checksum('a'), checksum('b'));
  });
});

describe('names the API admits', () => {
  const options = { image: 'hookyard:1', natsUrl: 'nats://nats:4222' };
  const names = (o: { metadata?: { name?: string } }) => o.metadata?.name ?? '';

  it("render every object of the longest admitted name within Kubernetes' 63 characters", () => {
    const endpointName = 'e'.repeat(maxNameLength('ProviderEndpoint'));
    const endpoint = parseResource({
      apiVersion: 'hookyard.io/v1alpha1',
      kind: 'ProviderEndpoint',
      metadata: { name: endpointName, namespace: 'shop' },
      spec: { provider: 'generic', verification: [{ none: true }] },
    }) as ProviderEndpoint;
    const objects = renderEndpoint(endpoint, options);
    const subscriptionName = 's'.repeat(maxNameLength('WebhookSubscription'));
    const subscription = parseResource({
      apiVersion: 'hookyard.io/v1alpha1',
      kind: 'WebhookSubscription',
      metadata: { name: subscriptionName, namespace: 'shop' },
      spec: { sources: [{ endpoint: endpointName }], target: { url: 'http://orders.shop.svc' } },
    }) as WebhookSubscription;
    const { configMap, deployment } = renderSubscription(subscription, [], options);
    const all = [objects.configMap, objects.deployment, objects.service, objects.ingress ?? {}, configMap, deployment];
    assert.deepEqual(
      all.map((o) => names(o).length),
      [63, 63, 63, 63, 63, 63],
    );
  });
});

describe('event types a subscription can receive', () => {
  const spec = (provider: string, extra: object = {}) =>
    (
      parseResource({
        apiVersion: 'hookyard.io/v1alpha1',
        kind: 'ProviderEndpoint',
        metadata: { name: 'e', namespace: 'shop' },
        spec: { provider, verification: [{ none: true }], ...extra },
      }) as ProviderEndpoint
    ).spec;
  const source = (endpoint: string, s: ProviderEndpoint['spec']) => ({ namespace: 'shop', endpoint, spec: s });

  it("are the routes' or the constant's when the spec names them, open when the request decides", () => {
    assert.deepEqual(producedEventTypes(spec('fotoweb')), ['cart.changed', 'order.submitted', 'order.approved']);
    assert.deepEqual(producedEventTypes(spec('generic')), ['webhook']);
    assert.equal(producedEventTypes(spec('proign')), undefined);
    assert.deepEqual(producedEventTypes(spec('generic', { eventType: { aliases: { webhook: 'ping' } } })), ['ping']);
  });

  it('match a pattern exactly when JetStream would deliver the event, whatever the types', () => {
    const part = fc.stringMatching(/^[a-z][a-z0-9-]{0,5}$/);
    const type = fc.array(part, { minLength: 1, maxLength: 3 }).map((parts) => parts.join('.'));
    fc.assert(
      fc.property(fc.uniqueArray(type, { minLength: 1, maxLength: 4 }), fc.integer({ min: 0 }), (types, pick) => {
        const routes = types.map((t, i) => ({ path: `r${i}`, eventType: t }));
        const endpoint = source('e', spec('printiq', { routes }));
        const chosen = types[pick % types.length] as string;
        const wildcard = `${chosen.split('.').slice(0, -1).concat('*').join('.')}`;
        assert.ok(matchEventTypes([chosen], [endpoint]).matches, chosen);
        assert.ok(matchEventTypes([wildcard], [endpoint]).matches, wildcard);
        assert.ok(matchEventTypes(['>'], [endpoint]).matches);
        const other = `${chosen}.never`;
        assert.equal(matchEventTypes([other], [endpoint]).matches, false, other);
        assert.deepEqual(matchEventTypes([other], [endpoint]).produced, [{ endpoint: 'e', types }]);
      }),
    );
  });

  it('say nothing against a source whose types are open', () => {
    assert.ok(
      matchEventTypes(['nothing.like.it'], [source('p', spec('proign')), source('f', spec('fotoweb'))]).matches,
    );
  });
});

describe('the metrics handler', () => {
  it('answers 500 with a JSON body when a collector fails, logs a warning, and keeps serving', async () => {
    const registry = new Registry();
    let failing = true;
    new Gauge({
      name: 'flaky',
      help: 'fails while failing is set',
      registers: [registry],
      collect() {
        if (failing) throw new Error('collector broke');
        this.set(1);
      },
    });
    const warnings: string[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => warnings.push(line) });
    const server = createServer((_req, res) => void serveMetrics(registry, log, res));
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/metrics`;
    try {
      const broken = await fetch(url);
      assert.equal(broken.status, 500);
      assert.match(((await broken.json()) as { error: string }).error, /collecting metrics failed/);
      assert.equal(warnings.length, 1);
      assert.equal(JSON.parse(warnings[0] as string).level, 40);
      failing = false;
      const fine = await fetch(url);
      assert.equal(fine.status, 200);
      assert.match(await fine.text(), /^flaky 1$/m);
    } finally {
      server.close();
    }
  });
});
