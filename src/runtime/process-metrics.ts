import { collectDefaultMetrics, Gauge, type Registry } from 'prom-client';
import { buildInfo } from './build.ts';

/**
 * What every process exports besides its own metrics: prom-client's `process_*` and `nodejs_*` (CPU, memory, event
 * loop lag, GC), and `hookyard_build_info{version,commit,node}` = 1, which tells which build a pod runs.
 */
export function registerProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry });
  const { version, commit } = buildInfo();
  new Gauge({
    name: 'hookyard_build_info',
    help: 'Always 1; the labels say which build runs: package version, git commit and Node version.',
    labelNames: ['version', 'commit', 'node'],
    registers: [registry],
  }).set({ version, commit, node: process.versions.node }, 1);
}
