// The per-key queues and the takeover check of per-key ordering, by value (src/dispatcher/ordering.ts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { type Held, KeyQueues, takeoverComplete } from '../../src/dispatcher/ordering.ts';

describe('KeyQueues', () => {
  it('settles each key in arrival order, one event of a key at a time, whatever the interleaving of starts, retries and settles', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 5 }), { minLength: 1, maxLength: 60 }),
        fc.array(fc.nat(), { minLength: 1, maxLength: 200 }),
        (keys, choices) => {
          const queues = new KeyQueues<null>();
          const settledOrder = new Map<string, number[]>();
          const inFlight: Held<null>[] = [];
          const retrying: number[] = [];
          let published = 0;
          const publish = () => {
            queues.add({ seq: published + 1, key: `k${keys[published]}`, msg: null });
            published++;
          };
          const start = () => {
            const next = queues.next();
            if (next) {
              assert.ok(!inFlight.some((h) => h.key === next.key), `two events of ${next.key} in flight`);
              inFlight.push(next);
            }
            return next;
          };
          const settle = (i: number) => {
            const [done] = inFlight.splice(i, 1) as [Held<null>];
            queues.settled(done);
            settledOrder.set(done.key, [...(settledOrder.get(done.key) ?? []), done.seq]);
          };
          const redeliver = (i: number) => {
            const seq = retrying.splice(i, 1)[0] as number;
            queues.add({ seq, key: `k${keys[seq - 1]}`, msg: null });
          };
          // A random interleaving of publishing, starting, settling, retrying and redelivering retries...
          for (const choice of choices) {
            const pick = (n: number) => Math.floor(choice / 5) % n;
            const action = choice % 5;
            if (action === 0 && published < keys.length) publish();
            else if (action === 1) start();
            else if (action === 2 && inFlight.length > 0) settle(pick(inFlight.length));
            else if (action === 3 && inFlight.length > 0) {
              const [failed] = inFlight.splice(pick(inFlight.length), 1) as [Held<null>];
              queues.retrying(failed);
              retrying.push(failed.seq);
            } else if (action === 4 && retrying.length > 0) redeliver(pick(retrying.length));
          }
          // ...then everything succeeds.
          while (published < keys.length) publish();
          while (retrying.length > 0) redeliver(0);
          while (inFlight.length > 0 || start()) {
            while (start());
            if (inFlight.length > 0) settle(0);
          }
          for (const [key, seqs] of settledOrder) {
            const expected = keys.flatMap((k, i) => (`k${k}` === key ? [i + 1] : []));
            assert.deepEqual(seqs, expected, key);
          }
          assert.equal(queues.held, 0);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('blocks a key on an earlier event known from the ledger until that event comes back', () => {
    const queues = new KeyQueues<string>();
    queues.await('a', 3, 1000);
    queues.add({ seq: 7, key: 'a', msg: 'a7' });
    queues.add({ seq: 8, key: 'b', msg: 'b8' });
    assert.equal(queues.next()?.msg, 'b8');
    assert.equal(queues.next(), undefined, 'a waits for its event 3');
    assert.deepEqual(queues.blocked(), { keys: 1, oldestSince: 1000 });
    queues.add({ seq: 3, key: 'a', msg: 'a3' });
    assert.equal(queues.next()?.msg, 'a3');
    assert.deepEqual(queues.blocked(), { keys: 0, oldestSince: undefined });
  });

  it('does not queue a second copy of an event being delivered, and replaces a waiting copy', () => {
    const queues = new KeyQueues<string>();
    queues.add({ seq: 1, key: 'a', msg: 'first' });
    queues.add({ seq: 2, key: 'a', msg: 'old' });
    const started = queues.next() as Held<string>;
    assert.equal(queues.add({ seq: 1, key: 'a', msg: 'copy' }), 'duplicate');
    assert.equal((queues.add({ seq: 2, key: 'a', msg: 'new' }) as Held<string>).msg, 'old');
    queues.settled(started);
    assert.equal(queues.next()?.msg, 'new');
    assert.equal(queues.held, 1);
  });
});

describe('takeoverComplete', () => {
  it('is complete only when every pending event is held here or recorded as retrying', () => {
    assert.equal(takeoverComplete(0, [], 10, []), true, 'nothing pending');
    assert.equal(takeoverComplete(2, [4, 5], 10, []), true, 'all held here');
    assert.equal(takeoverComplete(2, [4], 10, [9]), true, 'one held, one retrying');
    assert.equal(takeoverComplete(2, [4], 10, [4]), false, 'held and recorded is one event');
    assert.equal(takeoverComplete(3, [4, 5], 10, []), false, 'one still held elsewhere');
    // An event delivered after the consumer info was read must not stand in for one still held elsewhere.
    assert.equal(takeoverComplete(2, [4, 11], 10, []), false);
  });
});
