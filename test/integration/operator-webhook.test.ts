// The operator's admission webhook over HTTPS: it admits every example and a valid change, refuses what the API
// server's CEL cannot check (a filter that does not compile), and serves a renewed certificate without a restart,
// as cert-manager renews it in the mounted Secret.
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect } from 'node:tls';
import { Agent } from 'undici';
import { freePort } from '../../src/runtime/net.ts';
import { exampleDocuments } from '../harness/examples.ts';
import { createNamespace } from '../harness/kube.ts';
import { servingCertificate, tempDir } from '../harness/servers.ts';
import { reviewCreate, startOperator } from '../harness/workloads.ts';

/** The fingerprint of the certificate a TLS server on the port presents. */
const servedFingerprint = (port: number) =>
  new Promise<string>((ok, fail) => {
    const socket = connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      ok(socket.getPeerCertificate().fingerprint256);
      socket.end();
    }).once('error', fail);
  });

describe('operator admission webhook', () => {
  const work = tempDir('hookyard-webhook-');
  after(() => work.remove());

  it('admits every example and a valid change, refuses a filter that does not compile, and serves a renewed certificate', async () => {
    const dir = join(work.path, 'serving');
    const first = servingCertificate(dir);
    const port = await freePort();
    const operator = await startOperator('operator-webhook', [
      '--namespaces',
      await createNamespace('webhook'),
      '--no-leader-election',
      '--webhook-port',
      String(port),
      '--webhook-cert-dir',
      dir,
      '--webhook-cert-reload',
      '200ms',
    ]);
    after(() => operator.stop());

    const dispatcher = new Agent({ connect: { ca: readFileSync(first.caFile) } });
    const subscription = {
      apiVersion: 'hookyard.io/v1alpha1',
      kind: 'WebhookSubscription',
      metadata: { name: 'orders', namespace: 'shop' },
      spec: { sources: [{ endpoint: 'shopflix' }], filter: 'body.total >', target: { url: 'http://orders.shop.svc' } },
    };
    const url = `https://127.0.0.1:${port}/validate`;
    const resources = exampleDocuments().filter((d) => d.doc.kind !== 'Secret');
    assert.ok(resources.length > 0);
    for (const { file, doc } of resources) {
      const admitted = await reviewCreate(url, dispatcher, {
        ...doc,
        metadata: { ...doc.metadata, namespace: 'shop' },
      });
      assert.equal(admitted.response.allowed, true, `${file}: ${doc.kind}/${doc.metadata.name}`);
    }
    const valid = { ...subscription, spec: { ...subscription.spec, filter: 'body.total > 10' } };
    const changed = { ...valid, spec: { ...valid.spec, filter: 'body.total > 20' } };
    assert.equal((await reviewCreate(url, dispatcher, changed, valid)).response.allowed, true, 'a valid change');
    const broken = await reviewCreate(url, dispatcher, subscription, valid);
    assert.equal(broken.response.allowed, false, 'a change that breaks the filter');
    const answer = await reviewCreate(url, dispatcher, subscription);
    assert.equal(answer.response.allowed, false);
    assert.match(answer.response.status?.message ?? '', /filter/);
    // A replay request (an annotation, beyond any schema) is checked here too, with what to type.
    const replaying = (request: string) => ({
      ...valid,
      metadata: { ...valid.metadata, annotations: { 'hookyard.io/replay': request } },
    });
    const badReplay = await reviewCreate(url, dispatcher, replaying('{"id":"r1"}'), valid);
    assert.equal(badReplay.response.allowed, false, 'a replay request that names nothing');
    assert.match(
      badReplay.response.status?.message ?? '',
      /set exactly one of deadLetters, eventIds, since, purgeDeadLetters and test/,
    );
    const goodReplay = await reviewCreate(url, dispatcher, replaying('{"id":"r1","deadLetters":true}'), valid);
    assert.equal(goodReplay.response.allowed, true, 'a replay of the dead letters');

    const original = await servedFingerprint(port);
    const renewed = servingCertificate(join(work.path, 'renewed'));
    copyFileSync(renewed.keyFile, join(dir, 'tls.key'));
    copyFileSync(renewed.certFile, join(dir, 'tls.crt'));
    let served = original;
    for (let i = 0; i < 100 && served === original; i++) {
      await sleep(100);
      served = await servedFingerprint(port);
    }
    assert.notEqual(served, original, 'the renewed certificate is not served');
  });
});
