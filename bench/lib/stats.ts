/** Latency statistics of a benchmark sample (microseconds). */
export interface Summary {
  readonly n: number;
  readonly min_us: number;
  readonly p50_us: number;
  readonly p99_us: number;
  readonly max_us: number;
  readonly mean_us: number;
}

const round = (x: number): number => Math.round(x * 10) / 10;

/** Summarise durations given in nanoseconds. */
export function summarize(ns: readonly (bigint | number)[]): Summary {
  const us = ns.map((v) => Number(v) / 1000).sort((a, b) => a - b);
  if (us.length === 0) throw new Error('empty sample');
  const q = (p: number): number => us[Math.min(us.length - 1, Math.max(0, Math.ceil(p * us.length) - 1))] ?? 0;
  const mean = us.reduce((a, b) => a + b, 0) / us.length;
  return { n: us.length, min_us: round(us[0] ?? 0), p50_us: round(q(0.5)), p99_us: round(q(0.99)), max_us: round(us[us.length - 1] ?? 0), mean_us: round(mean) };
}

/** Time `n` sequential calls of `fn` after `warmup` untimed ones. */
export async function timeSequential(fn: (i: number) => Promise<unknown>, n: number, warmup: number): Promise<Summary> {
  for (let i = 0; i < warmup; i++) await fn(i);
  const out = new Array<bigint>(n);
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await fn(i);
    out[i] = process.hrtime.bigint() - t0;
  }
  return summarize(out);
}

/** Time `n` sequential calls of `fn` (no warm-up): raw durations in ns, to merge interleaved blocks. */
export async function sampleSequential(fn: (i: number) => Promise<unknown>, n: number, out: bigint[] = []): Promise<bigint[]> {
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await fn(i);
    out.push(process.hrtime.bigint() - t0);
  }
  return out;
}

/** Operations per second with `inFlight` workers, each calling `fn(worker, i)` back to back, for `total` operations. */
export async function throughput(fn: (worker: number, i: number) => Promise<unknown>, inFlight: number, total: number): Promise<number> {
  let next = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: inFlight }, async (_, w) => {
    while (next < total) {
      const i = next++;
      await fn(w, i);
    }
  }));
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return Math.round(total / s);
}

/** A fixed-width text table. */
export function table(header: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const w = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells.map((r, j) => r.map((c, i) => (i === 0 ? c.padEnd(w[i] ?? 0) : c.padStart(w[i] ?? 0))).join('  ') + (j === 0 ? `\n${w.map((x) => '-'.repeat(x)).join('  ')}` : '')).join('\n');
}
