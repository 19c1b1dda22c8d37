/**
 * The LineStore contract: every rule of docs/line-model.md, run against each store
 * implementation (memory-store.test.ts, redis-store.test.ts). For every bad input it
 * checks the FabricError code AND that the state is exactly as before.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, FabricError } from '../../services/common/src/errors.ts';
import { Direction, DriveMode, DriveValue, Edge, IrqType, Pull } from '../../services/common/src/line-model.ts';
import { LineOp } from '../../services/linestate/src/store/store.ts';
import type { BatchLineOp, LineAddress, LineEventRecord, LineInfo, LineOpOutcome, LineStore, Topology } from '../../services/linestate/src/store/store.ts';
import { MAX_OP_BATCH } from '../../services/linestate/src/store/validate.ts';
import { sleep, waitFor } from '../support/wait.ts';

export interface StoreUnderTest {
  readonly store: LineStore;
  cleanup(): Promise<void>;
}

const at = (chip: string, offset: number): LineAddress => ({ chip, line: { kind: 'offset', offset } });
const named = (chip: string, name: string): LineAddress => ({ chip, line: { kind: 'name', name } });

/** A state snapshot without the fields that move with the clock. */
async function snapshot(s: LineStore): Promise<unknown> {
  const chips = (await s.listChips()).map((c) => ({ ...c, online: undefined }));
  return { chips, lines: await s.listLines(''), nets: await s.listNets() };
}

async function register(s: LineStore, chip: string, ngpio: number, extra: { names?: string[]; owner?: string; leaseTtlMs?: number } = {}): Promise<bigint> {
  const r = await s.registerChip({ chip, ngpio, names: extra.names ?? [], owner: extra.owner ?? `agent-${chip}`, leaseTtlMs: extra.leaseTtlMs ?? 0 });
  return r.leaseToken;
}

/** Expect a FabricError with `code` (and message matching `re`), and no state change. */
async function rejects(s: LineStore, fn: () => Promise<unknown>, code: ErrorCode, re?: RegExp, label = ''): Promise<FabricError> {
  const before = await snapshot(s);
  let err: unknown;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  const what = label === '' ? '' : `${label}: `;
  assert.ok(err instanceof FabricError, `${what}expected a FabricError ${code}, got ${err === undefined ? 'success' : String(err)}`);
  assert.equal(err.code, code, `${what}wrong code for: ${err.message}`);
  if (re !== undefined) assert.match(err.message, re, what);
  assert.deepEqual(await snapshot(s), before, `${what}state changed by a failed call (${err.message})`);
  return err;
}

const brief = (e: LineEventRecord): [string, number, number, number, bigint] => [e.chip, e.offset, e.level, e.edge, e.seq];

