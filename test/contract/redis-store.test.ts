/**
 * The LineStore contract against the RedisStore on a real Redis (one server per file,
 * a unique fabric per test), plus what only a shared store can show: two store
 * instances are one fabric, state survives reopening, and a stopped Redis gives
 * UNAVAILABLE quickly instead of a hang, with recovery once it is back.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, FabricError } from '../../services/common/src/errors.ts';
import { Direction, DriveMode, Pull } from '../../services/common/src/line-model.ts';
import { createRedisStore } from '../../services/linestate/src/store/redis-store.ts';
import { LineOp } from '../../services/linestate/src/store/store.ts';
import type { LineEventRecord, LineStore } from '../../services/linestate/src/store/store.ts';
import { startRedis } from '../support/redis.ts';
import type { RedisHandle } from '../support/redis.ts';
import { runStoreContract } from './store.contract.ts';
import { waitFor } from '../support/wait.ts';

let redis: RedisHandle;
let fabricSeq = 0;
const uniqueFabric = (): string => `t${process.pid}-${Date.now().toString(36)}-${++fabricSeq}`;
const at = (chip: string, offset: number) => ({ chip, line: { kind: 'offset' as const, offset } });

before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis.stop();
});

runStoreContract('RedisStore', async () => {
  const store = await createRedisStore({ url: redis.url, fabric: uniqueFabric() });
  return { store, cleanup: () => store.close() };
});

describe('RedisStore: a shared fabric', () => {
  test('two store instances on one Redis are one fabric', async () => {
    const fabric = uniqueFabric();
    const s1 = await createRedisStore({ url: redis.url, fabric });
    const s2 = await createRedisStore({ url: redis.url, fabric });
    const other = await createRedisStore({ url: redis.url, fabric: uniqueFabric() });
    try {
      const seen: LineEventRecord[] = [];
      const seenOther: LineEventRecord[] = [];
      await s2.subscribe(['vm-b'], (e) => seen.push(e));
      await other.subscribe([], (e) => seenOther.push(e));
      const ta = (await s1.registerChip({ chip: 'vm-a', ngpio: 2, names: [], owner: 'a', leaseTtlMs: 0 })).leaseToken;
      await s2.registerChip({ chip: 'vm-b', ngpio: 2, names: [], owner: 'b', leaseTtlMs: 0 });
      await s2.wire({ name: 'link', members: [at('vm-a', 0), at('vm-b', 1)], pull: Pull.NONE, driveMode: DriveMode.PUSH_PULL });
      await s1.lineOp({ chip: 'vm-a', leaseToken: ta, op: LineOp.SET_VALUE, offset: 0, value: 1 });
      await s1.lineOp({ chip: 'vm-a', leaseToken: ta, op: LineOp.SET_DIRECTION, offset: 0, value: Direction.OUT });
      await waitFor(() => seen.length >= 1, 'the event on the other replica');
      assert.deepEqual(seen.map((e) => [e.chip, e.offset, e.level, e.seq]), [['vm-b', 1, 1, 1n]]);
      assert.equal((await s2.getLine(at('vm-b', 1))).level, 1);
      assert.deepEqual((await s2.listChips()).map((c) => c.id), ['vm-a', 'vm-b']);
      // a live lease taken through one replica is refused through the other
      await assert.rejects(s2.registerChip({ chip: 'vm-a', ngpio: 2, names: [], owner: 'x', leaseTtlMs: 0 }), (e: unknown) => e instanceof FabricError && e.code === ErrorCode.FAILED_PRECONDITION);
      // another fabric on the same Redis sees nothing of it
      assert.deepEqual(await other.listChips(), []);
      assert.deepEqual(seenOther, []);
    } finally {
      await s1.close();
      await s2.close();
      await other.close();
    }
  });

  test('state survives closing the store and opening a new one', async () => {
    const fabric = uniqueFabric();
    const s1 = await createRedisStore({ url: redis.url, fabric });
    const t = (await s1.registerChip({ chip: 'vm-a', ngpio: 3, names: ['x', '', 'z'], owner: 'a', leaseTtlMs: 0 })).leaseToken;
    await s1.registerChip({ chip: 'vm-b', ngpio: 1, names: [], owner: 'b', leaseTtlMs: 0 });
    await s1.lineOp({ chip: 'vm-a', leaseToken: t, op: LineOp.SET_DIRECTION, offset: 2, value: Direction.OUT });
    await s1.lineOp({ chip: 'vm-a', leaseToken: t, op: LineOp.SET_VALUE, offset: 2, value: 1 });
    await s1.wire({ name: 'w', members: [at('vm-a', 2), at('vm-b', 0)], pull: Pull.UP, driveMode: DriveMode.OPEN_DRAIN });
    const lines = await s1.listLines('');
    const nets = await s1.listNets();
    const events = await s1.readEvents('vm-a', 0n, 0);
    await s1.close();
    const s2 = await createRedisStore({ url: redis.url, fabric });
    try {
      assert.deepEqual(await s2.listLines(''), lines);
      assert.deepEqual(await s2.listNets(), nets);
      assert.deepEqual(await s2.readEvents('vm-a', 0n, 0), events);
      assert.equal(await s2.lineOp({ chip: 'vm-a', leaseToken: t, op: LineOp.GET_VALUE, offset: 2, value: 0 }), 1, 'the lease token is still valid');
    } finally {
      await s2.close();
    }
  });
});

describe('RedisStore: Redis outages', () => {
  test('UNAVAILABLE (not a hang) while Redis is down, recovery once it is back', async () => {
    const own = await startRedis({ appendonly: true });
    let store: LineStore | undefined;
    try {
      store = await createRedisStore({ url: own.url, fabric: uniqueFabric(), commandTimeoutMs: 1000 });
      const t = (await store.registerChip({ chip: 'vm-a', ngpio: 2, names: [], owner: 'a', leaseTtlMs: 0 })).leaseToken;
      const seen: LineEventRecord[] = [];
      await store.subscribe([], (e) => seen.push(e));
      await store.lineOp({ chip: 'vm-a', leaseToken: t, op: LineOp.SET_DIRECTION, offset: 0, value: Direction.OUT });
      await store.lineOp({ chip: 'vm-a', leaseToken: t, op: LineOp.SET_VALUE, offset: 0, value: 1 });
      await waitFor(() => seen.length === 1, 'the first event');

      let restarted: Promise<void> | undefined;
      if (own.kind === 'spawned') restarted = own.restart(1500);
      else await own.stop();
      await new Promise((r) => setTimeout(r, 200)); // let the client notice the closed socket
      const s = store;
      for (const call of [
        () => s.lineOp({ chip: 'vm-a', leaseToken: t, op: LineOp.GET_VALUE, offset: 0, value: 0 }),
        () => s.listChips(),
        () => s.readEvents('vm-a', 0n, 0),
      ]) {
        await assert.rejects(call(), (e: unknown) => {
          assert.ok(e instanceof FabricError, String(e));
          assert.equal(e.code, ErrorCode.UNAVAILABLE, e.message);
          assert.ok(e.cause !== undefined, 'the cause is kept');
          return true;
        });
      }
      if (restarted === undefined) return; // a container cannot come back on the same port
      await restarted;
      // the client reconnects by itself
      let value: number | undefined;
      const deadline = Date.now() + 10_000;
      while (value === undefined) {
        try {
          value = await s.lineOp({ chip: 'vm-a', leaseToken: t, op: LineOp.GET_VALUE, offset: 0, value: 0 });
        } catch (e) {
          assert.ok(e instanceof FabricError && e.code === ErrorCode.UNAVAILABLE, String(e));
          if (Date.now() > deadline) throw e;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      assert.equal(value, 1, 'state persisted across the restart (AOF)');
      // Live events flow again once the subscriber has reconnected by itself. Changes made
      // before it is back are not published to it, but they are filled in from the stream
      // when the next event arrives: every event is delivered exactly once, in order.
      let level = 0;
      const until = Date.now() + 10_000;
      while (seen.length < 2) {
        if (Date.now() > until) throw new Error('no live event after recovery');
        await s.lineOp({ chip: 'vm-a', leaseToken: t, op: LineOp.SET_VALUE, offset: 0, value: level });
        level = 1 - level;
        await new Promise((r) => setTimeout(r, 50));
      }
      const last = (await s.listChips())[0]!.lastSeq;
      await waitFor(() => seen.length >= Number(last), 'every event up to the newest');
      assert.deepEqual(seen.map((e) => e.seq), Array.from({ length: Number(last) }, (_, i) => BigInt(i + 1)), 'no event lost or repeated');
      assert.deepEqual(seen, await s.readEvents('vm-a', 0n, 0));
    } finally {
      await store?.close();
      await own.stop();
    }
  });

  test('createRedisStore fails with UNAVAILABLE when nothing listens', async () => {
    await assert.rejects(createRedisStore({ url: 'redis://127.0.0.1:1', connectTimeoutMs: 500 }), (e: unknown) => e instanceof FabricError && e.code === ErrorCode.UNAVAILABLE);
  });
});
