// The receiver's signature checks as an endpoint compiles them, with the clock held still so the replay windows
// can be tried at their exact edges. Expected signatures are computed here with node:crypto, from the schemes'
// own descriptions, never with the project's signers.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import fc from 'fast-check';
import type { ProviderEndpoint } from '../../src/api/provider-endpoint.ts';
import { parseResource } from '../../src/api/validate.ts';
import { compileEndpoint } from '../../src/receiver/endpoint.ts';
import type { RequestView } from '../../src/receiver/verify.ts';
import { mapSecrets } from '../../src/runtime/secrets.ts';

const now = 1_795_000_000;
const secret = 'whsec_reference_secret_for_tests';
const secrets = mapSecrets({ keys: { current: Buffer.from(secret), other: Buffer.from('whsec_some_other_secret') } });
const body = '{"id":"evt_1","object":"event","type":"payment_intent.succeeded"}';

beforeEach(() => mock.timers.enable({ apis: ['Date'], now: now * 1000 }));
afterEach(() => mock.timers.reset());

/** Whether the endpoint's verification accepts a request with these headers: true, or the refusal's message. */
function verifier(verification: Record<string, unknown>) {
  const endpoint = compileEndpoint(
    parseResource({
      apiVersion: 'hookyard.io/v1alpha1',
      kind: 'ProviderEndpoint',
      metadata: { name: 'e', namespace: 'n' },
      spec: { provider: 'generic', verification: [verification] },
    }) as ProviderEndpoint,
    secrets,
  );
  return async (headers: Record<string, string>, raw = body): Promise<true | string> => {
    const request: RequestView = {
      headers,
      query: new URLSearchParams(),
      body: Buffer.from(raw),
      remoteAddress: '127.0.0.1',
      parsed: async () => JSON.parse(raw),
    };
    try {
      for (const verify of endpoint.verifiers) await verify(request);
      return true;
    } catch (err) {
      return (err as Error).message;
    }
  };
}

const hex = (key: string, text: string) => createHmac('sha256', key).update(text).digest('hex');

describe('Stripe signatures (Stripe-Signature, as Stripe documents it)', () => {
  const check = verifier({ stripe: { secretRefs: [{ name: 'keys', key: 'current' }], tolerance: '5m' } });
  // Stripe: the signed payload is "<t>.<raw body>", signed with HMAC-SHA256 under the endpoint secret, hex.
  const v1 = (t: number, raw = body, key = secret) => hex(key, `${t}.${raw}`);

  it('accepts the documented header, and refuses a changed body or another secret', async () => {
    assert.equal(await check({ 'stripe-signature': `t=${now},v1=${v1(now)}` }), true);
    assert.match(String(await check({ 'stripe-signature': `t=${now},v1=${v1(now)}` }, `${body} `)), /matches/);
    const foreign = v1(now, body, 'whsec_some_other_secret');
    assert.match(String(await check({ 'stripe-signature': `t=${now},v1=${foreign}` })), /matches/);
  });

  it('accepts a header with two v1 signatures when either one is right, in either order', async () => {
    const wrong = v1(now, body, 'whsec_rolled_secret');
    assert.equal(await check({ 'stripe-signature': `t=${now},v1=${wrong},v1=${v1(now)}` }), true);
    assert.equal(await check({ 'stripe-signature': `t=${now},v1=${v1(now)},v1=${wrong}` }), true);
    // A v0 entry (Stripe's test-mode scheme) is not a v1 signature, whatever it holds.
    assert.match(String(await check({ 'stripe-signature': `t=${now},v0=${v1(now)},v1=${wrong}` })), /matches/);
    assert.match(String(await check({ 'stripe-signature': `t=${now},v1=${wrong},v1=${wrong}` })), /matches/);
  });

  it('accepts any body with the right v1 among wrong ones, wherever it stands (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.string({ unit: 'grapheme', maxLength: 200 }),
        fc.integer({ min: -300, max: 300 }),
        fc.array(fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: 64, maxLength: 64 }), {
          maxLength: 3,
        }),
        fc.nat(),
        async (raw, offset, wrong, at) => {
          const t = now + offset;
          const entries = wrong.map((w) => `v1=${w}`);
          const right = v1(t, raw);
          const signed = [...entries];
          signed.splice(at % (entries.length + 1), 0, `v1=${right}`);
          assert.equal(await check({ 'stripe-signature': [`t=${t}`, ...signed].join(',') }, raw), true);
          if (!wrong.includes(right)) {
            assert.notEqual(await check({ 'stripe-signature': [`t=${t}`, ...entries].join(',') }, raw), true);
          }
        },
      ),
    );
  });

  it('accepts a timestamp exactly at the tolerance and refuses one a second past it', async () => {
    for (const t of [now - 300, now + 300]) {
      assert.equal(await check({ 'stripe-signature': `t=${t},v1=${v1(t)}` }), true, `t = now ${t - now}`);
    }
    for (const t of [now - 301, now + 301]) {
      assert.match(
        String(await check({ 'stripe-signature': `t=${t},v1=${v1(t)}` })),
        /tolerance/,
        `t = now ${t - now}`,
      );
    }
  });
});

describe('HMAC with a timestamp (replay window)', () => {
  const hmacSecrets = [{ name: 'keys', key: 'current' }];

  it('template mode: signs "{timestamp}.{body}", accepted at the window edge, refused a second past it', async () => {
    const check = verifier({
      hmac: {
        header: 'X-Signature',
        prefix: 'v1=',
        signedContent: 'template',
        template: '{timestamp}.{body}',
        timestampHeader: 'X-Timestamp',
        tolerance: '2m',
        secretRefs: hmacSecrets,
      },
    });
    const signed = (t: number) => ({ 'x-timestamp': String(t), 'x-signature': `v1=${hex(secret, `${t}.${body}`)}` });
    assert.equal(await check(signed(now)), true);
    assert.equal(await check(signed(now - 120)), true, 'exactly at the window');
    assert.equal(await check(signed(now + 120)), true, 'exactly at the window, ahead');
    assert.match(String(await check(signed(now - 121))), /X-Timestamp is missing or outside the tolerance/);
    assert.match(String(await check(signed(now + 121))), /outside the tolerance/);
    // The timestamp is part of what is signed: moving it into the window breaks the signature.
    const replayed = { ...signed(now - 1000), 'x-timestamp': String(now) };
    assert.match(String(await check(replayed)), /does not match/);
    // Signing only the body is not enough in template mode.
    assert.match(
      String(await check({ 'x-timestamp': String(now), 'x-signature': `v1=${hex(secret, body)}` })),
      /match/,
    );
  });

  it('timestamp mode: a signed body with a timestamp header, accepted at the window edge, refused past it', async () => {
    const check = verifier({
      hmac: {
        header: 'X-Signature',
        encoding: 'base64',
        timestampHeader: 'X-Timestamp',
        tolerance: '5m',
        secretRefs: hmacSecrets,
      },
    });
    const signature = createHmac('sha256', secret).update(body).digest('base64');
    const at = (t: number) => ({ 'x-timestamp': String(t), 'x-signature': signature });
    assert.equal(await check(at(now - 300)), true, 'exactly at the window');
    assert.equal(await check(at(now + 300)), true, 'exactly at the window, ahead');
    assert.match(String(await check(at(now - 301))), /outside the tolerance/);
    assert.match(String(await check(at(now + 301))), /outside the tolerance/);
    assert.match(String(await check({ 'x-signature': signature })), /X-Timestamp is missing/);
    assert.match(String(await check({ ...at(now), 'x-timestamp': 'yesterday' })), /tolerance/);
  });
});
