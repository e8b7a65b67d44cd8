// The delivery phases' invariants, without NATS: the flow gate, pull sizes, leases, ack batching, the retry
// ledger shared by replicas, and the pure decisions around an attempt.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setImmediate as nextTurn } from 'node:timers/promises';
import fc from 'fast-check';
import { AckBatcher } from '../../src/dispatcher/acks.ts';
import { CircuitBreaker, type CircuitState, TokenBucket } from '../../src/dispatcher/flow.ts';
import { FlowGate, pullSize } from '../../src/dispatcher/gate.ts';
import { Leases } from '../../src/dispatcher/leases.ts';
import {
  type AttemptResult,
  beforeAttempt,
  decide,
  type RetryPolicy,
  targetFailed,
} from '../../src/dispatcher/outcome.ts';
import { RetryLedger, type RetryNote } from '../../src/dispatcher/retries.ts';

const policy: RetryPolicy = {
  maxAttempts: 3,
  backoff: { initialMs: 10, multiplier: 2, maxMs: 100, jitter: false },
  respectRetryAfter: true,
  maxRetryAfterMs: 1000,
  retryableStatusCodes: ['408', '429', '5xx'],
};

describe('flow gate', () => {
  it('never has more than `concurrency` deliveries in flight, and admits in arrival order', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 8 }),
        fc.array(fc.constantFrom('admit', 'tryAdmit', 'done'), { minLength: 1, maxLength: 60 }),
        async (concurrency, steps) => {
          const gate = new FlowGate({ concurrency });
          const admitted: number[] = [];
          let offered = 0;
          for (const step of steps) {
            if (step !== 'done' || gate.inFlight === 0) {
              const n = offered++;
              // The delivery phases try for a slot at once, and wait only when they get none.
              if (step === 'tryAdmit' && gate.tryAdmit()) admitted.push(n);
              else void gate.admit().then((ok) => ok && admitted.push(n));
            } else gate.done();
            await nextTurn();
            assert.ok(gate.inFlight <= concurrency, `${gate.inFlight} in flight`);
            assert.equal(gate.inFlight + gate.waiting, offered - (admitted.length - gate.inFlight));
          }
          assert.deepEqual(
            admitted,
            admitted.map((_, i) => i),
          );
          gate.close();
        },
      ),
      { numRuns: 100 },
    );
  });

  it('admits nothing while the breaker is open and one probe while it is half-open', async () => {
    let now = 0;
    const breaker = new CircuitBreaker(1, 1000, () => now);
    const gate = new FlowGate({ concurrency: 4, breaker });
    breaker.failure();
    let admitted = 0;
    for (let i = 0; i < 3; i++) void gate.admit().then((ok) => ok && admitted++);
    await nextTurn();
    assert.equal(admitted, 0, 'open: nothing starts');
    now = 1000;
    gate.pump();
    await nextTurn();
    assert.equal(admitted, 1, 'half-open: one probe');
    breaker.success();
    gate.pump();
    await nextTurn();
    assert.equal(admitted, 3, 'closed: the rest');
    gate.close();
  });

  it('never lets a delivery that tries for a slot pass one already waiting for a token', async () => {
    let now = 0;
    const gate = new FlowGate({ concurrency: 4, bucket: new TokenBucket(1, 1, () => now) });
    try {
      assert.equal(gate.tryAdmit(), true, 'the burst token');
      let waited = false;
      void gate.admit().then((ok) => (waited = ok));
      now = 1000; // a token is due, and the waiting delivery's recheck has not run yet
      assert.equal(gate.tryAdmit(), false, 'the waiting delivery comes first');
      gate.pump();
      await nextTurn();
      assert.equal(waited, true);
    } finally {
      gate.close();
    }
  });

  it('refuses what waits once closed, so it can be handed back', async () => {
    const gate = new FlowGate({ concurrency: 1 });
    assert.equal(await gate.admit(), true);
    const waiting = gate.admit();
    gate.close();
    assert.equal(await waiting, false);
    assert.equal(await gate.admit(), false);
  });

  it('pulls no more than the window holds, nothing while open, one probe while half-open', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 256 }),
        fc.nat(256),
        fc.nat(256),
        fc.constantFrom<CircuitState | undefined>(undefined, 'closed', 'open', 'half-open'),
        fc.nat(4),
        (cap, outstanding, held, breaker, waiting) => {
          fc.pre(outstanding + held <= cap);
          const n = pullSize({ cap, outstanding, held }, breaker, waiting);
          assert.ok(n >= 0 && outstanding + held + n <= cap, `${n} beyond the window`);
          if (breaker === 'open') assert.equal(n, 0);
          if (breaker === 'half-open') assert.ok(n <= 1 && (n === 0 || outstanding + held + waiting === 0));
          if (outstanding + held === 0 && breaker !== 'open' && breaker !== 'half-open') assert.equal(n, cap);
        },
      ),
    );
  });
});

describe('leases', () => {
  it('keep every held message alive until it is released, and no other', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(9), fc.boolean()), { maxLength: 50 }), (ops) => {
        const leases = new Leases(60_000);
        const msgs = Array.from({ length: 10 }, () => ({
          touched: 0,
          working() {
            this.touched++;
          },
        }));
        const held = new Set<number>();
        for (const [i, take] of ops) {
          const m = msgs[i] as (typeof msgs)[number];
          if (take) {
            leases.take(m);
            held.add(i);
          } else {
            leases.release(m);
            held.delete(i);
          }
          for (const x of msgs) x.touched = 0;
          leases.renew();
          for (const [j, x] of msgs.entries()) assert.equal(x.touched, held.has(j) ? 1 : 0);
        }
        assert.equal(leases.size, held.size);
        leases.stop();
      }),
    );
  });
});

