/**
 * Performance suite: the fabric's figures beside the floors they stand on, all measured in
 * one run on loopback with a spawned redis-server. Processes: this one plays QEMU + guest
 * (the frontend driver) and the load generator; every line-state service replica, every
 * agent, the gRPC floor server and the kick->call backend is its own child process.
 *
 *  1. Guest op round trip: frontend -> agent A (remote backend) -> service 1 -> Redis and
 *     back, SET_VALUE/GET_VALUE alternating on an unwired line; beside the floor sum
 *     kick->call + raw gRPC unary echo + Redis EVALSHA (HSET + PUBLISH) (the issue's floor
 *     sum; target p50 <= 1.5x), and beside the floor of the path the agent really takes:
 *     kick->call + one message's round trip on a bidi stream + EVALSHA.
 *  2. Cross-VM interrupt: A's line 0 (output) is wired to B's line 0 (input, EDGE_BOTH,
 *     eventq buffer queued) with B on A's replica, and A's line 1 to C's line 1 with C on
 *     replica 2 (two serve processes on one Redis). Time from SET_VALUE on A's requestq
 *     until the eventq completion on B (or C). Floor sum: kick->call + gRPC unary + EVALSHA
 *     + PUBLISH->subscriber wake-up + gRPC stream delivery + kick->call. Target p50 <= 2x,
 *     p99 <= 2 ms. The path's own floor (same replica: no pub/sub, the service hands the
 *     event to its own watchers) is printed beside it.
 *  3. Throughput per replica with 64 line ops in flight (8 RemoteBackends x 8 lines, one
 *     gRPC channel and one OpStream each) beside the raw unary gRPC ceiling (echo, 64 in
 *     flight over 8 channels); plus the ceilings of the batched design's parts: bidi-stream
 *     messages/s and pipelined EVALSHA/s, and the lineop script itself from here (no gRPC);
 *     the same load without watch streams, and from 64 RemoteBackends of one line each.
 *  4. Redis memory per line (1,000 chips x 64 lines on its own redis-server; the scale
 *     suite does 5,000).
 *  5. CPU per 1,000 ops/s of the service and the agent (utime+stime from /proc).
 *
 * Latency paths are sampled in interleaved blocks so machine load spreads over them, after
 * a warm-up that brings V8's optimization of every process to steady state (WARMUP); the
 * first interrupts after start are reported as the cold row.
 * Writes bench/results/performance.json and the summary block of docs/performance.md.
 *
 *   npm run bench -- performance     (or npx tsx bench/performance.ts [--iterations N] [--profile DIR])
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve, basename } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';
import { RemoteBackend } from '../services/agent/src/backend/remote-backend.ts';
import { createLineStateClient, type LineStateClient } from '../services/linestate/src/client.ts';
import { Frontend, Gpio } from '../test/support/frontend.ts';
import { startRedis } from '../test/support/redis.ts';
import { exitWithParent, redisServiceChild } from './lib/child.ts';
import { mdTable, replaceBlock } from './lib/doc.ts';
import { floorChild, grpcFloor, kickCallFloor, redisFloor } from './lib/floors.ts';
import { beginSuite, cpuGaps, machine, machineText, type CpuGaps } from './lib/machine.ts';
import { cpuMeter, runCleanup, startProc, type BenchProc } from './lib/proc.ts';
import { measureRedisMemory } from './lib/redis-memory.ts';
import { summarize, table, type Summary } from './lib/stats.ts';
import type { BenchSuite } from './suites.ts';

const here = dirname(fileURLToPath(import.meta.url));
const self = fileURLToPath(import.meta.url);
const RESULT_FILE = join(here, 'results', 'performance.json');
const DOC_FILE = join(here, '..', 'docs', 'performance.md');
const IN_FLIGHT = 64;
/**
 * Unmeasured runs of each path before sampling. The fabric's processes run JavaScript that
 * V8 optimizes as it runs: in one measurement the interrupt path's median went from
 * 1.5 ms over its first 2,500 runs to 0.63 ms over the next 2,500 and 0.43-0.45 ms from
 * 5,000 on. The figures are of the steady state; the first COLD_SAMPLES interrupts are
 * reported beside them.
 */
const WARMUP = { fabric: 6000, floor: 2000 } as const;
const FABRIC_PATHS: readonly string[] = ['xvm-same', 'xvm-cross', 'op'];
const COLD_SAMPLES = 1000;
/**
 * Unmeasured runs at the start of each block of a path: at least REWARM runs and
 * REWARM_MS. The blocks interleave the paths so that the machine's drift spreads over all
 * of them, but a path's processes sit idle while the other paths run, and on this VM
 * interrupts after 300-700 ms without any were measured 1.5-2.5 x slower than a steady
 * stream for the next 300-500 ms (the first one about 5 ms), also when another process
 * kept a vCPU busy meanwhile; 150 runs (about 0.15 s) of re-warm still left the block's
 * p99 at 5 ms, 400 ms brought it to 2.3-2.5 ms. That is the "after idle" row, not the
 * steady state the targets are about. Every path but the idle rows gets the same.
 */
const REWARM = 150;
const REWARM_MS = 400;
/** Interleaved blocks of the latency paths. */
const BLOCKS = 10;
/** The "after idle" interrupt row: the same-replica interrupt after this long without any. */
const XVM_IDLE_MS = 100;
const XVM_IDLE_SAMPLES = 100;
const TARGET = { op_ratio: 1.5, xvm_ratio: 2, xvm_p99_us: 2000, ops_per_s: 40_000, unary_multiple: 3, bytes_per_line: 256 } as const;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ children

