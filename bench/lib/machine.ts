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

/** What a thread that never sleeps saw of its CPU: the gaps in its own clock readings. */
export interface CpuGaps {
  readonly seconds: number;
  /** Share of the time lost in gaps over 50 µs. */
  readonly lost_pct: number;
  readonly gaps_over_1ms_per_s: number;
  readonly max_gap_us: number;
}

/**
 * One spinning child per core for `seconds`, each reading the clock in a loop and summing
 * the gaps over 50 µs between two readings: time its CPU was taken away (by the kernel, or
 * by the hypervisor from a virtual CPU, which the guest does not see as busy or stolen).
 * A latency path of duration D is hit by such a gap with probability about rate x D, so
 * this is a floor under every p99 measured on the machine.
 */
export async function cpuGaps(seconds = 3): Promise<CpuGaps[]> {
  const { spawn } = await import('node:child_process');
  const code = `const d=${seconds}e9,t0=process.hrtime.bigint();let last=t0,lost=0,over1=0,max=0;
for(;;){const t=process.hrtime.bigint(),g=Number(t-last);if(g>5e4){lost+=g;if(g>1e6)over1++;if(g>max)max=g;}last=t;if(t-t0>d)break;}
console.log(JSON.stringify({seconds:${seconds},lost_pct:Math.round(lost/d*1000)/10,gaps_over_1ms_per_s:Math.round(over1/${seconds}*10)/10,max_gap_us:Math.round(max/1000)}));`;
  const one = (): Promise<CpuGaps> => new Promise((resolve, reject) => {
    const c = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    c.once('error', reject);
    c.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as CpuGaps) : reject(new Error(`cpu gap probe exited with ${code}`))));
  });
  return Promise.all(cpus().map(() => one()));
}
