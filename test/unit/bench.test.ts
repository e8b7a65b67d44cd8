// The benches' goal check: a missed goal is what makes `npm run bench:*` exit 1.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { missedGoals } from '../../bench/report.ts';

describe('bench goals', () => {
  it('are missed exactly when the value is on the wrong side of the limit, the limit itself included for <', () => {
    const value = fc.double({ noNaN: true, min: -1e6, max: 1e6 });
    fc.assert(
      fc.property(value, value, fc.boolean(), (v, other, same) => {
        const limit = same ? v : other; // the limit itself is the edge that tells `<` from `<=`
        const at = (op: '>=' | '<=' | '<') => missedGoals([{ name: 'x', value: v, op, limit }]).length === 1;
        assert.equal(at('>='), v < limit);
        assert.equal(at('<='), v > limit);
        assert.equal(at('<'), v >= limit);
      }),
    );
  });

  it('name the measure, its value and the goal', () => {
    assert.deepEqual(
      missedGoals([
        { name: 'throughput ratio (dispatcher / baseline)', value: 0.78, op: '>=', limit: 0.8 },
        { name: 'receiver idle RSS (MiB)', value: 71.4, op: '<', limit: 80 },
      ]),
      ['goal missed: throughput ratio (dispatcher / baseline) is 0.78, the goal is >= 0.8'],
    );
  });
});