export function runStoreContract(label: string, makeStore: () => Promise<StoreUnderTest>): void {
  const withStore = (name: string, fn: (s: LineStore) => Promise<void>): void => {
    test(name, async () => {
      const { store, cleanup } = await makeStore();
      try {
        await fn(store);
      } finally {
        await cleanup();
      }
    });
  };

  describe(`LineStore contract: ${label}`, () => {
    // ------------------------------------------------------------ registration
    describe('registration and leases', () => {
      withStore('registers a new chip with default state', async (s) => {
        const r = await s.registerChip({ chip: 'vm-a', ngpio: 8, names: [], owner: 'host1/1', leaseTtlMs: 0 });
        assert.equal(r.restored, false);
        assert.equal(r.tookOver, false);
        assert.ok(r.leaseToken >= 1n);
        assert.equal(r.chip.id, 'vm-a');
        assert.equal(r.chip.ngpio, 8);
        assert.equal(r.chip.owner, 'host1/1');
        assert.equal(r.chip.online, true);
        assert.equal(r.chip.lastSeq, 0n);
        assert.ok(r.chip.leaseExpiresAtMs > Date.now() + 5000, 'default TTL is about 10 s');
        assert.deepEqual(r.chip.names, Array(8).fill(''));
        assert.equal(r.lines.length, 8);
        for (const [i, l] of r.lines.entries()) {
          assert.deepEqual(l, { chip: 'vm-a', offset: i, name: '', direction: 0, outputValue: 0, irqType: 0, bias: 0, level: 0, net: '', externalDrive: 0 });
        }
        assert.deepEqual(await s.getNames('vm-a'), Array(8).fill(''));
        const chips = await s.listChips();
        assert.equal(chips.length, 1);
        assert.deepEqual(chips[0], r.chip);
      });

      withStore('restores persisted line state for a restarted agent', async (s) => {
        const t1 = await register(s, 'vm-a', 4, { owner: 'a1' });
        await s.lineOp({ chip: 'vm-a', leaseToken: t1, op: LineOp.SET_DIRECTION, offset: 2, value: Direction.OUT });
        await s.lineOp({ chip: 'vm-a', leaseToken: t1, op: LineOp.SET_VALUE, offset: 2, value: 1 });
        await s.lineOp({ chip: 'vm-a', leaseToken: t1, op: LineOp.SET_IRQ_TYPE, offset: 1, value: IrqType.EDGE_BOTH });
        await s.releaseChip('vm-a', t1);
        const r = await s.registerChip({ chip: 'vm-a', ngpio: 4, names: [], owner: 'a1', leaseTtlMs: 0 });
        assert.equal(r.restored, true);
        assert.equal(r.tookOver, false);
        assert.ok(r.leaseToken > t1, 'fencing token strictly increases');
        assert.equal(r.lines[2]!.direction, Direction.OUT);
        assert.equal(r.lines[2]!.outputValue, 1);
        assert.equal(r.lines[2]!.level, 1);
        assert.equal(r.lines[1]!.irqType, IrqType.EDGE_BOTH);
        assert.equal(r.chip.lastSeq, 1n);
        assert.deepEqual(r.lines, await s.listLines('vm-a'));
      });

      withStore('refuses a different ngpio, naming both numbers', async (s) => {
        const t = await register(s, 'vm-a', 8);
        await s.releaseChip('vm-a', t);
        await rejects(s, () => register(s, 'vm-a', 16), ErrorCode.FAILED_PRECONDITION, /8.*16|16.*8/);
      });

      withStore('validates chip id, ngpio, names, owner and TTL', async (s) => {
        await register(s, 'vm-a', 2);
        const bad: [string, Parameters<LineStore['registerChip']>[0]][] = [
          ['empty id', { chip: '', ngpio: 2, names: [], owner: 'o', leaseTtlMs: 0 }],
          ['id with space', { chip: 'vm a', ngpio: 2, names: [], owner: 'o', leaseTtlMs: 0 }],
          ['id with colon', { chip: 'vm:a', ngpio: 2, names: [], owner: 'o', leaseTtlMs: 0 }],
          ['id too long', { chip: 'x'.repeat(65), ngpio: 2, names: [], owner: 'o', leaseTtlMs: 0 }],
          ['ngpio 0', { chip: 'vm-b', ngpio: 0, names: [], owner: 'o', leaseTtlMs: 0 }],
          ['ngpio 1025', { chip: 'vm-b', ngpio: 1025, names: [], owner: 'o', leaseTtlMs: 0 }],
          ['ngpio fractional', { chip: 'vm-b', ngpio: 1.5, names: [], owner: 'o', leaseTtlMs: 0 }],
          ['too few names', { chip: 'vm-b', ngpio: 3, names: ['a', 'b'], owner: 'o', leaseTtlMs: 0 }],
          ['too many names', { chip: 'vm-b', ngpio: 1, names: ['a', 'b'], owner: 'o', leaseTtlMs: 0 }],
          ['duplicate names', { chip: 'vm-b', ngpio: 3, names: ['a', '', 'a'], owner: 'o', leaseTtlMs: 0 }],
          ['non-ASCII name', { chip: 'vm-b', ngpio: 2, names: ['é', ''], owner: 'o', leaseTtlMs: 0 }],
          ['NUL in name', { chip: 'vm-b', ngpio: 2, names: ['a\0b', ''], owner: 'o', leaseTtlMs: 0 }],
          ['control char in name', { chip: 'vm-b', ngpio: 2, names: ['a\nb', ''], owner: 'o', leaseTtlMs: 0 }],
          ['name too long', { chip: 'vm-b', ngpio: 2, names: ['n'.repeat(65), ''], owner: 'o', leaseTtlMs: 0 }],
          ['empty owner', { chip: 'vm-b', ngpio: 2, names: [], owner: '', leaseTtlMs: 0 }],
          ['TTL too short', { chip: 'vm-b', ngpio: 2, names: [], owner: 'o', leaseTtlMs: 499 }],
          ['TTL too long', { chip: 'vm-b', ngpio: 2, names: [], owner: 'o', leaseTtlMs: 600_001 }],
          ['negative TTL', { chip: 'vm-b', ngpio: 2, names: [], owner: 'o', leaseTtlMs: -1 }],
        ];
        for (const [what, input] of bad) await rejects(s, () => s.registerChip(input), ErrorCode.INVALID_ARGUMENT, undefined, what);
        // the boundaries themselves are fine
        await s.registerChip({ chip: 'x'.repeat(64), ngpio: 1024, names: [], owner: 'o', leaseTtlMs: 500 });
        await s.registerChip({ chip: 'vm.b_c-D9', ngpio: 1, names: ['n'.repeat(64)], owner: 'o', leaseTtlMs: 600_000 });
        assert.deepEqual(await s.getNames('vm.b_c-D9'), ['n'.repeat(64)]);
      });

      withStore('names from the agent replace stored names; no names keep them', async (s) => {
        const t1 = await register(s, 'vm-a', 3, { names: ['led0', '', 'btn'] });
        assert.deepEqual(await s.getNames('vm-a'), ['led0', '', 'btn']);
        assert.equal((await s.getLine(named('vm-a', 'btn'))).offset, 2);
        await s.releaseChip('vm-a', t1);
        const t2 = await register(s, 'vm-a', 3, { names: ['', 'reset', ''] });
        assert.deepEqual(await s.getNames('vm-a'), ['', 'reset', '']);
        await rejects(s, () => s.getLine(named('vm-a', 'btn')), ErrorCode.NOT_FOUND);
        await s.releaseChip('vm-a', t2);
        const t3 = await register(s, 'vm-a', 3);
        assert.deepEqual(await s.getNames('vm-a'), ['', 'reset', '']);
        await s.releaseChip('vm-a', t3);
        await register(s, 'vm-a', 3, { names: ['', '', ''] });
        assert.deepEqual(await s.getNames('vm-a'), ['', 'reset', ''], 'all-empty names count as no names');
        assert.equal((await s.listLines('vm-a'))[1]!.name, 'reset');
      });

      withStore('a live lease refuses every other registration, naming owner and expiry', async (s) => {
        await register(s, 'vm-a', 2, { owner: 'host1/42' });
        const e = await rejects(s, () => register(s, 'vm-a', 2, { owner: 'host2/7' }), ErrorCode.FAILED_PRECONDITION, /host1\/42/);
        assert.match(e.message, /expires|until/);
        // the same owner too: two live agents can never own one chip
        await rejects(s, () => register(s, 'vm-a', 2, { owner: 'host1/42' }), ErrorCode.FAILED_PRECONDITION, /host1\/42/);
      });

      withStore('an expired lease is taken over; the old token is fenced off', async (s) => {
        const t1 = await register(s, 'vm-a', 2, { owner: 'old', leaseTtlMs: 500 });
        await sleep(700);
        assert.equal((await s.listChips())[0]!.online, false);
        const r = await s.registerChip({ chip: 'vm-a', ngpio: 2, names: [], owner: 'new', leaseTtlMs: 0 });
        assert.equal(r.tookOver, true);
        assert.equal(r.restored, true);
        assert.ok(r.leaseToken > t1);
        assert.equal(r.chip.owner, 'new');
        assert.equal(r.chip.online, true);
        await rejects(s, () => s.lineOp({ chip: 'vm-a', leaseToken: t1, op: LineOp.SET_DIRECTION, offset: 0, value: 1 }), ErrorCode.FAILED_PRECONDITION, /stale lease token/);
        await rejects(s, () => s.lineOp({ chip: 'vm-a', leaseToken: t1, op: LineOp.GET_VALUE, offset: 0, value: 0 }), ErrorCode.FAILED_PRECONDITION, /stale lease token/);
        await rejects(s, () => s.renewLease('vm-a', t1), ErrorCode.FAILED_PRECONDITION, /stale lease token/);
        await rejects(s, () => s.releaseChip('vm-a', t1), ErrorCode.FAILED_PRECONDITION, /stale lease token/);
        assert.equal(await s.lineOp({ chip: 'vm-a', leaseToken: r.leaseToken, op: LineOp.GET_VALUE, offset: 0, value: 0 }), 0);
      });

      withStore('the same owner re-registering after expiry is no takeover', async (s) => {
        const t1 = await register(s, 'vm-a', 2, { owner: 'same', leaseTtlMs: 500 });
        await sleep(700);
        const r = await s.registerChip({ chip: 'vm-a', ngpio: 2, names: [], owner: 'same', leaseTtlMs: 0 });
        assert.equal(r.tookOver, false);
        assert.ok(r.leaseToken > t1);
      });

      withStore('an expired but not taken-over token still works and can renew', async (s) => {
        const t = await register(s, 'vm-a', 2, { leaseTtlMs: 500 });
        await sleep(700);
        assert.equal(await s.lineOp({ chip: 'vm-a', leaseToken: t, op: LineOp.SET_DIRECTION, offset: 0, value: Direction.IN }), 0);
        const { leaseExpiresAtMs } = await s.renewLease('vm-a', t);
        assert.ok(leaseExpiresAtMs > Date.now() + 100);
        assert.equal((await s.listChips())[0]!.online, true);
        assert.equal((await s.listChips())[0]!.leaseExpiresAtMs, leaseExpiresAtMs);
        await rejects(s, () => register(s, 'vm-a', 2, { owner: 'other' }), ErrorCode.FAILED_PRECONDITION);
      });

      withStore('renew and release check the token and the chip', async (s) => {
        const t = await register(s, 'vm-a', 2);
        await rejects(s, () => s.renewLease('vm-a', t + 1n), ErrorCode.FAILED_PRECONDITION, /stale lease token/);
        await rejects(s, () => s.releaseChip('vm-a', t - 1n), ErrorCode.FAILED_PRECONDITION, /stale lease token/);
        await rejects(s, () => s.renewLease('nope', t), ErrorCode.NOT_FOUND);
        await rejects(s, () => s.releaseChip('nope', t), ErrorCode.NOT_FOUND);
      });

      withStore('release clears the lease and keeps the state', async (s) => {
        const t = await register(s, 'vm-a', 2, { owner: 'a' });
        await s.lineOp({ chip: 'vm-a', leaseToken: t, op: LineOp.SET_DIRECTION, offset: 1, value: Direction.OUT });
        await s.releaseChip('vm-a', t);
        const c = (await s.listChips())[0]!;
        assert.equal(c.online, false);
        await rejects(s, () => s.lineOp({ chip: 'vm-a', leaseToken: t, op: LineOp.GET_DIRECTION, offset: 1, value: 0 }), ErrorCode.FAILED_PRECONDITION);
        await rejects(s, () => s.renewLease('vm-a', t), ErrorCode.FAILED_PRECONDITION);
        const r = await s.registerChip({ chip: 'vm-a', ngpio: 2, names: [], owner: 'b', leaseTtlMs: 0 });
        assert.equal(r.tookOver, false, 'a released lease is not taken over');
        assert.equal(r.restored, true);
        assert.equal(r.lines[1]!.direction, Direction.OUT);
      });
    });

    // ------------------------------------------------------------ line operations
    describe('line operations', () => {
      withStore('direction, value and irq type round-trip', async (s) => {
        const t = await register(s, 'vm-a', 4);
        const op = (o: LineOp, offset: number, value = 0): Promise<number> => s.lineOp({ chip: 'vm-a', leaseToken: t, op: o, offset, value });
        assert.equal(await op(LineOp.GET_DIRECTION, 0), Direction.NONE);
        assert.equal(await op(LineOp.SET_DIRECTION, 0, Direction.IN), 0);
        assert.equal(await op(LineOp.GET_DIRECTION, 0), Direction.IN);
        assert.equal(await op(LineOp.SET_DIRECTION, 0, Direction.OUT), 0);
        assert.equal(await op(LineOp.GET_DIRECTION, 0), Direction.OUT);
        assert.equal(await op(LineOp.GET_VALUE, 0), 0);
        assert.equal(await op(LineOp.SET_VALUE, 0, 1), 0);
        assert.equal(await op(LineOp.GET_VALUE, 0), 1);
        for (const irq of [IrqType.EDGE_RISING, IrqType.EDGE_FALLING, IrqType.EDGE_BOTH, IrqType.LEVEL_HIGH, IrqType.LEVEL_LOW, IrqType.NONE]) {
          assert.equal(await op(LineOp.SET_IRQ_TYPE, 3, irq), 0);
          assert.equal((await s.getLine(at('vm-a', 3))).irqType, irq);
        }
        const l = await s.getLine(at('vm-a', 0));
        assert.equal(l.direction, Direction.OUT);
        assert.equal(l.outputValue, 1);
        assert.equal(l.level, 1);
      });

      withStore('SET_VALUE before OUT is stored and applies when the line becomes an output', async (s) => {
        const t = await register(s, 'vm-a', 2);
        const op = (o: LineOp, value = 0): Promise<number> => s.lineOp({ chip: 'vm-a', leaseToken: t, op: o, offset: 1, value });
        await op(LineOp.SET_DIRECTION, Direction.IN);
        await op(LineOp.SET_VALUE, 1);
        assert.equal(await op(LineOp.GET_VALUE), 0, 'an input reads its pull, not the stored value');
        assert.equal((await s.getLine(at('vm-a', 1))).outputValue, 1);
        assert.equal((await s.readEvents('vm-a', 0n, 0)).length, 0);
        await op(LineOp.SET_DIRECTION, Direction.OUT);
        assert.equal(await op(LineOp.GET_VALUE), 1);
        await op(LineOp.SET_DIRECTION, Direction.IN);
        assert.equal(await op(LineOp.GET_VALUE), 0);
        assert.equal((await s.getLine(at('vm-a', 1))).outputValue, 1, 'IN keeps the stored value');
      });

      withStore('SET_DIRECTION NONE discards output value and irq type, keeps bias and net', async (s) => {
        const t = await register(s, 'vm-a', 2);
        await register(s, 'vm-b', 1);
        const op = (o: LineOp, value = 0): Promise<number> => s.lineOp({ chip: 'vm-a', leaseToken: t, op: o, offset: 0, value });
        await s.setBias(at('vm-a', 0), Pull.UP);
        await s.wire({ name: 'w', members: [at('vm-a', 0), at('vm-b', 0)], pull: Pull.DOWN, driveMode: DriveMode.PUSH_PULL });
        await op(LineOp.SET_DIRECTION, Direction.OUT);
        await op(LineOp.SET_VALUE, 1);
        await op(LineOp.SET_IRQ_TYPE, IrqType.EDGE_BOTH);
        assert.equal(await op(LineOp.GET_VALUE), 1);
        await op(LineOp.SET_DIRECTION, Direction.NONE);
        const l = await s.getLine(at('vm-a', 0));
        assert.deepEqual(
          { d: l.direction, o: l.outputValue, i: l.irqType, b: l.bias, n: l.net, v: l.level },
          { d: Direction.NONE, o: 0, i: IrqType.NONE, b: Pull.UP, n: 'w', v: 0 },
        );
        await op(LineOp.SET_DIRECTION, Direction.OUT);
        assert.equal(await op(LineOp.GET_VALUE), 0, 'the discarded value does not come back');
      });

      withStore('bad operations, values, offsets, chips and tokens are refused without change', async (s) => {
        const t = await register(s, 'vm-a', 4);
        const op = (o: number, offset: number, value: number, chip = 'vm-a', token = t): Promise<number> =>
          s.lineOp({ chip, leaseToken: token, op: o as LineOp, offset, value });
        await op(LineOp.SET_DIRECTION, 1, Direction.OUT);
        await op(LineOp.SET_VALUE, 1, 1);
        await op(LineOp.SET_IRQ_TYPE, 1, IrqType.LEVEL_HIGH);
        const cases: [string, () => Promise<unknown>, ErrorCode][] = [
          ['direction 3', () => op(LineOp.SET_DIRECTION, 1, 3), ErrorCode.INVALID_ARGUMENT],
          ['direction 255', () => op(LineOp.SET_DIRECTION, 1, 255), ErrorCode.INVALID_ARGUMENT],
          ['value 2', () => op(LineOp.SET_VALUE, 1, 2), ErrorCode.INVALID_ARGUMENT],
          ['value 0xffffffff', () => op(LineOp.SET_VALUE, 1, 0xffffffff), ErrorCode.INVALID_ARGUMENT],
          ['irq type 5', () => op(LineOp.SET_IRQ_TYPE, 1, 5), ErrorCode.INVALID_ARGUMENT],
          ['irq type 16', () => op(LineOp.SET_IRQ_TYPE, 1, 16), ErrorCode.INVALID_ARGUMENT],
          ['op 0', () => op(0, 1, 0), ErrorCode.INVALID_ARGUMENT],
          ['op 1 (names has its own call)', () => op(1, 1, 0), ErrorCode.INVALID_ARGUMENT],
          ['op 7', () => op(7, 1, 0), ErrorCode.INVALID_ARGUMENT],
          ['offset = ngpio', () => op(LineOp.GET_VALUE, 4, 0), ErrorCode.INVALID_ARGUMENT],
          ['offset 65535', () => op(LineOp.SET_DIRECTION, 65535, 1), ErrorCode.INVALID_ARGUMENT],
          ['unknown chip', () => op(LineOp.GET_VALUE, 0, 0, 'vm-zz'), ErrorCode.NOT_FOUND],
          ['newer token', () => op(LineOp.SET_VALUE, 1, 0, 'vm-a', t + 1n), ErrorCode.FAILED_PRECONDITION],
          ['token 0', () => op(LineOp.SET_VALUE, 1, 0, 'vm-a', 0n), ErrorCode.FAILED_PRECONDITION],
        ];
        for (const [what, fn, code] of cases) await rejects(s, fn, code, undefined, what);
        const e = await rejects(s, () => op(LineOp.SET_VALUE, 1, 0, 'vm-a', t + 5n), ErrorCode.FAILED_PRECONDITION);
        assert.match(e.message, new RegExp(`stale lease token ${t + 5n}, current ${t}`));
      });
    });

    // ------------------------------------------------------------ batches
    describe('line operation batches (lineOps)', () => {
      const op = (o: number, offset: number, value = 0): BatchLineOp => ({ op: o as LineOp, offset, value });
      const ok = ([value, level]: [number, 0 | 1], seq: bigint): LineOpOutcome => ({ ok: true, value, seq, level });
      /** A line without its chip id and net name (to compare two chips that got the same operations). */
      const bare = ({ chip: _c, net: _n, ...rest }: LineInfo): Omit<LineInfo, 'chip' | 'net'> => rest;
      const bareEvent = (e: LineEventRecord): [number, number, number, bigint] => [e.offset, e.level, e.edge, e.seq];
      /** The outcome as [ok, value] or [code, message], checking the error is a FabricError. */
      const outcome = (o: LineOpOutcome | undefined): [string, number | string] => {
        assert.ok(o !== undefined, 'one outcome per operation');
        if (o.ok) return ['ok', o.value];
        assert.ok(o.error instanceof FabricError, `the error of an operation is a FabricError: ${String(o.error)}`);
        return [o.error.code, o.error.message];
      };

      withStore('a batch applies in order: one outcome per operation, one event per level change, consecutive seqs', async (s) => {
        const t = await register(s, 'vm-a', 4);
        const tr = await register(s, 'vm-r', 4); // reference: the same operations one call each
        await register(s, 'vm-n', 2);
        await s.wire({ name: 'an', members: [at('vm-a', 2), at('vm-n', 1)], pull: Pull.NONE, driveMode: DriveMode.PUSH_PULL });
        const live: LineEventRecord[] = [];
        await s.subscribe(['vm-a', 'vm-n'], (e) => live.push(e));
        // [operation, [value, its line's level at the end of the batch (0: 1, 1: 0, 2: 1, 3: 0)]]
        const ops: [BatchLineOp, [number, 0 | 1]][] = [
          [op(LineOp.SET_DIRECTION, 0, Direction.OUT), [0, 1]], // output 0: level stays 0
          [op(LineOp.SET_VALUE, 0, 1), [0, 1]], // 0 -> 1 (seq 1)
          [op(LineOp.GET_VALUE, 0), [1, 1]],
          [op(LineOp.SET_VALUE, 0, 0), [0, 1]], // 1 -> 0 (seq 2)
          [op(LineOp.GET_VALUE, 0), [0, 1]],
          [op(LineOp.GET_DIRECTION, 0), [Direction.OUT, 1]],
          [op(LineOp.SET_IRQ_TYPE, 1, IrqType.EDGE_BOTH), [0, 0]],
          [op(LineOp.SET_VALUE, 2, 1), [0, 1]], // not an output yet: stored only
          [op(LineOp.GET_VALUE, 2), [0, 1]],
          [op(LineOp.SET_DIRECTION, 2, Direction.OUT), [0, 1]], // 0 -> 1 on vm-a:2 (seq 3) and on vm-n:1 across the net
          [op(LineOp.GET_VALUE, 2), [1, 1]],
          [op(LineOp.SET_VALUE, 0, 1), [0, 1]], // 0 -> 1 (seq 4)
          [op(LineOp.SET_DIRECTION, 3, Direction.IN), [0, 0]],
          [op(LineOp.GET_DIRECTION, 3), [Direction.IN, 0]],
        ];
        const out = await s.lineOps('vm-a', t, ops.map(([o]) => o));
        assert.deepEqual(out, ops.map(([, v]) => ok(v, 4n)), "values, and levels as of the chip's seq at the end of the batch");
        const evA = await s.readEvents('vm-a', 0n, 0);
        assert.deepEqual(evA.map(brief), [
          ['vm-a', 0, 1, Edge.RISING, 1n],
          ['vm-a', 0, 0, Edge.FALLING, 2n],
          ['vm-a', 2, 1, Edge.RISING, 3n],
          ['vm-a', 0, 1, Edge.RISING, 4n],
        ]);
        for (let i = 1; i < evA.length; i++) assert.ok(evA[i]!.timestampNs >= evA[i - 1]!.timestampNs, 'timestamps never go back');
        assert.deepEqual(evA.map((e) => e.echo), [true, true, true, true], "each of vm-a's events is a change of the operation's own line (irq type NONE): an echo");
        const evN = await s.readEvents('vm-n', 0n, 0);
        assert.deepEqual(evN.map(brief), [['vm-n', 1, 1, Edge.RISING, 1n]]);
        assert.equal(evN[0]?.echo, undefined, 'a change across a net on another chip is not an echo');
        assert.equal((await s.getChips?.(['vm-a']))?.[0]?.lastSeq ?? (await s.listChips()).find((c) => c.id === 'vm-a')!.lastSeq, 4n);
        // live: every event once, in per-chip seq order
        await waitFor(() => live.length >= evA.length + evN.length, 'the live events of the batch');
        await sleep(20);
        assert.deepEqual(live.filter((e) => e.chip === 'vm-a'), evA);
        assert.deepEqual(live.filter((e) => e.chip === 'vm-n'), evN);
        // the same operations one call each give the same answers, state and events
        const one: number[] = [];
        for (const [o] of ops) one.push(await s.lineOp({ chip: 'vm-r', leaseToken: tr, ...o }));
        assert.deepEqual(one, ops.map(([, v]) => v[0]));
        assert.deepEqual((await s.listLines('vm-r')).map(bare), (await s.listLines('vm-a')).map(bare));
        const evR = await s.readEvents('vm-r', 0n, 0);
        assert.deepEqual(evR.map(bareEvent), evA.map(bareEvent));
        assert.ok(evR.every((e) => e.echo === undefined), 'unary lineOp marks no echoes');
      });

      withStore('echoes: only a change of the operation\'s own line while its irq type is NONE; readEvents and live agree', async (s) => {
        const t = await register(s, 'vm-a', 4);
        await register(s, 'vm-b', 1);
        await s.wire({ name: 'loop', members: [at('vm-a', 2), at('vm-a', 3)], pull: Pull.NONE, driveMode: DriveMode.PUSH_PULL });
        await s.wire({ name: 'ab', members: [at('vm-a', 0), at('vm-b', 0)], pull: Pull.NONE, driveMode: DriveMode.PUSH_PULL });
        const live: LineEventRecord[] = [];
        await s.subscribe(['vm-a', 'vm-b'], (e) => live.push(e));
        const out = await s.lineOps('vm-a', t, [
          op(LineOp.SET_DIRECTION, 0, Direction.OUT),
          op(LineOp.SET_VALUE, 0, 1), // vm-a:0 (own line: echo, seq 1) and vm-b:0 (another chip)
          op(LineOp.SET_DIRECTION, 1, Direction.OUT),
          op(LineOp.SET_IRQ_TYPE, 1, IrqType.EDGE_BOTH),
          op(LineOp.SET_VALUE, 1, 1), // own line, but an interrupt is armed on it: not an echo (seq 2)
          op(LineOp.SET_DIRECTION, 2, Direction.OUT),
          op(LineOp.SET_VALUE, 2, 1), // vm-a:2 (echo, seq 3) and vm-a:3 across the net (another line, seq 4)
          op(LineOp.SET_DIRECTION, 0, Direction.IN), // vm-a:0 released: 1 -> 0 (echo, seq 5), and vm-b:0
        ]);
        assert.deepEqual(out.map((o) => (o.ok ? [o.seq, o.level] : o.error.message)), [[5n, 0], [5n, 0], [5n, 1], [5n, 1], [5n, 1], [5n, 1], [5n, 1], [5n, 0]]);
        await s.lineOp({ chip: 'vm-a', leaseToken: t, op: LineOp.SET_VALUE, offset: 2, value: 0 }); // unary: not an echo (seq 6, 7)
        const flags = (es: readonly LineEventRecord[]): [string, number, bigint, boolean][] => es.map((e) => [e.chip, e.offset, e.seq, e.echo === true]);
        const expected: [string, number, bigint, boolean][] = [
          ['vm-a', 0, 1n, true], ['vm-a', 1, 2n, false], ['vm-a', 2, 3n, true], ['vm-a', 3, 4n, false], ['vm-a', 0, 5n, true],
          ['vm-a', 2, 6n, false], ['vm-a', 3, 7n, false],
        ];
        assert.deepEqual(flags(await s.readEvents('vm-a', 0n, 0)), expected);
        assert.deepEqual(flags(await s.readEvents('vm-b', 0n, 0)), [['vm-b', 0, 1n, false], ['vm-b', 0, 2n, false]]);
        await waitFor(() => live.length >= 9, 'the live events');
        await sleep(20);
        assert.deepEqual(flags(live.filter((e) => e.chip === 'vm-a')), expected);
      });

      withStore('an invalid operation fails alone with INVALID_ARGUMENT and changes nothing; the others apply', async (s) => {
        const t = await register(s, 'vm-a', 4);
        const tr = await register(s, 'vm-r', 4); // reference: only the valid operations
        await s.lineOp({ chip: 'vm-a', leaseToken: t, op: LineOp.SET_IRQ_TYPE, offset: 1, value: IrqType.LEVEL_LOW });
        await s.lineOp({ chip: 'vm-r', leaseToken: tr, op: LineOp.SET_IRQ_TYPE, offset: 1, value: IrqType.LEVEL_LOW });
        // [operation, expected value or undefined for a failure, message of the failure]
        const ops: [BatchLineOp, number | undefined, RegExp?][] = [
          [op(LineOp.SET_DIRECTION, 0, Direction.OUT), 0],
          [op(LineOp.SET_VALUE, 4, 1), undefined, /offset 4 is out of range for chip vm-a \(0\.\.3\)/],
          [op(LineOp.SET_VALUE, 0, 1), 0],
          [op(LineOp.SET_VALUE, 0, 2), undefined, /value 2 is not 0 or 1/],
          [op(LineOp.SET_DIRECTION, 1, 3), undefined, /direction 3 is not one of/],
          [op(LineOp.SET_IRQ_TYPE, 1, 5), undefined, /irq type 5 is not one of/],
          [op(7, 0, 1), undefined, /unknown line operation 7/],
          [op(0, 0, 0), undefined, /unknown line operation 0/],
          [op(1, 0, 0), undefined, /unknown line operation 1/],
          [op(LineOp.GET_VALUE, 65535), undefined, /offset 65535/],
          [op(LineOp.GET_VALUE, -1), undefined, /offset -1/],
          [op(LineOp.GET_VALUE, 1.5), undefined, /offset 1\.5/],
          [op(LineOp.GET_VALUE, 0), 1],
          [op(LineOp.SET_DIRECTION, 0, 0xffffffff), undefined, /direction 4294967295/],
          [op(LineOp.SET_VALUE, 0, 0), 0],
          [op(LineOp.SET_VALUE, 0, -1), undefined, /value -1/],
          [op(LineOp.GET_VALUE, 0), 0],
          [op(LineOp.GET_DIRECTION, 0), Direction.OUT],
          [op(LineOp.GET_DIRECTION, 1), Direction.NONE],
        ];
        const out = await s.lineOps('vm-a', t, ops.map(([o]) => o));
        assert.equal(out.length, ops.length);
        ops.forEach(([o, v, re], i) => {
          const [k, x] = outcome(out[i]);
          const what = `operation ${i} ${JSON.stringify(o)}`;
          if (v !== undefined) assert.deepEqual([k, x], ['ok', v], what);
          else {
            assert.equal(k, ErrorCode.INVALID_ARGUMENT, `${what}: ${String(x)}`);
            assert.match(String(x), re!, what);
          }
        });
        for (const [o, v] of ops) if (v !== undefined) await s.lineOp({ chip: 'vm-r', leaseToken: tr, ...o });
        assert.deepEqual((await s.listLines('vm-a')).map(bare), (await s.listLines('vm-r')).map(bare), 'the failed operations changed nothing');
        const ev = await s.readEvents('vm-a', 0n, 0);
        assert.deepEqual(ev.map(brief), [['vm-a', 0, 1, Edge.RISING, 1n], ['vm-a', 0, 0, Edge.FALLING, 2n]]);
        assert.deepEqual((await s.readEvents('vm-r', 0n, 0)).map(bareEvent), ev.map(bareEvent));

        // a batch of nothing but invalid operations: every one fails, nothing changes, no event
        const before = await snapshot(s);
        const bad = [op(LineOp.SET_VALUE, 0, 7), op(LineOp.SET_DIRECTION, 4, Direction.OUT), op(9, 0, 0), op(LineOp.GET_VALUE, -3)];
        const out2 = await s.lineOps('vm-a', t, bad);
        assert.deepEqual(out2.map((o) => outcome(o)[0]), bad.map(() => ErrorCode.INVALID_ARGUMENT));
        assert.deepEqual(await snapshot(s), before);
        assert.equal((await s.readEvents('vm-a', 0n, 0)).length, 2);
      });

      withStore('a stale lease or an unknown chip rejects the whole batch: nothing applied, no event', async (s) => {
        const t = await register(s, 'vm-a', 4);
        await s.lineOp({ chip: 'vm-a', leaseToken: t, op: LineOp.SET_DIRECTION, offset: 0, value: Direction.OUT });
        const tc = await register(s, 'vm-c', 2);
        await s.releaseChip('vm-c', tc);
        const live: LineEventRecord[] = [];
        await s.subscribe([], (e) => live.push(e));
        const lines = await s.listLines('');
        // valid operations that would change levels, one invalid one, reads
        const batch = [op(LineOp.SET_VALUE, 0, 1), op(LineOp.SET_DIRECTION, 1, Direction.OUT), op(LineOp.GET_VALUE, 0), op(LineOp.SET_VALUE, 9, 1), op(LineOp.SET_DIRECTION, 0, Direction.NONE)];
        const e1 = await rejects(s, () => s.lineOps('vm-a', t + 1n, batch), ErrorCode.FAILED_PRECONDITION, /stale lease token/, 'newer token');
        assert.match(e1.message, new RegExp(`stale lease token ${t + 1n}, current ${t}`));
        await rejects(s, () => s.lineOps('vm-a', 0n, batch), ErrorCode.FAILED_PRECONDITION, /stale lease token/, 'token 0');
        if (t > 1n) await rejects(s, () => s.lineOps('vm-a', t - 1n, batch), ErrorCode.FAILED_PRECONDITION, /stale lease token/, 'older token');
        await rejects(s, () => s.lineOps('vm-c', tc, [op(LineOp.SET_DIRECTION, 0, Direction.OUT), op(LineOp.GET_VALUE, 0)]), ErrorCode.FAILED_PRECONDITION, /no lease/, 'released lease');
        await rejects(s, () => s.lineOps('vm-zz', t, batch), ErrorCode.NOT_FOUND, /vm-zz/, 'unknown chip');
        assert.deepEqual(await s.listLines(''), lines);
        assert.deepEqual(await s.readEvents('vm-a', 0n, 0), []);
        assert.deepEqual(await s.readEvents('vm-c', 0n, 0), []);
        // the listener got nothing: the next real change is the first event it sees
        await s.lineOp({ chip: 'vm-a', leaseToken: t, op: LineOp.SET_VALUE, offset: 0, value: 1 });
        await waitFor(() => live.length >= 1, 'the event of the valid call');
        await sleep(20);
        assert.deepEqual(live.map(brief), [['vm-a', 0, 1, Edge.RISING, 1n]]);
      });

      withStore('a stale lease or an unknown chip rejects even a batch of only malformed operations', async (s) => {
        const t = await register(s, 'vm-a', 2);
        const malformed = [op(LineOp.GET_VALUE, -1), op(LineOp.SET_VALUE, 0.5, 1)];
        await rejects(s, () => s.lineOps('vm-a', t + 1n, malformed), ErrorCode.FAILED_PRECONDITION, /stale lease token/, 'stale lease');
        await rejects(s, () => s.lineOps('vm-zz', t, malformed), ErrorCode.NOT_FOUND, /vm-zz/, 'unknown chip');
      });

      withStore('an empty batch answers [] and changes nothing', async (s) => {
        const t = await register(s, 'vm-a', 2);
        await s.lineOp({ chip: 'vm-a', leaseToken: t, op: LineOp.SET_DIRECTION, offset: 1, value: Direction.OUT });
        const before = await snapshot(s);
        assert.deepEqual(await s.lineOps('vm-a', t, []), []);
        assert.deepEqual(await snapshot(s), before);
        assert.deepEqual(await s.readEvents('vm-a', 0n, 0), []);
      });

      withStore(`at most MAX_OP_BATCH (${MAX_OP_BATCH}) operations: one more is refused whole, exactly that many apply`, async (s) => {
        const t = await register(s, 'vm-a', 2);
        await s.lineOp({ chip: 'vm-a', leaseToken: t, op: LineOp.SET_DIRECTION, offset: 0, value: Direction.OUT });
        const toggles = (n: number): BatchLineOp[] => Array.from({ length: n }, (_, i) => op(LineOp.SET_VALUE, 0, (i + 1) % 2));
        const e = await rejects(s, () => s.lineOps('vm-a', t, toggles(MAX_OP_BATCH + 1)), ErrorCode.INVALID_ARGUMENT, new RegExp(`${MAX_OP_BATCH}`), 'one too many');
        assert.match(e.message, new RegExp(`${MAX_OP_BATCH + 1}`), 'the message says how many were sent');
        await rejects(s, () => s.lineOps('vm-a', t, [...toggles(MAX_OP_BATCH), op(LineOp.GET_VALUE, 0)]), ErrorCode.INVALID_ARGUMENT, undefined, 'reads count too');
        assert.deepEqual(await s.readEvents('vm-a', 0n, 0), []);
        const out = await s.lineOps('vm-a', t, toggles(MAX_OP_BATCH));
        assert.equal(out.length, MAX_OP_BATCH);
        assert.ok(out.every((o) => o.ok && o.value === 0), 'every operation of a full batch succeeds');
        const ev = await s.readEvents('vm-a', 0n, 2 * MAX_OP_BATCH);
        assert.equal(ev.length, MAX_OP_BATCH, 'every toggle changed the level');
        ev.forEach((x, i) => assert.deepEqual(brief(x), ['vm-a', 0, (i + 1) % 2, (i + 1) % 2 === 1 ? Edge.RISING : Edge.FALLING, BigInt(i + 1)]));
        assert.equal((await s.listChips())[0]!.lastSeq, BigInt(MAX_OP_BATCH));
      });
    });

    // ------------------------------------------------------------ resolution
    describe('level resolution', () => {
      withStore('an unwired line: own drive, external drive, bias', async (s) => {
        const t = await register(s, 'vm-a', 1);
        const op = (o: LineOp, value = 0): Promise<number> => s.lineOp({ chip: 'vm-a', leaseToken: t, op: o, offset: 0, value });
        const level = async (): Promise<number> => (await s.getLine(at('vm-a', 0))).level;
        assert.equal(await level(), 0, 'floating reads 0');
        await s.setBias(at('vm-a', 0), Pull.UP);
        assert.equal(await level(), 1);
        await op(LineOp.SET_DIRECTION, Direction.OUT); // drives its stored 0
        assert.equal(await level(), 0);
        await op(LineOp.SET_DIRECTION, Direction.IN);
        assert.equal(await level(), 1);
        assert.equal(await s.drive({ kind: 'line', line: at('vm-a', 0) }, DriveValue.LOW), 0);
        assert.equal(await op(LineOp.GET_VALUE), 0);
        await op(LineOp.SET_VALUE, 1);
        await op(LineOp.SET_DIRECTION, Direction.OUT);
        assert.equal(await level(), 0, 'own 1 against external 0 (push-pull contention) resolves to 0');
        assert.equal(await s.drive({ kind: 'line', line: at('vm-a', 0) }, DriveValue.HIGH), 1);
        assert.equal(await s.drive({ kind: 'line', line: at('vm-a', 0) }, DriveValue.RELEASE), 1);
        await s.setBias(at('vm-a', 0), Pull.DOWN);
        await op(LineOp.SET_DIRECTION, Direction.IN);
        assert.equal(await level(), 0);
        assert.equal((await s.getLine(at('vm-a', 0))).externalDrive, DriveValue.RELEASE);
      });

      withStore('push-pull net: agreeing drivers, contention resolves to 0 and is counted on entry', async (s) => {
        const ta = await register(s, 'vm-a', 1);
        const tb = await register(s, 'vm-b', 1);
        const set = async (chip: string, token: bigint, dir: number, v: number): Promise<void> => {
          await s.lineOp({ chip, leaseToken: token, op: LineOp.SET_VALUE, offset: 0, value: v });
          await s.lineOp({ chip, leaseToken: token, op: LineOp.SET_DIRECTION, offset: 0, value: dir });
        };
        const n0 = await s.wire({ name: 'bus', members: [at('vm-a', 0), at('vm-b', 0)], pull: Pull.UP, driveMode: DriveMode.PUSH_PULL });
        assert.equal(n0.level, 1, 'undriven net reads its pull');
        assert.equal(n0.contention, false);
        await set('vm-a', ta, Direction.OUT, 0);
        let n = (await s.listNets())[0]!;
        assert.equal(n.level, 0);
        await set('vm-b', tb, Direction.OUT, 0);
        n = (await s.listNets())[0]!;
        assert.deepEqual([n.level, n.contention, n.contentionCount], [0, false, 0n]);
        await s.lineOp({ chip: 'vm-b', leaseToken: tb, op: LineOp.SET_VALUE, offset: 0, value: 1 });
        n = (await s.listNets())[0]!;
        assert.deepEqual([n.level, n.contention, n.contentionCount], [0, true, 1n]);
        // still in contention: not counted again
        await s.drive({ kind: 'net', net: 'bus' }, DriveValue.HIGH);
        n = (await s.listNets())[0]!;
        assert.deepEqual([n.level, n.contention, n.contentionCount], [0, true, 1n]);
        await s.drive({ kind: 'net', net: 'bus' }, DriveValue.RELEASE);
        await s.lineOp({ chip: 'vm-a', leaseToken: ta, op: LineOp.SET_VALUE, offset: 0, value: 1 });
        n = (await s.listNets())[0]!;
        assert.deepEqual([n.level, n.contention, n.contentionCount], [1, false, 1n]);
        assert.equal((await s.getLine(at('vm-a', 0))).level, 1);
        assert.equal(await s.lineOp({ chip: 'vm-b', leaseToken: tb, op: LineOp.GET_VALUE, offset: 0, value: 0 }), 1);
        await s.lineOp({ chip: 'vm-a', leaseToken: ta, op: LineOp.SET_VALUE, offset: 0, value: 0 });
        n = (await s.listNets())[0]!;
        assert.deepEqual([n.level, n.contention, n.contentionCount], [0, true, 2n], 'entering contention again counts again');
      });

      withStore('open-drain net: any 0 pulls low, otherwise released high', async (s) => {
        const ta = await register(s, 'vm-a', 1);
        const tb = await register(s, 'vm-b', 1);
        await register(s, 'vm-c', 1);
        const out = async (chip: string, token: bigint, v: number): Promise<void> => {
          await s.lineOp({ chip, leaseToken: token, op: LineOp.SET_VALUE, offset: 0, value: v });
          await s.lineOp({ chip, leaseToken: token, op: LineOp.SET_DIRECTION, offset: 0, value: Direction.OUT });
        };
        const level = async (): Promise<number> => (await s.listNets())[0]!.level;
        await s.wire({ name: 'i2c', members: [at('vm-a', 0), at('vm-b', 0), at('vm-c', 0)], pull: Pull.NONE, driveMode: DriveMode.OPEN_DRAIN });
        assert.equal(await level(), 0, 'no driver, no pull: floats low');
        await out('vm-a', ta, 1);
        assert.equal(await level(), 1, 'a released driver with no pull: implicit pull-up');
        await out('vm-b', tb, 0);
        assert.equal(await level(), 0, 'one low wins');
        const n = (await s.listNets())[0]!;
        assert.equal(n.contention, false, 'open drain never contends');
        assert.equal(n.contentionCount, 0n);
        await s.lineOp({ chip: 'vm-b', leaseToken: tb, op: LineOp.SET_VALUE, offset: 0, value: 1 });
        assert.equal(await level(), 1);
        assert.equal((await s.getLine(at('vm-c', 0))).level, 1, 'every member sees the net level');
      });

      withStore('net pull decides an undriven net; external drives of nets and member lines count', async (s) => {
        await register(s, 'vm-a', 2);
        await register(s, 'vm-b', 2);
        await s.setBias(at('vm-a', 0), Pull.UP); // bias of a wired line is ignored
        await s.wire({ name: 'down', members: [at('vm-a', 0), at('vm-b', 0)], pull: Pull.DOWN, driveMode: DriveMode.PUSH_PULL });
        await s.wire({ name: 'up', members: [at('vm-a', 1), at('vm-b', 1)], pull: Pull.UP, driveMode: DriveMode.PUSH_PULL });
        const lv = async (name: string): Promise<number> => (await s.listNets()).find((n) => n.name === name)!.level;
        assert.equal(await lv('down'), 0);
        assert.equal(await lv('up'), 1);
        assert.equal(await s.drive({ kind: 'net', net: 'down' }, DriveValue.HIGH), 1);
        assert.equal((await s.listNets()).find((n) => n.name === 'down')!.externalDrive, DriveValue.HIGH);
        assert.equal((await s.getLine(at('vm-b', 0))).level, 1);
        assert.equal(await s.drive({ kind: 'net', net: 'down' }, DriveValue.RELEASE), 0);
        assert.equal(await s.drive({ kind: 'line', line: at('vm-b', 1) }, DriveValue.LOW), 0, 'a member line drive drives the net');
        assert.equal((await s.getLine(at('vm-a', 1))).level, 0);
        assert.equal(await s.drive({ kind: 'net', net: 'up' }, DriveValue.HIGH), 0, 'net HIGH against line LOW: contention, 0');
        const up = (await s.listNets()).find((n) => n.name === 'up')!;
        assert.deepEqual([up.contention, up.contentionCount], [true, 1n]);
      });
    });

    // ------------------------------------------------------------ events
    describe('events', () => {
      withStore('one event per level change with edge, per-chip seq and timestamps; none without change', async (s) => {
        const t = await register(s, 'vm-a', 2);
        const op = (o: LineOp, offset: number, value: number): Promise<number> => s.lineOp({ chip: 'vm-a', leaseToken: t, op: o, offset, value });
        const before = BigInt(Date.now() - 60_000) * 1_000_000n;
        await op(LineOp.SET_VALUE, 0, 1); // not an output: no change
        await op(LineOp.SET_DIRECTION, 0, Direction.IN); // still 0
        await op(LineOp.SET_DIRECTION, 0, Direction.OUT); // 0 -> 1
        await op(LineOp.SET_VALUE, 0, 1); // unchanged
        await op(LineOp.SET_IRQ_TYPE, 0, IrqType.EDGE_BOTH); // unchanged
        await op(LineOp.SET_VALUE, 0, 0); // 1 -> 0
        await s.setBias(at('vm-a', 1), Pull.UP); // line 1: 0 -> 1
        await s.setBias(at('vm-a', 1), Pull.UP); // unchanged
        await s.drive({ kind: 'line', line: at('vm-a', 1) }, DriveValue.HIGH); // unchanged
        await s.drive({ kind: 'line', line: at('vm-a', 1) }, DriveValue.LOW); // 1 -> 0
        const ev = await s.readEvents('vm-a', 0n, 100);
        assert.deepEqual(ev.map(brief), [
          ['vm-a', 0, 1, Edge.RISING, 1n],
          ['vm-a', 0, 0, Edge.FALLING, 2n],
          ['vm-a', 1, 1, Edge.RISING, 3n],
          ['vm-a', 1, 0, Edge.FALLING, 4n],
        ]);
        for (let i = 0; i < ev.length; i++) {
          assert.ok(ev[i]!.timestampNs > before, 'timestamps are wall-clock ns');
          if (i > 0) assert.ok(ev[i]!.timestampNs >= ev[i - 1]!.timestampNs, 'timestamps never go back');
        }
        assert.equal((await s.listChips())[0]!.lastSeq, 4n);
      });

      withStore('one change emits events on every chip of the net, each with its own seq', async (s) => {
        const ta = await register(s, 'vm-a', 2);
        await register(s, 'vm-b', 3);
        await register(s, 'vm-c', 1);
        await s.setBias(at('vm-b', 0), Pull.UP); // vm-b seq 1
        await s.wire({ name: 'n', members: [at('vm-a', 1), at('vm-b', 2), at('vm-c', 0)], pull: Pull.NONE, driveMode: DriveMode.PUSH_PULL });
        await s.lineOp({ chip: 'vm-a', leaseToken: ta, op: LineOp.SET_VALUE, offset: 1, value: 1 });
        await s.lineOp({ chip: 'vm-a', leaseToken: ta, op: LineOp.SET_DIRECTION, offset: 1, value: Direction.OUT });
        assert.deepEqual((await s.readEvents('vm-a', 0n, 0)).map(brief), [['vm-a', 1, 1, Edge.RISING, 1n]]);
        assert.deepEqual((await s.readEvents('vm-b', 0n, 0)).map(brief), [['vm-b', 0, 1, Edge.RISING, 1n], ['vm-b', 2, 1, Edge.RISING, 2n]]);
        assert.deepEqual((await s.readEvents('vm-c', 0n, 0)).map(brief), [['vm-c', 0, 1, Edge.RISING, 1n]]);
      });

      withStore('wire, unwire, drive, bias and topology changes emit events too', async (s) => {
        await register(s, 'vm-a', 1);
        await register(s, 'vm-b', 1);
        await s.setBias(at('vm-a', 0), Pull.UP); // a:1
        await s.wire({ name: 'n', members: [at('vm-a', 0), at('vm-b', 0)], pull: Pull.DOWN, driveMode: DriveMode.PUSH_PULL }); // a:0
        await s.drive({ kind: 'net', net: 'n' }, DriveValue.HIGH); // a:1 b:1
        await s.unwire('n'); // a stays 1 (bias up), b: 0
        await s.applyTopology({ chips: [], nets: [], drives: [{ target: { kind: 'line', line: at('vm-b', 0) }, value: DriveValue.HIGH }] }, false); // b:1
        assert.deepEqual((await s.readEvents('vm-a', 0n, 0)).map((e) => e.level), [1, 0, 1]);
        assert.deepEqual((await s.readEvents('vm-b', 0n, 0)).map((e) => e.level), [1, 0, 1]);
      });

      withStore('readEvents: exclusive cursor, limit, future cursor, unknown chip, bad arguments', async (s) => {
        const t = await register(s, 'vm-a', 1);
        for (let i = 0; i < 5; i++) {
          await s.lineOp({ chip: 'vm-a', leaseToken: t, op: LineOp.SET_DIRECTION, offset: 0, value: i % 2 === 0 ? Direction.OUT : Direction.IN });
          await s.lineOp({ chip: 'vm-a', leaseToken: t, op: LineOp.SET_VALUE, offset: 0, value: i % 2 === 0 ? 1 : 0 });
        }
        const all = await s.readEvents('vm-a', 0n, 0);
        assert.deepEqual(all.map((e) => e.seq), [1n, 2n, 3n, 4n, 5n]);
        assert.deepEqual((await s.readEvents('vm-a', 2n, 2)).map((e) => e.seq), [3n, 4n]);
        assert.deepEqual(await s.readEvents('vm-a', 5n, 10), []);
        await rejects(s, () => s.readEvents('vm-a', 6n, 10), ErrorCode.OUT_OF_RANGE, /cursor 6 is ahead of the newest event 5/);
        await rejects(s, () => s.readEvents('vm-zz', 0n, 10), ErrorCode.NOT_FOUND);
        await rejects(s, () => s.readEvents('vm-a', -1n, 10), ErrorCode.INVALID_ARGUMENT);
        await rejects(s, () => s.readEvents('vm-a', 0n, -1), ErrorCode.INVALID_ARGUMENT);
        await register(s, 'vm-b', 1);
        assert.deepEqual(await s.readEvents('vm-b', 0n, 10), []);
        await rejects(s, () => s.readEvents('vm-b', 1n, 10), ErrorCode.OUT_OF_RANGE);
      });

      withStore('subscribe delivers live events in per-chip order, filtered by chip', async (s) => {
        const ta = await register(s, 'vm-a', 2);
        const tb = await register(s, 'vm-b', 2);
        await s.setBias(at('vm-a', 1), Pull.UP); // vm-a seq 1: before the subscriptions, never delivered
        const onlyA: LineEventRecord[] = [];
        const all: LineEventRecord[] = [];
        const subA = await s.subscribe(['vm-a'], (e) => onlyA.push(e));
        const subAll = await s.subscribe([], (e) => all.push(e));
        await s.wire({ name: 'x', members: [at('vm-a', 0), at('vm-b', 0)], pull: Pull.UP, driveMode: DriveMode.OPEN_DRAIN }); // a0 1, b0 1
        await s.lineOp({ chip: 'vm-a', leaseToken: ta, op: LineOp.SET_DIRECTION, offset: 0, value: Direction.OUT }); // a0 0, b0 0
        await s.lineOp({ chip: 'vm-b', leaseToken: tb, op: LineOp.SET_VALUE, offset: 1, value: 1 }); // no change
        await s.lineOp({ chip: 'vm-b', leaseToken: tb, op: LineOp.SET_DIRECTION, offset: 1, value: Direction.OUT }); // b1 1
        await s.unwire('x'); // a0 stays 0, b0 back to 0 (no bias): no change
        await s.setBias(at('vm-a', 1), Pull.DOWN); // a1 0
        const wantA = (await s.readEvents('vm-a', 1n, 0)).map(brief);
        const wantB = (await s.readEvents('vm-b', 0n, 0)).map(brief);
        assert.deepEqual(wantA, [['vm-a', 0, 1, 1, 2n], ['vm-a', 0, 0, 2, 3n], ['vm-a', 1, 0, 2, 4n]]);
        assert.deepEqual(wantB, [['vm-b', 0, 1, 1, 1n], ['vm-b', 0, 0, 2, 2n], ['vm-b', 1, 1, 1, 3n]]);
        await waitFor(() => all.length >= 6 && onlyA.length >= 3, 'live events');
        assert.deepEqual(all.filter((e) => e.chip === 'vm-a').map(brief), wantA);
        assert.deepEqual(all.filter((e) => e.chip === 'vm-b').map(brief), wantB);
        assert.deepEqual(onlyA.map(brief), wantA);
        assert.deepEqual(all.filter((e) => e.chip === 'vm-a'), await s.readEvents('vm-a', 1n, 0), 'live and stored events are identical');
        // a closed subscription gets nothing more; the open one proves the event was delivered
        subA.close();
        await s.drive({ kind: 'line', line: at('vm-a', 1) }, DriveValue.HIGH);
        await waitFor(() => all.length >= 7, 'the marker event');
        assert.equal(onlyA.length, 3);
        assert.equal(all.length, 7);
        subAll.close();
      });
    });

    // ------------------------------------------------------------ wiring
    describe('wire and unwire', () => {
      withStore('wires lines by offset and by name; generated names', async (s) => {
        await register(s, 'vm-a', 4, { names: ['', 'led', '', ''] });
        await register(s, 'vm-b', 2);
        const n = await s.wire({ name: 'reset', members: [named('vm-a', 'led'), at('vm-b', 1)], pull: Pull.UP, driveMode: DriveMode.OPEN_DRAIN });
        assert.deepEqual(n, {
          name: 'reset', members: [{ chip: 'vm-a', offset: 1 }, { chip: 'vm-b', offset: 1 }], pull: Pull.UP, driveMode: DriveMode.OPEN_DRAIN,
          level: 1, externalDrive: DriveValue.RELEASE, contention: false, contentionCount: 0n,
        });
        assert.equal((await s.getLine(at('vm-a', 1))).net, 'reset');
        assert.equal((await s.getLine(named('vm-a', 'led'))).name, 'led');
        const g = await s.wire({ name: '', members: [at('vm-a', 0), at('vm-a', 2), at('vm-b', 0)], pull: Pull.NONE, driveMode: DriveMode.PUSH_PULL });
        assert.match(g.name, /^net-\d+$/);
        const g2 = await s.wire({ name: '', members: [at('vm-a', 3), named('vm-a', 'led')], pull: Pull.NONE, driveMode: DriveMode.PUSH_PULL }).catch((e: unknown) => e);
        assert.ok(g2 instanceof FabricError && g2.code === ErrorCode.ALREADY_EXISTS, 'a generated name does not bypass the checks');
        assert.deepEqual((await s.listNets()).map((x) => x.name).sort(), [g.name, 'reset'].sort());
      });

      withStore('wire errors leave everything unchanged', async (s) => {
        await register(s, 'vm-a', 4, { names: ['a0', 'a1', '', ''] });
        await register(s, 'vm-b', 2);
        await s.wire({ name: 'taken', members: [at('vm-a', 0), at('vm-b', 0)], pull: Pull.NONE, driveMode: DriveMode.PUSH_PULL });
        const w = (name: string, members: LineAddress[], pull = 0, mode = 0): Promise<unknown> =>
          s.wire({ name, members, pull: pull as Pull, driveMode: mode as DriveMode });
        const cases: [string, () => Promise<unknown>, ErrorCode, RegExp?][] = [
          ['one member', () => w('n', [at('vm-a', 1)]), ErrorCode.INVALID_ARGUMENT],
          ['no members', () => w('n', []), ErrorCode.INVALID_ARGUMENT],
          ['same line twice', () => w('n', [at('vm-a', 1), at('vm-a', 1)]), ErrorCode.INVALID_ARGUMENT],
          ['same line by offset and name', () => w('n', [at('vm-a', 1), named('vm-a', 'a1')]), ErrorCode.INVALID_ARGUMENT],
          ['unknown chip', () => w('n', [at('vm-a', 1), at('vm-zz', 0)]), ErrorCode.NOT_FOUND],
          ['offset out of range', () => w('n', [at('vm-a', 1), at('vm-b', 2)]), ErrorCode.INVALID_ARGUMENT],
          ['unknown line name', () => w('n', [at('vm-a', 1), named('vm-b', 'nope')]), ErrorCode.NOT_FOUND],
          ['line already wired', () => w('n', [at('vm-a', 1), at('vm-b', 0)]), ErrorCode.ALREADY_EXISTS, /vm-b:0.*taken/],
          ['line already wired (by name)', () => w('n', [named('vm-a', 'a0'), at('vm-b', 1)]), ErrorCode.ALREADY_EXISTS, /vm-a:0.*taken/],
          ['name taken', () => w('taken', [at('vm-a', 1), at('vm-b', 1)]), ErrorCode.ALREADY_EXISTS, /taken/],
          ['bad name', () => w('has space', [at('vm-a', 1), at('vm-b', 1)]), ErrorCode.INVALID_ARGUMENT],
          ['name too long', () => w('n'.repeat(65), [at('vm-a', 1), at('vm-b', 1)]), ErrorCode.INVALID_ARGUMENT],
          ['bad pull', () => w('n', [at('vm-a', 1), at('vm-b', 1)], 3), ErrorCode.INVALID_ARGUMENT],
          ['bad drive mode', () => w('n', [at('vm-a', 1), at('vm-b', 1)], 0, 2), ErrorCode.INVALID_ARGUMENT],
        ];
        for (const [what, fn, code, re] of cases) await rejects(s, fn, code, re, what);
      });

      withStore('unwire re-resolves the lines alone and emits their changes', async (s) => {
        const ta = await register(s, 'vm-a', 1);
        await register(s, 'vm-b', 1);
        await s.setBias(at('vm-b', 0), Pull.DOWN);
        await s.wire({ name: 'n', members: [at('vm-a', 0), at('vm-b', 0)], pull: Pull.NONE, driveMode: DriveMode.PUSH_PULL });
        await s.lineOp({ chip: 'vm-a', leaseToken: ta, op: LineOp.SET_VALUE, offset: 0, value: 1 });
        await s.lineOp({ chip: 'vm-a', leaseToken: ta, op: LineOp.SET_DIRECTION, offset: 0, value: Direction.OUT });
        assert.equal((await s.getLine(at('vm-b', 0))).level, 1);
        await s.unwire('n');
        assert.deepEqual(await s.listNets(), []);
        const b = await s.getLine(at('vm-b', 0));
        assert.deepEqual([b.level, b.net], [0, '']);
        assert.equal((await s.getLine(at('vm-a', 0))).level, 1);
        assert.deepEqual((await s.readEvents('vm-b', 0n, 0)).map((e) => e.level), [1, 0]);
        await rejects(s, () => s.unwire('n'), ErrorCode.NOT_FOUND);
        await rejects(s, () => s.unwire('never'), ErrorCode.NOT_FOUND);
        // the lines can be wired again
        await s.wire({ name: 'n', members: [at('vm-a', 0), at('vm-b', 0)], pull: Pull.NONE, driveMode: DriveMode.PUSH_PULL });
      });

      withStore('drive, setBias, getLine, listLines and getNames errors', async (s) => {
        await register(s, 'vm-a', 2, { names: ['x', ''] });
        await s.drive({ kind: 'line', line: at('vm-a', 0) }, DriveValue.HIGH);
        const cases: [string, () => Promise<unknown>, ErrorCode][] = [
          ['drive unknown net', () => s.drive({ kind: 'net', net: 'nope' }, DriveValue.HIGH), ErrorCode.NOT_FOUND],
          ['drive unknown chip', () => s.drive({ kind: 'line', line: at('vm-zz', 0) }, DriveValue.HIGH), ErrorCode.NOT_FOUND],
          ['drive unknown name', () => s.drive({ kind: 'line', line: named('vm-a', 'y') }, DriveValue.HIGH), ErrorCode.NOT_FOUND],
          ['drive offset out of range', () => s.drive({ kind: 'line', line: at('vm-a', 2) }, DriveValue.HIGH), ErrorCode.INVALID_ARGUMENT],
          ['drive bad value', () => s.drive({ kind: 'line', line: at('vm-a', 1) }, 3 as DriveValue), ErrorCode.INVALID_ARGUMENT],
          ['bias bad value', () => s.setBias(at('vm-a', 1), 3 as Pull), ErrorCode.INVALID_ARGUMENT],
          ['bias unknown chip', () => s.setBias(at('vm-zz', 1), Pull.UP), ErrorCode.NOT_FOUND],
          ['bias offset out of range', () => s.setBias(at('vm-a', 9), Pull.UP), ErrorCode.INVALID_ARGUMENT],
          ['getLine unknown chip', () => s.getLine(at('vm-zz', 0)), ErrorCode.NOT_FOUND],
          ['getLine unknown name', () => s.getLine(named('vm-a', 'y')), ErrorCode.NOT_FOUND],
          ['getLine offset out of range', () => s.getLine(at('vm-a', 2)), ErrorCode.INVALID_ARGUMENT],
          ['getLine negative offset', () => s.getLine(at('vm-a', -1)), ErrorCode.INVALID_ARGUMENT],
          ['listLines unknown chip', () => s.listLines('vm-zz'), ErrorCode.NOT_FOUND],
          ['getNames unknown chip', () => s.getNames('vm-zz'), ErrorCode.NOT_FOUND],
        ];
        for (const [what, fn, code] of cases) await rejects(s, fn, code, undefined, what);
        const l = await s.setBias(named('vm-a', 'x'), Pull.DOWN);
        assert.deepEqual([l.offset, l.name, l.bias, l.level, l.externalDrive], [0, 'x', Pull.DOWN, 1, DriveValue.HIGH]);
      });

      withStore('getChips reads exactly the requested chips, in order', async (s) => {
        await register(s, 'vm-b', 1);
        await register(s, 'vm-a', 2, { names: ['x', ''], owner: 'agent-x' });
        assert.ok(s.getChips !== undefined, 'both stores implement getChips');
        const all = new Map((await s.listChips()).map((c) => [c.id, c]));
        const got = await s.getChips(['vm-b', 'vm-zz', 'vm-a']);
        assert.equal(got.length, 3);
        assert.deepEqual({ ...got[0]!, online: undefined }, { ...all.get('vm-b')!, online: undefined });
        assert.equal(got[1], undefined, 'an unregistered chip is undefined');
        assert.deepEqual({ ...got[2]!, online: undefined }, { ...all.get('vm-a')!, online: undefined });
        assert.deepEqual([got[2]!.ngpio, got[2]!.names, got[2]!.owner, got[2]!.online], [2, ['x', ''], 'agent-x', true]);
        assert.deepEqual(await s.getChips([]), []);
        assert.deepEqual(await s.getChips(['nope']), [undefined]);
      });

      withStore('listings are sorted and complete', async (s) => {
        await register(s, 'vm-b', 1);
        await register(s, 'vm-a', 2);
        assert.deepEqual((await s.listChips()).map((c) => c.id), ['vm-a', 'vm-b']);
        assert.deepEqual((await s.listLines('')).map((l) => `${l.chip}:${l.offset}`), ['vm-a:0', 'vm-a:1', 'vm-b:0']);
        await s.wire({ name: 'zz', members: [at('vm-a', 0), at('vm-b', 0)], pull: 0, driveMode: 0 });
        await s.wire({ name: 'aa', members: [at('vm-a', 1), at('vm-b', 0)], pull: 0, driveMode: 0 }).catch(() => undefined);
        assert.deepEqual((await s.listNets()).map((n) => n.name), ['zz']);
      });
    });

    // ------------------------------------------------------------ topology
    describe('applyTopology', () => {
      const topo: Topology = {
        chips: [
          { id: 'vm-a', ngpio: 8, names: ['', '', '', 'reset', '', '', '', ''], bias: [{ offset: 0, pull: Pull.UP }] },
          { id: 'vm-b', ngpio: 4, names: [], bias: [] },
        ],
        nets: [
          { name: 'reset', members: [named('vm-a', 'reset'), at('vm-b', 0)], pull: Pull.UP, driveMode: DriveMode.OPEN_DRAIN },
          { name: 'irq', members: [at('vm-a', 4), at('vm-b', 1)], pull: Pull.NONE, driveMode: DriveMode.PUSH_PULL },
        ],
        drives: [{ target: { kind: 'net', net: 'irq' }, value: DriveValue.HIGH }, { target: { kind: 'line', line: at('vm-b', 3) }, value: DriveValue.LOW }],
      };

      withStore('creates chips, nets and drives; reports the changes; re-applying changes nothing', async (s) => {
        const r = await s.applyTopology(topo, false);
        assert.deepEqual(r.changes, [
          'create chip vm-a (8 lines)',
          'set line names of chip vm-a',
          'set bias vm-a:0 pull up',
          'create chip vm-b (4 lines)',
          'wire net reset: vm-a:3 vm-b:0 (pull up, open-drain)',
          'wire net irq: vm-a:4 vm-b:1 (pull none, push-pull)',
          'drive vm-b:3 low',
          'drive net irq high',
        ]);
        assert.equal(r.chips, 2);
        assert.equal(r.nets, 2);
        const chips = await s.listChips();
        assert.deepEqual(chips.map((c) => [c.id, c.ngpio, c.owner, c.online]), [['vm-a', 8, '', false], ['vm-b', 4, '', false]]);
        assert.deepEqual(await s.getNames('vm-a'), ['', '', '', 'reset', '', '', '', '']);
        const nets = await s.listNets();
        assert.deepEqual(nets.map((n) => [n.name, n.level, n.externalDrive]), [['irq', 1, DriveValue.HIGH], ['reset', 1, DriveValue.RELEASE]]);
        assert.equal((await s.getLine(at('vm-a', 0))).level, 1);
        assert.equal((await s.getLine(at('vm-a', 4))).level, 1);
        // one event per line whose level changed: nets in name order, then unwired lines
        assert.deepEqual((await s.readEvents('vm-a', 0n, 0)).map((e) => [e.offset, e.level, e.seq]), [[4, 1, 1n], [3, 1, 2n], [0, 1, 3n]]);
        assert.deepEqual((await s.readEvents('vm-b', 0n, 0)).map((e) => [e.offset, e.level, e.seq]), [[1, 1, 1n], [0, 1, 2n]]);
        const again = await s.applyTopology(topo, false);
        assert.deepEqual(again.changes, []);
        // a registering agent restores the topology's state
        const reg = await s.registerChip({ chip: 'vm-b', ngpio: 4, names: [], owner: 'agent', leaseTtlMs: 0 });
        assert.equal(reg.restored, true);
        assert.equal(reg.lines[0]!.net, 'reset');
        assert.equal(reg.lines[3]!.externalDrive, DriveValue.LOW);
      });

      withStore('the document is the complete set of nets: others are removed, changed ones updated', async (s) => {
        await s.applyTopology(topo, false);
        await s.wire({ name: 'extra', members: [at('vm-a', 5), at('vm-b', 2)], pull: Pull.UP, driveMode: DriveMode.PUSH_PULL });
        const next: Topology = {
          chips: [],
          nets: [{ name: 'reset', members: [at('vm-a', 3), at('vm-b', 0), at('vm-b', 1)], pull: Pull.UP, driveMode: DriveMode.OPEN_DRAIN }],
          drives: [{ target: { kind: 'line', line: at('vm-b', 3) }, value: DriveValue.RELEASE }],
        };
        const dry = await s.applyTopology(next, true);
        assert.deepEqual(dry.changes, [
          'remove net extra',
          'remove net irq',
          'update net reset: vm-a:3 vm-b:0 vm-b:1 (pull up, open-drain)',
          'release vm-b:3',
        ]);
        const r = await s.applyTopology(next, false);
        assert.deepEqual(r.changes, dry.changes);
        const nets = await s.listNets();
        assert.deepEqual(nets.map((n) => [n.name, n.members.length, n.level]), [['reset', 3, 1]]);
        assert.equal((await s.getLine(at('vm-a', 4))).net, '');
        assert.equal((await s.getLine(at('vm-a', 4))).level, 0);
        assert.equal((await s.getLine(at('vm-b', 3))).externalDrive, DriveValue.RELEASE);
        assert.equal((await s.getLine(at('vm-a', 5))).level, 0, 'a removed net no longer pulls its lines');
      });

      withStore('a dry run reports and changes nothing', async (s) => {
        await register(s, 'vm-a', 8);
        const before = await snapshot(s);
        const r = await s.applyTopology(topo, true);
        assert.ok(r.changes.includes('create chip vm-b (4 lines)'));
        assert.ok(r.changes.includes('set line names of chip vm-a'));
        assert.ok(!r.changes.includes('create chip vm-a (8 lines)'), 'vm-a exists already');
        assert.deepEqual(await snapshot(s), before);
        assert.deepEqual(await s.readEvents('vm-a', 0n, 0), []);
      });

      withStore('an invalid topology changes nothing at all', async (s) => {
        const ta = await register(s, 'vm-a', 8);
        await s.lineOp({ chip: 'vm-a', leaseToken: ta, op: LineOp.SET_DIRECTION, offset: 6, value: Direction.OUT });
        await register(s, 'vm-c', 2);
        await s.wire({ name: 'keep', members: [at('vm-a', 6), at('vm-c', 0)], pull: Pull.UP, driveMode: DriveMode.PUSH_PULL });
        const variant = (patch: Partial<Topology>): Topology => ({ ...topo, ...patch });
        const cases: [string, Topology, ErrorCode][] = [
          ['ngpio mismatch', variant({ chips: [{ id: 'vm-a', ngpio: 9, names: [], bias: [] }, topo.chips[1]!] }), ErrorCode.FAILED_PRECONDITION],
          ['unknown chip in a net', variant({ nets: [...topo.nets, { name: 'n3', members: [at('vm-a', 1), at('vm-zz', 0)], pull: 0, driveMode: 0 }] }), ErrorCode.NOT_FOUND],
          ['offset out of range', variant({ nets: [...topo.nets, { name: 'n3', members: [at('vm-a', 1), at('vm-b', 4)], pull: 0, driveMode: 0 }] }), ErrorCode.INVALID_ARGUMENT],
          ['unknown line name', variant({ nets: [...topo.nets, { name: 'n3', members: [at('vm-a', 1), named('vm-b', 'nope')] , pull: 0, driveMode: 0 }] }), ErrorCode.NOT_FOUND],
          ['a line in two nets', variant({ nets: [...topo.nets, { name: 'n3', members: [at('vm-a', 3), at('vm-b', 2)], pull: 0, driveMode: 0 }] }), ErrorCode.INVALID_ARGUMENT],
          ['a line twice in a net', variant({ nets: [...topo.nets, { name: 'n3', members: [at('vm-a', 1), at('vm-a', 1)], pull: 0, driveMode: 0 }] }), ErrorCode.INVALID_ARGUMENT],
          ['a net declared twice', variant({ nets: [...topo.nets, topo.nets[0]!] }), ErrorCode.INVALID_ARGUMENT],
          ['a chip declared twice', variant({ chips: [...topo.chips, topo.chips[1]!] }), ErrorCode.INVALID_ARGUMENT],
          ['a one-member net', variant({ nets: [{ name: 'n3', members: [at('vm-a', 1)], pull: 0, driveMode: 0 }] }), ErrorCode.INVALID_ARGUMENT],
          ['a bad pull', variant({ nets: [{ name: 'n3', members: [at('vm-a', 1), at('vm-b', 2)], pull: 7 as Pull, driveMode: 0 }] }), ErrorCode.INVALID_ARGUMENT],
          ['a bias offset out of range', variant({ chips: [{ id: 'vm-b', ngpio: 4, names: [], bias: [{ offset: 4, pull: Pull.UP }] }] }), ErrorCode.INVALID_ARGUMENT],
          ['drive of an undeclared net', variant({ drives: [{ target: { kind: 'net', net: 'keep' }, value: DriveValue.HIGH }] }), ErrorCode.INVALID_ARGUMENT],
          ['drive of an unknown line', variant({ drives: [{ target: { kind: 'line', line: at('vm-q', 0) }, value: DriveValue.HIGH }] }), ErrorCode.NOT_FOUND],
          ['a bad drive value', variant({ drives: [{ target: { kind: 'line', line: at('vm-b', 0) }, value: 9 as DriveValue }] }), ErrorCode.INVALID_ARGUMENT],
          ['bad names', variant({ chips: [{ id: 'vm-b', ngpio: 4, names: ['a', 'a', '', ''], bias: [] }] }), ErrorCode.INVALID_ARGUMENT],
          ['bad chip id', variant({ chips: [{ id: 'vm b', ngpio: 4, names: [], bias: [] }] }), ErrorCode.INVALID_ARGUMENT],
        ];
        for (const [what, t, code] of cases) {
          await rejects(s, () => s.applyTopology(t, false), code, undefined, what);
          await rejects(s, () => s.applyTopology(t, true), code, undefined, `${what} (dry run)`);
        }
        assert.deepEqual((await s.listNets()).map((n) => n.name), ['keep']);
      });
    });
  });
}
