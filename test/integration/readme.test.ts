// The README's quickstart as a newcomer runs it: each command of its first block, as written, in a fresh clone of
// the repository, once with the machine's own Node (older than 24 here) and once with Node 24. The clone gets the
// caches a first `make deps` and `make tools` would fill (Node 24, the npm packages, nats-server) linked in from
// this checkout, so the test needs no registry; everything else is the clone's own.
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { delimiter, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '../../src/runtime/net.ts';
import { root, tempDir } from '../harness/servers.ts';

/** The commands of the first code block under "Quickstart". */
function quickstart(): string[] {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Quickstart'));
  const block = /```\n([\s\S]*?)```/.exec(section)?.[1] ?? '';
  return block.split('\n').filter((line) => line.trim() !== '');
}

/** A clone of the committed checkout, with the caches linked in and `node_modules` of its own (linked packages). */
function freshClone(dir: string, caches: { tools: boolean }): string {
  const clone = join(dir, 'hookyard');
  execFileSync('git', ['clone', '--quiet', root, clone]);
  mkdirSync(join(clone, '.cache'));
  symlinkSync(join(root, '.cache/node24'), join(clone, '.cache/node24'));
  if (caches.tools) symlinkSync(join(root, '.cache/bin'), join(clone, '.cache/bin'));
  // Its own folder, so nothing an install in the clone might do reaches this checkout's packages.
  mkdirSync(join(clone, 'node_modules'));
  for (const entry of readdirSync(join(root, 'node_modules'))) {
    if (entry !== '.stamp') symlinkSync(join(root, 'node_modules', entry), join(clone, 'node_modules', entry));
  }
  writeFileSync(join(clone, 'node_modules/.stamp'), '');
  return clone;
}

/** PATH without Node 24's cache folder (so `node` is the machine's), and the version that `node` then is. */
function machinePath(): { path: string; major: number } {
  const path = (process.env.PATH ?? '')
    .split(delimiter)
    .filter((p) => !p.includes('.cache/node24'))
    .join(delimiter);
  const version = execFileSync('node', ['-p', 'process.versions.node'], { env: { ...process.env, PATH: path } });
  return { path, major: Number(version.toString().split('.')[0]) };
}

const portFree = (port: number) =>
  new Promise<boolean>((ok) => {
    const server = createServer()
      .once('error', () => ok(false))
      .listen(port, '127.0.0.1', () => server.close(() => ok(true)));
  });

interface Shell {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number>;
}

/**
 * Runs one README line with sh (exec, so the command gets the signals a terminal's Ctrl-C sends), in its own process
 * group, recorded by PID, so that stopping it stops what it started.
 */
function shell(line: string, cwd: string, env: NodeJS.ProcessEnv): Shell {
  const child = spawn('sh', ['-c', `exec ${line}`], { cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (d) => {
    output += d;
  });
  child.stderr?.on('data', (d) => {
    output += d;
  });
  const exited = new Promise<number>((ok) => child.once('exit', (code, signal) => ok(code ?? (signal ? 128 : 0))));
  return { child, output: () => output, exited };
}

describe('the README quickstart on a fresh clone', () => {
  const work = tempDir('hookyard-readme-');
  const running: Shell[] = [];
  after(async () => {
    for (const s of running) {
      try {
        if (s.child.exitCode === null && s.child.pid) process.kill(-s.child.pid, 'SIGKILL');
      } catch {
        // the group is gone already
      }
    }
    work.remove();
  });

  const machine = machinePath();
  const variants = [
    { name: `the machine's Node ${machine.major}`, path: machine.path },
    { name: 'Node 24', path: [join(root, '.cache/node24/node_modules/.bin'), machine.path].join(delimiter) },
  ];
  for (const variant of variants) {
    it(`runs every quickstart command as written with ${variant.name}`, async () => {
      const clone = freshClone(join(work.path, variant.name.replace(/\W+/g, '-')), { tools: true });
      const env = { ...process.env, PATH: variant.path };
      // As written the commands use port 8080; only when something else holds it here is another port put in.
      const port = (await portFree(8080)) ? 8080 : await freePort();
      const lines = quickstart().map((l) =>
        port === 8080 ? l : l.replace(':8080/', `:${port}/`).replace(/( dev -f \S+)/, `$1 --port ${port}`),
      );
      assert.deepEqual(
        lines.map((l) => l.split(' ').slice(0, 2).join(' ')),
        ['make demo', 'bin/hookyard dev', 'bin/hookyard send'],
      );
      let dev: Shell | undefined;
      for (const line of lines) {
        const run = shell(line, clone, env);
        running.push(run);
        if (line.includes(' dev ')) {
          dev = run;
          for (let i = 0; i < 300 && !run.output().includes('Ctrl-C stops'); i++) await sleep(100);
          assert.match(run.output(), new RegExp(`proign +http://127\\.0\\.0\\.1:${port}/hooks/default/proign\\n`));
          continue;
        }
        assert.equal(await run.exited, 0, `${line}\n${run.output()}`);
        if (line.startsWith('make demo'))
          assert.match(run.output(), /Every outcome is the one the providers' documents/);
        if (line.includes(' send ')) assert.match(run.output(), /^proign order\.shipped .*: 200 /m);
      }
      assert.ok(dev?.child.pid);
      for (let i = 0; i < 100 && !/evt_abc123/.test(dev.output()); i++) await sleep(100);
      assert.match(dev.output(), /^proign +order\.shipped +200 accepted +evt_abc123$/m);
      process.kill(-dev.child.pid, 'SIGINT');
      assert.equal(await dev.exited, 0, dev.output());
    });
  }

  it('says what to install or pass when make demo finds no nats-server and no Go', async () => {
    const clone = freshClone(join(work.path, 'no-tools'), { tools: false });
    const path = machine.path
      .split(delimiter)
      .filter((p) => !existsSync(join(p, 'go')) && !existsSync(join(p, 'nats-server')))
      .join(delimiter);
    const run = shell('make demo', clone, { ...process.env, PATH: path });
    running.push(run);
    assert.notEqual(await run.exited, 0);
    assert.match(run.output(), /no nats-server is on the PATH, and \.cache\/bin\/nats-server is not built/);
    assert.match(run.output(), /go install github\.com\/nats-io\/nats-server\/v2@latest/);
    assert.match(run.output(), /make demo NATS_URL=nats:\/\/HOST:4222/);
    assert.doesNotMatch(run.output(), /^\s+at /m);
  });

  it('packs the bundle as a `hookyard` command that runs on Node 24 with nothing else', async () => {
    const clone = freshClone(join(work.path, 'pack'), { tools: false });
    const env = { ...process.env, PATH: variants[1]?.path };
    const pack = shell('npm pack --silent', clone, env);
    assert.equal(await pack.exited, 0, pack.output());
    const tarball = join(clone, pack.output().trim().split('\n').at(-1) ?? '');
    const unpacked = join(work.path, 'unpacked');
    mkdirSync(unpacked);
    execFileSync('tar', ['-xzf', tarball, '-C', unpacked]);
    const manifest = JSON.parse(readFileSync(join(unpacked, 'package/package.json'), 'utf8'));
    const bin = join(unpacked, 'package', manifest.bin.hookyard);
    assert.match(readFileSync(bin, 'utf8'), /^#!\/usr\/bin\/env node\n/);
    assert.ok(!existsSync(join(unpacked, 'package/src')));
    const version = shell(`node ${bin} version`, unpacked, env);
    assert.equal(await version.exited, 0, version.output());
    assert.match(version.output(), /^hookyard 0\.\d+\.\d+ \(commit [0-9a-f]{12}, node 24\./);
  });
});
