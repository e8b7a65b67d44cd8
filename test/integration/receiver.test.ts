// The receiver against a real nats-server, serving the examples/ endpoints exactly as users write them.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect as netConnect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { type JetStreamManager, jetstream } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import fc from 'fast-check';
import pino from 'pino';
import { Registry } from 'prom-client';
import { fetch } from 'undici';
import type { ProviderEndpoint } from '../../src/api/provider-endpoint.ts';
import { parseResource } from '../../src/api/validate.ts';
import { duplicateCounts } from '../../src/history/read.ts';
import { endpointStream } from '../../src/jetstream/layout.ts';
import { jetstreamPublisher } from '../../src/jetstream/publisher.ts';
import { ensureEndpointStreams } from '../../src/jetstream/streams.ts';
import { providerSignature, type Sample, samples } from '../../src/providers/samples.ts';
import { endpointState, listen, type RunningServer } from '../../src/receiver/main.ts';
import { ReceiverMetrics } from '../../src/receiver/metrics.ts';
import { type EndpointState, receiverHandler } from '../../src/receiver/server.ts';
import { mapSecrets } from '../../src/runtime/secrets.ts';
import { exampleDocuments } from '../harness/examples.ts';
import { streamMessages, testNats } from '../harness/nats.ts';
import { waitFor } from '../harness/wait.ts';

const namespace = `rcv-${randomBytes(3).toString('hex')}`;

/** The examples' Secrets and endpoints, plus endpoints for the other presets and methods. */
function configuration() {
  const docs = exampleDocuments();
  const secrets: Record<string, Record<string, Buffer>> = {};
  for (const { doc } of docs.filter((d) => d.doc.kind === 'Secret')) {
    const data = doc.stringData as Record<string, string>;
    secrets[doc.metadata.name] = Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v)]));
  }
  secrets.extra = {
    token: Buffer.from('extra-token'),
    whsec: Buffer.from(`whsec_${randomBytes(24).toString('base64')}`),
  };
  secrets['basic-a'] = { username: Buffer.from('printer'), password: Buffer.from('s3cret') };
  const endpoints = docs
    .filter((d) => d.doc.kind === 'ProviderEndpoint')
    .map((d) => ({ ...d.doc, metadata: { ...d.doc.metadata, namespace } }));
  const extra = (name: string, spec: Record<string, unknown>) => ({
    apiVersion: 'hookyard.io/v1alpha1',
    kind: 'ProviderEndpoint',
    metadata: { name, namespace },
    spec,
  });
  const ref = (key: string) => [{ name: 'extra', key }];
  endpoints.push(
    extra('github', { provider: 'github', verification: [{ hmac: { secretRefs: ref('token') } }] }),
    extra('stripe', { provider: 'stripe', verification: [{ stripe: { secretRefs: ref('token') } }] }),
    extra('sw', { provider: 'standard-webhooks', verification: [{ standardWebhooks: { secretRefs: ref('whsec') } }] }),
    extra('shopify', { provider: 'shopify', verification: [{ hmac: { secretRefs: ref('token') } }] }),
    extra('basic', { provider: 'generic', verification: [{ basicAuth: { secretNames: ['basic-a'] } }] }),
    extra('bearer', { provider: 'generic', verification: [{ bearer: { secretRefs: ref('token') } }] }),
    extra('small', { provider: 'generic', verification: [{ none: true }], receiver: { maxBodySize: '1Ki' } }),
    extra('open', { provider: 'generic', verification: [{ none: true }], receiver: { maxBodySize: '1Mi' } }),
    extra('keyed', {
      provider: 'generic',
      verification: [{ none: true }],
      eventType: { source: 'header', header: 'X-Type', aliases: { old: 'new' } },
      dedup: { source: 'body', bodyPaths: ['id', 'time'] },
    }),
    extra('many-types', {
      provider: 'generic',
      verification: [{ none: true }],
      eventType: { source: 'header', header: 'X-Type' },
    }),
    extra('typed', {
      provider: 'generic',
      verification: [{ none: true }],
      eventType: { source: 'body', bodyPaths: ['kind'] },
    }),
    extra('missing-secret', {
      provider: 'github',
      verification: [{ hmac: { secretRefs: [{ name: 'nope', key: 'x' }] } }],
    }),
  );
  return {
    secrets: mapSecrets(secrets),
    raw: secrets,
    endpoints: endpoints.map((e) => parseResource(e) as ProviderEndpoint),
  };
}

