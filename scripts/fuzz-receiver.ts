// npm run fuzz — malformed requests to real `hookyard receiver` processes, one per seed provider's preset, against a
// real nats-server, all on loopback. It checks what a hostile or broken sender must never cause: a 5xx, a crash,
// an error-level log line, or memory that keeps growing. Two rounds of REQUESTS requests (default 100,000 each,
// spread over the receivers); the second must add less than 10 % to each receiver's RSS, and no receiver's peak
// RSS may reach 200 MiB. SEED seeds the generator of the requests.
import { createHmac } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { Agent, request } from 'undici';
import { stringify } from 'yaml';
import { benchReport } from '../bench/report.ts';
import type { ProviderEndpoint } from '../src/api/provider-endpoint.ts';
import { parseResource } from '../src/api/validate.ts';
import { endpointStreamConfig, ensureStream } from '../src/jetstream/streams.ts';
import { bundleCli, type CliProcess, imageNodeFlags, runCli, sourceCli, waitReady } from '../test/harness/cli.ts';
import { freePort, root, startNats, tempDir } from '../test/harness/servers.ts';

const secret = 'fuzz-secret';

/** One receiver under test: its endpoint, and how a well-formed request to it looks (to break it from there). */
interface Target {
  name: string;
  spec: Record<string, unknown>;
  routes: string[];
  /** Headers that pass verification for a body, if the preset verifies (broken later on purpose, sometimes). */
  sign(body: Buffer): Record<string, string>;
  query: string;
}

const hex = (data: string | Buffer) => createHmac('sha256', secret).update(data).digest('hex');
const signedField = (body: Buffer, fields: string[]) => {
  try {
    const parsed = JSON.parse(body.toString()) as Record<string, unknown>;
    const value = fields.map((f) => parsed[f]).find((v) => v !== undefined);
    return JSON.stringify(value ?? parsed);
  } catch {
    return body.toString();
  }
};
const secretRef = [{ name: 'fuzz', key: 'secret' }];

export const targets: Target[] = [
  {
    name: 'proign',
    spec: { provider: 'proign', verification: [{ hmac: { secretRefs: secretRef } }] },
    routes: [''],
    sign: (body) => ({ 'x-proign-signature': `sha256=${hex(signedField(body, []))}`, 'x-proign-retry-count': '0' }),
    query: '',
  },
  {
    name: 'shopflix',
    spec: { provider: 'shopflix', verification: [{ hmac: { secretRefs: secretRef } }] },
    routes: [''],
    sign: (body) => ({ 'x-data-signature': hex(signedField(body, ['data', 'order_data'])) }),
    query: '',
  },
  {
    name: 'printiq',
    spec: { provider: 'printiq', verification: [{ queryToken: { parameter: 'token', secretRefs: secretRef } }] },
    routes: ['CreateJob', 'AcceptanceCreated', 'CreateJobXml', 'UpdateJobStatus_Xml', 'Nope'],
    sign: () => ({}),
    query: `?token=${secret}`,
  },
  {
    name: 'siteflow',
    spec: {
      provider: 'siteflow',
      verification: [{ headerToken: { header: 'X-Hookyard-Token', secretRefs: secretRef } }],
      payload: { fallbackContentType: 'json' },
    },
    routes: ['statusupdate', 'ordersubmissionerror', ''],
    sign: () => ({ 'x-hookyard-token': secret }),
    query: '',
  },
  {
    name: 'fotoweb',
    spec: { provider: 'fotoweb', verification: [{ none: true }] },
    routes: ['cart-changed', 'order-submitted', 'order-approved'],
    sign: () => ({}),
    query: '',
  },
  {
    name: 'github',
    spec: { provider: 'github', verification: [{ hmac: { secretRefs: secretRef } }] },
    routes: [''],
    sign: (body) => ({ 'x-hub-signature-256': `sha256=${hex(body)}`, 'x-github-event': 'push' }),
    query: '',
  },
];

/** A small seeded generator (mulberry32): the same seed, the same requests. */
function random(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return { next, int, pick: <T>(xs: readonly T[]) => xs[int(xs.length)] as T };
}
type Random = ReturnType<typeof random>;

