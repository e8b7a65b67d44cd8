// The default rules of Grafana's dashboard-linter, checked on a dashboard's JSON. The linter itself is a Go program
// that the Go module proxy does not serve, so its rules are written out here, each under its own name, with
// PromQL parsed by a real Prometheus (its /api/v1/parse_query) where a rule reads a query's syntax tree.

interface Variable {
  name: string;
  label?: string;
  type: string;
  query?: string | { query: string };
  datasource?: { uid?: string };
  multi?: boolean;
  allValue?: string;
  refresh?: number;
}
interface Target {
  expr: string;
  datasource?: { uid?: string };
}
export interface Dashboard {
  title: string;
  editable: boolean;
  templating: { list: Variable[] };
  panels: {
    type: string;
    title?: string;
    description?: string;
    datasource?: { uid?: string };
    targets?: Target[];
    fieldConfig?: { defaults?: { unit?: string } };
  }[];
}

/** A PromQL expression's syntax tree as Prometheus' parse_query returns it. */
export type ParsePromQL = (expr: string) => Promise<unknown>;

/** Units of Grafana's value formats, the ones a Hookyard panel may use (the linter accepts these and more). */
const validUnits = new Set(['none', 'short', 'percent', 'percentunit', 'bytes', 's', 'ms', 'ops', 'reqps', 'cps']);
// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's syntax for the data source variable.
const templated = new Set(['$datasource', '${datasource}']);
const queryPanels = new Set(['timeseries', 'stat', 'gauge', 'table', 'graph', 'singlestat']);

// Grafana's interval variables, replaced by a duration before parsing, as the linter does.
const withIntervals = (expr: string) => expr.replaceAll('$__rate_interval', '1m').replaceAll('$__interval', '1m');

export async function dashboardLintFindings(d: Dashboard, parse: ParsePromQL): Promise<string[]> {
  const findings: string[] = [];
  const found = (rule: string, where: string, what: string) => findings.push(`${rule}: ${where} ${what}`);
  const variables = d.templating.list;

  // template-datasource-rule
  const sources = variables.filter((v) => v.type === 'datasource');
  if (sources.length !== 1)
    found('template-datasource-rule', 'dashboard', `has ${sources.length} data source variables`);
  for (const v of sources) {
    if (v.name !== 'datasource') found('template-datasource-rule', v.name, "should be named 'datasource'");
    if (v.label !== 'Data source') found('template-datasource-rule', v.name, "should be labeled 'Data source'");
  }
  // template-job-rule, template-instance-rule
  for (const name of ['job', 'instance']) {
    const rule = `template-${name}-rule`;
    const v = variables.find((t) => t.name === name);
    if (!v) {
      found(rule, 'dashboard', `is missing the ${name} variable`);
      continue;
    }
    if (!templated.has(v.datasource?.uid ?? '')) found(rule, name, "should use the data source '$datasource'");
    if (v.type !== 'query') found(rule, name, 'should be a Prometheus query');
    if (v.label !== name[0]?.toUpperCase() + name.slice(1)) found(rule, name, 'should be labeled by its name');
    if (!v.multi) found(rule, name, 'should be a multi select');
    if (v.allValue !== '.+') found(rule, name, "allValue should be '.+'");
  }
  for (const v of variables.filter((t) => t.type === 'query')) {
    // template-on-time-change-reload-rule
    if (v.refresh !== 2) found('template-on-time-change-reload-rule', v.name, 'should refresh on time range change');
    // template-label-promql-rule
    const query = typeof v.query === 'object' ? v.query.query : (v.query ?? '');
    const expr = query.match(/^label_values\((.+),\s*\w+\)$/)?.[1];
    if (expr) await parse(expr).catch((e) => found('template-label-promql-rule', v.name, `is not PromQL: ${e}`));
  }
  for (const p of d.panels.filter((panel) => panel.type !== 'row')) {
    const where = `panel '${p.title}'`;
    // panel-title-description-rule
    if (!p.title || !p.description) found('panel-title-description-rule', where, 'has no title or description');
    if (!queryPanels.has(p.type)) continue;
    // panel-datasource-rule
    if (!templated.has(p.datasource?.uid ?? '')) found('panel-datasource-rule', where, 'does not use $datasource');
    // panel-units-rule
    if (!validUnits.has(p.fieldConfig?.defaults?.unit ?? '')) found('panel-units-rule', where, 'has no valid unit');
    // panel-no-targets-rule
    if (!p.targets?.length) found('panel-no-targets-rule', where, 'has no targets');
    for (const t of p.targets ?? []) findings.push(...(await targetFindings(where, t, parse)));
  }
  // uneditable-dashboard-rule
  if (d.editable) found('uneditable-dashboard-rule', 'dashboard', "is editable, it should be 'editable: false'");
  return findings;
}

interface Node {
  type?: string;
  name?: string;
  func?: { name: string };
  matchers?: { name: string; type: string; value: string }[];
  [key: string]: unknown;
}

async function targetFindings(where: string, t: Target, parse: ParsePromQL): Promise<string[]> {
  const findings: string[] = [];
  const found = (rule: string, what: string) => findings.push(`${rule}: ${where} query '${t.expr}' ${what}`);
  // target-rate-interval-rule: every range of rate, irate and increase is $__rate_interval.
  for (const range of t.expr.match(/\[[^\]]*\]/g) ?? []) {
    if (range !== '[$__rate_interval]') found('target-rate-interval-rule', `uses ${range}`);
  }
  // target-promql-rule
  let tree: Node;
  try {
    tree = (await parse(withIntervals(t.expr))) as Node;
  } catch (e) {
    found('target-promql-rule', `is not PromQL: ${e}`);
    return findings;
  }
  const walk = (node: unknown, parents: Node[]): void => {
    if (Array.isArray(node)) {
      for (const n of node) walk(n, parents);
      return;
    }
    if (!node || typeof node !== 'object') return;
    const n = node as Node;
    if (n.type === 'vectorSelector' || n.type === 'matrixSelector') {
      // target-job-rule, target-instance-rule
      for (const label of ['job', 'instance']) {
        const has = n.matchers?.some((m) => m.name === label && m.type === '=~' && m.value === `$${label}`);
        if (!has) found(`target-${label}-rule`, `selects ${n.name} without ${label}=~"$${label}"`);
      }
      // target-counter-agg-rule
      const call = parents.at(-1);
      const counted = n.type === 'matrixSelector' && ['rate', 'irate', 'increase'].includes(call?.func?.name ?? '');
      if (n.name?.endsWith('_total') && !counted) found('target-counter-agg-rule', `reads ${n.name} without rate`);
    }
    for (const value of Object.values(n)) walk(value, [...parents, n]);
  };
  walk(tree, []);
  return findings;
}
