// hookyard dev -f <file or folder>: the whole flow on one machine, no cluster.
import { lookup } from 'node:dns/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { WebhookSubscription } from '../api/webhook-subscription.ts';
import { devCommand } from '../commands.ts';
import { targetUrl } from '../dispatcher/target.ts';
import { presets } from '../providers/presets.ts';
import { parseFlags, UsageError } from '../runtime/flags.ts';
import { startTracing } from '../runtime/tracing.ts';
import { type Dev, startDev, watchFiles } from './dev.ts';
import { devLogger, type LogFormat } from './lines.ts';

export async function main(args: string[]): Promise<void> {
  const flags = parseFlags(devCommand, args);
  if (!flags) return;
  const { values } = flags;
  const paths = values.file;
  const hosts = new Map<string, string>();
  const log = devLogger(values['log-format'] as LogFormat, (subscription) => hosts.get(subscription));
  const tracer = await startTracing({ endpoint: values['otlp-endpoint'], serviceName: 'hookyard-dev', log });
  const dev = await startDev({
    paths,
    natsUrl: values['nats-url'],
    port: values.port,
    host: values.host,
    sink: values.sink,
    log,
    tracer,
  }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EADDRINUSE') throw err;
    throw new UsageError(`port ${values.port} of ${values.host} is in use; pass another, such as --port 8081`);
  });
  for (const sub of dev.manifests.subscriptions) hosts.set(sub.metadata.name, new URL(target(sub)).hostname);
  console.log(
    `hookyard dev: ${dev.manifests.endpoints.length} endpoints, ${dev.manifests.subscriptions.length} subscriptions`,
  );
  const base = `http://${values.host}:${dev.port}`;
  console.log(`${endpointUrls(dev, base).join('\n')}\n  metrics            ${base}/metrics`);
  for (const sub of dev.manifests.subscriptions) {
    const to = values.sink ? `${values.sink}/${sub.metadata.name}` : target(sub);
    console.log(`  → ${sub.metadata.name.padEnd(16)} ${to}`);
  }
  if (!values.sink) for (const hint of await unresolvableTargets(dev)) console.log(hint);
  console.log(`watching ${paths.join(', ')}; Ctrl-C stops`);
  const unwatch = watchFiles(paths, () => void dev.reload());
  await new Promise<void>((ok) => {
    process.once('SIGINT', ok);
    process.once('SIGTERM', ok);
  });
  unwatch();
  await dev.stop();
  await tracer?.shutdown();
}

const target = (sub: WebhookSubscription) => targetUrl(sub.spec.target, sub.metadata.namespace ?? 'default');

/** Every URL each endpoint serves: its base, or one per route (printIQ's every event, FotoWeb's three, ...). */
function endpointUrls(dev: Dev, base: string): string[] {
  return dev.manifests.endpoints.flatMap((e) => {
    const url = `${base}/hooks/${e.metadata.namespace}/${e.metadata.name}`;
    const routes = e.spec.routes ?? presets[e.spec.provider].routes;
    const urls = routes ? routes.map((r) => `${url}/${r.path}`) : [url];
    return urls.map((u, i) => `  ${(i === 0 ? e.spec.provider : '').padEnd(18)} ${u}`);
  });
}

/** A line for each subscription whose target's host does not resolve here (a cluster Service, say). */
async function unresolvableTargets(dev: Dev): Promise<string[]> {
  const checks = dev.manifests.subscriptions.map(async (sub) => {
    const host = new URL(target(sub)).hostname;
    // A resolver that does not answer within 2 s counts as resolving: the hint is for names that surely fail.
    const resolves = await Promise.race([
      lookup(host).then(
        () => true,
        () => false,
      ),
      sleep(2000, true, { ref: false }),
    ]);
    return resolves
      ? undefined
      : `  ${sub.metadata.name} delivers to ${host}, which does not resolve here: pass --sink URL to deliver to a local server`;
  });
  return (await Promise.all(checks)).filter((line) => line !== undefined);
}
