/**
 * Benchmark suites by name (`npm run bench -- NAME...`). Each is loaded only when run.
 * A suite prints its table and writes bench/results/<name>.json.
 */
export interface BenchSuite {
  readonly description: string;
  run(): Promise<void>;
}

export const suites: Readonly<Record<string, () => Promise<BenchSuite>>> = {
  linestate: async () => (await import('./linestate.ts')).suite,
  agent: async () => (await import('./agent.ts')).suite,
  performance: async () => (await import('./performance.ts')).suite,
  scale: async () => (await import('./scale.ts')).suite,
};
