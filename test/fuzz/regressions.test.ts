/**
 * Shrunk counterexamples of bugs the fuzzers found, kept as plain tests (docs/fuzzing.md).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode } from '../../services/common/src/errors.ts';
import { parseTopology, TopologyError } from '../../services/linestate/src/topology.ts';

function rejected(doc: string): TopologyError {
  try {
    parseTopology(doc);
  } catch (e) {
    assert.ok(e instanceof TopologyError, String(e));
    assert.equal(e.code, ErrorCode.INVALID_ARGUMENT);
    return e;
  }
  assert.fail('the document was accepted');
}

describe('fuzz regressions', () => {
  // Before the fix the yaml parser recursed per '[' until the stack overflowed and then
  // recovered level by level: 2 MB of '[' held the line-state event loop for 70-90 s.
  it('topology: 1,000,000 nested flow sequences are refused before parsing', () => {
    const e = rejected(`apiVersion: gpiofabric/v1\nchips: ${'['.repeat(1_000_000)}${']'.repeat(1_000_000)}\n`);
    assert.match(e.message, /nested deeper than 64 levels/);
  });

  it('topology: deeply nested flow mappings are refused before parsing', () => {
    const e = rejected(`${'{a: '.repeat(100_000)}1${'}'.repeat(100_000)}`);
    assert.match(e.message, /nested deeper than 64 levels/);
  });

  // 300 kB of "a: " on one line cost the parser 17 s (super-linear in compact nesting).
  it('topology: a line of 100,000 compact block entries is refused before parsing', () => {
    assert.match(rejected(`${'a: '.repeat(100_000)}x`).message, /line 1 nests more than 64 block entries/);
    assert.match(rejected(`apiVersion: gpiofabric/v1\nchips:\n  ${'- '.repeat(100_000)}x`).message, /line 3 nests more than 64 block entries/);
  });

  it('topology: brackets, colons and dashes inside quotes and comments do not count', () => {
    const names = Array.from({ length: 100 }, (_, i) => `"[{- - ? ${i}"`);
    const t = parseTopology(`apiVersion: gpiofabric/v1 # ${'[: - '.repeat(100)}\nchips:\n  - id: vm-a\n    lines: 100\n    names: [${names.join(', ')}]\n`);
    assert.equal(t.chips[0]?.names[5], "[{- - ? 5");
  });
});
