// A TCP proxy on loopback between NATS clients and the harness's nats-server that understands the protocol's
// framing (a PUB/HPUB/MSG/HMSG line with its payload is one frame), so a test can lose one chosen frame (an ack,
// a PubAck) the way a connection cut at the wrong moment would, or stall the connection both ways without closing
// it, as a network partition does before the client notices (its pings time out only after minutes).
import { connect as connectTcp, createServer, type Socket } from 'node:net';

export type Direction = 'to-server' | 'to-client';

interface Rule {
  direction: Direction;
  matches: (frame: string) => boolean;
  dropped: () => void;
}

/** Splits one direction's bytes into whole protocol frames. */
function framer(onFrame: (frame: Buffer) => void) {
  let pending = Buffer.alloc(0);
  return (data: Buffer) => {
    pending = Buffer.concat([pending, data]);
    for (;;) {
      const eol = pending.indexOf('\r\n');
      if (eol < 0) return;
      const line = pending.subarray(0, eol).toString('latin1');
      const op = (line.split(' ')[0] ?? '').toUpperCase();
      // The last token of a message line is the payload size (headers included for HPUB/HMSG).
      const size = ['PUB', 'HPUB', 'MSG', 'HMSG'].includes(op) ? Number(line.split(' ').at(-1)) + 2 : 0;
      const end = eol + 2 + size;
      if (pending.length < end) return;
      onFrame(pending.subarray(0, end));
      pending = pending.subarray(end);
    }
  };
}

export async function startNatsProxy(upstreamUrl: string) {
  const upstream = new URL(upstreamUrl);
  const sockets = new Set<Socket>();
  const rules: Rule[] = [];
  const counters: { direction: Direction; matches: (frame: string) => boolean; n: number }[] = [];
  let stalled = false;
  const held: (() => void)[] = [];

  const pass = (direction: Direction, to: Socket) =>
    framer((frame) => {
      const send = () => {
        const text = frame.toString('latin1');
        for (const c of counters) if (c.direction === direction && c.matches(text)) c.n++;
        const rule = rules.find((r) => r.direction === direction && r.matches(text));
        if (rule) {
          rules.splice(rules.indexOf(rule), 1);
          rule.dropped();
          return;
        }
        to.write(frame);
      };
      if (stalled) held.push(send);
      else send();
    });

  const server = createServer((client) => {
    const nats = connectTcp(Number(upstream.port), upstream.hostname);
    for (const s of [client, nats]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        sockets.delete(s);
        client.destroy();
        nats.destroy();
      });
    }
    client.on('data', pass('to-server', nats));
    nats.on('data', pass('to-client', client));
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address() as { port: number };
  return {
    url: `nats://127.0.0.1:${port}`,
    /** Drops the next frame going `direction` that `matches` (its protocol line and payload, as text); resolves then. */
    dropNext(direction: Direction, matches: (frame: string) => boolean): Promise<void> {
      return new Promise((dropped) => rules.push({ direction, matches, dropped }));
    },
    /** Counts the frames going `direction` that `matches` from now on (those a drop rule takes as well). */
    countFrames(direction: Direction, matches: (frame: string) => boolean): () => number {
      const counter = { direction, matches, n: 0 };
      counters.push(counter);
      return () => counter.n;
    },
    /** Closes the connections open now, as a network blip does; the client may connect again at once. */
    cut() {
      for (const s of sockets) s.destroy();
    },
    /** Holds every frame both ways, connections left open, until resume(). */
    stall() {
      stalled = true;
    },
    /** Passes what was held, in order, and everything after it. */
    resume() {
      stalled = false;
      for (const send of held.splice(0)) send();
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise<void>((ok) => server.close(() => ok()));
    },
  };
}