const contentTypes = [
  undefined,
  'application/json',
  'application/json; charset=utf-8',
  'application/json; charset=x-no-such-charset',
  'application/xml',
  'text/xml; charset=iso-8859-1',
  'application/x-www-form-urlencoded',
  'application/x-www-form-urlencoded; charset=latin1',
  'multipart/form-data; boundary=xyz',
  'multipart/form-data',
  'text/plain',
  'image/png',
  'application/cloudevents+json',
  ';;;',
  'application/json; charset="',
];

/** A body that is well-formed for some preset, to truncate, nest or sign. */
function document(r: Random): string {
  const id = `evt_${r.int(1e9)}`;
  return r.pick([
    () =>
      JSON.stringify({
        id,
        type: r.pick(['order.shipped', 'order.packed', 'x'.repeat(r.int(300))]),
        data: { n: r.int(9) },
      }),
    () => JSON.stringify({ eventType: 'order.created', eventTime: '2025-01-01', data: { id } }),
    () => JSON.stringify({ order_data: { id, eventType: 'order.deliverd' }, timestamp_webhook_creation: 'x' }),
    () => JSON.stringify({ data: {}, type: 'order', id, created: '2016-12-12T14:18:49Z' }),
    () => `<?xml version="1.0"?><AcceptanceDetails><JobNo>${id}</JobNo><Status>Accepted</Status></AcceptanceDetails>`,
    () => `id=${id}&state=submitted&user-email=a%40b&x=%zz&%FF=%C3%28`,
  ])();
}

/** One malformed (or now and then well-formed) request body and its headers. */
function malformedBody(r: Random): { body: Buffer; headers: Record<string, string> } {
  const base = document(r);
  const kinds: (() => Buffer | string)[] = [
    () => Buffer.from(Array.from({ length: r.int(512) }, () => r.int(256))), // random bytes
    () => base.slice(0, r.int(base.length)), // truncated
    () => base, // well-formed, wrong or missing content type below
    () => {
      const depth = r.pick([50, 101, 1000, 50_000]);
      return `{"id":"d","type":"t","data":${'['.repeat(depth)}${']'.repeat(depth)}}`;
    },
    () => `${'{"a":'.repeat(r.pick([99, 100, 20_000]))}1${'}'.repeat(20_000)}`,
    () => `<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>`,
    () =>
      `<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">${Array.from({ length: 9 }, (_, i) => `<!ENTITY ${'b'.repeat(i + 1)} "${`&${i === 0 ? 'a' : 'b'.repeat(i)};`.repeat(10)}">`).join('')}]><l>&bbbbbbbbb;</l>`,
    () => `${'<a>'.repeat(r.pick([99, 101, 50_000]))}${'</a>'.repeat(r.int(50_001))}`,
    () => `<a b="1" b="2"><c></a>${'<'.repeat(r.int(100))}`,
    () =>
      `--xyz\r\nContent-Disposition: form-data; name="f"; filename="${'x'.repeat(r.int(99))}"\r\n\r\n${'\x00'.repeat(r.int(99))}${r.next() < 0.5 ? '\r\n--xyz--' : ''}`,
    () =>
      Buffer.concat([
        Buffer.from('{"id":"'),
        Buffer.from([0xff, 0xfe, 0xc3, 0x28, 0xed, 0xa0, 0x80]),
        Buffer.from('"}'),
      ]),
    () => '{"id":"__proto__","type":"constructor","__proto__":{"polluted":1},"data":{"toString":1}}',
    () => '',
  ];
  const raw = r.pick(kinds)();
  const body = Buffer.isBuffer(raw) ? raw : Buffer.from(raw);
  const contentType = r.pick(contentTypes);
  return { body, headers: contentType ? { 'content-type': contentType } : {} };
}

