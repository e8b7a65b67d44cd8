// hookyard dev -f <file or folder>: the whole flow on one machine, no cluster.
import { devCommand } from '../commands.ts';
import { parseFlags } from '../runtime/flags.ts';
import { log } from '../runtime/log.ts';
import { startDev, watchFiles } from './dev.ts';

export async function main(args: string[]): Promise<void> {
  const flags = parseFlags(devCommand, args);
  if (!flags) return;
  const { values } = flags;
  const paths = values.file;
  const dev = await startDev({
    paths,
    natsUrl: values['nats-url'],
    port: values.port,
    host: values.host,
    sink: values.sink,
    log,
  });
  const base = `http://${values.host}:${dev.port}`;
  const lines = dev.manifests.endpoints.map((e) => {
    const url = `${base}/hooks/${e.metadata.namespace}/${e.metadata.name}`;
    const routes = e.spec.routes?.map((r) => r.path);
    return `  ${e.spec.provider.padEnd(18)} ${url}${routes ? `/{${routes.join(',')}}` : ''}`;
  });
  console.log(
    `hookyard dev: ${dev.manifests.endpoints.length} endpoints, ${dev.manifests.subscriptions.length} subscriptions`,
  );
  console.log(`${lines.join('\n')}\n  metrics            ${base}/metrics\nwatching ${paths.join(', ')}; Ctrl-C stops`);
  const unwatch = watchFiles(paths, () => void dev.reload());
  await new Promise<void>((ok) => {
    process.once('SIGINT', ok);
    process.once('SIGTERM', ok);
  });
  unwatch();
  await dev.stop();
}
