// Dev mode, the embedded default: the demo end to end, bad manifests refused whole, files reloaded (by reload(),
// and by `hookyard dev`'s file watcher when a file changes on disk).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { type Dev, startDev } from '../../src/dev/dev.ts';
import { InvalidManifests, readManifests } from '../../src/dev/manifests.ts';
import { sendSample } from '../../src/dev/send.ts';
import { samples } from '../../src/providers/samples.ts';
import { requireEnv } from '../harness/kube.ts';
import { root, tempDir } from '../harness/servers.ts';
import { waitFor } from '../harness/wait.ts';

const quiet = pino({ level: 'silent' });

describe('dev mode', () => {
  const work = tempDir('hookyard-dev-test-');
  let dev: Dev | undefined;
  after(async () => {
    await dev?.stop();
    work.remove();
  });

  it('plays every seed provider through the examples with the outcomes their documents call for (make demo)', async () => {
    const { code, stdout } = await new Promise<{ code: number; stdout: string }>((ok) =>
      execFile(process.execPath, [join(root, 'scripts/demo.ts')], { cwd: root }, (err, stdout) =>
        ok({ code: err ? ((err.code as number) ?? 1) : 0, stdout }),
      ),
    );
    assert.equal(code, 0, stdout);
    const rows = stdout.split('\n').filter((l) => /^\| (shopflix|proign|fotoweb|printiq|siteflow) /.test(l));
    assert.equal(rows.length, 11);
    assert.ok(
      rows.every((r) => r.includes('| yes')),
      stdout,
    );
    assert.match(stdout, /\| proign +\| forged signature +\| 401 +\| bad_signature/);
    assert.match(stdout, /\| shopflix +\| registration check \(unsigned\) +\| 200 +\| registration_check/);
    assert.match(stdout, /\| fotoweb-orders +\| 2 +\| 2 +\| yes/);
  });

  it('refuses bad manifests with the field and the reason, all of them at once, and starts nothing', async () => {
    const dir = join(work.path, 'bad');
    cpSync(join(root, 'examples'), dir, { recursive: true });
    writeFileSync(
      join(dir, 'zz-bad.yaml'),
      `apiVersion: hookyard.io/v1alpha1
kind: WebhookSubscription
metadata: {name: broken}
spec:
  sources: [{endpoint: proign}]
  filter: "body.total >"
  target: {url: "http://x.example", service: {name: y}}
---
apiVersion: hookyard.io/v1alpha1
kind: ProviderEndpoint
metadata: {name: open}
spec: {provider: paypal, verification: []}
`,
    );
    await assert.rejects(
      startDev({ paths: [dir], natsUrl: requireEnv('HOOKYARD_TEST_NATS_URL'), port: 0, host: '127.0.0.1', log: quiet }),
      (err: unknown) => {
        assert.ok(err instanceof InvalidManifests);
        const text = err.problems.join('\n');
        assert.match(text, /WebhookSubscription\/broken is invalid: .*spec\.filter: filter is not valid CEL/);
        assert.match(text, /spec\.target: target sets exactly one of url and service/);
        assert.match(text, /ProviderEndpoint\/open is invalid: .*spec\.provider/);
        assert.match(text, /spec\.verification/);
        return true;
      },
    );
  });

  it('refuses a subscription whose sources match no endpoint', () => {
    const file = join(work.path, 'orphan.yaml');
    writeFileSync(
      file,
      'apiVersion: hookyard.io/v1alpha1\nkind: WebhookSubscription\nmetadata: {name: orphan}\nspec: {sources: [{endpoint: nowhere}], target: {url: "http://x.example"}}\n',
    );
    assert.throws(() => readManifests([file]), /WebhookSubscription\/orphan: no ProviderEndpoint matches its sources/);
  });

  it('serves the examples, delivers to the sink, and picks up a changed file', async () => {
    const dir = join(work.path, 'live');
    cpSync(join(root, 'examples'), dir, { recursive: true });
    const arrived: string[] = [];
    const sink = createServer((req, res) => {
      arrived.push(req.url ?? '');
      req.resume().on('end', () => res.writeHead(200).end());
    });
    await new Promise<void>((ok) => sink.listen(0, '127.0.0.1', ok));
    const sinkUrl = `http://127.0.0.1:${(sink.address() as { port: number }).port}`;
    dev = await startDev({
      paths: [dir],
      natsUrl: requireEnv('HOOKYARD_TEST_NATS_URL'),
      port: 0,
      host: '127.0.0.1',
      sink: sinkUrl,
      log: quiet,
    });
    const url = `http://127.0.0.1:${dev.port}/hooks/default/proign`;
    const proign = samples.proign?.[0];
    assert.ok(proign);
    const secret = dev.manifests.secrets.get('proign-webhook', 'secret')?.toString();
    assert.equal((await sendSample('proign', url, proign, { secret })).status, 200);
    for (let i = 0; i < 100 && !arrived.includes('/proign-shipments'); i++) await sleep(50);
    assert.deepEqual(arrived, ['/proign-shipments']);

    // Rotate the PROIGN secret in the file: the reload accepts the new one and refuses the old.
    const file = join(dir, 'proign.yaml');
    writeFileSync(file, readFileSync(file, 'utf8').replace('replace-with-your-webhook-secret', 'rotated-secret'));
    await dev.reload();
    const again = { ...proign, body: Buffer.from(proign.body.toString().replace('evt_abc123', 'evt_after_rotation')) };
    assert.equal((await sendSample('proign', url, again, { secret: 'rotated-secret' })).status, 200);
    assert.equal((await sendSample('proign', url, again, { secret })).status, 401);
    sink.close();
  });

  it('runs as `hookyard dev`, answers `hookyard send`, reloads a file changed on disk, and stops on Ctrl-C', async (t) => {
    const { spawn } = await import('node:child_process');
    const { freePort } = await import('../../src/runtime/net.ts');
    const port = await freePort();
    const natsUrl = requireEnv('HOOKYARD_TEST_NATS_URL');
    const cli = join(root, 'src/cli.ts');
    const dir = join(work.path, 'watched');
    cpSync(join(root, 'examples'), dir, { recursive: true });
    const child = spawn(process.execPath, [cli, 'dev', '-f', dir, '--nats-url', natsUrl, '--port', String(port)]);
    t.after(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    let out = '';
    child.stdout.on('data', (d) => {
      out += String(d);
    });
    for (let i = 0; i < 200 && !out.includes('Ctrl-C stops'); i++) await sleep(50);
    assert.match(out, new RegExp(`proign +http://127.0.0.1:${port}/hooks/default/proign`));
    assert.match(
      out,
      /siteflow +http:\/\/.*\/hooks\/default\/siteflow\/statusupdate\n +http:\/\/.*\/siteflow\/ordersubmissionerror\n/,
    );
    const sent = await new Promise<string>((ok) =>
      execFile(
        process.execPath,
        [
          cli,
          'send',
          'proign',
          '--url',
          `http://127.0.0.1:${port}/hooks/default/proign`,
          '--secret',
          'replace-with-your-webhook-secret',
        ],
        (_err, stdout) => ok(stdout),
      ),
    );
    assert.match(sent, /order\.shipped \(its documented payload\): 200 /);

    // Only the file watcher can make dev mode take the rotated secret: nothing else calls reload here.
    const file = join(dir, 'proign.yaml');
    writeFileSync(file, readFileSync(file, 'utf8').replace('replace-with-your-webhook-secret', 'rotated-on-disk'));
    const proign = samples.proign?.[0];
    assert.ok(proign);
    const url = `http://127.0.0.1:${port}/hooks/default/proign`;
    let n = 0;
    const signedWith = async (secret: string) => {
      const body = Buffer.from(proign.body.toString().replace('evt_abc123', `evt_watched_${n++}`));
      return (await sendSample('proign', url, { ...proign, body }, { secret })).status;
    };
    await waitFor('the changed file is served', async () => (await signedWith('rotated-on-disk')) === 200);
    assert.equal(await signedWith('replace-with-your-webhook-secret'), 401);
    child.kill('SIGINT');
    const code = await new Promise((ok) => child.once('exit', ok));
    assert.equal(code, 0);
  });
});
