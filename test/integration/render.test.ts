// The objects the operator will apply: accepted by a real kube-apiserver, and runnable as written. The receiver
// and dispatcher are started as local processes from their Deployments' args with the ConfigMaps and Secrets laid
// out as Kubernetes mounts them (there is no kubelet here), and a signed webhook goes through to a target.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type * as k8s from '@kubernetes/client-node';
import { stringify } from 'yaml';
import type { ProviderEndpoint } from '../../src/api/provider-endpoint.ts';
import { parseResource } from '../../src/api/validate.ts';
import type { WebhookSubscription } from '../../src/api/webhook-subscription.ts';
import { sendSample } from '../../src/dev/send.ts';
import { endpointStreamConfig, ensureStream } from '../../src/jetstream/streams.ts';
import { renderEndpoint, renderSubscription } from '../../src/operator/render.ts';
import { samples } from '../../src/providers/samples.ts';
import { freePort } from '../../src/runtime/net.ts';
import type { CliProcess } from '../harness/cli.ts';
import { exampleDocuments, namesOf } from '../harness/examples.ts';
import { createNamespace, installCRDs, kubectl, requireEnv } from '../harness/kube.ts';
import { testNats } from '../harness/nats.ts';
import { root, tempDir } from '../harness/servers.ts';
import { runDeployment } from '../harness/workloads.ts';

describe('rendered workloads', () => {
  const work = tempDir('hookyard-render-');
  const children: CliProcess[] = [];
  after(() => {
    for (const c of children) c.kill('SIGKILL');
    work.remove();
  });
  const docs = exampleDocuments();
  const secretData = (name: string) =>
    docs.find((d) => d.doc.kind === 'Secret' && d.doc.metadata.name === name)?.doc.stringData as Record<string, string>;
  const options = { image: 'hookyard:test', natsUrl: requireEnv('HOOKYARD_TEST_NATS_URL') };

  it('are accepted by the API server for every example', async () => {
    await installCRDs();
    const namespace = await createNamespace('render');
    assert.equal((await kubectl(['apply', '--server-side', '-n', namespace, '-f', join(root, 'examples')])).code, 0);
    const objects: object[] = [];
    for (const kind of ['providerendpoints', 'webhooksubscriptions']) {
      const list = JSON.parse((await kubectl(['get', kind, '-n', namespace, '-o', 'json'])).stdout) as {
        items: unknown[];
      };
      for (const item of list.items) {
        const resource = parseResource(item);
        if (resource.kind === 'ProviderEndpoint') {
          const o = renderEndpoint(resource, options);
          objects.push(o.configMap, o.deployment, o.service, ...(o.ingress ? [o.ingress] : []));
        } else {
          const o = renderSubscription(resource, [{ namespace, endpoint: 'proign', provider: 'proign' }], options);
          objects.push(o.configMap, o.deployment);
        }
      }
    }
    const r = await kubectl(
      ['apply', '--server-side', '--field-manager=hookyard-operator', '-f', '-'],
      objects.map((o) => stringify(o)).join('---\n'),
    );
    assert.equal(r.code, 0, r.stderr);
    const deployments = await kubectl([
      'get',
      'deployments',
      '-n',
      namespace,
      '-o',
      'jsonpath={.items[*].metadata.ownerReferences[0].kind}',
    ]);
    const owners = deployments.stdout.split(' ');
    for (const kind of ['ProviderEndpoint', 'WebhookSubscription']) {
      assert.equal(owners.filter((k) => k === kind).length, namesOf(docs, kind).length, kind);
    }
  });

  it('run as their Deployments say: a signed PROIGN event reaches the target, signed for it', async () => {
    const received: { headers: Record<string, string | string[] | undefined>; body: Buffer }[] = [];
    const target = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req
        .on('data', (c) => chunks.push(c))
        .on('end', () => {
          received.push({ headers: req.headers, body: Buffer.concat(chunks) });
          res.writeHead(200).end();
        });
    });
    await new Promise<void>((ok) => target.listen(0, '127.0.0.1', ok));
    after(() => target.close());
    const find = (kind: string, name: string) =>
      docs.find((d) => d.doc.kind === kind && d.doc.metadata.name === name)?.doc;
    const endpoint = parseResource({
      ...find('ProviderEndpoint', 'proign'),
      metadata: { name: 'proign', namespace: 'shop' },
    }) as ProviderEndpoint;
    const sub = find('WebhookSubscription', 'proign-shipments') as unknown as WebhookSubscription;
    const subscription = parseResource({
      ...sub,
      metadata: { name: 'proign-shipments', namespace: 'shop' },
      spec: { ...sub.spec, target: { url: `http://127.0.0.1:${(target.address() as { port: number }).port}/hook` } },
    }) as WebhookSubscription;
    const { jsm, nc } = await testNats();
    await ensureStream(jsm, endpointStreamConfig('shop', 'proign', endpoint.spec));
    await nc.close();

    const receiverPort = await freePort();
    const receiver = renderEndpoint(endpoint, options);
    const dispatcher = renderSubscription(
      subscription,
      [{ namespace: 'shop', endpoint: 'proign', provider: 'proign' }],
      options,
    );
    const start = async (d: k8s.V1Deployment, configMap: k8s.V1ConfigMap, port: number) => {
      children.push(await runDeployment(d, configMap, secretData, port, work.path));
    };
    await start(receiver.deployment, receiver.configMap, receiverPort);
    await start(dispatcher.deployment, dispatcher.configMap, await freePort());

    const sample = samples.proign?.[0];
    assert.ok(sample);
    const url = `http://127.0.0.1:${receiverPort}${receiver.url}`;
    const sent = await sendSample('proign', url, sample, { secret: secretData('proign-webhook').secret });
    assert.equal(sent.status, 200, sent.body);
    for (let i = 0; i < 200 && received.length === 0; i++) await sleep(50);
    const [delivery] = received;
    assert.ok(delivery, 'nothing arrived at the target');
    assert.deepEqual(delivery.body, sample.body);
    const key = secretData('fulfillment-signing').key ?? '';
    const expected = `sha256=${createHmac('sha256', key).update(delivery.body).digest('hex')}`;
    assert.equal(delivery.headers['x-hookyard-signature'], expected);
  });
});
