// The baseline the dispatcher is measured against: what a hand-written consumer does, nothing more. A durable pull
// consumer of the stream, `consume` of up to `concurrency` messages, each POSTed with an undici Pool of
// `concurrency` connections and acked on 2xx. Usage, from bench/dispatcher.ts (which talks to it over IPC):
//   node bench/baseline-dispatcher.ts <nats-url> <stream> <durable> <target-url> <concurrency>
// It says `ready` once consuming, and stops on SIGTERM after the posts in flight are answered.
import { setTimeout as sleep } from 'node:timers/promises';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { Pool } from 'undici';

const [natsUrl, stream, name, target, concurrencyArg] = process.argv.slice(2) as string[];
const concurrency = Number(concurrencyArg);
const url = new URL(target as string);
// nats.js's default connection options but noAsyncTraces, as the dispatcher's (src/runtime/nats.ts, connectNats).
const nc = await connect({ servers: natsUrl, noAsyncTraces: true });
const jsm = await jetstreamManager(nc);
const js = jetstream(nc);
await jsm.consumers.add(stream as string, {
  durable_name: name,
  ack_policy: AckPolicy.Explicit,
  deliver_policy: DeliverPolicy.All,
  max_ack_pending: concurrency + 1000,
});
const consumer = await js.consumers.get(stream as string, name);
const pool = new Pool(url.origin, { connections: concurrency });
const messages = await consumer.consume({ max_messages: concurrency });
let inFlight = 0;
let free: (() => void) | undefined;
const done = (async () => {
  for await (const m of messages) {
    while (inFlight >= concurrency) await new Promise<void>((ok) => (free = ok));
    inFlight++;
    pool
      .request({ path: url.pathname, method: 'POST', headers: { 'content-type': 'application/json' }, body: m.data })
      .then(async (res) => {
        await res.body.dump();
        if (res.statusCode < 300) m.ack();
        else m.nak();
      })
      .catch(() => m.nak())
      .finally(() => {
        inFlight--;
        free?.();
      });
  }
})();
process.send?.('ready');

process.once('SIGTERM', async () => {
  messages.stop();
  await done;
  while (inFlight > 0) await sleep(10);
  await pool.close();
  await nc.drain();
  process.exit(0);
});
