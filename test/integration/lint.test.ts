// The linters a platform team runs on what it installs, run here on what Hookyard ships and renders: kube-score on
// the chart's templates and on the workloads the operator renders for every example. scripts/build-tools.sh
// builds them into .cache/bin. kube-score stands in for kube-linter, which the Go module proxy does not serve.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { parseResource } from '../../src/api/validate.ts';
import { renderEndpoint, renderSubscription } from '../../src/operator/render.ts';
import { exampleDocuments } from '../harness/examples.ts';
import { everythingValues, renderChart } from '../harness/helm.ts';
import type { Result } from '../harness/kube.ts';
import { binDir, tempDir } from '../harness/servers.ts';

export function run(tool: string, args: string[]): Promise<Result> {
  return new Promise((ok) => {
    execFile(join(binDir, tool), args, { maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
      ok({ code: err ? ((err.code as number) ?? 1) : 0, stdout, stderr }),
    );
  });
}

// kube-score's checks that Hookyard leaves out, each for its reason.
const kubeScoreArgs = [
  // No CPU limits: throttling adds latency to every webhook and admission review; the CPU request gives each pod
  // its share. Memory and ephemeral storage have limits.
  '--ignore-container-cpu-limit',
  // The image is pinned by tag or digest (image.digest); Always would make every pod start depend on the registry.
  ['--ignore-test', 'container-image-pull-policy'],
  // Who may reach a receiver (the cluster's ingress controller) and what a dispatcher must reach (any target a
  // subscription names) depend on the cluster; a NetworkPolicy shipped here would cut one of them off.
  ['--ignore-test', 'pod-networkpolicy'],
].flat();

/** kube-score's findings in these objects: every check that is neither OK nor skipped, one line each. */
async function kubeScore(file: string, extra: string[] = []): Promise<string[]> {
  const r = await run(
    'kube-score',
    ['score', '--output-format', 'ci', '--exit-one-on-warning', ...kubeScoreArgs].concat(extra, [file]),
  );
  const findings = r.stdout.split('\n').filter((line) => line !== '' && !/^\[(OK|SKIPPED)\]/.test(line));
  assert.ok(r.code === 0 || findings.length > 0, `kube-score failed: ${r.stderr}`);
  return findings;
}

describe('linters', () => {
  const work = tempDir('hookyard-lint-');
  after(() => work.remove());

  it('kube-score finds nothing in the chart, with the default values and with everything on', async () => {
    for (const [name, args] of [
      ['default', []],
      ['everything', ['-f', everythingValues, '--api-versions', 'monitoring.coreos.com/v1']],
    ] as const) {
      const { yaml } = await renderChart(['--namespace', 'hookyard-system', ...args]);
      const file = join(work.path, `chart-${name}.yaml`);
      writeFileSync(file, yaml);
      assert.deepEqual(await kubeScore(file), [], `chart with ${name} values`);
    }
  });

  it('kube-score finds nothing in the workloads the operator renders for every example', async () => {
    const options = { image: 'ghcr.io/hookyard/hookyard:0.1.0', natsUrl: 'nats://nats.nats.svc:4222' };
    const objects: object[] = [];
    for (const { doc } of exampleDocuments().filter((d) => d.doc.kind !== 'Secret')) {
      const resource = parseResource({ ...doc, metadata: { ...doc.metadata, namespace: 'shop', uid: 'uid' } });
      if (resource.kind === 'ProviderEndpoint') {
        const o = renderEndpoint(resource, options);
        objects.push(o.configMap, o.deployment, o.service, ...(o.ingress ? [o.ingress] : []));
      } else {
        const o = renderSubscription(resource, [], options);
        objects.push(o.configMap, o.deployment);
      }
    }
    const file = join(work.path, 'rendered.yaml');
    writeFileSync(file, objects.map((o) => stringify(o)).join('---\n'));
    // The operator renders no PodDisruptionBudget for a receiver's replicas yet: it would need its own RBAC and
    // informer. The receivers' two replicas prefer different nodes meanwhile.
    const noPDB = ['--ignore-test', 'deployment-has-poddisruptionbudget'];
    assert.deepEqual(await kubeScore(file, noPDB), []);
  });
});
