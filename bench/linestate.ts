/**
 * Line-state benchmark: the fabric's per-operation cost beside its floors, in one run on
 * loopback with a spawned redis-server.
 *
 *  - gRPC floor: unary round trip of a minimal echo service (grpc-js, 24-byte payload),
 *    server in a child process, client here.
 *  - Redis floor: EVALSHA of a script doing HSET + PUBLISH (what one state change costs
 *    Redis at least), from here.
 *  - gRPC stream floor: round trip of one message on a bidi stream of the same server
 *    (the transport OpStream uses).
 *  - Fabric: SET_VALUE through the line-state service (child process, Redis store) the
 *    way agents send it, on OpStream (OpStreamClient), and as a unary LineOp call (the
 *    CLI's path): sequential latency, and ops/s with 64 operations in flight on 64
 *    distinct lines.
 *
 * Breakdown rows: the same op on the Redis store without gRPC, through the service on
 * the memory store (no Redis), and the chained floors (a gRPC echo handler, unary or on
 * a stream, that does the EVALSHA before answering: the fabric's process layout with no
 * fabric code).
 *
 * Target (issue): set-value p50 <= 1.5 x (gRPC unary p50 + Redis p50). The ratio to the
 * stream floor (stream round trip + Redis) is printed beside it. Writes
 * bench/results/linestate.json.
 *
 *   npm run bench -- linestate        (or: npx tsx bench/linestate.ts [--iterations N])
 */
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';
import { LineOpType } from '../services/common/src/gen/gpiofabric/v1/linestate.ts';
import { createLineStateClient } from '../services/linestate/src/client.ts';
import { OpStreamClient } from '../services/linestate/src/op-stream.ts';
import { startRedis } from '../test/support/redis.ts';
import { exitWithParent, startChild, redisServiceChild } from './lib/child.ts';
import { HSET_PUBLISH, floorChild, grpcFloor } from './lib/floors.ts';
import { machine, machineText, useLocalRedis } from './lib/machine.ts';
import { sampleSequential, summarize, table, throughput, type Summary } from './lib/stats.ts';
import type { BenchSuite } from './suites.ts';

const here = dirname(fileURLToPath(import.meta.url));
const self = fileURLToPath(import.meta.url);
const RESULT_FILE = join(here, 'results', 'linestate.json');
const IN_FLIGHT = 64;
const TARGET_RATIO = 1.5;

/**
 * Child: the chained floors — grpc-js echo handlers (unary, and on a bidi stream) that do
 * the Redis floor's EVALSHA before answering (ioredis without auto-pipelining, as the
 * Redis store). This is the fabric's process layout (client -> service -> Redis ->
 * service -> client) with no fabric code in it.
 */
async function chainChild(url: string): Promise<void> {
  const r = new Redis(url, { enableAutoPipelining: false });
  const sha = (await r.script('LOAD', HSET_PUBLISH)) as string;
  await floorChild({
    echo: (call, cb) => {
      r.evalsha(sha, 2, 'bench:chain', 'bench:chain-events', '1').then(() => cb(null, call.request), (e: Error) => cb(e));
    },
    pipe: (call) => {
      call.on('data', (b: Buffer) => {
        r.evalsha(sha, 2, 'bench:chain', 'bench:chain-events', '1').then(() => call.write(b), () => call.end());
      });
      call.on('end', () => call.end());
    },
  }, () => r.disconnect());
}


/** Child: the line-state service on the memory store (the breakdown's no-Redis path). */
async function memoryServiceChild(): Promise<void> {
  const { createMemoryStore } = await import('../services/linestate/src/store/memory-store.ts');
  const { startLineStateServer } = await import('../services/linestate/src/server.ts');
  const store = createMemoryStore();
  const server = await startLineStateServer({ store, listen: '127.0.0.1:0', log: (m) => console.error(m) });
  exitWithParent(async () => {
    await server.close();
    await store.close();
  });
  console.log(`READY ${server.address}`);
}

