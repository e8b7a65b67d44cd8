import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { parseBody } from '../../src/payload/parse.ts';

const contentTypes = fc.oneof(
  fc.constantFrom(
    undefined,
    'application/json',
    'application/json; charset=utf-8',
    'application/cloudevents+json',
    'application/x-www-form-urlencoded',
    'application/x-www-form-urlencoded; charset=iso-8859-1',
    'application/x-www-form-urlencoded; charset=no-such-charset',
    'application/xml',
    'text/xml; charset=utf-8',
    'multipart/form-data; boundary=XyZ',
    'multipart/form-data',
    'text/plain',
    'application/octet-stream',
  ),
  fc.string(),
);

describe('parseBody', () => {
  it('never throws, whatever the bytes and the content type', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), contentTypes, (bytes, ct) => {
        parseBody(bytes, ct);
      }),
      { numRuns: 2000 },
    );
  });

  it('reads any JSON value back', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const text = JSON.stringify(value);
        assert.deepEqual(parseBody(Buffer.from(text), 'application/json'), JSON.parse(text));
      }),
    );
  });

  it('reads forms in any charset, keys and values as strings', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string({ minLength: 1 }), fc.string()), (fields) => {
        const body = new URLSearchParams(fields).toString();
        assert.deepEqual(parseBody(Buffer.from(body), 'application/x-www-form-urlencoded'), { ...fields });
      }),
    );
    assert.deepEqual(
      parseBody(Buffer.from('name=caf%E9&x=a+b'), 'application/x-www-form-urlencoded; charset=ISO-8859-1'),
      {
        name: 'café',
        x: 'a b',
      },
    );
  });

  it('reads XML with attributes', () => {
    const xml = '<?xml version="1.0"?><order id="42"><status>shipped</status><item>a</item><item>b</item></order>';
    assert.deepEqual(parseBody(Buffer.from(xml), 'application/xml'), {
      '?xml': { '@version': '1.0' },
      order: { '@id': '42', status: 'shipped', item: ['a', 'b'] },
    });
    assert.equal(parseBody(Buffer.from('<a><b></a>'), 'text/xml'), undefined);
  });

  it('reads the text fields of multipart/form-data', () => {
    const body = [
      '--XyZ',
      'Content-Disposition: form-data; name="event"',
      '',
      'order.submitted',
      '--XyZ',
      'Content-Disposition: form-data; name="file"; filename="a.pdf"',
      'Content-Type: application/pdf',
      '',
      '%PDF',
      '--XyZ',
      'Content-Disposition: form-data; name="note"',
      '',
      'två rader\r\nhär',
      '--XyZ--',
      '',
    ].join('\r\n');
    assert.deepEqual(parseBody(Buffer.from(body), 'multipart/form-data; boundary=XyZ'), {
      event: 'order.submitted',
      note: 'två rader\r\nhär',
    });
  });

  it('has no JSON view of other content types or broken JSON', () => {
    assert.equal(parseBody(Buffer.from('{"a":1}'), 'text/plain'), undefined);
    assert.equal(parseBody(Buffer.from('{"a":'), 'application/json'), undefined);
  });
});
