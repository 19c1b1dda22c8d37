import type { FuzzTarget } from './target.ts';

/**
 * Split `total` runs over targets by weight (largest remainder). Every target gets at
 * least one run, so the sum exceeds `total` only when total < number of targets.
 */
export function splitRuns(total: number, targets: readonly FuzzTarget[]): number[] {
  const w = targets.reduce((n, t) => n + t.weight, 0);
  const exact = targets.map((t) => (total * t.weight) / w);
  const out = exact.map((x) => Math.max(1, Math.floor(x)));
  let left = total - out.reduce((a, b) => a + b, 0);
  const order = exact.map((x, i) => [x - Math.floor(x), i] as const).sort((a, b) => b[0] - a[0]);
  for (const [, i] of order) {
    if (left <= 0) break;
    out[i] = (out[i] as number) + 1;
    left--;
  }
  return out;
}
