// Writes charts/hookyard/dashboards/hookyard.json, the Grafana dashboard the chart ships: three rows (receivers,
// deliveries, the operator) of panels written here as title, queries and unit. `npm run generate` runs it; a test
// fails when the committed file differs, and another checks every metric it queries against a real scrape.
import { writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

export const dashboardFile = 'charts/hookyard/dashboards/hookyard.json';

interface Query {
  expr: string;
  legend: string;
}
interface Panel {
  title: string;
  description: string;
  unit: string;
  queries: Query[];
  type?: 'timeseries' | 'stat';
  bars?: boolean;
}
interface Row {
  title: string;
  panels: Panel[];
}

/** Every selector names the job and instance variables, as Grafana's dashboard-linter requires. */
const scope = 'job=~"$job", instance=~"$instance"';
const ns = `namespace=~"$namespace", ${scope}`;
const rate = (selector: string) => `rate(${selector}[$__rate_interval])`;
const q = (expr: string, legend: string): Query => ({ expr, legend });
const quantile = (p: number, metric: string, by: string) =>
  `histogram_quantile(${p}, sum by (le${by ? `, ${by}` : ''}) (${rate(`${metric}_bucket{${ns}}`)}))`;
/** The median and the 99th percentile of a histogram, over every series. */
const p50p99 = (metric: string) => [q(quantile(0.5, metric, ''), 'p50'), q(quantile(0.99, metric, ''), 'p99')];
const perEndpoint = '{{namespace}}/{{endpoint}}';
const perSubscription = '{{namespace}}/{{subscription}}';

export const rows: Row[] = [
  {
    title: 'Receivers',
    panels: [
      {
        title: 'Requests by outcome',
        description: 'Webhook requests per second, by how they ended (duplicate: a resend of a stored event).',
        unit: 'reqps',
        queries: [q(`sum by (outcome) (${rate(`hookyard_receiver_requests_total{${ns}}`)})`, '{{outcome}}')],
      },
      {
        title: 'Events stored',
        description: 'Events stored in JetStream per second, by endpoint (duplicates not included).',
        unit: 'ops',
        queries: [q(`sum by (namespace, endpoint) (${rate(`hookyard_receiver_events_total{${ns}}`)})`, perEndpoint)],
      },
      {
        title: 'Refused for signature or credentials',
        description: 'Share of requests refused because verification failed: a rotated secret, or forged requests.',
        unit: 'percentunit',
        queries: [
          q(
            `sum by (namespace, endpoint) (${rate(`hookyard_receiver_requests_total{${ns}, outcome=~"bad_signature|unauthorized"}`)})\n/\nsum by (namespace, endpoint) (${rate(`hookyard_receiver_requests_total{${ns}}`)})`,
            perEndpoint,
          ),
        ],
      },
      {
        title: '5xx answers',
        description: 'Requests answered 503 because the event could not be stored (NATS unreachable).',
        unit: 'reqps',
        queries: [
          q(
            `sum by (namespace, endpoint) (${rate(`hookyard_receiver_requests_total{${ns}, outcome="unavailable"}`)})`,
            perEndpoint,
          ),
        ],
      },
      {
        title: 'Request duration',
        description: 'From request to response, over every endpoint.',
        unit: 's',
        queries: p50p99('hookyard_receiver_request_duration_seconds'),
      },
      {
        title: 'Publish to PubAck, p99',
        description: 'How long JetStream takes to confirm an event is stored, by endpoint.',
        unit: 's',
        queries: [q(quantile(0.99, 'hookyard_receiver_publish_duration_seconds', 'namespace, endpoint'), perEndpoint)],
      },
      {
        title: 'Duplicates and provider retries',
        description: 'Resends of stored events, and requests the provider marked as retries.',
        unit: 'reqps',
        queries: [
          q(
            `sum by (namespace, endpoint) (${rate(`hookyard_receiver_requests_total{${ns}, outcome="duplicate"}`)})`,
            `duplicates ${perEndpoint}`,
          ),
          q(
            `sum by (namespace, endpoint) (${rate(`hookyard_receiver_provider_retries_total{${ns}}`)})`,
            `retries ${perEndpoint}`,
          ),
        ],
      },
      {
        title: 'Content-Type missing or unknown',
        description: 'Requests parsed by fallback or by sniffing the body.',
        unit: 'reqps',
        queries: [
          q(
            `sum by (namespace, endpoint) (${rate(`hookyard_receiver_content_type_mismatches_total{${ns}}`)})`,
            perEndpoint,
          ),
        ],
      },
      {
        title: 'Receivers connected to NATS',
        description: 'Receiver processes connected to NATS, of those running.',
        unit: 'short',
        type: 'stat',
        queries: [
          q(`sum(hookyard_receiver_nats_connected{${ns}})`, 'connected'),
          q(`count(hookyard_receiver_nats_connected{${ns}})`, 'running'),
        ],
      },
    ],
  },
  {
    title: 'Deliveries',
    panels: [
      {
        title: 'Attempts by outcome',
        description: 'Delivery attempts per second, by what followed them.',
        unit: 'ops',
        queries: [q(`sum by (outcome) (${rate(`hookyard_dispatcher_attempts_total{${ns}}`)})`, '{{outcome}}')],
      },
      {
        title: 'Delivered',
        description: 'Events the targets accepted with a 2xx, per second.',
        unit: 'ops',
        queries: [
          q(
            `sum by (namespace, subscription) (${rate(`hookyard_dispatcher_delivered_total{${ns}}`)})`,
            perSubscription,
          ),
        ],
      },
      {
        title: 'Failure ratio',
        description: 'Share of attempts that got no 2xx, by subscription.',
        unit: 'percentunit',
        queries: [
          q(
            `sum by (namespace, subscription) (${rate(`hookyard_dispatcher_failures_total{${ns}}`)})\n/\nsum by (namespace, subscription) (${rate(`hookyard_dispatcher_attempts_total{${ns}}`)})`,
            perSubscription,
          ),
        ],
      },
      {
        title: 'Failures by status class',
        description: 'Attempts without a 2xx: 4xx, 5xx, network errors and timeouts.',
        unit: 'ops',
        queries: [
          q(`sum by (status_class) (${rate(`hookyard_dispatcher_failures_total{${ns}}`)})`, '{{status_class}}'),
        ],
      },
      {
        title: 'Attempt duration, p99',
        description: 'Duration of one delivery attempt, by subscription.',
        unit: 's',
        queries: [
          q(
            quantile(0.99, 'hookyard_dispatcher_delivery_duration_seconds', 'namespace, subscription'),
            perSubscription,
          ),
        ],
      },
      {
        title: 'End-to-end latency',
        description: 'From receipt by the receiver to a 2xx from the target, retries included.',
        unit: 's',
        queries: p50p99('hookyard_dispatcher_end_to_end_latency_seconds'),
      },
      {
        title: 'Waiting for delivery',
        description: "Events in a subscription's consumer not yet handed out, and handed out but not yet acked.",
        unit: 'short',
        queries: [
          q(
            `sum by (namespace, subscription) (max by (namespace, subscription, endpoint) (hookyard_subscription_consumer_pending{${ns}}))`,
            `pending ${perSubscription}`,
          ),
          q(
            `sum by (namespace, subscription) (max by (namespace, subscription, endpoint) (hookyard_subscription_consumer_ack_pending{${ns}}))`,
            `ack pending ${perSubscription}`,
          ),
        ],
      },
      {
        title: 'Redelivered',
        description: 'Events JetStream has handed out more than once and that are not yet acked.',
        unit: 'short',
        queries: [
          q(
            `sum by (namespace, subscription) (max by (namespace, subscription, endpoint) (hookyard_subscription_consumer_redelivered{${ns}}))`,
            perSubscription,
          ),
        ],
      },
      {
        title: 'Dead letters added',
        description: 'Events moved to the dead-letter stream: retries exhausted, or a permanent failure.',
        unit: 'short',
        bars: true,
        queries: [
          q(
            `sum by (namespace, subscription, reason) (increase(hookyard_dispatcher_dead_letters_total{${ns}}[$__rate_interval]))`,
            `${perSubscription} {{reason}}`,
          ),
        ],
      },
      {
        title: 'Dead-letter stream',
        description: 'Events kept in the dead-letter stream, by subscription: replay them once the target is fixed.',
        unit: 'short',
        queries: [q(`max by (namespace, subscription) (hookyard_subscription_dead_letters{${ns}})`, perSubscription)],
      },
      {
        title: 'Retries, filtered, possible duplicates',
        description:
          'Retries scheduled; events the filter skipped; redeliveries the dispatcher did not schedule; events dropped with dead letters off; attempts of replayed events; attempt records JetStream did not store.',
        unit: 'ops',
        queries: [
          q(
            `sum by (namespace, subscription) (${rate(`hookyard_dispatcher_retries_total{${ns}}`)})`,
            `retries ${perSubscription}`,
          ),
          q(
            `sum by (namespace, subscription) (${rate(`hookyard_dispatcher_filtered_total{${ns}}`)})`,
            `filtered ${perSubscription}`,
          ),
          q(
            `sum by (namespace, subscription) (${rate(`hookyard_dispatcher_possible_duplicates_total{${ns}}`)})`,
            `possible duplicates ${perSubscription}`,
          ),
          q(
            `sum by (namespace, subscription) (${rate(`hookyard_dispatcher_discarded_total{${ns}}`)})`,
            `discarded ${perSubscription}`,
          ),
          q(
            `sum by (namespace, subscription) (${rate(`hookyard_dispatcher_replay_attempts_total{${ns}}`)})`,
            `replay attempts ${perSubscription}`,
          ),
          q(
            `sum by (namespace, subscription) (${rate(`hookyard_dispatcher_attempt_records_failed_total{${ns}}`)})`,
            `attempt records not stored ${perSubscription}`,
          ),
        ],
      },
      {
        title: 'In flight, circuit, paused',
        description:
          'Deliveries in progress; circuit breaker (0 closed, 1 open, 2 half-open); 1 while paused; retries scheduled and not yet taken.',
        unit: 'short',
        queries: [
          q(`sum by (namespace, subscription) (hookyard_dispatcher_in_flight{${ns}})`, `in flight ${perSubscription}`),
          q(
            `max by (namespace, subscription) (hookyard_dispatcher_circuit_state{${ns}})`,
            `circuit ${perSubscription}`,
          ),
          q(`max by (namespace, subscription) (hookyard_dispatcher_paused{${ns}})`, `paused ${perSubscription}`),
          q(
            `max by (namespace, subscription) (hookyard_dispatcher_scheduled_retries{${ns}})`,
            `scheduled retries ${perSubscription}`,
          ),
        ],
      },
    ],
  },
  {
    title: 'Operator',
    panels: [
      {
        title: 'Reconciles',
        description:
          'Reconciles per second, by kind and result, the status rewrites that needed no reconcile (a Deployment became available), and the status refreshes (the counters read from JetStream) that needed none.',
        unit: 'ops',
        queries: [
          q(`sum by (kind, result) (${rate(`hookyard_operator_reconciles_total{${scope}}`)})`, '{{kind}} {{result}}'),
          q(`sum by (kind) (${rate(`hookyard_operator_status_rewrites_total{${scope}}`)})`, '{{kind}} status only'),
          q(`sum by (kind) (${rate(`hookyard_operator_status_refreshes_total{${scope}}`)})`, '{{kind}} refresh'),
        ],
      },
      {
        title: 'Reconcile duration, p99',
        description: 'How long one reconcile takes, by kind.',
        unit: 's',
        queries: [
          q(
            `histogram_quantile(0.99, sum by (le, kind) (${rate(`hookyard_operator_reconcile_duration_seconds_bucket{${scope}}`)}))`,
            '{{kind}}',
          ),
        ],
      },
      {
        title: 'Leading replicas',
        description: 'Operator replicas holding the lease: 1 when healthy.',
        unit: 'short',
        type: 'stat',
        queries: [q(`sum(hookyard_operator_is_leader{${scope}})`, 'leading')],
      },
    ],
  },
];

// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's syntax for the data source variable.
const datasource = { type: 'prometheus', uid: '${datasource}' };

function panelJSON(panel: Panel, id: number, gridPos: object): object {
  const targets = panel.queries.map((query, i) => ({
    datasource,
    expr: query.expr,
    legendFormat: query.legend,
    refId: String.fromCharCode(65 + i),
  }));
  if (panel.type === 'stat') {
    return {
      id,
      type: 'stat',
      title: panel.title,
      description: panel.description,
      datasource,
      gridPos,
      targets,
      fieldConfig: { defaults: { unit: panel.unit }, overrides: [] },
      options: { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false }, textMode: 'value_and_name' },
    };
  }
  return {
    id,
    type: 'timeseries',
    title: panel.title,
    description: panel.description,
    datasource,
    gridPos,
    targets,
    fieldConfig: {
      defaults: {
        unit: panel.unit,
        min: 0,
        custom: { drawStyle: panel.bars ? 'bars' : 'line', fillOpacity: panel.bars ? 80 : 10, showPoints: 'never' },
      },
      overrides: [],
    },
    options: {
      legend: { displayMode: 'list', placement: 'bottom', showLegend: true },
      tooltip: { mode: 'multi', sort: 'desc' },
    },
  };
}

