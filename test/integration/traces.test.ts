// OpenTelemetry traces against a real collector (tools/otelcol): `hookyard dev` with OTEL_EXPORTER_OTLP_ENDPOINT
// gives each event one trace, from the receiver's span (continuing the sender's traceparent) to a span per delivery
// attempt, whose context the target gets as traceparent; without it, nothing is exported and no traceparent is sent.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { headers as natsHeaders } from '@nats-io/transport-node';
import { Registry } from 'prom-client';
import { replayDeadLetters, startDispatcher } from '../../src/dispatcher/dispatcher.ts';
import { deadLetterStream, eventSubject, headers as h } from '../../src/jetstream/layout.ts';
import { freePort } from '../../src/runtime/net.ts';
import { mapSecrets } from '../../src/runtime/secrets.ts';
import { startTracing } from '../../src/runtime/tracing.ts';
import { bundleCli, type Cli, type CliProcess, runCli, sourceCli } from '../harness/cli.ts';
import { shopAndOrders } from '../harness/examples.ts';
import { binDir, type CollectedSpan, type Collector, root, startCollector, tempDir } from '../harness/servers.ts';
import { waitFor } from '../harness/wait.ts';
import {
  natsSetup,
  quietLogger,
  startTarget as startRecordingTarget,
  subscription,
  uniqueNames,
} from './dispatcher-support.ts';

const serverKind = 2;
const clientKind = 3;
const errorStatus = 2;

interface Received {
  headers: IncomingHttpHeaders;
}

/** A target that answers 503 to each event's first attempt and 200 to the next: every event is retried once. */
async function startTarget(): Promise<{ url: string; received: Received[] }> {
  const received: Received[] = [];
  const server = createServer((req, res) => {
    req.resume().on('end', () => {
      received.push({ headers: req.headers });
      res.writeHead(req.headers['hookyard-attempt'] === '1' ? 503 : 200).end();
    });
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  after(() => server.close());
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}/orders`, received };
}

function manifests(dir: string, targetUrl: string): void {
  writeFileSync(join(dir, 'shop.yaml'), shopAndOrders(targetUrl, { retry: { schedule: ['200ms'] } }));
}

async function dev(dir: string, env: NodeJS.ProcessEnv, cli: Cli = sourceCli()) {
  const port = await freePort();
  // Its own nats-server with a temporary store, as on a laptop.
  const proc = runCli(cli, ['dev', '-f', dir, '--port', String(port)], {
    ...env,
    HOOKYARD_NATS_SERVER: join(binDir, 'nats-server'),
  });
  after(() => proc.stop());
  await waitFor('hookyard dev started', async () => /Ctrl-C stops/.test(proc.output()), 30).catch(() => {
    throw new Error(`hookyard dev did not start:\n${proc.output()}`);
  });
  return { proc: proc as CliProcess, url: `http://127.0.0.1:${port}/hooks/default/shop` };
}

async function post(url: string, body: object, headers: Record<string, string> = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 200);
  return (await res.json()) as { id: string; type: string };
}

/** The environment without any OpenTelemetry variable the machine may have set. */
function envWithout(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const key of Object.keys(env)) if (key.startsWith('OTEL_')) delete env[key];
  return env;
}

const traceparent = (traceId: string, spanId: string) => `00-${traceId}-${spanId}-01`;

/** A real Collector for the describe block that calls this: started before its tests, stopped after them. */
function collectorPerSuite(prefix: string): () => Collector {
  const work = tempDir(prefix);
  let collector: Collector | undefined;
  before(async () => {
    collector = await startCollector(join(root, '.cache/test-logs'), work.path);
  });
  after(async () => {
    await collector?.stop();
    work.remove();
  });
  return () => collector as Collector;
}

