// Outbound security through a real dispatcher, real nats-server and real receivers on loopback: a PROIGN-style
// receiver running the document's Express middleware as printed, and a node:https target that requires a client
// certificate signed by a CA made for the test with openssl.
import assert from 'node:assert/strict';
import { createHmac, generateKeyPairSync, randomBytes, verify } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import type { TLSSocket } from 'node:tls';
import express from 'express';
import { Registry } from 'prom-client';
import { Webhook } from 'standardwebhooks';
import { type Dispatcher, startDispatcher } from '../../src/dispatcher/dispatcher.ts';
import { renderSubscription, subscriptionConfigMapRefs, subscriptionSecretRefs } from '../../src/operator/render.ts';
import { mapSecrets, type SecretStore } from '../../src/runtime/secrets.ts';
import { makePki } from '../harness/pki.ts';
import {
  eventually,
  metricValue,
  natsSetup,
  publishEvent,
  quietLogger,
  type Received,
  startTarget,
  subscription,
  uniqueNames,
} from './dispatcher-support.ts';

const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** Runs a dispatcher for `spec` with these Secrets: publish events to it, read its metrics. */
async function dispatch(spec: Record<string, unknown>, secrets: SecretStore, configMaps?: SecretStore) {
  const names = uniqueNames('outbound');
  const nats = await natsSetup(names.namespace, names.endpoint);
  const registry = new Registry();
  let dispatcher: Dispatcher | undefined;
  cleanups.push(async () => {
    await dispatcher?.stop();
    await nats.nc.drain();
  });
  const sub = subscription(names, { ackWait: '5s', ...spec });
  dispatcher = await startDispatcher({
    subscription: sub,
    sources: [{ namespace: names.namespace, endpoint: names.endpoint, provider: 'proign' }],
    secrets,
    configMaps,
    nc: nats.nc,
    registry,
    logger: quietLogger,
    fetchExpiresMs: 1000,
    statusIntervalMs: 100,
  });
  return {
    publish: (body: string) => publishEvent(nats.nc, names.namespace, names.endpoint, { type: 'order.shipped', body }),
    metric: async (name: string) => metricValue(await registry.metrics(), name),
  };
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  cleanups.push(() => new Promise((ok) => server.close(ok)));
  return (server.address() as AddressInfo).port;
}

/** Bodies as senders write them: compact, pretty-printed, \u-escaped, and raw non-ASCII UTF-8. */
const bodies = [
  JSON.stringify({ id: 'evt_1', type: 'order.shipped', data: { note: 'compact' } }),
  JSON.stringify({ id: 'evt_2', type: 'order.shipped', data: { note: 'pretty' } }, null, 2),
  '{"id":"evt_3","type":"order.shipped","data":{"note":"\\u00e9scaped \\u2013 \\ud83d\\udce6","n":1.0}}',
  '{ "id": "evt_4", "type": "order.shipped", "data": { "note": "Zoë Ångström, Kraków 📦" } }',
];

