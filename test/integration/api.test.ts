// The CRDs and the admission webhook against a real kube-apiserver: what `kubectl apply` does for a user.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { badResources, misleading } from '../fixtures/bad-resources.ts';
import { exampleDocuments, namesOf } from '../harness/examples.ts';
import { createNamespace, installAdmissionWebhook, installCRDs, kubectl } from '../harness/kube.ts';
import { root } from '../harness/servers.ts';
import { waitFor } from '../harness/wait.ts';

describe('API against a real kube-apiserver', () => {
  let namespace: string;
  let removeWebhook: () => Promise<void>;

  before(async () => {
    await installCRDs();
    removeWebhook = await installAdmissionWebhook();
    namespace = await createNamespace('api');
  });
  after(async () => {
    await removeWebhook?.();
  });

  it('accepts every example with a server-side apply', async () => {
    const r = await kubectl(['apply', '--server-side', '-n', namespace, '-f', join(root, 'examples')]);
    assert.equal(r.code, 0, r.stderr);
    const docs = exampleDocuments();
    const names = async (resource: string) =>
      (await kubectl(['get', resource, '-n', namespace, '-o', 'jsonpath={.items[*].metadata.name}'])).stdout
        .split(' ')
        .sort();
    assert.deepEqual(await names('pe'), namesOf(docs, 'ProviderEndpoint'));
    assert.deepEqual(await names('wsub'), namesOf(docs, 'WebhookSubscription'));
    assert.deepEqual(await names('secrets'), namesOf(docs, 'Secret'));
  });

  it('fills in defaults', async () => {
    const r = await kubectl(['get', 'wsub', 'shopflix-orders', '-n', namespace, '-o', 'json']);
    const spec = JSON.parse(r.stdout).spec;
    assert.equal(spec.target.timeout, '30s');
    assert.equal(spec.ackWait, '2m');
    assert.equal(spec.retry.maxAttempts, 8);
    assert.deepEqual(spec.retry.retryableStatusCodes, ['408', '429', '5xx']);
    assert.equal(spec.target.service.port, 8080);
    const pe = JSON.parse((await kubectl(['get', 'pe', 'shopflix', '-n', namespace, '-o', 'json'])).stdout).spec;
    assert.equal(pe.receiver.replicas, 2);
    assert.equal(pe.stream.deletionPolicy, 'Delete');
  });

  it('shows the printer columns', async () => {
    const r = await kubectl(['get', 'providerendpoints', '-n', namespace]);
    assert.match(r.stdout.split('\n')[0] ?? '', /NAME\s+PROVIDER\s+READY\s+REASON\s+URL\s+AGE/);
    const s = await kubectl(['get', 'webhooksubscriptions', '-n', namespace]);
    assert.match(s.stdout.split('\n')[0] ?? '', /NAME\s+READY\s+REASON\s+TARGET\s+PAUSED\s+PENDING\s+DEAD\s+AGE/);
    const paused = s.stdout.split('\n').find((line) => line.startsWith('shopflix-orders '));
    assert.match(paused ?? '', /\sfalse\s/, 'the Paused column shows spec.paused');
  });

  it('describes every field in kubectl explain, and marks verification required', async () => {
    for (const field of ['webhooksubscription.spec.target.service.port', 'providerendpoint.status.conditions.reason']) {
      // The API server publishes a CRD's OpenAPI, which kubectl explain reads, a moment after it is Established.
      const r = await waitFor(`kubectl explain ${field}`, async () => {
        const explained = await kubectl(['explain', field]);
        return explained.code === 0 || !explained.stderr.includes("couldn't find resource") ? explained : undefined;
      });
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(r.stdout, /<empty>|<no description>/, field);
    }
    // Every field the API server serves, spec and status, has a description for kubectl explain to show.
    const undescribed: string[] = [];
    const spec = await kubectl(['explain', 'providerendpoint.spec']);
    assert.match(spec.stdout, /verification\s+<\[\]Object> -required-/);
    const crds = JSON.parse(
      (await kubectl(['get', 'crd', '-l', 'app.kubernetes.io/part-of=hookyard', '-o', 'json'])).stdout,
    );
    const walk = (node: Record<string, unknown>, path: string) => {
      const properties = (node.properties ?? {}) as Record<string, Record<string, unknown>>;
      for (const [name, child] of Object.entries(properties)) {
        if (!child.description) undescribed.push(`${path}.${name}`);
        walk(child, `${path}.${name}`);
      }
      if (node.items) walk(node.items as Record<string, unknown>, `${path}[]`);
    };
    for (const crd of crds.items) {
      const root = crd.spec.versions[0].schema.openAPIV3Schema;
      for (const part of ['spec', 'status']) walk(root.properties[part], `${crd.spec.names.kind}.${part}`);
    }
    assert.deepEqual(undescribed, []);
  });

  it("refuses a change of an endpoint's stream storage, which JetStream cannot make", async () => {
    const endpoint = (storage: string) => `
apiVersion: hookyard.io/v1alpha1
kind: ProviderEndpoint
metadata: { name: storage-kept, namespace: ${namespace} }
spec: { provider: generic, verification: [{ none: true }], stream: { storage: ${storage} } }
`;
    const created = await kubectl(['apply', '--server-side', '-f', '-'], endpoint('memory'));
    assert.equal(created.code, 0, created.stderr);
    const changed = await kubectl(['apply', '--server-side', '-f', '-'], endpoint('file'));
    assert.notEqual(changed.code, 0, `applied: ${changed.stdout}`);
    assert.match(changed.stderr, /spec\.stream\.storage/);
    assert.match(changed.stderr, /stream\.storage cannot be changed/);
    const again = await kubectl(['apply', '--server-side', '-f', '-'], endpoint('memory'));
    assert.equal(again.code, 0, again.stderr);
  });

  it("refuses removing a subscription's ordering, which its pinned consumers cannot undo, and changing its key", async () => {
    const sub = (ordering: string) => `
apiVersion: hookyard.io/v1alpha1
kind: WebhookSubscription
metadata: { name: ordering-kept, namespace: ${namespace} }
spec: { sources: [{ endpoint: shop }], target: { url: "http://orders.shop.svc:8080/hooks" }${ordering} }
`;
    const created = await kubectl(['apply', '--server-side', '-f', '-'], sub(', ordering: { key: body.order_id }'));
    assert.equal(created.code, 0, created.stderr);
    const removed = await kubectl(['apply', '--server-side', '-f', '-'], sub(''));
    assert.notEqual(removed.code, 0, `applied: ${removed.stdout}`);
    assert.match(removed.stderr, /ordering cannot be removed/);
    const changed = await kubectl(['apply', '--server-side', '-f', '-'], sub(', ordering: { key: body.id }'));
    assert.notEqual(changed.code, 0, `applied: ${changed.stdout}`);
    assert.match(changed.stderr, /ordering\.key cannot be changed/);
    const same = await kubectl(
      ['apply', '--server-side', '-f', '-'],
      sub(', ordering: { key: body.order_id, onDeadLetter: Continue }'),
    );
    assert.equal(same.code, 0, same.stderr);
  });

  for (const bad of badResources) {
    it(`refuses ${bad.name}`, async () => {
      const name = bad.keepName ? (bad.manifest.metadata as { name: string }).name : 'bad';
      const manifest = { ...bad.manifest, metadata: { name, namespace } };
      const r = await kubectl(['apply', '--server-side', '-f', '-'], stringify(manifest));
      assert.notEqual(r.code, 0, `applied: ${r.stdout}`);
      assert.ok(r.stderr.includes(bad.field), `does not name ${bad.field}: ${r.stderr}`);
      for (const words of [bad.message, bad.apiServer]) {
        if (words) assert.ok(r.stderr.includes(words), `does not say "${words}": ${r.stderr}`);
      }
      for (const words of misleading) assert.ok(!r.stderr.includes(words), `says "${words}": ${r.stderr}`);
    });
  }
});
