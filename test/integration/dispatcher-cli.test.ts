// The dispatcher as the real command, in a child process: killed with SIGKILL or stopped with SIGTERM mid-delivery it loses nothing.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { stringify } from 'yaml';
import { parseResource } from '../../src/api/validate.ts';
import type { WebhookSubscription } from '../../src/api/webhook-subscription.ts';
import { startDispatcher } from '../../src/dispatcher/dispatcher.ts';
import { deadLetterStream, headers as h } from '../../src/jetstream/layout.ts';
import { mapSecrets } from '../../src/runtime/secrets.ts';
import { streamMessages } from '../harness/nats.ts';
import { freePort, root, tempDir } from '../harness/servers.ts';
import { waitFor } from '../harness/wait.ts';
import {
  eventually,
  metricValue,
  natsSetup,
  natsUrl,
  publishEvent,
  quietLogger,
  startNatsRelay,
  startTarget,
  uniqueNames,
} from './dispatcher-support.ts';

const work = tempDir('hookyard-dispatcher-cli-');
// Every dispatcher a test starts, stopped by its PID at the end also when the test failed before stopping it.
const started = new Set<ChildProcess>();
after(() => {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  work.remove();
});

function dispatcherProcess(
  config: string,
  metricsPort: number,
  nats = natsUrl(),
): { child: ChildProcess; exited: Promise<number | null>; stderr: () => string } {
  let stderr = '';
  const child = spawn(
    process.execPath,
    [
      join(root, 'src/cli.ts'),
      'dispatcher',
      '--config',
      config,
      '--nats-url',
      nats,
      '--metrics-port',
      String(metricsPort),
      '--secrets-dir',
      join(work.path, 'secrets'),
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, HOOKYARD_LOG_LEVEL: 'warn' } },
  );
  started.add(child);
  child.stderr?.on('data', (d) => {
    stderr += d;
  });
  const exited = new Promise<number | null>((ok) => child.once('exit', (code) => ok(code)));
  return { child, exited, stderr: () => stderr };
}

/** Publishes `total` order.shipped events to the endpoint's stream, one after another; returns their ids. */
async function publishOrders(
  nc: Parameters<typeof publishEvent>[0],
  names: { namespace: string; endpoint: string },
  total: number,
): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < total; i++) {
    const event = { type: 'order.shipped', body: `{"i":${i}}` };
    ids.push((await publishEvent(nc, names.namespace, names.endpoint, event)).id);
  }
  return ids;
}

/** The dispatcher's config file for one subscription to `url`, as the operator writes it. */
function writeConfig(
  names: { namespace: string; endpoint: string; subscription: string },
  url: string,
  spec: Record<string, unknown> = {},
): string {
  const config = join(work.path, `${names.subscription}.yaml`);
  writeFileSync(
    config,
    stringify({
      subscription: {
        apiVersion: 'hookyard.io/v1alpha1',
        kind: 'WebhookSubscription',
        metadata: { name: names.subscription, namespace: names.namespace },
        spec: {
          sources: [{ endpoint: names.endpoint }],
          target: { url, timeout: '1s' },
          ackWait: '2s',
          retry: { maxAttempts: 5, backoff: { initialDelay: '50ms', maxDelay: '200ms' } },
          ...spec,
        },
      },
      sources: [{ namespace: names.namespace, endpoint: names.endpoint, provider: 'proign' }],
    }),
  );
  mkdirSync(join(work.path, 'secrets'), { recursive: true });
  return config;
}

