// Usage: node test/harness/run.ts <command> [args...]
// Starts etcd, kube-apiserver and nats-server, runs the command with their addresses in the environment
// (KUBECONFIG, HOOKYARD_TEST_*), then stops them all, also when the command fails or is interrupted.
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { root, type Server, startKube, startNats, tempDir } from './servers.ts';

const [command, ...args] = process.argv.slice(2);
if (!command) {
  console.error('usage: node test/harness/run.ts <command> [args...]');
  process.exit(2);
}

const work = tempDir('hookyard-test-');
const logDir = join(root, '.cache/test-logs');
mkdirSync(logDir, { recursive: true });
const servers: Server[] = [];
let stopping: Promise<void> | undefined;
const stopAll = () => {
  stopping ??= (async () => {
    for (const s of servers.reverse()) await s.stop();
    work.remove();
  })();
  return stopping;
};

let exitCode = 1;
try {
  const started = Date.now();
  const kube = await startKube(join(work.path, 'kube'), logDir);
  servers.push(...kube.servers.reverse());
  const nats = await startNats(logDir, join(work.path, 'nats'));
  servers.push(nats);
  console.error(`test servers up in ${((Date.now() - started) / 1000).toFixed(1)}s (logs in .cache/test-logs)`);

  const child = spawn(command, args, {
    stdio: 'inherit',
    env: {
      ...process.env,
      KUBECONFIG: kube.kubeconfig,
      HOOKYARD_TEST_KUBE_SERVER: kube.server,
      HOOKYARD_TEST_KUBE_TOKEN: kube.token,
      HOOKYARD_TEST_NATS_URL: nats.url,
      HOOKYARD_TEST_WORKDIR: work.path,
      // For benches that report what the API server and etcd spent (read from /proc, never signalled).
      HOOKYARD_TEST_KUBE_PIDS: kube.servers.map((s) => s.process.pid).join(','),
      HOOKYARD_TEST_NATS_PID: String(nats.process.pid),
    },
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      child.kill(signal);
    });
  }
  exitCode = await new Promise<number>((ok) => child.on('exit', (code, signal) => ok(code ?? (signal ? 1 : 0))));
} catch (err) {
  console.error(err);
} finally {
  await stopAll();
}
process.exit(exitCode);
