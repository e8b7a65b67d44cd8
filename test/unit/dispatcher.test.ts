import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import pino from 'pino';
import { Gauge, Registry } from 'prom-client';
import { Webhook } from 'standardwebhooks';
import { parseConfig } from '../../src/dispatcher/config.ts';
import { CircuitBreaker, TokenBucket } from '../../src/dispatcher/flow.ts';
import { answerScrape } from '../../src/dispatcher/metrics.ts';
import {
  type AttemptResult,
  decide,
  isRetryableStatus,
  parseRetryAfter,
  type RetryPolicy,
  retryDelay,
} from '../../src/dispatcher/outcome.ts';
import { createSigner } from '../../src/dispatcher/signing.ts';
import { isBlockedAddress, targetUrl } from '../../src/dispatcher/target.ts';
import { collide, covers, filterSubjects, subjectMatches } from '../../src/jetstream/consumers.ts';

const policy = (over: Partial<RetryPolicy> = {}): RetryPolicy => ({
  maxAttempts: 8,
  backoff: { initialMs: 10_000, multiplier: 2, maxMs: 3_600_000, jitter: true },
  respectRetryAfter: true,
  maxRetryAfterMs: 3_600_000,
  retryableStatusCodes: ['408', '429', '5xx'],
  ...over,
});
const response = (status: number, retryAfterMs?: number): AttemptResult => ({ kind: 'Response', status, retryAfterMs });

const arbPolicy = fc.record({
  maxAttempts: fc.integer({ min: 1, max: 100 }),
  initialMs: fc.integer({ min: 1, max: 3_600_000 }),
  extraMs: fc.integer({ min: 0, max: 86_400_000 }),
  multiplier: fc.double({ min: 1, max: 10, noNaN: true }),
  jitter: fc.boolean(),
  maxRetryAfterMs: fc.integer({ min: 0, max: 86_400_000 }),
});
type PolicyInput = typeof arbPolicy extends fc.Arbitrary<infer T> ? T : never;
const toPolicy = (p: PolicyInput): RetryPolicy =>
  policy({
    maxAttempts: p.maxAttempts,
    backoff: { initialMs: p.initialMs, multiplier: p.multiplier, maxMs: p.initialMs + p.extraMs, jitter: p.jitter },
    maxRetryAfterMs: p.maxRetryAfterMs,
  });

