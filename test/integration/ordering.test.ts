// Per-key ordering (spec.ordering) against a real nats-server and a real HTTP target: a property over random
// interleavings of keys, failures (5xx, timeouts, 429 with Retry-After) and a dead letter, delivered by two
// dispatcher processes of which the pinned one is SIGKILLed and replaced; and parallelism across keys.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import fc from 'fast-check';
import { Registry } from 'prom-client';
import { stringify } from 'yaml';
import { startDispatcher } from '../../src/dispatcher/dispatcher.ts';
import { deadLetterStream } from '../../src/jetstream/layout.ts';
import { orderingStatus, orderingStream } from '../../src/jetstream/ordering.ts';
import { mapSecrets } from '../../src/runtime/secrets.ts';
import { startNatsProxy } from '../harness/nats-proxy.ts';
import { freePort, root, tempDir } from '../harness/servers.ts';
import {
  eventually,
  metricValue,
  natsSetup,
  natsUrl,
  publishEvent,
  quietLogger,
  type Received,
  startTarget,
  subscription,
  uniqueNames,
} from './dispatcher-support.ts';

const work = tempDir('hookyard-ordering-');
const started = new Set<ChildProcess>();
after(() => {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  work.remove();
});

type Names = ReturnType<typeof uniqueNames>;

/** A dispatcher of `spec` in this process, on a connection of its own (through `url`: a proxy, or the server). */
async function inProcessReplica(names: Names, spec: Record<string, unknown>, url = natsUrl()) {
  const nc: NatsConnection = await connect({ servers: url });
  const registry = new Registry();
  const d = await startDispatcher({
    subscription: subscription(names, spec),
    sources: [{ namespace: names.namespace, endpoint: names.endpoint }],
    secrets: mapSecrets({}),
    nc,
    registry,
    logger: quietLogger,
  });
  const metric = async (name: string, labels?: Record<string, string>) =>
    metricValue(await registry.metrics(), name, labels);
  return { d, nc, registry, metric };
}

async function stopReplica(replica: Awaited<ReturnType<typeof inProcessReplica>>) {
  await replica.d.stop();
  await replica.nc.close();
}

/** Nothing of the subscription's consumer left to deliver or to settle. */
const settled = (nats: Awaited<ReturnType<typeof natsSetup>>, names: Names) => async () => {
  const info = await nats.jsm.consumers.info(nats.stream, names.subscription);
  return info.num_pending === 0 && info.num_ack_pending === 0;
};

const publishKeyed = (nats: Awaited<ReturnType<typeof natsSetup>>, names: Names, key: string, n: number) =>
  publishEvent(nats.nc, names.namespace, names.endpoint, { type: 'order.updated', body: JSON.stringify({ key, n }) });

/** `hookyard dispatcher` in a child process, with its metrics port. */
function dispatcherProcess(config: string) {
  return freePort().then((port) => {
    const child = spawn(
      process.execPath,
      [
        join(root, 'src/cli.ts'),
        'dispatcher',
        '--config',
        config,
        '--nats-url',
        natsUrl(),
        '--metrics-port',
        String(port),
        '--secrets-dir',
        join(work.path, 'secrets'),
      ],
      { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, HOOKYARD_LOG_LEVEL: 'error' } },
    );
    started.add(child);
    const exited = new Promise<void>((ok) => child.once('exit', () => ok()));
    // NaN until the process serves its metrics
    const metric = (name: string) =>
      fetch(`http://127.0.0.1:${port}/metrics`).then(
        async (res) => metricValue(await res.text(), name),
        () => Number.NaN,
      );
    return { child, exited, metric };
  });
}

function writeConfig(names: Names, spec: Record<string, unknown>): string {
  const config = join(work.path, `${names.namespace}.yaml`);
  const subscription = {
    apiVersion: 'hookyard.io/v1alpha1',
    kind: 'WebhookSubscription',
    metadata: { name: names.subscription, namespace: names.namespace },
    spec: { sources: [{ endpoint: names.endpoint }], ...spec },
  };
  writeFileSync(
    config,
    stringify({
      subscription,
      sources: [{ namespace: names.namespace, endpoint: names.endpoint, provider: 'generic' }],
    }),
  );
  mkdirSync(join(work.path, 'secrets'), { recursive: true });
  return config;
}

