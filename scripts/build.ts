// npm run build: the production bundle in dist/, what the image runs. src/cli.ts is the entry; each command's
// dynamic import becomes its own chunk, so `hookyard receiver` loads the receiver's code and what it imports,
// and nothing of the other commands. Every npm dependency is bundled: dist/ needs Node 24 and nothing else.
//
//   dist/cli.mjs, dist/*.mjs    the entry and its chunks (ESM), each with a source map
//   dist/samples/               the providers' documented sample bodies, read by `hookyard send`
//
// The version and git commit are written into the bundle (`hookyard version`, the hookyard_build_info metric);
// where the sources are no git checkout (the image's build stage), HOOKYARD_COMMIT gives the commit.
//
// esbuild's metafile, which sources each chunk holds, goes to .cache/dist-meta.json (tests read it), so that
// dist/ holds only what runs.
import { cpSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { join } from 'node:path';
import { build, type Plugin } from 'esbuild';
import { readBuildInfo } from '../src/runtime/build.ts';

const root = join(import.meta.dirname, '..');

// Node's built-in modules are loaded with require(), not import. Importing one as ESM reads every export to build
// the module namespace, which runs its lazy getters: for node:http that loads Node's WebSocket client (undici),
// 13 MiB in a bare process, 3.5 MiB of an idle receiver's RSS. Through require(), named imports become property
// reads at use.
const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
const requireBuiltins: Plugin = {
  name: 'require-builtins',
  setup(b) {
    b.onResolve({ filter: /^[a-z_:/]+$/ }, (args) => {
      if (!builtins.has(args.path)) return undefined;
      const path = args.path.startsWith('node:') ? args.path : `node:${args.path}`;
      // `await import('http')` (OpenTelemetry's exporter) destructures named exports, which a chunk wrapping
      // require() would not have: a dynamic import stays Node's own.
      if (args.kind === 'dynamic-import') return { path, external: true };
      return args.namespace === 'builtin' ? { path, external: true } : { path, namespace: 'builtin' };
    });
    b.onLoad({ filter: /.*/, namespace: 'builtin' }, (args) => ({
      contents: `module.exports = require(${JSON.stringify(args.path)});`,
      loader: 'js',
    }));
  },
};
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
  plugins: [requireBuiltins],
  // `hookyard version` and hookyard_build_info: the package version and the commit (HOOKYARD_COMMIT, else git).
  define: { HOOKYARD_BUILD: JSON.stringify(readBuildInfo(root)) },
  // CommonJS packages inside an ESM bundle still call require() for Node's built-in modules.
  banner: {
    js: "import { createRequire as __hookyardCreateRequire } from 'node:module'; const require = __hookyardCreateRequire(import.meta.url);",
  },
});
cpSync(join(root, 'src/providers/samples'), join(out, 'samples'), { recursive: true });
mkdirSync(join(root, '.cache'), { recursive: true });
writeFileSync(join(root, '.cache/dist-meta.json'), JSON.stringify(result.metafile));