async function agentChild(socketPath: string, chip: string, server: string, ngpio: string): Promise<void> {
  const { startAgent } = await import('../services/agent/src/agent.ts');
  const { silentLogger } = await import('../services/agent/src/device/gpio-device.ts');
  const agent = await startAgent({ socketPath, chip, ngpio: Number(ngpio), backend: { kind: 'remote', server, leaseTtlMs: 600_000 }, log: silentLogger });
  exitWithParent(() => agent.close());
  console.log(`READY ${socketPath}`);
}


// ------------------------------------------------------------------ result

export interface PerformanceResult {
  op_p50_us: number;
  op_p99_us: number;
  op_floor_us: number;
  op_ratio: number;
  op_target_met: boolean;
  xvm_irq_p50_us: number;
  xvm_irq_p99_us: number;
  xvm_irq_floor_us: number;
  xvm_irq_ratio: number;
  xvm_target_met: boolean;
  xvm_same_replica: Summary;
  xvm_cross_replica: Summary;
  ops_per_s: number;
  unary_ceiling_ops_per_s: number;
  ops_target_met: boolean;
  redis_bytes_per_line: number;
  [k: string]: unknown;
}

export type Path = [name: string, fn: (i: number) => Promise<bigint | void>];

export interface SampleOptions {
  /** Interleaved blocks (each path takes n/blocks samples per block). */
  readonly blocks: number;
  /** Unmeasured runs of each path before the first block: one figure for all, or one per path (default 0). */
  readonly warmup: number | Readonly<Record<string, number>>;
  /** Unmeasured runs of a path at the start of each of its blocks: for all, or per path (default 0). */
  readonly rewarm?: number | Readonly<Record<string, number>>;
  /** ... and for at least this long (ms) when the path has any (default 0). */
  readonly rewarmMs?: number;
  /** Paths whose warm-up durations are returned too, as `<path>:warmup`. */
  readonly keepWarmup?: readonly string[];
}

/**
 * Sample every path in interleaved blocks; a path returning a bigint reports its own
 * duration (ns). The warm-up runs path after path in the given order; with `rewarm`, each
 * block of a path starts with that many unmeasured runs, so that a path's samples are not
 * those of processes that sat idle while the other paths ran.
 */
export async function sampleInterleaved(paths: readonly Path[], n: Record<string, number>, o: SampleOptions): Promise<Map<string, bigint[]>> {
  const out = new Map<string, bigint[]>(paths.map(([k]) => [k, []]));
  const timed = async (fn: Path[1], i: number): Promise<bigint> => {
    const t0 = process.hrtime.bigint();
    const r = await fn(i);
    return typeof r === 'bigint' ? r : process.hrtime.bigint() - t0;
  };
  for (const [k, fn] of paths) {
    const w = typeof o.warmup === 'number' ? Math.min(o.warmup, n[k] ?? o.warmup) : (o.warmup[k] ?? 0);
    const kept: bigint[] = [];
    for (let i = 0; i < w; i++) kept.push(await timed(fn, i));
    if (o.keepWarmup?.includes(k) === true) out.set(`${k}:warmup`, kept);
  }
  for (let b = 0; b < o.blocks; b++) {
    for (const [k, fn] of paths) {
      const s = out.get(k) ?? [];
      const per = Math.ceil((n[k] ?? 0) / o.blocks);
      const rw = typeof o.rewarm === 'number' ? o.rewarm : (o.rewarm?.[k] ?? 0);
      const until = performance.now() + (o.rewarmMs ?? 0);
      for (let i = 0; i < rw || (rw > 0 && performance.now() < until); i++) await fn(i);
      for (let i = 0; i < per; i++) s.push(await timed(fn, b * per + i));
    }
  }
  return out;
}

/** ops/s of `fn(worker, i)` with `inFlight` workers for `seconds`. */
async function rate(fn: (w: number, i: number) => Promise<unknown>, inFlight: number, seconds: number): Promise<number> {
  let n = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  await Promise.all(Array.from({ length: inFlight }, async (_, w) => {
    while (performance.now() < end) await fn(w, n++);
  }));
  return Math.round(n / ((performance.now() - t0) / 1000));
}

const gapsText = (g: readonly CpuGaps[]): string =>
  g.map((c, i) => `cpu ${i}: ${c.lost_pct} % of ${c.seconds} s lost in gaps over 50 µs, ${c.gaps_over_1ms_per_s} gaps over 1 ms per s, longest ${c.max_gap_us} µs`).join('; ');

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 === 1 ? (s[(s.length - 1) / 2] ?? NaN) : ((s[s.length / 2 - 1] ?? 0) + (s[s.length / 2] ?? 0)) / 2;
};
const r1 = (x: number): number => Math.round(x * 10) / 10;
const r2 = (x: number): number => Math.round(x * 100) / 100;

