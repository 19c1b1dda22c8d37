/**
 * Same-replica event delivery of the Redis store on a real redis-server: a script's reply
 * carries the events it published and this store's listeners get them at once when they
 * follow the last delivered seq; the pub/sub copy is dropped by seq. Two store instances
 * (two replicas of one fabric) change chips wired to one chip B concurrently, and every
 * listener on either must see B's events exactly once, in seq order, with no gap: the
 * same sequence readEvents returns. A relay between one store and Redis holds back the
 * bytes of that store's subscriber connection to show that its own operations still
 * reach its listeners while pub/sub is slow, and that order and uniqueness hold when the
 * held messages arrive. A replica skips the events of chips nobody on it listens to; a
 * listener that comes later gets only what happens from then on.
 */
import assert from 'node:assert/strict';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Direction, DriveMode, DriveValue, Pull } from '../../services/common/src/line-model.ts';
import { createRedisStore } from '../../services/linestate/src/store/redis-store.ts';
import { LineOp, type LineAddress, type LineEventRecord, type LineStore } from '../../services/linestate/src/store/store.ts';
import { startRedis, type RedisHandle } from '../support/redis.ts';
import { uniqueFabric } from './harness.ts';
import { sleep, waitFor } from '../support/wait.ts';

const at = (chip: string, offset: number): LineAddress => ({ chip, line: { kind: 'offset', offset } });

const lastSeq = async (s: LineStore, chip: string): Promise<bigint> => (await s.listChips()).find((c) => c.id === chip)?.lastSeq ?? 0n;

/** Every event of `chip` from the stream (paged). */
async function allEvents(s: LineStore, chip: string): Promise<LineEventRecord[]> {
  const out: LineEventRecord[] = [];
  for (;;) {
    const page = await s.readEvents(chip, out[out.length - 1]?.seq ?? 0n, 10_000);
    out.push(...page);
    if (page.length < 10_000) return out;
  }
}

/** Assert `seen` is exactly `expected` (every event once, in order) and its seqs run 1, 2, 3... */
function assertExactly(seen: readonly LineEventRecord[], expected: readonly LineEventRecord[], who: string): void {
  const seqs = seen.map((e) => e.seq);
  for (let i = 0; i < seqs.length; i++) {
    if (seqs[i] !== BigInt(i + 1)) assert.fail(`${who}: event ${i} has seq ${seqs[i]}, expected ${i + 1} (seqs around it: ${seqs.slice(Math.max(0, i - 3), i + 4).join(' ')})`);
  }
  assert.equal(seen.length, expected.length, `${who}: number of events`);
  assert.deepEqual(seen, expected, `${who}: the events readEvents returns`);
}

/**
 * A TCP relay to Redis that can hold back what Redis sends on subscriber connections
 * (those that sent SUBSCRIBE) while everything else flows; releasing delivers what was
 * held, in order.
 */
interface SubscriberRelay {
  readonly url: string;
  hold(on: boolean): void;
  /** Bytes held back so far (pub/sub messages that did not reach the store yet). */
  held(): number;
  subscribers(): number;
  close(): Promise<void>;
}