describe('receiver', () => {
  const config = configuration();
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let server: RunningServer;
  let base: string;
  const registry = new Registry();
  // The receiver's log lines, to check that no client request produces an error-level line.
  const logLines: { level: number; msg: string; [field: string]: unknown }[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void logLines.push(JSON.parse(line)) });
  const errorLines = () => logLines.filter((l) => l.level >= 50);
  let metricsBeforeTraffic = '';

  before(async () => {
    ({ nc, jsm } = await testNats());
    const metrics = new ReceiverMetrics(registry);
    const states = new Map<string, EndpointState>();
    for (const e of config.endpoints) {
      await ensureEndpointStreams(jsm, namespace, e.metadata.name, e.spec);
      states.set(`${namespace}/${e.metadata.name}`, endpointState(e, config.secrets, metrics));
    }
    server = await listen(
      receiverHandler({
        endpoints: () => states,
        publisher: jetstreamPublisher(nc),
        natsReady: () => true,
        maxPayload: () => nc.info?.max_payload,
        log,
        registry,
      }),
      0,
      '127.0.0.1',
    );
    base = `http://127.0.0.1:${server.port}/hooks/${namespace}`;
    metricsBeforeTraffic = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
  });
  after(async () => {
    await server?.close();
    await nc?.close();
  });

  const post = (path: string, body: Buffer | string, headers: Record<string, string> = {}) =>
    fetch(`${base}/${path}`, { method: 'POST', body, headers });
  const send = (endpoint: string, sample: Sample, extra: Record<string, string> = {}) =>
    post(sample.route ? `${endpoint}/${sample.route}` : endpoint, sample.body, {
      ...(sample.contentType ? { 'content-type': sample.contentType } : {}),
      ...sample.headers,
      ...extra,
    });
  const stored = (endpoint: string) => streamMessages(jsm, endpointStream(namespace, endpoint));
  const metric = async (name: string, labels: Record<string, string>) => {
    const m = (await registry.getSingleMetric(name)?.get())?.values.find((v) =>
      Object.entries(labels).every(([k, val]) => v.labels[k] === val),
    );
    return m?.value;
  };
  const secretOf = (name: string, key: string) => config.raw[name]?.[key]?.toString() ?? '';
  const shopflix = samples.shopflix ?? [];
  const proign = samples.proign ?? [];

  it('answers the Shopflix registration check with 200 and publishes nothing', async () => {
    const res = await send('shopflix', shopflix[0] as Sample);
    assert.equal(res.status, 200);
    assert.equal((await stored('shopflix')).length, 0);
    assert.equal(
      await metric('hookyard_receiver_requests_total', { endpoint: 'shopflix', outcome: 'registration_check' }),
      1,
    );
  });

  it('stores the Shopflix example byte for byte under its aliased event type, answering exactly 200', async () => {
    const sample = shopflix[1] as Sample;
    const res = await send(
      'shopflix',
      sample,
      providerSignature('shopflix', secretOf('shopflix-webhook', 'secret'), sample.body),
    );
    assert.equal(res.status, 200);
    const [msg] = await stored('shopflix');
    assert.ok(msg);
    assert.deepEqual(Buffer.from(msg.data), sample.body);
    assert.equal(msg.subject, `hookyard.${namespace}.shopflix.order.delivered`);
    assert.equal(msg.header.get('Hookyard-Event-Type'), 'order.delivered');
    assert.equal(msg.header.get('Nats-Msg-Id'), 'order.delivered:GR--4004973--MER75:2025-12-18 08:08:37');
  });

  it('refuses a Shopflix event with a wrong signature, and one without', async () => {
    const sample = shopflix[1] as Sample;
    const before = (await stored('shopflix')).length;
    const wrong = await send('shopflix', sample, providerSignature('shopflix', 'not-the-secret', sample.body));
    assert.equal(wrong.status, 401);
    assert.deepEqual(await wrong.json(), { error: 'bad_signature', message: 'X-Data-Signature does not match' });
    assert.equal((await send('shopflix', sample)).status, 401);
    assert.equal((await stored('shopflix')).length, before);
  });

  it('checks PROIGN signatures as its Node snippet computes them, deduplicates on id and counts retries', async () => {
    const [first, retry] = proign as [Sample, Sample];
    const secret = secretOf('proign-webhook', 'secret');
    const res = await send('proign', first, providerSignature('proign', secret, first.body));
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: 'accepted', id: 'order.shipped:evt_abc123', type: 'order.shipped' });
    const again = await send('proign', retry, providerSignature('proign', secret, retry.body));
    assert.equal(again.status, 200);
    assert.equal(((await again.json()) as { status: string }).status, 'duplicate');
    const messages = await stored('proign');
    assert.equal(messages.length, 1);
    assert.deepEqual(Buffer.from(messages[0]?.data ?? []), first.body);
    assert.equal(messages[0]?.header.get('Hookyard-Header-x-proign-delivery-id'), 'dlv_0001');
    assert.equal(await metric('hookyard_receiver_requests_total', { endpoint: 'proign', outcome: 'duplicate' }), 1);
    assert.equal(await metric('hookyard_receiver_provider_retries_total', { endpoint: 'proign' }), 1);
    // The resend is recorded under the event id, for `hookyard events` to count.
    await waitFor(
      'the duplicate record',
      async () =>
        (await duplicateCounts(jetstream(nc), namespace, 'proign')).get('order.shipped:evt_abc123') === 1 || undefined,
    );
    const forged = await send('proign', first, { 'X-Proign-Signature': `sha256=${'0'.repeat(64)}` });
    assert.equal(forged.status, 401);
  });

  it('answers FotoWeb 204 for JSON and form data from its network, deduplicating on id', async () => {
    const [jsonSample, formSample] = samples.fotoweb as [Sample, Sample];
    const from = { 'x-forwarded-for': '203.0.113.7' };
    assert.equal((await send('fotoweb', jsonSample, from)).status, 204);
    assert.equal((await send('fotoweb', formSample, from)).status, 204);
    // FotoWeb resends an event with the same id: stored once, counted.
    assert.equal((await send('fotoweb', jsonSample, from)).status, 204);
    const messages = await stored('fotoweb');
    assert.deepEqual(
      messages.map((m) => m.header.get('Nats-Msg-Id')),
      ['order.submitted:0237d5cb-ebc7-4647-9a70-7c27bd3f5e9d', 'order.approved:b5a1e0c2-6f0e-4c55-9d0e-3f1f2c7a8e11'],
    );
    assert.equal(await metric('hookyard_receiver_requests_total', { endpoint: 'fotoweb', outcome: 'duplicate' }), 1);
    const outsider = await send('fotoweb', jsonSample, { 'x-forwarded-for': '198.51.100.1' });
    assert.equal(outsider.status, 403);
  });

  it('stores FotoWeb form data verbatim with its fields readable', async () => {
    const formSample = (samples.fotoweb as Sample[])[1] as Sample;
    const body = Buffer.from(formSample.body.toString().replace('b5a1e0c2', '1111aaaa'));
    const res = await post('fotoweb/order-approved', body, {
      'content-type': 'application/x-www-form-urlencoded; charset=utf-8',
      'x-forwarded-for': '203.0.113.9',
    });
    assert.equal(res.status, 204);
    const last = (await stored('fotoweb')).at(-1);
    assert.deepEqual(Buffer.from(last?.data ?? []), body);
    assert.equal(last?.header.get('Nats-Msg-Id'), 'order.approved:1111aaaa-6f0e-4c55-9d0e-3f1f2c7a8e11');
    assert.equal(last?.header.get('Hookyard-Event-Type'), 'order.approved');
  });

  it('takes printIQ events from the route, JSON and XML, with the token in the URL', async () => {
    const token = secretOf('printiq-webhook', 'token');
    for (const sample of samples.printiq as Sample[]) {
      const res = await post(`printiq/${sample.route}?token=${token}`, sample.body, {
        'content-type': sample.contentType ?? '',
      });
      assert.equal(res.status, 200, sample.name);
    }
    const messages = await stored('printiq');
    assert.deepEqual(
      messages.map((m) => m.header.get('Hookyard-Event-Type')),
      ['CreateJob', 'CreateJobXml'],
    );
    assert.deepEqual(Buffer.from(messages[1]?.data ?? []), (samples.printiq as Sample[])[1]?.body);
    assert.equal(
      (await post(`printiq/CreateJob?token=wrong`, '{}', { 'content-type': 'application/json' })).status,
      401,
    );
    const unknown = await post(`printiq/NotAnEvent?token=${token}`, '{}', { 'content-type': 'application/json' });
    assert.equal(unknown.status, 404);
    assert.match(((await unknown.json()) as { message: string }).message, /unknown route "NotAnEvent"/);
  });

  it('accepts Site Flow on both routes, also without Content-Type, and counts the mismatch', async () => {
    const token = { 'X-Hookyard-Token': secretOf('siteflow-webhook', 'token') };
    for (const sample of samples.siteflow as Sample[])
      assert.equal((await send('siteflow', sample, token)).status, 200);
    const messages = await stored('siteflow');
    assert.deepEqual(
      messages.map((m) => m.subject.split('.').at(-1)),
      ['statusupdate', 'ordersubmissionerror'],
    );
    assert.equal(await metric('hookyard_receiver_content_type_mismatches_total', { endpoint: 'siteflow' }), 1);
    assert.equal(messages[1]?.header.get('Hookyard-Body-Kind'), 'json');
    assert.equal(messages[0]?.header.has('Hookyard-Body-Kind'), false);
    assert.equal(messages[0]?.header.has('Hookyard-Header-x-hookyard-token'), false, 'token header stored');
    assert.equal(messages[0]?.header.get('Hookyard-Header-user-agent') !== '', true);
    assert.equal((await send('siteflow', (samples.siteflow as Sample[])[0] as Sample)).status, 401);
  });

  it('verifies GitHub, Stripe, Shopify and Standard Webhooks signatures', async () => {
    const body = Buffer.from('{"id":"evt_1","type":"order.created"}');
    const token = secretOf('extra', 'token');
    const json = { 'content-type': 'application/json' };
    const cases: [string, Record<string, string>][] = [
      ['github', { ...providerSignature('github', token, body), 'X-GitHub-Event': 'push', 'X-GitHub-Delivery': 'd1' }],
      ['stripe', providerSignature('stripe', token, body)],
      [
        'shopify',
        {
          ...providerSignature('shopify', token, body),
          'X-Shopify-Topic': 'orders/create',
          'X-Shopify-Webhook-Id': 'w1',
        },
      ],
      ['sw', providerSignature('standard-webhooks', secretOf('extra', 'whsec'), body)],
    ];
    for (const [endpoint, headers] of cases) {
      assert.equal((await post(endpoint, body, { ...json, ...headers })).status, 200, endpoint);
      const tampered = Buffer.from(body.toString().replace('evt_1', 'evt_2'));
      assert.equal((await post(endpoint, tampered, { ...json, ...headers })).status, 401, `${endpoint} tampered`);
    }
    const shopifyStored = (await stored('shopify'))[0];
    assert.equal(shopifyStored?.subject, `hookyard.${namespace}.shopify.orders_create`);
  });

  it('checks Basic and bearer credentials', async () => {
    const basic = `Basic ${Buffer.from('printer:s3cret').toString('base64')}`;
    assert.equal((await post('basic', 'x', { authorization: basic })).status, 200);
    assert.equal(
      (await post('basic', 'x', { authorization: `Basic ${Buffer.from('printer:no').toString('base64')}` })).status,
      401,
    );
    assert.equal((await post('bearer', 'x', { authorization: 'Bearer extra-token' })).status, 200);
    assert.equal((await post('bearer', 'x', { authorization: 'Bearer extra-tokem' })).status, 401);
    const stored = (await streamMessages(jsm, endpointStream(namespace, 'bearer')))[0];
    assert.ok(stored, 'bearer request stored');
    assert.equal(stored.header.has('Hookyard-Header-authorization'), false);
  });

  it('refuses client mistakes with 4xx and a JSON body that says what is wrong', async () => {
    const json = { 'content-type': 'application/json' };
    const cases: [Promise<Response | import('undici').Response>, number, string][] = [
      [post('small', Buffer.alloc(2048, 'a'), json), 413, 'too_large'],
      [post('typed', '{"kind": ', json), 400, 'invalid_payload'],
      [post('typed', '{"other": 1}', json), 400, 'invalid_payload'],
      [post('typed', 'GIF89a', { 'content-type': 'image/gif' }), 415, 'unsupported_media_type'],
      [post('nope', '{}', json), 404, 'not_found'],
      [fetch(`${base}/typed`), 405, 'method_not_allowed'],
      [post('missing-secret', '{}', json), 503, 'unavailable'],
    ];
    for (const [request, status, error] of cases) {
      const res = await request;
      assert.equal(res.status, status, error);
      const body = (await res.json()) as { error: string; message: string };
      assert.equal(body.error, error);
      assert.ok(body.message.length > 0);
    }
  });

  it('refuses what could harm the event store, and never answers 5xx for it', async () => {
    const json = { 'content-type': 'application/json' };
    const long = await post('keyed', '{}', { ...json, 'X-Type': 'a'.repeat(5000) });
    assert.equal(long.status, 400);
    for (const name of ['toString', '__proto__', 'constructor']) {
      assert.equal((await post('keyed', `{"id":"${name}"}`, { ...json, 'X-Type': name })).status, 200, name);
    }
    // A body that fits the endpoint's limit but not one NATS message (max_payload, 1 MB by default).
    const nearlyMax = Buffer.alloc((nc.info?.max_payload ?? 1 << 20) - 1000, 'a');
    assert.equal((await post('open', nearlyMax, { 'content-type': 'text/plain' })).status, 413);
    const form = await post('typed', '__proto__=x&constructor=y&kind=k', {
      'content-type': 'application/x-www-form-urlencoded',
    });
    // Fields named like Object's own properties are plain fields: the type is read, nothing is polluted.
    assert.equal(form.status, 200);
    assert.equal((await stored('typed')).at(-1)?.header.get('Hookyard-Event-Type'), 'k');
    assert.equal(({} as Record<string, unknown>).x, undefined);
  });

  it('dedups on body fields only when all of them are there, and hashes otherwise', async () => {
    const json = { 'content-type': 'application/json', 'X-Type': 'old' };
    assert.equal((await post('keyed', '{"id":"1","time":"t1"}', json)).status, 200);
    assert.equal((await post('keyed', '{"id":"1","time":"t1","again":true}', json)).status, 200);
    assert.equal((await post('keyed', '{"id":"2"}', json)).status, 200);
    assert.equal((await post('keyed', '{"id":"2","other":1}', json)).status, 200);
    const messages = (await stored('keyed')).filter((m) => m.subject.endsWith('.new'));
    const ids = messages.map((m) => m.header.get('Nats-Msg-Id'));
    assert.equal(ids[0], 'new:1:t1');
    assert.equal(ids.length, 3, `stored: ${ids.join(', ')}`);
    assert.ok(ids.slice(1).every((id) => id.startsWith('new:sha256:')));
  });

  it('says which Secret is missing, never a secret value', async () => {
    const res = await post('missing-secret', '{}', { 'content-type': 'application/json' });
    const { message } = (await res.json()) as { message: string };
    assert.match(message, /Secret "nope" has no key "x"/);
    assert.equal(res.headers.get('retry-after'), '5');
  });

  it('refuses any change to a signed body or signature (property)', async () => {
    const secret = secretOf('extra', 'token');
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: 1, maxLength: 200 }),
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        async (bytes, at, flip) => {
          const body = Buffer.from(bytes);
          const headers: Record<string, string> = {
            ...providerSignature('github', secret, body),
            'X-GitHub-Event': 'push',
            'content-type': 'application/octet-stream',
          };
          const changed = Buffer.from(body);
          changed[at % changed.length] = (changed[at % changed.length] ?? 0) ^ flip;
          assert.equal((await post('github', changed, headers)).status, 401);
          const sig = headers['X-Hub-Signature-256'] as string;
          const i = 7 + (at % 64);
          const flipped = sig.slice(0, i) + (sig[i] === '0' ? '1' : '0') + sig.slice(i + 1);
          assert.equal((await post('github', body, { ...headers, 'X-Hub-Signature-256': flipped })).status, 401);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('never answers 5xx to malformed signatures or bodies (property)', async () => {
    const endpoints = ['github', 'proign', 'shopflix', 'sw', 'stripe', 'typed', 'fotoweb/order-approved'];
    const header = fc.string({ maxLength: 80 }).filter((s) => /^[\t\x20-\x7e]*$/.test(s));
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...endpoints),
        fc.oneof(
          fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
          fc.json().map((j) => Buffer.from(j)),
        ),
        fc.constantFrom(
          'application/json',
          'application/xml',
          'application/x-www-form-urlencoded; charset=latin1',
          'multipart/form-data; boundary=x',
          'text/plain',
        ),
        header,
        async (endpoint, body, contentType, signature) => {
          const res = await post(endpoint, body, {
            'content-type': contentType,
            'X-Hub-Signature-256': signature,
            'X-Proign-Signature': signature,
            'X-Data-Signature': signature,
            'webhook-signature': signature,
            'Stripe-Signature': signature,
            'x-forwarded-for': signature,
          });
          assert.ok(res.status < 500, `${endpoint}: ${res.status} ${await res.text()}`);
          await res.arrayBuffer().catch(() => {});
        },
      ),
      { numRuns: 150 },
    );
  });

  it('keeps the same bytes sent to two printIQ routes as two events', async () => {
    // printIQ sends an AcceptanceDetails object for CreateJob and for AcceptanceCreated, both when a quote is accepted.
    const token = secretOf('printiq-webhook', 'token');
    const body = Buffer.from('{"JobNo":"J200001","QuoteNo":"Q90001","Status":"Accepted"}');
    const json = { 'content-type': 'application/json' };
    for (const route of ['CreateJob', 'AcceptanceCreated', 'CreateJob']) {
      const res = await post(`printiq/${route}?token=${token}`, body, json);
      assert.equal(res.status, 200, route);
      await res.arrayBuffer();
    }
    const events = (await stored('printiq')).filter((m) => Buffer.from(m.data).equals(body));
    assert.deepEqual(
      events.map((m) => m.header.get('Hookyard-Event-Type')),
      ['CreateJob', 'AcceptanceCreated'],
    );
    assert.notEqual(events[0]?.header.get('Nats-Msg-Id'), events[1]?.header.get('Nats-Msg-Id'));
  });

  it('remembers a body hash for an hour, a provider id for a day (PROIGN: two, past its last retry), unless the endpoint says', async () => {
    const window = async (endpoint: string) =>
      (await jsm.streams.info(endpointStream(namespace, endpoint))).config.duplicate_window / 1e9;
    assert.equal(await window('open'), 3600, 'generic: body hash');
    assert.equal(await window('siteflow'), 3600, 'siteflow: body hash');
    assert.equal(await window('keyed'), 86_400, 'body fields');
    assert.equal(await window('proign'), 172_800, 'proign: its event id, past its last retry at 26 h 36 min');
  });

  it('refuses a body that says JSON or XML and does not parse with 400 saying what is wrong, storing nothing', async () => {
    const siteflowToken = { 'X-Hookyard-Token': secretOf('siteflow-webhook', 'token') };
    const printiqToken = secretOf('printiq-webhook', 'token');
    const invalidBefore = await metric('hookyard_receiver_requests_total', {
      endpoint: 'siteflow',
      outcome: 'invalid_payload',
    });
    const storedBefore = [(await stored('siteflow')).length, (await stored('printiq')).length];
    // A Site Flow trigger template with a trailing comma, with its Content-Type and without (read as JSON).
    const template = '{"orderId": "SF-1", "status": "shipped",}';
    const cases: [string, string, Record<string, string>, RegExp][] = [
      ['siteflow/statusupdate', template, { ...siteflowToken, 'content-type': 'application/json' }, /not valid JSON/],
      ['siteflow/ordersubmissionerror', template, siteflowToken, /not valid JSON/],
      [`printiq/CreateJob?token=${printiqToken}`, '{"JobNo": "J1"', { 'content-type': 'application/json' }, /JSON/],
      [
        `printiq/CreateJobXml?token=${printiqToken}`,
        '<AcceptanceDetails><JobNo>J1</AcceptanceDetails>',
        { 'content-type': 'application/xml' },
        /not valid XML/,
      ],
    ];
    for (const [path, body, headers, message] of cases) {
      const res = await post(path, body, headers);
      assert.equal(res.status, 400, path);
      const answer = (await res.json()) as { error: string; message: string };
      assert.equal(answer.error, 'invalid_payload', path);
      assert.match(answer.message, message, path);
    }
    assert.deepEqual([(await stored('siteflow')).length, (await stored('printiq')).length], storedBefore);
    assert.equal(
      await metric('hookyard_receiver_requests_total', { endpoint: 'siteflow', outcome: 'invalid_payload' }),
      (invalidBefore ?? 0) + 2,
    );
  });

  it('accepts exactly the bodies that parse as the kind they declare (property)', async () => {
    const token = { 'X-Hookyard-Token': secretOf('siteflow-webhook', 'token'), 'content-type': 'application/json' };
    const document = fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 5 });
    await fc.assert(
      fc.asyncProperty(document, fc.nat(), fc.boolean(), async (value, cut, whole) => {
        const text = JSON.stringify(value);
        // Any strict prefix of an object's JSON is not JSON: a template cut short.
        const body = whole ? text : text.slice(0, cut % text.length);
        const res = await post('siteflow/statusupdate', body, token);
        const answer = (await res.json()) as { status?: string; error?: string };
        if (whole) assert.ok(res.status === 200 && answer.status !== undefined, `${body}: ${res.status}`);
        else assert.deepEqual([res.status, answer.error], [400, 'invalid_payload'], body);
      }),
      { numRuns: 80 },
    );
  });

  it('verifies and publishes a signed Shopflix event that carries the test User-Agent', async () => {
    const sample = shopflix[1] as Sample;
    const body = Buffer.from(sample.body.toString().replace('GR--4004973--MER75', 'GR--4004974--MER75'));
    const ua = { 'User-Agent': 'Shopflix WebHook Test' };
    const before = (await stored('shopflix')).length;
    const forged = await send('shopflix', { ...sample, body }, { ...ua, 'X-Data-Signature': '00'.repeat(32) });
    assert.equal(forged.status, 401);
    const signed = providerSignature('shopflix', secretOf('shopflix-webhook', 'secret'), body);
    const res = await send('shopflix', { ...sample, body }, { ...ua, ...signed });
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { status: string }).status, 'accepted');
    const messages = await stored('shopflix');
    assert.equal(messages.length, before + 1);
    assert.deepEqual(Buffer.from(messages.at(-1)?.data ?? []), body);
  });

  it('answers parser errors with 400 and a JSON body, never 5xx or an error-level log line', async () => {
    const errorsBefore = errorLines().length;
    const printiqToken = secretOf('printiq-webhook', 'token');
    const xml = { 'content-type': 'application/xml' };
    const xmlPath = `printiq/CreateJobXml?token=${printiqToken}`;
    const bodies = [
      '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>',
      '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><r>&b;</r>',
      `${'<a>'.repeat(50_000)}${'</a>'.repeat(50_000)}`,
    ];
    // printIQ stores its XML without reading it; `typed` reads the event type from the body.
    for (const path of [xmlPath, 'typed'])
      for (const body of bodies) {
        const res = await post(path, body, xml);
        const answer = (await res.json()) as { error: string; message: string };
        assert.equal(res.status, 400, `${path} ${body.slice(0, 60)}: ${answer.message}`);
        assert.equal(answer.error, 'invalid_payload');
      }
    // JSON nested 50,000 deep, on an endpoint that re-serializes the body to check its signature (PROIGN).
    const deep = `{"id":"e","type":"t","data":${'['.repeat(50_000)}${']'.repeat(50_000)}}`;
    const res = await post('proign', deep, { 'content-type': 'application/json', 'X-Proign-Signature': 'sha256=00' });
    assert.equal(res.status, 400, await res.clone().text());
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_payload');
    assert.deepEqual(errorLines().slice(errorsBefore), []);
  });

  it('refuses oversized headers and malformed requests from the HTTP layer with a JSON body', async () => {
    const raw = async (request: string) => {
      const socket = netConnect(server.port, '127.0.0.1');
      socket.end(request);
      const chunks: Buffer[] = [];
      for await (const chunk of socket) chunks.push(chunk as Buffer);
      const text = Buffer.concat(chunks).toString();
      const [head = '', body = ''] = text.split('\r\n\r\n');
      return { status: Number(head.split(' ')[1]), head: head.toLowerCase(), body };
    };
    const cases: [string, number, string][] = [
      [
        `POST /hooks/${namespace}/open HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
        431,
        'headers_too_large',
      ],
      ['POST /hooks/x HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n', 400, 'bad_request'],
      ['NOT HTTP AT ALL\r\n\r\n', 400, 'bad_request'],
    ];
    for (const [request, status, error] of cases) {
      const answer = await raw(request);
      assert.equal(answer.status, status, error);
      assert.match(answer.head, /content-type: application\/json/);
      const body = JSON.parse(answer.body) as { error: string; message: string };
      assert.equal(body.error, error);
      assert.ok(body.message.length > 0);
    }
  });

  it('takes X-Proign-Retry-Count 0 as the first retry and logs the delivery id of a deduplicated retry', async () => {
    const secret = secretOf('proign-webhook', 'secret');
    const body = Buffer.from('{"id":"evt_retry1","type":"order.packed","data":{"order_id":"ord_9"}}');
    const headers = { 'content-type': 'application/json', ...providerSignature('proign', secret, body) };
    const retriesBefore = (await metric('hookyard_receiver_provider_retries_total', { endpoint: 'proign' })) ?? 0;
    assert.equal((await post('proign', body, { ...headers, 'X-Proign-Delivery-ID': 'dlv_a' })).status, 200);
    const retry = { ...headers, 'X-Proign-Delivery-ID': 'dlv_b', 'X-Proign-Retry-Count': '0' };
    const res = await post('proign', body, retry);
    assert.equal(((await res.json()) as { status: string }).status, 'duplicate');
    assert.equal(await metric('hookyard_receiver_provider_retries_total', { endpoint: 'proign' }), retriesBefore + 1);
    const line = logLines.find((l) => l.msg === 'duplicate not stored' && l.id === 'order.packed:evt_retry1');
    assert.ok(line, 'a log line for the duplicate');
    assert.equal(line.level, 30);
    assert.equal(line.deliveryId, 'dlv_b');
    assert.equal(line.retryCount, '0');
  });

  it('registers every series of every endpoint at zero before any request', async () => {
    const text = metricsBeforeTraffic;
    // As docs/receiver.md lists them.
    const outcomes = [
      'accepted',
      'duplicate',
      'bad_signature',
      'unauthorized',
      'invalid_payload',
      'too_large',
      'unsupported_media_type',
      'registration_check',
      'unavailable',
    ];
    const own = (name: string, endpoint: string) =>
      text
        .split('\n')
        .filter((l) => l.startsWith(`${name}{`) && l.includes(`namespace="${namespace}",endpoint="${endpoint}",`))
        .map((l) => l.slice(l.indexOf('{')))
        .sort();
    for (const e of config.endpoints) {
      const labels = `namespace="${namespace}",endpoint="${e.metadata.name}",provider="${e.spec.provider}"`;
      assert.deepEqual(
        own('hookyard_receiver_requests_total', e.metadata.name),
        outcomes.map((o) => `{${labels},outcome="${o}"} 0`).sort(),
        e.metadata.name,
      );
      for (const name of [
        'hookyard_receiver_content_type_mismatches_total',
        'hookyard_receiver_provider_retries_total',
        'hookyard_receiver_request_duration_seconds_count',
        'hookyard_receiver_publish_duration_seconds_count',
      ]) {
        assert.deepEqual(own(name, e.metadata.name), [`{${labels}} 0`], `${name} of ${e.metadata.name}`);
      }
    }
    assert.ok(!text.includes(secretOf('proign-webhook', 'secret')));
  });

  it('counts stored events by type, keeping at most 200 type labels per endpoint and counting the rest as other', async () => {
    const types = Array.from({ length: 205 }, (_, i) => `order.kind${i}`);
    for (const [i, type] of types.entries()) {
      const res = await post('many-types', `{"n":${i}}`, { 'content-type': 'application/json', 'X-Type': type });
      assert.equal(res.status, 200, type);
    }
    // A resend is a duplicate: not an event.
    assert.equal(
      (await post('many-types', '{"n":0}', { 'content-type': 'application/json', 'X-Type': 'order.kind0' })).status,
      200,
    );
    const text = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
    const counts = new Map(
      text
        .split('\n')
        .filter((l) => l.startsWith('hookyard_receiver_events_total{') && l.includes('endpoint="many-types"'))
        .map((l) => [/event_type="([^"]*)"/.exec(l)?.[1], Number(l.split(' ').pop())]),
    );
    assert.equal(counts.size, 201, 'the first 200 types and other');
    for (const type of types.slice(0, 200)) assert.equal(counts.get(type), 1, type);
    assert.equal(counts.get('other'), 5);
    assert.equal((await stored('many-types')).length, 205, 'every event is stored, whatever its label');
  });
});