/** The signature headers: right, wrong, cut, or missing. */
function signatureHeaders(r: Random, target: Target, body: Buffer): Record<string, string> {
  const good = target.sign(body);
  const roll = r.next();
  if (roll < 0.3) return good;
  if (roll < 0.5) return {};
  const broken: Record<string, string> = {};
  for (const [name, value] of Object.entries(good)) {
    broken[name] = r.pick([value.slice(0, r.int(value.length)), `${value}0`, 'sha256=', 'zz', value.toUpperCase()]);
  }
  if (target.name === 'shopflix' && r.next() < 0.3) broken['user-agent'] = 'Shopflix WebHook Test';
  return broken;
}

interface Tally {
  requests: number;
  byStatus: Map<number | string, number>;
  fiveXX: string[];
}

const count = (t: Tally, key: number | string) => t.byStatus.set(key, (t.byStatus.get(key) ?? 0) + 1);

/** Sends one request over raw TCP (what an HTTP client would not send) and returns the status or what happened. */
function rawRequest(
  port: number,
  chunks: (Buffer | string)[],
  pauseMs: number,
  abort: boolean,
): Promise<number | string> {
  return new Promise((ok) => {
    const socket = netConnect(port, '127.0.0.1');
    let text = '';
    const done = (result: number | string) => {
      socket.destroy();
      ok(result);
    };
    socket.setTimeout(90_000, () => done('client timeout'));
    socket.on('data', (d) => {
      text += d.toString('latin1');
      const status = /^HTTP\/1\.1 (\d{3})/.exec(text)?.[1];
      if (status && text.includes('\r\n\r\n')) done(Number(status));
    });
    socket.on('error', (err: NodeJS.ErrnoException) => done(err.code ?? 'error'));
    socket.on('close', () => done(text ? `closed: ${text.slice(0, 40)}` : 'closed'));
    socket.on('connect', async () => {
      for (const [i, chunk] of chunks.entries()) {
        if (socket.destroyed) return;
        socket.write(chunk);
        if (i < chunks.length - 1 && pauseMs) await sleep(pauseMs);
      }
      if (abort) setTimeout(() => done('aborted'), 5);
    });
  });
}

/** What an ordinary HTTP client cannot send: oversized headers, broken framing, slow and abandoned bodies. */
async function rawCase(r: Random, port: number, path: string): Promise<number | string> {
  const body = Buffer.from(document(r));
  const head = (extra: string) =>
    `POST ${path} HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n${extra}\r\n`;
  switch (r.int(6)) {
    case 0:
      return rawRequest(
        port,
        [head(`X-Big: ${'a'.repeat(17_000 + r.int(20_000))}\r\nContent-Length: 0\r\n`)],
        0,
        false,
      );
    case 1:
      return rawRequest(
        port,
        [`${r.pick(['GET / HTTP/9.9', 'POST  HTTP/1.1', '\x00\x01\x02', 'POST /hooks/%zz HTTP/1.1'])}\r\n\r\n`],
        0,
        false,
      );
    case 2:
      return rawRequest(port, [head('Content-Length: 12\r\nContent-Length: 13\r\n'), body], 0, false);
    case 3: {
      // A slow body: in pieces with pauses, then complete.
      const pieces = [head(`Content-Length: ${body.length}\r\n`), ...splitIn(body, 4)];
      return rawRequest(port, pieces, 20 + r.int(40), false);
    }
    case 4:
      // A body cut off: the client goes away mid-body.
      return rawRequest(port, [head(`Content-Length: ${body.length + 100}\r\n`), body], 0, true);
    default:
      return rawRequest(port, [head('Transfer-Encoding: chunked\r\n'), `zz\r\n${body}\r\n0\r\n\r\n`], 0, false);
  }
}

function splitIn(body: Buffer, n: number): Buffer[] {
  const size = Math.ceil(body.length / n) || 1;
  return Array.from({ length: n }, (_, i) => body.subarray(i * size, (i + 1) * size));
}

