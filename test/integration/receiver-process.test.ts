// `hookyard receiver` as a process, the way its Deployment runs it: config and Secrets from files, NATS that
// goes away and comes back, a reload, and a graceful stop.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { jetstreamManager } from '@nats-io/jetstream';
import pino from 'pino';
import { fetch } from 'undici';
import { stringify } from 'yaml';
import type { ProviderEndpoint } from '../../src/api/provider-endpoint.ts';
import { parseResource } from '../../src/api/validate.ts';
import { endpointStream } from '../../src/jetstream/layout.ts';
import { endpointStreamConfig, ensureStream } from '../../src/jetstream/streams.ts';
import { jetStreamReadiness, type Readiness } from '../../src/receiver/readiness.ts';
import { connectNats, type Nats } from '../../src/runtime/nats.ts';
import { streamMessages, testNats } from '../harness/nats.ts';
import {
  binDir,
  freePort,
  type NatsServer,
  root,
  type Server,
  startNats,
  startProcess,
  tempDir,
} from '../harness/servers.ts';

const manifest = {
  apiVersion: 'hookyard.io/v1alpha1',
  kind: 'ProviderEndpoint',
  metadata: { name: 'orders', namespace: 'shop' },
  spec: { provider: 'stripe', verification: [{ bearer: { secretRefs: [{ name: 'orders-token', key: 'token' }] } }] },
};