describe('outbound signing, end to end', () => {
  it("scheme proign: PROIGN's own Express middleware accepts pretty-printed, escaped and non-ASCII bodies", async () => {
    const secret = 'proign-receiver-secret';
    const verified: string[] = [];
    let refused = 0;
    // From PROIGN's webhook document, as printed (its WEBHOOK_SECRET passed in).
    function verifyWebhook(payload: unknown, signature: string, secret: string) {
      const expected = createHmac('sha256', secret).update(JSON.stringify(payload)).digest('hex');
      return signature === `sha256=${expected}`;
    }
    const app = express();
    app.use(express.json());
    app.post('/webhooks/proign', (req, res) => {
      const signature = req.headers['x-proign-signature'] as string;
      if (!verifyWebhook(req.body, signature, secret)) {
        refused++;
        return res.status(401).send('Invalid signature');
      }
      verified.push(req.body.data.note);
      res.status(200).send('OK');
    });
    const port = await listen(createServer(app));
    const t = await dispatch(
      {
        target: { url: `http://127.0.0.1:${port}/webhooks/proign`, timeout: '2s' },
        signing: { scheme: 'proign', secretRefs: [{ name: 'proign', key: 'secret' }] },
        retry: { maxAttempts: 1 },
      },
      mapSecrets({ proign: { secret: Buffer.from(`${secret}\n`) } }),
    );
    for (const body of bodies) await t.publish(body);
    // One attempt each: every event ends delivered or refused (then dead-lettered).
    await eventually(async () => verified.length + refused === bodies.length);
    assert.equal(refused, 0, 'no signature refused');
    assert.deepEqual(verified.sort(), ['compact', 'pretty', 'Zoë Ångström, Kraków 📦', 'éscaped – 📦'].sort());
  });

  it('schemes standardWebhooks (v1 and v1a), stripe and hmac: the bytes the target got verify as each scheme checks', async () => {
    const whsec = `whsec_${randomBytes(24).toString('base64')}`;
    const ed = generateKeyPairSync('ed25519');
    const whsk = `whsk_${Buffer.from(ed.privateKey.export({ format: 'jwk' }).d as string, 'base64url').toString('base64')}`;
    const secrets = mapSecrets({
      signing: { whsec: Buffer.from(whsec), whsk: Buffer.from(whsk), key: Buffer.from('k-1') },
    });
    /** Each scheme's receiver-side check, written from its documentation, on what arrived. */
    const checks = {
      standardWebhooks: (r: Received) => {
        const headers = Object.fromEntries(
          ['webhook-id', 'webhook-timestamp', 'webhook-signature'].map((h) => [h, String(r.headers[h])]),
        );
        new Webhook(whsec).verify(r.body.toString(), headers); // throws unless v1 verifies
        const content = Buffer.concat([
          Buffer.from(`${headers['webhook-id']}.${headers['webhook-timestamp']}.`),
          r.body,
        ]);
        return headers['webhook-signature']
          ?.split(' ')
          .some((e) => e.startsWith('v1a,') && verify(null, content, ed.publicKey, Buffer.from(e.slice(4), 'base64')));
      },
      stripe: (r: Received) => {
        const items = String(r.headers['stripe-signature'])
          .split(',')
          .map((item) => item.split('='));
        const t = items.find(([k]) => k === 't')?.[1];
        const expected = createHmac('sha256', 'k-1').update(`${t}.`).update(r.body).digest('hex');
        return items.some(([k, v]) => k === 'v1' && v === expected);
      },
      hmac: (r: Received) =>
        r.headers['x-hookyard-signature'] === `sha256=${createHmac('sha256', 'k-1').update(r.body).digest('hex')}`,
    };
    for (const [scheme, check] of Object.entries(checks)) {
      const target = await startTarget();
      cleanups.push(() => target.close());
      const keys = scheme === 'standardWebhooks' ? ['whsec', 'whsk'] : ['key'];
      const t = await dispatch(
        {
          target: { url: target.url, timeout: '2s' },
          signing: { scheme, secretRefs: keys.map((key) => ({ name: 'signing', key })) },
        },
        secrets,
      );
      for (const body of bodies) await t.publish(body);
      await eventually(() => target.received.length >= bodies.length);
      assert.deepEqual(
        target.received.map((r) => r.body.toString()).sort(),
        [...bodies].sort(),
        'the bytes as received',
      );
      for (const r of target.received) assert.ok(check(r), `${scheme} does not verify ${r.body}`);
    }
  });
});

