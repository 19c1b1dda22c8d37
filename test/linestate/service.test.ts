/**
 * The line-state service over real gRPC (ephemeral ports), on the memory store and on
 * the Redis store (a real redis-server): every RPC's happy path, every bad input with
 * its status and unchanged state, lease takeover and event resume.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { LineOpType } from '../../services/common/src/gen/gpiofabric/v1/linestate.ts';
import { HealthClient, ServingStatus, type HealthCheckResponse } from '../../services/linestate/src/grpc/health.ts';
import { credentials, type ServiceError, status as GrpcStatus } from '@grpc/grpc-js';
import { collect, fabricOf, rejectsWith, snapshot, startRedis, untilLive, type Fabric, type StoreKind } from './harness.ts';
import type { RedisHandle } from '../support/redis.ts';

const OP = LineOpType;
const off = (chip: string, offset: number) => ({ chip, line: { $case: 'offset' as const, value: offset } });
const named = (chip: string, name: string) => ({ chip, line: { $case: 'name' as const, value: name } });

for (const kind of ['memory', 'redis'] as const satisfies readonly StoreKind[]) {
  describe(`line-state service on the ${kind} store`, () => {
    let redis: RedisHandle | undefined;
    let f: Fabric;
    let tokA = '';
    let tokB = '';
    before(async () => {
      if (kind === 'redis') redis = await startRedis();
      f = await fabricOf(kind, redis);
      const a = await f.client.registerChip({ chip: 'vm-a', ngpio: 4, names: ['a0', 'a1', 'a2', 'a3'], owner: 'agent-a', leaseTtlMs: 0 });
      const b = await f.client.registerChip({ chip: 'vm-b', ngpio: 4, names: [], owner: 'agent-b', leaseTtlMs: 30_000 });
      tokA = a.leaseToken;
      tokB = b.leaseToken;
      assert.equal(a.restored, false);
      assert.equal(a.tookOver, false);
      assert.equal(a.leaseTtlMs, 10_000, 'leaseTtlMs 0 = the service default');
      assert.equal(b.leaseTtlMs, 30_000);
      assert.equal(a.chip?.online, true);
      assert.equal(a.lines.length, 4);
    });
    after(async () => {
      await f?.stop();
      await redis?.stop();
    });

    it('agents: names, line ops, lease renewal', async () => {
      assert.deepEqual((await f.client.getNames({ chip: 'vm-a' })).names, ['a0', 'a1', 'a2', 'a3']);
      const renewed = await f.client.renewLease({ chip: 'vm-a', leaseToken: tokA });
      assert.ok(BigInt(renewed.leaseExpiresAtMs) > BigInt(Date.now()));
      const op = (chip: string, leaseToken: string, o: LineOpType, offset: number, value = 0) => f.client.lineOp({ chip, leaseToken, op: o, offset, value });
      await op('vm-a', tokA, OP.LINE_OP_TYPE_SET_VALUE, 3, 1);
      assert.equal((await op('vm-a', tokA, OP.LINE_OP_TYPE_GET_VALUE, 3)).value, 0, 'SET_VALUE applies only once the line is an output');
      await op('vm-a', tokA, OP.LINE_OP_TYPE_SET_DIRECTION, 3, 1);
      assert.equal((await op('vm-a', tokA, OP.LINE_OP_TYPE_GET_DIRECTION, 3)).value, 1);
      assert.equal((await op('vm-a', tokA, OP.LINE_OP_TYPE_GET_VALUE, 3)).value, 1);
      await op('vm-b', tokB, OP.LINE_OP_TYPE_SET_IRQ_TYPE, 3, 3);
      assert.equal((await f.client.getLine({ line: off('vm-b', 3) })).irqType, 3);
    });

    it('operators: wire, get, drive, bias, list, unwire', async () => {
      const net = await f.client.wire({ name: 'w1', members: [named('vm-a', 'a3'), off('vm-b', 3)], pull: 2, driveMode: 0 });
      assert.equal(net.name, 'w1');
      assert.deepEqual(net.members, [off('vm-a', 3), off('vm-b', 3)]);
      assert.equal(net.level, 1, 'vm-a:3 drives 1');
      const b3 = await f.client.getLine({ line: off('vm-b', 3) });
      assert.equal(b3.level, 1);
      assert.equal(b3.net, 'w1');
      assert.equal((await f.client.drive({ target: { $case: 'net', value: 'w1' }, value: 1 })).level, 0, 'push-pull contention resolves low');
      const nets = await f.client.listNets();
      const w1 = nets.find((n) => n.name === 'w1');
      assert.equal(w1?.contention, true);
      assert.equal(w1?.contentionCount, '1');
      assert.equal((await f.client.drive({ target: { $case: 'net', value: 'w1' }, value: 0 })).level, 1);
      assert.equal((await f.client.drive({ target: { $case: 'line', value: off('vm-b', 1) }, value: 2 })).level, 1);
      const bias = await f.client.setBias({ line: off('vm-b', 2), bias: 1 });
      assert.equal(bias.bias, 1);
      assert.equal(bias.level, 1, 'an unwired, undriven line reads its pull');
      const chips = await f.client.listChips();
      assert.deepEqual(chips.map((c) => c.id).sort(), ['vm-a', 'vm-b']);
      assert.equal(chips.find((c) => c.id === 'vm-a')?.owner, 'agent-a');
      assert.equal((await f.client.listLines({ chip: 'vm-b' })).length, 4);
      assert.equal((await f.client.listLines()).length, 8);
      await f.client.unwire('w1');
      assert.equal((await f.client.getLine({ line: off('vm-b', 3) })).net, '');
      assert.deepEqual((await f.client.listNets()).map((n) => n.name), []);
    });

    it('apply topology: dry run changes nothing, then applies', async () => {
      const doc = `apiVersion: gpiofabric/v1
chips:
  - id: vm-t
    lines: 2
    names: [t0, t1]
    bias: { t1: up }
nets:
  - name: tnet
    members: [vm-t:t0, vm-a:0]
    pull: up
    drive: open-drain
drives:
  - net: tnet
    value: 0
`;
      const before = await snapshot(f.client);
      const dry = await f.client.applyTopology({ document: doc, dryRun: true });
      assert.ok(dry.changes.length >= 3, dry.changes.join('; '));
      assert.equal(await snapshot(f.client), before);
      const r = await f.client.applyTopology({ document: doc, dryRun: false });
      assert.deepEqual(r.changes, dry.changes);
      assert.equal(r.chips, 1);
      assert.equal(r.nets, 1);
      assert.equal((await f.client.getLine({ line: named('vm-t', 't1') })).level, 1);
      assert.equal((await f.client.getLine({ line: off('vm-a', 0) })).level, 0, 'net driven low');
      assert.deepEqual((await f.client.applyTopology({ document: doc, dryRun: false })).changes, [], 'idempotent');
      await f.client.applyTopology({ document: 'apiVersion: gpiofabric/v1\n', dryRun: false });
      assert.deepEqual(await f.client.listNets(), [], 'nets not in the document are removed');
    });

    it('watch: live events of every chip, and of one line', async () => {
      const all = collect(f.client, { chips: [] });
      const line = collect(f.client, { chips: ['vm-b'], offset: 0 });
      let v = 1;
      await untilLive(all, () => f.client.drive({ target: { $case: 'line', value: off('vm-a', 1) }, value: v++ % 2 === 0 ? 1 : 2 }));
      await untilLive(line, () => f.client.drive({ target: { $case: 'line', value: off('vm-b', 0) }, value: v++ % 2 === 0 ? 1 : 2 }));
      for (const e of line.events) assert.deepEqual([e.chip, e.offset], ['vm-b', 0]);
      const seqs = all.events.filter((e) => e.chip === 'vm-a').map((e) => BigInt(e.seq));
      for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i]! > seqs[i - 1]!, 'per-chip order');
      all.cancel();
      line.cancel();
    });

    it('watch resume: exactly the missed events, then live ones, no duplicates', async () => {
      const start = BigInt((await f.client.listChips()).find((c) => c.id === 'vm-b')!.lastSeq);
      const level = (await f.client.getLine({ line: off('vm-b', 2) })).level;
      // each drive flips vm-b:2 (starting from its current level), so each makes one event
      const toggle = (i: number) => f.client.drive({ target: { $case: 'line', value: off('vm-b', 2) }, value: (i % 2 === 0) === (level === 1) ? 1 : 2 });
      const w1 = collect(f.client, { chips: ['vm-b'], fromSeq: String(start) });
      for (let i = 0; i < 3; i++) await toggle(i);
      const got1 = await w1.waitFor(3);
      w1.cancel();
      assert.deepEqual(got1.map((e) => BigInt(e.seq)), [1n, 2n, 3n].map((d) => start + d));
      const last = start + 3n;
      for (let i = 3; i < 8; i++) await toggle(i); // missed while disconnected
      const w2 = collect(f.client, { chips: ['vm-b'], fromSeq: String(last) });
      await w2.waitFor(5);
      for (let i = 8; i < 10; i++) await toggle(i); // live
      const all = await w2.waitFor(7);
      await new Promise((r) => setTimeout(r, 100));
      w2.cancel();
      assert.deepEqual(w2.events.map((e) => BigInt(e.seq)), [1n, 2n, 3n, 4n, 5n, 6n, 7n].map((d) => last + d));
      assert.deepEqual(all.map((e) => e.level), [1, 0, 1, 0, 1, 0, 1].map((x) => (level === 1 ? x : 1 - x)));
      for (const e of all) assert.equal(e.offset, 2);
    });

    it('watch resume while changes race the backlog read: contiguous sequence', async () => {
      const start = BigInt((await f.client.listChips()).find((c) => c.id === 'vm-b')!.lastSeq);
      const level = (await f.client.getLine({ line: off('vm-b', 1) })).level;
      const n = 60;
      const writer = (async () => {
        for (let i = 0; i < n; i++) await f.client.drive({ target: { $case: 'line', value: off('vm-b', 1) }, value: (i % 2 === 0) === (level === 1) ? 1 : 2 });
      })();
      const w = collect(f.client, { chips: ['vm-b'], fromSeq: String(start) });
      await writer;
      await w.waitFor(n);
      await new Promise((r) => setTimeout(r, 100));
      w.cancel();
      assert.deepEqual(w.events.map((e) => BigInt(e.seq)), Array.from({ length: n }, (_, i) => start + BigInt(i + 1)));
    });

    it('health service answers SERVING', async () => {
      const hc = new HealthClient(f.server.address, credentials.createInsecure());
      const check = (service: string) => new Promise<HealthCheckResponse>((resolve, reject) =>
        (hc as unknown as { check(r: { service: string }, cb: (e: ServiceError | null, r: HealthCheckResponse) => void): void }).check({ service }, (e, r) => (e ? reject(e) : resolve(r))));
      assert.equal((await check('')).status, ServingStatus.SERVING);
      assert.equal((await check('gpiofabric.v1.LineStateService')).status, ServingStatus.SERVING);
      await assert.rejects(check('nope'), (e: ServiceError) => e.code === GrpcStatus.NOT_FOUND);
      hc.close();
    });

    describe('bad input: right status, useful message, state unchanged', () => {
      let stale = '';
      const cases: [string, () => Promise<unknown>, string, RegExp, (() => Promise<unknown>)?][] = [
        ['unknown chip', () => f.client.getLine({ line: off('vm-zz', 0) }), 'NOT_FOUND', /vm-zz/],
        ['unknown line name', () => f.client.getLine({ line: named('vm-a', 'nope') }), 'NOT_FOUND', /nope/],
        ['offset >= ngpio (get)', () => f.client.getLine({ line: off('vm-a', 4) }), 'INVALID_ARGUMENT', /4/],
        ['offset >= ngpio (line op)', () => f.client.lineOp({ chip: 'vm-a', leaseToken: tokA, op: OP.LINE_OP_TYPE_SET_VALUE, offset: 99, value: 1 }), 'INVALID_ARGUMENT', /99/],
        ['missing line', () => f.client.getLine({}), 'INVALID_ARGUMENT', /line is required/],
        ['line without offset or name', () => f.client.getLine({ line: { chip: 'vm-a' } }), 'INVALID_ARGUMENT', /offset or a name/],
        ['bad chip id', () => f.client.getNames({ chip: 'vm a/../' }), 'INVALID_ARGUMENT', /chip id/],
        ['unknown op number', () => f.client.lineOp({ chip: 'vm-a', leaseToken: tokA, op: 7 as LineOpType, offset: 0, value: 0 }), 'INVALID_ARGUMENT', /op 7 is not a line operation/],
        ['invalid direction', () => f.client.lineOp({ chip: 'vm-a', leaseToken: tokA, op: OP.LINE_OP_TYPE_SET_DIRECTION, offset: 0, value: 5 }), 'INVALID_ARGUMENT', /value 5 is not a direction/],
        ['invalid value', () => f.client.lineOp({ chip: 'vm-a', leaseToken: tokA, op: OP.LINE_OP_TYPE_SET_VALUE, offset: 0, value: 2 }), 'INVALID_ARGUMENT', /not 0 or 1/],
        ['invalid irq type', () => f.client.lineOp({ chip: 'vm-a', leaseToken: tokA, op: OP.LINE_OP_TYPE_SET_IRQ_TYPE, offset: 0, value: 5 }), 'INVALID_ARGUMENT', /irq type/],
        ['invalid bias', () => f.client.setBias({ line: off('vm-a', 0), bias: 9 as 0 }), 'INVALID_ARGUMENT', /bias 9/],
        ['invalid drive value', () => f.client.drive({ target: { $case: 'net', value: 'x' }, value: 7 as 0 }), 'INVALID_ARGUMENT', /value 7/],
        ['drive without target', () => f.client.drive({ value: 1 }), 'INVALID_ARGUMENT', /target is required/],
        ['invalid pull', () => f.client.wire({ name: '', members: [off('vm-a', 0), off('vm-b', 0)], pull: 5 as 0, driveMode: 0 }), 'INVALID_ARGUMENT', /pull 5/],
        ['invalid drive mode', () => f.client.wire({ name: '', members: [off('vm-a', 0), off('vm-b', 0)], pull: 0, driveMode: 3 as 0 }), 'INVALID_ARGUMENT', /drive_mode 3/],
        ['net with one member', () => f.client.wire({ name: 'solo', members: [off('vm-a', 0)], pull: 0, driveMode: 0 }), 'INVALID_ARGUMENT', /at least 2/],
        ['a line wired twice', () => f.client.wire({ name: 'again', members: [off('vm-a', 2), off('vm-b', 3)], pull: 0, driveMode: 0 }), 'ALREADY_EXISTS', /vm-a:2|taken/,
          () => f.client.wire({ name: 'taken', members: [off('vm-a', 2), off('vm-b', 2)], pull: 0, driveMode: 0 })],
        ['a net name taken', () => f.client.wire({ name: 'taken', members: [off('vm-a', 0), off('vm-b', 0)], pull: 0, driveMode: 0 }), 'ALREADY_EXISTS', /taken/],
        ['unknown net', () => f.client.unwire('no-such-net'), 'NOT_FOUND', /no-such-net/],
        ['malformed topology', () => f.client.applyTopology({ document: 'apiVersion: gpiofabric/v1\nchips: [ {id: vm-x\n', dryRun: false }), 'INVALID_ARGUMENT', /syntax/],
        ['contradictory topology', () => f.client.applyTopology({
          document: 'apiVersion: gpiofabric/v1\nchips:\n  - {id: vm-x, lines: 2}\nnets:\n  - {name: n1, members: [vm-x:0, vm-a:1]}\n  - {name: n2, members: [vm-x:0, vm-b:1]}\n', dryRun: false,
        }), 'INVALID_ARGUMENT', /nets\[1\]\.members\[0\]: "vm-x:0": the line is already wired/],
        ['topology contradicting state (ngpio)', () => f.client.applyTopology({ document: 'apiVersion: gpiofabric/v1\nchips:\n  - {id: vm-a, lines: 9}\n', dryRun: false }), 'FAILED_PRECONDITION', /ngpio/],
        ['topology document over 4 MiB', () => f.client.applyTopology({ document: `apiVersion: gpiofabric/v1\n#${'x'.repeat(4 * 1024 * 1024)}\n`, dryRun: false }), 'INVALID_ARGUMENT', /larger than 4194304 bytes/],
        ['request over the message size limit', () => f.client.applyTopology({ document: `#${'x'.repeat(5 * 1024 * 1024)}`, dryRun: false }), 'INVALID_ARGUMENT', /larger than max/i],
        ['empty topology document', () => f.client.applyTopology({ document: '', dryRun: false }), 'INVALID_ARGUMENT', /empty/],
        ['stale lease token', () => f.client.lineOp({ chip: 'vm-b', leaseToken: stale, op: OP.LINE_OP_TYPE_SET_VALUE, offset: 0, value: 1 }), 'FAILED_PRECONDITION', /token|lease/i,
          async () => {
            await f.client.releaseChip({ chip: 'vm-b', leaseToken: tokB });
            const again = await f.client.registerChip({ chip: 'vm-b', ngpio: 4, names: [], owner: 'agent-b', leaseTtlMs: 30_000 });
            stale = tokB;
            tokB = again.leaseToken;
            assert.ok(BigInt(tokB) > BigInt(stale));
          }],
        ['registration over a live lease of another owner', () => f.client.registerChip({ chip: 'vm-a', ngpio: 4, names: [], owner: 'intruder', leaseTtlMs: 0 }), 'FAILED_PRECONDITION', /agent-a|lease/],
      ];
      for (const [what, call, code, msg, setup] of cases) {
        it(what, async () => {
          await setup?.();
          const before = await snapshot(f.client);
          await rejectsWith(call(), code as 'NOT_FOUND', msg);
          assert.equal(await snapshot(f.client), before);
        });
      }

      const watchCases: [string, () => Record<string, unknown>, string, RegExp][] = [
        ['a cursor from the future', () => ({ chips: ['vm-a'], fromSeq: '999999' }), 'OUT_OF_RANGE', /999999/],
        ['watch of an unknown chip', () => ({ chips: ['vm-nope'] }), 'NOT_FOUND', /vm-nope/],
        ['watch of known chips and one unknown', () => ({ chips: ['vm-a', 'vm-b', 'vm-gone'] }), 'NOT_FOUND', /vm-gone/],
        ['resume without exactly one chip', () => ({ chips: [], fromSeq: '0' }), 'INVALID_ARGUMENT', /exactly one chip/],
        ['offset filter beyond ngpio', () => ({ chips: ['vm-a'], offset: 4 }), 'INVALID_ARGUMENT', /offset 4/],
      ];
      for (const [what, req, code, msg] of watchCases) {
        it(what, async () => {
          const col = collect(f.client, req() as { chips: string[] });
          const e = await col.error;
          assert.equal(e.code, code);
          assert.match(e.message, msg);
          assert.equal(col.events.length, 0);
        });
      }
    });

    it('lease takeover after expiry, old token refused', async () => {
      const first = await f.client.registerChip({ chip: 'vm-l', ngpio: 2, names: [], owner: 'old', leaseTtlMs: 500 });
      let taken;
      for (let i = 0; i < 100 && taken === undefined; i++) {
        taken = await f.client.registerChip({ chip: 'vm-l', ngpio: 2, names: [], owner: 'new', leaseTtlMs: 5000 }).catch(async (e: unknown) => {
          if ((e as { code?: string }).code !== 'FAILED_PRECONDITION') throw e;
          await new Promise((r) => setTimeout(r, 50));
          return undefined;
        });
      }
      assert.ok(taken !== undefined);
      assert.equal(taken.tookOver, true);
      assert.equal(taken.restored, true);
      assert.ok(BigInt(taken.leaseToken) > BigInt(first.leaseToken));
      await rejectsWith(f.client.lineOp({ chip: 'vm-l', leaseToken: first.leaseToken, op: OP.LINE_OP_TYPE_GET_VALUE, offset: 0, value: 0 }), 'FAILED_PRECONDITION', /./);
      await f.client.releaseChip({ chip: 'vm-l', leaseToken: taken.leaseToken });
      assert.equal((await f.client.listChips()).find((c) => c.id === 'vm-l')?.online, false);
    });

    it('watch of many chips: one stream gets the events of every listed chip', async () => {
      const ids = Array.from({ length: 60 }, (_, i) => `vm-m${String(i).padStart(2, '0')}`);
      for (const chip of ids) await f.client.registerChip({ chip, ngpio: 1, names: [], owner: 'agent-m', leaseTtlMs: 30_000 });
      const col = collect(f.client, { chips: ids });
      let v = 0;
      await untilLive(col, () => f.client.drive({ target: { $case: 'line', value: off('vm-m00', 0) }, value: v++ % 2 === 0 ? 1 : 2 }));
      const before = col.events.length;
      for (const chip of ids.slice(1)) await f.client.drive({ target: { $case: 'line', value: off(chip, 0) }, value: 2 }); // 2 = HIGH: an undriven line reads low
      await col.waitFor(before + ids.length - 1);
      col.cancel();
      assert.deepEqual([...new Set(col.events.map((e) => e.chip))].sort(), ids);
      for (const e of col.events) assert.equal(e.offset, 0);
    });
  });
}
