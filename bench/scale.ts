/**
 * Scale suite: how the fabric behaves with many chips and many watchers, on loopback with
 * spawned redis-servers; the service and the gRPC floor server are child processes.
 *
 *  - Redis memory per line: 5,000 chips x 64 lines registered through the RedisStore API
 *    (registrations pipelined), then every line configured, then 4 events per chip (INFO
 *    memory used_memory delta / lines, on a redis-server holding nothing else).
 *  - Op latency as registered chips grow 10 -> 100 -> 1,000 -> 5,000: a line operation on
 *    the agents' path (one operation per message on an OpStream; each batch names its chip
 *    and lease) on random registered chips and lines, interleaved with the floors of that
 *    path at each step, a bidi stream message's round trip and a Redis EVALSHA (so machine
 *    load shows in the floors too). Plot: docs/scale-latency.png.
 *  - 1,000 concurrent WatchEvents streams (one per chip, 10 channels) on one service with
 *    5,000 chips registered: time until all are live, then event delivery latency (Redis
 *    TIME stamp of the event -> arrival here, and op issue -> arrival) for sequential
 *    events on random watched chips; and a fan-out: 1,000 more watchers of one chip.
 *
 * Writes bench/results/scale.json and the scale block of docs/performance.md.
 *
 *   npm run bench -- scale     (or npx tsx bench/scale.ts [--chips 5000] [--watchers 1000])
 *   npx tsx bench/scale.ts --watchers-only [--chips 5000] [--watchers 1000]   (only the watcher
 *     phase; merges its figures into bench/results/scale.json, leaves the doc block alone)
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { LineOpType } from '../services/common/src/gen/gpiofabric/v1/linestate.ts';
import { createLineStateClient, type LineStateClient, type WatchHandle } from '../services/linestate/src/client.ts';
import { createRedisStore } from '../services/linestate/src/store/redis-store.ts';
import type { LineStore } from '../services/linestate/src/store/store.ts';
import { startRedis } from '../test/support/redis.ts';
import { mdTable, replaceBlock } from './lib/doc.ts';
import { grpcFloor, redisFloor } from './lib/floors.ts';
import { beginSuite, machineText } from './lib/machine.ts';
import { lineChart } from './lib/png.ts';
import { runCleanup, startProc, type BenchProc } from './lib/proc.ts';
import { inParallel, measureRedisMemory } from './lib/redis-memory.ts';
import { summarize, table, type Summary } from './lib/stats.ts';
import { sampleInterleaved, type Path } from './performance.ts';
import type { BenchSuite } from './suites.ts';

const here = dirname(fileURLToPath(import.meta.url));
const PERF = join(here, 'performance.ts');
const RESULT_FILE = join(here, 'results', 'scale.json');
const DOC_FILE = join(here, '..', 'docs', 'performance.md');
const PLOT_FILE = join(here, '..', 'docs', 'scale-latency.png');
const LINES = 64;
/** Clients the watchers are spread over (grpc-js may put them on one connection). */
const WATCH_CHANNELS = 10;
const r2 = (x: number): number => Math.round(x * 100) / 100;
const nowNs = (): bigint => BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n;