export interface LineStateBenchResult {
  grpc_rtt_p50_us: number;
  grpc_rtt_p99_us: number;
  grpc_rtt_min_us: number;
  grpc_stream_rtt_p50_us: number;
  grpc_stream_rtt_p99_us: number;
  redis_rtt_p50_us: number;
  redis_rtt_p99_us: number;
  redis_rtt_min_us: number;
  set_value_p50_us: number;
  set_value_p99_us: number;
  set_value_min_us: number;
  set_value_unary_p50_us: number;
  set_value_unary_p99_us: number;
  ops_per_s: number;
  unary_ops_per_s: number;
  grpc_echo_ops_per_s: number;
  floor_p50_us: number;
  ratio: number;
  stream_floor_p50_us: number;
  ratio_to_stream_floor: number;
  unary_ratio: number;
  target_ratio: number;
  target_met: boolean;
}

export async function runLineStateBench(opts: { iterations?: number; warmup?: number } = {}): Promise<LineStateBenchResult> {
  const n = opts.iterations ?? 5000;
  const warmup = opts.warmup ?? 1000;
  const total = Math.max(n * 4, 20_000);
  useLocalRedis();
  const redis = await startRedis();
  const cleanup: (() => Promise<void>)[] = [() => redis.stop()];
  try {
    // --- set up every path first, then measure them in interleaved blocks so that load
    // from other processes on the machine spreads evenly over the paths.
    const echo = await startChild(self, ['--echo']);
    cleanup.unshift(() => echo.stop());
    const ef = grpcFloor(echo.ready);
    cleanup.unshift(async () => ef.close());

    const r = new Redis(redis.url);
    cleanup.unshift(async () => r.disconnect());
    const sha = (await r.script('LOAD', HSET_PUBLISH)) as string;
    const evalCall = (i: number) => r.evalsha(sha, 2, 'bench:line', 'bench:events', String(i & 1));

    const svc = await startChild(self, ['--service', redis.url, `bench-${process.pid}`]);
    cleanup.unshift(() => svc.stop());
    const c = createLineStateClient(svc.ready);
    cleanup.unshift(async () => c.close());
    const tok = await prepareChip(c);
    const setValueUnary = (offset: number, value: number) => c.lineOp({ chip: 'bench', leaseToken: tok, op: LineOpType.LINE_OP_TYPE_SET_VALUE, offset, value });
    const ops = new OpStreamClient({ client: c, chip: 'bench' });
    cleanup.unshift(async () => ops.close());
    const token = BigInt(tok);
    const setValue = (offset: number, value: number) => ops.call(token, LineOpType.LINE_OP_TYPE_SET_VALUE, offset, value);

    // breakdown: the same op without gRPC (Redis store in this process), and without Redis (service on the memory store)
    const { createRedisStore } = await import('../services/linestate/src/store/redis-store.ts');
    const local = await createRedisStore({ url: redis.url, fabric: `bench-local-${process.pid}` });
    cleanup.unshift(() => local.close());
    const localReg = await local.registerChip({ chip: 'bench', ngpio: IN_FLIGHT, names: [], owner: 'bench', leaseTtlMs: 600_000 });
    await local.lineOp({ chip: 'bench', leaseToken: localReg.leaseToken, op: 3, offset: 0, value: 1 });
    const storeCall = (i: number) => local.lineOp({ chip: 'bench', leaseToken: localReg.leaseToken, op: 5, offset: 0, value: i & 1 });
    const mem = await startChild(self, ['--service-memory']);
    cleanup.unshift(() => mem.stop());
    const mc = createLineStateClient(mem.ready);
    cleanup.unshift(async () => mc.close());
    const mtok = await prepareChip(mc);
    const memCall = (i: number) => mc.lineOp({ chip: 'bench', leaseToken: mtok, op: LineOpType.LINE_OP_TYPE_SET_VALUE, offset: 0, value: i & 1 });

    const chain = await startChild(self, ['--chain', redis.url]);
    cleanup.unshift(() => chain.stop());
    const cf = grpcFloor(chain.ready);
    cleanup.unshift(async () => cf.close());

    const paths: [string, (i: number) => Promise<unknown>][] = [
      ['grpc', () => ef.echo()], ['stream', () => ef.streamRoundTrip()], ['redis', evalCall], ['set', (i) => setValue(0, i & 1)], ['unary', (i) => setValueUnary(1, i & 1)],
      ['store', storeCall], ['mem', memCall], ['chain', () => cf.echo()], ['chainStream', () => cf.streamRoundTrip()],
    ];
    const samples = new Map<string, bigint[]>(paths.map(([k]) => [k, []]));
    for (const [, fn] of paths) for (let i = 0; i < warmup; i++) await fn(i);
    const blocks = 10;
    for (let b = 0; b < blocks; b++) {
      for (const [k, fn] of paths) await sampleSequential(fn, Math.ceil(n / blocks), samples.get(k));
    }
    const grpc = summarize(samples.get('grpc') ?? []);
    const stream = summarize(samples.get('stream') ?? []);
    const red = summarize(samples.get('redis') ?? []);
    const sv = summarize(samples.get('set') ?? []);
    const svUnary = summarize(samples.get('unary') ?? []);
    const chainedStream = summarize(samples.get('chainStream') ?? []);
    const storeOnly = summarize(samples.get('store') ?? []);
    const memOnly = summarize(samples.get('mem') ?? []);
    const chained = summarize(samples.get('chain') ?? []);
    const grpcOps = await throughput(() => ef.echo(), IN_FLIGHT, total);
    const unaryOps = await throughput((w, i) => setValueUnary(w, i & 1), IN_FLIGHT, total);
    const opsPerS = await throughput((w, i) => setValue(w, i & 1), IN_FLIGHT, total * 4);

    const r2 = (x: number): number => Math.round(x * 100) / 100;
    const floor = Math.round((grpc.p50_us + red.p50_us) * 10) / 10;
    const streamFloor = Math.round((stream.p50_us + red.p50_us) * 10) / 10;
    const ratio = r2(sv.p50_us / floor);
    const result: LineStateBenchResult = {
      grpc_rtt_p50_us: grpc.p50_us, grpc_rtt_p99_us: grpc.p99_us, grpc_rtt_min_us: grpc.min_us,
      grpc_stream_rtt_p50_us: stream.p50_us, grpc_stream_rtt_p99_us: stream.p99_us,
      redis_rtt_p50_us: red.p50_us, redis_rtt_p99_us: red.p99_us, redis_rtt_min_us: red.min_us,
      set_value_p50_us: sv.p50_us, set_value_p99_us: sv.p99_us, set_value_min_us: sv.min_us,
      set_value_unary_p50_us: svUnary.p50_us, set_value_unary_p99_us: svUnary.p99_us,
      ops_per_s: opsPerS, unary_ops_per_s: unaryOps, grpc_echo_ops_per_s: grpcOps,
      floor_p50_us: floor, ratio, stream_floor_p50_us: streamFloor, ratio_to_stream_floor: r2(sv.p50_us / streamFloor),
      unary_ratio: r2(svUnary.p50_us / floor), target_ratio: TARGET_RATIO, target_met: ratio <= TARGET_RATIO,
    };
    report({ grpc, stream, red, sv, svUnary }, result, n, { storeOnly, memOnly, chained, chainedStream });
    return result;
  } finally {
    for (const f of cleanup) await f().catch(() => {});
  }
}

