/**
 * Soak: `npm run soak -- --minutes M [--agents 200] [--lines 64] [--wired 8] [--in-flight 32]
 *                        [--channels 16] [--out bench/results/soak.json]`
 *
 * One line-state service (`gpio-fabric serve --redis`, a child process) on a spawned
 * redis-server, N simulated agents x L lines, all on 127.0.0.1, for M minutes; then it
 * stops by itself.
 *
 * The agents are simulated at the line-state API level: each is a RemoteBackend (the
 * agent's real remote line backend: lease registration and renewal, LineOps with the
 * fencing token, an event stream per chip resumed from its cursor), without vhost-user
 * or a guest. The backends share `--channels` gRPC channels (real agents have one each).
 * Wires form a ring: for every even k < --wired, chip i line k is wired to chip i+1
 * line k+1. Drivers are outputs, receivers inputs, the other lines get a random mix.
 * A pool of --in-flight workers issues a steady mix of ops on random lines (never two at
 * once on one line, like a guest): 40 % SET_VALUE (toggle), 10 % SET_DIRECTION,
 * 35 % GET_VALUE, 15 % GET_DIRECTION.
 *
 * Checked (exit code 1 when violated):
 *  - events lost = 0: on every chip the events received have strictly consecutive seq
 *    numbers, counting the echoes the stream reports as left out (the agent's own output
 *    changes; docs/line-model.md), and, after a drain (one unary SET_VALUE per chip, not
 *    an echo, so the stream accounts for the echoes before it), events plus echoes equal
 *    the chip's lastSeq growth;
 *  - memory: for each process (service, redis-server, this driver), RSS at the end
 *    <= RSS after warm-up * 1.5 + 50 MB;
 *  - no op failed.
 * Writes the figures (ops/s, p50/p99 op latency in us, events, RSS per process) to --out.
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { RemoteBackend } from '../services/agent/src/backend/remote-backend.ts';
import { LineOpType } from '../services/common/src/gen/gpiofabric/v1/linestate.ts';
import { createLineStateClient, type LineStateClient } from '../services/linestate/src/client.ts';
import { startRedis } from '../test/support/redis.ts';
import { machine } from './lib/machine.ts';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '1' },
    agents: { type: 'string', default: '200' },
    lines: { type: 'string', default: '64' },
    wired: { type: 'string', default: '8' },
    'in-flight': { type: 'string', default: '32' },
    channels: { type: 'string', default: '16' },
    out: { type: 'string', default: 'bench/results/soak.json' },
  },
});
const num = (name: string, v: string | undefined, min: number, max: number): number => {
  const n = Number(v);
  if (!Number.isFinite(n) || n < min || n > max) {
    console.error(`--${name} ${v} must be a number from ${min} to ${max}`);
    process.exit(2);
  }
  return n;
};
const MINUTES = num('minutes', values.minutes, 0.05, 24 * 60);
const AGENTS = Math.trunc(num('agents', values.agents, 2, 2000));
const LINES = Math.trunc(num('lines', values.lines, 2, 1024));
// an even count below LINES: the last line stays unwired for the drain's last change
const WIRED = Math.min((LINES - 1) - ((LINES - 1) % 2), Math.trunc(num('wired', values.wired, 0, 1024)));
const IN_FLIGHT = Math.trunc(num('in-flight', values['in-flight'], 1, 4096));
const CHANNELS = Math.min(AGENTS, Math.trunc(num('channels', values.channels, 1, 2000)));
const OUT = values.out ?? 'bench/results/soak.json';
const DURATION_MS = MINUTES * 60_000;
const WARMUP_MS = Math.min(30_000, DURATION_MS * 0.2);
const GROWTH_FACTOR = 1.5;
const GROWTH_SLACK_MB = 50;

const log = (m: string): void => console.error(`${new Date().toISOString()} soak: ${m}`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? NaN : Math.round((Number(m[1]) / 1024) * 10) / 10;
}

/** Log-bucketed latency histogram (1 % resolution): flat memory however long the soak. */
class Histogram {
  readonly #buckets = new Map<number, number>();
  count = 0;
  add(us: number): void {
    const b = Math.floor(Math.log(Math.max(1, us)) / Math.log(1.01));
    this.#buckets.set(b, (this.#buckets.get(b) ?? 0) + 1);
    this.count++;
  }
  quantile(q: number): number {
    const keys = [...this.#buckets.keys()].sort((a, b) => a - b);
    let seen = 0;
    const want = q * this.count;
    for (const k of keys) {
      seen += this.#buckets.get(k) ?? 0;
      if (seen >= want) return Math.round(1.01 ** (k + 0.5) * 10) / 10;
    }
    return NaN;
  }
}

interface ChipTrack {
  readonly backend: RemoteBackend;
  readonly client: LineStateClient;
  startSeq: bigint;
  lastSeen: bigint;
  /** backend.echoesSkipped when the last event arrived. */
  echoesSeen: bigint;
  received: number;
  gaps: number;
  duplicates: number;
}

async function main(): Promise<number> {
  log(`${AGENTS} agents x ${LINES} lines, ${WIRED / 2} ring nets per chip, ${IN_FLIGHT} ops in flight, ${CHANNELS} channels, ${MINUTES} min`);
  const redis = await startRedis();
  const fabric = `soak-${process.pid}`;
  const svc = spawn(process.execPath, ['bin/gpio-fabric.mjs', 'serve', '--redis', redis.url, '--fabric', fabric, '--listen', '127.0.0.1:0', '--metrics', 'off'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const stopAll = async (): Promise<void> => {
    if (svc.exitCode === null && svc.signalCode === null) {
      await new Promise<void>((resolve) => {
        svc.once('exit', () => resolve());
        svc.kill('SIGTERM');
        setTimeout(() => svc.kill('SIGKILL'), 10_000).unref();
      });
    }
    await redis.stop();
  };
  try {
    const address = await new Promise<string>((resolve, reject) => {
      let out = '';
      svc.stdout?.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /listening on (\S+)/.exec(out);
        if (m?.[1] !== undefined) resolve(m[1]);
      });
      svc.once('exit', (code) => reject(new Error(`serve exited with ${code}`)));
    });
    const info = new Redis(redis.url);
    const redisPid = Number(/process_id:(\d+)/.exec(await info.info('server'))?.[1]);
    const redisRss = async (): Promise<number> => {
      try {
        return rssMb(redisPid);
      } catch {
        return Math.round(Number(/used_memory_rss:(\d+)/.exec(await info.info('memory'))?.[1]) / 1048576 * 10) / 10;
      }
    };
    const svcPid = svc.pid ?? 0;

    // ---- agents
    const clients = Array.from({ length: CHANNELS }, () => createLineStateClient(address, { deadlineMs: 10_000 }));
    const chips: ChipTrack[] = [];
    const chipId = (i: number): string => `soak-${String(i).padStart(4, '0')}`;
    for (let i = 0; i < AGENTS; i += 20) {
      await Promise.all(Array.from({ length: Math.min(20, AGENTS - i) }, async (_, j) => {
        const n = i + j;
        const client = clients[n % CHANNELS]!;
        const backend = new RemoteBackend({ client, chip: chipId(n), ngpio: LINES, owner: `soak/${process.pid}/${n}`, leaseTtlMs: 10_000, startTimeoutMs: 30_000 });
        const t: ChipTrack = { backend, client, startSeq: 0n, lastSeen: 0n, echoesSeen: 0n, received: 0, gaps: 0, duplicates: 0 };
        backend.onEvent((e) => {
          // the echoes left out just before this event (counted by the backend before it calls us)
          const echoes = backend.echoesSkipped - t.echoesSeen;
          t.echoesSeen = backend.echoesSkipped;
          if (e.seq === t.lastSeen + 1n + echoes) t.received++;
          else if (e.seq <= t.lastSeen) t.duplicates++;
          else {
            t.gaps++;
            t.received++;
          }
          t.lastSeen = e.seq;
        });
        await backend.start();
        if (backend.leaseToken === undefined) throw new Error(`${chipId(n)} did not register`);
        t.startSeq = backend.cursor;
        t.lastSeen = backend.cursor;
        chips[n] = t;
      }));
    }
    log(`${AGENTS} agents registered`);
    const admin = clients[0]!;
    const line = (chip: number, offset: number) => ({ chip: chipId(chip), line: { $case: 'offset' as const, value: offset } });
    for (let i = 0; i < AGENTS; i++) {
      const nets = [];
      for (let k = 0; k + 1 < WIRED; k += 2) nets.push(admin.wire({ name: `ring-${i}-${k}`, members: [line(i, k), line((i + 1) % AGENTS, k + 1)], pull: 2, driveMode: 0 }));
      await Promise.all(nets);
    }
    // Drivers OUT, receivers IN; the rest: half OUT, half IN.
    for (const t of chips) {
      await Promise.all(Array.from({ length: LINES }, (_, k) => t.backend.setDirection(k, k < WIRED ? (k % 2 === 0 ? 1 : 2) : k % 4 < 2 ? 1 : 2)));
    }
    log('wired and configured');

    // ---- steady load
    const hist = new Histogram();
    const busy = new Set<number>();
    let ops = 0;
    let failures = 0;
    let lastFailure = '';
    const started = performance.now();
    const endAt = started + DURATION_MS;
    const worker = async (): Promise<void> => {
      while (performance.now() < endAt) {
        const a = Math.floor(Math.random() * AGENTS);
        const k = Math.floor(Math.random() * LINES);
        const key = a * LINES + k;
        if (busy.has(key)) continue;
        busy.add(key);
        const b = chips[a]!.backend;
        const r = Math.random();
        const t0 = performance.now();
        try {
          if (r < 0.4) await b.setValue(k, b.levels()[k] === 1 ? 0 : 1);
          else if (r < 0.5) await b.setDirection(k, k < WIRED ? (k % 2 === 0 ? 1 : 2) : Math.random() < 0.5 ? 1 : 2);
          else if (r < 0.85) await b.getValue(k);
          else await b.getDirection(k);
          hist.add((performance.now() - t0) * 1000);
          ops++;
        } catch (e) {
          failures++;
          lastFailure = (e as Error).message;
        } finally {
          busy.delete(key);
        }
      }
    };
    const rss = { start: { service: 0, redis: 0, driver: 0 }, end: { service: 0, redis: 0, driver: 0 } };
    const sampler = (async () => {
      await sleep(WARMUP_MS);
      rss.start = { service: rssMb(svcPid), redis: await redisRss(), driver: rssMb(process.pid) };
      log(`after warm-up: RSS service ${rss.start.service} MB, redis ${rss.start.redis} MB, driver ${rss.start.driver} MB; ${ops} ops`);
    })();
    const progress = setInterval(() => log(`${ops} ops, ${failures} failures, ${chips.reduce((s, c) => s + c.received, 0)} events`), 30_000);
    await Promise.all([...Array.from({ length: IN_FLIGHT }, worker), sampler]);
    clearInterval(progress);
    const elapsedS = (performance.now() - started) / 1000;

    // ---- drain: every chip's events up to its lastSeq. A last change that is not an echo
    // (unary LineOp marks none) on an unwired line makes each stream account for the
    // echoes before it.
    const spare = LINES - 1;
    await Promise.all(chips.map(async (t) => {
      const chip = t.backend.chip;
      const leaseToken = (t.backend.leaseToken ?? 0n).toString();
      await t.client.lineOp({ chip, leaseToken, op: LineOpType.LINE_OP_TYPE_SET_DIRECTION, offset: spare, value: 1 });
      const v = (await t.client.lineOp({ chip, leaseToken, op: LineOpType.LINE_OP_TYPE_GET_VALUE, offset: spare, value: 0 })).value;
      await t.client.lineOp({ chip, leaseToken, op: LineOpType.LINE_OP_TYPE_SET_VALUE, offset: spare, value: v === 1 ? 0 : 1 });
    }));
    const drained = async (): Promise<{ expected: number; missing: number }> => {
      const last = new Map((await admin.listChips()).map((c) => [c.id, BigInt(c.lastSeq)]));
      let expected = 0;
      let missing = 0;
      for (const t of chips) {
        const want = Number((last.get(t.backend.chip) ?? 0n) - t.startSeq);
        expected += want;
        missing += Math.max(0, want - t.received - Number(t.backend.echoesSkipped));
      }
      return { expected, missing };
    };
    let d = await drained();
    for (let i = 0; i < 100 && d.missing > 0; i++) {
      await sleep(100);
      d = await drained();
    }
    rss.end = { service: rssMb(svcPid), redis: await redisRss(), driver: rssMb(process.pid) };
    const received = chips.reduce((s, c) => s + c.received, 0);
    const echoes = chips.reduce((s, c) => s + Number(c.backend.echoesSkipped), 0);
    const gaps = chips.reduce((s, c) => s + c.gaps, 0);
    const duplicates = chips.reduce((s, c) => s + c.duplicates, 0);
    const eventsLost = d.missing + gaps;

    for (const t of chips) await t.backend.close();
    for (const c of clients) c.close();
    info.disconnect();

    const bound = (start: number): number => Math.round((start * GROWTH_FACTOR + GROWTH_SLACK_MB) * 10) / 10;
    const memory = Object.fromEntries((['service', 'redis', 'driver'] as const).map((p) => [p, { start_mb: rss.start[p], end_mb: rss.end[p], bound_mb: bound(rss.start[p]), ok: rss.end[p] <= bound(rss.start[p]) }]));
    const memoryOk = Object.values(memory).every((m) => m.ok);
    const result = {
      ops_per_s: Math.round(ops / elapsedS),
      p50_us: hist.quantile(0.5),
      p99_us: hist.quantile(0.99),
      events_lost: eventsLost,
      rss_start_mb: Math.round((rss.start.service + rss.start.redis + rss.start.driver) * 10) / 10,
      rss_end_mb: Math.round((rss.end.service + rss.end.redis + rss.end.driver) * 10) / 10,
      memory_bound: `end RSS <= RSS after warm-up * ${GROWTH_FACTOR} + ${GROWTH_SLACK_MB} MB, per process`,
      memory_ok: memoryOk,
      processes: memory,
      ops,
      op_failures: failures,
      events_expected: d.expected,
      events_received: received,
      echoes_omitted: echoes,
      seq_gaps: gaps,
      duplicates,
      config: { minutes: MINUTES, agents: AGENTS, lines: LINES, wired_lines_per_chip: WIRED, ring_nets: AGENTS * (WIRED / 2), in_flight: IN_FLIGHT, channels: CHANNELS, warmup_s: WARMUP_MS / 1000, elapsed_s: Math.round(elapsedS) },
      simulation: 'agents simulated at the line-state API level (RemoteBackend instances, no vhost-user/guest); one serve process on one spawned redis-server, 127.0.0.1 only',
      machine: machine(),
      date: new Date().toISOString(),
    };
    mkdirSync(dirname(OUT), { recursive: true });
    writeFileSync(OUT, `${JSON.stringify(result, null, 2)}\n`);
    console.log(JSON.stringify(result, null, 2));
    const problems: string[] = [];
    if (eventsLost > 0 || duplicates > 0) problems.push(`events lost ${eventsLost}, duplicated ${duplicates}`);
    if (!memoryOk) problems.push(`memory grew beyond the bound: ${JSON.stringify(memory)}`);
    if (failures > 0) problems.push(`${failures} ops failed (last: ${lastFailure})`);
    if (ops === 0) problems.push('no op completed');
    for (const p of problems) log(`FAIL: ${p}`);
    log(problems.length === 0 ? `ok: wrote ${OUT}` : `wrote ${OUT}`);
    return problems.length === 0 ? 0 : 1;
  } finally {
    await stopAll();
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
