import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
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
