/**
 * OpStream over real gRPC: the raw stream (client.opStream) against the service on the
 * memory store and on the Redis store (a real redis-server), and the batching
 * OpStreamClient against the service, a TCP proxy that cuts connections, a service that
 * is down, one that never answers, and one without OpStream (unary fallback).
 */
import assert from 'node:assert/strict';
import { createServer, type Server as NetServer, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import {
  Server, ServerCredentials, status as GrpcStatus,
  type sendUnaryData, type ServerDuplexStream, type ServerUnaryCall, type ServiceDefinition, type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { createMetricsRegistry } from '../../services/common/src/metrics.ts';
import { ErrorCode, FabricError, isFabricError } from '../../services/common/src/errors.ts';
import {
  LineOpType, LineStateServiceService,
  type LineOpBatch, type LineOpItem, type LineOpRequest, type LineOpResponse, type LineOpResult, type LineOpResultBatch,
} from '../../services/common/src/gen/gpiofabric/v1/linestate.ts';
import { createLineStateClient, type LineStateClient } from '../../services/linestate/src/client.ts';
import { grpcStatusOf } from '../../services/linestate/src/grpc/status.ts';
import { lineStateMetrics } from '../../services/linestate/src/metrics.ts';
import { OpStreamClient } from '../../services/linestate/src/op-stream.ts';
import { startLineStateServer, type LineStateServer } from '../../services/linestate/src/server.ts';
import { createMemoryStore } from '../../services/linestate/src/store/memory-store.ts';
import type { LineOp, LineStore } from '../../services/linestate/src/store/store.ts';
import { MAX_OP_BATCH } from '../../services/linestate/src/store/validate.ts';
import { parseExposition, type Exposition } from '../metrics/exposition.ts';
import { freePort, type RedisHandle } from '../support/redis.ts';
import { startTcpProxy } from '../support/tcp-proxy.ts';
import { redisStore, startRedis, uniqueFabric, type StoreKind } from './harness.ts';
import { sleep, waitFor } from '../support/wait.ts';

const OP = LineOpType;
const off = (chip: string, offset: number) => ({ chip, line: { $case: 'offset' as const, value: offset } });
const item = (id: number, op: number, offset: number, value = 0): LineOpItem => ({ id, op: op as LineOpItem['op'], offset, value });
/** A successful result: its value and its line's level at the end of the batch. */
const okResult = (id: number, value: number, level: number): LineOpResult => ({ id, code: GrpcStatus.OK, value, message: '', level });

/** Fail (instead of hanging the file) when `p` does not settle within `ms`. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: not settled within ${ms} ms`)), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

/** The error `p` rejects with (a FabricError), or a failure when it resolves. */
async function failure(p: Promise<unknown>): Promise<FabricError> {
  try {
    const v = await p;
    assert.fail(`expected a failure, got the value ${String(v)}`);
  } catch (e) {
    assert.ok(isFabricError(e), `expected a FabricError, got ${String(e)}`);
    return e;
  }
}

/** A raw OpStream that collects result batches. */
interface RawStream {
  readonly batches: LineOpResultBatch[];
  send(b: LineOpBatch): void;
  end(): void;
  cancel(): void;
  /** The next result batch not yet taken. */
  next(): Promise<LineOpResultBatch>;
  /** Results of all ids in `ids` (from batches received so far and later), by id. */
  results(ids: readonly number[]): Promise<Map<number, LineOpResult>>;
  /** 'end' on a clean end by the service, or the stream's error. */
  readonly over: Promise<'end' | FabricError>;
  isOver(): boolean;
}

function rawStream(c: LineStateClient): RawStream {
  const batches: LineOpResultBatch[] = [];
  let taken = 0;
  let wake: (() => void) | undefined;
  let done = false;
  let settle: (v: 'end' | FabricError) => void = () => {};
  const over = new Promise<'end' | FabricError>((r) => { settle = r; });
  const h = c.opStream(
    (b) => { batches.push(b); wake?.(); },
    (e) => { done = true; settle(e); wake?.(); },
    () => { done = true; settle('end'); wake?.(); },
  );
  const arrived = async (cond: () => boolean, what: string): Promise<void> => {
    const deadline = Date.now() + 5000;
    while (!cond()) {
      if (done) {
        const o = await over;
        throw new Error(`${what}: the stream is over (${o === 'end' ? 'ended' : `${o.code}: ${o.message}`})`);
      }
      if (Date.now() > deadline) throw new Error(`${what}: nothing within 5 s`);
      await new Promise<void>((r) => { wake = r; setTimeout(r, 50); });
      wake = undefined;
    }
  };
  return {
    batches,
    send: (b) => h.write(b),
    end: () => h.end(),
    cancel: () => h.cancel(),
    next: async () => {
      await arrived(() => batches.length > taken, 'a result batch');
      return batches[taken++]!;
    },
    results: async (ids) => {
      const byId = (): Map<number, LineOpResult> => new Map(batches.flatMap((b) => b.results).map((r) => [r.id, r]));
      await arrived(() => { const m = byId(); return ids.every((i) => m.has(i)); }, `results of ${ids.length} operations`);
      return byId();
    },
    over,
    isOver: () => done,
  };
}

/** A service with metrics over `store`. */
async function serve(store: LineStore, kind: StoreKind, listen = '127.0.0.1:0'): Promise<{ server: LineStateServer; scrape: () => Promise<Exposition> }> {
  const registry = createMetricsRegistry({ defaultMetrics: false });
  const metrics = lineStateMetrics({ registry, store, storeKind: kind, sampleCacheMs: 0 });
  const server = await startLineStateServer({ store, listen, log: () => {}, metrics });
  return { server, scrape: async () => parseExposition(await registry.metrics()) };
}

for (const kind of ['memory', 'redis'] as const satisfies readonly StoreKind[]) {
  describe(`OpStream on the ${kind} store`, () => {
    let redis: RedisHandle | undefined;
    let store: LineStore;
    let server: LineStateServer;
    let scrape: () => Promise<Exposition>;
    let client: LineStateClient;
    let chips = 0;
    /** A fresh chip of `ngpio` lines; returns its id and lease token. */
    const chip = async (ngpio = 4): Promise<{ id: string; token: string }> => {
      const id = `vm-${++chips}`;
      const r = await client.registerChip({ chip: id, ngpio, names: [], owner: `agent-${id}`, leaseTtlMs: 0 });
      return { id, token: r.leaseToken };
    };
    const storeCalls = async (op: string): Promise<number> => (await scrape()).value('gpiofabric_linestate_store_duration_seconds_count', { op, store: kind });

    before(async () => {
      if (kind === 'redis') redis = await startRedis();
      store = kind === 'memory' ? createMemoryStore() : await redisStore(redis!.url, uniqueFabric());
      ({ server, scrape } = await serve(store, kind));
      client = createLineStateClient(server.address);
    });
    after(async () => {
      client?.close();
      await server?.close();
      await store?.close();
      await redis?.stop();
    });

    it('raw stream: every operation answered by id, in batch order, with code 0 and its value', async () => {
      const { id, token } = await chip();
      const s = rawStream(client);
      try {
        s.send({ chip: id, leaseToken: token, ops: [
          item(1000, OP.LINE_OP_TYPE_SET_DIRECTION, 0, 1),
          item(7, OP.LINE_OP_TYPE_SET_VALUE, 0, 1),
          item(0xffff_ffff, OP.LINE_OP_TYPE_GET_VALUE, 0),
          item(0, OP.LINE_OP_TYPE_GET_DIRECTION, 0),
          item(3, OP.LINE_OP_TYPE_SET_IRQ_TYPE, 2, 3),
          item(5, OP.LINE_OP_TYPE_GET_VALUE, 1),
        ] });
        assert.deepEqual(await s.next(), {
          results: [okResult(1000, 0, 1), okResult(7, 0, 1), okResult(0xffff_ffff, 1, 1), okResult(0, 1, 1), okResult(3, 0, 0), okResult(5, 0, 0)],
          seq: '1',
        }, "each line's level and the chip's seq at the end of the batch");
        // several batches in flight at once: each answered, matched by id
        s.send({ chip: id, leaseToken: token, ops: [item(11, OP.LINE_OP_TYPE_SET_VALUE, 0, 0), item(12, OP.LINE_OP_TYPE_GET_VALUE, 0)] });
        s.send({ chip: id, leaseToken: token, ops: [item(21, OP.LINE_OP_TYPE_SET_DIRECTION, 1, 2), item(22, OP.LINE_OP_TYPE_GET_DIRECTION, 1)] });
        s.send({ chip: id, leaseToken: token, ops: [item(31, OP.LINE_OP_TYPE_GET_DIRECTION, 3)] });
        const r = await s.results([11, 12, 21, 22, 31]);
        assert.deepEqual([11, 12, 21, 22, 31].map((i) => r.get(i)), [okResult(11, 0, 0), okResult(12, 0, 0), okResult(21, 0, 0), okResult(22, 2, 0), okResult(31, 0, 0)]);
        assert.deepEqual(s.batches.slice(1).map((x) => x.seq), ['2', '2', '2']);
        assert.equal(s.batches.length, 4, 'one result message per batch');
        // the stream's changes are the fabric's state
        const lines = await client.listLines({ chip: id });
        assert.deepEqual(lines.map((l) => [l.direction, l.outputValue, l.level, l.irqType]), [[1, 0, 0, 0], [2, 0, 0, 0], [0, 0, 0, 3], [0, 0, 0, 0]]);
        assert.equal(s.isOver(), false);
      } finally {
        s.cancel();
      }
    });

    it('raw stream: per-operation errors carry their code and a message a person can act on; the stream stays usable', async () => {
      const { id, token } = await chip();
      const s = rawStream(client);
      const b = await scrape();
      try {
        s.send({ chip: id, leaseToken: token, ops: [
          item(1, OP.LINE_OP_TYPE_GET_VALUE, 0),
          item(2, OP.LINE_OP_TYPE_SET_VALUE, 99, 1),
          item(3, OP.LINE_OP_TYPE_SET_VALUE, 0, 2),
          item(4, OP.LINE_OP_TYPE_UNSPECIFIED, 0),
          item(5, OP.LINE_OP_TYPE_SET_DIRECTION, 1, 1),
          item(6, OP.LINE_OP_TYPE_SET_IRQ_TYPE, 1, 5),
          item(7, OP.LINE_OP_TYPE_GET_DIRECTION, 1),
        ] });
        const r1 = (await s.next()).results;
        assert.deepEqual(r1.map((x) => [x.id, x.code]), [[1, 0], [2, 3], [3, 3], [4, 3], [5, 0], [6, 3], [7, 0]], JSON.stringify(r1));
        assert.equal(r1[6]!.value, 1, 'the valid operations of the batch applied in order');
        assert.match(r1[1]!.message, /offset 99 is out of range for chip vm-\d+ \(0\.\.3\)/);
        assert.match(r1[2]!.message, /value 2 is not 0 or 1/);
        assert.match(r1[3]!.message, /op 0 is not a line operation: use .*GET_VALUE/);
        assert.match(r1[5]!.message, /irq type .*5|SET_IRQ_TYPE value 5/i);
        for (const x of r1) {
          if (x.code === 0) assert.equal(x.message, '');
          else assert.equal(x.value, 0);
        }
        // a stale lease: every operation of the batch fails FAILED_PRECONDITION (9)
        const stale = (BigInt(token) + 100n).toString();
        s.send({ chip: id, leaseToken: stale, ops: [item(10, OP.LINE_OP_TYPE_SET_VALUE, 1, 1), item(11, OP.LINE_OP_TYPE_GET_VALUE, 1)] });
        const r2 = (await s.next()).results;
        assert.deepEqual(r2.map((x) => [x.id, x.code]), [[10, 9], [11, 9]]);
        for (const x of r2) assert.match(x.message, new RegExp(`stale lease token ${stale}, current ${token}`));
        // an unknown chip: NOT_FOUND (5), naming the chip
        s.send({ chip: 'vm-nope', leaseToken: token, ops: [item(20, OP.LINE_OP_TYPE_GET_VALUE, 0), item(21, OP.LINE_OP_TYPE_SET_VALUE, 0, 1)] });
        const r3 = (await s.next()).results;
        assert.deepEqual(r3.map((x) => [x.id, x.code]), [[20, 5], [21, 5]]);
        for (const x of r3) assert.match(x.message, /chip vm-nope does not exist/);
        // and the stream still works
        s.send({ chip: id, leaseToken: token, ops: [item(30, OP.LINE_OP_TYPE_SET_VALUE, 1, 1), item(31, OP.LINE_OP_TYPE_GET_VALUE, 1)] });
        assert.deepEqual((await s.next()).results, [okResult(30, 0, 1), okResult(31, 1, 1)]);
        assert.equal(s.isOver(), false);
        // nothing but the valid operations changed anything
        const lines = await client.listLines({ chip: id });
        assert.deepEqual(lines.map((l) => [l.direction, l.outputValue, l.level, l.irqType]), [[0, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]);
        const a = await scrape();
        const d = (name: string, labels: Record<string, string>): number => a.value(name, labels) - b.value(name, labels);
        assert.equal(d('gpiofabric_linestate_stream_ops_total', { code: 'OK' }), 5);
        assert.equal(d('gpiofabric_linestate_stream_ops_total', { code: 'INVALID_ARGUMENT' }), 4);
        assert.equal(d('gpiofabric_linestate_stream_ops_total', { code: 'FAILED_PRECONDITION' }), 2);
        assert.equal(d('gpiofabric_linestate_stream_ops_total', { code: 'NOT_FOUND' }), 2);
        assert.equal(d('gpiofabric_linestate_errors_total', { cause: 'INVALID_ARGUMENT' }), 4);
        assert.equal(d('gpiofabric_linestate_errors_total', { cause: 'FAILED_PRECONDITION' }), 2);
        assert.equal(d('gpiofabric_linestate_errors_total', { cause: 'NOT_FOUND' }), 2);
      } finally {
        s.cancel();
      }
    });

    it('raw stream: an invalid chip id or an oversized batch fails every operation of that batch, and changes nothing', async () => {
      const { id, token } = await chip();
      const s = rawStream(client);
      try {
        for (const [bad, re] of [['vm a', /chip/], ['', /chip is required/], ['x'.repeat(65), /chip/]] as const) {
          s.send({ chip: bad, leaseToken: token, ops: [item(1, OP.LINE_OP_TYPE_GET_VALUE, 0), item(2, OP.LINE_OP_TYPE_SET_VALUE, 0, 1)] });
          const r = (await s.next()).results;
          assert.deepEqual(r.map((x) => [x.id, x.code]), [[1, 3], [2, 3]], `chip ${JSON.stringify(bad)}`);
          for (const x of r) assert.match(x.message, re);
        }
        const before = await client.listLines({ chip: id });
        const big = Array.from({ length: MAX_OP_BATCH + 1 }, (_, i) => item(i + 1, i === 0 ? OP.LINE_OP_TYPE_SET_DIRECTION : OP.LINE_OP_TYPE_SET_VALUE, 0, 1));
        s.send({ chip: id, leaseToken: token, ops: big });
        const r = (await s.next()).results;
        assert.equal(r.length, MAX_OP_BATCH + 1);
        assert.ok(r.every((x, i) => x.id === i + 1 && x.code === 3), 'every operation INVALID_ARGUMENT');
        assert.match(r[0]!.message, new RegExp(`at most ${MAX_OP_BATCH}`));
        assert.deepEqual(await client.listLines({ chip: id }), before, 'nothing of the oversized batch applied');
        // exactly MAX_OP_BATCH is fine
        s.send({ chip: id, leaseToken: token, ops: big.slice(0, MAX_OP_BATCH) });
        const full = (await s.next()).results;
        assert.ok(full.length === MAX_OP_BATCH && full.every((x) => x.code === 0), 'a full batch applies');
        assert.equal((await client.getLine({ line: off(id, 0) })).level, 1);
      } finally {
        s.cancel();
      }
    });

    it('raw stream: after the client half-closes, every batch is answered, then the stream ends (counted once, OK)', async () => {
      const { id, token } = await chip();
      const b = await scrape();
      const s = rawStream(client);
      const ids: number[] = [];
      const expected = new Map<number, [number, number]>(); // value, level
      s.send({ chip: id, leaseToken: token, ops: [item(1, OP.LINE_OP_TYPE_SET_DIRECTION, 2, 1)] });
      ids.push(1);
      expected.set(1, [0, 0]);
      for (let k = 0; k < 40; k++) {
        const base = 100 + k * 10;
        const v = k % 2;
        s.send({ chip: id, leaseToken: token, ops: [item(base, OP.LINE_OP_TYPE_SET_VALUE, 2, v), item(base + 1, OP.LINE_OP_TYPE_GET_VALUE, 2), item(base + 2, OP.LINE_OP_TYPE_GET_DIRECTION, 2)] });
        ids.push(base, base + 1, base + 2);
        expected.set(base, [0, v]).set(base + 1, [v, v]).set(base + 2, [1, v]);
      }
      s.end();
      assert.equal(await within(s.over, 5000, 'the end of the stream'), 'end', 'a clean end, not an error');
      const r = new Map(s.batches.flatMap((x) => x.results).map((x) => [x.id, x]));
      assert.equal(s.batches.length, 41, 'every batch answered before the end');
      for (const i of ids) assert.deepEqual(r.get(i), okResult(i, ...expected.get(i)!), `operation ${i}`);
      // batch k (k > 0) toggles line 2 and makes event k
      for (const x of s.batches) {
        const first = x.results[0]?.id ?? 0;
        assert.equal(x.seq, String(first === 1 ? 0 : (first - 100) / 10), `the seq of the batch of operation ${first}`);
      }
      await waitFor(async () => (await scrape()).value('gpiofabric_linestate_rpcs_total', { method: 'OpStream', code: 'OK' }) - b.value('gpiofabric_linestate_rpcs_total', { method: 'OpStream', code: 'OK' }) >= 1, 'the stream counted');
      await sleep(50);
      const a = await scrape();
      assert.equal(a.value('gpiofabric_linestate_rpcs_total', { method: 'OpStream', code: 'OK' }) - b.value('gpiofabric_linestate_rpcs_total', { method: 'OpStream', code: 'OK' }), 1, 'one stream, counted once');
      assert.equal(a.value('gpiofabric_linestate_stream_ops_total', { code: 'OK' }) - b.value('gpiofabric_linestate_stream_ops_total', { code: 'OK' }), ids.length);
    });

    it('OpStreamClient: the operations of one turn go out as one batch (one store call) and answer in order', async () => {
      const { id, token } = await chip();
      const t = BigInt(token);
      const ops = new OpStreamClient({ client, chip: id, deadlineMs: 5000 });
      try {
        // open the stream first (the first store call of this test is this one)
        assert.equal(await ops.call(t, OP.LINE_OP_TYPE_GET_DIRECTION, 0, 0), 0);
        const batchesBefore = await storeCalls('lineOps');
        const unaryBefore = await storeCalls('lineOp');
        const turn = [
          ops.call(t, OP.LINE_OP_TYPE_SET_DIRECTION, 0, 1),
          ops.call(t, OP.LINE_OP_TYPE_SET_VALUE, 0, 1),
          ops.call(t, OP.LINE_OP_TYPE_GET_VALUE, 0, 0),
          ops.call(t, OP.LINE_OP_TYPE_SET_VALUE, 0, 0),
          ops.call(t, OP.LINE_OP_TYPE_GET_VALUE, 0, 0),
          ops.call(t, OP.LINE_OP_TYPE_SET_DIRECTION, 1, 2),
          ops.call(t, OP.LINE_OP_TYPE_GET_DIRECTION, 1, 0),
          ops.call(t, OP.LINE_OP_TYPE_SET_IRQ_TYPE, 1, 1),
          ops.call(t, OP.LINE_OP_TYPE_SET_VALUE, 0, 1),
          ops.call(t, OP.LINE_OP_TYPE_GET_VALUE, 0, 0),
        ];
        assert.deepEqual(await Promise.all(turn), [0, 0, 1, 0, 0, 0, 2, 0, 0, 1]);
        assert.equal(await storeCalls('lineOps') - batchesBefore, 1, '10 operations of one turn: one batch');
        assert.equal(await storeCalls('lineOp') - unaryBefore, 0, 'no unary LineOp');
        // one operation per turn: one batch each
        for (let i = 0; i < 5; i++) assert.equal(await ops.call(t, OP.LINE_OP_TYPE_SET_VALUE, 0, i % 2), 0);
        assert.equal(await storeCalls('lineOps') - batchesBefore, 6);
        assert.equal(ops.unary, false);
        const l0 = await client.getLine({ line: off(id, 0) });
        assert.deepEqual([l0.direction, l0.outputValue, l0.level], [1, 0, 0]);
      } finally {
        ops.close();
      }
    });

    it('OpStreamClient: a failing operation rejects with its code; the rest of its turn (other leases included) succeeds', async () => {
      const a = await chip();
      const ops = new OpStreamClient({ client, chip: a.id, deadlineMs: 5000 });
      try {
        const t = BigInt(a.token);
        const p = [
          ops.call(t, OP.LINE_OP_TYPE_SET_DIRECTION, 3, 1),
          ops.call(t + 7n, OP.LINE_OP_TYPE_SET_VALUE, 3, 1), // stale lease (its own batch)
          ops.call(t, OP.LINE_OP_TYPE_SET_VALUE, 3, 1),
          ops.call(t, OP.LINE_OP_TYPE_SET_VALUE, 4, 1), // offset = ngpio
          ops.call(t, OP.LINE_OP_TYPE_SET_VALUE, 3, 3), // bad value
          ops.call(t, OP.LINE_OP_TYPE_GET_VALUE, 3, 0),
        ];
        const settled = await within(Promise.allSettled(p), 5000, 'the turn');
        const got = settled.map((x) => (x.status === 'fulfilled' ? x.value : isFabricError(x.reason) ? x.reason.code : String(x.reason)));
        assert.deepEqual(got, [0, ErrorCode.FAILED_PRECONDITION, 0, ErrorCode.INVALID_ARGUMENT, ErrorCode.INVALID_ARGUMENT, 1]);
        const msg = (i: number): string => ((settled[i] as PromiseRejectedResult).reason as FabricError).message;
        assert.match(msg(1), /stale lease token/);
        assert.match(msg(3), /offset 4 is out of range/);
        assert.match(msg(4), /value 3 is not 0 or 1/);
        // still usable
        assert.equal(await ops.call(t, OP.LINE_OP_TYPE_GET_DIRECTION, 3, 0), 1);
        const nope = new OpStreamClient({ client, chip: 'vm-nope', deadlineMs: 5000 });
        const e = await failure(nope.call(t, OP.LINE_OP_TYPE_GET_VALUE, 0, 0));
        nope.close();
        assert.equal(e.code, ErrorCode.NOT_FOUND);
        assert.match(e.message, /vm-nope/);
      } finally {
        ops.close();
      }
    });
  });
}

describe('OpStreamClient against failing networks and services', () => {
  it('close() rejects queued and in-flight operations with UNAVAILABLE, and every later call', async () => {
    const store = createMemoryStore();
    const { server } = await serve(store, 'memory');
    const client = createLineStateClient(server.address);
    // a second service whose OpStream reads and never answers: operations stay in flight
    const silent = await silentGrpc();
    const silentClient = createLineStateClient(silent.address);
    try {
      const reg = await client.registerChip({ chip: 'vm-c', ngpio: 1, names: [], owner: 'o', leaseTtlMs: 0 });
      const ops = new OpStreamClient({ client, chip: 'vm-c', deadlineMs: 5000 });
      const queued = [ops.call(BigInt(reg.leaseToken), OP.LINE_OP_TYPE_GET_VALUE, 0, 0), ops.call(BigInt(reg.leaseToken), OP.LINE_OP_TYPE_SET_DIRECTION, 0, 1)];
      ops.close(); // before the turn's flush
      for (const p of queued) {
        const e = await within(failure(p), 2000, 'a queued op after close');
        assert.equal(e.code, ErrorCode.UNAVAILABLE);
        assert.match(e.message, /closed/);
      }
      assert.equal((await client.getLine({ line: off('vm-c', 0) })).direction, 0, 'a closed client sends nothing');
      assert.equal((await failure(ops.call(1n, OP.LINE_OP_TYPE_GET_VALUE, 0, 0))).code, ErrorCode.UNAVAILABLE);

      const stuck = new OpStreamClient({ client: silentClient, chip: 'vm-c', deadlineMs: 30_000 });
      const inFlight = [stuck.call(1n, OP.LINE_OP_TYPE_GET_VALUE, 0, 0), stuck.call(1n, OP.LINE_OP_TYPE_GET_VALUE, 0, 0)];
      await waitFor(() => silent.batches.length >= 1, 'the batch at the silent service');
      stuck.close();
      for (const p of inFlight) assert.equal((await within(failure(p), 2000, 'an in-flight op after close')).code, ErrorCode.UNAVAILABLE);
    } finally {
      client.close();
      silentClient.close();
      silent.stop();
      await server.close();
      await store.close();
    }
  });

  it('a stream cut while operations are in flight: they are sent again and complete, or fail UNAVAILABLE; none hangs', async () => {
    const store = createMemoryStore();
    const { server } = await serve(store, 'memory');
    const proxy = await startTcpProxy({ targetPort: server.port });
    const direct = createLineStateClient(server.address);
    const client = createLineStateClient(proxy.address);
    let reconnects = 0;
    const ops = new OpStreamClient({ client, chip: 'vm-p', deadlineMs: 8000, onReconnect: () => reconnects++ });
    try {
      const reg = await direct.registerChip({ chip: 'vm-p', ngpio: 8, names: [], owner: 'o', leaseTtlMs: 60_000 });
      const t = BigInt(reg.leaseToken);
      for (let l = 0; l < 8; l++) assert.equal(await ops.call(t, OP.LINE_OP_TYPE_SET_DIRECTION, l, 1), 0);
      const conns = proxy.stats().accepted;

      // one cut: every in-flight operation is resent once on a new stream and succeeds
      proxy.setDelay(150);
      const turn = Array.from({ length: 8 }, (_, l) => ops.call(t, OP.LINE_OP_TYPE_SET_VALUE, l, 1));
      const reads = Array.from({ length: 8 }, (_, l) => ops.call(t, OP.LINE_OP_TYPE_GET_DIRECTION, l, 0));
      await sleep(40);
      proxy.resetAll();
      proxy.setDelay(0);
      assert.deepEqual(await within(Promise.all(turn), 10_000, 'the resent operations'), Array(8).fill(0));
      assert.deepEqual(await within(Promise.all(reads), 10_000, 'the resent reads'), Array(8).fill(1));
      assert.ok(reconnects >= 1, 'the broken stream was reported');
      assert.ok(proxy.stats().accepted > conns, 'a new connection carried the resend');
      assert.deepEqual((await direct.listLines({ chip: 'vm-p' })).map((l) => l.level), Array(8).fill(1));

      // repeated cuts at varying moments: each operation completes or fails UNAVAILABLE, none waits for its deadline
      const outcomes = new Map<string, number>();
      for (let round = 0; round < 8; round++) {
        proxy.setDelay(round % 2 === 0 ? 60 : 0);
        const v = round % 2;
        const p = Array.from({ length: 8 }, (_, l) => ops.call(t, OP.LINE_OP_TYPE_SET_VALUE, l, v));
        await sleep(5 + round * 7);
        proxy.resetAll();
        proxy.setDelay(0);
        for (const x of await within(Promise.allSettled(p), 10_000, `round ${round}`)) {
          const k = x.status === 'fulfilled' ? `ok ${x.value}` : isFabricError(x.reason) ? x.reason.code : String(x.reason);
          outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
        }
      }
      for (const k of outcomes.keys()) assert.ok(k === 'ok 0' || k === ErrorCode.UNAVAILABLE, `unexpected outcome ${k} (${JSON.stringify([...outcomes])})`);
      // and afterwards the client works again
      let level: number | undefined;
      await waitFor(async () => {
        try {
          await ops.call(t, OP.LINE_OP_TYPE_SET_VALUE, 5, 1);
          level = await ops.call(t, OP.LINE_OP_TYPE_GET_VALUE, 5, 0);
          return true;
        } catch (e) {
          assert.ok(isFabricError(e) && e.code === ErrorCode.UNAVAILABLE, String(e));
          return false;
        }
      }, 'the client working again', 8000);
      assert.equal(level, 1);
    } finally {
      ops.close();
      client.close();
      direct.close();
      await proxy.close();
      await server.close();
      await store.close();
    }
  });

  it('service down: operations fail fast with UNAVAILABLE (not at their deadline) and work again once it is up', async () => {
    const port = await freePort();
    const client = createLineStateClient(`127.0.0.1:${port}`, { deadlineMs: 60_000 });
    const ops = new OpStreamClient({ client, chip: 'vm-d' });
    let server: LineStateServer | undefined;
    const store = createMemoryStore();
    try {
      const turn = [ops.call(1n, OP.LINE_OP_TYPE_GET_VALUE, 0, 0), ops.call(1n, OP.LINE_OP_TYPE_SET_VALUE, 0, 1), ops.call(1n, OP.LINE_OP_TYPE_GET_DIRECTION, 0, 0)];
      for (const p of turn) {
        const e = await within(failure(p), 10_000, 'an op to a service that is down');
        assert.equal(e.code, ErrorCode.UNAVAILABLE, e.message);
        assert.match(e.message, new RegExp(`127\\.0\\.0\\.1:${port}|connect|unavailable|No connection`, 'i'));
      }
      for (let i = 0; i < 3; i++) {
        const e = await within(failure(ops.call(1n, OP.LINE_OP_TYPE_GET_VALUE, 0, 0)), 10_000, `op ${i} while down`);
        assert.equal(e.code, ErrorCode.UNAVAILABLE, e.message);
      }
      ({ server } = await serve(store, 'memory', `127.0.0.1:${port}`));
      // (through the store: a new client of the same address shares grpc-js' subchannel, still backing off)
      const reg = await store.registerChip({ chip: 'vm-d', ngpio: 1, names: [], owner: 'o', leaseTtlMs: 0 });
      let value: number | undefined;
      await waitFor(async () => {
        try {
          value = await ops.call(BigInt(reg.leaseToken), OP.LINE_OP_TYPE_GET_DIRECTION, 0, 0);
          return true;
        } catch (e) {
          assert.ok(isFabricError(e) && e.code === ErrorCode.UNAVAILABLE, String(e));
          return false;
        }
      }, 'operations working once the service is up', 12_000);
      assert.equal(value, 0);
    } finally {
      ops.close();
      client.close();
      await server?.close();
      await store.close();
    }
  });

  it('a service that never answers: DEADLINE_EXCEEDED at the per-operation deadline (silent TCP, and a silent OpStream)', async () => {
    const sockets = new Set<Socket>();
    const tcp: NetServer = createServer((sock) => {
      sockets.add(sock);
      sock.on('error', () => {});
      sock.on('close', () => sockets.delete(sock));
    });
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', () => r()));
    const tcpAddr = tcp.address();
    const tcpPort = typeof tcpAddr === 'object' && tcpAddr !== null ? tcpAddr.port : 0;
    const silent = await silentGrpc();
    const c1 = createLineStateClient(`127.0.0.1:${tcpPort}`);
    const c2 = createLineStateClient(silent.address);
    const o1 = new OpStreamClient({ client: c1, chip: 'vm-s', deadlineMs: 300 });
    const o2 = new OpStreamClient({ client: c2, chip: 'vm-s', deadlineMs: 300 });
    try {
      for (const [what, o] of [['silent TCP', o1], ['silent OpStream', o2]] as const) {
        const p = [o.call(1n, OP.LINE_OP_TYPE_GET_VALUE, 0, 0), o.call(1n, OP.LINE_OP_TYPE_SET_VALUE, 1, 1)];
        for (const x of p) {
          const e = await within(failure(x), 5000, what);
          assert.equal(e.code, ErrorCode.DEADLINE_EXCEEDED, `${what}: ${e.message}`);
          assert.match(e.message, /within 300 ms/);
        }
        // a later operation on the same (still silent) stream also ends at its deadline
        assert.equal((await within(failure(o.call(1n, OP.LINE_OP_TYPE_GET_VALUE, 0, 0)), 5000, `${what}, again`)).code, ErrorCode.DEADLINE_EXCEEDED);
      }
      assert.ok(sockets.size >= 1, 'the client did connect to the silent listener');
      assert.ok(silent.batches.length >= 1, 'the silent service did receive the batches');
    } finally {
      o1.close();
      o2.close();
      c1.close();
      c2.close();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => tcp.close(() => r()));
      silent.stop();
    }
  });

  it('onLevel: each successful result\'s line level as of the batch seq, before the operation settles, also after its deadline', async () => {
    // a scripted service: answers every batch after `delay` ms, each operation level 1 as of seq 40 + batch number
    let delay = 0;
    let batchNo = 0;
    const server = new Server();
    const impl: UntypedServiceImplementation = {};
    for (const k of Object.keys(LineStateServiceService)) impl[k] = () => {};
    impl['opStream'] = (call: ServerDuplexStream<LineOpBatch, LineOpResultBatch>) => {
      call.on('data', (b: LineOpBatch) => {
        const seq = String(40 + ++batchNo);
        const results = b.ops.map((o) => (o.offset === 9
          ? { id: o.id, code: 3, value: 0, message: 'offset 9 is out of range', level: 0 }
          : { id: o.id, code: 0, value: 0, message: '', level: 1 }));
        setTimeout(() => { if (!call.writableEnded) call.write({ results, seq }); }, delay);
      });
      call.on('error', () => {});
    };
    server.addService(LineStateServiceService, impl);
    const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
    const c = createLineStateClient(`127.0.0.1:${port}`);
    const seen: [number, bigint, number][] = [];
    const settledAfterLevel: boolean[] = [];
    const o = new OpStreamClient({ client: c, chip: 'vm-l', deadlineMs: 200, onLevel: (offset, seq, level) => { seen.push([offset, seq, level]); } });
    try {
      const a = o.call(1n, OP.LINE_OP_TYPE_SET_VALUE, 2, 1).then(() => settledAfterLevel.push(seen.some((x) => x[0] === 2)));
      const b = o.call(1n, OP.LINE_OP_TYPE_SET_VALUE, 9, 1).catch((e: unknown) => e);
      await a;
      assert.equal((await b as FabricError).code, ErrorCode.INVALID_ARGUMENT);
      assert.deepEqual(seen, [[2, 41n, 1]], 'one level, as of the batch seq; none for the failed operation');
      assert.deepEqual(settledAfterLevel, [true], 'the level was known when the operation settled');
      // a result after the operation's deadline: the operation fails, its level still counts
      delay = 600;
      const late = await within(failure(o.call(1n, OP.LINE_OP_TYPE_SET_DIRECTION, 5, 1)), 5000, 'the late operation');
      assert.equal(late.code, ErrorCode.DEADLINE_EXCEEDED);
      await waitFor(() => seen.length === 2, 'the late result');
      assert.deepEqual(seen[1], [5, 42n, 1]);
    } finally {
      o.close();
      c.close();
      server.forceShutdown();
    }
  });

  it('a service without OpStream (UNIMPLEMENTED): unary LineOp from then on, same answers and errors', async () => {
    const store = createMemoryStore();
    const reg = await store.registerChip({ chip: 'vm-u', ngpio: 4, names: [], owner: 'o', leaseTtlMs: 0 });
    let unaryCalls = 0;
    const server = new Server();
    const only = { lineOp: LineStateServiceService.lineOp } as unknown as ServiceDefinition;
    server.addService(only, {
      lineOp: (call: ServerUnaryCall<LineOpRequest, LineOpResponse>, cb: sendUnaryData<LineOpResponse>) => {
        unaryCalls++;
        const r = call.request;
        store.lineOp({ chip: r.chip, leaseToken: BigInt(r.leaseToken), op: r.op as LineOp, offset: r.offset, value: r.value }).then(
          (value) => cb(null, { value }),
          (e: unknown) => cb(isFabricError(e) ? { code: grpcStatusOf[e.code], details: e.message } : { code: GrpcStatus.INTERNAL, details: String(e) }),
        );
      },
    } as UntypedServiceImplementation);
    const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
    const client = createLineStateClient(`127.0.0.1:${port}`);
    const logs: string[] = [];
    const ops = new OpStreamClient({ client, chip: 'vm-u', deadlineMs: 5000, log: (m) => logs.push(m) });
    try {
      const t = reg.leaseToken;
      assert.equal(ops.unary, false);
      // the first turn goes to OpStream, is refused UNIMPLEMENTED, and is served by LineOp
      const first = [ops.call(t, OP.LINE_OP_TYPE_SET_DIRECTION, 0, 1), ops.call(t, OP.LINE_OP_TYPE_SET_DIRECTION, 1, 2), ops.call(t, OP.LINE_OP_TYPE_GET_DIRECTION, 2, 0)];
      assert.deepEqual(await within(Promise.all(first), 5000, 'the first turn'), [0, 0, 0]);
      assert.equal(ops.unary, true);
      assert.equal(unaryCalls, 3);
      assert.ok(logs.some((m) => /no OpStream/.test(m)), logs.join('\n'));
      assert.equal(await ops.call(t, OP.LINE_OP_TYPE_SET_VALUE, 0, 1), 0);
      assert.equal(await ops.call(t, OP.LINE_OP_TYPE_GET_VALUE, 0, 0), 1);
      assert.equal(await ops.call(t, OP.LINE_OP_TYPE_GET_DIRECTION, 1, 0), 2);
      const stale = await failure(ops.call(t + 1n, OP.LINE_OP_TYPE_GET_VALUE, 0, 0));
      assert.equal(stale.code, ErrorCode.FAILED_PRECONDITION);
      assert.match(stale.message, /stale lease token/);
      assert.equal((await failure(ops.call(t, OP.LINE_OP_TYPE_GET_VALUE, 9, 0))).code, ErrorCode.INVALID_ARGUMENT);
      assert.equal(unaryCalls, 8);
      const l0 = await store.getLine({ chip: 'vm-u', line: { kind: 'offset', offset: 0 } });
      assert.deepEqual([l0.direction, l0.level], [1, 1]);
    } finally {
      ops.close();
      client.close();
      server.forceShutdown();
      await store.close();
    }
  });
});

/** A gRPC service whose OpStream reads batches and never answers (and whose other methods never answer either). */
async function silentGrpc(): Promise<{ address: string; batches: LineOpBatch[]; stop: () => void }> {
  const server = new Server();
  const batches: LineOpBatch[] = [];
  const impl: UntypedServiceImplementation = {};
  for (const k of Object.keys(LineStateServiceService)) impl[k] = () => {};
  impl['opStream'] = (call: ServerDuplexStream<LineOpBatch, LineOpResultBatch>) => {
    call.on('data', (b: LineOpBatch) => batches.push(b));
    call.on('error', () => {});
  };
  server.addService(LineStateServiceService, impl);
  const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  return { address: `127.0.0.1:${port}`, batches, stop: () => server.forceShutdown() };
}
