/**
 * Authorization of WatchEventBatches under mutual TLS, with certificates from
 * `gpio-fabric certs` (real openssl) and a real gRPC server on an ephemeral port. It is a
 * read RPC like WatchEvents: an agent may watch its own chip only (a stream naming
 * another chip, or every chip, is refused PERMISSION_DENIED before any event), a watcher
 * or an operator may watch any chip or all. Refusals count in rpcs_total under
 * method="WatchEventBatches" and in errors_total.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { LineStateClient, WatchHandle, WatchRequest } from '../../services/linestate/src/client.ts';
import { ErrorCode, type FabricError } from '../../services/common/src/errors.ts';
import type { LineEvent } from '../../services/common/src/gen/gpiofabric/v1/linestate.ts';
import type { LineStore } from '../../services/linestate/src/store/store.ts';
import type { Registry } from 'prom-client';
import { sample, startMtlsFabric, type MtlsFabric, type Role } from './support.ts';


let fabric: MtlsFabric;
let store: LineStore;
let registry: Registry;
let as: ReadonlyMap<Role, LineStateClient>;
const handles: WatchHandle[] = [];

const line = (chip: string, offset: number) => ({ chip, line: { $case: 'offset' as const, value: offset } });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const metric = async (name: string, labels: Record<string, string>): Promise<number> => sample(await registry.metrics(), name, labels);

/** A WatchEventBatches stream of `role`, collecting its messages. */
function watch(role: Role, req: WatchRequest): {
  batches: LineEvent[][];
  events(): LineEvent[];
  failure(): { e: FabricError; unimplemented: boolean } | undefined;
  /** Resolves once `n` events arrived or the stream failed. */
  settled(n: number): Promise<void>;
} {
  const batches: LineEvent[][] = [];
  let failed: { e: FabricError; unimplemented: boolean } | undefined;
  const h = as.get(role)!.watchEventBatches(req, (es) => { batches.push(es); }, (e, unimplemented) => { failed = { e, unimplemented }; });
  handles.push(h);
  const events = (): LineEvent[] => batches.flat();
  return {
    batches,
    events,
    failure: () => failed,
    settled: async (n) => {
      for (let i = 0; i < 1000 && failed === undefined && events().length < n; i++) await sleep(10);
      if (failed === undefined && events().length < n) throw new Error(`${role}: ${events().length} of ${n} events and no failure`);
    },
  };
}

before(async () => {
  fabric = await startMtlsFabric();
  ({ store, registry } = fabric);
  as = fabric.as;
  // history on both chips: a resumed stream replays it at once
  const op = as.get('operator-alice')!;
  for (const chip of ['vm-a', 'vm-b']) {
    await op.wire({ name: `n-${chip}`, members: [line(chip, 0), line(chip, 1), line(chip, 2)], pull: 0, driveMode: 0 });
    await op.drive({ target: { $case: 'net', value: `n-${chip}` }, value: 2 }); // 3 rising events in one store operation
  }
});
after(async () => {
  for (const h of handles) h.cancel();
  await fabric.close();
});

