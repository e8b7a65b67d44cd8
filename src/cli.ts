#!/usr/bin/env node
// hookyard <command>: one image, one CLI. Each command lives in its own module and is loaded on demand; their
// flags are declared in src/commands.ts.
import { constants } from 'node:os';
import {
  attemptsCommand,
  devCommand,
  dispatcherCommand,
  dlqCommand,
  eventCommand,
  eventsCommand,
  operatorCommand,
  receiverCommand,
  replayCommand,
  sendCommand,
  testCommand,
  versionCommand,
} from './commands.ts';
import { buildInfo } from './runtime/build.ts';
import { type Command, parseFlags, UsageError } from './runtime/flags.ts';

type Main = (args: string[]) => Promise<void>;
const commands: { command: Command; load: () => Promise<{ main: Main }> }[] = [
  { command: operatorCommand, load: () => import('./operator/main.ts') },
  { command: receiverCommand, load: () => import('./receiver/main.ts') },
  { command: dispatcherCommand, load: () => import('./dispatcher/main.ts') },
  { command: devCommand, load: () => import('./dev/main.ts') },
  { command: sendCommand, load: () => import('./dev/send.ts') },
  { command: eventsCommand, load: async () => ({ main: (await import('./history/cli.ts')).events }) },
  { command: eventCommand, load: async () => ({ main: (await import('./history/cli.ts')).event }) },
  { command: attemptsCommand, load: async () => ({ main: (await import('./history/cli.ts')).attempts }) },
  { command: replayCommand, load: async () => ({ main: (await import('./history/cli.ts')).replay }) },
  { command: dlqCommand, load: async () => ({ main: (await import('./history/cli.ts')).dlq }) },
  { command: testCommand, load: async () => ({ main: (await import('./history/cli.ts')).test }) },
  { command: versionCommand, load: async () => ({ main: printVersion }) },
];

const usage = () =>
  `usage: hookyard <command> [flags]\n\ncommands:\n${commands
    .map(({ command }) => `  ${command.name.padEnd(12)}${command.summary}`)
    .join('\n')}\n\nhookyard <command> --help shows a command's flags.\n`;

async function printVersion(args: string[]): Promise<void> {
  if (!parseFlags(versionCommand, args)) return;
  const { version, commit } = buildInfo();
  console.log(`hookyard ${version} (commit ${commit}, node ${process.versions.node})`);
}

const [name, ...args] = process.argv.slice(2);
if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
  process.stdout.write(usage());
  process.exit(0);
}
const entry = commands.find(({ command }) => command.name === (name === '--version' ? 'version' : name));
if (!entry) {
  process.stderr.write(`hookyard: unknown command "${name}"\n\n${usage()}`);
  process.exit(2);
}
// In a container the CLI is PID 1, and PID 1 ignores a signal it has no handler for: until a command installs its
// own graceful handlers (the receiver, dispatcher and dev do once connected), SIGTERM and SIGINT end the process
// as they would anywhere else, so a pod still waiting for NATS stops at once instead of at its grace period.
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    if (process.listenerCount(signal) === 1) process.exit(128 + (constants.signals[signal] ?? 0));
  });
}
try {
  await (await entry.load()).main(args);
} catch (err) {
  console.error(`hookyard ${entry.command.name}: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(err instanceof UsageError ? 2 : 1);
}