describe('receiver process', () => {
  const work = tempDir('hookyard-receiver-');
  const secretFile = join(work.path, 'secrets/orders-token/token');
  let nats: NatsServer;
  let receiver: ChildProcess;
  let base: string;
  const output: string[] = [];

  const startNatsServer = async (port?: number) => startNats(work.path, join(work.path, 'nats'), port);

  before(async () => {
    mkdirSync(join(work.path, 'secrets/orders-token'), { recursive: true });
    writeFileSync(secretFile, 'token-one\n');
    writeFileSync(join(work.path, 'endpoint.yaml'), stringify(manifest));
    nats = await startNatsServer();
    const { jsm, nc } = await testNats(nats.url);
    const resource = parseResource(manifest) as ProviderEndpoint;
    await ensureStream(jsm, endpointStreamConfig('shop', 'orders', resource.spec));
    await nc.close();
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    receiver = spawn(
      process.execPath,
      [join(root, 'src/cli.ts'), 'receiver', '--config', join(work.path, 'endpoint.yaml')]
        .concat(['--secrets-dir', join(work.path, 'secrets'), '--nats-url', nats.url, '--port', String(port)])
        .concat(['--reload-interval', '100']),
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    receiver.stdout?.on('data', (d) => output.push(String(d)));
    receiver.stderr?.on('data', (d) => output.push(String(d)));
    await until(async () => (await fetch(`${base}/readyz`).catch(() => null))?.status === 200, 'receiver ready');
  });
  after(async () => {
    receiver?.kill('SIGKILL');
    await nats?.stop();
    work.remove();
  });

  const until = async (check: () => Promise<boolean>, what: string) => {
    for (let i = 0; i < 300; i++) {
      if (await check()) return;
      await sleep(50);
    }
    throw new Error(`${what} not reached; receiver output:\n${output.join('')}`);
  };
  const send = (id: string, token = 'token-one') =>
    fetch(`${base}/hooks/shop/orders`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ id, type: 'charge.succeeded' }),
    });

  it('answers 503 while NATS is down, and every event it answered 2xx is stored', async () => {
    const accepted: string[] = [];
    const statuses = new Map<number, number>();
    let n = 0;
    // Requests sent after /readyz said ready again; those already on their way then may still be refused.
    let readyAgain = false;
    let refusedWhenReady = 0;
    const worker = async (until: () => boolean) => {
      while (!until()) {
        const id = `evt_${n++}`;
        const sentWhenReady = readyAgain;
        const res = await send(id).catch(() => null);
        const status = res?.status ?? 0;
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
        if (sentWhenReady && status === 503) refusedWhenReady++;
        if (status >= 200 && status < 300) accepted.push(id);
        if (status === 503) assert.equal(res?.headers.get('retry-after'), '5');
        await res?.arrayBuffer();
      }
    };
    let phase = 'before';
    let noJetStream: Server | undefined;
    const workers = Promise.all([1, 2, 3, 4].map(() => worker(() => phase === 'done')));
    try {
      await until(async () => accepted.length >= 40, '40 events accepted');
      const port = nats.port;
      await nats.stop();
      phase = 'down';
      await until(async () => (statuses.get(503) ?? 0) >= 5, 'requests refused with 503 while NATS is down');
      assert.equal((await fetch(`${base}/readyz`)).status, 503);
      // A server that takes connections but whose JetStream does not answer, as after a restart while it recovers
      // its streams: connected is not ready.
      const monitor = await freePort();
      const args = ['-a', '127.0.0.1', '-p', String(port), '-m', String(monitor)];
      noJetStream = startProcess('nats-server-no-jetstream', join(binDir, 'nats-server'), args, work.path);
      await until(async () => (await clientConnections(monitor)) > 0, 'receiver connected without JetStream');
      for (let i = 0; i < 10; i++) {
        assert.equal((await fetch(`${base}/readyz`)).status, 503, 'ready while JetStream does not answer');
        await sleep(200);
      }
      await noJetStream.stop();
      nats = await startNatsServer(port);
      await until(async () => (await fetch(`${base}/readyz`)).status === 200, 'ready again after NATS restarts');
      // Ready means a publish succeeds: no request sent from here on is refused.
      readyAgain = true;
      const after = accepted.length;
      await until(async () => accepted.length >= after + 40, '40 more events accepted');
      assert.equal(refusedWhenReady, 0, 'requests sent after /readyz said ready refused with 503');
    } finally {
      phase = 'done';
      await workers;
      await noJetStream?.stop();
    }

    const { jsm, nc } = await testNats(nats.url);
    const stored = new Set(
      (await streamMessages(jsm, endpointStream('shop', 'orders'))).map((m) => m.header.get('Nats-Msg-Id')),
    );
    await nc.close();
    // The stored id is the dedup key: the event type, then the event's own id.
    const lost = accepted.filter((id) => !stored.has(`charge.succeeded:${id}`));
    assert.deepEqual(lost, [], `answered 2xx but not stored: ${lost.join(', ')}`);
    assert.ok((statuses.get(503) ?? 0) > 0);
    assert.deepEqual(
      [...statuses.keys()].filter((s) => s !== 200 && s !== 503),
      [],
      `other statuses: ${[...statuses]}`,
    );
  });

  it('reloads a rotated Secret without a restart', async () => {
    writeFileSync(secretFile, 'token-two\n');
    await until(async () => (await send('evt_rotated', 'token-two')).status === 200, 'new token accepted');
    assert.equal((await send('evt_old', 'token-one')).status, 401);
  });

  it('keeps serving with its configuration when a new one names a Secret the pod was not started with', async () => {
    const configFile = join(work.path, 'endpoint.yaml');
    const other = structuredClone(manifest);
    other.spec.verification = [{ bearer: { secretRefs: [{ name: 'other-token', key: 'token' }] } }];
    writeFileSync(configFile, stringify(other));
    try {
      await until(async () => output.join('').includes('keeping the previous one'), 'the new configuration refused');
      assert.equal((await send('evt_kept', 'token-two')).status, 200);
    } finally {
      writeFileSync(configFile, stringify(manifest));
    }
  });

  it('answers a 3 MiB body with 413 every time, not a connection reset', async () => {
    // Like most HTTP clients, this one writes the whole body before it reads the response.
    const body = Buffer.alloc(3 << 20, 'a');
    const head = (framing: string) =>
      `POST /hooks/shop/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${framing}\r\n\r\n`;
    const chunked = Buffer.concat([Buffer.from(`${body.length.toString(16)}\r\n`), body, Buffer.from('\r\n0\r\n\r\n')]);
    const requests = [
      Buffer.concat([Buffer.from(head(`Content-Length: ${body.length}`)), body]),
      Buffer.concat([Buffer.from(head('Transfer-Encoding: chunked')), chunked]),
    ];
    const port = Number(new URL(base).port);
    for (let i = 0; i < 10; i++) {
      for (const request of requests) {
        const answer = await new Promise<string>((ok) => {
          const socket = connect(port, '127.0.0.1');
          let text = '';
          socket.on('data', (d) => {
            text += d.toString();
          });
          socket.on('error', (err: NodeJS.ErrnoException) => ok(`${text} (${err.code})`));
          socket.on('close', () => ok(text));
          // In 64 KiB writes, each when the socket takes more, as a sender streams a body.
          let at = 0;
          const pump = () => {
            while (at < request.length) {
              const chunk = request.subarray(at, at + (64 << 10));
              at += chunk.length;
              if (!socket.write(chunk)) return socket.once('drain', pump);
            }
          };
          pump();
        });
        assert.match(answer, /^HTTP\/1.1 413 /, `attempt ${i + 1}: ${answer.slice(0, 80)}`);
        assert.match(answer, /"error":"too_large"/);
      }
    }
  });

  it('finishes an in-flight request on SIGTERM, then exits', async () => {
    const url = new URL(`${base}/hooks/shop/orders`);
    const { request } = await import('node:http');
    const response = new Promise<number>((ok, fail) => {
      const req = request({ host: url.hostname, port: url.port, path: url.pathname, method: 'POST' }, (res) =>
        ok(res.statusCode ?? 0),
      );
      req.on('error', fail);
      req.setHeader('content-type', 'application/json');
      req.setHeader('authorization', 'Bearer token-two');
      req.write('{"id":"evt_inflight",');
      setTimeout(() => {
        receiver.kill('SIGTERM');
        setTimeout(() => req.end('"type":"charge.succeeded"}'), 300);
      }, 100);
    });
    assert.equal(await response, 200);
    const code = await new Promise((ok) => receiver.once('exit', ok));
    assert.equal(code, 0);
  });
});