describe('WatchEventBatches authorization (mutual TLS)', () => {
  it('an agent watches its own chip (resumed: its 3 events in one message)', async () => {
    const w = watch('agent-vm-a', { chips: ['vm-a'], fromSeq: '0' });
    await w.settled(3);
    assert.equal(w.failure(), undefined);
    assert.deepEqual(w.batches.map((b) => b.map((e) => [e.chip, e.seq, e.level])), [[['vm-a', '1', 1], ['vm-a', '2', 1], ['vm-a', '3', 1]]]);
  });

  it('an agent gets PERMISSION_DENIED for another chip, several chips with another one, or every chip; no event, counted', async () => {
    const rpcs0 = await metric('gpiofabric_linestate_rpcs_total', { method: 'WatchEventBatches', code: 'PERMISSION_DENIED' });
    const plain0 = await metric('gpiofabric_linestate_rpcs_total', { method: 'WatchEvents', code: 'PERMISSION_DENIED' });
    const errors0 = await metric('gpiofabric_linestate_errors_total', { cause: 'PERMISSION_DENIED' });
    const cases: [WatchRequest, RegExp][] = [
      [{ chips: ['vm-b'], fromSeq: '0' }, /^agent "vm-a" may not read chip "vm-b" \(WatchEventBatches needs the identity gpiofabric:agent:vm-b, a watcher or an operator\)/],
      [{ chips: ['vm-b'] }, /may not read chip "vm-b" \(WatchEventBatches/],
      [{ chips: ['vm-a', 'vm-b'] }, /may not read chip "vm-b" \(WatchEventBatches/],
      [{ chips: [] }, /^agent "vm-a" may not call WatchEventBatches on every chip/],
      [{ chips: ['vm-b'], offset: 1 }, /may not read chip "vm-b"/],
    ];
    for (const [req, msg] of cases) {
      const w = watch('agent-vm-a', req);
      await w.settled(1);
      const f = w.failure();
      assert.ok(f !== undefined, `${JSON.stringify(req)}: no failure, ${w.events().length} events`);
      assert.equal(f.e.code, ErrorCode.PERMISSION_DENIED, `${JSON.stringify(req)}: ${f.e.message}`);
      assert.equal(f.unimplemented, false);
      assert.match(f.e.message, msg);
      assert.equal(w.events().length, 0, 'no event of vm-b leaked before the refusal');
    }
    assert.equal(await metric('gpiofabric_linestate_rpcs_total', { method: 'WatchEventBatches', code: 'PERMISSION_DENIED' }) - rpcs0, cases.length);
    assert.equal(await metric('gpiofabric_linestate_rpcs_total', { method: 'WatchEvents', code: 'PERMISSION_DENIED' }) - plain0, 0, 'counted under its own method');
    assert.equal(await metric('gpiofabric_linestate_errors_total', { cause: 'PERMISSION_DENIED' }) - errors0, cases.length);
    // the refusals did not affect the agent's own stream
    const own = watch('agent-vm-a', { chips: ['vm-a'], fromSeq: '2' });
    await own.settled(1);
    assert.equal(own.failure(), undefined);
    assert.deepEqual(own.events().map((e) => e.seq), ['3']);
  });

  it('a watcher and an operator watch any chip; a watcher watches every chip live', async () => {
    for (const role of ['watcher-bob', 'operator-alice'] as const) {
      for (const chip of ['vm-a', 'vm-b']) {
        const w = watch(role, { chips: [chip], fromSeq: '0' });
        await w.settled(3);
        assert.equal(w.failure(), undefined, `${role} on ${chip}`);
        assert.deepEqual(w.events().map((e) => [e.chip, e.seq]), [[chip, '1'], [chip, '2'], [chip, '3']], `${role} on ${chip}`);
      }
    }
    // every chip, live: poke vm-b:3 until the stream is subscribed, then a net drive on vm-a
    const all = watch('watcher-bob', { chips: [] });
    const op = as.get('operator-alice')!;
    for (let i = 0; i < 200 && all.events().length === 0 && all.failure() === undefined; i++) {
      await op.drive({ target: { $case: 'line', value: line('vm-b', 3) }, value: i % 2 === 0 ? 2 : 1 });
      await sleep(25);
    }
    assert.equal(all.failure(), undefined);
    assert.ok(all.events().length > 0, 'the all-chips stream delivered an event');
    assert.ok(all.events().every((e) => e.chip === 'vm-b' && e.offset === 3));
    const n0 = all.events().length;
    const b0 = all.batches.length;
    await op.drive({ target: { $case: 'net', value: 'n-vm-a' }, value: 1 }); // low: 3 falling events on vm-a
    await all.settled(n0 + 3);
    assert.equal(all.failure(), undefined);
    assert.deepEqual(all.batches.slice(b0).map((b) => b.map((e) => [e.chip, e.seq, e.level])), [[['vm-a', '4', 0], ['vm-a', '5', 0], ['vm-a', '6', 0]]]);
  });
});