describe('retry decisions', () => {
  it('acks 2xx, pauses on 410, dead-letters other 4xx at once and retries 408, 429, 5xx and network errors', () => {
    const p = policy();
    assert.deepEqual(decide(response(204), 1, p), { action: 'ack' });
    assert.deepEqual(decide(response(410), 1, p), { action: 'pause' });
    for (const s of [400, 401, 403, 404, 422, 301]) {
      assert.deepEqual(decide(response(s), 1, p), { action: 'dead-letter', reason: 'permanent' }, String(s));
    }
    for (const r of [
      response(408),
      response(429),
      response(500),
      response(503),
      { kind: 'TargetTimeout', error: 'x' } as const,
      { kind: 'TargetUnreachable', error: 'ECONNREFUSED' } as const,
    ]) {
      assert.equal(decide(r, 1, p).action, 'retry');
      assert.deepEqual(decide(r, 8, p), { action: 'dead-letter', reason: 'exhausted' });
    }
    assert.deepEqual(decide({ kind: 'TargetForbidden', error: 'x' }, 1, p), {
      action: 'dead-letter',
      reason: 'permanent',
    });
  });

  it('keeps every backoff delay within [0, maxDelay], and exact without jitter', () => {
    fc.assert(
      fc.property(
        arbPolicy,
        fc.integer({ min: 1, max: 100 }),
        fc.double({ min: 0, max: 0.999, noNaN: true }),
        (a, attempt, r) => {
          const p = toPolicy(a);
          const d = retryDelay(attempt, p, () => r);
          assert.ok(d >= 0 && d <= p.backoff.maxMs, `${d}`);
          const exact = Math.min(p.backoff.maxMs, p.backoff.initialMs * p.backoff.multiplier ** (attempt - 1));
          if (!p.backoff.jitter) assert.equal(d, exact);
          else assert.ok(d <= exact);
        },
      ),
    );
  });

  it('follows an explicit schedule, repeating its last delay', () => {
    const p = policy({ scheduleMs: [60_000, 300_000, 1_800_000, 7_200_000, 86_400_000] });
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6, 7].map((a) => retryDelay(a, p)),
      [60_000, 300_000, 1_800_000, 7_200_000, 86_400_000, 86_400_000, 86_400_000],
    );
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 1e9 }), { minLength: 1, maxLength: 32 }),
        fc.integer({ min: 1, max: 99 }),
        (schedule, attempt) => {
          const d = decide(response(503), attempt, policy({ scheduleMs: schedule, maxAttempts: 100 }));
          assert.deepEqual(d, { action: 'retry', delayMs: schedule[Math.min(attempt, schedule.length) - 1] });
        },
      ),
    );
  });

  it('lets Retry-After lengthen the wait up to maxRetryAfter, never shorten it below the policy, only when told to', () => {
    fc.assert(
      fc.property(
        arbPolicy,
        fc.integer({ min: 1, max: 99 }),
        fc.integer({ min: 0, max: 1e9 }),
        fc.constantFrom(429, 503),
        fc.double({ min: 0, max: 0.999, noNaN: true }),
        (a, attempt, retryAfter, status, r) => {
          const p = toPolicy({ ...a, maxAttempts: 100 });
          const own = retryDelay(attempt, p, () => r);
          const d = decide(response(status, retryAfter), attempt, p, () => r);
          assert.equal(d.action, 'retry');
          const delay = (d as { delayMs: number }).delayMs;
          assert.ok(delay >= own, `Retry-After ${retryAfter} gave ${delay}, below the policy's ${own}`);
          assert.ok(delay <= Math.max(own, p.maxRetryAfterMs), `${delay} above the cap`);
          if (retryAfter >= own && retryAfter <= p.maxRetryAfterMs) assert.equal(delay, retryAfter);
          const ignored = decide(response(status, retryAfter), attempt, { ...p, respectRetryAfter: false }, () => r);
          assert.deepEqual(ignored, { action: 'retry', delayMs: own });
        },
      ),
    );
  });

  it('waits at least the backoff after `Retry-After: 0` or a date in the past', () => {
    const p = policy({ backoff: { initialMs: 1000, multiplier: 2, maxMs: 60_000, jitter: false } });
    const past = parseRetryAfter('Wed, 21 Oct 2015 07:28:00 GMT');
    assert.equal(past, 0);
    for (const retryAfter of [0, past]) {
      assert.deepEqual(
        [1, 2, 3].map((attempt) => decide(response(503, retryAfter), attempt, p)),
        [1000, 2000, 4000].map((delayMs) => ({ action: 'retry', delayMs })),
      );
    }
  });

  it('never retries beyond maxAttempts', () => {
    fc.assert(
      fc.property(
        arbPolicy,
        fc.integer({ min: 1, max: 200 }),
        fc.integer({ min: 100, max: 599 }),
        (a, attempt, status) => {
          const p = toPolicy(a);
          const d = decide(response(status), attempt, p);
          if (attempt >= p.maxAttempts) assert.notEqual(d.action, 'retry');
        },
      ),
    );
  });

  it('reads status classes and Retry-After', () => {
    assert.equal(isRetryableStatus(502, ['5xx']), true);
    assert.equal(isRetryableStatus(429, ['5xx']), false);
    assert.equal(isRetryableStatus(409, ['409']), true);
    assert.equal(parseRetryAfter('120'), 120_000);
    assert.equal(parseRetryAfter('Wed, 21 Oct 2015 07:28:10 GMT', Date.parse('Wed, 21 Oct 2015 07:28:00 GMT')), 10_000);
    assert.equal(parseRetryAfter('soon'), undefined);
    assert.equal(parseRetryAfter(undefined), undefined);
  });
});

