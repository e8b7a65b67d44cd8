// A bounded run of `npm run fuzz` (scripts/fuzz-receiver.ts): a few thousand malformed requests to a real receiver
// process per seed provider's preset (the bundle with the image's node flags), against a real nats-server, with
// the full run's peak RSS bound. The full run (two rounds of 100,000, with both memory bounds) and its figures are
// in docs/benchmarks.md.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fuzzReceivers, problems } from '../../scripts/fuzz-receiver.ts';

describe('receiver fuzz (bounded)', () => {
  it('answers thousands of malformed requests without a 5xx, a crash or an error-level log line', async () => {
    // A new seed each run explores more; SEED=<n> npm run fuzz replays a failing one.
    const seed = Date.now() % 1_000_000;
    const result = await fuzzReceivers({ requests: 3000, rounds: 1, seed });
    assert.deepEqual(problems(result, false), [], `seed ${seed}`);
    const answers = result.rounds[0]?.byStatus ?? {};
    // The run reached every kind of refusal it means to provoke, and accepted the well-formed requests.
    for (const status of ['200', '400', '401', '404', '413', '415', '431'])
      assert.ok((answers[status] ?? 0) > 0, `no ${status} among ${JSON.stringify(answers)}`);
    // The full run's peak bound holds here too; its second-round growth bound needs the full run's length.
    for (const [name, peak] of Object.entries(result.peakRssMiB))
      assert.ok(peak < 200, `${name}: peak RSS ${peak.toFixed(0)} MiB (limit 200), seed ${seed}`);
  });
});
