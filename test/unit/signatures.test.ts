import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Webhook } from 'standardwebhooks';
import { decodeSignature, signatureEquals, timestampWithin } from '../../src/signatures/hmac.ts';
import {
  signStandardWebhook,
  standardWebhookKey,
  verifyStandardWebhook,
} from '../../src/signatures/standard-webhooks.ts';

const secret = `whsec_${randomBytes(24).toString('base64')}`;
const key = standardWebhookKey(secret);
const utf8Body = fc.string({ unit: 'grapheme' }).map((s) => Buffer.from(s));

describe('Standard Webhooks', () => {
  it('signs exactly as the standardwebhooks package does', () => {
    fc.assert(
      fc.property(fc.uuid(), fc.integer({ min: 1, max: 4e9 }), utf8Body, (id, ts, body) => {
        assert.equal(signStandardWebhook(key, id, ts, body), new Webhook(secret).sign(id, new Date(ts * 1000), body));
      }),
    );
  });

  it('accepts what the standardwebhooks package signs', () => {
    fc.assert(
      fc.property(fc.uuid(), utf8Body, (id, body) => {
        const now = Math.floor(Date.now() / 1000);
        const signature = new Webhook(secret).sign(id, new Date(now * 1000), body);
        const result = verifyStandardWebhook([key], { id, timestamp: String(now), signature }, body, 300, now);
        assert.deepEqual(result, { ok: true });
      }),
    );
  });

  it('refuses any change to the body, the id or the signature', () => {
    const now = 1_800_000_000;
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 1, maxLength: 256 }),
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        (body, at, flip) => {
          const signature = signStandardWebhook(key, 'msg_1', now, body);
          const changed = Buffer.from(body);
          const i = at % changed.length;
          changed[i] = (changed[i] ?? 0) ^ flip;
          const headers = { id: 'msg_1', timestamp: String(now), signature };
          assert.equal(verifyStandardWebhook([key], headers, changed, 300, now).ok, false);
          assert.equal(verifyStandardWebhook([key], { ...headers, id: 'msg_2' }, body, 300, now).ok, false);
          const forged = `${signature.slice(0, -4)}AAA=`;
          assert.equal(
            verifyStandardWebhook([key], { ...headers, signature: forged }, body, 300, now).ok,
            forged === signature,
          );
        },
      ),
    );
  });

  it('accepts any of several keys while rotating, and refuses old timestamps', () => {
    const old = standardWebhookKey(`whsec_${randomBytes(24).toString('base64')}`);
    const body = Buffer.from('{"type":"order.created"}');
    const signature = signStandardWebhook(key, 'msg_1', 1000, body);
    assert.equal(
      verifyStandardWebhook([old, key], { id: 'msg_1', timestamp: '1000', signature }, body, 300, 1200).ok,
      true,
    );
    assert.equal(
      verifyStandardWebhook([old], { id: 'msg_1', timestamp: '1000', signature }, body, 300, 1200).ok,
      false,
    );
    assert.equal(
      verifyStandardWebhook([key], { id: 'msg_1', timestamp: '1000', signature }, body, 300, 1301).ok,
      false,
    );
  });

  it('never throws on malformed headers', () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), fc.string(), (id, timestamp, signature) => {
        verifyStandardWebhook([key], { id, timestamp, signature }, Buffer.from('x'), 300);
      }),
    );
  });
});

describe('signature comparison', () => {
  it('never throws, whatever the lengths, and is equality', () => {
    fc.assert(
      fc.property(fc.uint8Array(), fc.uint8Array(), (a, b) => {
        assert.equal(signatureEquals(a, b), Buffer.from(a).equals(Buffer.from(b)));
      }),
    );
  });

  it('decodes only valid hex and base64', () => {
    assert.deepEqual(decodeSignature('0aff', 'hex'), Buffer.from([0x0a, 0xff]));
    assert.equal(decodeSignature('0afg', 'hex'), undefined);
    assert.equal(decodeSignature('abc', 'hex'), undefined);
    assert.deepEqual(decodeSignature('AQI=', 'base64'), Buffer.from([1, 2]));
    assert.equal(decodeSignature('not base64!', 'base64'), undefined);
  });
});

describe('timestamp tolerance', () => {
  it('accepts exactly the Unix seconds within the tolerance, and nothing that is not Unix seconds', () => {
    const now = 1_795_000_000;
    fc.assert(
      fc.property(fc.integer({ min: -10_000, max: 10_000 }), fc.integer({ min: 0, max: 3600 }), (offset, tolerance) => {
        assert.equal(timestampWithin(String(now + offset), tolerance, now), Math.abs(offset) <= tolerance);
      }),
    );
    fc.assert(
      fc.property(fc.string(), (text) => {
        if (!/^\d{1,12}$/.test(text)) assert.equal(timestampWithin(text, 1e12, now), false);
      }),
    );
    assert.equal(timestampWithin(undefined, 300, now), false);
  });
});
