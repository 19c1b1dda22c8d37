/** The machine a benchmark ran on, recorded next to its figures. */
import { cpus, loadavg, totalmem } from 'node:os';

export interface Machine {
  readonly cpu: string;
  readonly cores: number;
  readonly node: string;
  readonly platform: string;
  readonly memory_gib: number;
  readonly loadavg_1m: number;
}

export function machine(): Machine {
  const c = cpus();
  return {
    cpu: c[0]?.model.trim() ?? 'unknown', cores: c.length, node: process.version, platform: `${process.platform}-${process.arch}`,
    memory_gib: Math.round(totalmem() / 2 ** 30), loadavg_1m: Math.round((loadavg()[0] ?? 0) * 100) / 100,
  };
}

export const machineText = (m: Machine): string => `${m.cpu}, ${m.cores} cores, ${m.memory_gib} GiB, node ${m.node} (${m.platform}), load ${m.loadavg_1m}`;

/**
 * Benchmarks measure a redis-server spawned on this machine (test/support/redis.ts),
 * never a container: a container's network path is not the floor being compared.
 */
export function useLocalRedis(): void {
  if (process.env['GPIOFABRIC_TEST_CONTAINERS'] === undefined) process.env['GPIOFABRIC_TEST_CONTAINERS'] = '0';
}

/** Start of a suite: local Redis, and the machine and load averages printed and returned for the results file. */
export function beginSuite(): { readonly machine: Machine; readonly load: readonly number[] } {
  useLocalRedis();
  const m = machine();
  const load = loadavg();
  console.log(`machine: ${machineText(m)} (load ${load.map((x) => Math.round(x * 100) / 100).join(' ')})`);
  return { machine: m, load };
}
