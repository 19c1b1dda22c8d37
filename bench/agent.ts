/**
 * Agent benchmark: one guest operation's round trip through the whole agent, beside the
 * kick -> call floor, in one run.
 *
 *  - kick -> call floor: bench/kick-call.ts (two Node processes, eventfds only).
 *  - guest op, standalone backend: the frontend driver (this process: QEMU + guest, real
 *    rings in memfd guest RAM, real eventfds) against an agent in a child process; per op:
 *    add chain, kick, agent pops + answers + calls, driver reads the used ring.
 *  - guest op, remote backend: the same, with the agent (child) forwarding to a line-state
 *    service (another child) on a spawned redis-server: + one gRPC and one Redis round trip.
 *
 * SET_VALUE and GET_VALUE, sequential, measured in interleaved blocks so machine load
 * spreads evenly. Target: standalone op p50 <= 2 x kick->call p50.
 * Writes bench/results/agent.json.
 *
 *   npm run bench -- agent        (or: npx tsx bench/agent.ts [--iterations N])
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Frontend, Gpio } from '../test/support/frontend.ts';
import { startRedis } from '../test/support/redis.ts';
import { runKickCallBench } from './kick-call.ts';
import { exitWithParent, startChild, redisServiceChild } from './lib/child.ts';
import { machine, machineText, useLocalRedis } from './lib/machine.ts';
import { sampleSequential, summarize, table, type Summary } from './lib/stats.ts';
import type { BenchSuite } from './suites.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';

const here = dirname(fileURLToPath(import.meta.url));
const self = fileURLToPath(import.meta.url);
const RESULT_FILE = join(here, 'results', 'agent.json');
const TARGET_RATIO = 2;


/** Child: an agent on `socketPath`, standalone or remote (server address). */
async function agentChild(socketPath: string, backend: string): Promise<void> {
  const { startAgent } = await import('../services/agent/src/agent.ts');
  const { silentLogger } = await import('../services/agent/src/device/gpio-device.ts');
  const agent = await startAgent({
    socketPath,
    chip: `bench-${backend === 'standalone' ? 'sa' : 'remote'}-${process.pid}`,
    ngpio: 8,
    backend: backend === 'standalone' ? { kind: 'standalone' } : { kind: 'remote', server: backend },
    log: silentLogger,
  });
  exitWithParent(() => agent.close());
  console.log(`READY ${socketPath}`);
}

export interface AgentBenchResult {
  kick_call_p50_us: number;
  kick_call_p99_us: number;
  kick_call_min_us: number;
  standalone_op_p50_us: number;
  standalone_op_p99_us: number;
  standalone_op_min_us: number;
  standalone_set_value_p50_us: number;
  standalone_get_value_p50_us: number;
  remote_op_p50_us: number;
  remote_op_p99_us: number;
  remote_op_min_us: number;
  remote_set_value_p50_us: number;
  remote_get_value_p50_us: number;
  standalone_over_kick_call: number;
  target_ratio: number;
  target_met: boolean;
}

