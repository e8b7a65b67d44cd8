// make demo: dev mode on examples/ with a local sink, playing each seed provider's documented webhooks plus a
// duplicate and a forged signature. Prints what happened and exits 0 only when every outcome is the one the
// providers' documents call for.
import { spawnSync } from 'node:child_process';
import { createServer } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import pino from 'pino';
import type { ProviderName } from '../src/api/provider-endpoint.ts';
import { startDev } from '../src/dev/dev.ts';
import { findNatsServer, NoNatsServer } from '../src/dev/nats-server.ts';
import { sendSample } from '../src/dev/send.ts';
import { type Sample, samples } from '../src/providers/samples.ts';

const arrived = new Map<string, number>();
const sink = createServer((req, res) => {
  const subscription = (req.url ?? '').split('/')[1] ?? '';
  req.resume().on('end', () => {
    arrived.set(subscription, (arrived.get(subscription) ?? 0) + 1);
    res.writeHead(200).end();
  });
});
await new Promise<void>((ok) => sink.listen(0, '127.0.0.1', ok));
const sinkUrl = `http://127.0.0.1:${(sink.address() as { port: number }).port}`;

const { values } = parseArgs({ options: { 'nats-url': { type: 'string' } } });
const dev = await startDev({
  paths: ['examples'],
  natsUrl: values['nats-url'] ?? localNats(),
  port: 0,
  host: '127.0.0.1',
  sink: sinkUrl,
  log: pino({ level: 'warn' }),
});

/**
 * Without --nats-url dev mode starts a nats-server: one on the PATH if new enough, else the cached one, which is
 * built here when Go is there to build it. Without either, the demo says what to install or pass, and stops.
 */
function localNats(): undefined {
  try {
    findNatsServer();
  } catch (err) {
    if (!(err instanceof NoNatsServer)) throw err;
    const hasGo = spawnSync('go', ['version'], { stdio: 'ignore' }).status === 0;
    if (hasGo && spawnSync('scripts/build-tools.sh', ['nats-server'], { stdio: 'inherit' }).status === 0) return;
    console.error(`make demo: ${err.message.replace('pass --nats-url ', 'run make demo NATS_URL=')}`);
    process.exit(1);
  }
  return undefined;
}
const secret = (name: string, key: string) => dev.manifests.secrets.get(name, key)?.toString() ?? '';
const url = (endpoint: string, query = '') => `http://127.0.0.1:${dev.port}/hooks/default/${endpoint}${query}`;
const sample = (provider: ProviderName, i: number) => samples[provider]?.[i] as Sample;

interface Play {
  provider: ProviderName;
  what: string;
  send: () => Promise<{ status: number; body: string }>;
  expect: { status: number; outcome: string };
}
const proignSecret = secret('proign-webhook', 'secret');
const plays: Play[] = [
  {
    provider: 'shopflix',
    what: 'registration check (unsigned)',
    send: () => sendSample('shopflix', url('shopflix'), sample('shopflix', 0)),
    expect: { status: 200, outcome: 'registration_check' },
  },
  {
    provider: 'shopflix',
    what: 'order.deliverd example, signed',
    send: () =>
      sendSample('shopflix', url('shopflix'), sample('shopflix', 1), { secret: secret('shopflix-webhook', 'secret') }),
    expect: { status: 200, outcome: 'accepted' },
  },
  {
    provider: 'proign',
    what: 'order.shipped, signed',
    send: () => sendSample('proign', url('proign'), sample('proign', 0), { secret: proignSecret }),
    expect: { status: 200, outcome: 'accepted' },
  },
  {
    provider: 'proign',
    what: 'same event again, X-Proign-Retry-Count: 0 (its first retry)',
    send: () => sendSample('proign', url('proign'), sample('proign', 1), { secret: proignSecret }),
    expect: { status: 200, outcome: 'duplicate' },
  },
  {
    provider: 'proign',
    what: 'forged signature',
    send: () => sendSample('proign', url('proign'), sample('proign', 0), { secret: 'not-the-secret' }),
    expect: { status: 401, outcome: 'bad_signature' },
  },
  {
    provider: 'fotoweb',
    what: 'order submitted, JSON',
    send: () =>
      sendSample('fotoweb', url('fotoweb'), sample('fotoweb', 0), { headers: { 'x-forwarded-for': '203.0.113.7' } }),
    expect: { status: 204, outcome: 'accepted' },
  },
  {
    provider: 'fotoweb',
    what: 'order approved, form data',
    send: () =>
      sendSample('fotoweb', url('fotoweb'), sample('fotoweb', 1), { headers: { 'x-forwarded-for': '203.0.113.7' } }),
    expect: { status: 204, outcome: 'accepted' },
  },
  {
    provider: 'printiq',
    what: 'CreateJob, JSON',
    send: () =>
      sendSample('printiq', url('printiq', `?token=${secret('printiq-webhook', 'token')}`), sample('printiq', 0)),
    expect: { status: 200, outcome: 'accepted' },
  },
  {
    provider: 'printiq',
    what: 'CreateJobXml, XML',
    send: () =>
      sendSample('printiq', url('printiq', `?token=${secret('printiq-webhook', 'token')}`), sample('printiq', 1)),
    expect: { status: 200, outcome: 'accepted' },
  },
  {
    provider: 'siteflow',
    what: 'statusupdate: shipped',
    send: () =>
      sendSample('siteflow', url('siteflow'), sample('siteflow', 0), {
        headers: { 'X-Hookyard-Token': secret('siteflow-webhook', 'token') },
      }),
    expect: { status: 200, outcome: 'accepted' },
  },
  {
    provider: 'siteflow',
    what: 'ordersubmissionerror, no Content-Type',
    send: () =>
      sendSample('siteflow', url('siteflow'), sample('siteflow', 1), {
        headers: { 'X-Hookyard-Token': secret('siteflow-webhook', 'token') },
      }),
    expect: { status: 200, outcome: 'accepted' },
  },
];