export async function runPerformanceBench(opts: { iterations?: number; xvmIterations?: number; profileDir?: string; warmup?: { fabric: number; floor: number } } = {}): Promise<PerformanceResult> {
  const n = opts.iterations ?? 4000;
  const nx = opts.xvmIterations ?? 2000;
  const { machine: m0, load: load0 } = beginSuite();
  const cleanup: (() => Promise<void> | void)[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'gf-bench-perf-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  const profFlags = opts.profileDir !== undefined ? ['--cpu-prof', '--cpu-prof-dir', opts.profileDir] : [];
  try {
    // the machine's own interruptions, before anything of the fabric runs (and again at the end)
    const gapsStart = await cpuGaps(3);
    console.log(`cpu gaps: ${gapsText(gapsStart)}`);

    // ---- 4. memory per line, on its own Redis before anything else runs
    const memRedis = await startRedis();
    let memory;
    try {
      memory = await measureRedisMemory(memRedis.url, { chips: 1000, lines: 64, eventsPerChip: 4, log: (m) => console.log(`memory: ${m}`) });
    } finally {
      await memRedis.stop();
    }

    // ---- processes
    const redis = await startRedis();
    cleanup.unshift(() => redis.stop());
    const fabric = `perf-${process.pid}`;
    const child = async (args: string[], flags: readonly string[] = []): Promise<BenchProc> => {
      const c = await startProc(self, args, flags);
      cleanup.unshift(() => c.stop());
      return c;
    };
    const svc1 = await child(['--service', redis.url, fabric], profFlags);
    const svc2 = await child(['--service', redis.url, fabric]);
    const floorSrv = await child(['--floor']);
    const agentA = await child(['--agent', join(dir, 'a.sock'), 'perf-a', svc1.ready, '16'], profFlags);
    const agentB = await child(['--agent', join(dir, 'b.sock'), 'perf-b', svc1.ready, '16']);
    const agentC = await child(['--agent', join(dir, 'c.sock'), 'perf-c', svc2.ready, '16']);
    const info = new Redis(redis.url);
    cleanup.unshift(() => info.disconnect());
    const redisPid = Number(/process_id:(\d+)/.exec(await info.info('server'))?.[1]);

    const gf = grpcFloor(floorSrv.ready, 8);
    cleanup.unshift(() => gf.close());
    const kc = await kickCallFloor();
    cleanup.unshift(() => kc.close());
    const rf = await redisFloor(redis.url);
    cleanup.unshift(() => rf.close());

    const fe = async (path: string): Promise<Frontend> => {
      const f = await Frontend.connect(path);
      cleanup.unshift(() => f.close());
      await f.start();
      return f;
    };
    const feA = await fe(agentA.ready);
    const feB = await fe(agentB.ready);
    const feC = await fe(agentC.ready);
    const admin = createLineStateClient(svc1.ready);
    cleanup.unshift(() => admin.close());
    const ln = (chip: string, offset: number) => ({ chip, line: { $case: 'offset' as const, value: offset } });
    await admin.wire({ name: 'perf-same', members: [ln('perf-a', 0), ln('perf-b', 0)], pull: 2, driveMode: 0 });
    await admin.wire({ name: 'perf-cross', members: [ln('perf-a', 1), ln('perf-c', 1)], pull: 2, driveMode: 0 });
    const ok = async (f: Frontend, type: number, gpio: number, value: number): Promise<number> => {
      const r = await f.request(type, gpio, value);
      if (r.status !== 0) throw new Error(`request ${type} on line ${gpio} answered ERR`);
      return r.value;
    };
    for (let k = 0; k < 16; k++) await ok(feA, Gpio.SET_DIRECTION, k, 1);
    await ok(feB, Gpio.SET_DIRECTION, 0, 2);
    await ok(feB, Gpio.SET_IRQ_TYPE, 0, 3);
    await ok(feC, Gpio.SET_DIRECTION, 1, 2);
    await ok(feC, Gpio.SET_IRQ_TYPE, 1, 3);

    // ---- 1 + 2: latency paths, interleaved
    const level = [0, 0];
    // Back to back like the floors: no pause between arming and the edge. (A pause lets the
    // VM's idle CPUs halt, and waking them costs every hop of the path: the 'after 1 ms
    // idle' row shows it on one EVALSHA.) Should the edge reach B before its agent took
    // the buffer, the device latches it and completes the buffer on arrival.
    const xvm = (line: 0 | 1, target: Frontend) => async (): Promise<bigint> => {
      const ev = target.armIrq(line);
      const v = (level[line] = 1 - (level[line] ?? 0));
      const t0 = process.hrtime.bigint();
      const set = feA.request(Gpio.SET_VALUE, line, v);
      const e = await ev;
      const t1 = process.hrtime.bigint();
      const s = await set;
      if (e.status !== 1 || s.status !== 0) throw new Error(`cross-VM interrupt on line ${line}: eventq status ${e.status}, set status ${s.status}`);
      return t1 - t0;
    };
    // The fabric's paths first: their first runs after the processes start are the cold
    // figures (V8 has not optimized the code yet); warm-up then runs each path long enough
    // to reach steady state before the interleaved samples (see WARMUP).
    const paths: Path[] = [
      ['xvm-same', xvm(0, feB)],
      ['xvm-cross', xvm(1, feC)],
      // the first interrupt after the fabric sat idle (a sporadic interrupt): not a target
      ['xvm-idle', async () => {
        await sleep(XVM_IDLE_MS);
        return xvm(0, feB)();
      }],
      ['op', (i) => ok(feA, i % 2 === 0 ? Gpio.SET_VALUE : Gpio.GET_VALUE, 2, (i >> 1) & 1).then(() => {})],
      ['kick', () => kc.once()],
      ['grpc', () => gf.echo()],
      ['redis', (i) => rf.evalsha(i).then(() => {})],
      ['redis-idle', async (i) => {
        await sleep(1);
        const t0 = process.hrtime.bigint();
        await rf.evalsha(i);
        return process.hrtime.bigint() - t0;
      }],
      ['pubsub', () => rf.pubsub()],
      ['stream', () => gf.streamDelivery()],
      ['streamRtt', () => gf.streamRoundTrip()],
    ];
    const counts: Record<string, number> = { kick: n, grpc: n, redis: n, 'redis-idle': Math.min(n, 1000), pubsub: n, stream: n, streamRtt: n, op: n, 'xvm-same': nx, 'xvm-cross': nx, 'xvm-idle': XVM_IDLE_SAMPLES };
    const warm = opts.warmup ?? WARMUP;
    const idlePaths = ['redis-idle', 'xvm-idle'];
    const warmup = Object.fromEntries(paths.map(([k]) => [k, idlePaths.includes(k) ? 0 : FABRIC_PATHS.includes(k) ? warm.fabric : warm.floor]));
    const rewarm = Object.fromEntries(paths.map(([k]) => [k, idlePaths.includes(k) ? 0 : REWARM]));
    console.log(`warming up (${warm.fabric} runs per fabric path, ${warm.floor} per floor), then sampling ${n} per floor/op path and ${nx} per interrupt path in 10 interleaved blocks...`);
    const samples = await sampleInterleaved(paths, counts, { blocks: BLOCKS, warmup, rewarm, rewarmMs: REWARM_MS, keepWarmup: ['xvm-same'] });
    const cold = summarize((samples.get('xvm-same:warmup') ?? []).slice(0, COLD_SAMPLES));
    const afterIdle = summarize(samples.get('xvm-idle') ?? []);
    const S = (k: string): Summary => summarize(samples.get(k) ?? []);
    const redIdle = S('redis-idle');
    const kick = S('kick'), grpc = S('grpc'), red = S('redis'), pubsub = S('pubsub'), stream = S('stream'), streamRtt = S('streamRtt'), op = S('op');
    const xs = S('xvm-same'), xc = S('xvm-cross');
    const xall = summarize([...(samples.get('xvm-same') ?? []), ...(samples.get('xvm-cross') ?? [])]);
    // p99 of each interleaved block: where the machine had a bad minute, the floors' tails
    // and the fabric's rise together
    const byBlock = (...keys: string[]): number[] => Array.from({ length: BLOCKS }, (_, b) => summarize(keys.flatMap((k) => {
      const v = samples.get(k) ?? [];
      const per = Math.ceil(v.length / BLOCKS);
      return v.slice(b * per, (b + 1) * per);
    })).p99_us);
    const p99ByBlock = { xvm: byBlock('xvm-same', 'xvm-cross'), grpc_unary: byBlock('grpc'), grpc_stream_round_trip: byBlock('streamRtt'), op: byBlock('op') };
    const opFloor = r1(kick.p50_us + grpc.p50_us + red.p50_us);
    const xvmFloor = r1(2 * kick.p50_us + grpc.p50_us + red.p50_us + pubsub.p50_us + stream.p50_us);
    // the floors of the path the fabric takes: OpStream (a stream round trip, not a unary
    // call); same replica without the pub/sub hop, other replica with it
    const opPathFloor = r1(kick.p50_us + streamRtt.p50_us + red.p50_us);
    const xvmSamePathFloor = r1(2 * kick.p50_us + streamRtt.p50_us + red.p50_us + stream.p50_us);
    const xvmCrossPathFloor = r1(xvmSamePathFloor + pubsub.p50_us);

    // ---- 3 + 5: throughput and CPU
    const tpClients: LineStateClient[] = [];
    const backends: RemoteBackend[] = [];
    for (let b = 0; b < 8; b++) {
      const c = createLineStateClient(svc1.ready);
      tpClients.push(c);
      cleanup.unshift(() => c.close());
      const be = new RemoteBackend({ client: c, chip: `perf-tp-${b}`, ngpio: 8, owner: 'bench', leaseTtlMs: 600_000 });
      await be.start();
      cleanup.unshift(() => be.close());
      backends.push(be);
      for (let k = 0; k < 8; k++) await be.setDirection(k, 1);
    }
    const tpVals = new Uint8Array(IN_FLIGHT);
    const fabricOp = (w: number): Promise<void> => {
      const be = backends[w % 8] as RemoteBackend;
      const v = (tpVals[w] = 1 - (tpVals[w] ?? 0)) as 0 | 1;
      return be.setValue(w >> 3, v);
    };
    const { createRedisStore } = await import('../services/linestate/src/store/redis-store.ts');
    const local = await createRedisStore({ url: redis.url, fabric });
    cleanup.unshift(() => local.close());
    const localReg = await local.registerChip({ chip: 'perf-local', ngpio: IN_FLIGHT, names: [], owner: 'bench', leaseTtlMs: 600_000 });
    for (let k = 0; k < IN_FLIGHT; k++) await local.lineOp({ chip: 'perf-local', leaseToken: localReg.leaseToken, op: 3, offset: k, value: 1 });
    const storeOp = (w: number, i: number): Promise<number> => local.lineOp({ chip: 'perf-local', leaseToken: localReg.leaseToken, op: 5, offset: w, value: (i >> 6) & 1 });

    const SECONDS = 3;
    const fabricRates: number[] = [], echoRates: number[] = [];
    const svcCpu: number[] = [], redisCpu: number[] = [];
    console.log(`throughput: 3 rounds of ${SECONDS} s each, fabric and echo alternating...`);
    await rate(fabricOp, IN_FLIGHT, 0.5);
    await rate(() => gf.echo(), IN_FLIGHT, 0.5);
    for (let round = 0; round < 3; round++) {
      const meter = cpuMeter({ svc: svc1.pid, redis: redisPid });
      const t0 = performance.now();
      const ops = await rate(fabricOp, IN_FLIGHT, SECONDS);
      const dt = (performance.now() - t0) / 1000;
      const cpu = meter.read();
      fabricRates.push(ops);
      // % of one core per 1,000 ops/s
      svcCpu.push(((cpu['svc'] ?? 0) / dt) * 100 / (ops / 1000));
      redisCpu.push(((cpu['redis'] ?? 0) / dt) * 100 / (ops / 1000));
      echoRates.push(await rate(() => gf.echo(), IN_FLIGHT, SECONDS));
    }
    const streamMsgs = await gf.streamThroughput(IN_FLIGHT, SECONDS);
    const pipelined = await rf.pipelinedEvalsha(IN_FLIGHT, SECONDS);
    const storeRate = await rate(storeOp, IN_FLIGHT, SECONDS);
    // the same load without watch streams (OpStreamClients instead of RemoteBackends): what
    // delivering each operation's event to its agent costs
    const { OpStreamClient } = await import('../services/linestate/src/op-stream.ts');
    const bare: { ops: InstanceType<typeof OpStreamClient>; token: bigint }[] = [];
    for (let b = 0; b < 8; b++) {
      const c = tpClients[b] as LineStateClient;
      const reg = await c.registerChip({ chip: `perf-bare-${b}`, ngpio: 8, names: [], owner: 'bench', leaseTtlMs: 600_000 });
      const ops = new OpStreamClient({ client: c, chip: `perf-bare-${b}` });
      cleanup.unshift(() => ops.close());
      const token = BigInt(reg.leaseToken);
      for (let k = 0; k < 8; k++) await ops.call(token, 3, k, 1);
      bare.push({ ops, token });
    }
    const bareOp = (w: number): Promise<number> => {
      const b = bare[w % 8] as (typeof bare)[number];
      const v = (tpVals[w] = 1 - (tpVals[w] ?? 0));
      return b.ops.call(b.token, 5, w >> 3, v);
    };
    await rate(bareOp, IN_FLIGHT, 0.5);
    const bareRate = await rate(bareOp, IN_FLIGHT, SECONDS);
    // the same 64 in flight from 64 agents with one line each (a channel, an OpStream and a
    // watch stream each): one operation per message, so per-message costs dominate and the
    // store's group commit (LINEOPS_IN_FLIGHT) joins their scripts
    const single: RemoteBackend[] = [];
    for (let b = 0; b < IN_FLIGHT; b++) {
      const c = createLineStateClient(svc1.ready);
      cleanup.unshift(() => c.close());
      const be = new RemoteBackend({ client: c, chip: `perf-one-${b}`, ngpio: 1, owner: 'bench', leaseTtlMs: 600_000 });
      await be.start();
      cleanup.unshift(() => be.close());
      await be.setDirection(0, 1);
      single.push(be);
    }
    const singleOp = (w: number): Promise<void> => (single[w] as RemoteBackend).setValue(0, (tpVals[w] = 1 - (tpVals[w] ?? 0)) as 0 | 1);
    await rate(singleOp, IN_FLIGHT, 0.5);
    const singleRate = await rate(singleOp, IN_FLIGHT, SECONDS);

    // agent CPU: a steady guest load through agent A, one request at a time (the test
    // driver loses used-buffer notifications with EVENT_IDX and several requests in
    // flight: it does not re-check used.idx after writing used_event; see docs/performance.md)
    console.log('agent CPU: steady guest load through agent A...');
    const agentLoad = async (seconds: number): Promise<{ ops: number; cpu: Record<string, number>; dt: number }> => {
      const meter = cpuMeter({ agent: agentA.pid, svc: svc1.pid });
      let ops = 0;
      const t0 = performance.now();
      const end = t0 + seconds * 1000;
      for (let i = 0; performance.now() < end; i++) {
        await ok(feA, i % 2 === 0 ? Gpio.SET_VALUE : Gpio.GET_VALUE, 8 + (i & 7), (i >> 4) & 1);
        ops++;
      }
      const dt = (performance.now() - t0) / 1000;
      return { ops: Math.round(ops / dt), cpu: meter.read(), dt };
    };
    await agentLoad(0.5);
    const al = await agentLoad(4);
    const agentCpuPer1k = ((al.cpu['agent'] ?? 0) / al.dt) * 100 / (al.ops / 1000);
    const agentSvcCpuPer1k = ((al.cpu['svc'] ?? 0) / al.dt) * 100 / (al.ops / 1000);

    const opsPerS = median(fabricRates), unaryCeil = median(echoRates);
    await runCleanup(cleanup);
    const gapsEnd = await cpuGaps(3);
    console.log(`cpu gaps: ${gapsText(gapsEnd)}`);
    const load1 = loadavg();
    const result: PerformanceResult = {
      op_p50_us: op.p50_us, op_p99_us: op.p99_us, op_min_us: op.min_us, op_floor_us: opFloor, op_ratio: r2(op.p50_us / opFloor),
      op_path_floor_us: opPathFloor, op_ratio_to_path_floor: r2(op.p50_us / opPathFloor),
      xvm_same_path_floor_us: xvmSamePathFloor, xvm_same_ratio_to_path_floor: r2(xs.p50_us / xvmSamePathFloor),
      xvm_cross_path_floor_us: xvmCrossPathFloor, xvm_cross_ratio_to_path_floor: r2(xc.p50_us / xvmCrossPathFloor),
      op_target_met: op.p50_us <= TARGET.op_ratio * opFloor,
      xvm_irq_p50_us: xall.p50_us, xvm_irq_p99_us: xall.p99_us, xvm_irq_floor_us: xvmFloor, xvm_irq_ratio: r2(xall.p50_us / xvmFloor),
      xvm_target_met: xall.p50_us <= TARGET.xvm_ratio * xvmFloor && xall.p99_us <= TARGET.xvm_p99_us,
      xvm_irq_same_replica_p50_us: xs.p50_us, xvm_irq_same_replica_p99_us: xs.p99_us,
      xvm_irq_cross_replica_p50_us: xc.p50_us, xvm_irq_cross_replica_p99_us: xc.p99_us,
      xvm_same_replica: xs, xvm_cross_replica: xc,
      // the first interrupts after every process started (same replica), before V8 optimized
      // the code: not a target, printed beside the steady-state figures
      xvm_irq_cold_first_runs: cold, warmup_runs: warm, rewarm_runs_per_block: REWARM, rewarm_ms_per_block: REWARM_MS,
      // one same-replica interrupt after XVM_IDLE_MS without any, each: not a target
      xvm_irq_after_idle: afterIdle, xvm_idle_ms: XVM_IDLE_MS,
      // a spinning thread per core, 3 s at the start and at the end: the share of time and
      // the gaps over 1 ms in which its CPU was taken away (a floor under every p99 here)
      cpu_gaps: { start: gapsStart, end: gapsEnd },
      ops_per_s: opsPerS, unary_ceiling_ops_per_s: unaryCeil, ops_over_unary_ceiling: r2(opsPerS / unaryCeil),
      ops_target_met: opsPerS >= TARGET.ops_per_s && opsPerS >= TARGET.unary_multiple * unaryCeil,
      ops_per_s_rounds: fabricRates, unary_ceiling_rounds: echoRates,
      ops_per_s_without_watch_streams: bareRate,
      ops_per_s_64_agents_one_line_each: singleRate,
      grpc_stream_msgs_per_s: streamMsgs, redis_pipelined_evalsha_per_s: pipelined, store_lineop_no_grpc_ops_per_s: storeRate,
      redis_bytes_per_line: memory.bytes_per_line_configured,
      redis_memory: memory,
      // what one service replica could do with a whole core to itself, from its measured CPU
      // per operation (derived, not measured: here the load generator shares the 2 cores)
      service_ops_per_s_per_core_derived: Math.round((100 / median(svcCpu)) * 1000),
      cpu_pct_core_per_1k_ops: {
        service_at_64_in_flight: r1(median(svcCpu)), redis_at_64_in_flight: r1(median(redisCpu)),
        agent_guest_load: r1(agentCpuPer1k), service_guest_load: r1(agentSvcCpuPer1k), guest_load_ops_per_s: al.ops,
      },
      redis_evalsha_after_1ms_idle: redIdle,
      p99_us_by_block: p99ByBlock,
      floors: { kick_call: kick, grpc_unary: grpc, grpc_stream_round_trip: streamRtt, redis_evalsha: red, redis_pubsub_wakeup: pubsub, grpc_stream_delivery: stream },
      op, targets: TARGET, iterations: n, xvm_iterations: nx,
      machine: { ...m0, loadavg_start: load0.map(r2), loadavg_end: load1.map(r2) }, date: new Date().toISOString(),
    };
    report(result, { kick, grpc, streamRtt, red, redIdle, pubsub, stream, op, xs, xc, xall, cold, afterIdle });
    return result;
  } finally {
    await runCleanup(cleanup);
  }
}

function report(r: PerformanceResult, s: Record<'kick' | 'grpc' | 'streamRtt' | 'red' | 'redIdle' | 'pubsub' | 'stream' | 'op' | 'xs' | 'xc' | 'xall' | 'cold' | 'afterIdle', Summary>): void {
  const row = (name: string, x: Summary) => [name, x.min_us, x.p50_us, x.p99_us];
  const lat = [
    row('kick -> call (floor)', s.kick),
    row('gRPC unary echo (floor)', s.grpc),
    row('gRPC bidi stream echo, one message (floor)', s.streamRtt),
    row('Redis EVALSHA HSET+PUBLISH (floor)', s.red),
    row('  the same EVALSHA after 1 ms idle (not a floor: the VM waking up)', s.redIdle),
    row('Redis PUBLISH -> subscriber (floor)', s.pubsub),
    row('gRPC stream delivery, one way (floor)', s.stream),
    row('guest op via agent + service + Redis', s.op),
    ['  op floor sum (kick + unary + EVALSHA)', '', r.op_floor_us, ''],
    ['  op path floor (kick + stream round trip + EVALSHA)', '', r['op_path_floor_us'] as number, ''],
    row('cross-VM irq, same replica', s.xs),
    ['  same-replica path floor (2 kick + stream rt + EVALSHA + delivery)', '', r['xvm_same_path_floor_us'] as number, ''],
    row('cross-VM irq, two replicas', s.xc),
    ['  two-replica path floor (same + PUBLISH -> subscriber)', '', r['xvm_cross_path_floor_us'] as number, ''],
    row('cross-VM irq, both', s.xall),
    ['  irq floor sum (2 kick + unary + EVALSHA + pub/sub + delivery)', '', r.xvm_irq_floor_us, ''],
    row(`cross-VM irq, same replica, first ${s.cold.n} after start (cold: before warm-up; not a target)`, s.cold),
    row(`cross-VM irq, same replica, each after ${r['xvm_idle_ms'] as number} ms without any (not a target)`, s.afterIdle),
  ] as (string | number)[][];
  console.log('\nlatency (µs):\n');
  console.log(table(['path', 'min', 'median', 'p99'], lat));
  const blocks = r['p99_us_by_block'] as Record<string, number[]>;
  const blockRows = Object.entries(blocks).map(([k, v]) => [k === 'xvm' ? 'cross-VM irq (both)' : k.replace(/_/g, ' '), ...v.map((x) => Math.round(x))]);
  const blockHead = ['p99 per block (µs)', ...(blocks['xvm'] ?? []).map((_, i) => String(i + 1))];
  console.log(`\n${table(blockHead, blockRows)}`);
  const cpu = r['cpu_pct_core_per_1k_ops'] as Record<string, number>;
  const tp = [
    ['SET_VALUE on OpStream, 64 in flight, 8 RemoteBackends', r.ops_per_s],
    ['  the same with 8 OpStreamClients, no watch streams (events not delivered)', r['ops_per_s_without_watch_streams'] as number],
    ['  the same from 64 RemoteBackends with one line each (one operation per message)', r['ops_per_s_64_agents_one_line_each'] as number],
    ['gRPC unary echo, 64 in flight, 8 channels (ceiling)', r.unary_ceiling_ops_per_s],
    ['gRPC bidi stream echo, 64 messages in flight', r['grpc_stream_msgs_per_s'] as number],
    ['Redis EVALSHA pipelined by 64, one connection', r['redis_pipelined_evalsha_per_s'] as number],
    ['store.lineOp from this process, no gRPC, 64 in flight', r['store_lineop_no_grpc_ops_per_s'] as number],
  ];
  console.log('\nthroughput (median of 3 rounds for the first two; ops/s):\n');
  console.log(table(['path', 'ops/s'], tp));
  console.log(`\nCPU, % of one core per 1,000 ops/s: service ${cpu['service_at_64_in_flight']} and redis ${cpu['redis_at_64_in_flight']} (64 in flight); agent ${cpu['agent_guest_load']} and service ${cpu['service_guest_load']} (guest load, ${cpu['guest_load_ops_per_s']} ops/s)`);
  console.log(`service with one whole core, derived from its CPU per op: ${r['service_ops_per_s_per_core_derived'] as number} ops/s`);
  const mem = r['redis_memory'] as { bytes_per_line_registered: number; bytes_per_line_configured: number; bytes_per_line_with_events: number };
  console.log(`Redis bytes per line: ${mem.bytes_per_line_registered} registered, ${mem.bytes_per_line_configured} configured, ${mem.bytes_per_line_with_events} with events`);
  const verdict = (b: boolean): string => (b ? 'met' : 'MISSED');
  const targets = [
    ['guest op p50 <= 1.5 x floor sum', `${r.op_p50_us} µs vs ${r.op_floor_us} µs = ${r.op_ratio}x (path floor ${r['op_path_floor_us'] as number} µs: ${r['op_ratio_to_path_floor'] as number}x)`, verdict(r.op_target_met)],
    ['cross-VM irq p50 <= 2 x floor sum, p99 <= 2 ms', `p50 ${r.xvm_irq_p50_us} µs vs ${r.xvm_irq_floor_us} µs = ${r.xvm_irq_ratio}x; p99 ${r.xvm_irq_p99_us} µs`, verdict(r.xvm_target_met)],
    ['ops/s per replica >= 40,000 and >= 3 x unary ceiling', `${r.ops_per_s} ops/s = ${r['ops_over_unary_ceiling'] as number} x ${r.unary_ceiling_ops_per_s}`, verdict(r.ops_target_met)],
    ['Redis bytes per line <= 256', `${mem.bytes_per_line_configured} (configured), ${mem.bytes_per_line_with_events} (with events)`, verdict(mem.bytes_per_line_with_events <= TARGET.bytes_per_line)],
  ];
  console.log('\ntargets:\n');
  console.log(table(['target', 'measured', ''], targets));
  const m = r.machine as ReturnType<typeof machine> & { loadavg_start: number[]; loadavg_end: number[] };
  console.log(`\nload average start ${m.loadavg_start.join(' ')}, end ${m.loadavg_end.join(' ')}`);
  const gaps = r['cpu_gaps'] as { start: CpuGaps[]; end: CpuGaps[] };
  const gapsMd = `A thread spinning on each core (the machine's interruptions, a floor under every p99 above) at the start: ${gapsText(gaps.start)}; at the end: ${gapsText(gaps.end)}.`;

  mkdirSync(dirname(RESULT_FILE), { recursive: true });
  writeFileSync(RESULT_FILE, `${JSON.stringify(r, null, 2)}\n`);
  console.log(`\nwrote ${RESULT_FILE}`);
  const md = [
    `Measured ${r.date as string} on ${machineText(m)}; load average ${m.loadavg_start.join(' ')} at start, ${m.loadavg_end.join(' ')} at end. Latencies in µs, ${r['iterations'] as number} samples per floor/op path and ${r['xvm_iterations'] as number} per interrupt path in 10 interleaved blocks, after ${(r['warmup_runs'] as { fabric: number }).fabric} unmeasured runs of each fabric path and ${(r['warmup_runs'] as { floor: number }).floor} of each floor, and unmeasured runs at the start of each block (at least ${r['rewarm_runs_per_block'] as number} and ${r['rewarm_ms_per_block'] as number} ms) (steady state; the cold row is the start of the warm-up, the idle row a sporadic interrupt).`,
    '',
    gapsMd,
    '',
    mdTable(blockHead, blockRows),
    '',
    mdTable(['path', 'min', 'median', 'p99'], lat.map((x) => x.map((c) => (c === '' ? '' : String(c).replace(/^ {2}/, '↳ '))))),
    '',
    mdTable(['throughput', 'ops/s'], tp.map(([k, v]) => [String(k).replace(/^ {2}/, '↳ '), v ?? ''])),
    '',
    mdTable(['CPU, % of one core per 1,000 ops/s', 'value'], [
      ['service, 64 in flight (RemoteBackends)', cpu['service_at_64_in_flight'] ?? ''],
      ['redis-server, 64 in flight', cpu['redis_at_64_in_flight'] ?? ''],
      [`agent, guest load (${cpu['guest_load_ops_per_s'] ?? ''} ops/s, sequential)`, cpu['agent_guest_load'] ?? ''],
      ['service, same guest load', cpu['service_guest_load'] ?? ''],
      ['→ service ops/s with one whole core (derived from its CPU per op at 64 in flight)', r['service_ops_per_s_per_core_derived'] as number],
    ]),
    '',
    mdTable(['Redis memory per line (1,000 chips x 64)', 'bytes'], [
      ['registered, lines at default', mem.bytes_per_line_registered], ['every line configured', mem.bytes_per_line_configured], ['+ 4 events per chip', mem.bytes_per_line_with_events],
    ]),
    '',
    mdTable(['target', 'measured', 'verdict'], targets),
  ].join('\n');
  replaceBlock(DOC_FILE, 'performance-summary', md);
  console.log(`updated ${DOC_FILE}`);
}

// ------------------------------------------------------------------ profiling

interface ProfileNode { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }
interface CpuProfile { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] }

