// The baseline the receiver is measured against: bare node:http that reads the body, checks an HMAC-SHA256
// signature and awaits one JetStream publish per request. Usage: node bench/baseline-receiver.ts <port> <nats-url>
// It connects with nats.js's defaults; NO_ASYNC_TRACES=1 sets noAsyncTraces, as the receiver does.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';
import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';

const [port, natsUrl] = process.argv.slice(2);
const secret = 'bench-secret';
const nc = await connect({ servers: natsUrl, noAsyncTraces: process.env.NO_ASYNC_TRACES === '1' });
const js = jetstream(nc);

createServer(async (req, res) => {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const body = Buffer.concat(chunks);
  const expected = Buffer.from(`sha256=${createHmac('sha256', secret).update(body).digest('hex')}`);
  const given = Buffer.from(String(req.headers['x-hub-signature-256'] ?? ''));
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    res.writeHead(401).end();
    return;
  }
  try {
    await js.publish('bench.baseline.push', body, { msgID: String(req.headers['x-github-delivery']) });
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"accepted"}');
  } catch {
    res.writeHead(503).end();
  }
}).listen(Number(port), '127.0.0.1');