/** Register the bench chip on a service and make its lines outputs; returns the lease token. */
async function prepareChip(c: ReturnType<typeof createLineStateClient>): Promise<string> {
  const reg = await c.registerChip({ chip: 'bench', ngpio: IN_FLIGHT, names: [], owner: 'bench', leaseTtlMs: 600_000 });
  for (let off = 0; off < IN_FLIGHT; off++) await c.lineOp({ chip: 'bench', leaseToken: reg.leaseToken, op: LineOpType.LINE_OP_TYPE_SET_DIRECTION, offset: off, value: 1 });
  return reg.leaseToken;
}

interface Paths { grpc: Summary; stream: Summary; red: Summary; sv: Summary; svUnary: Summary }

function report(p: Paths, r: LineStateBenchResult, n: number, parts: { storeOnly: Summary; memOnly: Summary; chained: Summary; chainedStream: Summary }): void {
  const m = machine();
  const row = (name: string, s: Summary) => [name, s.min_us, s.p50_us, s.p99_us];
  console.log(`machine: ${machineText(m)}\nsequential round trips, ${n} each after warm-up, interleaved (µs):\n`);
  console.log(table(['path', 'min', 'median', 'p99'], [
    row('gRPC unary echo (floor)', p.grpc),
    row('gRPC bidi stream echo, one message (floor)', p.stream),
    row('Redis EVALSHA HSET+PUBLISH (floor)', p.red),
    ['floor sum: unary + EVALSHA (medians)', '', r.floor_p50_us, ''],
    ['floor sum: stream + EVALSHA (medians)', '', r.stream_floor_p50_us, ''],
    row('SET_VALUE via service + Redis, OpStream', p.sv),
    row('SET_VALUE via service + Redis, unary LineOp', p.svUnary),
    ['breakdown:', '', '', ''],
    row('  store.lineOp, Redis store, no gRPC', parts.storeOnly),
    row('  LineOp via service, memory store', parts.memOnly),
    row('  chained floor: unary echo doing the EVALSHA', parts.chained),
    row('  chained floor: stream echo doing the EVALSHA', parts.chainedStream),
  ]));
  const r2 = (x: number): number => Math.round(x * 100) / 100;
  const chainRatio = r2(p.sv.p50_us / parts.chainedStream.p50_us);
  console.log(`\nset-value (OpStream) median / (unary + EVALSHA) = ${r.ratio} (target <= ${TARGET_RATIO}: ${r.target_met ? 'met' : 'MISSED'}); / (stream + EVALSHA) = ${r.ratio_to_stream_floor}; / chained stream floor = ${chainRatio}`);
  console.log(`set-value (unary LineOp) median / (unary + EVALSHA) = ${r.unary_ratio}; / chained unary floor = ${r2(p.svUnary.p50_us / parts.chained.p50_us)}`);
  console.log(`throughput, ${IN_FLIGHT} in flight: SET_VALUE on OpStream ${r.ops_per_s} ops/s; unary LineOp ${r.unary_ops_per_s} ops/s; gRPC unary echo ${r.grpc_echo_ops_per_s} calls/s`);
  mkdirSync(dirname(RESULT_FILE), { recursive: true });
  const breakdown = {
    store_lineop_p50_us: parts.storeOnly.p50_us, store_lineop_p99_us: parts.storeOnly.p99_us,
    service_memory_p50_us: parts.memOnly.p50_us, service_memory_p99_us: parts.memOnly.p99_us,
    chain_floor_p50_us: parts.chained.p50_us, chain_floor_p99_us: parts.chained.p99_us,
    chain_stream_floor_p50_us: parts.chainedStream.p50_us, chain_stream_floor_p99_us: parts.chainedStream.p99_us, ratio_to_chain_stream_floor: chainRatio,
  };
  writeFileSync(RESULT_FILE, `${JSON.stringify({ ...r, breakdown, iterations: n, in_flight: IN_FLIGHT, machine: m, date: new Date().toISOString() }, null, 2)}\n`);
  console.log(`\nwrote ${RESULT_FILE}`);
}

export const suite: BenchSuite = {
  description: 'LineOp round trip through the line-state service on Redis, beside the raw gRPC and Redis floors',
  run: async () => { await runLineStateBench(); },
};

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href;
if (isMain) {
  const argv = process.argv.slice(2);
  if (argv[0] === '--echo') await floorChild();
  else if (argv[0] === '--service') await redisServiceChild(argv[1] ?? '', argv[2] ?? 'bench');
  else if (argv[0] === '--service-memory') await memoryServiceChild();
  else if (argv[0] === '--chain') await chainChild(argv[1] ?? '');
  else {
    const at = argv.indexOf('--iterations');
    await runLineStateBench(at >= 0 ? { iterations: Number(argv[at + 1]) } : {});
  }
}