describe('circuit breaker and rate limit', () => {
  it('opens after the threshold, lets one probe through after openDuration, and closes on success', () => {
    let now = 0;
    const states: string[] = [];
    const b = new CircuitBreaker(3, 1000, () => now);
    b.onChange = (s) => states.push(s);
    b.failure();
    b.failure();
    assert.equal(b.allowance(8), 8);
    b.failure();
    assert.equal(b.state, 'open');
    assert.equal(b.allowance(8), 0);
    now = 999;
    assert.equal(b.allowance(8), 0);
    now = 1000;
    assert.equal(b.allowance(8), 1);
    b.started();
    assert.equal(b.allowance(8), 0, 'one probe at a time');
    b.failure();
    assert.equal(b.state, 'open', 'a failed probe opens it again');
    now = 2000;
    b.started();
    b.success();
    assert.equal(b.state, 'closed');
    assert.equal(b.allowance(8), 8);
    assert.deepEqual(states, ['open', 'half-open', 'open', 'half-open', 'closed']);
  });

  it('paces deliveries with a token bucket', () => {
    let now = 0;
    const bucket = new TokenBucket(10, 2, () => now);
    assert.equal(bucket.take(), 0);
    assert.equal(bucket.take(), 0);
    assert.equal(bucket.take(), 100);
    now = 100;
    assert.equal(bucket.take(), 0);
    now = 10_000;
    assert.equal(bucket.take(), 0);
    assert.equal(bucket.take(), 0);
    assert.ok(bucket.take() > 0, 'burst caps what is saved up');
  });
});

describe('consumer filter subjects', () => {
  const token = fc.constantFrom('a', 'b', 'c');
  const pattern = fc
    .tuple(fc.array(fc.oneof(token, fc.constant('*')), { minLength: 1, maxLength: 3 }), fc.boolean())
    .map(([parts, rest]) => [...parts, ...(rest ? ['>'] : [])].join('.'));
  const subject = fc.array(token, { minLength: 1, maxLength: 5 }).map((p) => p.join('.'));

  it('match exactly the event types the patterns match, and never overlap', () => {
    fc.assert(
      fc.property(
        fc.array(pattern, { minLength: 1, maxLength: 5 }),
        fc.array(subject, { maxLength: 20 }),
        (patterns, types) => {
          const filters = filterSubjects('ns', 'ep', patterns);
          for (let i = 0; i < filters.length; i++) {
            for (let j = i + 1; j < filters.length; j++)
              assert.equal(collide(filters[i] as string, filters[j] as string), false);
          }
          const whole = filters.length === 1 && filters[0] === 'hookyard.ns.ep.>';
          for (const t of types) {
            const s = `hookyard.ns.ep.${t}`;
            const wanted = patterns.some((p) => subjectMatches(`hookyard.ns.ep.${p}`, s));
            const got = filters.some((f) => subjectMatches(f, s));
            if (whole) assert.equal(got, true);
            else assert.equal(got, wanted, `${t} with ${patterns} -> ${filters}`);
          }
        },
      ),
    );
  });

  it('drops patterns another one covers', () => {
    assert.deepEqual(filterSubjects('ns', 'ep', ['order.created', 'order.*']), ['hookyard.ns.ep.order.*']);
    assert.deepEqual(filterSubjects('ns', 'ep', ['order.>', '>']), ['hookyard.ns.ep.>']);
    assert.deepEqual(filterSubjects('ns', 'ep', ['a.*', '*.b']), ['hookyard.ns.ep.>']);
    assert.equal(covers('a.>', 'a.b.c'), true);
    assert.equal(covers('a.*', 'a.>'), false);
  });
});

describe('signing', () => {
  it('signs Standard Webhooks with every key of a rotation, as the standardwebhooks package verifies', () => {
    const secrets = [`whsec_${randomBytes(24).toString('base64')}`, `whsec_${randomBytes(24).toString('base64')}`];
    const sign = createSigner(
      { scheme: 'standardWebhooks', header: 'X', algorithm: 'sha256', encoding: 'hex', prefix: '', secretRefs: [] },
      secrets.map((s) => Buffer.from(s)),
    );
    fc.assert(
      fc.property(fc.json(), (text) => {
        const body = Buffer.from(text);
        const h = sign('evt_1', body);
        assert.equal(h['webhook-signature']?.split(' ').length, 2);
        for (const s of secrets) new Webhook(s).verify(body.toString(), h as Record<string, string>);
      }),
      { numRuns: 50 },
    );
  });

  it('signs an HMAC header with every key of a rotation, each entry verifiable with its key alone', () => {
    const keys = ['k1', 'k2', 'k3'];
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 256 }),
        fc.constantFrom('sha256', 'sha512') as fc.Arbitrary<'sha256' | 'sha512'>,
        fc.constantFrom('hex', 'base64') as fc.Arbitrary<'hex' | 'base64'>,
        fc.integer({ min: 1, max: 3 }),
        (bytes, algorithm, encoding, n) => {
          const sign = createSigner(
            { scheme: 'hmac', header: 'X-Signature', algorithm, encoding, prefix: 'v1=', secretRefs: [] },
            keys.slice(0, n).map((k) => Buffer.from(`${k}\n`)),
          );
          const body = Buffer.from(bytes);
          const entries = String(sign('e', body)['x-signature'])
            .split(',')
            .map((e) => e.trim());
          assert.equal(entries.length, n);
          for (const key of keys.slice(0, n)) {
            const own = `v1=${createHmac(algorithm, key).update(body).digest(encoding)}`;
            assert.ok(entries.includes(own), `${key} finds its signature`);
          }
        },
      ),
      { numRuns: 100 },
    );
  });

  it('sends a single HMAC entry with a single key', () => {
    const sign = createSigner(
      { scheme: 'hmac', header: 'X-Signature', algorithm: 'sha512', encoding: 'base64', prefix: 'v1=', secretRefs: [] },
      [Buffer.from('k1')],
    );
    const body = Buffer.from('{"a":1}');
    assert.deepEqual(sign('e', body), {
      'x-signature': `v1=${createHmac('sha512', 'k1').update(body).digest('base64')}`,
    });
  });
});

