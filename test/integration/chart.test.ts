// The Helm chart: lint, values refused by its schema, its objects accepted by a real API server (server-side dry
// runs with the default values and with everything on), and a real install and upgrade with the operator's
// permissions checked through the API server's own authorizer.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import * as k8s from '@kubernetes/client-node';
import { parse } from 'yaml';
import { dashboardFile, dashboardText } from '../../scripts/generate-dashboard.ts';
import { operatorCommand } from '../../src/commands.ts';
import { finalizer } from '../../src/operator/kube.ts';
import { parseFlags } from '../../src/runtime/flags.ts';
import { imageEntrypoint, operatorNodeFlags } from '../harness/cli.ts';
import {
  chartDir,
  everythingValues,
  findObject,
  helm,
  installCachedCRDs,
  installFinalizerPolicy,
  renderChart,
} from '../harness/helm.ts';
import { createNamespace, installCRDs, kubeConfig, kubectl } from '../harness/kube.ts';
import { root } from '../harness/servers.ts';

const dryRun = (yaml: string) =>
  kubectl(['apply', '--server-side', '--dry-run=server', '--field-manager=helm-test', '-f', '-'], yaml);

describe('Helm chart', () => {
  it('lints clean with the default values and with everything on', async () => {
    for (const args of [[], ['-f', everythingValues]]) {
      const r = await helm(['lint', '--strict', chartDir, ...args]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.doesNotMatch(r.stdout, /\[(WARNING|ERROR)\]/, r.stdout);
    }
  });

  it('ships the dashboard that scripts/generate-dashboard.ts writes (npm run generate)', () => {
    assert.equal(readFileSync(join(root, dashboardFile), 'utf8'), dashboardText());
  });

  it('refuses bad values at install, naming the value', async () => {
    const cases: [string, RegExp][] = [
      ['webhook.failurePolicy=Sometimes', /\/webhook\/failurePolicy/],
      ['operator.replicas=0', /\/operator\/replicas/],
      ['nats.url=http://nats:4222', /\/nats\/url/],
      ['operater.replicas=2', /additional propert.*'operater'/],
      ['watchNamespaces={Shop}', /\/watchNamespaces\/0/],
      ['image.digest=latest', /\/image\/digest/],
      [
        'monitoring.prometheusRule.alerts.consumerLag.for=soon',
        /\/monitoring\/prometheusRule\/alerts\/consumerLag\/for/,
      ],
      ['monitoring.prometheusRule.alerts.deliveryFailureRatio.threshold=20', /deliveryFailureRatio\/threshold/],
    ];
    for (const [set, message] of cases) {
      const r = await helm(['template', 'hookyard', chartDir, '--set', set]);
      assert.notEqual(r.code, 0, `--set ${set} was accepted`);
      assert.match(r.stderr, message, `--set ${set}`);
    }
  });

  // helm install renders with the cluster's kinds as Capabilities, so this refusal comes before anything is created.
  it('refuses monitoring or cert-manager without their CRDs, saying what to do', async () => {
    const cases: [string, string, string][] = [
      ['monitoring.podMonitors.enabled', 'monitoring.coreos.com/v1/PodMonitor', 'prometheus-operator'],
      ['monitoring.prometheusRule.enabled', 'monitoring.coreos.com/v1/PrometheusRule', 'prometheus-operator'],
      ['webhook.certManager.enabled', 'cert-manager.io/v1/Certificate', 'cert-manager'],
    ];
    for (const [value, kind, install] of cases) {
      const refused = await helm(['template', 'hookyard', chartDir, '--set', `${value}=true`]);
      assert.notEqual(refused.code, 0, `${value} without ${kind} was accepted`);
      for (const words of [`serves no ${kind}`, `install ${install}`, `set ${value}=false`]) {
        assert.ok(refused.stderr.includes(words), `${value}: does not say "${words}": ${refused.stderr}`);
      }
      const served = await helm(['template', 'hookyard', chartDir, '--set', `${value}=true`, '--api-versions', kind]);
      assert.equal(served.code, 0, served.stderr);
    }
  });

  it('applies with a server-side dry run, with the default values', async () => {
    const namespace = await createNamespace('chart');
    const { yaml, objects } = await renderChart(['--namespace', namespace, '--include-crds']);
    const kinds = new Set(objects.map((o) => o.kind));
    for (const kind of ['CustomResourceDefinition', 'Deployment', 'ClusterRole', 'ValidatingWebhookConfiguration']) {
      assert.ok(kinds.has(kind), kind);
    }
    for (const kind of ['PodMonitor', 'PrometheusRule', 'ConfigMap', 'Certificate']) assert.ok(!kinds.has(kind), kind);
    // The operator's own node flags around the image's node and CLI, so a moved ENTRYPOINT cannot break it.
    const operator = findObject(objects, 'Deployment').spec.template.spec.containers[0];
    const entrypoint = imageEntrypoint();
    assert.deepEqual(operator.command, [entrypoint[0], ...operatorNodeFlags(), entrypoint.at(-1)]);
    assert.ok(operatorNodeFlags().includes('--optimize-for-size'));
    const pdb = findObject(objects, 'PodDisruptionBudget');
    assert.equal(pdb.spec.unhealthyPodEvictionPolicy, 'AlwaysAllow', 'a pod that is not Ready never blocks a drain');
    const r = await dryRun(yaml);
    assert.equal(r.code, 0, r.stderr);
  });

  it('applies with a server-side dry run, with everything on', async () => {
    await installCachedCRDs('prometheus-operator');
    await installCachedCRDs('cert-manager');
    const [namespace, shop, billing, monitoring] = [
      await createNamespace('chart'),
      await createNamespace('shop'),
      await createNamespace('billing'),
      await createNamespace('monitoring'),
    ];
    const { yaml, objects } = await renderChart(
      ['--namespace', namespace, '--include-crds', '-f', everythingValues]
        .concat(['--set', `watchNamespaces={${shop},${billing}}`])
        .concat(['--set', `monitoring.dashboard.namespace=${monitoring}`]),
    );
    const count = (kind: string) => objects.filter((o) => o.kind === kind).length;
    assert.equal(count('PodMonitor'), 3);
    assert.equal(count('PrometheusRule'), 1);
    assert.equal(count('Certificate'), 1);
    // The tracing values reach the operator as flags it takes, for the receivers and dispatchers it writes.
    const args = findObject(objects, 'Deployment').spec.template.spec.containers[0].args as string[];
    const at = args.indexOf('--workload-otlp-endpoint');
    assert.deepEqual(args.slice(at, at + 6), [
      '--workload-otlp-endpoint',
      'http://otel-collector.observability:4318',
      '--workload-traces-sampler',
      'parentbased_traceidratio',
      '--workload-traces-sampler-arg',
      '0.25',
    ]);
    const flags = parseFlags(operatorCommand, [...args.slice(1), '--image', 'hookyard:test']);
    assert.equal(flags?.values['workload-traces-sampler'], 'parentbased_traceidratio');
    // Watched namespaces get Roles; the one cluster-wide binding is for the history API's reviews, which are
    // cluster-scoped (TokenReview, SubjectAccessReview), and grants nothing else.
    const clusterBindings = objects.filter((o) => o.kind === 'ClusterRoleBinding');
    assert.equal(clusterBindings.length, 1);
    const reviews = objects.find(
      (o) => o.kind === 'ClusterRole' && o.metadata.name === clusterBindings[0]?.roleRef.name,
    );
    assert.deepEqual(
      reviews?.rules.map((r: { resources: string[]; verbs: string[] }) => [r.resources, r.verbs]),
      [
        [['tokenreviews'], ['create']],
        [['subjectaccessreviews'], ['create']],
      ],
    );
    assert.deepEqual(
      objects
        .filter((o) => o.kind === 'RoleBinding')
        .map((o) => o.metadata.namespace)
        .sort(),
      [billing, namespace, namespace, shop].sort(),
    );
    const dashboard = findObject(objects, 'ConfigMap');
    assert.equal(dashboard.metadata.namespace, monitoring);
    assert.equal(dashboard.metadata.labels?.grafana_dashboard, '1');
    JSON.parse(dashboard.data['hookyard.json']);
    const r = await dryRun(yaml);
    assert.equal(r.code, 0, r.stderr);
  });

  it("creates resources with the operator's finalizer already on them, in the watched namespaces only", async () => {
    await installCRDs();
    const [watched, other] = [await createNamespace('finalized'), await createNamespace('unwatched')];
    after(await installFinalizerPolicy([watched]));
    const finalizersOf = async (object: object) => {
      const created = await kubectl(
        ['create', '-o', 'jsonpath={.metadata.finalizers}', '-f', '-'],
        JSON.stringify(object),
      );
      assert.equal(created.code, 0, created.stderr);
      return created.stdout ? (JSON.parse(created.stdout) as string[]) : [];
    };
    const endpoint = (namespace: string, name: string, finalizers?: string[]) => ({
      apiVersion: 'hookyard.io/v1alpha1',
      kind: 'ProviderEndpoint',
      metadata: { name, namespace, finalizers },
      spec: { provider: 'generic', verification: [{ none: true }] },
    });
    const subscription = {
      apiVersion: 'hookyard.io/v1alpha1',
      kind: 'WebhookSubscription',
      metadata: { name: 'orders', namespace: watched },
      spec: { sources: [{ endpoint: 'orders' }], target: { url: 'http://orders.shop.svc:8080/hooks' } },
    };
    assert.deepEqual(await finalizersOf(endpoint(watched, 'orders')), [finalizer]);
    assert.deepEqual(await finalizersOf(subscription), [finalizer]);
    assert.deepEqual(await finalizersOf(endpoint(watched, 'kept', ['example.com/keep'])), [
      'example.com/keep',
      finalizer,
    ]);
    assert.deepEqual(await finalizersOf(endpoint(watched, 'twice', [finalizer])), [finalizer]);
    assert.deepEqual(await finalizersOf(endpoint(other, 'orders')), [], 'no operator of this release removes it there');
  });

  it('lets a delete that hangs without an operator be finished by hand, as docs/uninstall.md says', async () => {
    await installCRDs();
    const namespace = await createNamespace('stuck');
    const endpoint = {
      apiVersion: 'hookyard.io/v1alpha1',
      kind: 'ProviderEndpoint',
      metadata: { name: 'orders', namespace, finalizers: ['hookyard.io/cleanup'] },
      spec: { provider: 'github', verification: [{ none: true }] },
    };
    const applied = await kubectl(['apply', '--server-side', '-f', '-'], JSON.stringify(endpoint));
    assert.equal(applied.code, 0, applied.stderr);
    // The chart's webhook now covers the namespace, and no operator pod answers it (this cluster runs no pods).
    const release = 'stuck';
    const args = ['--namespace', namespace, '--set', `watchNamespaces={${namespace}}`];
    const installed = await helm(['install', release, chartDir, ...args, '--set', 'webhook.failurePolicy=Fail']);
    assert.equal(installed.code, 0, installed.stderr);
    after(() => helm(['uninstall', release, '--namespace', namespace]));
    const refused = await kubectl(['annotate', '-n', namespace, 'pe', 'orders', 'touched=yes']);
    assert.notEqual(refused.code, 0, 'the webhook is called and cannot answer');

    assert.equal((await kubectl(['delete', '-n', namespace, 'pe', 'orders', '--wait=false'])).code, 0);
    const stuck = JSON.parse((await kubectl(['get', '-n', namespace, 'pe', 'orders', '-o', 'json'])).stdout);
    assert.ok(stuck.metadata.deletionTimestamp, 'the finalizer holds the resource');
    const stuckList =
      '{range .items[?(@.metadata.deletionTimestamp)]}{.kind} {.metadata.namespace}/{.metadata.name}{"\\n"}{end}';
    const listed = await kubectl(['get', 'hookyard', '-A', '-o', `jsonpath=${stuckList}`]);
    assert.ok(listed.stdout.includes(`ProviderEndpoint ${namespace}/orders`), listed.stdout + listed.stderr);
    const patch = ['patch', '-n', namespace, 'pe', 'orders', '--type=merge', '-p', '{"metadata":{"finalizers":null}}'];
    const patched = await kubectl(patch);
    assert.equal(patched.code, 0, patched.stderr);
    const gone = await kubectl(['get', '-n', namespace, 'pe', 'orders']);
    assert.match(gone.stderr, /NotFound/);
  });

  it('updates CRDs that helm upgrade leaves as they were, with the command docs/uninstall.md gives', async () => {
    await installCRDs();
    type Crd = {
      metadata: { name: string; resourceVersion?: string };
      spec: { versions: { additionalPrinterColumns: { name: string }[] }[] };
    };
    const current: Crd = parse(readFileSync(join(chartDir, 'crds/hookyard.io_webhooksubscriptions.yaml'), 'utf8'));
    const live = async (): Promise<Crd> =>
      JSON.parse((await kubectl(['get', 'crd', current.metadata.name, '-o', 'json'])).stdout);
    const columns = (crd: Crd) => crd.spec.versions[0]?.additionalPrinterColumns.map((c) => c.name);
    // An older release's CRD, written the way Helm writes one (an update, not an apply): no Paused column.
    const stale = await live();
    const version = stale.spec.versions[0];
    if (version) version.additionalPrinterColumns = version.additionalPrinterColumns.filter((c) => c.name !== 'Paused');
    const served = async () => columns(await live());
    try {
      const replaced = await kubectl(['replace', '--field-manager=helm', '-f', '-'], JSON.stringify(stale));
      assert.equal(replaced.code, 0, replaced.stderr);
      assert.ok(!(await served())?.includes('Paused'));
      const upgrade = await kubectl(['apply', '--server-side', '--force-conflicts', '-f', join(chartDir, 'crds')]);
      assert.equal(upgrade.code, 0, upgrade.stderr);
      assert.deepEqual(await served(), columns(current));
    } finally {
      await kubectl([
        'apply',
        '--server-side',
        '--force-conflicts',
        '--field-manager=hookyard-test',
        '-f',
        join(chartDir, 'crds'),
      ]);
    }
  });

  describe('installed', () => {
    let namespace = '';
    let watched = '';
    let other = '';
    // Resources of watched namespaces are never created here while the webhook is installed: the API server would try
    // to reach its Service, which has no pod behind it in this cluster without nodes.
    const release = 'hy';
    after(async () => {
      if (namespace) await helm(['uninstall', release, '--namespace', namespace]);
    });

    it('installs with everything on, and keeps its generated webhook certificate across upgrades', async () => {
      await installCachedCRDs('prometheus-operator');
      [namespace, watched, other] = [
        await createNamespace('hookyard'),
        await createNamespace('watched'),
        await createNamespace('other'),
      ];
      const args = ['--namespace', namespace, '-f', everythingValues]
        .concat(['--set', `watchNamespaces={${watched}}`, '--set', `monitoring.dashboard.namespace=${namespace}`])
        .concat(['--set', 'webhook.certManager.enabled=false', '--set', 'webhook.failurePolicy=Fail']);
      const installed = await helm(['install', release, chartDir, ...args]);
      assert.equal(installed.code, 0, installed.stderr);
      assert.match(installed.stdout, /kubectl get providerendpoints -A/, 'NOTES.txt says what to do next');

      const core = kubeConfig().makeApiClient(k8s.CoreV1Api);
      const secretName = `${release}-hookyard-webhook-cert`;
      const before = (await core.readNamespacedSecret({ name: secretName, namespace })).data ?? {};
      const ca = new X509Certificate(Buffer.from(before['ca.crt'] ?? '', 'base64'));
      const cert = new X509Certificate(Buffer.from(before['tls.crt'] ?? '', 'base64'));
      assert.ok(cert.verify(ca.publicKey), 'the serving certificate is signed by the CA');
      assert.match(cert.subjectAltName ?? '', new RegExp(`DNS:${release}-hookyard-webhook\\.${namespace}\\.svc\\b`));
      const admission = kubeConfig().makeApiClient(k8s.AdmissionregistrationV1Api);
      const caBundle = async () =>
        (await admission.readValidatingWebhookConfiguration({ name: `${release}-hookyard` })).webhooks?.[0]
          ?.clientConfig.caBundle;
      assert.equal(await caBundle(), before['ca.crt']);

      const upgraded = await helm(['upgrade', release, chartDir, ...args]);
      assert.equal(upgraded.code, 0, upgraded.stderr);
      const afterUpgrade = (await core.readNamespacedSecret({ name: secretName, namespace })).data ?? {};
      assert.deepEqual(afterUpgrade, before, 'the upgrade kept the certificate');
      assert.equal(await caBundle(), before['ca.crt']);
    });

    it('covers the watched namespaces, and only those, with its admission webhook and finalizer policy', async () => {
      assert.ok(namespace, 'installed');
      const binding = await kubectl([
        'get',
        'mutatingadmissionpolicybinding',
        `${release}-hookyard-finalizer`,
        '-o',
        'json',
      ]);
      assert.equal(binding.code, 0, `helm install renders the policy on this API server: ${binding.stderr}`);
      assert.deepEqual(JSON.parse(binding.stdout).spec.matchResources.namespaceSelector.matchExpressions, [
        { key: 'kubernetes.io/metadata.name', operator: 'In', values: [watched] },
      ]);
      // Nothing here can answer the webhook (no operator pod, no cluster network), so it is read, not called.
      const read = await kubectl(['get', 'validatingwebhookconfiguration', `${release}-hookyard`, '-o', 'json']);
      const [webhook] = (JSON.parse(read.stdout) as k8s.V1ValidatingWebhookConfiguration).webhooks ?? [];
      assert.ok(webhook, read.stderr);
      assert.deepEqual(webhook.namespaceSelector?.matchExpressions, [
        { key: 'kubernetes.io/metadata.name', operator: 'In', values: [watched] },
      ]);
      const core = kubeConfig().makeApiClient(k8s.CoreV1Api);
      const labels = (await core.readNamespace({ name: watched })).metadata?.labels;
      assert.equal(labels?.['kubernetes.io/metadata.name'], watched, 'the API server labels namespaces by name');
      assert.equal(webhook.failurePolicy, 'Fail');
      assert.deepEqual(webhook.clientConfig.service, {
        name: `${release}-hookyard-webhook`,
        namespace,
        path: '/validate',
        port: 443,
      });
      assert.deepEqual(webhook.rules, [
        {
          apiGroups: ['hookyard.io'],
          apiVersions: ['v1alpha1'],
          operations: ['CREATE', 'UPDATE'],
          resources: ['providerendpoints', 'webhooksubscriptions'],
          scope: 'Namespaced',
        },
      ]);
    });

    it("grants the operator's service account what it needs in the watched namespaces, and no more", async () => {
      assert.ok(namespace, 'installed');
      const authz = kubeConfig().makeApiClient(k8s.AuthorizationV1Api);
      const user = `system:serviceaccount:${namespace}:${release}-hookyard`;
      const groups = ['system:serviceaccounts', `system:serviceaccounts:${namespace}`, 'system:authenticated'];
      const can = async (verb: string, resource: string, ns: string | undefined, name?: string) => {
        const dot = resource.indexOf('.');
        const [path, group] = dot < 0 ? [resource, ''] : [resource.slice(0, dot), resource.slice(dot + 1)];
        const [plain, sub] = path.split('/');
        const review = await authz.createSubjectAccessReview({
          body: {
            spec: {
              user,
              groups,
              resourceAttributes: { verb, group, resource: plain, subresource: sub, namespace: ns, name },
            },
          },
        });
        return review.status?.allowed === true;
      };
      const allowed: [string, string, string | undefined, string?][] = [];
      for (const r of ['providerendpoints.hookyard.io', 'webhooksubscriptions.hookyard.io']) {
        for (const verb of ['get', 'list', 'watch', 'update', 'patch']) allowed.push([verb, r, watched]);
        const plain = r.split('.')[0];
        for (const verb of ['get', 'update', 'patch']) allowed.push([verb, `${plain}/status.hookyard.io`, watched]);
        allowed.push(['update', `${plain}/finalizers.hookyard.io`, watched]);
      }
      for (const r of ['configmaps', 'services', 'deployments.apps', 'ingresses.networking.k8s.io']) {
        for (const verb of ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'])
          allowed.push([verb, r, watched]);
      }
      for (const verb of ['get', 'list', 'watch']) allowed.push([verb, 'secrets', watched]);
      for (const r of ['events', 'events.events.k8s.io'])
        for (const verb of ['create', 'patch']) allowed.push([verb, r, watched]);
      allowed.push(['create', 'leases.coordination.k8s.io', namespace]);
      for (const verb of ['get', 'update'])
        allowed.push([verb, 'leases.coordination.k8s.io', namespace, 'hookyard-operator']);

      const denied: [string, string, string | undefined, string?][] = [
        ['create', 'secrets', watched],
        ['update', 'secrets', watched],
        ['delete', 'providerendpoints.hookyard.io', watched],
        ['create', 'pods', watched],
        ['get', 'secrets', other],
        ['list', 'deployments.apps', other],
        ['list', 'providerendpoints.hookyard.io', other],
        ['update', 'leases.coordination.k8s.io', namespace, 'someone-else'],
        ['create', 'leases.coordination.k8s.io', watched],
        ['list', 'namespaces', undefined],
        ['list', 'secrets', undefined],
      ];
      const wrong: string[] = [];
      for (const [verb, resource, ns, name] of allowed) {
        if (!(await can(verb, resource, ns, name))) wrong.push(`denied ${verb} ${resource} in ${ns}`);
      }
      for (const [verb, resource, ns, name] of denied) {
        if (await can(verb, resource, ns, name)) wrong.push(`allowed ${verb} ${resource} ${name ?? ''} in ${ns}`);
      }
      assert.deepEqual(wrong, []);
    });

    it('uninstalls, removing its cluster-wide objects', async () => {
      assert.ok(namespace, 'installed');
      const r = await helm(['uninstall', release, '--namespace', namespace]);
      assert.equal(r.code, 0, r.stderr);
      const kinds =
        'validatingwebhookconfigurations,mutatingadmissionpolicies,mutatingadmissionpolicybindings,clusterroles';
      const left = await kubectl(['get', kinds, '-o', 'name']);
      assert.doesNotMatch(left.stdout, new RegExp(`/${release}-hookyard`));
      namespace = '';
    });
  });
});
