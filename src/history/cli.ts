// `hookyard events|event|attempts|replay|dlq|test`, also run as the kubectl plugin `kubectl hookyard ...`: the user's
// kubeconfig, its context and namespace. Reads go to the operator's history API (src/history/api.ts), through the
// API server's service proxy by default, with the user's token, so the operator checks the caller's RBAC. A replay
// is written on the resource (the hookyard.io/replay annotation), so the API server's RBAC decides it; the command
// then follows status.replay until the operator reports the request done.
import { readFileSync } from 'node:fs';
import { type RequestOptions, request } from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import * as k8s from '@kubernetes/client-node';
import { type ReplayRequest, type ReplayStatus, replayAnnotation } from '../api/replay.ts';
import { attemptsCommand, dlqCommand, eventCommand, eventsCommand, replayCommand, testCommand } from '../commands.ts';
import type { AttemptRecord } from '../dispatcher/history.ts';
import { type Command, type FlagValues, parseFlags, UsageError } from '../runtime/flags.ts';

/** The flags every history command has (`event` has no others). */
type Values = FlagValues<(typeof eventCommand)['flags']>;

interface Cluster {
  kc: k8s.KubeConfig;
  namespace: string;
  values: Values;
}

function cluster(values: Values): Cluster {
  const kc = new k8s.KubeConfig();
  kc.loadFromDefault();
  if (values.context) kc.setCurrentContext(values.context);
  const namespace = values.namespace ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? 'default';
  return { kc, namespace, values };
}

function parse<C extends Command>(command: C, args: string[], count: number) {
  const parsed = parseFlags(command, args);
  if (!parsed) return undefined;
  if (parsed.positionals.length !== count)
    throw new UsageError(`hookyard ${command.name} takes ${command.usage}; see hookyard ${command.name} --help`);
  return parsed;
}

