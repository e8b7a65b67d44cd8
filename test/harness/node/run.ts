// Usage: node test/harness/node/run.ts <command> [args...]
// Builds the images (cached in .cache/images/), starts the real node (cluster.ts) and runs the command with the
// node's kubeconfig and addresses in the environment, then tears the node down, also when the command fails or
// the run is interrupted, and fails when anything of the node is left on the host: a process, a mount, a cgroup,
// the network namespace, the veth or an iptables rule.
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNode, INGRESS_URL, logDir } from './cluster.ts';
import { CUSTOMER_NETWORK_IP, HOST_IP, NODE_IP } from './host.ts';
import { buildImages } from './images.ts';

const [command, ...args] = process.argv.slice(2);
if (!command) {
  console.error('usage: node test/harness/node/run.ts <command> [args...]');
  process.exit(2);
}

let node: ReturnType<typeof createNode> | undefined;
let child: ReturnType<typeof spawn> | undefined;
let exitCode = 1;

/** The node's resident memory, sampled while the command runs: the peak, by what the processes are. */
const memory = { peakKiB: 0, peak: '', sampler: undefined as NodeJS.Timeout | undefined };
const mib = (kib: number) => Math.round(kib / 1024);

function sampleMemory(): number {
  const byWhat = [...(node?.memoryKiB() ?? new Map())].sort((a, b) => b[1].kib - a[1].kib);
  const total = byWhat.reduce((n, [, m]) => n + m.kib, 0);
  if (total > memory.peakKiB) {
    memory.peakKiB = total;
    memory.peak = byWhat
      .map(([what, m]) => `${what} ${mib(m.kib)}${m.processes > 1 ? ` (${m.processes})` : ''}`)
      .join(', ');
  }
  return total;
}

async function tearDown(): Promise<void> {
  if (!node) return;
  const started = Date.now();
  clearInterval(memory.sampler);
  const now = sampleMemory();
  console.error(`node memory: peak ${mib(memory.peakKiB)} MiB resident in its processes (MiB: ${memory.peak})`);
  console.error(`node memory before tear-down: ${mib(now)} MiB resident in its processes`);
  const errors = await node.stop();
  const left = node.leftovers();
  node = undefined;
  for (const e of [...errors, ...left]) console.error(`node tear-down: ${e}`);
  console.error(`node torn down in ${((Date.now() - started) / 1000).toFixed(1)}s, ${left.length} things left`);
  if (errors.length || left.length) exitCode = 1;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (child) child.kill(signal);
    else void tearDown().then(() => process.exit(130));
  });
}

try {
  const started = Date.now();
  const images = buildImages();
  node = createNode(mkdtempSync(join(tmpdir(), 'hy-node-')));
  await node.start(images);
  memory.sampler = setInterval(sampleMemory, 10_000);
  console.error(`node up in ${((Date.now() - started) / 1000).toFixed(1)}s (logs in .cache/test-logs/node)`);
  child = spawn(command, args, {
    stdio: 'inherit',
    env: {
      ...process.env,
      KUBECONFIG: node.kubeconfig,
      HOOKYARD_E2E_NODE_IP: NODE_IP,
      HOOKYARD_E2E_HOST_IP: HOST_IP,
      HOOKYARD_E2E_CUSTOMER_NETWORK_IP: CUSTOMER_NETWORK_IP,
      HOOKYARD_E2E_VOLUMES_DIR: node.volumesDir,
      HOOKYARD_E2E_INGRESS_URL: INGRESS_URL,
      HOOKYARD_E2E_IMAGES: JSON.stringify(images),
      HOOKYARD_E2E_LOG_DIR: logDir,
    },
  });
  exitCode = await new Promise<number>((ok) => child?.on('exit', (code, signal) => ok(code ?? (signal ? 1 : 0))));
} catch (err) {
  console.error(err);
  exitCode = 1;
} finally {
  await tearDown();
}
process.exit(exitCode);