describe('targets', () => {
  it('resolves a Service reference through cluster DNS', () => {
    const t = { service: { name: 'backoffice', port: 8080, path: '/proign', scheme: 'http' as const } };
    assert.equal(targetUrl(t as never, 'shop'), 'http://backoffice.shop.svc:8080/proign');
    assert.equal(targetUrl({ url: 'https://x.test/h' } as never, 'shop'), 'https://x.test/h');
  });

  it('refuses link-local and metadata addresses only', () => {
    for (const a of [
      '169.254.169.254',
      '169.254.0.1',
      'fe80::1',
      '::ffff:169.254.169.254',
      'fd00:ec2::254',
      '100.100.100.200',
    ]) {
      assert.equal(isBlockedAddress(a), true, a);
    }
    for (const a of ['127.0.0.1', '10.0.0.1', '192.168.1.1', '::1', '8.8.8.8', 'example.com']) {
      assert.equal(isBlockedAddress(a), false, a);
    }
  });
});

describe('config', () => {
  const subscription = {
    apiVersion: 'hookyard.io/v1alpha1',
    kind: 'WebhookSubscription',
    metadata: { name: 'orders', namespace: 'shop' },
    spec: { sources: [{ endpoint: 'proign' }], target: { url: 'http://orders.shop.svc/hooks' } },
  };
  it('applies the defaults of the API', () => {
    const c = parseConfig({ subscription, sources: [{ namespace: 'shop', endpoint: 'proign' }] });
    assert.equal(c.subscription.spec.retry.maxAttempts, 8);
    assert.equal(c.subscription.spec.ackWait, '2m');
  });
  it('names the field that is wrong', () => {
    assert.throws(() => parseConfig({ subscription, sources: [] }), /sources: at least one source/);
    assert.throws(
      () => parseConfig({ subscription, sources: [{ namespace: 'Shop', endpoint: 'x' }] }),
      /sources\[0\]\.namespace/,
    );
    assert.throws(
      () =>
        parseConfig({ subscription: { ...subscription, spec: { ...subscription.spec, concurrency: 0 } }, sources: [] }),
      /spec\.concurrency/,
    );
  });
});

describe('metrics endpoint', () => {
  it('answers a scrape whose collector rejects with a 500 and a warn line, and keeps serving', async () => {
    const registry = new Registry();
    let broken = true;
    new Gauge({
      name: 'hookyard_test_flaky',
      help: 'A collector that rejects while broken.',
      registers: [registry],
      async collect() {
        if (broken) throw new Error('collector failed');
        this.set(1);
      },
    });
    const lines: { level: number; msg: string }[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line)) });
    const server = createServer((_req, res) => void answerScrape(registry, res, logger));
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`;
      const failed = await fetch(url);
      assert.equal(failed.status, 500);
      await failed.text();
      assert.deepEqual(
        lines.map((l) => [l.level, l.msg]),
        [[40, 'metrics collection failed']],
      );
      broken = false;
      const ok = await fetch(url);
      assert.equal(ok.status, 200);
      assert.match(await ok.text(), /hookyard_test_flaky 1/);
    } finally {
      server.closeAllConnections();
      await new Promise((ok) => server.close(ok));
    }
  });
});
