/**
 * Event retention (eventRetention) on both stores, the Redis one on a real redis-server:
 * a chip keeps about its last `retention` events (exactly in memory, at least that many
 * and approximately in Redis, whose MAXLEN ~ trims whole stream nodes); a read from a
 * cursor older than the oldest kept event starts at the oldest kept one, so the caller
 * sees the gap in the first seq; the newest events and the chip's seq are never lost;
 * echoes are kept and marked like any event.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Direction } from '../../services/common/src/line-model.ts';
import { createMemoryStore } from '../../services/linestate/src/store/memory-store.ts';
import { createRedisStore } from '../../services/linestate/src/store/redis-store.ts';
import { LineOp, type LineStore } from '../../services/linestate/src/store/store.ts';
import { startRedis, type RedisHandle } from '../support/redis.ts';
import { uniqueFabric } from './harness.ts';

const RETENTION = 20;
const EVENTS = 500;

for (const kind of ['memory', 'redis'] as const) {
  describe(`event retention on the ${kind} store`, () => {
    let redis: RedisHandle | undefined;
    let store: LineStore;

    before(async () => {
      if (kind === 'redis') redis = await startRedis();
      store = redis !== undefined
        ? await createRedisStore({ url: redis.url, fabric: uniqueFabric(), eventRetention: RETENTION })
        : createMemoryStore({ eventRetention: RETENTION });
    });
    after(async () => {
      await store?.close();
      await redis?.stop();
    });

    it(`${EVENTS} events with a retention of ${RETENTION}: the newest are kept, an old cursor starts at the oldest kept`, async () => {
      const { leaseToken } = await store.registerChip({ chip: 'vm-r', ngpio: 1, names: [], owner: 'test', leaseTtlMs: 60_000 });
      await store.lineOps('vm-r', leaseToken, [{ op: LineOp.SET_DIRECTION, offset: 0, value: Direction.OUT }]);
      for (let done = 0; done < EVENTS; done += 100) {
        const out = await store.lineOps('vm-r', leaseToken, Array.from({ length: 100 }, (_, i) => ({ op: LineOp.SET_VALUE, offset: 0, value: (done + i) % 2 === 0 ? 1 : 0 })));
        assert.ok(out.every((o) => o.ok));
      }
      const chip = (await store.listChips()).find((c) => c.id === 'vm-r');
      assert.equal(chip?.lastSeq, BigInt(EVENTS), 'the chip\'s seq counts every event');
      const kept = await store.readEvents('vm-r', 0n, 0);
      const first = kept[0]?.seq ?? 0n;
      assert.ok(first > 1n, `old events were dropped (first kept seq ${first})`);
      if (kind === 'memory') assert.equal(kept.length, RETENTION, 'memory keeps exactly the retention');
      // Redis trims whole stream nodes (100 entries by default): at least the retention, at most a node more
      else assert.ok(kept.length >= RETENTION && kept.length <= RETENTION + 100, `redis keeps ${kept.length} (retention ${RETENTION}, approximate)`);
      assert.deepEqual(kept.map((e) => e.seq), Array.from({ length: kept.length }, (_, i) => first + BigInt(i)), 'what is kept is contiguous up to the newest');
      assert.equal(kept.at(-1)?.seq, BigInt(EVENTS));
      assert.ok(kept.every((e) => e.echo === true), 'own output changes with no irq type: echoes, kept and marked');
      // a cursor older than the oldest kept event: the read starts at the oldest kept one (the gap shows)
      const fromOld = await store.readEvents('vm-r', 1n, 5);
      assert.equal(fromOld[0]?.seq, first);
      // a cursor inside the kept range reads on from it
      const fromKept = await store.readEvents('vm-r', BigInt(EVENTS - 3), 0);
      assert.deepEqual(fromKept.map((e) => e.seq), [BigInt(EVENTS - 2), BigInt(EVENTS - 1), BigInt(EVENTS)]);
    });
  });
}
