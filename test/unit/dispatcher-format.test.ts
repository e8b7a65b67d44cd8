import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HTTP } from 'cloudevents';
import fc from 'fast-check';
import type { StoredEvent } from '../../src/dispatcher/event.ts';
import { formatEvent } from '../../src/dispatcher/format.ts';

const event = (body: Uint8Array, contentType?: string): StoredEvent => ({
  id: 'evt_1',
  type: 'order.shipped',
  contentType,
  receivedAt: '2024-01-15T10:30:00.000Z',
  provider: 'proign',
  endpoint: 'shop/proign',
  originalHeaders: {},
  body,
});

describe('formats', () => {
  it('raw sends the original bytes and content type', () => {
    fc.assert(
      fc.property(fc.uint8Array(), (bytes) => {
        const f = formatEvent(event(bytes, 'application/xml'), { type: 'raw', cloudEventsMode: 'binary' });
        assert.deepEqual(f.body, bytes);
        assert.equal(f.headers['content-type'], 'application/xml');
      }),
    );
  });

  it('envelope carries the JSON view, or the text, or base64', () => {
    const env = (b: Uint8Array, ct?: string) =>
      JSON.parse(
        Buffer.from(formatEvent(event(b, ct), { type: 'envelope', cloudEventsMode: 'binary' }).body).toString(),
      );
    assert.deepEqual(env(Buffer.from('{"a":[1]}'), 'application/json'), {
      id: 'evt_1',
      type: 'order.shipped',
      source: '/hookyard/shop/proign',
      receivedAt: '2024-01-15T10:30:00.000Z',
      data: { a: [1] },
    });
    assert.equal(env(Buffer.from('hello'), 'text/plain').data, 'hello');
    assert.equal(env(Buffer.from([0xff, 0x00]), 'application/octet-stream').data, '/wA=');
  });

  it('CloudEvents in both modes read back with the cloudevents package, whatever the bytes', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          // Webhook payloads are objects or arrays (the cloudevents package reads a bare `null` as text).
          fc
            .jsonValue()
            .filter((v) => v !== null && typeof v === 'object')
            .map((v) => ({ bytes: Buffer.from(JSON.stringify(v)), ct: 'application/json' })),
          fc.uint8Array().map((b) => ({ bytes: Buffer.from(b), ct: 'application/octet-stream' })),
          fc.string().map((s) => ({ bytes: Buffer.from(s), ct: 'text/plain' })),
        ),
        fc.constantFrom('binary' as const, 'structured' as const),
        ({ bytes, ct }, mode) => {
          const f = formatEvent(event(bytes, ct), { type: 'cloudevents', cloudEventsMode: mode });
          // A receiver reads text bodies as strings and anything else as bytes.
          const body = ct === 'application/octet-stream' && mode === 'binary' ? f.body : Buffer.from(f.body).toString();
          const ce = HTTP.toEvent({ headers: f.headers, body });
          assert.ok(!Array.isArray(ce));
          assert.equal(ce.id, 'evt_1');
          assert.equal(ce.datacontenttype, ct);
          if (mode === 'binary') assert.deepEqual(Buffer.from(f.body), bytes);
          if (ct === 'application/json') assert.deepEqual(ce.data, JSON.parse(bytes.toString()));
        },
      ),
      { numRuns: 200 },
    );
  });
});
