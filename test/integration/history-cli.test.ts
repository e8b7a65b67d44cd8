// `hookyard events|event|attempts|replay|dlq` (the kubectl plugin's commands) as a user with a ServiceAccount
// token that may read and patch the resources of one namespace only: against the real kube-apiserver, the operator
// serving the history API over HTTPS, a real nats-server, a dispatcher and a real HTTP target on loopback. The
// CLI reaches the operator directly (--operator, as through a port-forward): the harness's API server cannot
// proxy to a loopback address, which its service proxy refuses.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as k8s from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { Agent, fetch } from 'undici';
import { stringify } from 'yaml';
import { parseResource } from '../../src/api/validate.ts';
import type { WebhookSubscription } from '../../src/api/webhook-subscription.ts';
import { type Dispatcher, startDispatcher } from '../../src/dispatcher/dispatcher.ts';
import type { AttemptRecord } from '../../src/dispatcher/history.ts';
import { deadLetterStream, duplicateSubject, endpointStream } from '../../src/jetstream/layout.ts';
import { freePort } from '../../src/runtime/net.ts';
import { mapSecrets } from '../../src/runtime/secrets.ts';
import { runCli, sourceCli } from '../harness/cli.ts';
import { shopAndOrders } from '../harness/examples.ts';
import { createNamespace, installCRDs, kubeConfig, kubectl, namespaceUserRbac, requireEnv } from '../harness/kube.ts';
import { testNats } from '../harness/nats.ts';
import { binDir, root, servingCertificate, tempDir } from '../harness/servers.ts';
import { waitFor } from '../harness/wait.ts';
import { type RunningOperator, startOperator } from '../harness/workloads.ts';
import { publishEvent, quietLogger, startTarget } from './dispatcher-support.ts';

