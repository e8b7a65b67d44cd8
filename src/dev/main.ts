// hookyard dev -f <file or folder>: the whole flow on one machine, no cluster.
import { parseArgs } from 'node:util';
import { log } from '../runtime/log.ts';
import { startDev, watchFiles } from './dev.ts';

export async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      file: { type: 'string', short: 'f', multiple: true },
      'nats-url': { type: 'string' },
      port: { type: 'string', default: '8080' },
      host: { type: 'string', default: '127.0.0.1' },
      sink: { type: 'string' },
    },
  });
  const paths = values.file ?? [];
  if (paths.length === 0)
    throw new Error('usage: hookyard dev -f <file or folder> [-f ...] [--nats-url URL] [--port 8080] [--sink URL]');
  const dev = await startDev({
    paths,
    natsUrl: values['nats-url'],
    port: Number(values.port),
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