/** One request to one receiver, recorded in the tally. */
async function fuzzOne(r: Random, target: Target, port: number, agent: Agent, tally: Tally): Promise<void> {
  const route = r.pick(target.routes);
  const path = `/hooks/fuzz/${target.name}${route ? `/${route}` : ''}${target.query}`;
  let status: number | string;
  const roll = r.next();
  if (roll < 0.04) status = await rawCase(r, port, path);
  else {
    const big = roll < 0.045;
    const { body, headers } = big ? { body: Buffer.alloc(1 + r.int(3 << 20), 'a'), headers: {} } : malformedBody(r);
    const method = r.next() < 0.02 ? r.pick(['GET', 'PUT', 'DELETE']) : 'POST';
    status = await request(`http://127.0.0.1:${port}${path}`, {
      method,
      body: method === 'GET' ? undefined : body,
      headers: { ...headers, ...signatureHeaders(r, target, body) },
      dispatcher: agent,
    }).then(
      async (res) => {
        const text = await res.body.text();
        if (res.statusCode >= 500) tally.fiveXX.push(`${target.name} ${path}: ${res.statusCode} ${text.slice(0, 200)}`);
        return res.statusCode;
      },
      (err: Error & { code?: string }) => err.code ?? err.message,
    );
  }
  tally.requests++;
  count(tally, status);
  if (typeof status === 'number' && status >= 500 && roll < 0.04) tally.fiveXX.push(`${target.name} raw: ${status}`);
}

export interface FuzzResult {
  rounds: { requests: number; rssMiB: Record<string, number>; byStatus: Record<string, number> }[];
  peakRssMiB: Record<string, number>;
  startRssMiB: Record<string, number>;
  fiveXX: string[];
  errorLines: string[];
  crashed: string[];
}

const memory = (pid: number) => {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
  return { rss: kib('VmRSS') / 1024, peak: kib('VmHWM') / 1024 };
};

/** Starts nats-server and one receiver per target, sends `rounds` rounds of `requests` requests, and stops all. */
export async function fuzzReceivers(options: { requests: number; rounds: number; seed: number; concurrency?: number }) {
  const work = tempDir('hookyard-fuzz-');
  const nats = await startNats(work.path, join(work.path, 'nats'));
  const receivers: { target: Target; port: number; proc: CliProcess }[] = [];
  const agent = new Agent({ connections: 64, keepAliveTimeout: 10_000 });
  // The bundle with the node flags the image runs (`npm run fuzz` builds it); the sources when there is none.
  const cli = existsSync(join(root, 'dist/cli.mjs')) ? bundleCli(imageNodeFlags()) : sourceCli();
  try {
    const nc = await connect({ servers: nats.url });
    const jsm = await jetstreamManager(nc);
    mkdirSync(join(work.path, 'secrets/fuzz'), { recursive: true });
    writeFileSync(join(work.path, 'secrets/fuzz/secret'), secret);
    for (const target of targets) {
      const resource = {
        apiVersion: 'hookyard.io/v1alpha1',
        kind: 'ProviderEndpoint',
        metadata: { name: target.name, namespace: 'fuzz' },
        spec: { ...target.spec, stream: { storage: 'memory', maxAge: '1h' } },
      };
      const spec = (parseResource(resource) as ProviderEndpoint).spec;
      await ensureStream(jsm, endpointStreamConfig('fuzz', target.name, spec));
      const file = join(work.path, `${target.name}.yaml`);
      writeFileSync(file, stringify(resource));
      const port = await freePort();
      const args = ['receiver', '--config', file, '--secrets-dir', join(work.path, 'secrets'), '--nats-url', nats.url];
      const proc = runCli(cli, [...args, '--port', String(port)]);
      receivers.push({ target, port, proc });
    }
    await nc.close();
    for (const { port, proc } of receivers) await waitReady(proc, `http://127.0.0.1:${port}/readyz`, 60);
    await sleep(1000);
    const rss = () => Object.fromEntries(receivers.map((x) => [x.target.name, memory(x.proc.child.pid as number).rss]));
    const result: FuzzResult = {
      rounds: [],
      peakRssMiB: {},
      startRssMiB: rss(),
      fiveXX: [],
      errorLines: [],
      crashed: [],
    };
    const r = random(options.seed);
    for (let round = 0; round < options.rounds; round++) {
      const tally: Tally = { requests: 0, byStatus: new Map(), fiveXX: result.fiveXX };
      let sent = 0;
      const worker = async () => {
        while (sent < options.requests) {
          sent++;
          const target = receivers[r.int(receivers.length)] as (typeof receivers)[number];
          await fuzzOne(r, target.target, target.port, agent, tally);
        }
      };
      await Promise.all(Array.from({ length: options.concurrency ?? 32 }, worker));
      await sleep(500);
      result.rounds.push({
        requests: tally.requests,
        rssMiB: rss(),
        byStatus: Object.fromEntries([...tally.byStatus].sort((a, b) => String(a[0]).localeCompare(String(b[0])))),
      });
    }
    for (const { target, proc } of receivers) {
      result.peakRssMiB[target.name] = memory(proc.child.pid as number).peak;
      if (proc.child.exitCode !== null || proc.child.signalCode !== null) result.crashed.push(target.name);
      for (const line of proc.output().split('\n')) {
        if (/"level":(50|60)/.test(line)) result.errorLines.push(`${target.name}: ${line.slice(0, 300)}`);
      }
    }
    return result;
  } finally {
    await agent.close();
    for (const { proc } of receivers) await proc.stop();
    await nats.stop();
    work.remove();
  }
}