/** Top frames by self time and time per code area of a .cpuprofile. */
export function summarizeProfile(file: string, top = 15): string {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((nd) => [nd.id, nd]));
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i] ?? 0, (self.get(p.samples[i] ?? 0) ?? 0) + (p.timeDeltas[i] ?? 0));
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const frames = new Map<string, number>(), areas = new Map<string, number>();
  for (const [id, t] of self) {
    const cf = byId.get(id)?.callFrame;
    if (cf === undefined) continue;
    const url = cf.url;
    const area = cf.functionName === '(idle)' ? 'idle' : cf.functionName === '(garbage collector)' ? 'GC' : cf.functionName === '(program)' ? 'native/program'
      : /@grpc\/grpc-js/.test(url) ? 'grpc-js' : /ioredis|redis-parser|denque/.test(url) ? 'ioredis' : /protobufjs|\/gen\//.test(url) ? 'protobuf codec'
      : /node_modules/.test(url) ? 'other packages' : url.startsWith('node:') || url === '' ? 'node core' : 'fabric code';
    areas.set(area, (areas.get(area) ?? 0) + t);
    const key = `${cf.functionName || '(anonymous)'} ${url === '' ? '' : `${basename(url)}:${cf.lineNumber + 1}`}`;
    frames.set(key, (frames.get(key) ?? 0) + t);
  }
  const pct = (t: number): string => `${((t / total) * 100).toFixed(1)}%`;
  const lines = [`${basename(file)}: ${(total / 1e6).toFixed(1)} s sampled`];
  lines.push('  by area: ' + [...areas].sort((a, b) => b[1] - a[1]).map(([k, t]) => `${k} ${pct(t)}`).join(', '));
  for (const [k, t] of [...frames].sort((a, b) => b[1] - a[1]).slice(0, top)) lines.push(`  ${pct(t).padStart(6)}  ${k}`);
  return lines.join('\n');
}

