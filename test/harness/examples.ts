import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { root } from './servers.ts';

export interface ExampleDocument {
  file: string;
  doc: { kind: string; metadata: { name: string }; spec?: Record<string, unknown> } & Record<string, unknown>;
}

/** Every YAML document in examples/. */
export function exampleDocuments(): ExampleDocument[] {
  const dir = join(root, 'examples');
  return readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .flatMap((file) =>
      parseAllDocuments(readFileSync(join(dir, file), 'utf8')).map((d) => ({
        file,
        doc: d.toJS() as ExampleDocument['doc'],
      })),
    );
}

/** The example document of that kind and name. */
export const exampleDoc = (kind: string, name: string) =>
  exampleDocuments().find((d) => d.doc.kind === kind && d.doc.metadata.name === name)?.doc;

export const namesOf = (docs: ExampleDocument[], kind: string) =>
  docs
    .filter((d) => d.doc.kind === kind)
    .map((d) => d.doc.metadata.name)
    .sort();

/**
 * A generic ProviderEndpoint `shop` without verification and a WebhookSubscription `orders` of it to `targetUrl`,
 * as YAML for `kubectl apply`; `subscription` adds to the subscription's spec.
 */
export function shopAndOrders(targetUrl: string, subscription: Record<string, unknown> = {}): string {
  const endpoint = { provider: 'generic', verification: [{ none: true }] };
  return [
    { apiVersion: 'hookyard.io/v1alpha1', kind: 'ProviderEndpoint', metadata: { name: 'shop' }, spec: endpoint },
    {
      apiVersion: 'hookyard.io/v1alpha1',
      kind: 'WebhookSubscription',
      metadata: { name: 'orders' },
      spec: { sources: [{ endpoint: 'shop' }], target: { url: targetUrl }, ...subscription },
    },
  ]
    .map((doc) => stringify(doc))
    .join('---\n');
}
