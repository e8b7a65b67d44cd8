// One signed webhook through the data plane as processes: `hookyard receiver` and `hookyard dispatcher` started
// from a given command line (the bundle, or the image's contents) against the harness's nats-server, and the
// webhook sent with that same CLI's `hookyard send`. Shared by the bundle and image tests.
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { samples } from '../../src/providers/samples.ts';
import { type Cli, type CliProcess, runCli, waitReady } from '../harness/cli.ts';
import { exampleDoc } from '../harness/examples.ts';
import { streamMessages } from '../harness/nats.ts';
import { freePort, tempDir } from '../harness/servers.ts';
import { natsSetup, natsUrl, startTarget, uniqueNames } from './dispatcher-support.ts';

/** Races `promise` against a deadline, so a missing delivery fails with a message instead of a test timeout. */
export async function within<T>(promise: Promise<T>, seconds: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, fail) => {
    timer = setTimeout(() => fail(new Error(`${what}: not within ${seconds}s`)), seconds * 1000);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The PROIGN example endpoint and a subscription to a loopback target; a documented PROIGN sample sent signed with
 * `hookyard send` must be answered 2xx (the receiver answers only after JetStream's PubAck, so it is stored),
 * be in the endpoint's stream, and reach the target byte for byte. Both processes must then stop with exit code
 * 0 on SIGTERM. `env` is the environment of every process (the image test passes the image's).
 */
export async function deliverSignedWebhook(cli: Cli, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const names = uniqueNames('cli');
  const { namespace, endpoint } = names;
  const nats = await natsSetup(namespace, endpoint);
  const target = await startTarget();
  // The processes may run as another user (the image's): everything they read must be readable by all.
  const work = tempDir('hookyard-delivery-');
  chmodSync(work.path, 0o755);
  const procs: CliProcess[] = [];
  try {
    const secret = (exampleDoc('Secret', 'proign-webhook')?.stringData as { secret?: string } | undefined)?.secret;
    assert.ok(secret, 'examples/ holds the proign-webhook Secret');
    mkdirSync(join(work.path, 'secrets/proign-webhook'), { recursive: true, mode: 0o755 });
    writeFileSync(join(work.path, 'secrets/proign-webhook/secret'), secret);
    writeFileSync(
      join(work.path, 'endpoint.yaml'),
      stringify({ ...exampleDoc('ProviderEndpoint', 'proign'), metadata: { name: endpoint, namespace } }),
    );
    writeFileSync(
      join(work.path, 'dispatcher.yaml'),
      stringify({
        subscription: {
          apiVersion: 'hookyard.io/v1alpha1',
          kind: 'WebhookSubscription',
          metadata: { name: names.subscription, namespace },
          spec: { sources: [{ endpoint }], target: { url: target.url } },
        },
        sources: [{ namespace, endpoint, provider: 'proign' }],
      }),
    );
    const common = ['--secrets-dir', join(work.path, 'secrets'), '--nats-url', natsUrl()];
    const receiverPort = await freePort();
    const receiver = runCli(
      cli,
      ['receiver', '--config', join(work.path, 'endpoint.yaml'), ...common, '--port', String(receiverPort)],
      env,
    );
    procs.push(receiver);
    const metricsPort = await freePort();
    const dispatcher = runCli(
      cli,
      ['dispatcher', '--config', join(work.path, 'dispatcher.yaml'), ...common, '--metrics-port', String(metricsPort)],
      env,
    );
    procs.push(dispatcher);
    await waitReady(receiver, `http://127.0.0.1:${receiverPort}/readyz`);
    await waitReady(dispatcher, `http://127.0.0.1:${metricsPort}/readyz`);

    const sample = samples.proign?.[0];
    assert.ok(sample);
    const url = `http://127.0.0.1:${receiverPort}/hooks/${namespace}/${endpoint}`;
    const send = runCli(cli, ['send', 'proign', '--url', url, '--secret', secret, '--sample', sample.name], env);
    assert.equal(await within(send.exited, 20, 'hookyard send'), 0, send.output());
    assert.match(send.output(), /^proign .*: 2\d\d /m, send.output());

    const stored = await streamMessages(nats.jsm, nats.stream);
    assert.equal(stored.length, 1, 'the accepted webhook is in the stream');
    assert.deepEqual(Buffer.from(stored[0]?.data ?? []), sample.body);
    await within(target.waitFor(1), 20, `delivery to the target; dispatcher output:\n${dispatcher.output()}`);
    assert.deepEqual(target.received[0]?.body, sample.body);

    for (const proc of procs) assert.equal(await proc.stop(), 0, proc.output());
  } finally {
    for (const proc of procs) proc.kill('SIGKILL');
    await target.close();
    await nats.nc.close();
    work.remove();
  }
}
