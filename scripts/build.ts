// npm run build: the production bundle in dist/, what the image runs. src/cli.ts is the entry; each command's
// dynamic import becomes its own chunk, so `hookyard receiver` loads the receiver's code and what it imports,
// and nothing of the other commands. Every npm dependency is bundled: dist/ needs Node 24 and nothing else.
//
//   dist/cli.mjs, dist/*.mjs    the entry and its chunks (ESM), each with a source map
//   dist/samples/               the providers' documented sample bodies, read by `hookyard send`
//
// esbuild's metafile, which sources each chunk holds, goes to .cache/dist-meta.json (tests read it), so that
// dist/ holds only what runs.
import { cpSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';

const root = join(import.meta.dirname, '..');
const out = join(root, 'dist');

rmSync(out, { recursive: true, force: true });
const result = await build({
  absWorkingDir: root,
  entryPoints: { cli: 'src/cli.ts' },
  outdir: out,
  // Chunks sit beside the entry: src/providers/samples.ts reads samples/ next to the module that holds it.
  chunkNames: '[name]-[hash]',
  outExtension: { '.js': '.mjs' },
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node24',
  sourcemap: 'linked',
  sourcesContent: false,
  minifySyntax: true,
  minifyWhitespace: true,
  legalComments: 'linked',
  metafile: true,
  logLevel: 'warning',
  // CommonJS packages inside an ESM bundle still call require() for Node's built-in modules.
  banner: {
    js: "import { createRequire as __hookyardCreateRequire } from 'node:module'; const require = __hookyardCreateRequire(import.meta.url);",
  },
});
cpSync(join(root, 'src/providers/samples'), join(out, 'samples'), { recursive: true });
mkdirSync(join(root, '.cache'), { recursive: true });
writeFileSync(join(root, '.cache/dist-meta.json'), JSON.stringify(result.metafile));
