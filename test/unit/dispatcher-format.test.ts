import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MsgHdrsImpl } from '@nats-io/nats-core/internal';
import { headers as natsHeaders } from '@nats-io/transport-node';
import { HTTP } from 'cloudevents';
import fc from 'fast-check';
import { readHeaderBlock, type StoredEvent, storedEvent } from '../../src/dispatcher/event.ts';
import { formatEvent } from '../../src/dispatcher/format.ts';

const event = (body: Uint8Array, contentType?: string): StoredEvent => {
  const headers = natsHeaders();
  if (contentType) headers.set('Hookyard-Header-content-type', contentType);
  headers.set('Nats-Msg-Id', 'evt_1');
  headers.set('Hookyard-Event-Type', 'order.shipped');
  return storedEvent({ data: body, headers, receivedAt: new Date('2024-01-15T10:30:00.000Z') }, 'shop/proign');
};

describe('formats', () => {
  it('raw sends the original bytes and content type', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array(), async (bytes) => {
        const f = await formatEvent(event(bytes, 'application/xml'), { type: 'raw', cloudEventsMode: 'binary' });
        assert.deepEqual(f.body, bytes);
        assert.equal(f.headers['content-type'], 'application/xml');
      }),
    );
  });

  it('envelope carries the JSON view, or the text, or base64', async () => {
    const env = async (b: Uint8Array, ct?: string) =>
      JSON.parse(
        Buffer.from((await formatEvent(event(b, ct), { type: 'envelope', cloudEventsMode: 'binary' })).body).toString(),
      );
    assert.deepEqual(await env(Buffer.from('{"a":[1]}'), 'application/json'), {
      id: 'evt_1',
      type: 'order.shipped',
      source: '/hookyard/shop/proign',
      receivedAt: '2024-01-15T10:30:00.000Z',
      data: { a: [1] },
    });
    assert.equal((await env(Buffer.from('hello'), 'text/plain')).data, 'hello');
    assert.equal((await env(Buffer.from([0xff, 0x00]), 'application/octet-stream')).data, '/wA=');
  });

  it('CloudEvents in both modes read back with the cloudevents package, whatever the bytes', async () => {
    await fc.assert(
      fc.asyncProperty(
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
        async ({ bytes, ct }, mode) => {
          const f = await formatEvent(event(bytes, ct), { type: 'cloudevents', cloudEventsMode: mode });
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

describe('stored events', () => {
  it('read a body without Content-Type the way the receiver did', async () => {
    const headers = natsHeaders();
    headers.set('Nats-Msg-Id', 'evt_2');
    headers.set('Hookyard-Body-Kind', 'form');
    const e = storedEvent({ data: Buffer.from('state=shipped&id=7') }, 'shop/siteflow');
    assert.equal(await e.view(), undefined, 'without the header the body has no view');
    const withKind = storedEvent({ data: Buffer.from('state=shipped&id=7'), headers }, 'shop/siteflow');
    assert.deepEqual({ ...((await withKind.view()) as object) }, { state: 'shipped', id: '7' });
  });

  it('read from the header block as received, each name has the first value MsgHdrs would give it', () => {
    const name = fc.stringMatching(/^[A-Za-z0-9-]{1,12}$/);
    const known = fc.constantFrom(
      'Nats-Msg-Id',
      'Hookyard-Event-Type',
      'Hookyard-Header-content-type',
      'Hookyard-Test',
    );
    const value = fc.stringMatching(/^[ -~]{0,20}$/); // spaces and colons included
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.oneof(known, name), value), { maxLength: 12 }), (pairs) => {
        const headers = new MsgHdrsImpl();
        for (const [k, v] of pairs) headers.append(k, v);
        const block = headers.encode();
        const decoded = MsgHdrsImpl.decode(block);
        assert.deepEqual(readHeaderBlock(block), new Map([...decoded].map(([k, all]) => [k, all[0] ?? ''])));
        const fields = ({ view: _, ...e }: StoredEvent) => e;
        const receivedAt = new Date('2024-01-15T10:30:00.000Z');
        assert.deepEqual(
          fields(storedEvent({ data: new Uint8Array(), headers: block, receivedAt }, 'shop/orders')),
          fields(storedEvent({ data: new Uint8Array(), headers: decoded, receivedAt }, 'shop/orders')),
        );
      }),
    );
  });
});