describe('ack batching', () => {
  it('writes every ack once, at the end of the turn or when flushed', async () => {
    const acks = new AckBatcher();
    const acked: number[] = [];
    const msg = (n: number) => ({ ack: () => acked.push(n) });
    acks.ack(msg(1));
    acks.ack(msg(2));
    assert.deepEqual(acked, [], 'not yet: batched');
    await nextTurn();
    await nextTurn();
    assert.deepEqual(acked, [1, 2]);
    acks.ack(msg(3));
    acks.flush();
    await nextTurn();
    await nextTurn();
    assert.deepEqual(acked, [1, 2, 3], 'flushed once, not again at the end of the turn');
  });

  it('writes other writes of the turn after its acks, in the same flush', async () => {
    const acks = new AckBatcher();
    const written: string[] = [];
    acks.later(() => written.push('record 1'));
    acks.ack({ ack: () => written.push('ack 1') });
    acks.later(() => written.push('record 2'));
    assert.deepEqual(written, []);
    await nextTurn();
    await nextTurn();
    assert.deepEqual(written, ['ack 1', 'record 1', 'record 2']);
  });
});

describe('retries known across replicas', () => {
  /** Replicas whose notes reach each other (the subject), in order. */
  function replicas(n: number, capacity = 1000, now = () => 0) {
    const ledgers: RetryLedger[] = [];
    for (let i = 0; i < n; i++) {
      ledgers.push(
        new RetryLedger({
          capacity,
          graceMs: 1000,
          now,
          announce: (note: RetryNote) => {
            for (const l of ledgers) l.heard(JSON.parse(JSON.stringify(note)));
          },
        }),
      );
    }
    return ledgers;
  }

  it('a retry one replica schedules is no possible duplicate where it arrives, and then nobody keeps it', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(2), fc.nat(2), fc.nat(20)), { maxLength: 80 }), (retries) => {
        const ledgers = replicas(3);
        for (const [from, to, seq] of retries) {
          const key = `s:${seq}`;
          (ledgers[from] as RetryLedger).schedule(key, 10);
          assert.equal((ledgers[to] as RetryLedger).redelivered(key), true, 'scheduled, so not a duplicate');
          for (const l of ledgers) assert.equal(l.redelivered(key), false, 'taken: forgotten everywhere');
        }
        for (const l of ledgers) assert.equal(l.size, 0);
      }),
    );
  });

  it('counts a redelivery nobody scheduled, and one picked up long after its due time', () => {
    let now = 0;
    const [a, b] = replicas(2, 1000, () => now) as [RetryLedger, RetryLedger];
    assert.equal(b.redelivered('s:1'), false, 'a crash: nobody scheduled it');
    a.schedule('s:2', 100);
    now = 100 + 1000 + 1;
    assert.equal(b.redelivered('s:2'), false, 'past due plus grace');
    a.schedule('s:3', null);
    now = 1e12;
    assert.equal(b.redelivered('s:3'), true, 'a pause waits as long as it takes');
  });

  it('never keeps more than its capacity, whatever it hears', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 20 }),
        fc.array(fc.oneof(fc.nat(100), fc.anything()), { maxLength: 200 }),
        (capacity, notes) => {
          const ledger = new RetryLedger({ capacity, graceMs: 1000, announce: () => {} });
          for (const n of notes) {
            if (typeof n === 'number') ledger.heard({ from: 'other', op: 'scheduled', key: `s:${n}`, delayMs: 5 });
            else ledger.heard(n);
            assert.ok(ledger.size <= capacity, `${ledger.size} entries`);
          }
        },
      ),
    );
  });

  it('forgets entries past their grace when pruned', () => {
    let now = 0;
    const ledger = new RetryLedger({ capacity: 10, graceMs: 1000, now: () => now, announce: () => {} });
    ledger.schedule('s:1', 100);
    ledger.schedule('s:2', 5000);
    now = 1101;
    ledger.prune();
    assert.equal(ledger.size, 1);
  });
});

describe('decisions around an attempt', () => {
  const results: fc.Arbitrary<AttemptResult> = fc.oneof(
    fc.integer({ min: 100, max: 599 }).map((status) => ({ kind: 'Response' as const, status })),
    fc.constantFrom<AttemptResult>(
      { kind: 'TargetTimeout', error: 't' },
      { kind: 'TargetUnreachable', error: 'u' },
      { kind: 'TargetForbidden', error: 'f' },
    ),
  );

  it('skips what does not match, dead-letters past maxAttempts without an attempt, attempts the rest', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 10 }), fc.boolean(), (attempt, matches) => {
        const step = beforeAttempt(attempt, matches, policy);
        if (!matches) assert.equal(step, 'skip');
        else assert.equal(step, attempt > policy.maxAttempts ? 'exhausted' : 'attempt');
      }),
    );
  });

  it('counts against the target only what is its fault: no answer, no connection, or a retried answer', () => {
    fc.assert(
      fc.property(results, fc.integer({ min: 1, max: 5 }), (result, attempt) => {
        const decision = decide(result, attempt, policy, () => 0.5);
        const failed = targetFailed(result, decision);
        if (decision.action === 'ack' || decision.action === 'pause') assert.equal(failed, false);
        if (decision.action === 'retry') assert.equal(failed, true);
        if (result.kind === 'TargetTimeout' || result.kind === 'TargetUnreachable') assert.equal(failed, true);
        if (decision.action === 'dead-letter' && decision.reason === 'permanent' && result.kind !== 'TargetUnreachable')
          assert.equal(failed, false);
      }),
    );
  });
});