/** Deliveries the examples' subscriptions should make: their event types and filters decide. */
const expectedDeliveries: Record<string, number> = {
  'shopflix-orders': 1,
  'shopflix-returns': 0,
  'proign-shipments': 1,
  'proign-documents': 0,
  'fotoweb-orders': 2,
  'printiq-jobs': 2,
  'siteflow-status': 2,
};

let failures = 0;
const rows: string[][] = [];
for (const play of plays) {
  const { status, body } = await play.send();
  const outcome =
    status === 204
      ? 'accepted'
      : ((JSON.parse(body || '{}') as { status?: string; error?: string }).error ??
        (JSON.parse(body) as { status?: string }).status ??
        '');
  const shown = outcome === 'ok' ? 'registration_check' : outcome;
  const ok = status === play.expect.status && shown === play.expect.outcome;
  if (!ok) failures++;
  rows.push([
    play.provider,
    play.what,
    String(status),
    shown,
    ok ? 'yes' : `NO (expected ${play.expect.status} ${play.expect.outcome})`,
  ]);
}
for (let i = 0; i < 100 && Object.entries(expectedDeliveries).some(([s, n]) => (arrived.get(s) ?? 0) < n); i++)
  await sleep(100);
await sleep(300); // time for a delivery that should not happen to show up

table(['provider', 'webhook', 'HTTP', 'outcome', 'as documented'], rows);
console.log();
const deliveryRows = Object.entries(expectedDeliveries).map(([sub, n]) => {
  const got = arrived.get(sub) ?? 0;
  if (got !== n) failures++;
  return [sub, String(n), String(got), got === n ? 'yes' : 'NO'];
});
table(['subscription', 'expected deliveries', 'delivered', 'as expected'], deliveryRows);

console.log();
const metrics = await dev.registry.getMetricsAsJSON();
const totals = new Map<string, number>();
for (const m of metrics.filter(
  (m) => m.name === 'hookyard_receiver_requests_total' || m.name === 'hookyard_dispatcher_attempts_total',
)) {
  for (const v of m.values as { value: number; labels: Record<string, string> }[]) {
    const key = `${m.name}{outcome="${v.labels.outcome}"}`;
    totals.set(key, (totals.get(key) ?? 0) + v.value);
  }
}
table(
  ['metric (summed over endpoints and subscriptions)', 'value'],
  [...totals].filter(([, v]) => v > 0).map(([k, v]) => [k, String(v)]),
);

await dev.stop();
sink.close();
console.log(
  failures === 0
    ? "\nEvery outcome is the one the providers' documents call for."
    : `\n${failures} outcome(s) differ from what the documents call for.`,
);
process.exit(failures === 0 ? 0 : 1);

function table(header: string[], body: string[][]) {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i] ?? 0)).join(' | ')} |`;
  console.log([line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...body.map(line)].join('\n'));
}
