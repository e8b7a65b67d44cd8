// The product as a user installs it, on the real node: NATS as a 3-server JetStream StatefulSet on local
// PersistentVolumes (test/e2e/manifests/nats.yaml), `helm install` of charts/hookyard with the locally imported
// image, every file of examples/ applied with kubectl, and the subscriptions' targets as recording sink pods.
// Then the cases `make demo` plays go from the host through the Ingress URL each ProviderEndpoint's status.url
// reports, and must reach the target pods as the subscriptions say and be counted by the pods' metrics.
import assert from 'node:assert/strict';
import { chownSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { stringify } from 'yaml';
import { ConditionType, Reason } from '../../src/api/conditions.ts';
import type { ProviderName } from '../../src/api/provider-endpoint.ts';
import {
  attemptStream,
  deadLetterStream,
  duplicateStream,
  endpointStream,
  replayStream,
} from '../../src/jetstream/layout.ts';
import { dispatcherName } from '../../src/operator/render.ts';
import { providerSignature, type Sample, samples } from '../../src/providers/samples.ts';
import { runCli } from '../harness/cli.ts';
import { exampleDoc } from '../harness/examples.ts';
import { chartDir, helm } from '../harness/helm.ts';
import { kubectl, namespaceUserRbac, requireEnv } from '../harness/kube.ts';
import { binDir, root } from '../harness/servers.ts';
import { type Answer, allReady, costs, hit, type PodGroup, pods, servingPod, startLoad } from './faults.ts';
import {
  apply,
  configureSink,
  eventually,
  images,
  type Recorded,
  recorded,
  rolledOut,
  sinkManifests,
  withNats,
} from './support.ts';

const namespace = 'examples';
const endpoints = ['fotoweb', 'printiq', 'proign', 'shopflix', 'siteflow'];

/** The part of NATS's /jsz?streams=true&config=true that says where each stream is. */
interface JszStreams {
  account_details?: {
    stream_detail?: {
      name: string;
      config?: { num_replicas?: number };
      cluster?: { leader?: string; replicas?: unknown[] };
    }[];
  }[];
}
const ingressHost = 'hooks.hookyard.test';

/** Where each example subscription delivers: its target Service, as the sink that stands for it. */
const targets = [
  { namespace: 'shop', name: 'fulfillment', port: 8080 },
  { namespace, name: 'backoffice', port: 80 },
  { namespace, name: 'dam-orders', port: 8080 },
  { namespace, name: 'production-planning', port: 8080 },
  { namespace, name: 'order-service', port: 8080 },
  { namespace, name: 'returns-service', port: 8080 },
  { namespace, name: 'storefront', port: 8080 },
];

/** The example Secrets' values, as a provider's console would hold them. */
function secret(name: string, key: string): string {
  const value = (exampleDoc('Secret', name)?.stringData as Record<string, string> | undefined)?.[key];
  if (value === undefined) throw new Error(`no Secret ${name} with key ${key} in examples/`);
  return value;
}

/** Connects every name under the Ingress host to the node, from `localAddress` (the host side of the veth). */
function agentFrom(localAddress: string): Agent {
  const nodeIp = requireEnv('HOOKYARD_E2E_NODE_IP');
  return new Agent({
    localAddress,
    connect: {
      // Node asks for all addresses (`all: true`) when it may try both families, for one otherwise.
      lookup: (_host, options, callback) =>
        (options as { all?: boolean }).all
          ? (callback as (e: null, a: { address: string; family: number }[]) => void)(null, [
              { address: nodeIp, family: 4 },
            ])
          : callback(null, nodeIp, 4),
    },
  });
}

async function localVolumes(): Promise<void> {
  const dir = requireEnv('HOOKYARD_E2E_VOLUMES_DIR');
  const docs: object[] = [
    {
      apiVersion: 'storage.k8s.io/v1',
      kind: 'StorageClass',
      metadata: { name: 'hookyard-local' },
      provisioner: 'kubernetes.io/no-provisioner',
      volumeBindingMode: 'WaitForFirstConsumer',
    },
  ];
  const onTheNode = { key: 'kubernetes.io/hostname', operator: 'In', values: ['hookyard-node'] };
  for (let i = 0; i < 3; i++) {
    const path = join(dir, `nats-${i}`);
    mkdirSync(path, { recursive: true });
    chownSync(path, 65532, 65532);
    docs.push({
      apiVersion: 'v1',
      kind: 'PersistentVolume',
      metadata: { name: `nats-store-${i}` },
      spec: {
        capacity: { storage: '512Mi' },
        accessModes: ['ReadWriteOnce'],
        persistentVolumeReclaimPolicy: 'Retain',
        storageClassName: 'hookyard-local',
        local: { path },
        nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [onTheNode] }] } },
      },
    });
  }
  await apply(docs.map((d) => stringify(d)).join('---\n'));
}

async function installNats(): Promise<void> {
  await localVolumes();
  const manifests = readFileSync(join(root, 'test/e2e/manifests/nats.yaml'), 'utf8');
  await apply(manifests.replaceAll('NATS_IMAGE', images().nats.ref));
  const r = await kubectl(['-n', 'nats', 'rollout', 'status', 'statefulset/nats', '--timeout=180s']);
  assert.equal(r.code, 0, `${r.stderr}\n${(await kubectl(['-n', 'nats', 'describe', 'pods'])).stdout}`);
}

async function installChart(): Promise<void> {
  const image = images().hookyard;
  const r = await helm([
    ...['install', 'hookyard', chartDir, '--namespace', 'hookyard-system', '--create-namespace'],
    ...['--kubeconfig', requireEnv('KUBECONFIG'), '--wait', '--timeout', '5m'],
    ...['--set', `image.repository=${image.repository}`, '--set', `image.tag=${image.tag}`],
    ...[
      '--set',
      'image.pullPolicy=Never',
      '--set',
      'ingress.className=traefik',
      '--set',
      `ingress.host=${ingressHost}`,
    ],
  ]);
  assert.equal(r.code, 0, `helm install: ${r.stderr}`);
}