export async function runAgentBench(opts: { iterations?: number; warmup?: number } = {}): Promise<AgentBenchResult> {
  const n = opts.iterations ?? 5000;
  const warmup = opts.warmup ?? 1000;
  useLocalRedis();
  const kick = await runKickCallBench({ iterations: 20000 });

  const dir = mkdtempSync(join(tmpdir(), 'gf-bench-agent-'));
  const redis = await startRedis();
  const cleanup: (() => Promise<void>)[] = [async () => rmSync(dir, { recursive: true, force: true }), () => redis.stop()];
  try {
    const svc = await startChild(self, ['--service', redis.url, `bench-agent-${process.pid}`]);
    cleanup.unshift(() => svc.stop());
    const sa = await startChild(self, ['--agent', join(dir, 'sa.sock'), 'standalone']);
    cleanup.unshift(() => sa.stop());
    const ra = await startChild(self, ['--agent', join(dir, 'remote.sock'), svc.ready]);
    cleanup.unshift(() => ra.stop());

    const feSa = await Frontend.connect(sa.ready);
    cleanup.unshift(async () => feSa.close());
    await feSa.start();
    const feRa = await Frontend.connect(ra.ready);
    cleanup.unshift(async () => feRa.close());
    await feRa.start();
    for (const fe of [feSa, feRa]) {
      const r = await fe.request(Gpio.SET_DIRECTION, 0, 1);
      if (r.status !== 0) throw new Error('SET_DIRECTION failed before the benchmark');
    }
    const op = (fe: Frontend, type: number) => async (i: number) => {
      const r = await fe.request(type, 0, type === Gpio.SET_VALUE ? i & 1 : 0);
      if (r.status !== 0) throw new Error(`request ${type} answered ERR`);
    };
    const paths: [string, (i: number) => Promise<void>][] = [
      ['sa-set', op(feSa, Gpio.SET_VALUE)],
      ['sa-get', op(feSa, Gpio.GET_VALUE)],
      ['ra-set', op(feRa, Gpio.SET_VALUE)],
      ['ra-get', op(feRa, Gpio.GET_VALUE)],
    ];
    const samples = new Map<string, bigint[]>(paths.map(([k]) => [k, []]));
    for (const [, fn] of paths) for (let i = 0; i < warmup; i++) await fn(i);
    const blocks = 10;
    for (let b = 0; b < blocks; b++) {
      for (const [k, fn] of paths) await sampleSequential(fn, Math.ceil(n / blocks), samples.get(k));
    }
    const s = (k: string): bigint[] => samples.get(k) ?? [];
    const saSet = summarize(s('sa-set'));
    const saGet = summarize(s('sa-get'));
    const raSet = summarize(s('ra-set'));
    const raGet = summarize(s('ra-get'));
    const saOp = summarize([...s('sa-set'), ...s('sa-get')]);
    const raOp = summarize([...s('ra-set'), ...s('ra-get')]);
    const ratio = Math.round((saOp.p50_us / kick.kick_call_p50_us) * 100) / 100;
    const result: AgentBenchResult = {
      ...kick,
      standalone_op_p50_us: saOp.p50_us, standalone_op_p99_us: saOp.p99_us, standalone_op_min_us: saOp.min_us,
      standalone_set_value_p50_us: saSet.p50_us, standalone_get_value_p50_us: saGet.p50_us,
      remote_op_p50_us: raOp.p50_us, remote_op_p99_us: raOp.p99_us, remote_op_min_us: raOp.min_us,
      remote_set_value_p50_us: raSet.p50_us, remote_get_value_p50_us: raGet.p50_us,
      standalone_over_kick_call: ratio, target_ratio: TARGET_RATIO, target_met: ratio <= TARGET_RATIO,
    };
    report(kick, { saSet, saGet, saOp, raSet, raGet, raOp }, result, n);
    return result;
  } finally {
    for (const f of cleanup) await f().catch(() => {});
  }
}

function report(kick: Awaited<ReturnType<typeof runKickCallBench>>, s: Record<'saSet' | 'saGet' | 'saOp' | 'raSet' | 'raGet' | 'raOp', Summary>, r: AgentBenchResult, n: number): void {
  const m = machine();
  const row = (name: string, x: Summary) => [name, x.min_us, x.p50_us, x.p99_us];
  console.log(`machine: ${machineText(m)}\nsequential guest operations, ${n} each after warm-up; frontend here, agent and service in child processes (µs):\n`);
  console.log(table(['path', 'min', 'median', 'p99'], [
    ['kick -> call (floor)', kick.kick_call_min_us, kick.kick_call_p50_us, kick.kick_call_p99_us],
    row('standalone SET_VALUE', s.saSet),
    row('standalone GET_VALUE', s.saGet),
    row('standalone op (both)', s.saOp),
    row('remote SET_VALUE (gRPC + Redis)', s.raSet),
    row('remote GET_VALUE (gRPC + Redis)', s.raGet),
    row('remote op (both)', s.raOp),
  ]));
  console.log(`\nstandalone op median / kick->call median = ${r.standalone_over_kick_call} (target <= ${TARGET_RATIO}: ${r.target_met ? 'met' : 'MISSED'})`);
  mkdirSync(dirname(RESULT_FILE), { recursive: true });
  writeFileSync(RESULT_FILE, `${JSON.stringify({ ...r, iterations: n, machine: m, date: new Date().toISOString() }, null, 2)}\n`);
  console.log(`\nwrote ${RESULT_FILE}`);
}

export const suite: BenchSuite = {
  description: 'guest op round trip through the agent (standalone and remote on Redis) beside the kick->call floor',
  run: async () => { await runAgentBench(); },
};

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href;
if (isMain) {
  const argv = process.argv.slice(2);
  if (argv[0] === '--service') await redisServiceChild(argv[1] ?? '', argv[2] ?? 'bench');
  else if (argv[0] === '--agent') await agentChild(argv[1] ?? '', argv[2] ?? 'standalone');
  else {
    const at = argv.indexOf('--iterations');
    await runAgentBench(at >= 0 ? { iterations: Number(argv[at + 1]) } : {});
  }
}
