// Which build runs: the package version and the git commit. scripts/build.ts writes both into the bundle; run from
// the sources, they are read from package.json and the checkout.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface BuildInfo {
  version: string;
  /** The git commit the code was built from, or `unknown` (no git, or not a checkout). */
  commit: string;
}

declare const HOOKYARD_BUILD: BuildInfo | undefined;

let fromSources: BuildInfo | undefined;

export function buildInfo(): BuildInfo {
  if (typeof HOOKYARD_BUILD !== 'undefined') return HOOKYARD_BUILD;
  fromSources ??= readBuildInfo(join(import.meta.dirname, '../..'));
  return fromSources;
}

/** The version in `<root>/package.json` and the checkout's HEAD commit (short), as scripts/build.ts bakes them. */
export function readBuildInfo(root: string): BuildInfo {
  const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
  let commit = process.env.HOOKYARD_COMMIT || 'unknown';
  if (commit === 'unknown') {
    try {
      commit = execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], {
        cwd: root,
        stdio: ['ignore', 'pipe', 'ignore'],
      })
        .toString()
        .trim();
    } catch {
      // no git or no checkout: the commit stays unknown
    }
  }
  return { version, commit };
}