export async function runScaleBench(o: { chips?: number; watchers?: number; samples?: number } = {}): Promise<Record<string, unknown>> {
  const CHIPS = o.chips ?? 5000;
  const WATCHERS = Math.min(o.watchers ?? 1000, CHIPS - 1); // chip WATCHERS is the fan-out chip
  const N = o.samples ?? 1500;
  const steps = [10, 100, 1000, 5000].filter((s) => s < CHIPS).concat([CHIPS]);
  const { machine: m0, load: load0 } = beginSuite();
  const cleanup: (() => Promise<void> | void)[] = [];
  try {
    // ---- memory
    const memRedis = await startRedis();
    let memory;
    try {
      memory = await measureRedisMemory(memRedis.url, { chips: CHIPS, lines: LINES, eventsPerChip: 4, log: (m) => console.log(`memory: ${m}`) });
    } finally {
      await memRedis.stop();
    }
    console.log(`memory: ${JSON.stringify(memory)}`);

    // ---- service on a second Redis
    const redis = await startRedis();
    cleanup.unshift(() => redis.stop());
    const fabric = `scale-${process.pid}`;
    const child = async (args: string[]): Promise<BenchProc> => {
      const c = await startProc(PERF, args);
      cleanup.unshift(() => c.stop());
      return c;
    };
    const svc = await child(['--service', redis.url, fabric]);
    const floorSrv = await child(['--floor']);
    const gf = grpcFloor(floorSrv.ready, 1);
    cleanup.unshift(() => gf.close());
    const rf = await redisFloor(redis.url);
    cleanup.unshift(() => rf.close());
    const store = await createRedisStore({ url: redis.url, fabric, commandTimeoutMs: 30_000 });
    cleanup.unshift(() => store.close());
    const client = createLineStateClient(svc.ready, { deadlineMs: 30_000 });
    cleanup.unshift(() => client.close());

    const id = (i: number): string => `s${String(i).padStart(5, '0')}`;
    const tokens: string[] = [];
    let registered = 0;
    // one OpStream for every chip: each batch carries its chip and lease token
    const answers = new Map<number, (code: number) => void>();
    let failure: Error | undefined;
    const opStream = client.opStream((b) => {
      for (const r of b.results) {
        answers.get(r.id)?.(r.code);
        answers.delete(r.id);
      }
    }, (e) => { failure = e; }, () => {});
    cleanup.unshift(() => opStream.cancel());
    let nextId = 1;
    const streamOp = (chip: string, leaseToken: string, op: LineOpType, offset: number, value: number): Promise<void> => new Promise<void>((res, rej) => {
      if (failure !== undefined) { rej(failure); return; }
      const id = nextId++;
      answers.set(id, (code) => (code === 0 ? res() : rej(new Error(`line operation on ${chip}:${offset} answered code ${code}`))));
      opStream.write({ chip, leaseToken, ops: [{ id, op, offset, value }] });
    });
    const steps_out: { chips: number; op: Summary; stream: Summary; redis: Summary; floor_p50_us: number }[] = [];
    for (const target of steps) {
      const from = registered;
      await inParallel(target - from, 256, async (k) => {
        const i = from + k;
        const r = await store.registerChip({ chip: id(i), ngpio: LINES, names: [], owner: 'bench-scale', leaseTtlMs: 600_000 });
        tokens[i] = r.leaseToken.toString();
        await store.lineOp({ chip: id(i), leaseToken: r.leaseToken, op: 3, offset: 0, value: 1 });
      });
      registered = target;
      const pick = (i: number): { chip: string; leaseToken: string; offset: number } => {
        const c = Math.floor(Math.random() * registered);
        return { chip: id(c), leaseToken: tokens[c] ?? '0', offset: 1 + (i % (LINES - 1)) };
      };
      const paths: Path[] = [
        ['op', async (i) => {
          const p = pick(i);
          await streamOp(p.chip, p.leaseToken, i % 2 === 0 ? LineOpType.LINE_OP_TYPE_SET_VALUE : LineOpType.LINE_OP_TYPE_GET_VALUE, p.offset, (i >> 1) & 1);
        }],
        ['stream', () => gf.streamRoundTrip()],
        ['redis', async (i) => { await rf.evalsha(i); }],
      ];
      // a longer warm-up before the first step: the service, the stream and this process start
      // cold (with 1,000 operations the 10-chip step still read about 1.5-3 x the later ones)
      const s = await sampleInterleaved(paths, { op: N, stream: N, redis: N }, { blocks: 5, warmup: steps_out.length === 0 ? 5000 : 100 });
      const op = summarize(s.get('op') ?? []), stream = summarize(s.get('stream') ?? []), red = summarize(s.get('redis') ?? []);
      steps_out.push({ chips: target, op, stream, redis: red, floor_p50_us: Math.round((stream.p50_us + red.p50_us) * 10) / 10 });
      console.log(`${target} chips: op p50 ${op.p50_us} p99 ${op.p99_us} µs; floor (stream round trip + EVALSHA) p50 ${Math.round((stream.p50_us + red.p50_us) * 10) / 10} µs`);
    }

    // ---- watchers: one per chip, then a fan-out on one chip
    const w = await watcherPhase({ address: svc.ready, store, id, tokens, watchers: WATCHERS, samples: N, cleanup });
    const { allLiveMs, pending, delivery, issueLat, lost, fanF, fanL } = w;

    const load1 = loadavg();
    const result = {
      redis_memory: memory,
      redis_bytes_per_line: memory.bytes_per_line_configured,
      redis_bytes_per_line_with_events: memory.bytes_per_line_with_events,
      op_latency_by_chips: steps_out.map((s) => ({ chips: s.chips, op_p50_us: s.op.p50_us, op_p99_us: s.op.p99_us, op_min_us: s.op.min_us, stream_rtt_p50_us: s.stream.p50_us, redis_p50_us: s.redis.p50_us, floor_p50_us: s.floor_p50_us })),
      ...watcherFields(w, WATCHERS),
      samples: N, machine: { ...m0, loadavg_start: load0.map(r2), loadavg_end: load1.map(r2) }, date: new Date().toISOString(),
    };
    // ---- report
    const rows = steps_out.map((s) => [s.chips, s.op.min_us, s.op.p50_us, s.op.p99_us, s.floor_p50_us, r2(s.op.p50_us / s.floor_p50_us)]);
    const head = ['registered chips', 'op min', 'op median', 'op p99', 'floor median (stream round trip + EVALSHA)', 'ratio'];
    console.log('\nop latency (one operation per OpStream message via the service, µs):\n');
    console.log(table(head, rows));
    const wrows = [
      [`event stamp -> arrival, ${WATCHERS} watchers`, delivery.min_us, delivery.p50_us, delivery.p99_us],
      [`op issue -> arrival, ${WATCHERS} watchers`, issueLat.min_us, issueLat.p50_us, issueLat.p99_us],
      ...(fanF !== undefined && fanL !== undefined ? [[`fan-out to ${WATCHERS}: first arrival`, fanF.min_us, fanF.p50_us, fanF.p99_us], [`fan-out to ${WATCHERS}: last arrival`, fanL.min_us, fanL.p50_us, fanL.p99_us]] : []),
    ];
    console.log('\nevent delivery (µs):\n');
    console.log(table(['path', 'min', 'median', 'p99'], wrows));
    console.log(`\nload average start ${load0.map(r2).join(' ')}, end ${load1.map(r2).join(' ')}`);
    mkdirSync(dirname(RESULT_FILE), { recursive: true });
    writeFileSync(RESULT_FILE, `${JSON.stringify(result, null, 2)}\n`);
    writeFileSync(PLOT_FILE, lineChart({
      title: `LINE OP (OPSTREAM) LATENCY VS REGISTERED CHIPS (${m0.cores} CORES, LOAD ${r2(load0[0] ?? 0)})`, xLabel: 'REGISTERED CHIPS (64 LINES EACH), LOG SCALE', yLabel: 'MICROSECONDS', logX: true,
      series: [
        { name: 'OP P50', color: [30, 90, 200], points: steps_out.map((s) => [s.chips, s.op.p50_us]) },
        { name: 'OP P99', color: [200, 50, 40], points: steps_out.map((s) => [s.chips, s.op.p99_us]) },
        { name: 'FLOOR P50', color: [110, 110, 110], dashed: true, points: steps_out.map((s) => [s.chips, s.floor_p50_us]) },
      ],
    }));
    console.log(`wrote ${RESULT_FILE} and ${PLOT_FILE}`);
    replaceBlock(DOC_FILE, 'scale-summary', [
      `Measured ${result.date} on ${machineText(m0)}; load average ${load0.map(r2).join(' ')} at start, ${load1.map(r2).join(' ')} at end. µs; ${N} samples per step.`,
      '',
      mdTable(head, rows),
      '',
      '![Line operation latency (OpStream) vs registered chips](scale-latency.png)',
      '',
      mdTable(['event delivery', 'min', 'median', 'p99'], wrows),
      '',
      `${WATCHERS} WatchEvents streams were live ${allLiveMs} ms after they were opened (${pending.length} never delivered); ${lost} of ${N} events not delivered within 5 s.`,
      '',
      mdTable([`Redis memory per line (${CHIPS} chips x ${LINES} lines)`, 'bytes'], [
        ['registered, lines at default', memory.bytes_per_line_registered], ['every line configured', memory.bytes_per_line_configured],
        [`+ ${memory.events_per_chip} events per chip (${memory.stream_entries} stream entries)`, memory.bytes_per_line_with_events], ['per stream entry (events stage)', memory.bytes_per_event],
      ]),
    ].join('\n'));
    return result;
  } finally {
    await runCleanup(cleanup);
  }
}