describe('hookyard dispatcher (the command)', () => {
  it('loses nothing when killed with SIGKILL in the middle of deliveries, and counts the duplicates it causes', async (t) => {
    const names = uniqueNames('crash');
    const nats = await natsSetup(names.namespace, names.endpoint);
    const total = 300;
    // The target answers the first third at once, then holds every request unanswered until released: when the
    // first dispatcher is killed, the requests it holds are in flight for certain, so their events must come again.
    let holding = true;
    let held = 0;
    const release: (() => void)[] = [];
    const target = await startTarget(async (_r, res, index) => {
      if (holding && index >= total / 3) {
        held++;
        await new Promise<void>((ok) => release.push(ok));
      }
      res.end();
    });
    const ids = await publishOrders(nats.nc, names, total);
    const config = writeConfig(names, target.url);

    const first = dispatcherProcess(config, await freePort());
    await eventually(() => held > 0, 5);
    first.child.kill('SIGKILL');
    await first.exited;
    const inFlightAtKill = held;
    holding = false;
    for (const ok of release.splice(0)) ok();
    assert.ok(target.received.length < total, 'killed before it was done');

    const port = await freePort();
    const second = dispatcherProcess(config, port);
    const metrics = async () => (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    await eventually(async () => {
      const info = await nats.jsm.consumers.info(nats.stream, names.subscription);
      return info.num_pending === 0 && info.num_ack_pending === 0;
    }, 100);
    assert.deepEqual(new Set(target.received.map((r) => r.headers['hookyard-event-id'])), new Set(ids));
    const duplicates = target.received.length - total;
    const counted = metricValue(await metrics(), 'hookyard_dispatcher_possible_duplicates_total');
    t.diagnostic(`${inFlightAtKill} in flight at the kill, ${duplicates} duplicates at the target, ${counted} counted`);
    // Every request in flight at the kill was never acknowledged: its event reached the target again.
    assert.ok(duplicates >= inFlightAtKill, `${inFlightAtKill} in flight at the kill, ${duplicates} duplicates`);
    assert.ok(counted >= duplicates, `${duplicates} duplicates reached the target, ${counted} counted`);
    second.child.kill('SIGKILL');
    await second.exited;
    await target.close();
    await nats.nc.drain();
  });

  it('on SIGTERM finishes the deliveries in flight and leaves the rest to the next dispatcher: nothing lost, nothing twice', async (t) => {
    const names = uniqueNames('drain');
    const nats = await natsSetup(names.namespace, names.endpoint);
    const total = 40;
    // A target that holds its answers until the dispatcher has taken the SIGTERM (its readiness turns 503): the
    // signal always finds every delivery slot in flight, and nothing sent after it can be mistaken for before.
    const concurrency = 4;
    let holding = true;
    let inFlight = 0;
    const release: (() => void)[] = [];
    const target = await startTarget(async (_r, res) => {
      inFlight++;
      if (holding) await new Promise<void>((ok) => release.push(ok));
      inFlight--;
      res.end();
    });
    const ids = await publishOrders(nats.nc, names, total);
    const config = writeConfig(names, target.url, {
      concurrency,
      ackWait: '30s',
      target: { url: target.url, timeout: '20s' },
    });
    const firstPort = await freePort();
    const first = dispatcherProcess(config, firstPort);
    await eventually(() => inFlight === concurrency, 5);
    const inFlightAtTerm = inFlight;
    first.child.kill('SIGTERM');
    await eventually(async () => (await fetch(`http://127.0.0.1:${firstPort}/readyz`)).status === 503, 20);
    const sentBeforeTerm = target.received.length;
    holding = false;
    for (const ok of release.splice(0)) ok();
    assert.equal(await first.exited, 0, first.stderr());
    assert.equal(inFlight, 0, 'every request in flight was answered before the process ended');
    assert.equal(target.received.length, sentBeforeTerm, 'nothing new was sent after SIGTERM');
    assert.equal(sentBeforeTerm, concurrency, 'the rest was left for the next dispatcher');
    // What the first one delivered is acknowledged and the rest handed back: nothing waits out an ackWait.
    const info = await nats.jsm.consumers.info(nats.stream, names.subscription);
    assert.equal(info.num_ack_pending, 0, 'nothing left unacknowledged by the drained dispatcher');

    const port = await freePort();
    const second = dispatcherProcess(config, port);
    await eventually(async () => {
      const i = await nats.jsm.consumers.info(nats.stream, names.subscription);
      return target.received.length >= total && i.num_pending === 0 && i.num_ack_pending === 0;
    }, 100);
    const received = target.received.map((r) => String(r.headers['hookyard-event-id']));
    assert.deepEqual(received.sort(), [...ids].sort(), 'each event exactly once');
    const counted = metricValue(
      await (await fetch(`http://127.0.0.1:${port}/metrics`)).text(),
      'hookyard_dispatcher_possible_duplicates_total',
    );
    t.diagnostic(`${inFlightAtTerm} in flight at SIGTERM, ${sentBeforeTerm} sent before it, ${counted} counted`);
    assert.equal(counted, 0, 'no duplicate reached the target, none is counted');
    assert.equal((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 200);
    second.child.kill('SIGTERM');
    assert.equal(await second.exited, 0, second.stderr());
    await target.close();
    await nats.nc.drain();
  });

  // Dead-lettering is two writes to NATS: the dead letter's publish (awaiting its PubAck), then the original's term.
  // The relay kills the dispatcher at each instant around them: before the publish is written, after the dead letter
  // is stored but before its PubAck is read (so before the term), and after the term. With maxAttempts 1 and a
  // target answering 500, the one attempt uses up the event; the next dispatcher gets it again only if it was not
  // terminated, and then dead-letters it without an attempt (its delivery count is past maxAttempts).
  const killPoints = [
    { when: 'before the dead letter is published', marker: 'PUB hookyard-dlq.', cut: 'stop-writes' },
    { when: 'after the dead letter is stored, before the term', marker: 'PUB hookyard-dlq.', cut: 'stop-answers' },
    { when: 'after the term', marker: '+TERM', cut: 'pass' },
  ] as const;
  for (const point of killPoints) {
    it(`dead-letters an event exactly once when killed ${point.when}`, async (t) => {
      const names = uniqueNames('dlq-kill');
      const nats = await natsSetup(names.namespace, names.endpoint);
      t.after(() => nats.nc.close());
      const target = await startTarget((_r, res) => {
        res.statusCode = 500;
        res.end();
      });
      const sink = await startTarget();
      t.after(() => Promise.all([target.close(), sink.close()]));
      const [id] = await publishOrders(nats.nc, names, 1);
      const config = writeConfig(names, target.url, { retry: { maxAttempts: 1 }, deadLetter: { sinkUrl: sink.url } });
      const dlq = deadLetterStream(names.namespace, names.subscription);
      const consumerSettled = async () => {
        const info = await nats.jsm.consumers.info(nats.stream, names.subscription);
        return info.num_pending === 0 && info.num_ack_pending === 0;
      };

      const relay = await startNatsRelay(point.marker, point.cut);
      t.after(() => relay.close());
      const first = dispatcherProcess(config, await freePort(), relay.url);
      await relay.markerSeen;
      if (point.cut === 'stop-answers') {
        await waitFor('the dead letter stored', async () => (await nats.jsm.streams.info(dlq)).state.messages === 1);
      }
      if (point.cut === 'pass') await waitFor('the term taken by JetStream', consumerSettled);
      first.child.kill('SIGKILL');
      await first.exited;
      const sinkPostsByFirst = sink.received.length;

      const second = dispatcherProcess(config, await freePort());
      // Whatever was not terminated comes again after ackWait (2s) and the second dispatcher settles it.
      await waitFor('every event settled', consumerSettled, 30);
      const stored = await streamMessages(nats.jsm, dlq);
      assert.deepEqual(
        stored.map((m) => m.header?.get(h.deadLetterEventId)),
        [id],
        'the event is in the dead-letter stream once',
      );
      assert.equal(target.received.length, 1, 'one attempt in all: the crash does not add one past maxAttempts');
      if (point.cut === 'pass') {
        // Terminated before the kill, the event never comes back; the first dispatcher may have reached the sink.
        assert.ok(sink.received.length <= 1);
      } else {
        // Killed before the term: the first never reached the sink; the second stores the same dead letter again
        // (deduplicated by its message id) and posts it there once.
        assert.equal(sinkPostsByFirst, 0);
        await waitFor('the dead letter posted to the sink', async () => sink.received.length, 30);
        assert.equal(sink.received.length, 1);
      }
      second.child.kill('SIGKILL');
      await second.exited;
    });
  }

  it('replays dead letters with --replay-dead-letters, removing each after a 2xx', async () => {
    const names = uniqueNames('replay');
    const nats = await natsSetup(names.namespace, names.endpoint);
    const failing = await startTarget((_r, res) => {
      res.statusCode = 500;
      res.end();
    });
    const manifest = (url: string) => ({
      apiVersion: 'hookyard.io/v1alpha1',
      kind: 'WebhookSubscription',
      metadata: { name: names.subscription, namespace: names.namespace },
      spec: { sources: [{ endpoint: names.endpoint }], target: { url }, retry: { maxAttempts: 1 } },
    });
    const registry = new Registry();
    const dispatcher = await startDispatcher({
      subscription: parseResource(manifest(failing.url)) as WebhookSubscription,
      sources: [{ namespace: names.namespace, endpoint: names.endpoint }],
      secrets: mapSecrets({}),
      nc: nats.nc,
      registry,
      logger: quietLogger,
    });
    const events = [];
    for (let i = 0; i < 3; i++) {
      events.push(await publishEvent(nats.nc, names.namespace, names.endpoint, { type: 'a.b', body: `{"i":${i}}` }));
    }
    await eventually(
      async () =>
        metricValue(await registry.metrics(), 'hookyard_dispatcher_dead_letters_total', { reason: 'exhausted' }) === 3,
    );
    await dispatcher.stop();
    await failing.close();

    const target = await startTarget();
    const config = join(work.path, `${names.subscription}.yaml`);
    mkdirSync(join(work.path, 'secrets'), { recursive: true });
    writeFileSync(
      config,
      stringify({
        subscription: manifest(target.url),
        sources: [{ namespace: names.namespace, endpoint: names.endpoint }],
      }),
    );
    const run = spawn(
      process.execPath,
      [
        join(root, 'src/cli.ts'),
        'dispatcher',
        '--config',
        config,
        '--nats-url',
        natsUrl(),
        '--replay-dead-letters',
        '--secrets-dir',
        join(work.path, 'secrets'),
      ],
      { stdio: 'ignore', env: { ...process.env, HOOKYARD_LOG_LEVEL: 'warn' } },
    );
    started.add(run);
    assert.equal(await new Promise((ok) => run.once('exit', ok)), 0);
    assert.deepEqual(target.received.map((r) => r.headers['hookyard-event-id']).sort(), events.map((e) => e.id).sort());
    assert.equal(
      (await nats.jsm.streams.info(deadLetterStream(names.namespace, names.subscription))).state.messages,
      0,
    );
    await target.close();
    await nats.nc.drain();
  });

  it('refuses a bad config, naming the field', async () => {
    const config = join(work.path, 'bad.yaml');
    writeFileSync(
      config,
      stringify({
        subscription: {
          apiVersion: 'hookyard.io/v1alpha1',
          kind: 'WebhookSubscription',
          metadata: { name: 'bad', namespace: 'shop' },
          spec: { sources: [{ endpoint: 'proign' }], target: { url: 'http://x.test/', timeout: '5m' } },
        },
        sources: [{ namespace: 'shop' }],
      }),
    );
    const run = dispatcherProcess(config, await freePort());
    assert.notEqual(await run.exited, 0);
    assert.match(run.stderr(), /spec\.target\.timeout/);
    writeFileSync(
      config,
      stringify({
        subscription: {
          apiVersion: 'hookyard.io/v1alpha1',
          kind: 'WebhookSubscription',
          metadata: { name: 'ok', namespace: 'shop' },
          spec: { sources: [{ endpoint: 'proign' }], target: { url: 'http://x.test/' } },
        },
        sources: [{ namespace: 'shop' }],
      }),
    );
    const run2 = dispatcherProcess(config, await freePort());
    assert.notEqual(await run2.exited, 0);
    assert.match(run2.stderr(), /sources\[0\]\.endpoint/);
  });
});