/** GET on the history API as the kubeconfig's user; an answer other than 2xx throws its `error`. */
async function historyGet(c: Cluster, path: string): Promise<unknown> {
  const options: RequestOptions = {};
  await c.kc.applyToHTTPSOptions(options);
  const headers = (options.headers ?? {}) as Record<string, string>;
  const auth = headers.Authorization ?? headers.authorization;
  if (!auth) {
    throw new Error(
      'the kubeconfig user has no bearer token, which the history API needs (a ServiceAccount token, or an OIDC or exec plugin login)',
    );
  }
  let url: URL;
  let sent: RequestOptions;
  if (c.values.operator) {
    url = new URL(path, c.values.operator);
    const ca = c.values['operator-ca'];
    sent = { headers: { 'x-hookyard-authorization': auth }, ...(ca ? { ca: readFileSync(ca) } : {}) };
  } else {
    const [, namespace, name, port] = /^([^/]+)\/([^:]+):(\d+)$/.exec(c.values['operator-service']) ?? [];
    if (!port)
      throw new UsageError(
        '--operator-service must be NAMESPACE/NAME:PORT, such as hookyard-system/hookyard-webhook:443',
      );
    const server = c.kc.getCurrentCluster()?.server ?? '';
    url = new URL(
      `${server.replace(/\/$/, '')}/api/v1/namespaces/${namespace}/services/https:${name}:${port}/proxy${path}`,
    );
    sent = { ...options, headers: { ...headers, 'x-hookyard-authorization': auth } };
  }
  const { status, body } = await new Promise<{ status: number; body: string }>((ok, fail) => {
    const req = request(url, { ...sent, method: 'GET' }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => ok({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', (err) => fail(new Error(`the history API at ${url.origin} did not answer: ${err.message}`)));
    req.end();
  });
  let json: { error?: string; message?: string } | undefined;
  try {
    json = JSON.parse(body);
  } catch {
    json = undefined;
  }
  if (status < 200 || status >= 300)
    throw new Error(json?.error ?? json?.message ?? `HTTP ${status}: ${body.slice(0, 200)}`);
  return json;
}

const query = (params: Record<string, string | number | undefined>) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) q.set(k, String(v));
  return q.size ? `?${q}` : '';
};
const seg = encodeURIComponent;

/** Rows as aligned columns, or the items as JSON with -o json. */
function print(values: Values, items: object[], columns: [string, (item: never) => unknown][]) {
  if (values.output === 'json') {
    console.log(JSON.stringify(items, null, 2));
    return;
  }
  const rows = [
    columns.map(([title]) => title),
    ...items.map((i) => columns.map(([, cell]) => String(cell(i as never) ?? ''))),
  ];
  const widths = columns.map((_, n) => Math.max(...rows.map((r) => (r[n] as string).length)));
  for (const r of rows)
    console.log(r.map((cell, n) => (n === r.length - 1 ? cell : cell.padEnd(widths[n] as number))).join('   '));
}

interface EventSummary {
  sequence: number;
  time: string;
  id: string;
  type: string;
  size: number;
}

export async function events(args: string[]) {
  const parsed = parse(eventsCommand, args, 1);
  if (!parsed) return;
  const { values, positionals } = parsed;
  const c = cluster(values);
  const path = `/history/v1/namespaces/${seg(c.namespace)}/providerendpoints/${seg(positionals[0] as string)}/events`;
  const params = { type: values.type, id: values.id, since: values.since, until: values.until, limit: values.limit };
  type Row = EventSummary & { duplicates: number };
  const { items } = (await historyGet(c, path + query(params))) as { items: Row[] };
  print(values, items, [
    ['SEQ', (e: Row) => e.sequence],
    ['RECEIVED', (e: Row) => e.time],
    ['TYPE', (e: Row) => e.type],
    ['ID', (e: Row) => e.id],
    ['SIZE', (e: Row) => e.size],
    ['DUPLICATES', (e: Row) => e.duplicates],
  ]);
}

export async function event(args: string[]) {
  const parsed = parse(eventCommand, args, 2);
  if (!parsed) return;
  const { values, positionals } = parsed;
  const [endpoint, which] = positionals as [string, string];
  const c = cluster(values);
  const base = `/history/v1/namespaces/${seg(c.namespace)}/providerendpoints/${seg(endpoint)}/events`;
  let sequence = which;
  if (!/^[1-9][0-9]*$/.test(which)) {
    const { items } = (await historyGet(c, base + query({ id: which, limit: 1 }))) as { items: EventSummary[] };
    if (!items[0]) throw new Error(`no event with id "${which}" in the stream of ProviderEndpoint "${endpoint}"`);
    sequence = String(items[0].sequence);
  }
  printStored(values, (await historyGet(c, `${base}/${sequence}`)) as Stored);
}

type Stored = { headers: Record<string, string[]>; body: string } & EventSummary;

/** Headers and body exactly as stored: the NATS header lines, a blank line, the bytes (or all of it as JSON). */
function printStored(values: Values, stored: Stored) {
  if (values.output === 'json') {
    console.log(JSON.stringify(stored, null, 2));
    return;
  }
  for (const [key, list] of Object.entries(stored.headers)) for (const v of list) console.log(`${key}: ${v}`);
  console.log('');
  process.stdout.write(Buffer.from(stored.body, 'base64'));
}

export async function attempts(args: string[]) {
  const parsed = parse(attemptsCommand, args, 1);
  if (!parsed) return;
  const { values, positionals } = parsed;
  const c = cluster(values);
  const path = `/history/v1/namespaces/${seg(c.namespace)}/webhooksubscriptions/${seg(positionals[0] as string)}/attempts`;
  const { items } = (await historyGet(
    c,
    path + query({ event: values.event, since: values.since, limit: values.limit }),
  )) as {
    items: AttemptRecord[];
  };
  printAttempts(values, items);
}

function printAttempts(values: Values, items: AttemptRecord[]) {
  print(values, items, [
    ['TIME', (a: AttemptRecord) => a.time],
    ['EVENT', (a: AttemptRecord) => a.eventId],
    ['ATTEMPT', (a: AttemptRecord) => a.attempt],
    ['RESULT', (a: AttemptRecord) => a.status ?? a.error],
    ['MS', (a: AttemptRecord) => a.durationMs],
    [
      'DECISION',
      (a: AttemptRecord) =>
        `${a.decision}${a.retryInMs !== undefined ? ` in ${a.retryInMs}ms` : ''}${a.reason ? ` (${a.reason})` : ''}${a.replay ? ` [replay ${a.replay}]` : ''}`,
    ],
  ]);
}

export async function replay(args: string[]) {
  const parsed = parse(replayCommand, args, 1);
  if (!parsed) return;
  const { values, positionals } = parsed;
  const chosen = [values['dead-letters'], values.event.length > 0, values.since !== undefined].filter(Boolean).length;
  if (chosen !== 1)
    throw new UsageError('hookyard replay takes one of --dead-letters, --event ID (repeatable) and --since TIME');
  const request: Partial<ReplayRequest> = values['dead-letters']
    ? { deadLetters: true }
    : values.event.length > 0
      ? { eventIds: values.event }
      : { since: values.since, ...(values.until ? { until: values.until } : {}) };
  const done = await requestReplay(cluster(values), positionals[0] as string, request, values);
  if (done) printReplay(values, done);
}

/**
 * Sends a test event through the subscription (a `test` request), then shows its attempts: what the target
 * answered and what followed. Exits 1 unless the target took it.
 */
export async function test(args: string[]) {
  const parsed = parse(testCommand, args, 1);
  if (!parsed) return;
  const { values, positionals } = parsed;
  let body: unknown;
  if (values.body !== undefined) {
    try {
      body = JSON.parse(values.body);
    } catch {
      throw new UsageError('--body must be JSON, such as \'{"order":{"id":"o-1"}}\'');
    }
  }
  const c = cluster(values);
  const subscription = positionals[0] as string;
  const what = { test: { ...(values.type ? { type: values.type } : {}), ...(body === undefined ? {} : { body }) } };
  const done = await requestReplay(c, subscription, what, values);
  if (!done) return;
  if (done.status.phase !== 'Succeeded') {
    printReplay(values, done);
    return;
  }
  const eventId = `hookyard-test:${done.id}`;
  const path = `/history/v1/namespaces/${seg(c.namespace)}/webhooksubscriptions/${seg(subscription)}/attempts`;
  // The last record is published just before the dispatcher settles the event: give it a moment to be stored.
  let items: AttemptRecord[] = [];
  for (let tries = 0; tries < 20; tries++) {
    ({ items } = (await historyGet(c, path + query({ event: eventId }))) as { items: AttemptRecord[] });
    if (items.length > 0 && items.at(-1)?.decision !== 'retry') break;
    await sleep(250);
  }
  if (values.output === 'json') console.log(JSON.stringify(items, null, 2));
  else {
    console.log(`test event ${eventId} sent through ${subscription}:`);
    printAttempts(values, items);
  }
  if (items.at(-1)?.decision !== 'delivered') process.exitCode = 1;
}

type DeadLetter = EventSummary & { attempts: number; lastError: string };

export async function dlq(args: string[]) {
  const parsed = parseFlags(dlqCommand, args);
  if (!parsed) return;
  const { values, positionals } = parsed;
  const [action, subscription, which] = positionals as [string, string, string | undefined];
  const count = action === 'show' ? 3 : 2;
  if (!['list', 'show', 'replay', 'purge'].includes(action) || positionals.length !== count)
    throw new UsageError(`hookyard dlq takes ${dlqCommand.usage}; see hookyard dlq --help`);
  const c = cluster(values);
  if (action === 'replay' || action === 'purge') {
    const done = await requestReplay(
      c,
      subscription,
      action === 'replay' ? { deadLetters: true } : { purgeDeadLetters: true },
      values,
    );
    if (done) printReplay(values, done);
    return;
  }
  const path = `/history/v1/namespaces/${seg(c.namespace)}/webhooksubscriptions/${seg(subscription)}/dead-letters`;
  if (action === 'show') {
    let sequence = which as string;
    if (!/^[1-9][0-9]*$/.test(sequence)) {
      const { items } = (await historyGet(c, path + query({ limit: 10_000 }))) as { items: DeadLetter[] };
      const found = items.find((d) => d.id === which);
      if (!found) throw new Error(`no dead letter with id "${which}" for WebhookSubscription "${subscription}"`);
      sequence = String(found.sequence);
    }
    printStored(values, (await historyGet(c, `${path}/${sequence}`)) as Stored);
    return;
  }
  const { items } = (await historyGet(c, path + query({ limit: values.limit }))) as { items: DeadLetter[] };
  type Row = DeadLetter;
  print(values, items, [
    ['DEAD-LETTERED', (d: Row) => d.time],
    ['TYPE', (d: Row) => d.type],
    ['ID', (d: Row) => d.id],
    ['ATTEMPTS', (d: Row) => d.attempts],
    ['LAST ERROR', (d: Row) => d.lastError],
  ]);
}

/**
 * Writes the request on the subscription, then follows status.replay until the operator reports it done; undefined
 * (with exit code 1) when it is not done within --wait.
 */
async function requestReplay(
  c: Cluster,
  subscription: string,
  what: Partial<ReplayRequest>,
  values: Values & { 'dry-run'?: boolean; id?: string; wait: number },
): Promise<{ id: string; status: ReplayStatus } | undefined> {
  const id = values.id ?? `cli-${Date.now().toString(36)}`;
  const request = { id, ...what, ...(values['dry-run'] ? { dryRun: true } : {}) };
  const custom = c.kc.makeApiClient(k8s.CustomObjectsApi);
  const target = {
    group: 'hookyard.io',
    version: 'v1alpha1',
    namespace: c.namespace,
    plural: 'webhooksubscriptions',
    name: subscription,
  };
  await custom
    .patchNamespacedCustomObject(
      { ...target, body: { metadata: { annotations: { [replayAnnotation]: JSON.stringify(request) } } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    )
    .catch((err: unknown) => {
      const body = (err as { body?: string }).body;
      const message = body ? ((JSON.parse(body) as { message?: string }).message ?? body) : String(err);
      throw new Error(message);
    });
  const deadline = Date.now() + values.wait;
  let status: ReplayStatus | undefined;
  for (;;) {
    const sub = (await custom.getNamespacedCustomObject(target)) as { status?: { replay?: ReplayStatus } };
    status = sub.status?.replay;
    if (status?.id === id && status.phase !== 'Sending') break;
    if (Date.now() > deadline) {
      console.log(
        `replay ${id}: ${status?.id === id ? `${status.remaining} of ${status.selected} still being sent` : 'not taken by the operator yet'}; follow it with kubectl get wsub ${subscription} -o jsonpath='{.status.replay}'`,
      );
      process.exitCode = 1;
      return undefined;
    }
    await sleep(500);
  }
  if (status.phase === 'Failed') process.exitCode = 1;
  return { id, status };
}

function printReplay(values: Values, { id, status }: { id: string; status: ReplayStatus }) {
  if (values.output === 'json') console.log(JSON.stringify(status, null, 2));
  else {
    console.log(`replay ${id}: ${status.phase}: ${status.message}`);
    if (status.phase === 'DryRun') {
      print(values, status.events ?? [], [
        ['ID', (e: { id: string }) => e.id],
        ['TYPE', (e: { type: string }) => e.type],
        ['RECEIVED', (e: { receivedAt?: string }) => e.receivedAt],
      ]);
    }
  }
}
