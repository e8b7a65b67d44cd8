// The hookyard CLI as a user types it: help on stdout, wrong words named, the version of what runs.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { root } from '../harness/servers.ts';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

export function hookyard(args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<Run> {
  return new Promise((ok) =>
    execFile(
      process.execPath,
      [join(root, 'src/cli.ts'), ...args],
      { env: options.env ?? process.env, cwd: options.cwd ?? root, timeout: 60_000 },
      (err, stdout, stderr) => ok({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

const commands = [
  'operator',
  'receiver',
  'dispatcher',
  'dev',
  'send',
  'events',
  'event',
  'attempts',
  'replay',
  'dlq',
  'test',
  'version',
];

describe('the hookyard CLI', () => {
  for (const command of commands) {
    it(`prints \`hookyard ${command} --help\` on stdout, every flag described, and exits 0`, async () => {
      const run = await hookyard([command, '--help']);
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stderr, '');
      assert.match(run.stdout, new RegExp(`^usage: hookyard ${command}`));
      assert.match(run.stdout, /-h, --help +show this help/);
      for (const line of run.stdout.split('\n').filter((l) => /^ +(-\w, )?--/.test(l))) assert.match(line, /\S +\S/);
    });
  }

  it('lists the commands on stdout for `hookyard` and `hookyard --help`', async () => {
    for (const args of [[], ['--help']]) {
      const run = await hookyard(args);
      assert.equal(run.code, 0);
      for (const command of commands) assert.match(run.stdout, new RegExp(`^  ${command} `, 'm'));
    }
  });

  it('names an unknown command and lists the commands', async () => {
    const run = await hookyard(['bogus']);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /unknown command "bogus"/);
    assert.match(run.stderr, /^ {2}dev /m);
  });

  it('names an unknown flag, and a numeric flag that is not a number with what to type', async () => {
    const unknown = await hookyard(['dev', '--bogus']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /hookyard dev: unknown flag --bogus; hookyard dev --help lists the flags/);
    const workers = await hookyard(['operator', '--image', 'hookyard:dev', '--workers', 'x']);
    assert.equal(workers.code, 2);
    assert.match(workers.stderr, /--workers "x" is not a whole number of at least 1; type for example --workers 4/);
    const reload = await hookyard(['receiver', '--reload-interval', '1ms']);
    assert.equal(reload.code, 2);
    assert.match(reload.stderr, /--reload-interval "1ms" is not a whole number of at least 100/);
  });

  it('prints the package version and the commit for `version` and `--version`', async () => {
    const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
    for (const args of [['version'], ['--version']]) {
      const run = await hookyard(args);
      assert.equal(run.code, 0);
      assert.match(run.stdout, new RegExp(`^hookyard ${version.replaceAll('.', '\\.')} \\(commit [0-9a-f]{12}, node `));
    }
  });
});
