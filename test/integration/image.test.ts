// The image, without a Docker engine: the Dockerfile passes BuildKit's own lint rules (.cache/bin/dockerfile-lint,
// built from tools/dockerfile-lint), its final stage is made of what `npm run build` writes and runs the CLI as a
// numeric non-root user, and the CLI runs from a copy of exactly what the final stage copies, the way the image
// runs it: the ENTRYPOINT's command line, the image's environment, cwd /, as user 65532, as PID 1 and with every
// file system read-only, so nothing it needs can come from the repository or be written. A machine that cannot
// isolate it so (it needs root, unshare, mount and setpriv) skips those tests and says why.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import type { ProviderEndpoint } from '../../src/api/provider-endpoint.ts';
import { parseResource } from '../../src/api/validate.ts';
import { renderEndpoint } from '../../src/operator/render.ts';
import { type Cli, type CliProcess, imageNodeFlags, runCli } from '../harness/cli.ts';
import { binDir, freePort, root, tempDir } from '../harness/servers.ts';
import { deliverSignedWebhook, within } from './delivery-support.ts';

interface LintReport {
  warnings: { rule: string; message: string; line: number }[];
  error?: string;
  copies: { stage: string; from?: string; sources: string[]; dest: string; workdir: string; line: number }[];
  image: { user: string; entrypoint: string[] | null; env: string[] | null; workingDir: string };
}

function lint(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const bin = join(binDir, 'dockerfile-lint');
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run make tools`);
  return new Promise((ok) =>
    execFile(bin, [...args, '-context', root, join(root, 'Dockerfile')], (err, stdout, stderr) =>
      ok({ code: err ? ((err.code as number) ?? 1) : 0, stdout, stderr }),
    ),
  );
}

// In a private mount namespace, every file system but /proc, /sys and /dev is remounted read-only before the
// command runs, as a read-only root filesystem leaves a container nothing to write to.
const readOnlyMounts = `awk '{print $2}' /proc/self/mounts | while read -r m; do
  case "$m" in /proc*|/sys*|/dev*) ;; *) mount -o remount,bind,ro "$m" || exit 1 ;; esac