/** How the target answers one attempt of an event. */
type Answer = '200' | '503' | '429' | 'timeout' | '400';

/** Answers an attempt: 429 asks for a 1 s wait; a timeout holds the request past target.timeout and hangs up. */
async function answer(res: ServerResponse, how: Answer) {
  if (how === 'timeout') {
    await new Promise((ok) => setTimeout(ok, 700));
    res.destroy();
    return;
  }
  if (how === '429') res.setHeader('retry-after', '1');
  res.statusCode = Number(how);
  res.end();
}

const scenario = fc.record({
  // Which key each event has, in publish order: a random interleaving of up to 5 keys.
  keys: fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 12, maxLength: 30 }),
  // Failed attempts before the 2xx, per event (cycled): mostly none.
  failures: fc.array(
    fc.oneof(
      { weight: 5, arbitrary: fc.constant([] as Answer[]) },
      {
        weight: 2,
        arbitrary: fc.array(fc.constantFrom<Answer>('503', '429', 'timeout'), { minLength: 1, maxLength: 2 }),
      },
    ),
    { minLength: 1, maxLength: 30 },
  ),
  deadLetterAt: fc.nat(),
  onDeadLetter: fc.constantFrom('Continue', 'DeadLetterRest'),
  // After how many 2xx answers the pinned replica is killed.
  killAfter: fc.integer({ min: 1, max: 10 }),
});