describe('traces (OpenTelemetry)', () => {
  const collector = collectorPerSuite('hookyard-traces-');

  it('exports nothing and sends no traceparent when no OTLP endpoint is set (the default)', async () => {
    const dir = tempDir('hookyard-traces-off-');
    after(() => dir.remove());
    const target = await startTarget();
    manifests(dir.path, target.url);
    const { proc, url } = await dev(dir.path, envWithout());
    await post(
      url,
      { order: 'off-1' },
      { traceparent: traceparent('4bf92f3577b34da6a3ce929d0e0e4736', '00f067aa0ba902b7') },
    );
    await waitFor('both attempts at the target', async () => target.received.length === 2);
    assert.equal(await proc.stop(), 0, proc.output());
    for (const { headers } of target.received) {
      assert.equal(headers.traceparent, undefined);
      assert.equal(headers.tracestate, undefined);
    }
    // The collector writes within 100 ms of receiving; give a stray export time to arrive.
    await sleep(500);
    assert.deepEqual(collector().spans(), []);
  });

  it('gives each event one trace: the receiver span continues traceparent, each attempt is its child', async () => {
    const dir = tempDir('hookyard-traces-on-');
    after(() => dir.remove());
    const target = await startTarget();
    manifests(dir.path, target.url);
    const env = { ...envWithout(), OTEL_EXPORTER_OTLP_ENDPOINT: collector().endpoint, OTEL_BSP_SCHEDULE_DELAY: '100' };
    const { proc, url } = await dev(dir.path, env);
    const sender = { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331' };
    const continued = await post(url, { order: 'on-1' }, { traceparent: traceparent(sender.traceId, sender.spanId) });
    const fresh = await post(url, { order: 'on-2' });
    await waitFor('four attempts at the target', async () => target.received.length === 4);

    const spans = await waitFor(
      'six spans in the collector',
      async () => (collector().spans().length >= 6 ? collector().spans() : undefined),
      30,
    );
    assert.equal(spans.length, 6, JSON.stringify(spans, null, 2));

    const traceOf = (event: { id: string }) => {
      const receive = spans.find((s) => s.kind === serverKind && s.attributes['hookyard.event.id'] === event.id);
      assert.ok(receive, `no receiver span for ${event.id}`);
      const attempts = spans
        .filter((s) => s.kind === clientKind && s.attributes['hookyard.event.id'] === event.id)
        .sort((a, b) => Number(a.attributes['hookyard.attempt']) - Number(b.attributes['hookyard.attempt']));
      return { receive, attempts };
    };

    // The sender's trace is continued: same trace id, the sender's span as parent.
    const first = traceOf(continued);
    assert.equal(first.receive.traceId, sender.traceId);
    assert.equal(first.receive.parentSpanId, sender.spanId);
    // Without a traceparent, the receiver's span starts the event's trace.
    const second = traceOf(fresh);
    assert.equal(second.receive.parentSpanId, '');
    assert.notEqual(second.receive.traceId, sender.traceId);

    for (const [event, trace] of [
      [continued, first],
      [fresh, second],
    ] as const) {
      const { receive, attempts } = trace;
      assert.equal(receive.name, 'POST /hooks/{namespace}/{endpoint}');
      assert.equal(receive.service, 'hookyard-dev');
      assert.deepEqual(pick(receive, ['hookyard.endpoint', 'hookyard.event.type', 'hookyard.outcome']), {
        'hookyard.endpoint': 'default/shop',
        'hookyard.event.type': event.type,
        'hookyard.outcome': 'accepted',
      });
      assert.equal(receive.attributes['http.response.status_code'], 200);
      assert.equal(receive.attributes['url.path'], '/hooks/default/shop');

      assert.equal(attempts.length, 2);
      const expected = [
        { attempt: 1, outcome: 'retried', status: 503 },
        { attempt: 2, outcome: 'delivered', status: 200 },
      ];
      for (const [i, span] of attempts.entries()) {
        const want = expected[i] as (typeof expected)[number];
        assert.equal(span.traceId, receive.traceId);
        assert.equal(span.parentSpanId, receive.spanId);
        assert.equal(span.name, 'deliver default/orders');
        assert.deepEqual(
          pick(span, [
            'hookyard.subscription',
            'hookyard.endpoint',
            'hookyard.event.type',
            'hookyard.attempt',
            'hookyard.outcome',
            'http.response.status_code',
          ]),
          {
            'hookyard.subscription': 'default/orders',
            'hookyard.endpoint': 'default/shop',
            'hookyard.event.type': event.type,
            'hookyard.attempt': want.attempt,
            'hookyard.outcome': want.outcome,
            'http.response.status_code': want.status,
          },
        );
        assert.equal(span.status === errorStatus, want.status !== 200);
        // The target got this attempt's span as its parent.
        const request = target.received.find(
          (r) => r.headers['hookyard-event-id'] === event.id && r.headers['hookyard-attempt'] === String(want.attempt),
        );
        assert.equal(request?.headers.traceparent, traceparent(span.traceId, span.spanId));
      }
    }
    assert.equal(await proc.stop(), 0, proc.output());
  });
});

describe('traces from the production bundle (dist/)', () => {
  const collector = collectorPerSuite('hookyard-traces-bundle-');

  it('exports the receiver span and the attempt spans, the SDK loaded from its own chunk', async () => {
    const dir = tempDir('hookyard-traces-bundle-files-');
    after(() => dir.remove());
    const target = await startTarget();
    manifests(dir.path, target.url);
    const env = { ...envWithout(), OTEL_EXPORTER_OTLP_ENDPOINT: collector().endpoint, OTEL_BSP_SCHEDULE_DELAY: '100' };
    const { proc, url } = await dev(dir.path, env, bundleCli());
    const event = await post(url, { order: 'bundle-1' });
    const spans = await waitFor('three spans', async () => {
      const found = collector()
        .spans()
        .filter((s) => s.attributes['hookyard.event.id'] === event.id);
      return found.length >= 3 ? found : undefined;
    });
    const receive = spans.find((s) => s.kind === serverKind) as CollectedSpan;
    const attempts = spans.filter((s) => s.kind === clientKind);
    assert.equal(attempts.length, 2);
    for (const a of attempts) assert.equal(a.parentSpanId, receive.spanId);
    assert.equal(await proc.stop(), 0, proc.output());
  });
});

describe('traces of a replayed dead letter', () => {
  const collector = collectorPerSuite('hookyard-traces-replay-');

  it("makes the replayed attempt a child of the original event's receiver span, in the same trace", async () => {
    const names = uniqueNames('traces');
    const nats = await natsSetup(names.namespace, names.endpoint);
    after(() => nats.nc.close());
    let up = false;
    const target = await startRecordingTarget((_r, res) => {
      res.statusCode = up ? 200 : 500;
      res.end();
    });
    after(() => target.close());
    const tracer = await startTracing({
      endpoint: collector().endpoint,
      serviceName: 'hookyard-dispatcher',
      log: quietLogger,
      env: { OTEL_BSP_SCHEDULE_DELAY: '100' },
    });
    assert.ok(tracer);
    // The event as a tracing receiver stores it: its span's context in Hookyard-Traceparent.
    const receiverSpan = { traceId: '5bf92f3577b34da6a3ce929d0e0e4736', spanId: '10f067aa0ba902b7' };
    const stored = natsHeaders();
    stored.set(h.eventType, 'order.shipped');
    stored.set(h.contentType, 'application/json');
    stored.set(h.traceparent, traceparent(receiverSpan.traceId, receiverSpan.spanId));
    await nats.js.publish(eventSubject(names.namespace, names.endpoint, 'order.shipped'), '{"order":1}', {
      msgID: 'evt-replayed',
      headers: stored,
    });

    const sub = subscription(names, { target: { url: target.url }, retry: { maxAttempts: 1 } });
    const options = { subscription: sub, secrets: mapSecrets({}), nc: nats.nc, logger: quietLogger, tracer };
    const dispatcher = await startDispatcher({
      ...options,
      sources: [{ namespace: names.namespace, endpoint: names.endpoint }],
      registry: new Registry(),
      fetchExpiresMs: 1000,
    });
    const dlq = deadLetterStream(names.namespace, names.subscription);
    await waitFor('the dead letter', async () => (await nats.jsm.streams.info(dlq)).state.messages === 1);
    await dispatcher.stop();
    up = true;
    assert.deepEqual(await replayDeadLetters(options), { replayed: 1, failed: 0 });
    await tracer.shutdown();

    const spans = await waitFor('two attempt spans', async () => {
      const found = collector()
        .spans()
        .filter((s) => s.traceId === receiverSpan.traceId);
      return found.length >= 2 ? found : undefined;
    });
    assert.equal(spans.length, 2);
    for (const span of spans) assert.equal(span.parentSpanId, receiverSpan.spanId);
    const outcomes = spans.map((s) => pick(s, ['hookyard.attempt', 'hookyard.outcome', 'http.response.status_code']));
    assert.deepEqual(
      outcomes.sort((a, b) => Number(a['hookyard.attempt']) - Number(b['hookyard.attempt'])),
      [
        { 'hookyard.attempt': 1, 'hookyard.outcome': 'dead_lettered', 'http.response.status_code': 500 },
        { 'hookyard.attempt': 2, 'hookyard.outcome': 'delivered', 'http.response.status_code': 200 },
      ],
    );
    const replayed = target.received[1];
    const replaySpan = spans.find((s) => s.attributes['hookyard.attempt'] === 2) as CollectedSpan;
    assert.equal(replayed?.headers.traceparent, traceparent(receiverSpan.traceId, replaySpan.spanId));
  });
});

function pick(span: CollectedSpan, keys: string[]): Record<string, unknown> {
  return Object.fromEntries(keys.map((k) => [k, span.attributes[k]]));
}
