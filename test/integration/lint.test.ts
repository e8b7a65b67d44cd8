// The linters a platform team runs on what it installs, run here on what Hookyard ships and renders: kube-score on
// the chart's templates and on the workloads the operator renders for every example; kubeconform, strict, on the
// examples with the JSON schemas the project publishes in crds/schemas/ (and the real API server's own schemas for
// Kubernetes' kinds). scripts/build-tools.sh builds them into .cache/bin. kube-score stands in for kube-linter,
// which the Go module proxy does not serve.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { parseResource } from '../../src/api/validate.ts';
import { renderEndpoint, renderSubscription } from '../../src/operator/render.ts';
import { exampleDocuments } from '../harness/examples.ts';
import { everythingValues, renderChart } from '../harness/helm.ts';
import { kubectl, type Result } from '../harness/kube.ts';
import { binDir, root, tempDir } from '../harness/servers.ts';

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

type Schema = Record<string, unknown>;

/**
 * The API server's schemas of Kubernetes' own kinds (its /openapi/v2) in kubeconform's layout: one small file per
 * kind that points into one file of every definition, made strict as kubeconform's published ones are (unknown
 * fields refused; int-or-string and quantities take either type, as the API server does). Returns the location.
 */
async function kubernetesSchemas(dir: string): Promise<string> {
  const r = await kubectl(['get', '--raw', '/openapi/v2']);
  assert.equal(r.code, 0, r.stderr);
  const definitions = JSON.parse(r.stdout).definitions as Record<string, Schema>;
  const strict = (node: Schema): Schema => {
    const out: Schema = { ...node };
    if (node.format === 'int-or-string') out.type = ['integer', 'string'];
    if (node.format === 'quantity') out.type = ['number', 'string'];
    if (node.properties) {
      const properties = node.properties as Record<string, Schema>;
      out.properties = Object.fromEntries(Object.entries(properties).map(([k, v]) => [k, strict(v)]));
      if (node.additionalProperties === undefined) out.additionalProperties = false;
    }
    if (node.items) out.items = strict(node.items as Schema);
    return out;
  };
  const all = Object.fromEntries(Object.entries(definitions).map(([name, d]) => [name, strict(d)]));
  writeFileSync(join(dir, 'definitions.json'), JSON.stringify({ definitions: all }));
  for (const [name, d] of Object.entries(definitions)) {
    const gvks = (d['x-kubernetes-group-version-kind'] ?? []) as { group: string; version: string; kind: string }[];
    for (const { group, version, kind } of gvks) {
      // kubeconform's {{.Group}} is the part of apiVersion before the slash: the version itself for the core group.
      const groupDir = join(dir, group === '' ? version : group);
      mkdirSync(groupDir, { recursive: true });
      writeFileSync(
        join(groupDir, `${kind.toLowerCase()}_${version}.json`),
        JSON.stringify({ $ref: `../definitions.json#/definitions/${name}` }),
      );
    }
  }
  return join(dir, '{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json');
}

/** kubeconform's findings, strict, with Hookyard's published schemas first and Kubernetes' own second. */
async function kubeconform(kubernetes: string, files: string[]): Promise<string[]> {
  const published = join(root, 'crds/schemas/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json');
  const args = ['-strict', '-summary', '-output', 'text', '-schema-location', published];
  const r = await run('kubeconform', args.concat('-schema-location', kubernetes, ...files));
  const findings = r.stdout.split('\n').filter((line) => line !== '' && !line.startsWith('Summary:'));
  assert.ok(r.code === 0 || findings.length > 0, `kubeconform failed: ${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /Skipped: 0/, 'every document was checked against a schema');
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

  /** The objects the operator renders for every example, in one file. */
  const renderedWorkloads = () => {
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
    return file;
  };

  it('kube-score finds nothing in the workloads the operator renders for every example', async () => {
    const file = renderedWorkloads();
    // The operator renders no PodDisruptionBudget for a receiver's replicas yet: it would need its own RBAC and
    // informer. The receivers' two replicas prefer different nodes meanwhile.
    const noPDB = ['--ignore-test', 'deployment-has-poddisruptionbudget'];
    assert.deepEqual(await kubeScore(file, noPDB), []);
  });

  it('kubeconform (strict) accepts every example, the chart and the rendered workloads, and refuses a misspelt field or a bad format', async () => {
    const schemas = join(work.path, 'schemas');
    mkdirSync(schemas);
    const kubernetes = await kubernetesSchemas(schemas);
    const chart = join(work.path, 'chart.yaml');
    writeFileSync(chart, (await renderChart(['--namespace', 'hookyard-system'])).yaml);
    assert.deepEqual(await kubeconform(kubernetes, [join(root, 'examples'), chart, renderedWorkloads()]), []);
    const misspelt = join(work.path, 'misspelt.yaml');
    const doc = exampleDocuments().find((d) => d.doc.kind === 'ProviderEndpoint')?.doc as { spec: object };
    writeFileSync(misspelt, stringify({ ...doc, spec: { ...doc.spec, recevier: { replicas: 3 } } }));
    const findings = await kubeconform(kubernetes, [misspelt]);
    assert.match(findings.join('\n'), /additional properties 'recevier' not allowed/);
    // The formats the API server checks with CEL are patterns in the published schemas.
    const badDuration = join(work.path, 'bad-duration.yaml');
    writeFileSync(badDuration, stringify({ ...doc, spec: { ...doc.spec, stream: { maxAge: '7 days' } } }));
    assert.match((await kubeconform(kubernetes, [badDuration])).join('\n'), /maxAge.*does not match pattern/);
  });
});
