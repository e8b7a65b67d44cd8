// What every bench prints, kept as a file: each line goes to stdout and to docs/benchmarks/<bench>-<time>.txt, which
// starts with what the figures depend on (when, the command, Node, the machine's cores and load). Goals are checked
// at the end: a missed goal is printed and makes the process exit 1, so a bench run in CI or by hand cannot miss
// one quietly.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { join, relative } from 'node:path';
import { root } from '../test/harness/servers.ts';

export interface Goal {
  /** What is measured, as the docs name it: `throughput ratio (receiver / baseline)`. */
  name: string;
  value: number;
  /** `>=`: the value must be at least `limit`; `<=` at most; `<` below. */
  op: '>=' | '<=' | '<';
  limit: number;
}

/** The goals a run missed, each as the line that says so. */
export function missedGoals(goals: Goal[]): string[] {
  const met = ({ value, op, limit }: Goal) =>
    op === '>=' ? value >= limit : op === '<=' ? value <= limit : value < limit;
  return goals
    .filter((g) => !met(g))
    .map((g) => `goal missed: ${g.name} is ${g.value}, the goal is ${g.op} ${g.limit}`);
}

export interface Report {
  line(text?: string): void;
  /** Prints whether each goal is met, writes the file, and sets the exit code: 1 when a goal is missed. */
  finish(goals: Goal[]): void;
}

export function benchReport(bench: string): Report {
  const started = new Date();
  const load = loadavg().map((x) => x.toFixed(2));
  const lines = [
    `bench: ${bench}, ${started.toISOString()}`,
    `command: node ${process.argv
      .slice(1)
      .map((a) => relative(root, a) || a)
      .join(' ')}`,
    `node ${process.versions.node}, ${availableParallelism()} cores, load average before the run ${load.join(' ')}`,
    '',
  ];
  for (const l of lines) console.log(l);
  return {
    line(text = '') {
      lines.push(text);
      console.log(text);
    },
    finish(goals) {
      const missed = missedGoals(goals);
      const verdict = missed.length
        ? missed
        : [goals.length ? `every goal met (${goals.length})` : 'no goals to check'];
      for (const l of ['', ...verdict]) this.line(l);
      const dir = join(root, 'docs/benchmarks');
      mkdirSync(dir, { recursive: true });
      const file = join(dir, `${bench}-${started.toISOString().slice(0, 16).replace(':', '')}Z.txt`);
      writeFileSync(file, `${lines.join('\n')}\n`);
      console.log(`raw output: ${relative(root, file)}`);
      if (missed.length) process.exitCode = 1;
    },
  };
}

/** User and system CPU time of a process so far (clock ticks of 10 ms). */
export function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** A process's resident memory now (VmRSS). */
export function rssMiB(pid: number): number {
  const kb = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kb) / 1024;
}