/** How many clients a nats-server has, from its monitoring port. */
async function clientConnections(monitorPort: number): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${monitorPort}/connz`).catch(() => null);
  return ((await res?.json()) as { num_connections?: number } | undefined)?.num_connections ?? 0;
}

describe('receiver readiness', () => {
  it('is not ready after a reconnect until a look on the new connection finds the stream', async () => {
    // The only look is the one at the start, so a look made before the reconnect would still say ready after it,
    // as when a server comes back within a look's interval.
    await withReadiness(async ({ nats, connection, readiness, work, started }) => {
      await waitFor(readiness.ready, 'ready');
      await nats.stop();
      await waitFor(() => !connection.connected(), 'disconnected');
      const monitor = await freePort();
      const args = ['-a', '127.0.0.1', '-p', String(nats.port), '-m', String(monitor)];
      started(startProcess('nats-server-no-jetstream', join(binDir, 'nats-server'), args, work));
      await waitFor(connection.connected, 'reconnected to a server without JetStream');
      assert.equal(readiness.ready(), false, 'ready on a new connection no look was made on');
    });
  });

  it('is not ready after a failed publish until a look that began after it finds the stream', async () => {
    await withReadiness(async ({ connection, readiness }) => {
      // The first look is under way: the publish fails while it is.
      readiness.failed();
      // The look under way has answered once a request sent after it has (one connection, answered in order).
      await jetstreamManager(connection.nc).then((m) => m.streams.info(endpointStream('shop', 'orders')));
      await sleep(100);
      assert.equal(readiness.ready(), false, 'ready from a look that began before the publish failed');
    });
  });
});

const quiet = pino({ level: 'silent' });

interface ReadinessCase {
  nats: NatsServer;
  connection: Nats;
  readiness: Readiness;
  work: string;
  /** Stops this server too at the end. */
  started(server: Server): void;
}

/**
 * The endpoint's stream in a fresh nats-server, the receiver's kind of connection to it, and its readiness with
 * a look interval longer than any test, so that only the look at the start is made; all stopped at the end.
 */
async function withReadiness(test: (c: ReadinessCase) => Promise<void>): Promise<void> {
  const work = tempDir('hookyard-readiness-');
  const servers: Server[] = [];
  let connection: Nats | undefined;
  let readiness: Readiness | undefined;
  try {
    const nats = await startNats(work.path, join(work.path, 'nats'));
    servers.push(nats);
    const { jsm, nc } = await testNats(nats.url);
    await ensureStream(jsm, endpointStreamConfig('shop', 'orders', (parseResource(manifest) as ProviderEndpoint).spec));
    await nc.close();
    connection = await connectNats({ url: nats.url, name: 'readiness-test' }, quiet);
    readiness = jetStreamReadiness(connection, () => [endpointStream('shop', 'orders')], quiet, 600_000);
    await test({ nats, connection, readiness, work: work.path, started: (server) => servers.push(server) });
  } finally {
    readiness?.stop();
    await connection?.nc.close();
    for (const server of servers) await server.stop();
    work.remove();
  }
}

async function waitFor(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (check()) return;
    await sleep(50);
  }
  throw new Error(`${what} not reached`);
}
