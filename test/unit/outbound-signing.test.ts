// Outbound signing, checked the way each scheme's receivers check it, by code that shares nothing with
// src/signatures/: the standardwebhooks package (v1), node:crypto's Ed25519 verify over the spec's signed content
// (v1a), Stripe's published algorithm and PROIGN's snippet, each written out here. Bodies are compact,
// pretty-printed, \u-escaped and non-ASCII JSON, and arbitrary bytes; every key of a rotation verifies and a key
// that is not listed does not.
import assert from 'node:assert/strict';
import { createHmac, createPublicKey, generateKeyPairSync, type KeyObject, randomBytes, verify } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Webhook } from 'standardwebhooks';
import { createSigner, InvalidSigningKey } from '../../src/dispatcher/signing.ts';
import { proignSignedContent } from '../../src/signatures/proign.ts';
import { standardWebhookPrivateKey, standardWebhookPublicKey } from '../../src/signatures/standard-webhooks.ts';

type Scheme = 'standardWebhooks' | 'hmac' | 'stripe' | 'proign';
const spec = (scheme: Scheme) => ({
  scheme,
  algorithm: 'sha256' as const,
  encoding: 'hex' as const,
  prefix: 'sha256=',
  secretRefs: [] as { name: string; key: string }[],
});

/** JSON as senders write it: compact, pretty-printed, with non-ASCII escaped as \uXXXX, or raw UTF-8. */
const jsonBody = fc
  .tuple(fc.jsonValue({ maxDepth: 3, stringUnit: 'grapheme' }), fc.constantFrom('compact', 'pretty', 'escaped'))
  .map(([value, style]) => {
    const text = JSON.stringify(value, null, style === 'pretty' ? 2 : undefined);
    const escaped =
      style === 'escaped'
        ? text.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
        : text;
    return Buffer.from(escaped);
  });
const nonAscii = fc
  .constantFrom('{"name": "Zoë Ångström", "city": "Kraków"}', '{\n  "emoji": "📦🚚",\n  "yen": "¥1000"\n}')
  .map((t) => Buffer.from(t));
const anyBody = fc.oneof(
  jsonBody,
  nonAscii,
  fc.uint8Array({ maxLength: 512 }).map((b) => Buffer.from(b)),
);

const ed25519 = () => generateKeyPairSync('ed25519');

/** A private key in one of the serializations the dispatcher reads: whsk_ seed, whsk_ seed+public, PEM. */
function serialize(privateKey: KeyObject, form: number): string {
  const jwk = privateKey.export({ format: 'jwk' });
  const seed = Buffer.from(jwk.d as string, 'base64url');
  const pub = Buffer.from(jwk.x as string, 'base64url');
  if (form === 0) return `whsk_${seed.toString('base64')}`;
  if (form === 1) return `whsk_${Buffer.concat([seed, pub]).toString('base64')}`;
  return privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
}

/** The spec's verification of v1a: Ed25519 over "<id>.<timestamp>.<body>", any listed signature. */
function verifiesV1a(publicKey: KeyObject, headers: Record<string, string>, body: Buffer): boolean {
  const content = Buffer.concat([Buffer.from(`${headers['webhook-id']}.${headers['webhook-timestamp']}.`), body]);
  return String(headers['webhook-signature'])
    .split(' ')
    .filter((s) => s.startsWith('v1a,'))
    .some((s) => verify(null, content, publicKey, Buffer.from(s.slice(4), 'base64')));
}

/** Stripe's published check: t and every v1 from the header, HMAC-SHA256 hex of "<t>.<payload>", one must match. */
function verifiesStripe(secret: string, header: string, payload: Buffer): boolean {
  const items = header.split(',').map((item) => item.split('='));
  const t = items.find(([k]) => k === 't')?.[1];
  const expected = createHmac('sha256', secret).update(`${t}.`).update(payload).digest('hex');
  return items.some(([k, v]) => k === 'v1' && v === expected);
}

