/**
 * Per-chip pub/sub channels of the Redis store, on a real redis-server: a replica
 * subscribes to the channel of each chip its listeners take (and leaves it with the last
 * listener), so it is not sent the events of other chips; a listener of every chip takes
 * them all through a pattern. Rolling upgrade: while a replica from before per-chip
 * channels (played here by a raw connection subscribed to the fabric's channel) listens,
 * scripts also publish every event there, and current replicas also take what is
 * published there (by such a replica's scripts), each event once.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { Direction } from '../../services/common/src/line-model.ts';
import { fabricKeys } from '../../services/linestate/src/store/keys.ts';
import { createRedisStore } from '../../services/linestate/src/store/redis-store.ts';
import { LineOp, type LineEventRecord } from '../../services/linestate/src/store/store.ts';
import { startRedis, type RedisHandle } from '../support/redis.ts';
import { uniqueFabric } from './harness.ts';
import { sleep, waitFor } from '../support/wait.ts';

describe('Redis store: per-chip event channels', () => {
  let redis: RedisHandle;
  let raw: Redis;
  before(async () => {
    redis = await startRedis();
    raw = new Redis(redis.url);
  });
  after(async () => {
    raw.disconnect();
    await redis?.stop();
  });

  it('a replica subscribes to the channels of the chips it listens to, and only to those', async () => {
    const fabric = uniqueFabric();
    const keys = fabricKeys(fabric);
    const s1 = await createRedisStore({ url: redis.url, fabric });
    const s2 = await createRedisStore({ url: redis.url, fabric });
    // every message published in the fabric, by channel
    const spy = new Redis(redis.url);
    const heard: [string, string][] = [];
    spy.on('pmessage', (_p: string, ch: string, msg: string) => heard.push([ch, msg]));
    await spy.psubscribe(`${keys.prefix}*`);
    try {
      const tx = (await s1.registerChip({ chip: 'vm-x', ngpio: 2, names: [], owner: 'x', leaseTtlMs: 60_000 })).leaseToken;
      const ty = (await s1.registerChip({ chip: 'vm-y', ngpio: 2, names: [], owner: 'y', leaseTtlMs: 60_000 })).leaseToken;
      const onX: LineEventRecord[] = [], onY: LineEventRecord[] = [];
      const x = await s1.subscribe(['vm-x'], (e) => onX.push(e));
      const y = await s2.subscribe(['vm-y'], (e) => onY.push(e));
      const channels = async (): Promise<string[]> => ((await raw.pubsub('CHANNELS', `${keys.prefix}*`)) as string[]).sort();
      assert.deepEqual(await channels(), [keys.chipChannel('vm-x'), keys.chipChannel('vm-y')]);
      assert.deepEqual(await raw.pubsub('NUMSUB', keys.chipChannel('vm-x'), keys.chipChannel('vm-y')), [keys.chipChannel('vm-x'), 1, keys.chipChannel('vm-y'), 1]);

      await s1.lineOps('vm-x', tx, [{ op: LineOp.SET_DIRECTION, offset: 0, value: Direction.OUT }, { op: LineOp.SET_VALUE, offset: 0, value: 1 }]);
      await s2.lineOps('vm-y', ty, [{ op: LineOp.SET_DIRECTION, offset: 0, value: Direction.OUT }, { op: LineOp.SET_VALUE, offset: 0, value: 1 }]);
      await waitFor(() => onX.length === 1 && onY.length === 1 && heard.length === 2, 'one event of each chip');
      assert.equal(onX[0]?.chip, 'vm-x');
      assert.equal(onY[0]?.chip, 'vm-y');
      // each event on its chip's channel, and nothing on the fabric's (no old replica listens)
      assert.deepEqual(heard.map(([ch]) => ch), [keys.chipChannel('vm-x'), keys.chipChannel('vm-y')]);
      assert.match(heard[0]?.[1] ?? '', /^vm-x 0 1 /);

      // the last listener of a chip gone: its channel is left
      x.close();
      await waitFor(async () => (await channels()).length === 1, 'vm-x\'s channel left');
      assert.deepEqual(await channels(), [keys.chipChannel('vm-y')]);
      // a listener of every chip takes every chip's channel through one pattern
      const all: LineEventRecord[] = [];
      const every = await s2.subscribe([], (e) => all.push(e));
      assert.equal(await raw.pubsub('NUMPAT'), 2); // the spy's and s2's
      await s1.lineOp({ chip: 'vm-x', leaseToken: tx, op: LineOp.SET_VALUE, offset: 0, value: 0 });
      await s1.lineOp({ chip: 'vm-y', leaseToken: ty, op: LineOp.SET_VALUE, offset: 0, value: 0 });
      await waitFor(() => all.length === 2 && onY.length === 2, 'the every-chip listener got both');
      await sleep(50);
      assert.deepEqual(all.map((e) => [e.chip, e.seq]), [['vm-x', 2n], ['vm-y', 2n]]);
      assert.deepEqual(onY.map((e) => e.seq), [1n, 2n], 'vm-y once each, though s2 has it by channel and by pattern');
      every.close();
      y.close();
      await waitFor(async () => (await channels()).length === 0 && Number(await raw.pubsub('NUMPAT')) === 1, 'every channel and pattern left');
    } finally {
      spy.disconnect();
      await s1.close();
      await s2.close();
    }
  });

  it('rolling upgrade: while an old replica listens on the fabric\'s channel, events go there too, and what old scripts publish there reaches current listeners once', async () => {
    const fabric = uniqueFabric();
    const keys = fabricKeys(fabric);
    const s1 = await createRedisStore({ url: redis.url, fabric, legacyChannelCheckMs: 20 });
    const old = new Redis(redis.url); // a replica from before per-chip channels
    const oldHeard: string[] = [];
    old.on('message', (_ch: string, msg: string) => oldHeard.push(msg));
    try {
      const ta = (await s1.registerChip({ chip: 'vm-a', ngpio: 2, names: [], owner: 'a', leaseTtlMs: 60_000 })).leaseToken;
      await s1.lineOp({ chip: 'vm-a', leaseToken: ta, op: LineOp.SET_DIRECTION, offset: 0, value: Direction.OUT });
      const got: LineEventRecord[] = [];
      await s1.subscribe(['vm-a'], (e) => got.push(e));
      await waitFor(async () => Number(await raw.pubsub('NUMPAT')) === 0, 'no pattern (the last test\'s connections gone; no old replica yet)');
      await sleep(60);
      assert.equal(await raw.pubsub('NUMPAT'), 0, 'no old replica yet: s1 does not listen on the fabric\'s channel');

      await old.subscribe(keys.channel);
      await waitFor(async () => Number(await raw.pubsub('NUMPAT')) === 1, 's1 listening on the fabric\'s channel too');
      // a current script publishes on the chip's channel and, for the old replica, on the fabric's
      await s1.lineOp({ chip: 'vm-a', leaseToken: ta, op: LineOp.SET_VALUE, offset: 0, value: 1 });
      await waitFor(() => oldHeard.length === 1 && got.length === 1, 'the event on both');
      assert.match(oldHeard[0] ?? '', /^vm-a 0 1 \d 1 \d+$/);
      // an old replica's script publishes on the fabric's channel only (its stream entry too)
      const ts = `${Date.now()}000000`;
      await raw.xadd(keys.events('vm-a'), '0-2', 'level', '0', 'edge', '0', 'offset', '0', 'ts', ts);
      await raw.hset(keys.chip('vm-a'), 's', '2', 'ts', ts);
      await raw.publish(keys.channel, `vm-a 0 0 0 2 ${ts}`);
      await waitFor(() => got.length === 2, 'the old script\'s event on s1\'s listener');
      // (the line's stored level is still 1: the raw "old script" above moved only the seq)
      await s1.lineOp({ chip: 'vm-a', leaseToken: ta, op: LineOp.SET_VALUE, offset: 0, value: 0 });
      await waitFor(() => got.length === 3, 'the next event');
      await sleep(60);
      assert.deepEqual(got.map((e) => e.seq), [1n, 2n, 3n], 'each event once, in order, though s1 heard the current ones twice');

      // the old replica gone: s1 leaves the fabric's channel, and scripts stop publishing there
      await old.unsubscribe(keys.channel);
      await waitFor(async () => Number(await raw.pubsub('NUMPAT')) === 0, 's1 leaving the fabric\'s channel');
      const spy = new Redis(redis.url);
      const fabricMsgs: string[] = [];
      spy.on('pmessage', (_p: string, _ch: string, msg: string) => fabricMsgs.push(msg));
      await spy.psubscribe(keys.channel);
      try {
        await s1.lineOp({ chip: 'vm-a', leaseToken: ta, op: LineOp.SET_VALUE, offset: 0, value: 1 });
        await waitFor(() => got.length === 4, 'seq 4');
        await sleep(50);
        assert.deepEqual(fabricMsgs, [], 'nothing on the fabric\'s channel without an old replica');
      } finally {
        spy.disconnect();
      }
    } finally {
      old.disconnect();
      await s1.close();
    }
  });
});
