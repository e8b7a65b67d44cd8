// The dispatcher's guard against link-local and cloud metadata targets, tried through host names: the check runs
// on every new connection, so a name that resolves to a safe address first and a metadata address later (DNS
// rebinding) is refused on the second connection. The test's own resolver stands in for DNS (a real DNS server
// that answers this way cannot run here); the HTTP server is real, on loopback.
//
// Each "metadata" answer also lists 127.0.0.1 first, so that even a broken guard connects to loopback only: the
// test never sends traffic anywhere else.
import assert from 'node:assert/strict';
import type { LookupAddress } from 'node:dns';
import { after, describe, it } from 'node:test';
import { Target } from '../../src/dispatcher/target.ts';
import { startTarget } from './dispatcher-support.ts';

const safe: LookupAddress[] = [{ address: '127.0.0.1', family: 4 }];
const withMetadata: LookupAddress[] = [...safe, { address: '169.254.169.254', family: 4 }];

/** A resolver that gives the answers in turn (the last one from then on), and counts the questions. */
function resolver(...answers: LookupAddress[][]) {
  const asked: string[] = [];
  const lookup = (hostname: string, _o: unknown, callback: (e: null, a: LookupAddress[]) => void) => {
    asked.push(hostname);
    callback(null, answers[Math.min(asked.length, answers.length) - 1] as LookupAddress[]);
  };
  return { lookup, asked };
}

const request = { method: 'POST', headers: { 'content-type': 'application/json' }, body: Buffer.from('{}') };

// Every answer closes its connection, so each attempt connects (and resolves) anew.
const server = await startTarget((_r, res) => {
  res.setHeader('connection', 'close');
  res.end('ok');
});
after(() => server.close());
const port = new URL(server.url).port;

function target(lookup: ReturnType<typeof resolver>['lookup'], allowPrivateAddresses: boolean) {
  const t = new Target({
    url: `http://orders.example.test:${port}/hooks`,
    timeoutMs: 10_000,
    connections: 1,
    allowPrivateAddresses,
    lookup,
  });
  after(() => t.close());
  return t;
}

describe('target address guard', () => {
  it('refuses a host name that resolves to a metadata address on a later connection (DNS rebinding)', async () => {
    const dns = resolver(safe, withMetadata);
    const t = target(dns.lookup, false);
    assert.deepEqual(await t.send(request), { kind: 'Response', status: 200, retryAfterMs: undefined });
    const second = await t.send(request);
    assert.equal(second.kind, 'TargetForbidden', JSON.stringify(second));
    assert.match(String((second as { error: string }).error), /orders\.example\.test resolves to a link-local/);
    assert.equal(server.received.length, 1, 'the second request never reached the server');
    assert.deepEqual(dns.asked, ['orders.example.test', 'orders.example.test'], 'resolved once per connection');
  });

  it('connects to such a host name with allowPrivateAddresses', async () => {
    const before = server.received.length;
    const dns = resolver(safe, withMetadata);
    const t = target(dns.lookup, true);
    for (let i = 0; i < 2; i++) assert.equal((await t.send(request)).kind, 'Response');
    assert.equal(server.received.length, before + 2);
    assert.equal(dns.asked.length, 2);
  });

  it('refuses a literal metadata address before connecting, and reaches a loopback name as usual', async () => {
    const literal = new Target({
      url: 'http://169.254.169.254/latest/meta-data',
      timeoutMs: 10_000,
      connections: 1,
      allowPrivateAddresses: false,
    });
    after(() => literal.close());
    assert.equal((await literal.send(request)).kind, 'TargetForbidden');
    // Private and loopback addresses are not what the guard is about: in-cluster services live there.
    const local = new Target({
      url: `http://localhost:${port}/hooks`,
      timeoutMs: 10_000,
      connections: 1,
      allowPrivateAddresses: false,
    });
    after(() => local.close());
    assert.equal((await local.send(request)).kind, 'Response');
  });
});