async function endpointUrl(name: string): Promise<string> {
  return eventually(`status.url of ${name}`, async () => {
    const r = await kubectl(['-n', namespace, 'get', 'providerendpoint', name, '-o', 'jsonpath={.status.url}']);
    return r.stdout.startsWith('http') ? r.stdout : undefined;
  });
}

interface Play {
  provider: ProviderName;
  what: string;
  sample: number;
  secret?: string;
  headers?: Record<string, string>;
  query?: string;
  from?: 'customer-network';
  expect: number;
}

const plays = (): Play[] => {
  const proign = secret('proign-webhook', 'secret');
  const siteflow = { 'X-Hookyard-Token': secret('siteflow-webhook', 'token') };
  const printiq = `?token=${secret('printiq-webhook', 'token')}`;
  return [
    { provider: 'shopflix', what: 'registration check (unsigned)', sample: 0, expect: 200 },
    {
      provider: 'shopflix',
      what: 'order.deliverd, signed',
      sample: 1,
      secret: secret('shopflix-webhook', 'secret'),
      expect: 200,
    },
    { provider: 'proign', what: 'order.shipped, signed', sample: 0, secret: proign, expect: 200 },
    { provider: 'proign', what: 'the same event again, a retry', sample: 1, secret: proign, expect: 200 },
    { provider: 'proign', what: 'forged signature', sample: 0, secret: 'not-the-secret', expect: 401 },
    { provider: 'fotoweb', what: 'order submitted, JSON', sample: 0, from: 'customer-network', expect: 204 },
    { provider: 'fotoweb', what: 'order approved, form', sample: 1, from: 'customer-network', expect: 204 },
    { provider: 'fotoweb', what: 'from outside the customer network', sample: 0, expect: 403 },
    { provider: 'printiq', what: 'CreateJob, JSON', sample: 0, query: printiq, expect: 200 },
    { provider: 'printiq', what: 'CreateJobXml, XML', sample: 1, query: printiq, expect: 200 },
    { provider: 'siteflow', what: 'statusupdate: shipped', sample: 0, headers: siteflow, expect: 200 },
    { provider: 'siteflow', what: 'ordersubmissionerror, no Content-Type', sample: 1, headers: siteflow, expect: 200 },
  ];
};

/** Deliveries each example subscription makes of those plays: its event types and filter decide. */
const expectedDeliveries: Record<string, { target: string; count: number }> = {
  'shopflix-orders': { target: 'order-service', count: 1 },
  'shopflix-returns': { target: 'returns-service', count: 0 },
  'proign-shipments': { target: 'fulfillment', count: 1 },
  'proign-documents': { target: 'backoffice', count: 0 },
  'fotoweb-orders': { target: 'dam-orders', count: 2 },
  'printiq-jobs': { target: 'production-planning', count: 2 },
  'siteflow-status': { target: 'storefront', count: 2 },
};

async function send(play: Play, agents: { host: Agent; customer: Agent }): Promise<number> {
  const sample = samples[play.provider]?.[play.sample] as Sample;
  const url = new URL(`${await endpointUrl(play.provider)}${play.query ?? ''}`);
  if (sample.route) url.pathname = `${url.pathname.replace(/\/$/, '')}/${sample.route}`;
  const headers: Record<string, string> = {
    ...(sample.contentType ? { 'content-type': sample.contentType } : {}),
    ...sample.headers,
    ...(play.secret ? providerSignature(play.provider, play.secret, sample.body) : {}),
    ...play.headers,
  };
  const dispatcher = play.from === 'customer-network' ? agents.customer : agents.host;
  const res = await request(url, { method: 'POST', body: sample.body, headers, dispatcher });
  await res.body.text();
  return res.statusCode;
}

/** Waits until a GET of the endpoint reaches a receiver (it answers 404 or 405 itself) quickly, three times in a row. */
async function routeSettled(url: string, dispatcher: Agent): Promise<void> {
  let inARow = 0;
  await eventually(`the Ingress route to ${url} settled`, async () => {
    const res = await request(url, { dispatcher, headersTimeout: 2000 }).catch(() => undefined);
    await res?.body.text();
    const fromReceiver = res !== undefined && ![404, 502, 503, 504].includes(res.statusCode);
    inARow = fromReceiver ? inARow + 1 : 0;
    return inARow >= 3 ? true : undefined;
  });
}

