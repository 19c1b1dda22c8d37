/**
 * Authorization of OpStream under mutual TLS, with certificates from `gpio-fabric certs`
 * (real openssl) and a real gRPC server on an ephemeral port. OpStream is authorized per
 * batch (as LineOp is per call): a refused batch gets PERMISSION_DENIED for each of its
 * operations, the state stays as it was, and the stream stays open for the next batch.
 * Both the raw stream (client.opStream) and the batching OpStreamClient are used.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { LineStateClient, OpStreamHandle } from '../../services/linestate/src/client.ts';
import { OpStreamClient } from '../../services/linestate/src/op-stream.ts';
import { ErrorCode, FabricError } from '../../services/common/src/errors.ts';
import { LineOpType, type LineOpBatch, type LineOpItem, type LineOpResultBatch } from '../../services/common/src/gen/gpiofabric/v1/linestate.ts';
import type { LineStore } from '../../services/linestate/src/store/store.ts';
import type { Registry } from 'prom-client';
import { sample, startMtlsFabric, type MtlsFabric, type Role } from './support.ts';

const PERMISSION_DENIED = 7;

let fabric: MtlsFabric;
let store: LineStore;
let registry: Registry;
let as: ReadonlyMap<Role, LineStateClient>;
const streams: OpStreamHandle[] = [];
let tokenA = '';
let tokenB = '';

/** A raw OpStream whose batches are sent one at a time, each awaited for its result message. */
interface RawStream {
  send(batch: LineOpBatch): Promise<LineOpResultBatch>;
  end(): void;
}
function openRaw(c: LineStateClient): RawStream {
  let waiting: { resolve: (b: LineOpResultBatch) => void; reject: (e: Error) => void } | undefined;
  let failure: Error | undefined;
  const h = c.opStream(
    (b) => {
      const w = waiting;
      waiting = undefined;
      if (w === undefined) failure = new Error(`unexpected result message ${JSON.stringify(b)}`);
      else w.resolve(b);
    },
    (e) => {
      failure = e;
      waiting?.reject(e);
      waiting = undefined;
    },
    () => {
      failure = new Error('the service ended the stream');
      waiting?.reject(failure);
      waiting = undefined;
    },
  );
  streams.push(h);
  return {
    send: (batch) => new Promise<LineOpResultBatch>((resolve, reject) => {
      if (failure !== undefined) {
        reject(failure);
        return;
      }
      assert.equal(waiting, undefined, 'one batch at a time');
      waiting = { resolve, reject };
      h.write(batch);
    }),
    end: () => h.end(),
  };
}

/** Output high on `offset` (direction, value) and read it back. */
const setHigh = (offset: number, id0 = 1): LineOpItem[] => [
  { id: id0, op: LineOpType.LINE_OP_TYPE_SET_DIRECTION, offset, value: 1 },
  { id: id0 + 1, op: LineOpType.LINE_OP_TYPE_SET_VALUE, offset, value: 1 },
  { id: id0 + 2, op: LineOpType.LINE_OP_TYPE_GET_VALUE, offset, value: 0 },
];
/** The lines of one chip as the operator reads them. */
const linesOf = async (chip: string): Promise<string> => JSON.stringify(await as.get('operator-alice')!.listLines({ chip }));
const metric = async (name: string, labels: Record<string, string>): Promise<number> => sample(await registry.metrics(), name, labels);

before(async () => {
  fabric = await startMtlsFabric();
  ({ store, registry } = fabric);
  as = fabric.as;
  ({ a: tokenA, b: tokenB } = fabric.tokens);
});
after(async () => {
  for (const h of streams) h.cancel();
  await fabric.close();
});

