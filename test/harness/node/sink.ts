// The recording sink of the real-node tests (the sink image runs this file with Node's type stripping): it answers
// every request 200 and keeps it in memory, so a test can read back, through the API server's pod proxy, exactly
// what reached the pod. GET /_sink/requests returns them all, oldest first; GET /_sink/healthz answers 200.
// POST /_sink/config with {"delayMs": n, "failEvery": k} makes it answer each request n ms late and every k-th
// with 503 (0: none), so a test can see how many deliveries a target gets at once and make a dispatcher retry.
// What it keeps grows with what it gets: it serves tests that send a bounded number of requests.
import { createServer } from 'node:http';

interface Recorded {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  /** The body's bytes, base64. */
  body: string;
  receivedAt: string;
  /** Requests being answered when this one arrived, itself included. */
  inFlight: number;
  /** What it was answered. */
  status: number;
}

const recorded: Recorded[] = [];
let config = { delayMs: 0, failEvery: 0 };
let inFlight = 0;

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    if (req.method === 'GET' && req.url === '/_sink/healthz') {
      res.end('ok\n');
      return;
    }
    if (req.method === 'GET' && req.url === '/_sink/requests') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(recorded));
      return;
    }
    if (req.method === 'POST' && req.url === '/_sink/config') {
      config = { ...config, ...JSON.parse(Buffer.concat(chunks).toString()) };
      res.end('ok\n');
      return;
    }
    inFlight++;
    const status = config.failEvery > 0 && (recorded.length + 1) % config.failEvery === 0 ? 503 : 200;
    recorded.push({
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      body: Buffer.concat(chunks).toString('base64'),
      receivedAt: new Date().toISOString(),
      inFlight,
      status,
    });
    setTimeout(() => {
      inFlight--;
      res.statusCode = status;
      res.setHeader('content-type', 'application/json');
      res.end('{"recorded":true}\n');
    }, config.delayMs);
  });
});

server.listen(Number(process.env.PORT ?? 8080));
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => process.exit(0));