describe('target.tls, end to end', () => {
  const pki = makePki();
  const secrets = mapSecrets({
    'orders-client': { 'tls.crt': pki.client.cert, 'tls.key': pki.client.key },
    'stranger-client': { 'tls.crt': pki.strangerClient.cert, 'tls.key': pki.strangerClient.key },
    'orders-ca': { 'ca.crt': pki.ca },
    'other-ca': { 'ca.crt': pki.otherCa },
  });

  /** An HTTPS target that requires a client certificate signed by the test CA; counts what it refuses. */
  async function mtlsTarget() {
    const accepted: string[] = [];
    let refusedHandshakes = 0;
    const server = createHttpsServer(
      { ...pki.server, ca: [pki.ca], requestCert: true, rejectUnauthorized: true },
      (req, res) => {
        const peer = (req.socket as TLSSocket).getPeerCertificate();
        accepted.push(`${peer.subject.CN} from ${peer.issuer.CN}`);
        res.end('ok');
      },
    );
    server.on('tlsClientError', () => refusedHandshakes++);
    const port = await listen(server);
    return {
      url: `https://127.0.0.1:${port}/hooks`,
      accepted,
      get refusedHandshakes() {
        return refusedHandshakes;
      },
    };
  }

  const configMaps = mapSecrets({ 'orders-ca': { 'ca.crt': pki.ca } });
  const deliver = async (url: string, tls: Record<string, unknown>) => {
    const t = await dispatch(
      { target: { url, timeout: '2s', tls }, retry: { maxAttempts: 1 }, deadLetter: { maxAge: '1h' } },
      secrets,
      configMaps,
    );
    await t.publish('{"id":"evt_tls","type":"order.shipped"}');
    const count = (name: string) => t.metric(`hookyard_dispatcher_${name}_total`);
    /** The one event's one attempt is over: delivered or dead-lettered. */
    const settled = () => eventually(async () => (await count('delivered')) + (await count('dead_letters')) === 1);
    return { ...t, settled };
  };

  it('presents the client certificate from its Secret and trusts the CA bundle: the target accepts it', async () => {
    const ref = { name: 'orders-ca', key: 'ca.crt' };
    for (const caBundle of [{ secretKeyRef: ref }, { configMapKeyRef: ref }]) {
      const target = await mtlsTarget();
      const t = await deliver(target.url, { clientCertificate: { secretName: 'orders-client' }, caBundle });
      await t.settled();
      assert.equal(await t.metric('hookyard_dispatcher_delivered_total'), 1, JSON.stringify(caBundle));
      assert.deepEqual(target.accepted, ['hookyard-dispatcher from ca']);
    }
  });

  it('a target that requires a client certificate refuses a missing one and one from another CA', async () => {
    for (const clientCertificate of [undefined, { secretName: 'stranger-client' }]) {
      const target = await mtlsTarget();
      const t = await deliver(target.url, {
        ...(clientCertificate ? { clientCertificate } : {}),
        caBundle: { secretKeyRef: { name: 'orders-ca', key: 'ca.crt' } },
      });
      await t.settled();
      assert.equal(await t.metric('hookyard_dispatcher_dead_letters_total'), 1, 'dead-lettered after its one attempt');
      assert.deepEqual(target.accepted, [], 'no request got through');
      assert.ok(target.refusedHandshakes >= 1, 'the target refused the handshake');
    }
  });

  it('does not start with a client key of another certificate or a CA bundle that is not PEM, naming only the objects', async () => {
    const bad = mapSecrets({
      mismatched: { 'tls.crt': pki.client.cert, 'tls.key': pki.strangerClient.key },
      'not-pem': { 'ca.crt': Buffer.from('secret-looking bytes, not a certificate') },
    });
    const start = (tls: Record<string, unknown>) =>
      dispatch({ target: { url: 'https://127.0.0.1:9/hooks', timeout: '2s', tls }, deadLetter: { maxAge: '1h' } }, bad);
    const refused = async (tls: Record<string, unknown>, object: RegExp) => {
      const err = await start(tls).then(
        () => assert.fail('started'),
        (e: Error) => e,
      );
      assert.equal(err.name, 'InvalidTlsMaterial', err.message);
      assert.match(err.message, object);
      assert.doesNotMatch(err.message, /BEGIN|secret-looking/, 'no bytes of the material');
    };
    await refused({ clientCertificate: { secretName: 'mismatched' } }, /Secret "mismatched" \(tls\.crt, tls\.key\)/);
    await refused({ caBundle: { secretKeyRef: { name: 'not-pem', key: 'ca.crt' } } }, /Secret "not-pem" \(ca\.crt\)/);
  });

  it('refuses a target whose certificate the CA bundle does not vouch for', async () => {
    const target = await mtlsTarget();
    const t = await deliver(target.url, {
      clientCertificate: { secretName: 'orders-client' },
      caBundle: { secretKeyRef: { name: 'other-ca', key: 'ca.crt' } },
    });
    await t.settled();
    assert.equal(await t.metric('hookyard_dispatcher_dead_letters_total'), 1, 'dead-lettered after its one attempt');
    assert.deepEqual(target.accepted, []);
  });
});