describe('OpStream authorization (raw stream)', () => {
  it('an agent operates its own chip; a batch naming another chip is PERMISSION_DENIED for every op, that chip unchanged, and the stream keeps working', async () => {
    const denied0 = await metric('gpiofabric_linestate_stream_ops_total', { code: 'PERMISSION_DENIED' });
    const errors0 = await metric('gpiofabric_linestate_errors_total', { cause: 'PERMISSION_DENIED' });
    const s = openRaw(as.get('agent-vm-a')!);

    const own = await s.send({ chip: 'vm-a', leaseToken: tokenA, ops: setHigh(0, 1) });
    assert.deepEqual(own.results.map((r) => [r.id, r.code]), [[1, 0], [2, 0], [3, 0]]);
    assert.equal(own.results[2]!.value, 1, 'vm-a:0 reads back high');

    const b0 = await linesOf('vm-b');
    const other = await s.send({ chip: 'vm-b', leaseToken: tokenB, ops: setHigh(2, 10) });
    assert.deepEqual(other.results.map((r) => r.id), [10, 11, 12]);
    for (const r of other.results) {
      assert.equal(r.code, PERMISSION_DENIED, JSON.stringify(r));
      assert.equal(r.value, 0);
      assert.match(r.message, /^agent "vm-a" may not operate chip "vm-b"/);
      assert.match(r.message, /OpStream/);
    }
    assert.equal(await linesOf('vm-b'), b0, 'a refused batch changed vm-b');

    // same stream, next batch of its own chip: still served
    const again = await s.send({ chip: 'vm-a', leaseToken: tokenA, ops: setHigh(1, 20) });
    assert.deepEqual(again.results.map((r) => [r.id, r.code, r.value]), [[20, 0, 0], [21, 0, 0], [22, 0, 1]]);
    s.end();

    assert.equal(await metric('gpiofabric_linestate_stream_ops_total', { code: 'PERMISSION_DENIED' }) - denied0, 3);
    assert.equal(await metric('gpiofabric_linestate_errors_total', { cause: 'PERMISSION_DENIED' }) - errors0, 3);
  });

  it('a watcher may not operate any chip, not even with the right lease token', async () => {
    const s = openRaw(as.get('watcher-bob')!);
    for (const [chip, token] of [['vm-a', tokenA], ['vm-b', tokenB]] as const) {
      const l0 = await linesOf(chip);
      const r = await s.send({ chip, leaseToken: token, ops: [...setHigh(3, 1), { id: 4, op: LineOpType.LINE_OP_TYPE_GET_DIRECTION, offset: 3, value: 0 }] });
      assert.equal(r.results.length, 4);
      for (const x of r.results) {
        assert.equal(x.code, PERMISSION_DENIED, JSON.stringify(x));
        assert.match(x.message, /^watcher "bob" may not call OpStream/);
      }
      assert.equal(await linesOf(chip), l0, `a watcher's batch changed ${chip}`);
    }
    s.end();
  });

  it('an operator may operate any chip (under its lease)', async () => {
    const s = openRaw(as.get('operator-alice')!);
    const rb = await s.send({ chip: 'vm-b', leaseToken: tokenB, ops: setHigh(2, 1) });
    assert.deepEqual(rb.results.map((r) => [r.id, r.code, r.value]), [[1, 0, 0], [2, 0, 0], [3, 0, 1]]);
    const ra = await s.send({ chip: 'vm-a', leaseToken: tokenA, ops: setHigh(3, 4) });
    assert.deepEqual(ra.results.map((r) => [r.id, r.code, r.value]), [[4, 0, 0], [5, 0, 0], [6, 0, 1]]);
    s.end();
    const line = await as.get('operator-alice')!.getLine({ line: { chip: 'vm-b', line: { $case: 'offset', value: 2 } } });
    assert.equal(line.level, 1, JSON.stringify(line));
  });
});

describe('OpStreamClient with the wrong agent certificate', () => {
  it('every operation rejects with a FabricError PERMISSION_DENIED naming the chip; the chip is unchanged', async () => {
    const ops = new OpStreamClient({ client: as.get('agent-vm-a')!, chip: 'vm-b' });
    try {
      const b0 = await linesOf('vm-b');
      const calls = [
        ops.call(BigInt(tokenB), LineOpType.LINE_OP_TYPE_SET_DIRECTION, 0, 1),
        ops.call(BigInt(tokenB), LineOpType.LINE_OP_TYPE_SET_VALUE, 0, 1),
        ops.call(BigInt(tokenB), LineOpType.LINE_OP_TYPE_GET_VALUE, 0, 0),
      ];
      const outcomes = await Promise.allSettled(calls);
      for (const o of outcomes) {
        assert.equal(o.status, 'rejected');
        const e: unknown = o.reason;
        assert.ok(e instanceof FabricError, String(e));
        assert.equal(e.code, ErrorCode.PERMISSION_DENIED);
        assert.match(e.message, /may not operate chip "vm-b".*OpStream/);
      }
      assert.equal(ops.unary, false, 'a refusal is no reason to fall back to unary LineOp');
      assert.equal(await linesOf('vm-b'), b0);
      // and again on the same client: still refused, not a stream failure
      await assert.rejects(ops.call(BigInt(tokenB), LineOpType.LINE_OP_TYPE_GET_VALUE, 0, 0), (e: unknown) => e instanceof FabricError && e.code === ErrorCode.PERMISSION_DENIED);
    } finally {
      ops.close();
    }
  });
  it('the same client type with the right certificate is served', async () => {
    const ops = new OpStreamClient({ client: as.get('agent-vm-b')!, chip: 'vm-b' });
    try {
      assert.deepEqual(await Promise.all([
        ops.call(BigInt(tokenB), LineOpType.LINE_OP_TYPE_SET_DIRECTION, 1, 1),
        ops.call(BigInt(tokenB), LineOpType.LINE_OP_TYPE_SET_VALUE, 1, 1),
        ops.call(BigInt(tokenB), LineOpType.LINE_OP_TYPE_GET_VALUE, 1, 0),
      ]), [0, 0, 1]);
    } finally {
      ops.close();
    }
  });
});
