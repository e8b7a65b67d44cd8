// The production bundle (`npm run build`, dist/): it runs, and each command loads only its own code.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { bundleCli, runCli } from '../harness/cli.ts';
import { root } from '../harness/servers.ts';
import { deliverSignedWebhook, within } from './delivery-support.ts';

interface Metafile {
  outputs: Record<string, { inputs: Record<string, unknown> }>;
}

/** The sources (src/... or node_modules/...) in the chunks a command loads, as it loads them. */
async function loadedSources(command: string[]): Promise<string[]> {
  // A module hook that reports each file Node loads; `--help` loads the command's module and all it imports.
  const hook = `data:text/javascript,import{registerHooks}from'node:module';import{writeSync}from'node:fs';registerHooks({load(u,c,n){writeSync(2,'loaded '+u+'\\n');return n(u,c)}})`;
  const proc = runCli(bundleCli(['--import', hook]), [...command, '--help']);
  assert.equal(await within(proc.exited, 20, command.join(' ')), 0, proc.output());
  const meta = JSON.parse(readFileSync(join(root, '.cache/dist-meta.json'), 'utf8')) as Metafile;
  const chunks = [...proc.output().matchAll(/^loaded (file:\S+)$/gm)].map((m) =>
    relative(root, fileURLToPath(m[1] as string)),
  );
  assert.ok(chunks.includes('dist/cli.mjs'), proc.output());
  return chunks.flatMap((chunk) => Object.keys(meta.outputs[chunk]?.inputs ?? {}));
}

/**
 * OpenTelemetry's SDK, loaded only when tracing is on (src/runtime/otel.ts). Its API package is loaded either way:
 * prom-client requires it.
 */
const tracingSdk = [
  '@opentelemetry/sdk-trace',
  '@opentelemetry/core',
  '@opentelemetry/resources',
  '@opentelemetry/exporter-trace-otlp-http',
  '@opentelemetry/otlp-exporter-base',
];

const packageOf = (input: string) => /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input)?.[1];

describe('the bundle (dist/)', () => {
  it('loads for `hookyard receiver` only the receiver: no express, Kubernetes client, undici, CEL, dispatcher or OpenTelemetry SDK', async () => {
    const sources = await loadedSources(['receiver']);
    assert.ok(sources.includes('src/receiver/server.ts'));
    const packages = new Set(sources.map(packageOf).filter((p) => p !== undefined));
    // CEL: the receiver leaves its config's rules to the API server; fast-xml-parser comes with the first XML body.
    const unloaded = [
      'express',
      '@kubernetes/client-node',
      'undici',
      'cloudevents',
      '@bufbuild/cel',
      'fast-xml-parser',
    ];
    for (const p of [...unloaded, ...tracingSdk]) assert.ok(!packages.has(p), p);
    const others = sources.filter((s) => /^src\/(dispatcher|dev|operator|admission)\//.test(s));
    assert.deepEqual(others, []);
  });

  it('loads for `hookyard dispatcher` no receiver code and no express, Kubernetes client or OpenTelemetry SDK', async () => {
    const sources = await loadedSources(['dispatcher']);
    assert.ok(sources.includes('src/dispatcher/dispatcher.ts'));
    const packages = new Set(sources.map(packageOf).filter((p) => p !== undefined));
    for (const p of ['express', '@kubernetes/client-node', ...tracingSdk]) assert.ok(!packages.has(p), p);
    assert.deepEqual(
      sources.filter((s) => /^src\/(receiver|dev|operator|admission)\//.test(s)),
      [],
    );
  });

  it('runs receiver and dispatcher: a signed webhook is stored, answered 2xx and delivered', async () => {
    await deliverSignedWebhook(bundleCli());
  });
});
