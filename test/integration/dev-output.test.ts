// What `hookyard dev` prints, as a person sees it: every URL each endpoint serves, one readable line per request and
// per delivery, a --sink suggestion for a target that does not resolve, JSON only with --log-format json, and a bad
// Secret reference refused before anything starts.
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { presets } from '../../src/providers/presets.ts';
import { freePort } from '../../src/runtime/net.ts';
import { type CliProcess, runCli, sourceCli } from '../harness/cli.ts';
import { root, tempDir } from '../harness/servers.ts';

async function outputMatches(proc: CliProcess, pattern: RegExp, seconds = 20): Promise<void> {
  for (let i = 0; i < seconds * 10 && !pattern.test(proc.output()); i++) await sleep(100);
  assert.match(proc.output(), pattern);
}

const proignSecret = 'replace-with-your-webhook-secret';

describe('hookyard dev output', () => {
  const work = tempDir('hookyard-dev-output-');
  after(() => work.remove());

  async function startSink(): Promise<string> {
    const sink = createServer((req, res) => req.resume().on('end', () => res.writeHead(200).end()));
    await new Promise<void>((ok) => sink.listen(0, '127.0.0.1', ok));
    after(() => sink.close());
    return `http://127.0.0.1:${(sink.address() as { port: number }).port}`;
  }

  async function dev(args: string[], dir = join(root, 'examples')): Promise<{ proc: CliProcess; port: number }> {
    const port = await freePort();
    // Its own nats-server (as without a cluster), so the examples' event ids are new to it.
    const proc = runCli(sourceCli(), ['dev', '-f', dir, '--port', String(port), ...args]);
    after(() => proc.stop());
    await outputMatches(proc, /Ctrl-C stops/);
    return { proc, port };
  }

  const send = async (port: number, secret: string) => {
    const proc = runCli(sourceCli(), [
      'send',
      'proign',
      '--url',
      `http://127.0.0.1:${port}/hooks/default/proign`,
      '--secret',
      secret,
      '--sample',
      'documented',
    ]);
    await proc.exited;
  };

  it('prints every route URL, and one line per request and per delivery', async () => {
    const { proc, port } = await dev(['--sink', await startSink()]);
    const base = `http://127.0.0.1:${port}/hooks/default`;
    for (const provider of ['printiq', 'fotoweb', 'siteflow'] as const) {
      const routes = presets[provider].routes ?? [];
      assert.ok(routes.length > 1);
      for (const route of routes) assert.ok(proc.output().includes(`${base}/${provider}/${route.path}\n`), route.path);
    }
    assert.match(proc.output(), new RegExp(`^ {2}proign +${base}/proign$`, 'm'));

    await send(port, proignSecret);
    await outputMatches(proc, /^proign +order\.shipped +200 accepted +evt_abc123$/m);
    await outputMatches(proc, /^→ proign-shipments {2}200 {2}\d+ ms$/m);
    await send(port, 'not-the-secret');
    await outputMatches(proc, /^proign +- +401 bad_signature +X-Proign-Signature does not match$/m);
    assert.doesNotMatch(proc.output(), /"level":/);
    assert.equal((proc.output().match(/subscription=/g) ?? []).length, 0);
  });

  it('says why a delivery is retried, and suggests --sink when the target does not resolve', async () => {
    const dir = join(work.path, 'unresolvable');
    cpSync(join(root, 'examples'), dir, { recursive: true });
    const file = join(dir, 'proign.yaml');
    // .invalid never resolves (RFC 6761): the laptop case of a cluster-internal Service name.
    writeFileSync(
      file,
      readFileSync(file, 'utf8').replace('fulfillment.shop.svc.cluster.local', 'fulfillment.invalid'),
    );
    const { proc, port } = await dev([], dir);
    assert.match(
      proc.output(),
      /proign-shipments delivers to fulfillment\.invalid, which does not resolve here: pass --sink URL/,
    );
    await send(port, proignSecret);
    await outputMatches(
      proc,
      /^→ proign-shipments {2}retry in 1m: ENOTFOUND fulfillment\.invalid \(does not resolve here: run with --sink URL/m,
    );
  });

  it('prints the structured logs with --log-format json, with one subscription key per entry', async () => {
    const { proc, port } = await dev(['--sink', await startSink(), '--log-format', 'json']);
    await send(port, proignSecret);
    await outputMatches(proc, /"msg":"request"/);
    const entries = proc
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'));
    const request = entries.find((l) => l.includes('"msg":"request"')) ?? '';
    // The stored event id, which targets see too: the dedup key, led by the event type.
    assert.equal(JSON.parse(request).eventId, 'order.shipped:evt_abc123');
    for (const line of entries) assert.ok((line.match(/"subscription":/g) ?? []).length <= 1, line);
    assert.ok(entries.some((l) => l.includes('"subscription":"proign-shipments"')));
  });

  it('refuses a bad Secret reference before starting a nats-server or a temporary store', async () => {
    const dir = join(work.path, 'bad-secret');
    cpSync(join(root, 'examples'), dir, { recursive: true });
    const file = join(dir, 'proign.yaml');
    writeFileSync(file, readFileSync(file, 'utf8').replace('key: key', 'key: signing-key'));
    const tmp = join(work.path, 'tmp');
    mkdirSync(tmp);
    const proc = runCli(sourceCli(), ['dev', '-f', dir, '--port', '0'], { ...process.env, TMPDIR: tmp });
    assert.equal(await proc.exited, 1);
    assert.match(
      proc.output(),
      /WebhookSubscription\/proign-shipments: spec\.signing\.secretRefs\[0\] names key "signing-key" of Secret "fulfillment-signing", which has no such key/,
    );
    assert.doesNotMatch(proc.output(), /at .*\.ts:\d+/);
    assert.deepEqual(readdirSync(tmp), []);
  });

  it('takes its nats-server and temporary store along when stopped while starting', async () => {
    const tmp = join(work.path, 'tmp-interrupted');
    mkdirSync(tmp);
    const proc = runCli(sourceCli(), ['dev', '-f', join(root, 'examples'), '--port', '0'], {
      ...process.env,
      TMPDIR: tmp,
    });
    // Polled often, so the stop comes while it starts (a loaded machine may take seconds to get here).
    for (let i = 0; i < 3000 && readdirSync(tmp).length === 0; i++) await sleep(10);
    const [store] = readdirSync(tmp);
    assert.ok(store, proc.output());
    proc.kill('SIGTERM');
    await proc.exited;
    for (let i = 0; i < 300 && readdirSync(tmp).length > 0; i++) await sleep(100);
    assert.deepEqual(readdirSync(tmp), []);
  });
});
