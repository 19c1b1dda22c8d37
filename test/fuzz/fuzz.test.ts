/**
 * Every fuzz target (test/fuzz/targets/) with a fixed seed and a small run count, inside
 * `npm test`. The big runs are `npm run fuzz -- --runs N` (docs/fuzzing.md).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { allTargets } from './targets/index.ts';
import { splitRuns } from './split.ts';

const SEED = 20261124;

describe('fuzz targets (fixed seed, small runs)', () => {
  for (const [i, t] of allTargets.entries()) {
    it(`${t.name}: ${t.description}`, async () => {
      await fc.assert(t.property(), { numRuns: t.testRuns, seed: SEED + i });
    });
  }

  it('the run split gives every target its weighted share and sums to the total', () => {
    const counts = splitRuns(1_000_000, allTargets);
    assert.equal(counts.reduce((a, b) => a + b, 0), 1_000_000);
    const w = allTargets.reduce((n, t) => n + t.weight, 0);
    counts.forEach((c, k) => assert.ok(Math.abs(c - (1_000_000 * (allTargets[k]?.weight ?? 0)) / w) <= 1));
    assert.deepEqual(splitRuns(3, allTargets).every((c) => c >= 1), true);
    assert.equal(new Set(allTargets.map((t) => t.name)).size, allTargets.length, 'target names are unique');
  });
});
