/**
 * Test harness of the line-state service: a server on an ephemeral port over a chosen
 * store, a client, and helpers to snapshot state and catch FabricErrors.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { ServiceError } from '@grpc/grpc-js';
import { FabricError, type ErrorCode } from '../../services/common/src/errors.ts';
import type { LineEvent } from '../../services/common/src/gen/gpiofabric/v1/linestate.ts';
import { createLineStateClient, type LineStateClient, type WatchRequest } from '../../services/linestate/src/client.ts';
import { startLineStateServer, type LineStateServer } from '../../services/linestate/src/server.ts';
import type { LineStore } from '../../services/linestate/src/store/store.ts';
import { createMemoryStore } from '../../services/linestate/src/store/memory-store.ts';
import { startRedis, type RedisHandle } from '../support/redis.ts';

export type StoreKind = 'memory' | 'redis';

export interface Fabric {
  readonly store: LineStore;
  readonly server: LineStateServer;
  readonly client: LineStateClient;
  stop(): Promise<void>;
}

/** A Redis store on `url`, fabric name `fabric`. */
export async function redisStore(url: string, fabric: string): Promise<LineStore> {
  const { createRedisStore } = await import('../../services/linestate/src/store/redis-store.ts');
  return createRedisStore({ url, fabric });
}

export const uniqueFabric = (): string => `t-${randomBytes(4).toString('hex')}`;

/** Start a server over `store` and a client of it. */
export async function startFabric(store: LineStore, opts: { leaseTtlMs?: number } = {}): Promise<Fabric> {
  const logs: string[] = [];
  const server = await startLineStateServer({ store, listen: '127.0.0.1:0', log: (m) => logs.push(m), ...opts });
  const client = createLineStateClient(server.address);
  return {
    store, server, client,
    stop: async () => {
      client.close();
      await server.close();
      await store.close();
    },
  };
}

/** A fabric on the given store kind; redis needs a RedisHandle. */
export async function fabricOf(kind: StoreKind, redis: RedisHandle | undefined, opts: { leaseTtlMs?: number } = {}): Promise<Fabric> {
  if (kind === 'memory') return startFabric(createMemoryStore(), opts);
  assert.ok(redis !== undefined);
  return startFabric(await redisStore(redis.url, uniqueFabric()), opts);
}

export { startRedis };

/** Everything an operator can see (to compare before/after a failing call). */
export async function snapshot(c: LineStateClient): Promise<string> {
  const [chips, lines, nets] = await Promise.all([c.listChips(), c.listLines(), c.listNets()]);
  return JSON.stringify({ chips: chips.map((x) => ({ ...x, leaseExpiresAtMs: '' })), lines, nets });
}

/** Assert `p` rejects with a FabricError of `code` whose message matches `msg`; returns it. */
export async function rejectsWith(p: Promise<unknown>, code: ErrorCode, msg: RegExp): Promise<FabricError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof FabricError, `expected a FabricError, got ${String(e)}`);
    assert.equal(e.code, code, `code of "${e.message}"`);
    assert.match(e.message, msg);
    assert.equal(typeof (e.cause as ServiceError).code, 'number', 'cause is the gRPC ServiceError');
    assert.doesNotMatch(e.message, /\n\s+at /, 'no stack trace in the message');
    return e;
  }
  assert.fail(`expected ${code}, the call succeeded`);
}

/** A collecting WatchEvents stream. */
export interface Collector {
  readonly events: LineEvent[];
  /** Resolves when `n` events have arrived in total (rejects on stream error or after timeoutMs). */
  waitFor(n: number, timeoutMs?: number): Promise<LineEvent[]>;
  readonly error: Promise<FabricError>;
  cancel(): void;
}

export function collect(c: LineStateClient, req: WatchRequest): Collector {
  const events: LineEvent[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  let rejectErr: (e: FabricError) => void = () => {};
  const error = new Promise<FabricError>((resolve) => { rejectErr = resolve; });
  let failure: FabricError | undefined;
  const h = c.watchEvents(req, (e) => {
    events.push(e);
    for (const w of [...waiters]) if (events.length >= w.n) { waiters.splice(waiters.indexOf(w), 1); w.resolve(); }
  }, (e) => { failure = e; rejectErr(e); for (const w of waiters.splice(0)) w.resolve(); });
  return {
    events,
    error,
    cancel: () => h.cancel(),
    waitFor: (n, timeoutMs = 10_000) => new Promise<LineEvent[]>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(t);
        if (failure !== undefined && events.length < n) reject(failure);
        else resolve(events.slice());
      };
      const t = setTimeout(() => reject(new Error(`only ${events.length} of ${n} events arrived within ${timeoutMs} ms`)), timeoutMs);
      if (events.length >= n || failure !== undefined) { done(); return; }
      waiters.push({ n, resolve: done });
    }),
  };
}

/**
 * Wait until a live-only stream is subscribed: repeat `poke` (a state change that
 * produces an event on the watched chips) until the collector has seen one.
 */
export async function untilLive(col: Collector, poke: () => Promise<unknown>, maxTries = 200): Promise<void> {
  for (let i = 0; i < maxTries; i++) {
    const before = col.events.length;
    await poke();
    await new Promise((r) => setTimeout(r, 25));
    if (col.events.length > before) return;
  }
  throw new Error('the watch stream never delivered an event');
}