interface WatcherPhaseInput {
  /** The service's "host:port". */
  readonly address: string;
  /** Direct store access: the toggles that make events go straight to Redis. */
  readonly store: LineStore;
  readonly id: (i: number) => string;
  /** Lease token of chip i (registered, line 0 an output). Chips 0..watchers are used. */
  readonly tokens: readonly string[];
  readonly watchers: number;
  readonly samples: number;
  readonly cleanup: (() => Promise<void> | void)[];
}

interface WatcherPhaseResult {
  readonly allLiveMs: number;
  /** Watchers whose stream never delivered (failed streams included). */
  readonly pending: readonly number[];
  readonly streamErrors: number;
  readonly firstStreamError: string | undefined;
  readonly delivery: Summary;
  readonly issueLat: Summary;
  readonly lost: number;
  readonly fanF: Summary | undefined;
  readonly fanL: Summary | undefined;
  readonly fanLive: boolean;
  readonly connections: number;
}

function watcherFields(w: WatcherPhaseResult, watchers: number): Record<string, unknown> {
  return {
    watchers, watchers_live_after_ms: w.allLiveMs, watchers_never_live: w.pending.length, stream_errors: w.streamErrors,
    ...(w.firstStreamError !== undefined ? { first_stream_error: w.firstStreamError } : {}),
    watcher_channels: WATCH_CHANNELS, watcher_tcp_connections: w.connections,
    event_delivery_stamp_to_arrival: w.delivery, event_delivery_issue_to_arrival: w.issueLat, events_not_delivered: w.lost,
    fanout_first_arrival: w.fanF ?? null, fanout_last_arrival: w.fanL ?? null,
  };
}