/** PROIGN's Node.js verification example, as its document prints it (payload: the parsed body). */
function verifyWebhook(payload: unknown, signature: string, secret: string): boolean {
  const expected = createHmac('sha256', secret).update(JSON.stringify(payload)).digest('hex');
  return signature === `sha256=${expected}`;
}

const secretSet = fc.uniqueArray(fc.string({ minLength: 8, maxLength: 40 }), { minLength: 1, maxLength: 3 });
const otherSecret = 'a-secret-that-is-not-listed';

describe('outbound signing', () => {
  it('standardWebhooks v1: the standardwebhooks package verifies with every secret of a rotation, not with another', () => {
    fc.assert(
      fc.property(jsonBody, fc.integer({ min: 1, max: 3 }), (body, n) => {
        const secrets = Array.from({ length: n }, () => `whsec_${randomBytes(24).toString('base64')}`);
        const now = Math.floor(Date.now() / 1000);
        const headers = createSigner(
          spec('standardWebhooks'),
          secrets.map((s) => Buffer.from(s)),
        )('evt_1', body, now);
        for (const s of secrets) new Webhook(s).verify(body.toString(), headers);
        const other = `whsec_${randomBytes(24).toString('base64')}`;
        assert.throws(() => new Webhook(other).verify(body.toString(), headers));
      }),
      { numRuns: 50 },
    );
  });

  it('standardWebhooks v1a: Ed25519 verify per the spec accepts every key of a rotation, whatever its serialization', () => {
    fc.assert(
      fc.property(
        anyBody,
        fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 3 }),
        fc.integer({ min: 1, max: 4e9 }),
        (body, forms, now) => {
          const pairs = forms.map(() => ed25519());
          const secrets = pairs.map((p, i) => Buffer.from(serialize(p.privateKey, forms[i] as number)));
          const headers = createSigner(spec('standardWebhooks'), secrets)('msg_2KWPBgLlAfxdpx2AI54pPJ85f4W', body, now);
          assert.equal(headers['webhook-timestamp'], String(now));
          assert.equal(String(headers['webhook-signature']).split(' ').length, pairs.length);
          for (const p of pairs) assert.ok(verifiesV1a(p.publicKey, headers, body), 'a listed key verifies');
          assert.equal(verifiesV1a(ed25519().publicKey, headers, body), false, 'another key does not');
          const changed = Buffer.concat([body, Buffer.from(' ')]);
          assert.equal(verifiesV1a(pairs[0]?.publicKey as KeyObject, headers, changed), false, 'a changed body not');
        },
      ),
      { numRuns: 40 },
    );
  });

  it('standardWebhooks: a whsec_ and a whsk_ key side by side sign v1 and v1a, so moving to Ed25519 is a rotation', () => {
    const whsec = `whsec_${randomBytes(24).toString('base64')}`;
    const pair = ed25519();
    const body = Buffer.from('{"type":"order.shipped"}');
    const headers = createSigner(spec('standardWebhooks'), [
      Buffer.from(whsec),
      Buffer.from(serialize(pair.privateKey, 0)),
    ])('evt_9', body, Math.floor(Date.now() / 1000));
    assert.match(String(headers['webhook-signature']), /^v1,\S+ v1a,\S+$/);
    new Webhook(whsec).verify(body.toString(), headers);
    assert.ok(verifiesV1a(pair.publicKey, headers, body));
  });

  it('standardWebhooks: gives the whpk_ public key of a whsk_ key, and refuses keys it cannot read without quoting them', () => {
    const pair = ed25519();
    const key = standardWebhookPrivateKey(serialize(pair.privateKey, 1));
    const whpk = standardWebhookPublicKey(key);
    const raw = Buffer.from(whpk.replace(/^whpk_/, ''), 'base64');
    assert.deepEqual(
      createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }, format: 'jwk' }).export({
        format: 'jwk',
      }),
      pair.publicKey.export({ format: 'jwk' }),
    );
    const bad = [
      'whsk_AAAA',
      `whsk_${randomBytes(64).toString('base64')}`,
      '-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----',
    ];
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs8' });
    for (const secret of [...bad, rsa.toString()]) {
      const ref = { name: 'signing', key: 'ed25519' };
      assert.throws(
        () => createSigner({ ...spec('standardWebhooks'), secretRefs: [ref] }, [Buffer.from(secret)]),
        (err: Error) =>
          err instanceof InvalidSigningKey &&
          err.message.includes('Secret "signing"') &&
          !err.message.includes(secret.slice(5, 20)),
      );
    }
  });

  it("stripe: Stripe's published algorithm verifies with every secret of a rotation, not with another", () => {
    fc.assert(
      fc.property(anyBody, secretSet, fc.integer({ min: 1, max: 4e9 }), (body, secrets, now) => {
        const headers = createSigner(
          spec('stripe'),
          secrets.map((s) => Buffer.from(`${s}\n`)),
        )('evt_1', body, now);
        const header = String(headers['stripe-signature']);
        assert.ok(header.startsWith(`t=${now},v1=`));
        for (const s of secrets) assert.ok(verifiesStripe(s, header, body), 'a listed secret verifies');
        assert.equal(verifiesStripe(otherSecret, header, body), false);
      }),
      { numRuns: 100 },
    );
  });

  it("proign: PROIGN's snippet verifies the parsed body, whatever its spelling, with the one secret", () => {
    fc.assert(
      fc.property(fc.oneof(jsonBody, nonAscii), fc.string({ minLength: 8, maxLength: 40 }), (body, secret) => {
        const headers = createSigner(spec('proign'), [Buffer.from(secret)])('evt_1', body);
        const signature = String(headers['x-proign-signature']);
        // express.json() hands the snippet the parsed body.
        assert.ok(verifyWebhook(JSON.parse(body.toString()), signature, secret));
        assert.equal(verifyWebhook(JSON.parse(body.toString()), signature, otherSecret), false);
      }),
      { numRuns: 200 },
    );
  });

  it("proign: while rotating, each entry is the snippet's signature with its own secret", () => {
    // PROIGN's snippet compares the whole header with one signature, so with two secrets listed it verifies with
    // neither as written: the receiver splits on ", " and runs it per entry, as for scheme hmac.
    fc.assert(
      fc.property(jsonBody, secretSet, (body, secrets) => {
        const headers = createSigner(
          spec('proign'),
          secrets.map((s) => Buffer.from(s)),
        )('evt_1', body);
        const entries = String(headers['x-proign-signature']).split(', ');
        assert.equal(entries.length, secrets.length);
        const payload = JSON.parse(body.toString());
        for (const s of secrets) assert.ok(entries.some((e) => verifyWebhook(payload, e, s)));
        assert.ok(!entries.some((e) => verifyWebhook(payload, e, otherSecret)));
      }),
      { numRuns: 100 },
    );
  });

  it('proign: signs the exact bytes of a body that is not JSON', () => {
    const xml = Buffer.from('<Job><Id>1</Id></Job>');
    assert.deepEqual(proignSignedContent(xml), xml);
    const headers = createSigner(spec('proign'), [Buffer.from('k')])('e', xml);
    assert.equal(headers['x-proign-signature'], `sha256=${createHmac('sha256', 'k').update(xml).digest('hex')}`);
  });

  it('names the header of hmac, stripe and proign when asked to', () => {
    const body = Buffer.from('{}');
    for (const scheme of ['hmac', 'stripe', 'proign'] as const) {
      const headers = createSigner({ ...spec(scheme), header: 'X-Partner-Signature' }, [Buffer.from('k')])('e', body);
      assert.deepEqual(Object.keys(headers), ['x-partner-signature']);
    }
  });
});
