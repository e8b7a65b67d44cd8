import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { ProviderEndpoint } from '../../src/api/provider-endpoint.ts';
import { parseResource } from '../../src/api/validate.ts';
import { type CompiledEndpoint, compileEndpoint, dedupKeyOf } from '../../src/receiver/endpoint.ts';
import type { RequestView } from '../../src/receiver/verify.ts';
import { mapSecrets } from '../../src/runtime/secrets.ts';

const endpoint = (dedup: Record<string, unknown>): CompiledEndpoint =>
  compileEndpoint(
    parseResource({
      apiVersion: 'hookyard.io/v1alpha1',
      kind: 'ProviderEndpoint',
      metadata: { name: 'e', namespace: 'n' },
      spec: { provider: 'generic', verification: [{ none: true }], dedup },
    }) as ProviderEndpoint,
    mapSecrets({}),
  );

/** A request as dedupKeyOf reads it: headers, raw bytes and the parsed body. */
const request = (body: string, headers: Record<string, string>): RequestView => ({
  headers,
  query: new URLSearchParams(),
  body: Buffer.from(body),
  remoteAddress: '127.0.0.1',
  parsed: async () => JSON.parse(body),
});

describe('dedup keys', () => {
  const rules = [
    endpoint({ source: 'bodyHash' }),
    endpoint({ source: 'header', header: 'X-Id' }),
    endpoint({ source: 'body', bodyPaths: ['id', 'time'] }),
  ];
  // Event types as providers name them, and ones made to collide: separators, escapes, empty parts.
  const eventType = fc.oneof(fc.string({ minLength: 1, maxLength: 20 }), fc.constantFrom('a', 'a:b', 'a%3Ab', 'b:c'));
  const part = fc.oneof(fc.string({ maxLength: 20 }), fc.constantFrom('b', 'b:c', 'c', '%3A'));
  const event = fc.record({ type: eventType, id: part, time: part, header: part });

  it('never gives two different event types the same key, whatever the rest (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...rules), event, event, async (rule, a, b) => {
        fc.pre(a.type !== b.type);
        const keyOf = (e: typeof a) =>
          dedupKeyOf(rule, request(JSON.stringify({ id: e.id, time: e.time }), { 'x-id': e.header }), e.type);
        assert.notEqual(await keyOf(a), await keyOf(b));
      }),
      { numRuns: 2000 },
    );
  });

  it('hashes a key longer than 200 characters, so ids that differ only past it stay two events (property)', async () => {
    const header = endpoint({ source: 'header', header: 'X-Id' });
    const keyOf = (id: string) => dedupKeyOf(header, request('{}', { 'x-id': id }), 't');
    await fc.assert(
      fc.asyncProperty(fc.string({ minLength: 200, maxLength: 200 }), fc.string(), fc.string(), async (head, a, b) => {
        fc.pre(a !== b);
        const shape = async (tail: string) => {
          const key = await keyOf(`${head}${tail}`);
          if (tail.length > 0) assert.match(key, /^t:sha256:[0-9a-f]{64}$/);
          else assert.equal(key, `t:${head}`, 'exactly 200 characters are kept as they are');
          return key;
        };
        assert.notEqual(await shape(a), await shape(b));
      }),
      { numRuns: 300 },
    );
  });

  it('gives the same event sent twice the same key, and names its type first', async () => {
    for (const rule of rules) {
      const again = () => dedupKeyOf(rule, request('{"id":"1","time":"t"}', { 'x-id': 'd1' }), 'order.created');
      const key = await again();
      assert.equal(await again(), key);
      assert.match(key, /^order\.created:/);
    }
  });
});
