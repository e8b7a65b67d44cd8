// The real node itself (test/harness/node/): Ready, a Deployment of a project image runs under the chart's pod
// security, a request from the host reaches it through a Service and the Ingress on the node address, and cluster
// DNS answers for Services and for nothing outside the cluster.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fetch } from 'undici';
import { createNamespace, kubectl, requireEnv } from '../harness/kube.ts';
import { apply, eventually, images, ingressUrl, recorded, restricted, rolledOut, sinkManifests } from './support.ts';

describe('the real node', () => {
  it('is Ready', async () => {
    const r = await kubectl(['wait', '--for=condition=Ready', 'node', '--all', '--timeout=60s']);
    assert.equal(r.code, 0, r.stderr);
  });

  it('runs a Deployment of the sink image and routes a request from the host to it through the Ingress', async () => {
    const namespace = await createNamespace('e2e-node');
    await apply(sinkManifests(namespace, 'sink', `/${namespace}`));
    await rolledOut(namespace, 'sink');
    const url = `${ingressUrl()}/${namespace}/hello?x=1`;
    // Traefik applies the Ingress a moment after it exists: 404 until then.
    const res = await eventually('the Ingress route', async () => {
      const r = await fetch(url, { method: 'POST', body: 'ping', headers: { 'content-type': 'text/plain' } });
      return r.status === 404 ? undefined : r;
    });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { recorded: true });
    const [request, ...more] = await recorded(namespace, 'sink');
    assert.equal(more.length, 0);
    assert.equal(request?.method, 'POST');
    assert.equal(request?.url, `/${namespace}/hello?x=1`);
    assert.equal(request?.body, 'ping');
    assert.equal(request?.headers['x-forwarded-for'], requireEnv('HOOKYARD_E2E_HOST_IP'), 'sent from the host');
  });

  it('resolves Services by their cluster DNS name in pods, and no name outside the cluster', async () => {
    const namespace = await createNamespace('e2e-dns');
    const script = `const dns = require('node:dns').promises;
(async () => {
  const inCluster = await dns.lookup('kubernetes.default.svc.cluster.local');
  const outside = await dns.lookup('example.com').then((a) => a.address, (e) => e.code);
  console.log(JSON.stringify({ inCluster: inCluster.address, outside }));
})();`;
    await apply(`apiVersion: batch/v1
kind: Job
metadata: {name: lookup, namespace: ${namespace}}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      securityContext: ${JSON.stringify(restricted.pod)}
      containers:
        - name: lookup
          image: ${images().hookyard.ref}
          imagePullPolicy: Never
          command: [/nodejs/bin/node, -e, ${JSON.stringify(script)}]
          securityContext: ${JSON.stringify(restricted.container)}
`);
    const done = await kubectl(['-n', namespace, 'wait', '--for=condition=Complete', 'job/lookup', '--timeout=90s']);
    assert.equal(done.code, 0, done.stderr);
    const logs = await kubectl(['-n', namespace, 'logs', 'job/lookup']);
    const answer = JSON.parse(logs.stdout) as { inCluster: string; outside: string };
    assert.equal(answer.inCluster, '10.213.128.1', 'the kubernetes Service');
    assert.match(answer.outside, /^E[A-Z_]+$/, 'example.com resolves to nothing: CoreDNS has no forward plugin');
  });
});