/** What must hold: nothing 5xx, no crash, no error line; memory bounded when `checkMemory`. */
export function problems(result: FuzzResult, checkMemory: boolean): string[] {
  const found = [
    ...result.fiveXX.slice(0, 20).map((x) => `5xx: ${x}`),
    ...result.crashed.map((x) => `crashed: ${x}`),
    ...result.errorLines.slice(0, 20).map((x) => `error log line: ${x}`),
  ];
  if (!checkMemory) return found;
  for (const [name, peak] of Object.entries(result.peakRssMiB))
    if (peak >= 200) found.push(`${name}: peak RSS ${peak.toFixed(0)} MiB (limit 200)`);
  const [first, last] = [result.rounds[0], result.rounds.at(-1)];
  if (first && last && first !== last) {
    for (const [name, rss] of Object.entries(last.rssMiB)) {
      const before = first.rssMiB[name] ?? 0;
      if (rss > before * 1.1)
        found.push(`${name}: RSS ${before.toFixed(0)} -> ${rss.toFixed(0)} MiB in the last round (limit +10 %)`);
    }
  }
  return found;
}

if (import.meta.main) {
  const requests = Number(process.env.REQUESTS ?? 100_000);
  const rounds = Number(process.env.ROUNDS ?? 2);
  const seed = Number(process.env.SEED ?? 1);
  const report = benchReport('fuzz');
  const started = Date.now();
  const result = await fuzzReceivers({ requests, rounds, seed });
  const seconds = (Date.now() - started) / 1000;
  report.line(
    `${rounds} rounds of ${requests} requests over ${targets.length} receivers, seed ${seed}, ${seconds.toFixed(0)} s, load average after ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}`,
  );
  report.line(`receivers: node ${[...imageNodeFlags(), 'dist/cli.mjs'].join(' ')} receiver`);
  report.line();
  report.line(
    '| receiver | RSS at start MiB | ' +
      result.rounds.map((_, i) => `after round ${i + 1} MiB`).join(' | ') +
      ' | peak MiB |',
  );
  report.line(`| --- | --- | ${result.rounds.map(() => '---').join(' | ')} | --- |`);
  for (const name of Object.keys(result.startRssMiB)) {
    const cells = result.rounds.map((x) => (x.rssMiB[name] ?? 0).toFixed(0));
    report.line(
      `| ${name} | ${(result.startRssMiB[name] ?? 0).toFixed(0)} | ${cells.join(' | ')} | ${(result.peakRssMiB[name] ?? 0).toFixed(0)} |`,
    );
  }
  for (const [i, round] of result.rounds.entries())
    report.line(`round ${i + 1} answers: ${JSON.stringify(round.byStatus)}`);
  const found = problems(result, true);
  report.line(
    found.length ? `FAILED:\n${found.join('\n')}` : 'no 5xx, no crash, no error-level log line, memory bounded',
  );
  report.finish([
    { name: 'problems found (5xx, crashes, error lines, memory bounds)', value: found.length, op: '<=', limit: 0 },
  ]);
}
