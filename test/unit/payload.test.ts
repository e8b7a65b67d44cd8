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

  it('reads dotted paths, own properties only', () => {
    assert.equal(readPath({ a: { b: [1, { c: 'x' }] } }, 'a.b.1.c'), 'x');
    assert.equal(readPath({ a: 1 }, 'a.b'), undefined);
    assert.equal(readPath({}, '__proto__'), undefined);
    assert.equal(readPath({}, 'constructor.name'), undefined);
  });
});

/** Form and multipart fields come back without a prototype; compare them as plain objects. */
const plain = (value: unknown) => ({ ...(value as object) });