describe('hookyard history commands', () => {
  const kc = kubeConfig();
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);
  const work = tempDir('hookyard-history-cli-');
  let mine = '';
  let other = '';
  let operator: RunningOperator | undefined;
  let dispatcher: Dispatcher | undefined;
  let nats: Awaited<ReturnType<typeof testNats>>;
  let target: Awaited<ReturnType<typeof startTarget>>;
  let fixed = false;
  let env: NodeJS.ProcessEnv = {};
  let readerToken = '';

  before(async () => {
    await installCRDs();
    mine = await createNamespace('hist-mine');
    other = await createNamespace('hist-other');
    const cert = servingCertificate(join(work.path, 'cert'));
    const port = await freePort();
    nats = await testNats();
    operator = await startOperator('operator-history', [
      ...['--namespaces', `${mine},${other}`, '--no-leader-election', '--status-interval', '1s'],
      ...['--webhook-port', String(port), '--webhook-cert-dir', join(work.path, 'cert')],
    ]);
    target = await startTarget((r, res) => {
      res.statusCode = !fixed && String(r.headers['hookyard-event-id']).includes('bad-') ? 400 : 200;
      res.end();
    });
    for (const namespace of [mine, other]) {
      const r = await kubectl(['apply', '--server-side', '-n', namespace, '-f', '-'], shopAndOrders(target.url));
      assert.equal(r.code, 0, r.stderr);
    }
    await waitFor('the streams', () =>
      nats.jsm.consumers.info(endpointStream(mine, 'shop'), 'orders').catch(() => undefined),
    );
    const raw = await custom.getNamespacedCustomObject({
      group: 'hookyard.io',
      version: 'v1alpha1',
      namespace: mine,
      plural: 'webhooksubscriptions',
      name: 'orders',
    });
    dispatcher = await startDispatcher({
      subscription: parseResource(raw) as WebhookSubscription,
      sources: [{ namespace: mine, endpoint: 'shop' }],
      secrets: mapSecrets({}),
      nc: nats.nc,
      registry: new Registry(),
      logger: quietLogger,
      fetchExpiresMs: 1000,
    });

    // A user who may read and patch Hookyard's resources in `mine` only.
    const rbac = namespaceUserRbac(mine, 'reader');
    const applied = await kubectl(['apply', '--server-side', '-f', '-'], rbac);
    assert.equal(applied.code, 0, applied.stderr);
    const token = await core.createNamespacedServiceAccountToken({
      name: 'reader',
      namespace: mine,
      body: { spec: { audiences: [], expirationSeconds: 3600 } },
    });
    readerToken = token.status?.token ?? '';
    const kubeconfig = join(work.path, 'kubeconfig');
    writeFileSync(
      kubeconfig,
      stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [
          {
            name: 'test',
            cluster: { server: requireEnv('HOOKYARD_TEST_KUBE_SERVER'), 'insecure-skip-tls-verify': true },
          },
        ],
        users: [{ name: 'reader', user: { token: readerToken } }],
        contexts: [{ name: 'test', context: { cluster: 'test', user: 'reader', namespace: mine } }],
        'current-context': 'test',
      }),
    );
    env = {
      ...process.env,
      KUBECONFIG: kubeconfig,
      HOOKYARD_OPERATOR_URL: `https://127.0.0.1:${port}`,
      HOOKYARD_OPERATOR_CA: cert.caFile,
    };

    for (const id of ['ok-1', 'bad-1'])
      await publishEvent(nats.nc, mine, 'shop', { id, type: 'order.shipped', body: `{"id":"${id}"}` });
    await waitFor(
      'a dead letter',
      async () => (await nats.jsm.streams.info(deadLetterStream(mine, 'orders'))).state.messages === 1,
    );
  });
  after(async () => {
    await dispatcher?.stop();
    operator?.kill('SIGKILL');
    await target?.close();
    await nats?.nc.close();
    work.remove();
  });

  // HOOKYARD_TEST_SHOW_OUTPUT=1 prints each command and its output: the real output docs/history.md shows.
  const hookyard = async (...args: string[]) => {
    const p = runCli(sourceCli(), args, env);
    const code = await p.exited;
    if (process.env.HOOKYARD_TEST_SHOW_OUTPUT) console.log(`$ kubectl hookyard ${args.join(' ')}\n${p.output()}`);
    return { code, output: p.output() };
  };

  it('lists the events, shows one as stored, and lists the attempts and the dead letters, in its own namespace', async () => {
    const events = await hookyard('events', 'shop', '-o', 'json');
    assert.equal(events.code, 0, events.output);
    assert.deepEqual(
      (JSON.parse(events.output) as { id: string; type: string; size: number }[]).map((e) => [e.id, e.type, e.size]),
      [
        ['ok-1', 'order.shipped', 13],
        ['bad-1', 'order.shipped', 14],
      ],
    );
    const table = await hookyard('events', 'shop', '--type', 'order.shipped', '--id', 'bad-1');
    assert.match(table.output, /^SEQ +RECEIVED +TYPE +ID +SIZE +DUPLICATES\n2 +\S+ +order\.shipped +bad-1 +14 +0\n$/);
    // Two resends of ok-1 answered as duplicates (the receiver's records, as receiver.test.ts checks it writes
    // them): counted on ok-1 alone.
    for (let n = 0; n < 2; n++) await nats.js.publish(duplicateSubject(mine, 'shop', 'ok-1'));
    const counted = await hookyard('events', 'shop');
    assert.match(
      counted.output,
      /^SEQ +RECEIVED +TYPE +ID +SIZE +DUPLICATES\n1 +\S+ +order\.shipped +ok-1 +13 +2\n2 +\S+ +order\.shipped +bad-1 +14 +0\n$/,
    );

    const one = await hookyard('event', 'shop', 'ok-1');
    assert.equal(one.code, 0, one.output);
    assert.match(one.output, /^Nats-Msg-Id: ok-1$/m);
    assert.match(one.output, /^Hookyard-Event-Type: order\.shipped$/m);
    assert.ok(one.output.endsWith('\n\n{"id":"ok-1"}'), one.output);
    const second = await hookyard('event', 'shop', 'bad-1');
    assert.equal(second.code, 0, second.output);
    assert.match(second.output, /^Nats-Msg-Id: bad-1$/m, 'found past the first event');

    const attempts = await hookyard('attempts', 'orders', '-o', 'json');
    assert.equal(attempts.code, 0, attempts.output);
    assert.deepEqual(
      (JSON.parse(attempts.output) as AttemptRecord[]).map((a) => [a.eventId, a.attempt, a.status, a.decision]),
      [
        ['ok-1', 1, 200, 'delivered'],
        ['bad-1', 1, 400, 'dead-letter'],
      ],
    );
    // The same as a kubectl plugin: kubectl finds bin/kubectl-hookyard on the PATH.
    const plugin = runCli(
      { command: join(binDir, 'kubectl'), args: ['hookyard'] },
      ['attempts', 'orders', '-o', 'json'],
      {
        ...env,
        PATH: `${join(root, 'bin')}:${process.env.PATH}`,
      },
    );
    assert.equal(await plugin.exited, 0, plugin.output());
    assert.deepEqual(JSON.parse(plugin.output()), JSON.parse(attempts.output));
    const forOne = await hookyard('attempts', 'orders', '--event', 'bad-1');
    assert.match(
      forOne.output,
      /^TIME +EVENT +ATTEMPT +RESULT +MS +DECISION\n\S+ +bad-1 +1 +400 +[\d.]+ +dead-letter \(permanent\)\n$/,
    );

    const dlq = await hookyard('dlq', 'list', 'orders');
    assert.match(
      dlq.output,
      /^DEAD-LETTERED +TYPE +ID +ATTEMPTS +LAST ERROR\n\S+ +order\.shipped +bad-1 +1 +HTTP 400\n$/,
    );
  });

  it("refuses to read or replay another namespace's events, which the user cannot read", async () => {
    for (const args of [
      ['attempts', 'orders', '-n', other],
      ['events', 'shop', '-n', other],
      ['dlq', 'list', 'orders', '-n', other],
    ]) {
      const r = await hookyard(...args);
      assert.equal(r.code, 1, r.output);
      assert.match(
        r.output,
        new RegExp(`system:serviceaccount:${mine}:reader cannot get \\w+ "\\w+" in namespace "${other}"`),
      );
    }
    const replay = await hookyard('replay', 'orders', '-n', other, '--dead-letters');
    assert.equal(replay.code, 1, replay.output);
    assert.match(
      replay.output,
      /forbidden: User "system:serviceaccount:.*:reader" cannot patch resource "webhooksubscriptions"/,
    );
    // Without a token at all, the history API refuses too, with a JSON body.
    const dispatcher = new Agent({ connect: { ca: readFileSync(env.HOOKYARD_OPERATOR_CA as string) } });
    const path = `/history/v1/namespaces/${mine}/webhooksubscriptions/orders/attempts`;
    const anonymous = await fetch(`${env.HOOKYARD_OPERATOR_URL}${path}`, { dispatcher });
    assert.equal(anonymous.status, 401);
    assert.match(((await anonymous.json()) as { error: string }).error, /bearer token/);
  });

  it('answers a name that is not a Kubernetes name 400, and a stream or event NATS does not have 404, each with a JSON body', async () => {
    const dispatcher = new Agent({ connect: { ca: readFileSync(env.HOOKYARD_OPERATOR_CA as string) } });
    const get = async (path: string) => {
      const r = await fetch(`${env.HOOKYARD_OPERATOR_URL}/history/v1/namespaces/${mine}/${path}`, {
        dispatcher,
        headers: { 'x-hookyard-authorization': `Bearer ${readerToken}` },
      });
      return [r.status, ((await r.json()) as { error: string }).error] as const;
    };
    const [dotted, dottedError] = await get('providerendpoints/shop.%3E/events');
    assert.equal(dotted, 400);
    assert.match(dottedError, /not the name of a Hookyard resource/);
    assert.deepEqual((await get('providerendpoints/nowhere/events/1'))[0], 404);
    assert.deepEqual((await get('providerendpoints/shop/events/999'))[0], 404);
  });

  it('a dry run lists the dead letters and sends nothing; dlq replay sends each once, marked as a replay', async () => {
    fixed = true;
    const before = target.received.length;
    const dry = await hookyard('replay', 'orders', '--dead-letters', '--dry-run', '--id', 'cli-dry');
    assert.equal(dry.code, 0, dry.output);
    assert.match(
      dry.output,
      /^replay cli-dry: DryRun: Dry run: 1 events would be sent again; nothing was sent\.\nID +TYPE +RECEIVED\nbad-1 +order\.shipped +\S+\n$/,
    );
    assert.equal(target.received.length, before);

    const sent = await hookyard('dlq', 'replay', 'orders', '--id', 'cli-1');
    assert.equal(sent.code, 0, sent.output);
    assert.match(sent.output, /^replay cli-1: Succeeded: 1 events sent again/);
    const replayed = target.received.slice(before);
    assert.deepEqual(
      replayed.map((r) => [r.headers['hookyard-event-id'], r.headers['hookyard-replay']]),
      [['bad-1', 'cli-1']],
    );
    const attempts = await hookyard('attempts', 'orders', '--event', 'bad-1', '-o', 'json');
    assert.deepEqual(
      (JSON.parse(attempts.output) as AttemptRecord[]).map((a) => [a.status, a.decision, a.replay]),
      [
        [400, 'dead-letter', undefined],
        [200, 'delivered', 'cli-1'],
      ],
    );
  });

  it('dlq show prints a dead letter as stored; dlq purge deletes them all and sends nothing, after a dry run', async () => {
    fixed = false;
    await publishEvent(nats.nc, mine, 'shop', { id: 'bad-2', type: 'order.shipped', body: '{"id":"bad-2"}' });
    await waitFor(
      'a dead letter',
      async () => (await nats.jsm.streams.info(deadLetterStream(mine, 'orders'))).state.messages === 1,
    );
    const shown = await hookyard('dlq', 'show', 'orders', 'bad-2');
    assert.equal(shown.code, 0, shown.output);
    assert.match(shown.output, /^Hookyard-Event-Id: bad-2$/m);
    assert.match(shown.output, /^Hookyard-Last-Error: HTTP 400$/m);
    assert.ok(shown.output.endsWith('\n\n{"id":"bad-2"}'), shown.output);

    const before = target.received.length;
    const dry = await hookyard('dlq', 'purge', 'orders', '--dry-run', '--id', 'purge-dry');
    assert.equal(dry.code, 0, dry.output);
    assert.match(
      dry.output,
      /^replay purge-dry: DryRun: Dry run: 1 dead letters would be purged; nothing was deleted\./,
    );
    assert.equal((await nats.jsm.streams.info(deadLetterStream(mine, 'orders'))).state.messages, 1);
    const purged = await hookyard('dlq', 'purge', 'orders', '--id', 'purge-1');
    assert.equal(purged.code, 0, purged.output);
    assert.match(purged.output, /^replay purge-1: Succeeded: 1 dead letters purged; nothing was sent\.\n$/);
    assert.equal((await nats.jsm.streams.info(deadLetterStream(mine, 'orders'))).state.messages, 0);
    assert.equal(target.received.length, before);
    const listed = await hookyard('dlq', 'list', 'orders', '-o', 'json');
    assert.deepEqual(JSON.parse(listed.output), []);
  });

  it('test sends a made-up event through the subscription and shows what the target answered', async () => {
    fixed = true;
    const before = target.received.length;
    const sent = await hookyard('test', 'orders', '--id', 'test-1', '--type', 'order.shipped');
    assert.equal(sent.code, 0, sent.output);
    assert.match(
      sent.output,
      /^test event hookyard-test:test-1 sent through orders:\nTIME +EVENT +ATTEMPT +RESULT +MS +DECISION\n\S+ +hookyard-test:test-1 +1 +200 +[\d.]+ +delivered \[replay test-1\]\n$/,
    );
    const got = target.received.slice(before);
    assert.deepEqual(
      got.map((r) => [r.headers['hookyard-event-id'], r.headers['hookyard-event-type'], r.headers['hookyard-test']]),
      [['hookyard-test:test-1', 'order.shipped', 'true']],
    );
    assert.equal((JSON.parse(got[0]?.body.toString() ?? '{}') as { test?: boolean }).test, true);

    // A target that refuses it: the attempt says so, and the command exits 1.
    fixed = false;
    const refused = await hookyard('test', 'orders', '--id', 'bad-t', '--body', '{"order":1}');
    assert.equal(refused.code, 1, refused.output);
    assert.match(refused.output, /hookyard-test:bad-t +1 +400 +[\d.]+ +dead-letter \(permanent\) \[replay bad-t\]\n$/);
    assert.equal(target.received.at(-1)?.body.toString(), '{"order":1}');
  });
});