/** Established TCP connections to the service's port (`ss`; -1 when it cannot tell). */
function connectionsTo(address: string): number {
  const port = address.slice(address.lastIndexOf(':') + 1);
  try {
    return execFileSync('ss', ['-tnH', 'state', 'established', `( dport = :${port} )`], { encoding: 'utf8' }).split('\n').filter((l) => l.trim() !== '').length;
  } catch {
    return -1;
  }
}

/**
 * WATCH_CHANNELS clients, one WatchEvents stream per chip 0..watchers-1, round robin:
 * time until every stream delivered its first event, then delivery latency, then a
 * fan-out of `watchers` more streams on chip `watchers`. A stream that fails is counted
 * and not waited for (it cannot deliver any more).
 */
async function watcherPhase(o: WatcherPhaseInput): Promise<WatcherPhaseResult> {
  const { id, tokens, store, samples: N } = o;
  const WATCHERS = o.watchers;
  // grpc-js shares one connection (subchannel) among clients of the same target and
  // options: these "channels" are one HTTP/2 connection (measured: watcher_tcp_connections).
  const channels: LineStateClient[] = Array.from({ length: WATCH_CHANNELS }, () => createLineStateClient(o.address, { deadlineMs: 30_000 }));
  for (const c of channels) o.cleanup.unshift(() => c.close());
  const handles: WatchHandle[] = [];
  o.cleanup.unshift(() => { for (const h of handles) h.cancel(); });
  const waiting = new Map<string, (e: { timestampNs: string }) => void>();
  let streamErrors = 0;
  let firstStreamError: string | undefined;
  const failed = new Set<number>();
  const onError = (w: number) => (e: Error): void => {
    streamErrors++;
    failed.add(w);
    firstStreamError ??= e.message;
  };
  const t0 = performance.now();
  for (let w = 0; w < WATCHERS; w++) {
    const chip = id(w);
    handles.push((channels[w % WATCH_CHANNELS] as LineStateClient).watchEvents({ chips: [chip] }, (e) => {
      const f = waiting.get(e.chip);
      if (f !== undefined) {
        waiting.delete(e.chip);
        f(e);
      }
    }, onError(w)));
  }
  const levels = new Uint8Array(WATCHERS + 1);
  /** Toggle line 0 of watched chip w (directly on Redis) and wait for the event on its stream. */
  const toggle = (w: number, timeoutMs: number): Promise<{ stampToArrival: bigint; issueToArrival: bigint } | undefined> =>
    new Promise((res) => {
      const chip = id(w);
      const issued = process.hrtime.bigint();
      const timer = setTimeout(() => { waiting.delete(chip); res(undefined); }, timeoutMs);
      waiting.set(chip, (e) => {
        const arrivedNs = nowNs(), arrived = process.hrtime.bigint();
        clearTimeout(timer);
        res({ stampToArrival: arrivedNs - BigInt(e.timestampNs), issueToArrival: arrived - issued });
      });
      const v = (levels[w] = 1 - (levels[w] ?? 0));
      void store.lineOp({ chip, leaseToken: BigInt(tokens[w] ?? '0'), op: 5, offset: 0, value: v }).catch(() => {});
    });
  // every stream is live once its chip's toggle arrives; retry the ones still opening
  let pending = Array.from({ length: WATCHERS }, (_, w) => w);
  let never: number[] = [];
  for (let attempt = 0; attempt < 60 && pending.length > 0; attempt++) {
    const still: number[] = [];
    const now = pending;
    await inParallel(now.length, 50, async (k) => {
      const w = now[k] ?? 0;
      if (failed.has(w)) never.push(w);
      else if ((await toggle(w, 1000)) === undefined) still.push(w);
    });
    pending = still;
  }
  never = never.concat(pending);
  const allLiveMs = Math.round(performance.now() - t0);
  const connections = connectionsTo(o.address);
  console.log(`${WATCHERS} watchers live after ${allLiveMs} ms (${never.length} never delivered, ${streamErrors} stream errors${firstStreamError !== undefined ? `, first: ${firstStreamError}` : ''}; ${WATCH_CHANNELS} clients on ${connections} TCP connection(s))`);
  const live = Array.from({ length: WATCHERS }, (_, w) => w).filter((w) => !never.includes(w));
  const stamp: bigint[] = [], issue: bigint[] = [];
  let lost = 0;
  for (let i = 0; i < N && live.length > 0; i++) {
    const r = await toggle(live[Math.floor(Math.random() * live.length)] ?? 0, 5000);
    if (r === undefined) lost++;
    else {
      stamp.push(r.stampToArrival);
      issue.push(r.issueToArrival);
    }
  }
  const delivery = summarize(stamp), issueLat = summarize(issue);
  console.log(`delivery with ${WATCHERS} watchers: event stamp -> arrival p50 ${delivery.p50_us} p99 ${delivery.p99_us} µs; op issue -> arrival p50 ${issueLat.p50_us} p99 ${issueLat.p99_us} µs; ${lost} not delivered`);

  // fan-out: WATCHERS more streams on one chip; time from op issue to the first and the last arrival
  const fanChip = id(WATCHERS);
  let arrivals = 0, first = 0n, last = 0n, issuedAt = 0n;
  let fanDone: (() => void) | undefined;
  for (let w = 0; w < WATCHERS; w++) {
    handles.push((channels[w % WATCH_CHANNELS] as LineStateClient).watchEvents({ chips: [fanChip] }, () => {
      const t = process.hrtime.bigint();
      if (arrivals === 0) first = t - issuedAt;
      arrivals++;
      last = t - issuedAt;
      if (arrivals === WATCHERS) fanDone?.();
    }, onError(WATCHERS)));
  }
  const fanTok = BigInt(tokens[WATCHERS] ?? '0');
  let fanLevel = 0;
  const fanOnce = async (timeoutMs: number): Promise<boolean> => {
    arrivals = 0;
    const done = new Promise<boolean>((res) => {
      const timer = setTimeout(() => res(false), timeoutMs);
      fanDone = () => { clearTimeout(timer); res(true); };
    });
    issuedAt = process.hrtime.bigint();
    fanLevel = 1 - fanLevel;
    await store.lineOp({ chip: fanChip, leaseToken: fanTok, op: 5, offset: 0, value: fanLevel });
    return done;
  };
  let fanLive = false;
  for (let attempt = 0; attempt < 60 && !fanLive && !failed.has(WATCHERS); attempt++) fanLive = await fanOnce(1000);
  const fanFirst: bigint[] = [], fanLast: bigint[] = [];
  const FAN_N = 100;
  for (let i = 0; i < FAN_N && fanLive; i++) {
    if (await fanOnce(5000)) {
      fanFirst.push(first);
      fanLast.push(last);
    }
  }
  const fanF = fanFirst.length > 0 ? summarize(fanFirst) : undefined, fanL = fanLast.length > 0 ? summarize(fanLast) : undefined;
  console.log(`fan-out to ${WATCHERS} watchers of one chip: first arrival p50 ${fanF?.p50_us} µs, last arrival p50 ${fanL?.p50_us} p99 ${fanL?.p99_us} µs (${connectionsTo(o.address)} TCP connection(s), ${streamErrors} stream errors)`);
  return { allLiveMs, pending: never, streamErrors, firstStreamError, delivery, issueLat, lost, fanF, fanL, fanLive, connections };
}

