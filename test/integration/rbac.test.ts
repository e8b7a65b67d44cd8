// The operator with exactly the permissions the chart grants: the chart's ServiceAccount, Roles and bindings are
// applied to the real API server, a token for that ServiceAccount comes from the TokenRequest API, and the operator
// runs with it. It must reconcile every example without one denial; with a permission taken away, the denial must
// show in the resource's status. No kubelet runs here: a resource is done when everything but its pods is
// (reconciledWithoutPods).
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import * as k8s from '@kubernetes/client-node';
import { Agent, fetch } from 'undici';
import { stringify } from 'yaml';
import { exampleDocuments, namesOf } from '../harness/examples.ts';
import { renderChart } from '../harness/helm.ts';
import { createNamespace, installCRDs, kubeConfig, kubectl, requireEnv } from '../harness/kube.ts';
import { freePort, root, tempDir } from '../harness/servers.ts';
import { type RunningOperator, reconciledWithoutPods, reviewCreate, startOperator } from '../harness/workloads.ts';

interface Resource {
  metadata: { name: string; generation?: number };
  status?: {
    observedGeneration?: number;
    conditions?: { type: string; status: string; reason: string; message: string }[];
  };
}

describe('the operator with the RBAC of the chart', () => {
  const kc = kubeConfig();
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);
  const work = tempDir('hookyard-rbac-');
  let release = '';
  let apps = '';
  let operator: RunningOperator | undefined;
  let serviceAccount = '';
  let operatorRules: k8s.V1PolicyRule[] = [];
  const kubeconfig = join(work.path, 'kubeconfig');
  let webhook = { url: '', ca: Buffer.alloc(0), servername: '' };

  before(async () => {
    await installCRDs();
    release = await createNamespace('hookyard-system');
    apps = await createNamespace('apps');
    const { objects } = await renderChart(['--namespace', release, '--set', `watchNamespaces={${apps}}`]);
    // The identity and its permissions; the operator runs here as a process, and the admission webhook has no pod.
    const rbac = objects.filter((o) =>
      ['ServiceAccount', 'Role', 'RoleBinding', 'ClusterRole', 'ClusterRoleBinding'].includes(o.kind),
    );
    assert.ok(rbac.some((o) => o.kind === 'Role' && o.metadata.namespace === apps));
    const applied = await kubectl(['apply', '--server-side', '-f', '-'], rbac.map((o) => stringify(o)).join('---\n'));
    assert.equal(applied.code, 0, applied.stderr);
    const deployment = objects.find((o) => o.kind === 'Deployment');
    serviceAccount = deployment?.spec.template.spec.serviceAccountName as string;
    operatorRules = rbac.find((o) => o.kind === 'Role' && o.metadata.namespace === apps)?.rules;
    const container = deployment?.spec.template.spec.containers[0];

    const core = kc.makeApiClient(k8s.CoreV1Api);
    const token = await core.createNamespacedServiceAccountToken({
      name: serviceAccount,
      namespace: release,
      body: { spec: { audiences: [], expirationSeconds: 3600 } },
    });
    writeFileSync(
      kubeconfig,
      stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [
          {
            name: 'test',
            cluster: { server: requireEnv('HOOKYARD_TEST_KUBE_SERVER'), 'insecure-skip-tls-verify': true },
          },
        ],
        users: [{ name: serviceAccount, user: { token: token.status?.token } }],
        contexts: [{ name: 'test', context: { cluster: 'test', user: serviceAccount } }],
        'current-context': 'test',
      }),
    );
    // The operator as the chart's Deployment runs it: its args and environment, with what the kubelet would
    // provide (the downward API, the webhook certificate Secret mounted) laid out here, and free ports.
    const certDir = join(work.path, 'webhook');
    mkdirSync(certDir);
    const certSecret = objects.find((o) => o.kind === 'Secret' && o.data?.['tls.crt']);
    for (const key of ['tls.crt', 'tls.key']) {
      writeFileSync(join(certDir, key), Buffer.from(certSecret?.data[key], 'base64'));
    }
    const ports = new Map([
      ['--metrics-port', String(await freePort())],
      ['--webhook-port', String(await freePort())],
    ]);
    const args = (container.args as string[]).map((a, i, all) =>
      a === '/etc/hookyard/webhook' ? certDir : (ports.get(all[i - 1] as string) ?? a),
    );
    const env = Object.fromEntries(
      (container.env as { name: string; value?: string }[]).map((e) => [e.name, e.value ?? '']),
    );
    const webhookService = objects.find((o) => o.kind === 'Service' && o.spec?.ports?.[0]?.targetPort === 'webhook');
    webhook = {
      url: `https://127.0.0.1:${ports.get('--webhook-port')}/validate`,
      ca: Buffer.from(certSecret?.data['ca.crt'] ?? '', 'base64'),
      servername: `${webhookService?.metadata.name}.${release}.svc`,
    };
    operator = await startOperator('rbac-operator', [...args, '--status-interval', '1s'], {
      ...env,
      POD_NAME: 'hookyard-operator-0',
      POD_NAMESPACE: release,
      KUBECONFIG: kubeconfig,
    });
  });
  after(async () => {
    operator?.kill('SIGKILL');
    work.remove();
  });

  const get = async (plural: string, name: string, namespace = apps) =>
    (await custom.getNamespacedCustomObject({
      group: 'hookyard.io',
      version: 'v1alpha1',
      namespace,
      plural,
      name,
    })) as Resource;
  const ready = (r: Resource) => r.status?.conditions?.find((c) => c.type === 'Ready');
  async function waitFor(what: string, check: () => Promise<boolean>) {
    for (let i = 0; i < 600; i++) {
      if (await check().catch(() => false)) return;
      await sleep(100);
    }
    throw new Error(`${what}: not reached in 60s`);
  }

  it('reconciles every example without a single denial', async () => {
    const applied = await kubectl(['apply', '--server-side', '-n', apps, '-f', join(root, 'examples')]);
    assert.equal(applied.code, 0, applied.stderr);
    const docs = exampleDocuments();
    for (const [kind, plural] of [
      ['ProviderEndpoint', 'providerendpoints'],
      ['WebhookSubscription', 'webhooksubscriptions'],
    ] as const) {
      for (const name of namesOf(docs, kind)) {
        await waitFor(`${kind} ${name} reconciled`, async () => reconciledWithoutPods(await get(plural, name)));
      }
    }
    assert.equal(await operator?.metric('hookyard_operator_is_leader'), 1);
    assert.doesNotMatch(operator?.output() ?? '', /forbidden/i);
  });

  it("serves the admission webhook with the chart's certificate", async () => {
    const { ca, servername } = webhook;
    const review = await reviewCreate(webhook.url, new Agent({ connect: { ca, servername } }), {
      apiVersion: 'hookyard.io/v1alpha1',
      kind: 'WebhookSubscription',
      metadata: { name: 'orders', namespace: apps },
      spec: { sources: [{ endpoint: 'proign' }], filter: 'body.(', target: { url: 'http://orders.shop.svc' } },
    });
    assert.equal(review.response.allowed, false);
  });

  it('shows a permission taken away from the Role in the status of what needs it', async () => {
    const roles = kc.makeApiClient(k8s.RbacAuthorizationV1Api);
    const [role] = (await roles.listNamespacedRole({ namespace: apps })).items;
    assert.ok(role?.rules);
    for (const rule of role.rules) {
      if (rule.resources?.includes('deployments')) rule.verbs = ['get', 'list', 'watch'];
    }
    await roles.replaceNamespacedRole({ namespace: apps, name: role.metadata?.name ?? '', body: role });
    const created = await kubectl(
      ['apply', '--server-side', '-n', apps, '-f', '-'],
      'apiVersion: hookyard.io/v1alpha1\nkind: ProviderEndpoint\nmetadata: {name: denied}\nspec: {provider: generic, verification: [{none: true}]}\n',
    );
    assert.equal(created.code, 0, created.stderr);
    await waitFor('the denial in status', async () => {
      const condition = ready(await get('providerendpoints', 'denied'));
      return (
        condition?.reason === 'ReconcileFailed' &&
        /deployments.* forbidden|forbidden.*deployments/i.test(condition.message)
      );
    });
  });
  it('waits for every watch to list, restarting a failed one: Secrets it could not list are seen once it may', async () => {
    const namespace = await createNamespace('apps');
    const roles = kc.makeApiClient(k8s.RbacAuthorizationV1Api);
    const withoutSecrets = operatorRules.filter((r) => !r.resources?.includes('secrets'));
    const role = { metadata: { name: 'hookyard-operator', namespace }, rules: withoutSecrets };
    await roles.createNamespacedRole({ namespace, body: role });
    await roles.createNamespacedRoleBinding({
      namespace,
      body: {
        metadata: { name: 'hookyard-operator', namespace },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'hookyard-operator' },
        subjects: [{ kind: 'ServiceAccount', name: serviceAccount, namespace: release }],
      },
    });
    const applied = await kubectl([
      'apply',
      '--server-side',
      '-n',
      namespace,
      '-f',
      join(root, 'examples/proign.yaml'),
    ]);
    assert.equal(applied.code, 0, applied.stderr);
    const name = `rbac-restart-${Date.now()}`;
    const restarted = await startOperator(name, ['--namespaces', namespace, '--no-leader-election'], {
      KUBECONFIG: kubeconfig,
    });
    after(() => restarted.kill('SIGKILL'));
    await waitFor('the Secrets watch fails', async () =>
      /secrets is forbidden.*watch failed; restarting/.test(restarted.output()),
    );
    // Without every cache filled it reconciles nothing (an empty Secret cache would report Secrets missing that
    // exist) and says so on /readyz.
    assert.equal((await fetch(`http://127.0.0.1:${restarted.metricsPort}/readyz`)).status, 503);
    assert.equal(ready(await get('providerendpoints', 'proign', namespace)), undefined);

    await roles.replaceNamespacedRole({
      namespace,
      name: 'hookyard-operator',
      body: { ...role, rules: operatorRules },
    });
    await waitFor('reconciled once the watch lists them', async () =>
      reconciledWithoutPods(await get('providerendpoints', 'proign', namespace)),
    );
    assert.equal((await fetch(`http://127.0.0.1:${restarted.metricsPort}/readyz`)).status, 200);
  });
});
