#!/usr/bin/env node
// hookyard <command>: one image, one CLI. Each command lives in its own module and is loaded on demand.
import { constants } from 'node:os';

const commands: Record<string, { summary: string; load: () => Promise<{ main(args: string[]): Promise<void> }> }> = {
  operator: {
    summary: 'reconcile ProviderEndpoints and WebhookSubscriptions in a cluster',
    load: () => import('./operator/main.ts'),
  },
  receiver: { summary: 'serve one ProviderEndpoint', load: () => import('./receiver/main.ts') },
  dispatcher: { summary: 'deliver one WebhookSubscription', load: () => import('./dispatcher/main.ts') },
  dev: {
    summary: 'run ProviderEndpoints and WebhookSubscriptions from YAML files, no cluster',
    load: () => import('./dev/main.ts'),
  },
  send: { summary: "send a provider's documented sample webhooks, signed", load: () => import('./dev/send.ts') },
};

const [command, ...args] = process.argv.slice(2);
const entry = command ? commands[command] : undefined;
if (!entry) {
  const list = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(12)}${c.summary}`);
  console.error(`usage: hookyard <command> [options]\n\ncommands:\n${list.join('\n')}`);
  process.exit(command === undefined || command === 'help' || command === '--help' ? 0 : 2);
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
  console.error(`hookyard ${command}: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
