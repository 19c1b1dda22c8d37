/**
 * Group commit of the Redis store's lineOps on a real redis-server: while
 * LINEOPS_IN_FLIGHT scripts run, further batches wait and then run together as one
 * lineops script (counted with INFO commandstats); each batch still gets exactly its own
 * outcome (a stale lease or an unknown chip fails only its batch), batches apply in the
 * order given (two batches of one chip: the second sees the first; each reports the
 * chip's seq after itself), and more than MAX_OP_BATCH waiting operations are split over
 * several scripts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { ErrorCode, FabricError } from '../../services/common/src/errors.ts';
import { Direction } from '../../services/common/src/line-model.ts';
import { LINEOPS_IN_FLIGHT, createRedisStore } from '../../services/linestate/src/store/redis-store.ts';
import { LineOp, type BatchLineOp, type LineOpOutcome, type LineStore } from '../../services/linestate/src/store/store.ts';
import { MAX_OP_BATCH } from '../../services/linestate/src/store/validate.ts';
import { startRedis, type RedisHandle } from '../support/redis.ts';
import { uniqueFabric } from './harness.ts';

const set = (offset: number, value: number): BatchLineOp => ({ op: LineOp.SET_VALUE, offset, value });
const get = (offset: number): BatchLineOp => ({ op: LineOp.GET_VALUE, offset, value: 0 });
const brief = (os: readonly LineOpOutcome[]): (string | [number, bigint, number])[] => os.map((o) => (o.ok ? [o.value, o.seq, o.level] : o.error.code));

describe('RedisStore lineOps group commit', () => {
  let redis: RedisHandle;
  let store: LineStore;
  let info: Redis;
  const tokens = new Map<string, bigint>();
  /** lineops scripts run since the last call (EVALSHA calls in INFO commandstats). */
  const scripts = async (): Promise<number> => {
    const line = (await info.info('commandstats')).split('\n').find((l) => l.startsWith('cmdstat_evalsha:'));
    await info.config('RESETSTAT');
    return Number(/calls=(\d+)/.exec(line ?? '')?.[1] ?? 0);
  };

  before(async () => {
    redis = await startRedis();
    store = await createRedisStore({ url: redis.url, fabric: uniqueFabric() });
    info = new Redis(redis.url);
    for (const chip of ['vm-a', 'vm-b', 'vm-c']) {
      const r = await store.registerChip({ chip, ngpio: 1024, names: [], owner: 'test', leaseTtlMs: 60_000 });
      tokens.set(chip, r.leaseToken);
      await store.lineOps(chip, r.leaseToken, [0, 1, 2, 3].map((offset) => ({ op: LineOp.SET_DIRECTION, offset, value: Direction.OUT })));
    }
  });
  after(async () => {
    info?.disconnect();
    await store?.close();
    await redis?.stop();
  });

  it(`batches beyond ${LINEOPS_IN_FLIGHT} running scripts: one script for them, each batch its own outcome, in order`, async () => {
    const t = (chip: string): bigint => tokens.get(chip)!;
    await scripts();
    // these go out at once, one script each ...
    const first = Array.from({ length: LINEOPS_IN_FLIGHT }, () => store.lineOps('vm-b', t('vm-b'), [get(3)]));
    // ... and these wait for one of them to answer, then go together
    const [a1, b, stale, unknown, a2, c] = await Promise.all([
      store.lineOps('vm-a', t('vm-a'), [set(0, 1), set(1, 1)]), // vm-a seq 1, 2
      store.lineOps('vm-b', t('vm-b'), [set(0, 1), get(0)]), // vm-b seq 1
      store.lineOps('vm-c', t('vm-c') + 7n, [set(0, 1)]).catch((e: unknown) => e), // rejects: the whole batch failed
      store.lineOps('vm-zz', 1n, [get(0)]).catch((e: unknown) => e),
      store.lineOps('vm-a', t('vm-a'), [get(0), set(0, 0), set(2, 1)]), // after the first vm-a batch: seq 3, 4
      store.lineOps('vm-c', t('vm-c'), [get(0), set(9999, 1)]),
    ]);
    assert.ok((await Promise.all(first)).every((r) => r.length === 1 && r[0]?.ok === true));
    assert.equal(await scripts(), LINEOPS_IN_FLIGHT + 1, 'one lineops script for the six batches that waited');
    assert.deepEqual(brief(a1 as LineOpOutcome[]), [[0, 2n, 1], [0, 2n, 1]]);
    assert.deepEqual(brief(b as LineOpOutcome[]), [[0, 1n, 1], [1, 1n, 1]]);
    assert.deepEqual(brief(a2 as LineOpOutcome[]), [[1, 4n, 0], [0, 4n, 0], [0, 4n, 1]], 'the second vm-a batch sees the first');
    const cs = c as LineOpOutcome[];
    assert.deepEqual(brief(cs), [[0, 0n, 0], ErrorCode.INVALID_ARGUMENT]);
    assert.ok(cs[1] !== undefined && !cs[1].ok && /offset 9999 is out of range/.test(cs[1].error.message));
    for (const [what, e, code, msg] of [['stale lease', stale, ErrorCode.FAILED_PRECONDITION, /stale lease token/], ['unknown chip', unknown, ErrorCode.NOT_FOUND, /chip vm-zz does not exist/]] as const) {
      assert.ok(e instanceof FabricError, `${what}: the batch rejects with a FabricError`);
      assert.equal(e.code, code, what);
      assert.match(e.message, msg, what);
    }
    // nothing of the failed batches applied; the rest is the state
    assert.equal((await store.getLine({ chip: 'vm-c', line: { kind: 'offset', offset: 0 } })).level, 0);
    assert.deepEqual((await store.readEvents('vm-a', 0n, 0)).map((e) => [e.offset, e.level, e.seq]), [[0, 1, 1n], [1, 1, 2n], [0, 0, 3n], [2, 1, 4n]]);
  });

  it(`more than ${MAX_OP_BATCH} waiting operations: several scripts, every operation answered in order`, async () => {
    const t = tokens.get('vm-b')!;
    const before = (await store.listChips()).find((x) => x.id === 'vm-b')!.lastSeq;
    await scripts();
    const fill = Array.from({ length: LINEOPS_IN_FLIGHT }, () => store.lineOps('vm-b', t, [get(3)]));
    // three batches of 600 of distinct lines wait: 1800 operations, at most 1024 per script
    const rounds = await Promise.all([0, 1, 2].map((k) => store.lineOps('vm-b', t, Array.from({ length: 600 }, (_, i) => ({ op: LineOp.SET_DIRECTION, offset: 4 + ((k * 600 + i) % 1020), value: Direction.OUT })))));
    await Promise.all(fill);
    const n = (await scripts()) - LINEOPS_IN_FLIGHT;
    assert.equal(n, 3, `${n} scripts for 3 waiting batches of 600 operations (two never fit in one)`);
    for (const r of rounds) assert.ok(r.length === 600 && r.every((o) => o.ok), 'every operation answered ok');
    const fill2 = Array.from({ length: LINEOPS_IN_FLIGHT }, () => store.lineOps('vm-b', t, [get(3)]));
    const toggles = await Promise.all([0, 1].map((k) => store.lineOps('vm-b', t, Array.from({ length: 700 }, (_, i) => set(4 + i, k === 0 ? 1 : 0)))));
    await Promise.all(fill2);
    // each batch's levels are those after it: the first set the lines, the second (after it) cleared them
    assert.ok(toggles[0]!.every((o) => o.ok && o.level === 1));
    assert.ok(toggles[1]!.every((o) => o.ok && o.level === 0));
    assert.equal((await store.listChips()).find((x) => x.id === 'vm-b')!.lastSeq, before + 1400n);
  });
});