async function profileRun(dirArg: string): Promise<void> {
  const dir = resolve(dirArg);
  mkdirSync(dir, { recursive: true });
  for (const f of readdirSync(dir)) if (f.endsWith('.cpuprofile')) rmSync(join(dir, f));
  await runPerformanceBench({ iterations: 3000, xvmIterations: 500, profileDir: dir });
  await sleep(500);
  for (const f of readdirSync(dir).filter((x) => x.endsWith('.cpuprofile'))) console.log(`\n${summarizeProfile(join(dir, f))}`);
}

export const suite: BenchSuite = {
  description: 'guest op, cross-VM interrupt, throughput, memory and CPU of the fabric beside floors measured in the same run',
  run: async () => { await runPerformanceBench(); },
};

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href;
if (isMain) {
  const argv = process.argv.slice(2);
  if (argv[0] === '--service') await redisServiceChild(argv[1] ?? '', argv[2] ?? 'perf');
  else if (argv[0] === '--agent') await agentChild(argv[1] ?? '', argv[2] ?? 'perf', argv[3] ?? '', argv[4] ?? '16');
  else if (argv[0] === '--floor') await floorChild();
  else if (argv[0] === '--profile') await profileRun(argv[1] ?? join(tmpdir(), 'gf-prof'));
  else {
    const at = argv.indexOf('--iterations');
    await runPerformanceBench(at >= 0 ? { iterations: Number(argv[at + 1]), xvmIterations: Math.ceil(Number(argv[at + 1]) / 2) } : {});
  }
}
