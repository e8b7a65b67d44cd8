// Writes what is generated from the zod schemas: the CRDs (crds/ and the chart's crds/), their JSON schemas
// (crds/schemas/, for kubeconform and editors) and docs/api.md.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { apiReference, crdFileName, crdYAML, jsonSchemaFileName, jsonSchemaText, kinds } from '../src/api/crd.ts';

for (const dir of ['crds', 'charts/hookyard/crds']) {
  for (const k of kinds) writeFileSync(`${dir}/${crdFileName(k)}`, crdYAML(k));
}
for (const k of kinds) {
  const file = `crds/schemas/${jsonSchemaFileName(k)}`;
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, jsonSchemaText(k));
}
writeFileSync('docs/api.md', apiReference());