/** A metric summed over the series whose labels include `labels`, from every pod with this component label. */
async function podMetric(component: string, port: number, name: string, labels: Record<string, string>) {
  const selector = `app.kubernetes.io/component=${component}`;
  const list = await kubectl(['-n', namespace, 'get', 'pods', '-l', selector, '-o', 'json']);
  const pods = (JSON.parse(list.stdout) as { items: { metadata: { name: string; deletionTimestamp?: string } }[] })
    .items;
  // A rolled-out pod that is still terminating no longer serves; the live ones hold the counts.
  const live = pods.filter((p) => !p.metadata.deletionTimestamp).map((p) => p.metadata.name);
  assert.ok(live.length > 0, `no ${component} pods`);
  let sum = 0;
  for (const pod of live) {
    const r = await kubectl(['get', '--raw', `/api/v1/namespaces/${namespace}/pods/${pod}:${port}/proxy/metrics`]);
    assert.equal(r.code, 0, r.stderr);
    for (const line of r.stdout.split('\n')) {
      if (!line.startsWith(`${name}{`)) continue;
      const matches = Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`));
      if (matches) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return sum;
}

const dispatcherSelector = (subscription: string) =>
  `app.kubernetes.io/component=dispatcher,app.kubernetes.io/instance=${subscription}`;

/** Sets a subscription's dispatcher replicas and waits for the rollout (its spec is in the dispatchers' config). */
async function scaleDispatchers(subscription: string, replicas: number): Promise<void> {
  const patch = JSON.stringify({ spec: { dispatcher: { replicas } } });
  const r = await kubectl(['-n', namespace, 'patch', 'webhooksubscription', subscription, '--type=merge', '-p', patch]);
  assert.equal(r.code, 0, r.stderr);
  const deployment = dispatcherName(subscription);
  await eventually(`${deployment} at ${replicas} replicas`, async () => {
    const d = await kubectl(['-n', namespace, 'get', 'deployment', deployment, '-o', 'jsonpath={.spec.replicas}']);
    return d.stdout === String(replicas) ? true : undefined;
  });
  await rolledOut(namespace, deployment);
}

/** Sends `count` FotoWeb orders, ids LOAD-<from> on, from the customer network at 50 a second; their statuses. */
async function sendOrders(count: number, from: number): Promise<number[]> {
  const base = JSON.parse(samples.fotoweb?.[0]?.body.toString() ?? '{}') as Record<string, unknown>;
  const agent = agentFrom(requireEnv('HOOKYARD_E2E_CUSTOMER_NETWORK_IP'));
  const load = startLoad({
    url: `${await endpointUrl('fotoweb')}/order-submitted`,
    agent,
    perSecond: 50,
    max: count,
    from,
    body: (id) => JSON.stringify({ ...base, id }),
    contentType: 'application/json',
  });
  const answers = await load.finished();
  await agent.close();
  return answers.map((a) => a.status);
}

/** Waits until dam-orders answered 200 to `ids` distinct events after its first `before` requests; those requests. */
async function deliveredToDam(subscription: string, before: number, ids: number): Promise<Recorded[]> {
  const since = async () => (await recorded(namespace, 'dam-orders')).slice(before);
  const distinct = (got: Recorded[]) =>
    new Set(got.filter((r) => r.status === 200).map((r) => JSON.parse(r.body).id as string)).size;
  return eventually(
    `${ids} events delivered to dam-orders`,
    async () => {
      const got = await since();
      return distinct(got) >= ids ? got : undefined;
    },
    120,
  ).catch(async (err: Error) => {
    const got = await since();
    return assert.fail(
      `${err.message}: the sink got ${got.length} (${distinct(got)} distinct answered 200; first ${got.slice(0, 3).map((r) => r.body)})\n${await whereEventsStopped(subscription)}`,
    );
  });
}

/** What the dispatchers of a subscription, its consumer and its stream say: where undelivered events are. */
async function whereEventsStopped(subscription: string): Promise<string> {
  const lines: string[] = [];
  for (const pod of await pods({ namespace, selector: dispatcherSelector(subscription), count: 0 })) {
    const name = pod.metadata.name;
    const r = await kubectl(['get', '--raw', `/api/v1/namespaces/${namespace}/pods/${name}:9090/proxy/metrics`]);
    const series = r.stdout.split('\n').filter((l) => l.startsWith('hookyard_dispatcher') && !l.includes('_bucket'));
    lines.push(`${name}: ${series.filter((l) => !l.endsWith(' 0')).join('; ')}`);
    const logs = await kubectl(['-n', namespace, 'logs', name, '--tail=10']);
    lines.push(logs.stdout);
  }
  const jsz = await kubectl([
    ...['get', '--raw'],
    '/api/v1/namespaces/nats/pods/nats-0:8222/proxy/jsz?streams=true&consumers=true',
  ]);
  type Detail = { name: string; state?: unknown; consumer_detail?: unknown[] };
  const details = (JSON.parse(jsz.stdout).account_details ?? []).flatMap(
    (a: { stream_detail?: Detail[] }) => a.stream_detail ?? [],
  ) as Detail[];
  const stream = details.find((d) => d.name === endpointStream(namespace, 'fotoweb'));
  lines.push(`stream ${JSON.stringify(stream?.state)}; consumers ${JSON.stringify(stream?.consumer_detail)}`);
  return lines.join('\n');
}

/**
 * `kubectl hookyard` (bin/kubectl-hookyard on the PATH) as a ServiceAccount that may read and patch Hookyard's
 * resources in `namespace` only, with a kubeconfig of its own (a bearer token, as the history API needs).
 */
async function namespaceUser(namespace: string) {
  await apply(namespaceUserRbac(namespace, 'history-user'));
  const token = await kubectl(['-n', namespace, 'create', 'token', 'history-user', '--duration', '1h']);
  assert.equal(token.code, 0, token.stderr);
  const view = await kubectl(['config', 'view', '--raw', '--minify', '-o', 'json']);
  const cluster = (JSON.parse(view.stdout) as { clusters: { cluster: object }[] }).clusters[0]?.cluster;
  const dir = mkdtempSync(join(tmpdir(), 'hookyard-history-user-'));
  const kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(
    kubeconfig,
    stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'node', cluster }],
      users: [{ name: 'history-user', user: { token: token.stdout.trim() } }],
      contexts: [{ name: 'node', context: { cluster: 'node', user: 'history-user', namespace } }],
      'current-context': 'node',
    }),
  );
  const env = { ...process.env, KUBECONFIG: kubeconfig, PATH: `${join(root, 'bin')}:${process.env.PATH}` };
  return async (...args: string[]) => {
    const p = runCli({ command: join(binDir, 'kubectl'), args: ['hookyard'] }, args, env);
    const code = await p.exited;
    return { code, output: p.output() };
  };
}

describe('the product on the real node', () => {
  before(async () => {
    await installNats();
    await installChart();
    const created = await kubectl(['create', 'namespace', namespace]);
    assert.equal(created.code, 0, created.stderr);
    await kubectl(['create', 'namespace', 'shop']);
    for (const t of targets) await apply(sinkManifests(t.namespace, t.name, undefined, t.port));
    for (const t of targets) await rolledOut(t.namespace, t.name);
  });

  it('takes every file of examples/ with kubectl apply, through the admission webhook, and makes them Ready', async () => {
    const r = await kubectl(['-n', namespace, 'apply', '-f', join(root, 'examples')]);
    assert.equal(r.code, 0, r.stderr);
    for (const kind of ['providerendpoints', 'webhooksubscriptions']) {
      const ready = await kubectl(['-n', namespace, 'wait', '--for=condition=Ready', kind, '--all', '--timeout=180s']);
      assert.equal(
        ready.code,
        0,
        `${ready.stderr}\n${(await kubectl(['-n', namespace, 'get', kind, '-o', 'yaml'])).stdout}`,
      );
    }
    // Ready counts the pods: each resource says how many of its receiver or dispatcher pods are available.
    for (const [kind, type] of [
      ['providerendpoints', ConditionType.ReceiverReady],
      ['webhooksubscriptions', ConditionType.DispatcherReady],
    ] as const) {
      const r = await kubectl(['-n', namespace, 'get', kind, '-o', 'json']);
      type Condition = { type: string; reason: string; message: string };
      const items = JSON.parse(r.stdout).items as { status?: { conditions?: Condition[] } }[];
      assert.ok(items.length > 0, kind);
      for (const item of items) {
        const pods = item.status?.conditions?.find((c) => c.type === type);
        assert.equal(pods?.reason, Reason.Available, JSON.stringify(item.status));
        assert.match(pods?.message ?? '', /^[1-9]\d*\/[1-9]\d* (receiver|dispatcher) pods available\.$/);
      }
    }
    // R3: every endpoint's stream on all three NATS servers (the operator updates the streams in place).
    for (const name of endpoints) {
      const patch = '{"spec":{"stream":{"replicas":3}}}';
      const r = await kubectl(['-n', namespace, 'patch', 'providerendpoint', name, '--type=merge', '-p', patch]);
      assert.equal(r.code, 0, r.stderr);
    }
    const streams = await eventually('every stream R3', async () => {
      const r = await kubectl([
        'get',
        '--raw',
        '/api/v1/namespaces/nats/pods/nats-0:8222/proxy/jsz?streams=true&config=true',
      ]);
      const jsz = JSON.parse(r.stdout) as JszStreams;
      const details = (jsz.account_details ?? []).flatMap((a) => a.stream_detail ?? []);
      // The endpoints' own streams; their dead-letter streams follow them to R3 too.
      const own = new Set(endpoints.map((name) => endpointStream(namespace, name)));
      const r3 = details.filter(
        (d) => own.has(d.name ?? '') && d.config?.num_replicas === 3 && d.cluster?.replicas?.length === 2,
      );
      return r3.length >= endpoints.length ? r3 : undefined;
    });
    assert.equal(streams.length, endpoints.length);
    // The stream's settings are in the receivers' config: they roll, and serve again before anything is sent.
    for (const name of endpoints) await rolledOut(namespace, `hookyard-receiver-${name}`);
    await kubectl([
      '-n',
      namespace,
      'wait',
      '--for=delete',
      'pods',
      '-l',
      'app.kubernetes.io/component=receiver',
      '--field-selector=status.phase!=Running',
      '--timeout=60s',
    ]);
    // The admission webhook is the chart's, reached through its Service: a bad filter is refused at apply.
    const bad = await kubectl(
      ['-n', namespace, 'apply', '--dry-run=server', '-f', '-'],
      `apiVersion: hookyard.io/v1alpha1
kind: WebhookSubscription
metadata: {name: bad-filter}
spec: {sources: [{endpoint: proign}], filter: "nope(", target: {url: "http://x"}}`,
    );
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /validate\.hookyard\.io/);
  });

  it("answers each provider's documented webhooks through the Ingress as its documents say", async () => {
    const agents = {
      host: agentFrom(requireEnv('HOOKYARD_E2E_HOST_IP')),
      customer: agentFrom(requireEnv('HOOKYARD_E2E_CUSTOMER_NETWORK_IP')),
    };
    // Traefik follows the receivers' rollout a moment late: until then a request may go to a pod that is gone.
    for (const name of endpoints) await routeSettled(await endpointUrl(name), agents.host);
    const got: string[] = [];
    for (const play of plays()) {
      // Traefik picks a new Ingress up a moment after it exists: 404 until then.
      const status = await eventually(`${play.provider} ${play.what}`, async () => {
        const s = await send(play, agents);
        return s === 404 ? undefined : s;
      });
      got.push(`${play.provider} ${play.what}: ${status}`);
    }
    assert.deepEqual(
      got,
      plays().map((p) => `${p.provider} ${p.what}: ${p.expect}`),
    );
  });

  it('delivers to the target pods as the subscriptions say', async () => {
    for (const [subscription, { target, count }] of Object.entries(expectedDeliveries)) {
      const where = targets.find((t) => t.name === target) ?? assert.fail(target);
      const arrived = await eventually(`${count} deliveries of ${subscription}`, async () => {
        const r = await recorded(where.namespace, where.name);
        return r.length >= count ? r : undefined;
      });
      assert.equal(arrived.length, count, `${subscription} delivered ${arrived.length}, expected ${count}`);
    }
    const [shipment] = await recorded('shop', 'fulfillment');
    assert.equal(shipment?.url, '/hooks/proign');
    assert.ok(shipment?.headers['x-hookyard-signature'], 'proign-shipments signs for its target');
  });

  it("counts them in the receiver and dispatcher pods' metrics", async () => {
    const requests = (outcome: string) => podMetric('receiver', 8080, 'hookyard_receiver_requests_total', { outcome });
    assert.equal(await requests('accepted'), 8);
    assert.equal(await requests('duplicate'), 1);
    assert.equal(await requests('bad_signature'), 1);
    assert.equal(await requests('registration_check'), 1);
    assert.equal(await requests('unauthorized'), 1, 'FotoWeb from outside its networks');
    const delivered = await podMetric('dispatcher', 9090, 'hookyard_dispatcher_delivered_total', {});
    assert.equal(
      delivered,
      Object.values(expectedDeliveries).reduce((n, d) => n + d.count, 0),
    );
  });

  it("shows the history, sends a test event and replays, as the kubectl plugin of a user of the examples' namespace, through the operator's Service", async () => {
    const plugin = await namespaceUser(namespace);
    const shipped = 'order.shipped:evt_abc123';

    // PROIGN sent order.shipped twice (the plays above): one event, one resend answered as a duplicate.
    const events = await plugin('events', 'proign', '--type', 'order.shipped', '-o', 'json');
    assert.equal(events.code, 0, events.output);
    assert.deepEqual(
      (JSON.parse(events.output) as { id: string; duplicates: number }[]).map((e) => [e.id, e.duplicates]),
      [[shipped, 1]],
    );
    const attempts = await plugin('attempts', 'proign-shipments', '-o', 'json');
    assert.equal(attempts.code, 0, attempts.output);
    assert.deepEqual(
      (JSON.parse(attempts.output) as { eventId: string; status: number; decision: string }[]).map((a) => [
        a.eventId,
        a.status,
        a.decision,
      ]),
      [[shipped, 200, 'delivered']],
    );

    const before = (await recorded('shop', 'fulfillment')).length;
    const dry = await plugin('replay', 'proign-shipments', '--event', shipped, '--dry-run', '--id', 'e2e-dry');
    assert.equal(dry.code, 0, dry.output);
    assert.match(dry.output, /^replay e2e-dry: DryRun: Dry run: 1 events would be sent again; nothing was sent\./);
    // The filter (carrier UPS) decides a test event too: one it skips is refused, not reported as sent.
    const skipped = await plugin('test', 'proign-shipments', '--type', 'order.shipped', '--id', 'e2e-skipped');
    assert.equal(skipped.code, 1, skipped.output);
    assert.match(skipped.output, /spec\.filter skips this test event/);
    const test = await plugin(
      ...['test', 'proign-shipments', '--type', 'order.shipped', '--id', 'e2e-test'],
      ...['--body', '{"data":{"carrier":"UPS"}}'],
    );
    assert.equal(test.code, 0, test.output);
    assert.match(test.output, /hookyard-test:e2e-test +1 +200 +[\d.]+ +delivered \[replay e2e-test\]\n$/);
    const replay = await plugin('replay', 'proign-shipments', '--event', shipped, '--id', 'e2e-replay');
    assert.equal(replay.code, 0, replay.output);
    assert.match(replay.output, /^replay e2e-replay: Succeeded: 1 events sent again/);
    const arrived = await eventually('the test event and the replay at the target', async () => {
      const r = (await recorded('shop', 'fulfillment')).slice(before);
      return r.length >= 2 ? r : undefined;
    });
    await sleep(2000); // a copy too many would show here
    assert.deepEqual(
      (await recorded('shop', 'fulfillment'))
        .slice(before)
        .map((r) => [
          r.headers['hookyard-event-id'],
          r.headers['hookyard-test'],
          r.headers['hookyard-replay'],
          Boolean(r.headers['x-hookyard-signature']),
        ]),
      [
        ['hookyard-test:e2e-test', 'true', 'e2e-test', true],
        [shipped, undefined, 'e2e-replay', true],
      ],
    );
    assert.equal(arrived[1]?.body, samples.proign?.[0]?.body.toString());

    // Another namespace's history is refused, for reading and for replaying.
    const foreign = await plugin('attempts', 'proign-shipments', '-n', 'shop');
    assert.equal(foreign.code, 1, foreign.output);
    assert.match(foreign.output, /cannot get webhooksubscriptions "proign-shipments" in namespace "shop"/);
    const foreignReplay = await plugin('dlq', 'replay', 'proign-shipments', '-n', 'shop');
    assert.equal(foreignReplay.code, 1, foreignReplay.output);
    assert.match(foreignReplay.output, /cannot patch resource "webhooksubscriptions"/);
  });

  it('delivers every request answered 2xx while receiver, dispatcher, operator-leader and NATS pods fail, one at a time, under load', async (t) => {
    const agent = agentFrom(requireEnv('HOOKYARD_E2E_HOST_IP'));
    const url = `${await endpointUrl('printiq')}/CreateJob?token=${secret('printiq-webhook', 'token')}`;
    const base = JSON.parse(samples.printiq?.[0]?.body.toString() ?? '{}') as Record<string, unknown>;
    const before = (await recorded(namespace, 'production-planning')).length;
    const receivers = {
      namespace,
      selector: 'app.kubernetes.io/component=receiver,app.kubernetes.io/instance=printiq',
      count: 2,
    };
    const dispatchers = {
      namespace,
      selector: 'app.kubernetes.io/component=dispatcher,app.kubernetes.io/instance=printiq-jobs',
      count: 1,
    };
    const operators = { namespace: 'hookyard-system', selector: 'app.kubernetes.io/component=operator', count: 2 };
    const nats = { namespace: 'nats', selector: 'app=nats', count: 3 };
    const faults: {
      fault: string;
      group: PodGroup;
      how: 'delete' | 'SIGKILL';
      word: string;
      pick: () => Promise<string>;
    }[] = [];
    for (const how of ['delete', 'SIGKILL'] as const) {
      faults.push({
        fault: `receiver pod ${how}`,
        group: receivers,
        how,
        word: 'receiver',
        pick: () => servingPod(receivers),
      });
    }
    for (const how of ['delete', 'SIGKILL'] as const) {
      faults.push({
        fault: `dispatcher pod ${how}`,
        group: dispatchers,
        how,
        word: 'dispatcher',
        pick: () => servingPod(dispatchers),
      });
    }
    for (const how of ['delete', 'SIGKILL'] as const) {
      faults.push({ fault: `operator leader ${how}`, group: operators, how, word: 'operator', pick: operatorLeader });
    }
    // The server that leads the endpoint's stream: the one whose loss makes JetStream elect another.
    for (const how of ['delete', 'SIGKILL'] as const) {
      faults.push({
        fault: `NATS stream leader ${how}`,
        group: nats,
        how,
        word: 'nats-server',
        pick: async () => (await printiqStream()).leader,
      });
    }
    const healthy = () =>
      allReady([receivers, dispatchers, operators, nats], async () => {
        const stream = await printiqStream();
        if (!stream.current) throw new Error(`the printiq stream is not current on every server: ${stream.detail}`);
        const leader = await operatorLeader();
        if (!(await pods(operators)).some((p) => p.metadata.name === leader)) {
          throw new Error(`the Lease names ${leader}, not a live operator pod`);
        }
      });
    const perSecond = 25;
    await healthy();
    const load = startLoad({
      url,
      agent,
      perSecond,
      max: 6000,
      // printIQ deduplicates on the body's hash: each request is another job.
      body: (id) => JSON.stringify({ ...base, JobNo: id }),
      contentType: 'application/json',
    });
    const marks = [{ fault: 'none (before the faults)', at: Date.now() }];
    const hits: string[] = [];
    let answers: Answer[] = [];
    try {
      await sleep(3000);
      for (const f of faults) {
        await healthy();
        // A few seconds of load on the whole set, so what the fault costs is not mixed with the last one's.
        await sleep(3000);
        const pod = await f.pick();
        marks.push({ fault: f.fault, at: Date.now() });
        hits.push(`${f.fault}: ${await hit(f.group.namespace, pod, f.how, f.word)}`);
      }
      await healthy();
      await sleep(3000);
    } finally {
      answers = await load.stop();
    }
    const accepted = answers.filter((a) => a.status >= 200 && a.status < 300).map((a) => a.id);
    const arrived = await eventually(
      'every accepted job at production-planning',
      async () => {
        const jobs = (await recorded(namespace, 'production-planning'))
          .slice(before)
          .map((r) => (JSON.parse(r.body) as { JobNo?: string }).JobNo ?? '');
        const got = new Set(jobs);
        return accepted.every((j) => got.has(j)) ? jobs : undefined;
      },
      180,
    );
    const duplicates = arrived.length - new Set(arrived).size;
    const table = costs(answers, marks, perSecond);
    for (const c of table) t.diagnostic(JSON.stringify(c));
    t.diagnostic(
      `sent ${answers.length}, acknowledged ${accepted.length}, delivered ${arrived.length} (${new Set(arrived).size} distinct), duplicates ${duplicates}`,
    );
    assert.deepEqual(
      hits,
      faults.map((f) => `${f.fault}: 1`),
      'each fault hit one pod or one process',
    );
    assert.ok(accepted.length > answers.length / 2, `${accepted.length} of ${answers.length} acknowledged`);
  });
  it('with two receivers and two dispatchers: no false duplicates, retries forgotten once taken, limits per dispatcher pod', async (t) => {
    const subscription = 'fotoweb-orders';
    await scaleDispatchers(subscription, 2);
    await allReady([
      { namespace, selector: dispatcherSelector(subscription), count: 2 },
      { namespace, selector: 'app.kubernetes.io/component=receiver,app.kubernetes.io/instance=fotoweb', count: 2 },
    ]);
    const dispatcherMetric = (name: string) => podMetric('dispatcher', 9090, name, { subscription });
    const receiverOutcome = (outcome: string) =>
      podMetric('receiver', 8080, 'hookyard_receiver_requests_total', { endpoint: 'fotoweb', outcome });
    const was = { accepted: await receiverOutcome('accepted'), duplicate: await receiverOutcome('duplicate') };
    const before = (await recorded(namespace, 'dam-orders')).length;
    const events = 200;

    // Concurrency binds: each delivery takes 400 ms, and every 10th is answered 503, so it is retried. The same
    // events are sent twice, each time to whichever receiver Traefik picks: every second copy is a duplicate.
    await configureSink(namespace, 'dam-orders', { delayMs: 400, failEvery: 10 });
    const answered = [...(await sendOrders(events, 0)), ...(await sendOrders(events, 0))];
    assert.deepEqual(tally(answered), { 204: 2 * events }, 'every order answered 204');
    const slow = await deliveredToDam(subscription, before, events);

    // The rate limit binds: 200 more wait behind a target that takes a second each, then it answers at once.
    await configureSink(namespace, 'dam-orders', { delayMs: 1000, failEvery: 0 });
    answered.push(...(await sendOrders(events, events)));
    assert.deepEqual(tally(answered), { 204: 3 * events }, 'every order answered 204');
    await configureSink(namespace, 'dam-orders', { delayMs: 0, failEvery: 0 });
    const released = Date.now();
    const all = await deliveredToDam(subscription, before, 2 * events);
    const fast = all.filter((r) => Date.parse(r.receivedAt) >= released);

    const answered200 = new Map<string, number>();
    for (const r of all.filter((x) => x.status === 200)) {
      const id = JSON.parse(r.body).id as string;
      answered200.set(id, (answered200.get(id) ?? 0) + 1);
    }
    const retried = slow.filter((r) => r.status === 503).length;
    const maxInFlight = Math.max(...slow.map((r) => r.inFlight));
    const spanSeconds = (Date.parse(fast.at(-1)?.receivedAt ?? '') - Date.parse(fast[0]?.receivedAt ?? '')) / 1000;
    const possibleDuplicates = await dispatcherMetric('hookyard_dispatcher_possible_duplicates_total');
    t.diagnostic(
      `2 dispatchers: ${retried} retries; slow target: at most ${maxInFlight} deliveries at once; fast target: ${fast.length} in ${spanSeconds.toFixed(1)} s, at most ${busiestSecond(fast)} in one second; possible duplicates ${possibleDuplicates}`,
    );
    // concurrency 4 and rateLimit 20/s (burst 20) hold per dispatcher pod, as docs/dispatcher.md says: the target
    // sees up to twice each. The rate is bounded over the deliveries' span plus a second, for the sink's clock
    // and event loop; deliveries without a rate limit would all come within about a second.
    assert.deepEqual(
      {
        accepted: (await receiverOutcome('accepted')) - was.accepted,
        duplicates: (await receiverOutcome('duplicate')) - was.duplicate,
        retried: retried > 0,
        deliveredTwice: [...answered200].filter(([, n]) => n > 1),
        possibleDuplicates,
        bothPodsAtOnce: maxInFlight > 4,
        atOnceWithinTwoPods: maxInFlight <= 2 * 4,
        rateWithinTwoPods: fast.length <= 2 * (20 + 20 * (spanSeconds + 1)),
      },
      {
        accepted: 2 * events,
        duplicates: events,
        retried: true,
        deliveredTwice: [],
        possibleDuplicates: 0,
        bothPodsAtOnce: true,
        atOnceWithinTwoPods: true,
        rateWithinTwoPods: true,
      },
    );
    // What each replica heard of the other's retries is forgotten once they are taken.
    await eventually('no scheduled retry left', async () =>
      (await dispatcherMetric('hookyard_dispatcher_scheduled_retries')) === 0 ? true : undefined,
    );
  });
  it('says in status why receivers do not serve: pods that cannot be scheduled, then 0 replicas', async () => {
    // Receivers that ask for more memory than the node has stay Pending; with a short progress deadline the
    // Deployment says so, and the endpoint's status passes it on.
    const example = exampleDoc('ProviderEndpoint', 'shopflix');
    const name = 'unschedulable';
    const doc = structuredClone(example) as { metadata: Record<string, unknown>; spec: Record<string, unknown> };
    doc.metadata = { name, namespace };
    doc.spec.receiver = { replicas: 1, resources: { requests: { memory: '1000Gi' } } };
    await apply(stringify(doc));
    const deployment = `hookyard-receiver-${name}`;
    await eventually(`${deployment} exists`, async () =>
      (await kubectl(['-n', namespace, 'get', 'deployment', deployment])).code === 0 ? true : undefined,
    );
    const patch = await kubectl([
      '-n',
      namespace,
      'patch',
      'deployment',
      deployment,
      '--type=merge',
      '-p',
      '{"spec":{"progressDeadlineSeconds":5}}',
    ]);
    assert.equal(patch.code, 0, patch.stderr);
    const receiverReady = async () => {
      const r = await kubectl(['-n', namespace, 'get', 'providerendpoint', name, '-o', 'json']);
      const status = JSON.parse(r.stdout).status as {
        conditions?: { type: string; reason: string; message: string }[];
      };
      return status?.conditions?.find((c) => c.type === ConditionType.ReceiverReady);
    };
    const stuck = await eventually(
      'ReceiverReady says ProgressDeadlineExceeded',
      async () => ((await receiverReady())?.reason === Reason.ProgressDeadlineExceeded ? receiverReady() : undefined),
      120,
    );
    assert.match(stuck?.message ?? '', /0\/1 receiver pods available/);
    const scale = await kubectl([
      '-n',
      namespace,
      'patch',
      'providerendpoint',
      name,
      '--type=merge',
      '-p',
      '{"spec":{"receiver":{"replicas":0}}}',
    ]);
    assert.equal(scale.code, 0, scale.stderr);
    await eventually('ReceiverReady says ScaledToZero', async () =>
      (await receiverReady())?.reason === Reason.ScaledToZero ? true : undefined,
    );
    assert.equal((await kubectl(['-n', namespace, 'delete', 'providerendpoint', name, '--wait=true'])).code, 0);
  });
  it('finishes a delete made while the operator is down in both ways docs/uninstall.md gives, leaving nothing behind', async () => {
    const operators = { namespace: 'hookyard-system', selector: 'app.kubernetes.io/component=operator', count: 2 };
    const scaleOperator = async (replicas: number) => {
      const r = await kubectl([
        '-n',
        'hookyard-system',
        'scale',
        'deployment/hookyard-operator',
        `--replicas=${replicas}`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      if (replicas > 0) return allReady([operators]);
      await eventually(
        'no operator pod left',
        async () => ((await pods(operators)).length === 0 ? true : undefined),
        120,
      );
    };
    /** What of an endpoint and its subscription is still there: the resources, their objects, their streams. */
    const leftOf = async (endpoint: string, subscription: string) => {
      const left: string[] = [];
      for (const [kind, name] of [
        ['providerendpoint', endpoint],
        ['webhooksubscription', subscription],
      ]) {
        const r = await kubectl(['-n', namespace, 'get', kind ?? '', name ?? '', '-o', 'name', '--ignore-not-found']);
        if (r.stdout.trim()) left.push(r.stdout.trim());
      }
      const instances = `app.kubernetes.io/instance in (${endpoint},${subscription})`;
      const objects = 'deployments,services,ingresses,configmaps,secrets';
      const r = await kubectl(['-n', namespace, 'get', objects, '-o', 'name', '-l', instances]);
      left.push(...r.stdout.trim().split('\n').filter(Boolean));
      const jsz = await kubectl(['get', '--raw', '/api/v1/namespaces/nats/pods/nats-0:8222/proxy/jsz?streams=true']);
      const streams = ((JSON.parse(jsz.stdout) as JszStreams).account_details ?? []).flatMap(
        (a) => a.stream_detail ?? [],
      );
      const theirs = [
        endpointStream(namespace, endpoint),
        duplicateStream(namespace, endpoint),
        deadLetterStream(namespace, subscription),
        attemptStream(namespace, subscription),
        replayStream(namespace, subscription),
      ];
      for (const s of streams) if (theirs.includes(s.name)) left.push(`stream ${s.name}`);
      return left;
    };
    const stuck = async () => {
      // The command docs/uninstall.md gives for what is stuck.
      const r = await kubectl([
        ...['get', 'hookyard', '-A', '-o'],
        'jsonpath={range .items[?(@.metadata.deletionTimestamp)]}{.kind} {.metadata.namespace}/{.metadata.name}{"\\n"}{end}',
      ]);
      return r.stdout.trim().split('\n').filter(Boolean).sort();
    };

    // 1. Start the operator again: it finishes the pending deletes by itself.
    await scaleOperator(0);
    for (const kind of ['webhooksubscription/printiq-jobs', 'providerendpoint/printiq']) {
      const r = await kubectl(['-n', namespace, 'delete', kind, '--wait=false']);
      assert.equal(r.code, 0, r.stderr);
    }
    assert.deepEqual(await stuck(), [
      `ProviderEndpoint ${namespace}/printiq`,
      `WebhookSubscription ${namespace}/printiq-jobs`,
    ]);
    assert.ok((await leftOf('printiq', 'printiq-jobs')).includes(`stream ${endpointStream(namespace, 'printiq')}`));
    await scaleOperator(2);
    const gone = await eventually(
      'nothing left of printiq',
      async () => ((await leftOf('printiq', 'printiq-jobs')).length === 0 ? true : undefined),
      120,
    ).catch(async (err: Error) =>
      assert.fail(`${err.message}: ${(await leftOf('printiq', 'printiq-jobs')).join(', ')}`),
    );
    assert.equal(gone, true);

    // 2. Remove the finalizers by hand, then what the operator would have removed in NATS, through a port-forward.
    await scaleOperator(0);
    for (const kind of ['webhooksubscription/siteflow-status', 'providerendpoint/siteflow']) {
      const r = await kubectl(['-n', namespace, 'delete', kind, '--wait=false']);
      assert.equal(r.code, 0, r.stderr);
      const patch = await kubectl([
        '-n',
        namespace,
        'patch',
        kind,
        '--type=merge',
        '-p',
        '{"metadata":{"finalizers":null}}',
      ]);
      assert.equal(patch.code, 0, patch.stderr);
    }
    await eventually(
      'the owned objects collected',
      async () => {
        const left = await leftOf('siteflow', 'siteflow-status');
        return left.every((l) => l.startsWith('stream ')) ? left : undefined;
      },
      120,
    );
    // What docs/uninstall.md says is left to remove by hand: the streams (the subscription's consumer is on the
    // endpoint's stream and goes with it): the endpoint's two, and the subscription's dead letters and attempts
    // (it was never replayed, so it has no replay stream).
    const kept = [
      endpointStream(namespace, 'siteflow'),
      duplicateStream(namespace, 'siteflow'),
      deadLetterStream(namespace, 'siteflow-status'),
      attemptStream(namespace, 'siteflow-status'),
    ];
    assert.deepEqual((await leftOf('siteflow', 'siteflow-status')).sort(), kept.map((k) => `stream ${k}`).sort());
    await withNats(async (jsm) => {
      for (const stream of kept) await jsm.streams.delete(stream);
    });
    assert.deepEqual(await leftOf('siteflow', 'siteflow-status'), []);
    assert.deepEqual(await stuck(), []);
    await scaleOperator(2);
  });
  it('leaves no stream, consumer, Deployment or Secret behind once every resource, then the chart, is deleted', async () => {
    const kinds = 'webhooksubscriptions.hookyard.io,providerendpoints.hookyard.io';
    const del = await kubectl(['-n', namespace, 'delete', kinds, '--all', '--wait=true', '--timeout=180s']);
    assert.equal(del.code, 0, del.stderr);
    const managed = 'app.kubernetes.io/managed-by=hookyard-operator';
    const left = await eventually("the operator's objects gone", async () => {
      const r = await kubectl([
        '-n',
        namespace,
        'get',
        'deployments,services,ingresses,configmaps,secrets',
        '-l',
        managed,
        '-o',
        'name',
      ]);
      return r.code === 0 && r.stdout.trim() === '' ? r.stdout : undefined;
    });
    assert.equal(left.trim(), '');
    const jsz = await kubectl([
      'get',
      '--raw',
      '/api/v1/namespaces/nats/pods/nats-0:8222/proxy/jsz?streams=true&consumers=true',
    ]);
    const details = ((JSON.parse(jsz.stdout) as JszStreams).account_details ?? []).flatMap(
      (a) => a.stream_detail ?? [],
    );
    assert.deepEqual(
      details
        .map((d) => d.name)
        .filter((n) =>
          ['hookyard', 'hookyard-dup', 'hookyard-dlq', 'hookyard-attempts', 'hookyard-replay'].some((p) =>
            n.startsWith(`${p}_${namespace}_`),
          ),
        ),
      [],
    );

    const uninstall = await helm([
      ...['uninstall', 'hookyard', '--namespace', 'hookyard-system', '--wait', '--timeout', '3m'],
      ...['--kubeconfig', requireEnv('KUBECONFIG')],
    ]);
    assert.equal(uninstall.code, 0, uninstall.stderr);
    // What Kubernetes itself keeps in every namespace stays: the root CA ConfigMap. The operator pods go after
    // their Deployment, through the garbage collector.
    const chartLeft = async () => {
      const r = await kubectl([
        '-n',
        'hookyard-system',
        'get',
        'deployments,pods,services,secrets,configmaps',
        '-o',
        'name',
      ]);
      return r.stdout
        .trim()
        .split('\n')
        .filter((line) => line && line !== 'configmap/kube-root-ca.crt');
    };
    await eventually(
      'nothing of the chart left',
      async () => ((await chartLeft()).length === 0 ? true : undefined),
      120,
    ).catch(async (err: Error) => assert.fail(`${err.message}: ${(await chartLeft()).join(', ')}`));
  });
});

/** How many of each status. */
function tally(statuses: number[]): Record<number, number> {
  const counts: Record<number, number> = {};
  for (const s of statuses) counts[s] = (counts[s] ?? 0) + 1;
  return counts;
}

/** The most deliveries that arrived within one second of each other. */
function busiestSecond(arrived: Recorded[]): number {
  const times = arrived.map((r) => Date.parse(r.receivedAt)).sort((a, b) => a - b);
  let most = 0;
  for (let i = 0, j = 0; j < times.length; j++) {
    while ((times[j] ?? 0) - (times[i] ?? 0) >= 1000) i++;
    most = Math.max(most, j - i + 1);
  }
  return most;
}

/** The operator replica that holds the Lease: the one that reconciles. */
async function operatorLeader(): Promise<string> {
  const r = await kubectl([
    '-n',
    'hookyard-system',
    'get',
    'lease',
    'hookyard-operator',
    '-o',
    'jsonpath={.spec.holderIdentity}',
  ]);
  if (r.code !== 0 || r.stdout === '') throw new Error(`no operator Lease holder: ${r.stderr}`);
  return r.stdout;
}

/** Where the printiq endpoint's stream is: its leader, and whether every replica is current and none is lagging. */
async function printiqStream(): Promise<{ leader: string; current: boolean; detail: string }> {
  const cluster = async (server: string) => {
    const r = await kubectl(['get', '--raw', `/api/v1/namespaces/nats/pods/${server}:8222/proxy/jsz?streams=true`]);
    const jsz = JSON.parse(r.stdout) as JszStreams;
    const name = endpointStream(namespace, 'printiq');
    const stream = (jsz.account_details ?? []).flatMap((a) => a.stream_detail ?? []).find((d) => d.name === name);
    return stream?.cluster ?? {};
  };
  // Only the leader knows how current the others are: ask any server which one it is, then ask the leader.
  const { leader } = await cluster(await servingPod({ namespace: 'nats', selector: 'app=nats', count: 3 }));
  const seen = leader ? await cluster(leader) : {};
  const replicas = (seen.replicas ?? []) as { current?: boolean; lag?: number }[];
  return {
    leader: leader ?? '',
    current: seen.leader === leader && replicas.length === 2 && replicas.every((x) => x.current && !x.lag),
    detail: JSON.stringify(seen),
  };
}
