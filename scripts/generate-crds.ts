// Writes the CRDs generated from the zod schemas into crds/ and the chart's crds/.
import { writeFileSync } from 'node:fs';
import { crdFileName, crdYAML, kinds } from '../src/api/crd.ts';

for (const dir of ['crds', 'charts/hookyard/crds']) {
  for (const k of kinds) writeFileSync(`${dir}/${crdFileName(k)}`, crdYAML(k));
}