describe('target.tls in the rendered dispatcher', () => {
  it("mounts the client certificate's tls.crt and tls.key and the CA bundle's key, so their rotation rolls the pods", () => {
    const sub = subscription(uniqueNames('render'), {
      target: {
        url: 'https://orders.example.com/hooks',
        tls: {
          clientCertificate: { secretName: 'orders-client' },
          caBundle: { secretKeyRef: { name: 'orders-ca', key: 'ca.crt' } },
        },
      },
    });
    // The same list decides SecretsResolved, the checksum in the pod template and which Secret changes wake it.
    assert.deepEqual(subscriptionSecretRefs(sub.spec), [
      { name: 'orders-client', key: 'tls.crt' },
      { name: 'orders-client', key: 'tls.key' },
      { name: 'orders-ca', key: 'ca.crt' },
    ]);
    const { deployment } = renderSubscription(sub, [], { image: 'hookyard:test', natsUrl: 'nats://nats:4222' });
    const volume = deployment.spec?.template.spec?.volumes?.find((v) => v.name === 'secrets');
    const mounted = volume?.projected?.sources?.flatMap((s) => s.secret?.items?.map((i) => i.path) ?? []);
    assert.deepEqual(mounted, ['orders-client/tls.crt', 'orders-client/tls.key', 'orders-ca/ca.crt']);
    assert.equal(
      deployment.spec?.template.spec?.volumes?.find((v) => v.name === 'configmaps'),
      undefined,
    );
    const fromConfigMap = subscription(uniqueNames('render'), {
      target: {
        url: 'https://orders.example.com/hooks',
        tls: { caBundle: { configMapKeyRef: { name: 'orders-ca', key: 'ca.crt' } } },
      },
    });
    assert.deepEqual(subscriptionConfigMapRefs(fromConfigMap.spec), [{ name: 'orders-ca', key: 'ca.crt' }]);
    const pod = renderSubscription(fromConfigMap, [], { image: 'hookyard:test', natsUrl: 'nats://nats:4222' })
      .deployment.spec?.template.spec;
    const configMapsVolume = pod?.volumes?.find((v) => v.name === 'configmaps');
    assert.deepEqual(configMapsVolume?.projected?.sources, [
      { configMap: { name: 'orders-ca', items: [{ key: 'ca.crt', path: 'orders-ca/ca.crt' }] } },
    ]);
    const args = pod?.containers[0]?.args ?? [];
    assert.equal(args[args.indexOf('--config-maps-dir') + 1], '/etc/hookyard/configmaps');
    const rolled = (checksum: string) =>
      renderSubscription(sub, [], { image: 'hookyard:test', natsUrl: 'nats://nats:4222', secretsChecksum: checksum })
        .deployment.spec?.template.metadata?.annotations?.['hookyard.io/config-checksum'];
    assert.notEqual(rolled('before rotation'), rolled('after rotation'));
  });
});
