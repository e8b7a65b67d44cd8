// Helpers for tests of the Helm chart: helm itself (with its state in a temporary folder), the chart rendered to
// objects, and CRDs of other projects (prometheus-operator, cert-manager) that scripts/build-tools.sh fetched.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseAllDocuments } from 'yaml';
import { finalizer } from '../../src/operator/kube.ts';
import { kubectl, type Result } from './kube.ts';
import { binDir, root, tempDir } from './servers.ts';

export const chartDir = join(root, 'charts/hookyard');
export const everythingValues = join(chartDir, 'ci/everything-values.yaml');

const helmHome = tempDir('hookyard-helm-');
process.on('exit', () => helmHome.remove());

export function helm(args: string[]): Promise<Result> {
  return new Promise((ok) => {
    execFile(
      join(binDir, 'helm'),
      args,
      {
        maxBuffer: 32 << 20,
        env: {
          ...process.env,
          HELM_CACHE_HOME: join(helmHome.path, 'cache'),
          HELM_CONFIG_HOME: join(helmHome.path, 'config'),
          HELM_DATA_HOME: join(helmHome.path, 'data'),
        },
      },
      (err, stdout, stderr) => ok({ code: err ? ((err.code as number) ?? 1) : 0, stdout, stderr }),
    );
  });
}

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  // biome-ignore lint/suspicious/noExplicitAny: rendered objects of many kinds, read by tests.
  [key: string]: any;
}

/** `helm template` of the chart with the given arguments (values files, --set, --namespace), as objects. */
export async function renderChart(args: string[]): Promise<{ yaml: string; objects: K8sObject[] }> {
  const r = await helm(['template', 'hookyard', chartDir, ...args]);
  if (r.code !== 0) throw new Error(`helm template ${args.join(' ')} failed: ${r.stderr}`);
  const objects = parseAllDocuments(r.stdout)
    .map((d) => d.toJS() as K8sObject | null)
    .filter((o): o is K8sObject => o !== null);
  return { yaml: r.stdout, objects };
}

export const findObject = (objects: K8sObject[], kind: string, name?: string): K8sObject => {
  const found = objects.find((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  if (!found) throw new Error(`no ${kind} ${name ?? ''} in the rendered chart`);
  return found;
};

/** Applies the CRDs in .cache/crds/<name> and waits until the API server serves them. */
export async function installCachedCRDs(name: 'prometheus-operator' | 'cert-manager'): Promise<void> {
  const dir = realpathSync(join(root, '.cache/crds', name));
  const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
  if (files.length === 0) throw new Error(`no CRDs in ${dir}: run scripts/build-tools.sh crds`);
  const applied = await kubectl(['apply', '--server-side', '--field-manager=hookyard-test', '-f', dir]);
  if (applied.code !== 0) throw new Error(`applying ${dir} failed: ${applied.stderr}`);
  for (let i = 0; ; i++) {
    const r = await kubectl(['wait', '--for=condition=Established', '--timeout=30s', '-f', dir]);
    if (r.code === 0) return;
    if (i > 3) throw new Error(`the CRDs in ${dir} did not become Established: ${r.stderr}`);
    await sleep(500);
  }
}

export interface RuleGroup {
  name: string;
  rules: { alert: string; expr: string; labels: Record<string, string> }[];
}

/** The PrometheusRule's groups, rendered for release namespace hookyard-system with these --set values. */
export async function renderedRuleGroups(set: string[] = []): Promise<RuleGroup[]> {
  const args = ['--namespace', 'hookyard-system', '--set', 'monitoring.prometheusRule.enabled=true'].concat(
    '--api-versions',
    'monitoring.coreos.com/v1/PrometheusRule',
  );
  const { objects } = await renderChart(args.concat(set.flatMap((s) => ['--set', s])));
  const rule = objects.find((o) => o.kind === 'PrometheusRule');
  return rule ? (rule.spec.groups as RuleGroup[]) : [];
}

/** The API the chart's finalizer policy needs; `helm install` sees it on Kubernetes 1.36 or later. */
export const mutatingPolicyApi = 'admissionregistration.k8s.io/v1/MutatingAdmissionPolicy';

/**
 * The chart's finalizer policy (templates/finalizer-policy.yaml) as `helm install` renders it for these watched
 * namespaces, applied to the API server; resolves once the API server applies it. Returns what removes it.
 */
export async function installFinalizerPolicy(namespaces: string[]): Promise<() => Promise<void>> {
  const release = `finalizer-${randomBytes(3).toString('hex')}`;
  const r = await helm(
    ['template', release, chartDir, '--show-only', 'templates/finalizer-policy.yaml', '--api-versions'].concat(
      mutatingPolicyApi,
      ['--set', `watchNamespaces={${namespaces.join(',')}}`],
    ),
  );
  if (r.code !== 0) throw new Error(`helm template failed: ${r.stderr}`);
  const applied = await kubectl(['apply', '--server-side', '--field-manager=hookyard-test', '-f', '-'], r.stdout);
  if (applied.code !== 0) throw new Error(`applying the finalizer policy failed: ${applied.stderr}`);
  // The API server picks policies up asynchronously: wait until a dry-run create comes back with the finalizer.
  const probe = JSON.stringify({
    apiVersion: 'hookyard.io/v1alpha1',
    kind: 'ProviderEndpoint',
    metadata: { name: 'finalizer-probe', namespace: namespaces[0] },
    spec: { provider: 'generic', verification: [{ none: true }] },
  });
  for (let i = 0; ; i++) {
    const created = await kubectl(
      ['create', '--dry-run=server', '-o', 'jsonpath={.metadata.finalizers}', '-f', '-'],
      probe,
    );
    if (created.stdout.includes(finalizer)) break;
    if (i > 100) throw new Error(`the finalizer policy was never applied: ${created.stdout} ${created.stderr}`);
    await sleep(100);
  }
  return async () => {
    await kubectl(['delete', '--ignore-not-found', '-f', '-'], r.stdout);
  };
}