describe('per-key ordering', () => {
  it('delivers each key in order through failures, a dead letter, two replicas and a SIGKILL of the pinned one', async (t) => {
    await fc.assert(
      fc.asyncProperty(scenario, async ({ keys, failures, deadLetterAt, onDeadLetter, killAfter }) => {
        const names = uniqueNames('ordering');
        const nats = await natsSetup(names.namespace, names.endpoint);
        const total = keys.length;
        const dead = deadLetterAt % total;
        const plans = keys.map((_k, i): Answer[] =>
          i === dead ? ['400'] : [...(failures[i % failures.length] as Answer[]), '200'],
        );
        // What the target saw, per event: when each attempt started and when a 2xx was answered.
        const attempts = new Map<number, number>();
        const arrivals: { event: number; at: number }[] = [];
        const accepted = new Map<number, number>();
        let clock = 0;
        const inFlightPerKey = new Map<number, number>();
        let overlapPerKey = 0;
        const target = await startTarget(async (r: Received, res) => {
          const { key, i } = JSON.parse(r.body.toString()) as { key: string; i: number };
          const k = Number(key.slice(1));
          const n = attempts.get(i) ?? 0;
          attempts.set(i, n + 1);
          arrivals.push({ event: i, at: ++clock });
          inFlightPerKey.set(k, (inFlightPerKey.get(k) ?? 0) + 1);
          if ((inFlightPerKey.get(k) ?? 0) > 1) overlapPerKey++;
          const plan = plans[i] as Answer[];
          const how = plan[Math.min(n, plan.length - 1)] as Answer;
          res.on('close', () => inFlightPerKey.set(k, (inFlightPerKey.get(k) ?? 1) - 1));
          if (how === '200') accepted.set(i, accepted.get(i) ?? ++clock);
          await answer(res, how);
        });
        const config = writeConfig(names, {
          target: { url: target.url, timeout: '500ms' },
          ackWait: '2s',
          concurrency: 4,
          ordering: { key: 'body.key', onDeadLetter },
          retry: { maxAttempts: 6, backoff: { initialDelay: '50ms', maxDelay: '200ms' }, maxRetryAfter: '1s' },
          circuitBreaker: { enabled: false },
        });
        const publish = (i: number) =>
          publishEvent(nats.nc, names.namespace, names.endpoint, {
            type: 'order.updated',
            body: JSON.stringify({ key: `k${keys[i]}`, i }),
          });
        const half = Math.floor(total / 2);
        for (let i = 0; i < half; i++) await publish(i);
        const replicas = [await dispatcherProcess(config), await dispatcherProcess(config)];
        for (let i = half; i < total; i++) await publish(i);

        // Kill the pinned replica (the one not waiting for a pin) once it has had some 2xx, and start another.
        await eventually(() => accepted.size >= Math.min(killAfter, total - 2), 20);
        let victim = 0;
        for (let r = 0; r < 2; r++) {
          if ((await replicas[r]?.metric('hookyard_dispatcher_ordering_recovering')) === 0) victim = r;
        }
        replicas[victim]?.child.kill('SIGKILL');
        await replicas[victim]?.exited;
        replicas[victim] = await dispatcherProcess(config);

        // Done: every event either accepted or dead-lettered, and nothing pending.
        const deadOfKey = (i: number) => onDeadLetter === 'DeadLetterRest' && keys[i] === keys[dead] && i > dead;
        const expectedDead = keys.filter((_k, i) => i === dead || deadOfKey(i)).length;
        await eventually(async () => {
          const info = await nats.jsm.consumers.info(nats.stream, names.subscription);
          const dlq = await nats.jsm.streams
            .info(deadLetterStream(names.namespace, names.subscription))
            .catch(() => undefined);
          return info.num_pending === 0 && info.num_ack_pending === 0 && (dlq?.state.messages ?? 0) === expectedDead;
        }, 100);

        for (let i = 0; i < total; i++) {
          if (i === dead || deadOfKey(i)) assert.ok(!accepted.has(i), `event ${i} was dead-lettered, not accepted`);
          else assert.ok(accepted.has(i), `event ${i} accepted`);
        }
        // Order: no attempt of an event starts before every earlier event of its key was accepted (or dead-lettered).
        for (const { event, at } of arrivals) {
          for (let earlier = 0; earlier < event; earlier++) {
            if (keys[earlier] !== keys[event] || earlier === dead || deadOfKey(earlier)) continue;
            const acceptedAt = accepted.get(earlier);
            assert.ok(
              acceptedAt !== undefined && acceptedAt < at,
              `event ${event} (key k${keys[event]}) started before event ${earlier} was accepted`,
            );
          }
        }
        assert.equal(overlapPerKey, 0, 'two events of one key in flight at once');
        for (const r of replicas) {
          r.child.kill('SIGKILL');
          await r.exited;
        }
        await target.close();
        await nats.jsm.streams.delete(nats.stream);
        await nats.nc.drain();
      }),
      { numRuns: 4, endOnFailure: true },
    );
    t.diagnostic('4 runs');
  });

  it('a newly pinned replica starts a key only after the previous holder settled its earlier event', async () => {
    const names = uniqueNames('ordering-takeover');
    const nats = await natsSetup(names.namespace, names.endpoint);
    let releaseFirst: () => void = () => {};
    const firstHeld = new Promise<void>((ok) => (releaseFirst = ok));
    let firstArrived: () => void = () => {};
    const firstHere = new Promise<void>((ok) => (firstArrived = ok));
    const seen: string[] = [];
    const target = await startTarget(async (r, res) => {
      const { n } = JSON.parse(r.body.toString()) as { n: number };
      seen.push(`${n} arrived`);
      if (n === 0) {
        firstArrived();
        await firstHeld;
      }
      seen.push(`${n} answered`);
      res.end();
    });
    const spec = subscription(names, {
      target: { url: target.url, timeout: '20s' },
      ackWait: '30s',
      ordering: { key: 'body.key' },
    });
    const replica = async () => {
      const nc = await connect({ servers: natsUrl() });
      const registry = new Registry();
      const sources = [{ namespace: names.namespace, endpoint: names.endpoint }];
      const d = await startDispatcher({
        subscription: spec,
        sources,
        secrets: mapSecrets({}),
        nc,
        registry,
        logger: quietLogger,
      });
      return { d, nc, registry };
    };
    const publish = (n: number) =>
      publishEvent(nats.nc, names.namespace, names.endpoint, {
        type: 'order.updated',
        body: JSON.stringify({ key: 'a', n }),
      });
    await publish(0);
    const a = await replica();
    await firstHere; // A delivers event 0 and the target holds it
    const b = await replica();
    const aStopped = a.d.stop(); // A pulls no more and waits for event 0; the pin goes to B
    await nats.jsm.consumers.unpin(nats.stream, names.subscription, 'hookyard');
    await publish(1);
    // Event 0 is answered once B has seen that A still holds an event (or, wrongly, once event 1 reached the target).
    const waits = async () =>
      metricValue(await b.registry.metrics(), 'hookyard_dispatcher_ordering_takeover_waits_total');
    await eventually(async () => seen.includes('1 arrived') || (await waits()) >= 1);
    releaseFirst();
    await aStopped;
    await eventually(() => seen.includes('1 answered'));
    assert.deepEqual(seen, ['0 arrived', '0 answered', '1 arrived', '1 answered']);
    await b.d.stop();
    await Promise.all([a.nc.close(), b.nc.close()]);
    await target.close();
    await nats.nc.drain();
  });

  it('shows a key blocked by a retrying event in status and metrics, and since when', async () => {
    const names = uniqueNames('ordering-blocked');
    const nats = await natsSetup(names.namespace, names.endpoint);
    let failing = true;
    const target = await startTarget((_r, res) => {
      res.statusCode = failing ? 503 : 200;
      res.end();
    });
    await publishEvent(nats.nc, names.namespace, names.endpoint, { type: 'order.updated', body: '{"key":"a"}' });
    await publishEvent(nats.nc, names.namespace, names.endpoint, { type: 'order.updated', body: '{"key":"a"}' });
    const registry = new Registry();
    const dispatcher = await startDispatcher({
      subscription: subscription(names, {
        target: { url: target.url, timeout: '1s' },
        ordering: { key: 'body.key' },
        retry: { backoff: { initialDelay: '200ms', maxDelay: '200ms', jitter: false } },
        circuitBreaker: { enabled: false },
      }),
      sources: [{ namespace: names.namespace, endpoint: names.endpoint }],
      secrets: mapSecrets({}),
      nc: nats.nc,
      registry,
      logger: quietLogger,
    });
    const metric = async (name: string) => metricValue(await registry.metrics(), name);
    await eventually(async () => (await metric('hookyard_dispatcher_ordering_blocked_keys')) === 1);
    assert.equal(await metric('hookyard_dispatcher_ordering_waiting_events'), 1, 'the second event waits');
    // Read while the event is retried: its record is removed before each attempt and written again after it.
    let status = await orderingStatus(nats.jsm, names.namespace, names.subscription);
    await eventually(async () => {
      status = await orderingStatus(nats.jsm, names.namespace, names.subscription);
      return status.blockedKeys === 1 && status.blockedSince !== undefined;
    });
    assert.ok(status.blockedSince && Date.parse(status.blockedSince) <= Date.now(), status.blockedSince);
    failing = false;
    await eventually(async () => {
      const info = await nats.jsm.consumers.info(nats.stream, names.subscription);
      return info.num_pending === 0 && info.num_ack_pending === 0;
    });
    await eventually(
      async () => (await orderingStatus(nats.jsm, names.namespace, names.subscription)).blockedKeys === 0,
    );
    await eventually(async () => (await metric('hookyard_dispatcher_ordering_blocked_keys')) === 0);
    await dispatcher.stop();
    await target.close();
    await nats.nc.drain();
  });

  it('delivers different keys in parallel, and a retrying key holds back only its own events', async () => {
    const names = uniqueNames('ordering-parallel');
    const nats = await natsSetup(names.namespace, names.endpoint);
    // Key a's first event fails until key b's two events and key c's event have all been accepted: if a retrying
    // event held back other keys, or keys went one at a time, they never would be and the test would not end.
    // Key b's first event is answered only once key c's event has arrived: b and c are in flight together.
    const order: string[] = [];
    let otherKeysDone = 0;
    let cArrived: () => void = () => {};
    const cHere = new Promise<void>((ok) => (cArrived = ok));
    const target = await startTarget(async (r, res) => {
      const { key, n } = JSON.parse(r.body.toString()) as { key: string; n: number };
      if (key === 'a' && n === 0 && otherKeysDone < 3) {
        res.statusCode = 503;
        res.end();
        return;
      }
      if (key === 'c') cArrived();
      if (key === 'b' && n === 0) await cHere;
      order.push(`${key}${n}`);
      if (key !== 'a') otherKeysDone++;
      res.end();
    });
    for (const [key, n] of [
      ['a', 0],
      ['a', 1],
      ['b', 0],
      ['b', 1],
      ['c', 0],
    ] as const) {
      await publishEvent(nats.nc, names.namespace, names.endpoint, {
        type: 'order.updated',
        body: JSON.stringify({ key, n }),
      });
    }
    const registry = new Registry();
    const dispatcher = await startDispatcher({
      subscription: subscription(names, {
        target: { url: target.url, timeout: '1s' },
        ackWait: '5s',
        concurrency: 4,
        ordering: { key: 'body.key' },
        retry: { backoff: { initialDelay: '50ms', maxDelay: '100ms', jitter: false } },
        circuitBreaker: { enabled: false },
      }),
      sources: [{ namespace: names.namespace, endpoint: names.endpoint }],
      secrets: mapSecrets({}),
      nc: nats.nc,
      registry,
      logger: quietLogger,
    });
    await eventually(() => order.length === 5);
    assert.deepEqual(
      order.filter((e) => e.startsWith('a')),
      ['a0', 'a1'],
    );
    assert.ok(order.indexOf('b0') < order.indexOf('b1'));
    assert.ok(order.indexOf('a0') > order.indexOf('b1'), 'b went on while a was retrying');
    await dispatcher.stop();
    await target.close();
    await nats.nc.drain();
  });
  it("starts a key's next event only once JetStream has confirmed the ack of the one before", {
    timeout: 60_000,
  }, async (t) => {
    const names = uniqueNames('ordering-ack');
    const nats = await natsSetup(names.namespace, names.endpoint);
    t.after(() => nats.nc.close());
    const proxy = await startNatsProxy(natsUrl());
    t.after(() => proxy.close());
    const seen: number[] = [];
    const target = await startTarget((r, res) => {
      seen.push((JSON.parse(r.body.toString()) as { n: number }).n);
      res.end();
    });
    t.after(() => target.close());
    await publishKeyed(nats, names, 'a', 0);
    await publishKeyed(nats, names, 'a', 1);
    // The first ack is lost on its way, as when the pod dies or the connection drops right after sending it.
    const ackLost = proxy.dropNext(
      'to-server',
      (frame) => frame.startsWith('PUB $JS.ACK.') && frame.includes('\r\n+ACK'),
    );
    const replica = await inProcessReplica(
      names,
      { target: { url: target.url, timeout: '1s' }, ackWait: '2s', ordering: { key: 'body.key' } },
      proxy.url,
    );
    t.after(() => stopReplica(replica));
    await ackLost;
    await eventually(settled(nats, names));
    // Had event 1 started on the lost ack, event 0 would have come back after ackWait and been sent after it.
    assert.deepEqual(seen, [0, 1]);
  });

  it('a replica cut off from NATS attempts nothing more once the pin may have moved', {
    timeout: 60_000,
  }, async (t) => {
    const names = uniqueNames('ordering-fence');
    const nats = await natsSetup(names.namespace, names.endpoint);
    t.after(() => nats.nc.close());
    const proxy = await startNatsProxy(natsUrl());
    t.after(() => proxy.close());
    const arrivals: string[] = [];
    let failed: () => void = () => {};
    const firstFailed = new Promise<void>((ok) => (failed = ok));
    const target = await startTarget((r, res) => {
      const { key, n } = JSON.parse(r.body.toString()) as { key: string; n: number };
      arrivals.push(`${key}${n}`);
      if (arrivals.length === 1) {
        res.statusCode = 503; // opens replica A's circuit: A's events wait at its gate
        failed();
      }
      res.end();
    });
    t.after(() => target.close());
    const spec = {
      target: { url: target.url, timeout: '1s' },
      ackWait: '2s',
      concurrency: 1,
      ordering: { key: 'body.key' },
      retry: { backoff: { initialDelay: '50ms', maxDelay: '50ms', jitter: false } },
      circuitBreaker: { enabled: true, failureThreshold: 1, openDuration: '10s' },
    };
    await publishKeyed(nats, names, 'f', 0);
    await publishKeyed(nats, names, 'b', 0);
    await publishKeyed(nats, names, 'b', 1);
    const a = await inProcessReplica(names, spec, proxy.url);
    t.after(() => stopReplica(a));
    await firstFailed;
    proxy.stall(); // A still reaches the target, not NATS: its pin and its events go to B after ackWait
    const b = await inProcessReplica(names, spec);
    t.after(() => stopReplica(b));
    const bAfterB1 = () => arrivals.lastIndexOf('b0') > arrivals.indexOf('b1') && arrivals.includes('b1');
    // A's circuit half-opens after 10 s and lets b0 through its gate: A either sends it (after B sent b1) or not.
    await eventually(
      async () =>
        arrivals.includes('b1') && (bAfterB1() || (await a.metric('hookyard_dispatcher_ordering_fenced_total')) >= 1),
    );
    assert.ok(!bAfterB1(), `b0 sent again after b1: ${arrivals.join(' ')}`);
    proxy.resume();
    await eventually(settled(nats, names));
    assert.ok(!bAfterB1(), `b0 sent again after b1: ${arrivals.join(' ')}`);
  });

  it('hands back the events waiting for their key as soon as a dropped connection is made again', {
    timeout: 60_000,
  }, async (t) => {
    const names = uniqueNames('ordering-cut');
    const nats = await natsSetup(names.namespace, names.endpoint);
    t.after(() => nats.nc.close());
    const proxy = await startNatsProxy(natsUrl());
    t.after(() => proxy.close());
    const arrivals: number[] = [];
    let release: () => void = () => {};
    const released = new Promise<void>((ok) => (release = ok));
    let holding: () => void = () => {};
    const firstHeld = new Promise<void>((ok) => (holding = ok));
    const target = await startTarget(async (r, res) => {
      arrivals.push((JSON.parse(r.body.toString()) as { n: number }).n);
      if (arrivals.length === 1) {
        holding();
        await released; // a0 is being delivered while a1 and a2 wait for it
      }
      res.end();
    });
    t.after(() => target.close());
    for (const n of [0, 1, 2]) await publishKeyed(nats, names, 'a', n);
    // ackWait far longer than the test: a1 and a2 can come back in time only by their naks.
    const spec = { target: { url: target.url, timeout: '20s' }, ackWait: '5m', ordering: { key: 'body.key' } };
    const replica = await inProcessReplica(names, spec, proxy.url);
    t.after(() => stopReplica(replica));
    await firstHeld;
    const naks = proxy.countFrames('to-server', (f) => f.startsWith('PUB $JS.ACK.') && f.endsWith('\r\n-NAK\r\n'));
    proxy.cut();
    // Sent while disconnected, nats.js would have dropped them.
    await eventually(() => naks() >= 2);
    release();
    await eventually(settled(nats, names));
    assert.deepEqual(arrivals, [0, 1, 2]);
  });

  it('removes a retry record whose write was stored but not confirmed, so the key is not blocked at the next takeover', {
    timeout: 60_000,
  }, async (t) => {
    const names = uniqueNames('ordering-record');
    const nats = await natsSetup(names.namespace, names.endpoint);
    t.after(() => nats.nc.close());
    const proxy = await startNatsProxy(natsUrl());
    t.after(() => proxy.close());
    let attempts = 0;
    const target = await startTarget((_r, res) => {
      res.statusCode = attempts++ === 0 ? 503 : 200;
      res.end();
    });
    t.after(() => target.close());
    await publishKeyed(nats, names, 'a', 0);
    const ledger = `"stream":"${orderingStream(names.namespace, names.subscription)}"`;
    const pubAckLost = proxy.dropNext('to-client', (frame) => frame.includes(ledger));
    const replica = await inProcessReplica(
      names,
      {
        target: { url: target.url, timeout: '1s' },
        ackWait: '10s',
        ordering: { key: 'body.key' },
        retry: { backoff: { initialDelay: '50ms', maxDelay: '50ms', jitter: false } },
        circuitBreaker: { enabled: false },
      },
      proxy.url,
    );
    t.after(() => stopReplica(replica));
    await pubAckLost;
    await eventually(settled(nats, names));
    await eventually(
      async () => (await orderingStatus(nats.jsm, names.namespace, names.subscription)).blockedKeys === 0,
    );
  });

  it('unblocks a key whose retrying event the stream removed (its limits) before it came back', {
    timeout: 60_000,
  }, async (t) => {
    const names = uniqueNames('ordering-removed');
    const nats = await natsSetup(names.namespace, names.endpoint);
    t.after(() => nats.nc.close());
    const seen: string[] = [];
    const target = await startTarget((r, res) => {
      const { n } = JSON.parse(r.body.toString()) as { n: number };
      seen.push(`${n}`);
      res.statusCode = n === 0 ? 503 : 200;
      res.end();
    });
    t.after(() => target.close());
    await publishKeyed(nats, names, 'a', 0);
    await publishKeyed(nats, names, 'a', 1);
    const replica = await inProcessReplica(names, {
      target: { url: target.url, timeout: '1s' },
      ackWait: '3s',
      ordering: { key: 'body.key' },
      retry: { backoff: { initialDelay: '1h', maxDelay: '1h', jitter: false } },
      circuitBreaker: { enabled: false },
    });
    t.after(() => stopReplica(replica));
    await eventually(async () => (await replica.metric('hookyard_dispatcher_ordering_blocked_keys')) === 1);
    await nats.jsm.streams.deleteMessage(nats.stream, 1); // as max_age does to an event waiting for its retry
    await eventually(() => seen.includes('1'));
    await eventually(async () => (await replica.metric('hookyard_dispatcher_ordering_blocked_keys')) === 0);
    assert.equal((await orderingStatus(nats.jsm, names.namespace, names.subscription)).blockedKeys, 0);
  });

  it('labels a dead letter whose store failed after the attempt by what the target answered, not as ordering', {
    timeout: 60_000,
  }, async (t) => {
    const names = uniqueNames('ordering-dlq');
    const nats = await natsSetup(names.namespace, names.endpoint);
    t.after(() => nats.nc.close());
    const proxy = await startNatsProxy(natsUrl());
    t.after(() => proxy.close());
    const target = await startTarget((_r, res) => {
      res.statusCode = 400;
      res.end();
    });
    t.after(() => target.close());
    await publishKeyed(nats, names, 'a', 0);
    const dlq = `"stream":"${deadLetterStream(names.namespace, names.subscription)}"`;
    const pubAckLost = proxy.dropNext('to-client', (frame) => frame.includes(dlq));
    const replica = await inProcessReplica(
      names,
      {
        target: { url: target.url, timeout: '1s' },
        ackWait: '10s',
        ordering: { key: 'body.key', onDeadLetter: 'DeadLetterRest' },
        circuitBreaker: { enabled: false },
      },
      proxy.url,
    );
    t.after(() => stopReplica(replica));
    await pubAckLost;
    const deadLetters = (reason: string) => replica.metric('hookyard_dispatcher_dead_letters_total', { reason });
    await eventually(async () => (await deadLetters('permanent')) + (await deadLetters('ordering')) >= 1);
    await eventually(settled(nats, names));
    const all = (await replica.registry.metrics()).split('\n').filter((l) => l.includes('dead_letters_total'));
    assert.equal(await deadLetters('permanent'), 1, all.join('\n'));
    assert.ok(!((await deadLetters('ordering')) > 0), 'dead-lettered as ordering');
  });
});
