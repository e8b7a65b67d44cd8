// The chart's monitoring against what Hookyard really serves: a real Prometheus scrapes the operator (reconciling
// the examples), and a receiver and a dispatcher run from the Deployments the operator renders. Every metric and
// label value that the Grafana dashboard and the alerts query must be in what it scraped, and every metric Hookyard
// serves must be on the dashboard or in an alert.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type * as k8s from '@kubernetes/client-node';
import { fetch } from 'undici';
import { stringify } from 'yaml';
import { dashboardFile } from '../../scripts/generate-dashboard.ts';
import type { ProviderEndpoint } from '../../src/api/provider-endpoint.ts';
import { parseResource } from '../../src/api/validate.ts';
import type { WebhookSubscription } from '../../src/api/webhook-subscription.ts';
import { sendSample } from '../../src/dev/send.ts';
import { endpointStreamConfig, ensureStream } from '../../src/jetstream/streams.ts';
import { renderEndpoint, renderSubscription } from '../../src/operator/render.ts';
import { samples } from '../../src/providers/samples.ts';
import type { CliProcess } from '../harness/cli.ts';
import { type Dashboard, dashboardLintFindings } from '../harness/dashboard-lint.ts';
import { exampleDocuments } from '../harness/examples.ts';
import { findObject, type K8sObject, renderChart, renderedRuleGroups } from '../harness/helm.ts';
import { createNamespace, installCRDs, kubectl, requireEnv } from '../harness/kube.ts';
import { testNats } from '../harness/nats.ts';
import { binDir, freePort, root, type Server, startProcess, tempDir, waitUntil } from '../harness/servers.ts';
import { type RunningOperator, runDeployment, startOperator } from '../harness/workloads.ts';

/** The release namespace the alerts are rendered for; the operator's target carries it, as a PodMonitor's does. */
const operatorNamespace = 'hookyard-system';

interface Matcher {
  name: string;
  type: string;
  value: string;
}
interface Selector {
  name: string;
  matchers: Matcher[];
}
interface Query {
  where: string;
  expr: string;
}

/** Every PromQL expression of the dashboard (panels and variables) and of the alerts, with Grafana's variables set. */
async function chartQueries(): Promise<Query[]> {
  const dashboard = JSON.parse(readFileSync(join(root, dashboardFile), 'utf8')) as {
    panels: { title: string; targets?: { expr: string }[] }[];
    templating: { list: { name: string; query?: string | { query: string } }[] };
  };
  const grafana = (expr: string) =>
    expr
      .replaceAll('$namespace', '.*')
      .replaceAll('$job', '.+')
      .replaceAll('$instance', '.+')
      .replaceAll('$__rate_interval', '1m');
  const queries: Query[] = dashboard.panels.flatMap((p) =>
    (p.targets ?? []).map((t) => ({ where: `dashboard panel "${p.title}"`, expr: grafana(t.expr) })),
  );
  for (const v of dashboard.templating.list) {
    const query = typeof v.query === 'object' ? v.query.query : '';
    const labelValues = query.match(/^label_values\((.*),\s*\w+\)$/);
    if (labelValues?.[1]) queries.push({ where: `dashboard variable ${v.name}`, expr: grafana(labelValues[1]) });
  }
  for (const group of await renderedRuleGroups()) {
    for (const rule of group.rules) queries.push({ where: `alert ${rule.alert}`, expr: rule.expr });
  }
  return queries;
}

/** `promtool check metrics`, Prometheus' own linter of the exposition format and its naming rules. */
function promtoolCheckMetrics(text: string): Promise<{ code: number; output: string }> {
  return new Promise((ok) => {
    const child = execFile(join(binDir, 'promtool'), ['check', 'metrics'], (err, stdout, stderr) =>
      ok({ code: err ? ((err.code as number) ?? 1) : 0, output: stdout + stderr }),
    );
    child.stdin?.end(text);
  });
}

