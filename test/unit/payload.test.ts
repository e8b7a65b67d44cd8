import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { InvalidPayload, type MediaKind, mediaKind, parseAs, parseBody, readPath } from '../../src/payload/parse.ts';

describe('payload parsing', () => {
  it('reads form data in the charset it declares', async () => {
    // "München" in ISO-8859-1 is M%FCnchen; in UTF-8 it is M%C3%BCnchen.
    assert.deepEqual(
      plain(
        await parseAs(
          'form',
          Buffer.from('city=M%FCnchen&a=1+2'),
          'application/x-www-form-urlencoded; charset=ISO-8859-1',
        ),
      ),
      {
        city: 'München',
        a: '1 2',
      },
    );
    assert.deepEqual(
      plain(await parseAs('form', Buffer.from('city=M%C3%BCnchen&x=1&x=2'), 'application/x-www-form-urlencoded')),
      {
        city: 'München',
        x: ['1', '2'],
      },
    );
  });

  it('reads XML and multipart into a JSON view', async () => {
    assert.deepEqual(await parseAs('xml', Buffer.from('<Job id="7"><No>J1</No></Job>')), {
      Job: { No: 'J1', '@id': '7' },
    });
    const multipart = '--b\r\nContent-Disposition: form-data; name="state"\r\n\r\nshipped\r\n--b--\r\n';
    assert.deepEqual(plain(await parseAs('multipart', Buffer.from(multipart), 'multipart/form-data; boundary=b')), {
      state: 'shipped',
    });
  });

  it('knows the content types it reads', () => {
    assert.equal(mediaKind('application/json; charset=utf-8'), 'json');
    assert.equal(mediaKind('application/cloudevents+json'), 'json');
    assert.equal(mediaKind('text/xml'), 'xml');
    assert.equal(mediaKind('text/plain'), undefined);
    assert.equal(mediaKind(undefined), undefined);
  });

  it('throws only InvalidPayload, whatever the bytes and content type (property)', async () => {
    const kinds: MediaKind[] = ['json', 'form', 'multipart', 'xml'];
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...kinds),
        fc.uint8Array({ maxLength: 400 }),
        fc.string(),
        async (kind, bytes, ct) => {
          try {
            await parseAs(kind, bytes, ct);
          } catch (err) {
            assert.ok(err instanceof InvalidPayload, String(err));
          }
          await parseBody(bytes, ct);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('refuses JSON and XML nested deeper than 100 levels, and XML with a DOCTYPE', async () => {
    const json = (depth: number) => Buffer.from(`${'['.repeat(depth)}${']'.repeat(depth)}`);
    const xml = (depth: number) => Buffer.from(`${'<a x="/>">'.repeat(depth)}${'</a>'.repeat(depth)}`);
    assert.ok(await parseAs('json', json(100)));
    assert.ok(await parseAs('xml', xml(100)));
    // Text that looks like elements, in CDATA, comments and strings, does not count.
    const cdata = `<r><![CDATA[${'<a>'.repeat(500)}]]><!-- ${'<b>'.repeat(500)} --></r>`;
    assert.deepEqual(await parseAs('xml', Buffer.from(cdata)), { r: '<a>'.repeat(500) });
    assert.ok(await parseAs('json', Buffer.from(`["${'['.repeat(500)}\\""]`)));
    for (const [kind, body] of [
      ['json', json(101)],
      ['json', json(50_000)],
      ['xml', xml(101)],
      ['xml', xml(50_000)],
    ] as const) {
      await assert.rejects(
        parseAs(kind, body),
        (err: Error) => err instanceof InvalidPayload && /nested deeper/.test(err.message),
      );
    }
    const doctype = '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>';
    await assert.rejects(parseAs('xml', Buffer.from(doctype)), /DOCTYPE/);
  });

  it('reads a form with many repeats of one field into one list, and refuses multipart without its boundary', async () => {
    const form = (await parseAs('form', Buffer.from('x=1&'.repeat(50_000)))) as { x: string[] };
    assert.equal(form.x.length, 50_000);
    await assert.rejects(parseAs('multipart', Buffer.from('garbage'), 'multipart/form-data'), /names no boundary/);
    await assert.rejects(parseAs('multipart', Buffer.from('garbage'), 'multipart/form-data; boundary=b'), /no --b/);
  });

  it('reads dotted paths, own properties only', () => {
    assert.equal(readPath({ a: { b: [1, { c: 'x' }] } }, 'a.b.1.c'), 'x');
    assert.equal(readPath({ a: 1 }, 'a.b'), undefined);
    assert.equal(readPath({}, '__proto__'), undefined);
    assert.equal(readPath({}, 'constructor.name'), undefined);
  });
});

/** Form and multipart fields come back without a prototype; compare them as plain objects. */
const plain = (value: unknown) => ({ ...(value as object) });
