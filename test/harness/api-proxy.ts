// A recording proxy in front of the harness's kube-apiserver, on a loopback port: a client given its kubeconfig
// talks to the real API server through it. It records every request (method, path, Accept), can tell whether a
// string ever went back to the client, and can cut every connection and refuse new ones for a while, as a network
// gap does.
import { writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { request } from 'node:https';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { requireEnv } from './kube.ts';

export interface ApiRequest {
  method: string;
  url: string;
  accept: string;
}

export interface ApiProxy {
  /** A kubeconfig that points at the proxy. */
  kubeconfig: string;
  requests: ApiRequest[];
  /** Whether `text` was ever in a response body. */
  sent(text: string): boolean;
  /** Cuts every open connection and answers 503 until resume(). */
  interrupt(): void;
  resume(): void;
  close(): Promise<void>;
}

export async function startApiProxy(dir: string, watched: string[]): Promise<ApiProxy> {
  const upstream = new URL(requireEnv('HOOKYARD_TEST_KUBE_SERVER'));
  const requests: ApiRequest[] = [];
  const seen = new Set<string>();
  const sockets = new Set<Socket>();
  let down = false;

  const forward = (req: IncomingMessage, res: ServerResponse) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', accept: req.headers.accept ?? '' });
    if (down) {
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', code: 503, message: 'gap' }));
      return;
    }
    const out = request(
      {
        host: upstream.hostname,
        port: upstream.port,
        path: req.url,
        method: req.method,
        headers: { ...req.headers, host: upstream.host },
        rejectUnauthorized: false, // the harness's API server has a self-signed certificate; loopback only
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        let tail = '';
        answer.on('data', (chunk: Buffer) => {
          const text = tail + chunk.toString('latin1');
          for (const w of watched) if (text.includes(w)) seen.add(w);
          tail = text.slice(-256);
          res.write(chunk);
        });
        answer.on('end', () => res.end());
        answer.on('error', () => res.destroy());
      },
    );
    out.on('error', () => res.destroy());
    res.on('close', () => out.destroy());
    req.pipe(out);
  };

  const server = createServer(forward);
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address() as { port: number };
  const kubeconfig = join(dir, 'proxy-kubeconfig');
  writeFileSync(
    kubeconfig,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'proxy', cluster: { server: `http://127.0.0.1:${port}`, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'admin', user: { token: requireEnv('HOOKYARD_TEST_KUBE_TOKEN') } }],
      contexts: [{ name: 'proxy', context: { cluster: 'proxy', user: 'admin', namespace: 'default' } }],
      'current-context': 'proxy',
    }),
  );
  return {
    kubeconfig,
    requests,
    sent: (text) => seen.has(text),
    interrupt() {
      down = true;
      for (const socket of sockets) socket.destroy();
    },
    resume() {
      down = false;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((ok) => server.close(ok));
    },
  };
}
