// Writes what is generated from the zod schemas: the CRDs (crds/ and the chart's crds/) and docs/api.md.
import { writeFileSync } from 'node:fs';
import { apiReference, crdFileName, crdYAML, kinds } from '../src/api/crd.ts';

for (const dir of ['crds', 'charts/hookyard/crds']) {
  for (const k of kinds) writeFileSync(`${dir}/${crdFileName(k)}`, crdYAML(k));
}
writeFileSync('docs/api.md', apiReference());