/**
 * Suppressed: prom-client's default metrics name three gauges `nodejs_active_{handles,requests,resources}_total`.
 * They are the library's, shared by every Node service's dashboards; renaming them here would break those.
 */
const promClientGauge =
  /^nodejs_active_(handles|requests|resources)_total non-counter metrics should not have "_total" suffix$/;

const selectorText = (s: Selector) =>
  `{${s.matchers.map((m) => `${m.name}${m.type}${JSON.stringify(m.value)}`).join(', ')}}`;
/** A histogram's series named as its metric. */
const family = (name: string) => name.replace(/_(bucket|sum|count)$/, '');

describe('metrics the chart queries', () => {
  const work = tempDir('hookyard-monitoring-');
  const children: CliProcess[] = [];
  const servers: Server[] = [];
  let operator: RunningOperator | undefined;
  let prom = '';
  let queries: Query[] = [];
  const selectors: { where: string; selector: Selector }[] = [];
  const receiverLabels: Record<string, string> = {};
  const dispatcherLabels: Record<string, string> = {};
  let receiverPort = '';
  let dispatcherPort = '';
  /** Where each process serves /metrics. */
  const metricsPorts: Record<string, number> = {};
  const docs = exampleDocuments();
  const find = (kind: string, name: string) =>
    docs.find((d) => d.doc.kind === kind && d.doc.metadata.name === name)?.doc;
  const secret = (name: string) => find('Secret', name)?.stringData as Record<string, string> | undefined;

  const api = async (path: string, params: Record<string, string> = {}) => {
    const res = await fetch(`${prom}/api/v1/${path}?${new URLSearchParams(params)}`);
    const body = (await res.json()) as { status: string; data: unknown; error?: string };
    if (body.status !== 'success') throw new Error(`${path} ${JSON.stringify(params)}: ${body.error}`);
    return body.data;
  };
  const count = async (selector: Selector) =>
    ((await api('query', { query: `count(${selectorText(selector)})` })) as { result: unknown[] }).result.length;
  /** The selectors that match no scraped series. */
  const unmatched = async () => {
    const missing: string[] = [];
    for (const { where, selector } of selectors) {
      if ((await count(selector)) === 0) missing.push(`${where}: ${selectorText(selector)}`);
    }
    return missing;
  };

  const startPrometheus = async (targets: Record<string, { port: number; labels?: Record<string, string> }>) => {
    const dir = join(work.path, 'prometheus');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'hookyard.rules.yaml'), stringify({ groups: await renderedRuleGroups() }));
    writeFileSync(
      join(dir, 'prometheus.yml'),
      stringify({
        global: { scrape_interval: '1s', evaluation_interval: '1s' },
        rule_files: ['hookyard.rules.yaml'],
        scrape_configs: Object.entries(targets).map(([job, t]) => ({
          job_name: job,
          // As the chart's PodMonitors scrape: the metrics' own namespace label wins over the target's.
          honor_labels: true,
          static_configs: [{ targets: [`127.0.0.1:${t.port}`], labels: t.labels ?? {} }],
        })),
      }),
    );
    const port = await freePort();
    const server = startProcess(
      'prometheus',
      join(binDir, 'prometheus'),
      [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`].concat([
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ]),
      join(root, '.cache/test-logs'),
    );
    servers.push(server);
    prom = `http://127.0.0.1:${port}`;
    await waitUntil(server, 'Prometheus ready', async () => (await fetch(`${prom}/-/ready`)).ok, 60);
  };

  before(async () => {
    // A NATS namespace of its own: its stream, consumer and dedup window are not another test's.
    const natsNamespace = `metrics-${randomBytes(3).toString('hex')}`;
    const endpoint = parseResource({
      ...find('ProviderEndpoint', 'proign'),
      metadata: { name: 'proign', namespace: natsNamespace },
    }) as ProviderEndpoint;
    // The target is a local server: events are delivered, so the latency histograms get observations too.
    const target = createServer((req, res) => req.resume().on('end', () => res.writeHead(200).end()));
    await new Promise<void>((ok) => target.listen(0, '127.0.0.1', ok));
    after(() => target.close());
    const sub = find('WebhookSubscription', 'proign-shipments') as unknown as WebhookSubscription;
    const subscription = parseResource({
      ...sub,
      metadata: { name: 'proign-shipments', namespace: natsNamespace },
      spec: { ...sub.spec, target: { url: `http://127.0.0.1:${(target.address() as AddressInfo).port}/hook` } },
    }) as WebhookSubscription;
    const { jsm, nc } = await testNats();
    await ensureStream(jsm, endpointStreamConfig(natsNamespace, 'proign', endpoint.spec));
    await nc.close();
    const options = { image: 'hookyard:test', natsUrl: requireEnv('HOOKYARD_TEST_NATS_URL') };
    const receiver = renderEndpoint(endpoint, options);
    const dispatcher = renderSubscription(
      subscription,
      [{ namespace: natsNamespace, endpoint: 'proign', provider: 'proign' }],
      options,
    );
    const port = (d: k8s.V1Deployment) => d.spec?.template.spec?.containers[0]?.ports?.[0];
    receiverPort = port(receiver.deployment)?.name ?? '';
    dispatcherPort = port(dispatcher.deployment)?.name ?? '';
    Object.assign(receiverLabels, receiver.deployment.spec?.template.metadata?.labels);
    Object.assign(dispatcherLabels, dispatcher.deployment.spec?.template.metadata?.labels);
    const [rp, dp] = [await freePort(), await freePort()];
    children.push(await runDeployment(receiver.deployment, receiver.configMap, secret, rp, work.path));
    children.push(await runDeployment(dispatcher.deployment, dispatcher.configMap, secret, dp, work.path));
    // One signed event through both, as a provider would send it: event-type series exist once an event is stored.
    const sample = samples.proign?.[0];
    assert.ok(sample);
    const sent = await sendSample('proign', `http://127.0.0.1:${rp}${receiver.url}`, sample, {
      secret: secret('proign-webhook')?.secret,
    });
    assert.equal(sent.status, 200, sent.body);

    // The operator, leading, reconciling the examples: its per-subscription series appear as it reads JetStream.
    await installCRDs();
    const namespace = await createNamespace('metrics');
    const applied = await kubectl(['apply', '--server-side', '-n', namespace, '-f', join(root, 'examples')]);
    assert.equal(applied.code, 0, applied.stderr);
    operator = await startOperator('metrics-operator', [
      ...['--namespaces', namespace, '--lease-namespace', namespace, '--status-interval', '1s'],
    ]);

    Object.assign(metricsPorts, { receiver: rp, dispatcher: dp, operator: operator.metricsPort });
    await startPrometheus({
      receiver: { port: rp },
      dispatcher: { port: dp },
      operator: { port: operator.metricsPort, labels: { namespace: operatorNamespace } },
    });
    queries = await chartQueries();
    for (const q of queries) {
      const ast = await api('parse_query', { query: q.expr });
      const walk = (node: unknown): void => {
        if (Array.isArray(node)) node.forEach(walk);
        else if (node && typeof node === 'object') {
          const n = node as Record<string, unknown>;
          if (n.type === 'vectorSelector' || n.type === 'matrixSelector') {
            selectors.push({ where: q.where, selector: { name: n.name as string, matchers: n.matchers as Matcher[] } });
          }
          for (const v of Object.values(n)) walk(v);
        }
      };
      walk(ast);
    }
    // Until every target is scraped and the operator has reported every subscription series (or a minute passes).
    for (let i = 0; i < 120 && (await unmatched()).length > 0; i++) await sleep(500);
  });
  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    operator?.kill('SIGKILL');
    for (const s of servers) await s.stop();
    work.remove();
  });

  it('the PodMonitors select the pods the operator renders, on the ports that serve /metrics', async () => {
    const { objects } = await renderChart([
      ...['--namespace', operatorNamespace, '--set', 'monitoring.podMonitors.enabled=true'],
      ...['--api-versions', 'monitoring.coreos.com/v1/PodMonitor'],
    ]);
    const monitors = objects.filter((o) => o.kind === 'PodMonitor');
    const check = (monitor: K8sObject, podLabels: Record<string, string>, ports: string[]) => {
      for (const [k, v] of Object.entries(monitor.spec.selector.matchLabels as Record<string, string>)) {
        assert.equal(podLabels[k], v, `${monitor.metadata.name} selects ${k}=${v}`);
      }
      for (const e of monitor.spec.podMetricsEndpoints as { port: string; honorLabels: boolean }[]) {
        assert.ok(ports.includes(e.port), `${monitor.metadata.name} scrapes port ${e.port}, the pod has ${ports}`);
        assert.equal(e.honorLabels, true);
      }
    };
    check(findObject(monitors, 'PodMonitor', 'hookyard-receivers'), receiverLabels, [receiverPort]);
    check(findObject(monitors, 'PodMonitor', 'hookyard-dispatchers'), dispatcherLabels, [dispatcherPort]);
    const pod = findObject(objects, 'Deployment').spec.template;
    check(
      findObject(monitors, 'PodMonitor', 'hookyard-operator'),
      pod.metadata.labels,
      (pod.spec.containers[0].ports as { name: string }[]).map((p) => p.name),
    );
  });

  it('every query of the dashboard and the alerts is valid PromQL that Prometheus evaluates', async () => {
    assert.ok(queries.length > 30, `${queries.length} queries`);
    for (const q of queries) await api('query', { query: q.expr }).catch((e) => assert.fail(`${q.where}: ${e}`));
  });

  it('every metric and label value they query is in what Prometheus scraped from the operator, a receiver and a dispatcher', async () => {
    for (const prefix of [
      'hookyard_receiver_',
      'hookyard_dispatcher_',
      'hookyard_operator_',
      'hookyard_subscription_',
    ]) {
      assert.ok(
        selectors.some((s) => s.selector.name.startsWith(prefix)),
        `no query reads ${prefix}*`,
      );
    }
    assert.deepEqual(await unmatched(), []);
  });

  it('every metric Hookyard serves is on the dashboard or in an alert', async () => {
    // hookyard_build_info is an info metric: its labels say which build a pod runs, nothing to chart or alert on.
    const served = ((await api('label/__name__/values')) as string[]).filter(
      (n) => n.startsWith('hookyard_') && n !== 'hookyard_build_info',
    );
    const queried = new Set(selectors.map((s) => family(s.selector.name)));
    assert.deepEqual(
      [...new Set(served.map(family))].filter((n) => !queried.has(n)),
      [],
    );
  });

  it("the dashboard passes the rules of Grafana's dashboard-linter", async () => {
    const dashboard = JSON.parse(readFileSync(join(root, dashboardFile), 'utf8')) as Dashboard;
    assert.deepEqual(await dashboardLintFindings(dashboard, (expr) => api('parse_query', { query: expr })), []);
  });

  it("promtool check metrics finds nothing in each process's /metrics", async () => {
    assert.deepEqual(Object.keys(metricsPorts).sort(), ['dispatcher', 'operator', 'receiver']);
    for (const [process, port] of Object.entries(metricsPorts)) {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      assert.match(text, /^# HELP hookyard_/m, `${process} serves Hookyard's metrics`);
      const r = await promtoolCheckMetrics(text);
      const findings = r.output.split('\n').filter((line) => line.trim() !== '' && !promClientGauge.test(line));
      assert.deepEqual(findings, [], `${process}: ${r.output}`);
    }
  });

  it('Prometheus loads and evaluates every alert rule', async () => {
    const data = (await api('rules')) as {
      groups: { rules: { name: string; health: string; lastError?: string }[] }[];
    };
    const rules = data.groups.flatMap((g) => g.rules);
    assert.equal(rules.length, 7);
    for (const r of rules) assert.equal(r.health, 'ok', `${r.name}: ${r.lastError}`);
  });
});