/**
 * Only the watcher phase (--watchers-only): register `chips` chips, run it, and merge
 * its figures into bench/results/scale.json (the other suites' figures stay).
 */
export async function runWatcherPhaseOnly(o: { chips?: number; watchers?: number; samples?: number } = {}): Promise<Record<string, unknown>> {
  const CHIPS = o.chips ?? 5000;
  const WATCHERS = Math.min(o.watchers ?? 1000, CHIPS - 1);
  const N = o.samples ?? 1500;
  const { machine: m0, load: load0 } = beginSuite();
  const cleanup: (() => Promise<void> | void)[] = [];
  try {
    const redis = await startRedis();
    cleanup.unshift(() => redis.stop());
    const fabric = `scale-${process.pid}`;
    const svc = await startProc(PERF, ['--service', redis.url, fabric]);
    cleanup.unshift(() => svc.stop());
    const store = await createRedisStore({ url: redis.url, fabric, commandTimeoutMs: 30_000 });
    cleanup.unshift(() => store.close());
    const id = (i: number): string => `s${String(i).padStart(5, '0')}`;
    const tokens: string[] = [];
    const r0 = performance.now();
    await inParallel(CHIPS, 256, async (i) => {
      const r = await store.registerChip({ chip: id(i), ngpio: LINES, names: [], owner: 'bench-scale', leaseTtlMs: 600_000 });
      tokens[i] = r.leaseToken.toString();
      await store.lineOp({ chip: id(i), leaseToken: r.leaseToken, op: 3, offset: 0, value: 1 });
    });
    console.log(`${CHIPS} chips registered in ${Math.round(performance.now() - r0)} ms`);
    const w = await watcherPhase({ address: svc.ready, store, id, tokens, watchers: WATCHERS, samples: N, cleanup });
    const load1 = loadavg();
    const fields = {
      ...watcherFields(w, WATCHERS), watcher_phase_chips: CHIPS, watcher_phase_samples: N,
      watcher_phase_machine: { ...m0, loadavg_start: load0.map(r2), loadavg_end: load1.map(r2) }, watcher_phase_date: new Date().toISOString(),
    };
    let prev: Record<string, unknown> = {};
    try {
      prev = JSON.parse(readFileSync(RESULT_FILE, 'utf8')) as Record<string, unknown>;
    } catch {
      // no earlier results
    }
    mkdirSync(dirname(RESULT_FILE), { recursive: true });
    writeFileSync(RESULT_FILE, `${JSON.stringify({ ...prev, ...fields }, null, 2)}\n`);
    console.log(`merged the watcher figures into ${RESULT_FILE}`);
    return fields;
  } finally {
    await runCleanup(cleanup);
  }
}

export const suite: BenchSuite = {
  description: 'Redis memory per line, op latency from 10 to 5,000 chips, 1,000 event watchers on one service',
  run: async () => { await runScaleBench(); },
};

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href;
if (isMain) {
  const { values } = parseArgs({ options: { chips: { type: 'string' }, watchers: { type: 'string' }, samples: { type: 'string' }, 'watchers-only': { type: 'boolean' } } });
  await (values['watchers-only'] === true ? runWatcherPhaseOnly : runScaleBench)({
    ...(values.chips !== undefined ? { chips: Number(values.chips) } : {}),
    ...(values.watchers !== undefined ? { watchers: Number(values.watchers) } : {}),
    ...(values.samples !== undefined ? { samples: Number(values.samples) } : {}),
  });
}
