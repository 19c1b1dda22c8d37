/**
 * The shape of one fuzz target: a named fast-check property plus its share of a big
 * `npm run fuzz` run. Targets are pure test code; run.ts and fuzz.test.ts drive them.
 */
import type fc from 'fast-check';

/** One property-based fuzz target. */
export interface FuzzTarget {
  /** Name used by `npm run fuzz -- --target NAME`. */
  readonly name: string;
  /** One line: what is generated and what must hold. */
  readonly description: string;
  /** Relative share of the runs of `npm run fuzz -- --runs N` (cheap targets get more). */
  readonly weight: number;
  /** Runs of this target inside `npm test` (fuzz.test.ts), with a fixed seed. */
  readonly testRuns: number;
  /** A fresh property (sync or async). */
  property(): fc.IRawProperty<unknown>;
}

/** Largest unsigned 64-bit integer. */
export const U64_MAX = (1n << 64n) - 1n;