/** A metric of each process: the operator, receivers and dispatchers. */
const everyProcess =
  '{__name__=~"hookyard_receiver_requests_total|hookyard_dispatcher_attempts_total|hookyard_operator_reconciles_total"}';

/** A variable over a scrape label (job, instance): every value by default, as the dashboard-linter asks. */
const scrapeVariable = (name: string, query: string) => ({
  name,
  label: name[0]?.toUpperCase() + name.slice(1),
  type: 'query',
  datasource,
  definition: query,
  query: { query, refId: name },
  includeAll: true,
  multi: true,
  allValue: '.+',
  refresh: 2,
  sort: 1,
  current: {},
  hide: 0,
});

export function dashboard(): object {
  const panels: object[] = [];
  let id = 1;
  let y = 0;
  for (const row of rows) {
    panels.push({ id: id++, type: 'row', title: row.title, collapsed: false, gridPos: { h: 1, w: 24, x: 0, y } });
    y += 1;
    row.panels.forEach((panel, i) => {
      panels.push(panelJSON(panel, id++, { h: 8, w: 8, x: (i % 3) * 8, y: y + Math.floor(i / 3) * 8 }));
    });
    y += Math.ceil(row.panels.length / 3) * 8;
  }
  return {
    title: 'Hookyard',
    uid: 'hookyard',
    description: 'Webhook receivers, deliveries and the Hookyard operator.',
    tags: ['hookyard'],
    // Provisioned from the chart: edits in Grafana would be lost at the next sync, so they are not offered.
    editable: false,
    schemaVersion: 39,
    version: 1,
    refresh: '30s',
    time: { from: 'now-6h', to: 'now' },
    timezone: '',
    graphTooltip: 1,
    templating: {
      list: [
        { name: 'datasource', label: 'Data source', type: 'datasource', query: 'prometheus', current: {}, hide: 0 },
        scrapeVariable('job', `label_values(${everyProcess}, job)`),
        scrapeVariable('instance', `label_values(${everyProcess.replace('}', ', job=~"$job"}')}, instance)`),
        {
          name: 'namespace',
          label: 'Namespace',
          type: 'query',
          datasource,
          definition:
            'label_values({__name__=~"hookyard_receiver_requests_total|hookyard_dispatcher_attempts_total"}, namespace)',
          query: {
            query:
              'label_values({__name__=~"hookyard_receiver_requests_total|hookyard_dispatcher_attempts_total"}, namespace)',
            refId: 'namespace',
          },
          includeAll: true,
          multi: true,
          allValue: '.*',
          refresh: 2,
          sort: 1,
          current: {},
          hide: 0,
        },
      ],
    },
    annotations: { list: [] },
    panels,
  };
}

export const dashboardText = () => `${JSON.stringify(dashboard(), null, 2)}\n`;

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) writeFileSync(dashboardFile, dashboardText());