async function startSubscriberRelay(redisPort: number): Promise<SubscriberRelay> {
  let holding = false;
  let heldBytes = 0;
  const pipes = new Set<{ client: Socket; upstream: Socket; sub: boolean; queue: Buffer[] }>();
  const server: Server = createServer((client) => {
    const upstream = connect(redisPort, '127.0.0.1');
    const p = { client, upstream, sub: false, queue: [] as Buffer[] };
    pipes.add(p);
    const drop = (): void => {
      client.destroy();
      upstream.destroy();
      pipes.delete(p);
    };
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', drop);
    upstream.on('close', drop);
    client.on('data', (d: Buffer) => {
      if (/\r\nsubscribe\r\n/i.test(d.toString('latin1'))) p.sub = true;
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      if (p.sub && (holding || p.queue.length > 0)) {
        heldBytes += d.length;
        p.queue.push(d);
      } else client.write(d);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  return {
    url: `redis://127.0.0.1:${port}`,
    hold: (on) => {
      holding = on;
      if (!on) for (const p of pipes) for (const d of p.queue.splice(0)) p.client.write(d);
    },
    held: () => heldBytes,
    subscribers: () => [...pipes].filter((p) => p.sub).length,
    close: async () => {
      for (const p of pipes) {
        p.client.destroy();
        p.upstream.destroy();
      }
      pipes.clear();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe('Redis store: same-replica event delivery', () => {
  let redis: RedisHandle;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis?.stop();
  });

  for (const jitter of [false, true]) {
    const how = jitter ? ', replica 1\'s pub/sub held back on and off meanwhile' : '';
    it(`two replicas changing chips wired to B concurrently${how}: every listener sees B's events once, in seq order, as readEvents`, async () => {
      await concurrentReplicas(redis, jitter);
    });
  }

  it('a store\'s own operations reach its listeners while its pub/sub connection is held back; order and uniqueness hold when it catches up', async () => {
    const fabric = uniqueFabric();
    const relay = await startSubscriberRelay(redis.port);
    const s1 = await createRedisStore({ url: relay.url, fabric, commandTimeoutMs: 5000 });
    const s2 = await createRedisStore({ url: redis.url, fabric });
    try {
      const ta = (await s1.registerChip({ chip: 'vm-a', ngpio: 2, names: [], owner: 'a', leaseTtlMs: 60_000 })).leaseToken;
      await s1.registerChip({ chip: 'vm-b', ngpio: 2, names: [], owner: 'b', leaseTtlMs: 60_000 });
      await s1.wire({ name: 'ab', members: [at('vm-a', 0), at('vm-b', 0)], pull: Pull.NONE, driveMode: DriveMode.PUSH_PULL });
      const seen: LineEventRecord[] = [];
      await s1.subscribe(['vm-b'], (e) => seen.push(e));
      assert.equal(relay.subscribers(), 1, 'the relay recognised the store\'s subscriber connection');
      const op = (value: number) => ({ op: LineOp.SET_VALUE, offset: 0, value });
      await s1.lineOps('vm-a', ta, [{ op: LineOp.SET_DIRECTION, offset: 0, value: Direction.OUT }, op(1)]);
      // the first event of a chip comes through pub/sub (nothing was delivered for it before)
      await waitFor(() => seen.length === 1, 'the first event, through pub/sub');

      relay.hold(true);
      await s1.lineOps('vm-a', ta, [op(0), op(1), op(0)]);
      await s1.lineOp({ chip: 'vm-a', leaseToken: ta, ...op(1) });
      await waitFor(() => seen.length === 5, 'the events of this store\'s own operations while pub/sub is held back', 3000);
      assert.deepEqual(seen.map((e) => e.seq), [1n, 2n, 3n, 4n, 5n]);
      assert.ok(relay.held() > 0, 'the pub/sub copies of those events were indeed held back');

      // a change through the other replica (seq 6) can only come by pub/sub: the next own
      // event (seq 7) must wait for it rather than overtake it
      await s2.drive({ kind: 'line', line: at('vm-b', 1) }, DriveValue.HIGH);
      await s1.lineOp({ chip: 'vm-a', leaseToken: ta, ...op(0) });
      await sleep(200);
      assert.deepEqual(seen.map((e) => e.seq), [1n, 2n, 3n, 4n, 5n], 'no event ahead of one not yet delivered');

      relay.hold(false);
      await waitFor(() => seen.length >= 7, 'the held events once pub/sub catches up');
      // one more change by the other replica: once it is here, every held copy has been processed
      await s2.drive({ kind: 'line', line: at('vm-b', 1) }, DriveValue.LOW);
      await waitFor(() => seen.length >= 8, 'the last event');
      await sleep(50);
      assertExactly(seen, await allEvents(s1, 'vm-b'), 'the listener');
      assert.equal(seen.length, 8);
    } finally {
      relay.hold(false);
      await s1.close();
      await s2.close();
      await relay.close();
    }
  });

  it('a listener that comes after unwatched traffic gets only what happens from then on, on the replica that made it and on the other', async () => {
    const fabric = uniqueFabric();
    const s1 = await createRedisStore({ url: redis.url, fabric });
    const s2 = await createRedisStore({ url: redis.url, fabric });
    try {
      const tx = (await s1.registerChip({ chip: 'vm-x', ngpio: 2, names: [], owner: 'x', leaseTtlMs: 60_000 })).leaseToken;
      await s1.registerChip({ chip: 'vm-y', ngpio: 2, names: [], owner: 'y', leaseTtlMs: 60_000 });
      const toggle = (v: number) => ({ op: LineOp.SET_VALUE, offset: 0, value: v });
      // vm-x watched on both replicas for two events (seq 1, 2), then nobody watches it
      const first: LineEventRecord[] = [];
      const x1 = await s1.subscribe(['vm-x'], (e) => first.push(e));
      const x2 = await s2.subscribe(['vm-x'], (e) => first.push(e));
      await s1.lineOps('vm-x', tx, [{ op: LineOp.SET_DIRECTION, offset: 0, value: Direction.OUT }, toggle(1)]);
      await s1.lineOp({ chip: 'vm-x', leaseToken: tx, ...toggle(0) });
      await waitFor(() => first.length === 4, 'seq 1 and 2 on both replicas');
      x1.close();
      x2.close();
      // both replicas listen to vm-y only while vm-x changes three more times (seq 3-5)
      const early: LineEventRecord[] = [];
      const y1 = await s1.subscribe(['vm-y'], (e) => early.push(e));
      const y2 = await s2.subscribe(['vm-y'], (e) => early.push(e));
      await s1.lineOps('vm-x', tx, [toggle(1), toggle(0)]);
      await s1.lineOp({ chip: 'vm-x', leaseToken: tx, ...toggle(1) });
      // the last one's pub/sub copy has been through s2 once a later vm-y event arrives there
      await s2.drive({ kind: 'line', line: at('vm-y', 0) }, DriveValue.HIGH);
      await waitFor(() => early.length === 2, 'vm-y\'s event on both replicas');
      assert.equal(await lastSeq(s1, 'vm-x'), 5n);

      // new listeners get seq 6, 7, 8 only: not 3-5 as a "gap" after the 2 they had seen
      const late1: LineEventRecord[] = [];
      const late2: LineEventRecord[] = [];
      await s1.subscribe(['vm-x'], (e) => late1.push(e));
      await s2.subscribe(['vm-x'], (e) => late2.push(e));
      await s1.lineOp({ chip: 'vm-x', leaseToken: tx, ...toggle(0) });
      await s2.lineOp({ chip: 'vm-x', leaseToken: tx, ...toggle(1) });
      await s1.lineOps('vm-x', tx, [toggle(0)]);
      await waitFor(() => late1.length >= 3 && late2.length >= 3, 'the three new events on both replicas');
      await sleep(100);
      assert.deepEqual(late1.map((e) => e.seq), [6n, 7n, 8n], 'replica 1: only the events after it subscribed');
      assert.deepEqual(late2.map((e) => e.seq), [6n, 7n, 8n], 'replica 2: only the events after it subscribed');
      y1.close();
      y2.close();
    } finally {
      await s1.close();
      await s2.close();
    }
  });
});

async function concurrentReplicas(redis: RedisHandle, jitter: boolean): Promise<void> {
  const fabric = uniqueFabric();
  const relay = await startSubscriberRelay(redis.port);
  const s1 = await createRedisStore({ url: relay.url, fabric, commandTimeoutMs: 5000 });
  const s2 = await createRedisStore({ url: redis.url, fabric });
  let running = true;
  try {
    const ta = (await s1.registerChip({ chip: 'vm-a', ngpio: 4, names: [], owner: 'a', leaseTtlMs: 60_000 })).leaseToken;
    const tb = (await s2.registerChip({ chip: 'vm-b', ngpio: 8, names: [], owner: 'b', leaseTtlMs: 60_000 })).leaseToken;
    const tc = (await s2.registerChip({ chip: 'vm-c', ngpio: 2, names: [], owner: 'c', leaseTtlMs: 60_000 })).leaseToken;
    await s1.wire({ name: 'ab0', members: [at('vm-a', 0), at('vm-b', 0)], pull: Pull.NONE, driveMode: DriveMode.PUSH_PULL });
    await s2.wire({ name: 'ab1', members: [at('vm-a', 1), at('vm-b', 1)], pull: Pull.NONE, driveMode: DriveMode.PUSH_PULL });
    await s1.wire({ name: 'cb', members: [at('vm-c', 0), at('vm-b', 2)], pull: Pull.NONE, driveMode: DriveMode.PUSH_PULL });
    await s1.lineOps('vm-a', ta, [{ op: LineOp.SET_DIRECTION, offset: 0, value: Direction.OUT }, { op: LineOp.SET_DIRECTION, offset: 1, value: Direction.OUT }]);
    await s2.lineOp({ chip: 'vm-c', leaseToken: tc, op: LineOp.SET_DIRECTION, offset: 0, value: Direction.OUT });
    await s1.lineOps('vm-b', tb, [{ op: LineOp.SET_DIRECTION, offset: 3, value: Direction.OUT }]);
    assert.equal(await lastSeq(s1, 'vm-b'), 0n, 'no event of vm-b yet');

    const seen: Record<string, LineEventRecord[]> = { s1: [], s1all: [], s2: [], s2all: [] };
    await s1.subscribe(['vm-b'], (e) => seen['s1']!.push(e));
    await s1.subscribe([], (e) => { if (e.chip === 'vm-b') seen['s1all']!.push(e); });
    await s2.subscribe(['vm-b'], (e) => seen['s2']!.push(e));
    await s2.subscribe(['vm-c', 'vm-b'], (e) => { if (e.chip === 'vm-b') seen['s2all']!.push(e); });

    const N = 100;
    const loops: Promise<void>[] = [
      // replica 1: batches on vm-a:0 (3 level changes of vm-b:0 each)
      (async () => {
        for (let i = 0; i < N; i++) {
          const v = i % 2 === 0 ? 1 : 0;
          await s1.lineOps('vm-a', ta, [{ op: LineOp.SET_VALUE, offset: 0, value: v }, { op: LineOp.SET_VALUE, offset: 0, value: 1 - v }, { op: LineOp.SET_VALUE, offset: 0, value: v }]);
        }
      })(),
      // replica 2: batches on vm-a:1, the same chip through the other replica
      (async () => {
        for (let i = 0; i < N; i++) await s2.lineOps('vm-a', ta, [{ op: LineOp.SET_VALUE, offset: 1, value: (i + 1) % 2 }, { op: LineOp.GET_VALUE, offset: 1, value: 0 }]);
      })(),
      // replica 2: single operations on vm-c:0
      (async () => {
        for (let i = 0; i < N; i++) await s2.lineOp({ chip: 'vm-c', leaseToken: tc, op: LineOp.SET_VALUE, offset: 0, value: (i + 1) % 2 });
      })(),
      // replica 1: vm-b's own line through its lease
      (async () => {
        for (let i = 0; i < N; i++) await s1.lineOp({ chip: 'vm-b', leaseToken: tb, op: LineOp.SET_VALUE, offset: 3, value: (i + 1) % 2 });
      })(),
      // both replicas: operator drives of vm-b:4 and vm-b:5 (pub/sub only)
      (async () => {
        for (let i = 0; i < N; i++) await s2.drive({ kind: 'line', line: at('vm-b', 4) }, i % 2 === 0 ? DriveValue.HIGH : DriveValue.LOW);
      })(),
      (async () => {
        for (let i = 0; i < N; i++) {
          await s1.drive({ kind: 'line', line: at('vm-b', 5) }, i % 2 === 0 ? DriveValue.HIGH : DriveValue.LOW);
          if (i % 7 === 0) await s1.lineOps('vm-b', tb, [{ op: LineOp.SET_VALUE, offset: 3, value: 1 }, { op: LineOp.SET_VALUE, offset: 3, value: 0 }]);
        }
      })(),
    ];
    // replica 1's subscriber: its pub/sub messages held back for a few ms now and then
    const toggler = (async () => {
      while (jitter && running) {
        relay.hold(true);
        await sleep(Math.floor(Math.random() * 15));
        relay.hold(false);
        await sleep(Math.floor(Math.random() * 10));
      }
    })();
    await Promise.all(loops);
    running = false;
    await toggler;
    if (jitter) assert.ok(relay.held() > 0, 'pub/sub messages were held back at times');
    const last = await lastSeq(s1, 'vm-b');
    assert.ok(last >= BigInt(4 * N), `vm-b got many events (${last})`);
    for (const [who, list] of Object.entries(seen)) {
      await waitFor(() => (list[list.length - 1]?.seq ?? 0n) >= last, `${who}: the newest event of vm-b (seq ${last}; has ${list.length})`);
    }
    // let any late duplicate arrive: a final event through each replica, seen by every listener, comes after all earlier ones
    await s2.drive({ kind: 'line', line: at('vm-b', 6) }, DriveValue.HIGH);
    await s1.lineOp({ chip: 'vm-b', leaseToken: tb, op: LineOp.SET_VALUE, offset: 3, value: 1 });
    const final = await lastSeq(s1, 'vm-b');
    for (const [who, list] of Object.entries(seen)) await waitFor(() => (list[list.length - 1]?.seq ?? 0n) >= final, `${who}: the final events`);
    await sleep(50);
    const expected = await allEvents(s1, 'vm-b');
    assert.equal(expected.length, Number(final));
    for (const [who, list] of Object.entries(seen)) assertExactly(list, expected, who);
  } finally {
    running = false;
    relay.hold(false);
    await s1.close();
    await s2.close();
    await relay.close();
  }
}