done
exec "$@"`;

/**
 * Runs a command as user 65532, PID 1 of its own PID namespace, with every file system read-only, if this machine
 * can: root, unshare, mount and setpriv, and a node that user may run (not one inside a home directory only root
 * may enter). Proven by a write into `dir` that must fail with EROFS.
 */
function isolation(dir: string): { wrapper: string[]; how: string } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const wrapper = [
    ...['unshare', '--mount', '--propagation', 'private', '--pid', '--fork', '--kill-child'],
    ...['sh', '-c', readOnlyMounts, 'sh'],
    ...['setpriv', '--reuid=65532', '--regid=65532', '--clear-groups'],
  ];
  const probe = `try { require('fs').writeFileSync(process.argv[1] + '/probe', '') } catch (e) {
    process.exit(e.code === 'EROFS' && process.pid === 1 && process.getuid() === 65532 ? 0 : 1) }; process.exit(1)`;
  try {
    execFileSync(wrapper[0] as string, [...wrapper.slice(1), process.execPath, '-e', probe, dir], { stdio: 'ignore' });
  } catch {
    return undefined;
  }
  return { wrapper, how: 'as 65532, PID 1, read-only root' };
}

const minimalEndpoint = {
  apiVersion: 'hookyard.io/v1alpha1',
  kind: 'ProviderEndpoint',
  metadata: { name: 'x', namespace: 'x' },
  spec: { provider: 'github', verification: [{ none: true }] },
};

describe('the image (Dockerfile)', () => {
  let report: LintReport;
  const rootfs = tempDir('hookyard-image-');
  chmodSync(rootfs.path, 0o755);
  after(() => rootfs.remove());
  before(async () => {
    const r = await lint('-json');
    report = JSON.parse(r.stdout) as LintReport;
  });

  it("passes BuildKit's lint rules, and every COPY source is in the build context after .dockerignore", async () => {
    const r = await lint();
    assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
    assert.equal(r.stdout, '');
  });

  const finalStage = () => report.copies.at(-1)?.stage;
  /** The build stage copies the repository's layout to its workdir: a path there is that path in the repository. */
  const inRepository = (buildStage: string, path: string) => {
    const fromContext = report.copies.filter((c) => c.stage === buildStage && !c.from);
    assert.ok(fromContext.length > 0, `stage ${buildStage} copies nothing from the context`);
    const workdir = fromContext[0]?.workdir ?? '/';
    for (const c of fromContext) {
      assert.equal(c.workdir, workdir);
      for (const src of c.sources) {
        const at = posix.resolve(workdir, src);
        const dest = posix.resolve(workdir, c.dest);
        assert.ok(dest === at || dest === posix.dirname(at), `line ${c.line}: ${src} is not copied to its own path`);
      }
    }
    assert.ok(path.startsWith(`${workdir}/`), `${path} is outside the build stage's ${workdir}`);
    return join(root, posix.relative(workdir, path));
  };

  it('holds in its final stage only what npm run build writes, and runs the CLI as a numeric non-root user', () => {
    const finals = report.copies.filter((c) => c.stage === finalStage());
    assert.ok(finals.length > 0);
    for (const c of finals) {
      assert.ok(c.from, `line ${c.line}: the final stage copies from the build context`);
      for (const src of c.sources) {
        const local = inRepository(c.from, src);
        assert.ok(local.startsWith(join(root, 'dist')), `line ${c.line}: ${src} is not build output`);
        assert.ok(existsSync(local), `line ${c.line}: ${src} (${local}) does not exist after npm run build`);
      }
    }

    const [uid, gid] = report.image.user.split(':');
    assert.match(report.image.user, /^\d+(:\d+)?$/, 'USER is numeric, so runAsNonRoot can verify it');
    assert.notEqual(Number(uid), 0);
    const endpoint = parseResource(minimalEndpoint) as ProviderEndpoint;
    const pod = renderEndpoint(endpoint, { image: 'hookyard', natsUrl: 'nats://nats:4222' }).deployment.spec?.template
      .spec?.securityContext;
    assert.equal(Number(uid), pod?.runAsUser, "USER is the rendered Deployments' runAsUser");
    if (gid !== undefined) assert.equal(Number(gid), pod?.runAsGroup);

    const entrypoint = report.image.entrypoint ?? [];
    assert.match(entrypoint[0] ?? '', /\/node$/, 'ENTRYPOINT runs node');
    const cli = entrypoint.at(-1) ?? '';
    const copied = finals.find((c) => cli.startsWith(c.dest.replace(/\/?$/, '/')));
    assert.ok(copied, `ENTRYPOINT's ${cli} is not copied from the build`);
    assert.equal(
      inRepository(copied.from ?? '', posix.join(copied.sources[0] ?? '', posix.relative(copied.dest, cli))),
      join(root, 'dist/cli.mjs'),
      'ENTRYPOINT runs the CLI',
    );
  });

  it("caps V8's young generation with the ENTRYPOINT's node flags, and bin/hookyard runs node with the same", () => {
    // The size V8 grows the young generation to under a high allocation rate with survivors: most of a busy
    // receiver's RSS without the cap (docs/benchmarks.md).
    const churn =
      "let keep = []; for (let i = 0; i < 1e7; i++) { keep.push({ i, s: 'x' + i }); if (keep.length > 20000) keep = []; }" +
      "console.log(require('node:v8').getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size)";
    const newSpaceMiB = (flags: string[]) =>
      Number(execFileSync(process.execPath, [...flags, '-e', churn], { encoding: 'utf8' })) / 2 ** 20;
    const flags = imageNodeFlags();
    assert.ok(newSpaceMiB(flags) <= 32, `young generation over 32 MiB with ${flags.join(' ') || 'no flags'}`);
    assert.ok(
      newSpaceMiB([]) > 32,
      'without the flags the young generation grows past 32 MiB: the check means something',
    );
    const exec = /^exec "\$node" (.*)"\$root\/src\/cli.ts" "\$@"$/m.exec(
      readFileSync(join(root, 'bin/hookyard'), 'utf8'),
    );
    assert.deepEqual(exec?.[1]?.trim().split(' ').filter(Boolean), flags, "bin/hookyard's node flags");
  });

  /** The ENTRYPOINT's command line over a copy of the final stage's files; node is this machine's. */
  const imageCli = (): { cli: Cli; env: NodeJS.ProcessEnv; how: string } | undefined => {
    if (!existsSync(join(rootfs.path, 'app'))) {
      for (const c of report.copies.filter((c) => c.stage === finalStage())) {
        for (const src of c.sources) {
          const local = inRepository(c.from ?? '', src);
          const dest = join(rootfs.path, c.dest);
          cpSync(local, statSync(local).isDirectory() ? dest : join(dest, posix.basename(src)), { recursive: true });
        }
      }
    }
    const [, ...args] = report.image.entrypoint ?? [];
    const command = [
      process.execPath,
      ...args.map((a) => (a.startsWith('/') && existsSync(join(rootfs.path, a)) ? join(rootfs.path, a) : a)),
    ];
    const env = Object.fromEntries((report.image.env ?? []).map((e) => e.split(/=(.*)/s).slice(0, 2)));
    // Docker sets HOME from the user's passwd entry: distroless's nonroot has /home/nonroot, which is not here.
    env.HOME = '/home/nonroot';
    const isolated = isolation(rootfs.path);
    if (!isolated) return undefined;
    const full = [...isolated.wrapper, ...command];
    return {
      cli: {
        command: full[0] as string,
        args: full.slice(1),
        options: { cwd: report.image.workingDir || '/' },
        // unshare does not forward signals: they go to the CLI, PID 1 of the namespace.
        signalled: (child) => {
          const pid = readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim();
          return pid ? Number(pid) : undefined;
        },
      },
      env,
      how: isolated.how,
    };
  };
  const cannotIsolate =
    'cannot run it as the image does here: needs root, unshare, mount, setpriv and a node user 65532 may run';

  it('runs `hookyard receiver --help` from a copy of what the final stage copies', async (t) => {
    const image = imageCli();
    if (!image) return t.skip(cannotIsolate);
    const { cli, env, how } = image;
    t.diagnostic(how);
    const proc = runCli(cli, ['receiver', '--help'], env);
    assert.equal(await within(proc.exited, 20, 'receiver --help'), 0, proc.output());
    assert.match(proc.output(), /usage: hookyard receiver/);
  });

  it('runs receiver and dispatcher from it: a signed webhook is stored, answered 2xx and delivered', async (t) => {
    const image = imageCli();
    if (!image) return t.skip(cannotIsolate);
    const { cli, env } = image;
    await deliverSignedWebhook(cli, env);
  });

  it('stops at once on SIGTERM while still waiting for NATS, as PID 1', async (t) => {
    const image = imageCli();
    if (!image) return t.skip(cannotIsolate);
    const { cli, env, how } = image;
    t.diagnostic(how);
    const closed = await freePort();
    const work = tempDir('hookyard-image-pid1-');
    chmodSync(work.path, 0o755);
    const config = join(work.path, 'endpoint.yaml');
    let proc: CliProcess | undefined;
    try {
      writeFileSync(config, stringify(minimalEndpoint));
      proc = runCli(
        cli,
        ['receiver', '--config', config, '--secrets-dir', work.path, '--nats-url', `nats://127.0.0.1:${closed}`],
        env,
      );
      await sleep(1500); // loaded, and connecting
      assert.equal(proc.child.exitCode, null, proc.output());
      const stopping = Date.now();
      proc.kill('SIGTERM');
      assert.equal(await within(proc.exited, 5, 'exit after SIGTERM'), 143, proc.output());
      t.diagnostic(`exited ${Date.now() - stopping} ms after SIGTERM`);
    } finally {
      proc?.kill('SIGKILL');
      work.remove();
    }
  });
});
