// Runs the hookyard CLI as a child process the way it ships: from source, from the dist/ bundle, or as the image
// runs it (see test/integration/image.test.ts). Tests and benchmarks start receivers and dispatchers through here.
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parse } from 'yaml';
import { root } from './servers.ts';

/** The command line that runs `hookyard`: arguments follow `args`. */
export interface Cli {
  command: string;
  args: string[];
  options?: SpawnOptions;
  /** The process that signals go to, when `command` is a wrapper (such as unshare) that does not forward them. */
  signalled?: (child: ChildProcess) => number | undefined;
}

export const sourceCli = (): Cli => ({ command: process.execPath, args: [join(root, 'src/cli.ts')] });

/** The bundle `npm run build` writes (`make test` builds it first). */
export function bundleCli(nodeFlags: string[] = []): Cli {
  const entry = join(root, 'dist/cli.mjs');
  if (!existsSync(entry)) throw new Error(`${entry} is missing: run npm run build (make test does)`);
  return { command: process.execPath, args: [...nodeFlags, entry] };
}

/** The image's ENTRYPOINT: ["node", ...flags, "/app/cli.mjs"]. */
export function imageEntrypoint(): string[] {
  const dockerfile = readFileSync(join(root, 'Dockerfile'), 'utf8');
  return JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(dockerfile)?.[1] ?? '[]') as string[];
}

/** The node flags the image starts the CLI with. */
export const imageNodeFlags = (): string[] => imageEntrypoint().slice(1, -1);

/** The node flags the chart gives the operator instead (operator.nodeFlags in charts/hookyard/values.yaml). */
export function operatorNodeFlags(): string[] {
  const values = parse(readFileSync(join(root, 'charts/hookyard/values.yaml'), 'utf8')) as {
    operator: { nodeFlags: string[] };
  };
  return values.operator.nodeFlags;
}

export interface CliProcess {
  child: ChildProcess;
  /** stdout and stderr so far. */
  output(): string;
  /** The exit code: 1 when killed by a signal, -1 when it could not start. */
  exited: Promise<number>;
  /** Sends a signal to the CLI's process; SIGKILL goes to a wrapper too. */
  kill(signal: NodeJS.Signals): void;
  /** SIGTERM, then SIGKILL after `seconds`; resolves with the exit code. */
  stop(seconds?: number): Promise<number>;
}

export function runCli(cli: Cli, args: string[], env: NodeJS.ProcessEnv = process.env): CliProcess {
  const child = spawn(cli.command, [...cli.args, ...args], {
    env,
    ...cli.options,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (d) => {
    output += d;
  });
  child.stderr?.on('data', (d) => {
    output += d;
  });
  const exited = new Promise<number>((ok) => {
    child.once('error', (err) => {
      output += `cannot start ${cli.command}: ${err.message}\n`;
      ok(-1);
    });
    child.once('exit', (code, signal) => ok(code ?? (signal ? 1 : 0)));
  });
  const done = () => child.exitCode !== null || child.signalCode !== null;
  const kill = (signal: NodeJS.Signals) => {
    if (done()) return;
    let pid = child.pid;
    try {
      pid = cli.signalled?.(child) ?? pid;
      if (pid !== undefined) process.kill(pid, signal);
    } catch {
      // exited meanwhile
    }
    // A wrapper's own death need not take the CLI with it (unshare's --kill-child does not survive setpriv).
    if (signal === 'SIGKILL' && pid !== child.pid) child.kill(signal);
  };
  return {
    child,
    output: () => output,
    exited,
    kill,
    async stop(seconds = 10) {
      kill('SIGTERM');
      const timer = setTimeout(() => kill('SIGKILL'), seconds * 1000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** Polls `url` until it answers 200; fails with the process's output if it exits or `seconds` pass first. */
export async function waitReady(proc: CliProcess, url: string, seconds = 20): Promise<void> {
  const deadline = Date.now() + seconds * 1000;
  let exited = false;
  void proc.exited.then(() => {
    exited = true;
  });
  while (Date.now() < deadline && !exited) {
    if ((await fetch(url).catch(() => null))?.status === 200) return;
    await sleep(50);
  }
  throw new Error(`${url} not ready (${exited ? 'the process exited' : `${seconds}s`}); output:\n${proc.output()}`);
}
