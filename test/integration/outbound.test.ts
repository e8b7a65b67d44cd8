// Outbound security through a real dispatcher, real nats-server and real receivers on loopback: a PROIGN-style
// receiver running the document's Express middleware as printed.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import express from 'express';
import { Registry } from 'prom-client';
import { type Dispatcher, startDispatcher } from '../../src/dispatcher/dispatcher.ts';
import { mapSecrets, type SecretStore } from '../../src/runtime/secrets.ts';
import { eventually, natsSetup, publishEvent, quietLogger, subscription, uniqueNames } from './dispatcher-support.ts';

const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** Runs a dispatcher for `spec` against `url` with these Secrets; resolves its registry's metric reader. */
async function dispatch(spec: Record<string, unknown>, secrets: SecretStore) {
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
    nc: nats.nc,
    registry,
    logger: quietLogger,
    fetchExpiresMs: 1000,
    statusIntervalMs: 100,
  });
  return {
    publish: (body: string) => publishEvent(nats.nc, names.namespace, names.endpoint, { type: 'order.shipped', body }),
  };
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  cleanups.push(() => new Promise((ok) => server.close(ok)));
  return (server.address() as AddressInfo).port;
}

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
    const bodies = [
      JSON.stringify({ id: 'evt_1', type: 'order.shipped', data: { note: 'compact' } }),
      JSON.stringify({ id: 'evt_2', type: 'order.shipped', data: { note: 'pretty' } }, null, 2),
      '{"id":"evt_3","type":"order.shipped","data":{"note":"\\u00e9scaped \\u2013 \\ud83d\\udce6","n":1.0}}',
      '{ "id": "evt_4", "type": "order.shipped", "data": { "note": "Zoë Ångström, Kraków 📦" } }',
    ];
    for (const body of bodies) await t.publish(body);
    // One attempt each: every event ends delivered or refused (then dead-lettered).
    await eventually(async () => verified.length + refused === bodies.length);
    assert.equal(refused, 0, 'no signature refused');
    assert.deepEqual(verified.sort(), ['compact', 'pretty', 'Zoë Ångström, Kraków 📦', 'éscaped – 📦'].sort());
  });
});
