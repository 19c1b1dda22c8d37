/**
 * Redis memory per line: register chips through the RedisStore API (many registrations
 * in flight, auto-pipelined), then configure every line, then give every chip a few
 * events, reading INFO memory used_memory after each stage. Run on a Redis that holds
 * nothing else (a freshly spawned redis-server).
 */
import { Redis } from 'ioredis';
import { createRedisStore } from '../../services/linestate/src/store/redis-store.ts';

export interface RedisMemoryResult {
  chips: number;
  lines_per_chip: number;
  /** used_memory growth / lines, chips registered (every line at its default state). */
  bytes_per_line_registered: number;
  /** ... after every line was configured (direction, irq type on inputs). */
  bytes_per_line_configured: number;
  /** ... after `events_per_chip` more events on every chip (streams cost memory). */
  bytes_per_line_with_events: number;
  events_per_chip: number;
  /** stream entries in Redis at the end (configuration also emits events). */
  stream_entries: number;
  /** growth of the events stage / the stream entries it added. */
  bytes_per_event: number;
  used_memory_start: number;
  used_memory_end: number;
  register_per_s: number;
}

async function usedMemory(r: Redis): Promise<number> {
  return Number(/used_memory:(\d+)/.exec(await r.info('memory'))?.[1]);
}

async function streamEntries(r: Redis, keys: readonly string[]): Promise<number> {
  let n = 0;
  for (let i = 0; i < keys.length; i += 1000) {
    const p = r.pipeline();
    for (const k of keys.slice(i, i + 1000)) p.xlen(k);
    for (const [e, v] of (await p.exec()) ?? []) if (e === null) n += Number(v);
  }
  return n;
}

/** Run `fn(i)` for i < n with `inFlight` in flight. */
export async function inParallel(n: number, inFlight: number, fn: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(inFlight, n) }, async () => {
    while (next < n) await fn(next++);
  }));
}

export async function measureRedisMemory(url: string, o: { chips: number; lines: number; eventsPerChip: number; fabric?: string; log?: (m: string) => void }): Promise<RedisMemoryResult> {
  const log = o.log ?? (() => {});
  const fabric = o.fabric ?? `mem-${process.pid}`;
  const r = new Redis(url);
  const store = await createRedisStore({ url, fabric, commandTimeoutMs: 30_000 });
  try {
    const m0 = await usedMemory(r);
    const id = (i: number): string => `m${String(i).padStart(5, '0')}`;
    const tokens: bigint[] = [];
    const t0 = performance.now();
    await inParallel(o.chips, 256, async (i) => {
      const reg = await store.registerChip({ chip: id(i), ngpio: o.lines, names: [], owner: 'bench-memory', leaseTtlMs: 600_000 });
      tokens[i] = reg.leaseToken;
    });
    const registerPerS = Math.round(o.chips / ((performance.now() - t0) / 1000));
    const m1 = await usedMemory(r);
    log(`registered ${o.chips} chips x ${o.lines} lines (${registerPerS} registrations/s)`);
    // every line configured: even lines outputs, odd lines inputs with an edge irq type
    await inParallel(o.chips * o.lines, 512, async (k) => {
      const c = Math.floor(k / o.lines), off = k % o.lines;
      const tok = tokens[c] ?? 0n;
      await store.lineOp({ chip: id(c), leaseToken: tok, op: 3, offset: off, value: off % 2 === 0 ? 1 : 2 });
      if (off % 2 === 1) await store.lineOp({ chip: id(c), leaseToken: tok, op: 6, offset: off, value: 3 });
    });
    const m2 = await usedMemory(r);
    const evKeys = Array.from({ length: o.chips }, (_, i) => `gf:{${fabric}}:ev:${id(i)}`);
    const entries2 = await streamEntries(r, evKeys);
    log(`configured every line (${entries2} stream entries so far)`);
    // events: toggle line 0 (an output) eventsPerChip times on every chip
    await inParallel(o.chips * o.eventsPerChip, 512, async (k) => {
      const c = k % o.chips, j = Math.floor(k / o.chips);
      await store.lineOp({ chip: id(c), leaseToken: tokens[c] ?? 0n, op: 5, offset: 0, value: (j + 1) % 2 });
    });
    const m3 = await usedMemory(r);
    const entries3 = await streamEntries(r, evKeys);
    const lines = o.chips * o.lines;
    const per = (m: number): number => Math.round(((m - m0) / lines) * 10) / 10;
    return {
      chips: o.chips, lines_per_chip: o.lines,
      bytes_per_line_registered: per(m1), bytes_per_line_configured: per(m2), bytes_per_line_with_events: per(m3),
      events_per_chip: o.eventsPerChip, stream_entries: entries3,
      bytes_per_event: entries3 > entries2 ? Math.round((m3 - m2) / (entries3 - entries2)) : 0,
      used_memory_start: m0, used_memory_end: m3, register_per_s: registerPerS,
    };
  } finally {
    await store.close();
    r.disconnect();
  }
}
