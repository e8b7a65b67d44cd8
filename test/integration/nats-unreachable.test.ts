// A wrong or unreachable NATS URL, as in a pod with a typo in nats.url: each process logs every failed attempt
// with the URL (never its credentials) and the error, answers health and metrics at once (the operator also its
// admission webhook, which needs no NATS), reports not ready with the reason, and recovers once NATS is there.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent } from 'undici';
import { stringify } from 'yaml';
import { type CliProcess, runCli, sourceCli } from '../harness/cli.ts';
import { exampleDoc } from '../harness/examples.ts';
import { createNamespace, installCRDs } from '../harness/kube.ts';
import { freePort, root, servingCertificate, startNats, tempDir } from '../harness/servers.ts';
import { reviewCreate, startOperator } from '../harness/workloads.ts';

/** Waits up to `seconds` for the output to match; fails with the output. */
async function outputMatches(proc: CliProcess, pattern: RegExp, seconds: number): Promise<string> {
  for (let i = 0; i < seconds * 10 && !pattern.test(proc.output()); i++) await sleep(100);
  assert.match(proc.output(), pattern);
  return proc.output();
}

async function probe(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.text() };
}

describe('an unreachable NATS', () => {
  const work = tempDir('hookyard-nats-down-');
  after(() => work.remove());

  it('the operator logs the URL and the error within seconds, serves its webhook, and is not ready until NATS is up', async () => {
    const natsPort = await freePort(); // nothing listens here yet
    const webhookPort = await freePort();
    const certs = servingCertificate(join(work.path, 'serving'));
    await installCRDs();
    const operator = await startOperator('operator-nats-down', [
      '--nats-url',
      `nats://hookyard:s3cret-password@127.0.0.1:${natsPort}`,
      '--namespaces',
      await createNamespace('natsdown'),
      '--no-leader-election',
      '--webhook-port',
      String(webhookPort),
      '--webhook-cert-dir',
      join(work.path, 'serving'),
    ]);
    after(() => operator.stop());
    const logged = await outputMatches(
      operator,
      new RegExp(`cannot connect to NATS at nats://127\\.0\\.0\\.1:${natsPort}: .*ECONNREFUSED`),
      5,
    );
    assert.doesNotMatch(logged, /s3cret-password/);

    const answer = await reviewCreate(
      `https://127.0.0.1:${webhookPort}/validate`,
      new Agent({ connect: { ca: readFileSync(certs.caFile) } }),
      {
        apiVersion: 'hookyard.io/v1alpha1',
        kind: 'WebhookSubscription',
        metadata: { name: 'orders', namespace: 'shop' },
        spec: {
          sources: [{ endpoint: 'shopflix' }],
          filter: 'body.total >',
          target: { url: 'http://orders.shop.svc' },
        },
      },
    );
    assert.equal(answer.response.allowed, false);
    assert.match(answer.response.status?.message ?? '', /filter/);

    const base = `http://127.0.0.1:${operator.metricsPort}`;
    assert.equal((await probe(`${base}/healthz`)).status, 200);
    const notReady = await probe(`${base}/readyz`);
    assert.equal(notReady.status, 503);
    assert.match(notReady.body, new RegExp(`not ready: cannot connect to NATS at nats://127\\.0\\.0\\.1:${natsPort}`));
    const metrics = (await probe(`${base}/metrics`)).body;
    assert.match(metrics, /^hookyard_build_info\{version="[^"]+",commit="[^"]+",node="[^"]+"\} 1$/m);
    assert.match(metrics, /^process_cpu_seconds_total /m);
    assert.match(metrics, /^nodejs_eventloop_lag_seconds /m);

    const nats = await startNats(join(root, '.cache/test-logs'), join(work.path, 'nats'), natsPort);
    after(() => nats.stop());
    await outputMatches(operator, /connected to NATS/, 20);
    let ready = notReady;
    // Its caches fill after NATS connects: on a loaded machine that can take a while.
    for (let i = 0; i < 600 && ready.status !== 200; i++, await sleep(100)) ready = await probe(`${base}/readyz`);
    assert.equal(ready.status, 200, ready.body);
  });

  it('the receiver and the dispatcher log it, answer health and metrics, and are not ready', async () => {
    const natsUrl = `nats://127.0.0.1:${await freePort()}`;
    const endpoint = exampleDoc('ProviderEndpoint', 'shopflix');
    writeFileSync(join(work.path, 'endpoint.yaml'), stringify(endpoint));
    writeFileSync(
      join(work.path, 'dispatcher.yaml'),
      stringify({
        subscription: {
          apiVersion: 'hookyard.io/v1alpha1',
          kind: 'WebhookSubscription',
          metadata: { name: 'orders', namespace: 'default' },
          spec: { sources: [{ endpoint: 'shopflix' }], target: { url: 'http://127.0.0.1:9/' } },
        },
        sources: [{ namespace: 'default', endpoint: 'shopflix', provider: 'shopflix' }],
      }),
    );
    const common = ['--secrets-dir', join(work.path, 'secrets'), '--nats-url', natsUrl];
    const receiverPort = await freePort();
    const dispatcherPort = await freePort();
    const procs = [
      { port: receiverPort, args: ['receiver', '--config', join(work.path, 'endpoint.yaml'), '--port'] },
      { port: dispatcherPort, args: ['dispatcher', '--config', join(work.path, 'dispatcher.yaml'), '--metrics-port'] },
    ].map(({ port, args }) => ({ port, proc: runCli(sourceCli(), [...args, String(port), ...common]) }));
    after(async () => {
      for (const { proc } of procs) await proc.stop();
    });
    for (const { port, proc } of procs) {
      await outputMatches(proc, new RegExp(`cannot connect to NATS at ${natsUrl}: .*ECONNREFUSED`), 5);
      assert.equal((await probe(`http://127.0.0.1:${port}/healthz`)).status, 200, proc.output());
      assert.equal((await probe(`http://127.0.0.1:${port}/readyz`)).status, 503);
      assert.match((await probe(`http://127.0.0.1:${port}/metrics`)).body, /^hookyard_build_info\{/m);
    }
    const refused = await fetch(`http://127.0.0.1:${receiverPort}/hooks/default/shopflix`, {
      method: 'POST',
      body: '{}',
    });
    assert.equal(refused.status, 503);
  });
});
