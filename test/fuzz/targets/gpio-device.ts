/**
 * Target "gpio-device": the virtio-gpio request parser and device model (GpioDevice on a
 * StandaloneBackend, queues are FakeVirtqueues) against a small reference model.
 *
 * Generated: a chip of 1..6 lines (names or none, random bias), F_IRQ on or off, then a
 * sequence of requestq chains (readable part 0..16 random bytes or a structured request
 * with random type / gpio / value; writable size 0..20 or exactly 1 + gpio_names_size),
 * eventq buffers (0..4 readable bytes, writable 0..2), external drives, and event-loop
 * turns. Properties, checked after the run settles:
 *  - every requestq chain is pushed exactly once, used length ∈ {0, 1, 2, 1+names_size}
 *    and exactly what the reference expects; status OK exactly for requests the
 *    reference model calls valid, with the reference's value (GET_DIRECTION, GET_VALUE)
 *    and, for GET_LINE_NAMES, the names block;
 *  - every eventq buffer is pushed at most once, used length 0 or 1, status VALID or
 *    INVALID as the reference interrupt state machine says (enable / mask / latch,
 *    NONE returns the pending buffer INVALID); never two pending buffers for one line;
 *  - the backend's line state (direction, stored value, irq type, level) equals the
 *    model's; the device never marks a queue broken and no method throws.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { StandaloneBackend } from '../../../services/agent/src/backend/standalone-backend.ts';
import { harness } from '../../../services/agent/src/device/device-harness.ts';
import type { FakeChain } from '../../../services/agent/src/device/fake-virtqueue.ts';
import { encodeEventRequest, encodeNamesBlock, encodeRequest, RequestType } from '../../../services/agent/src/device/virtio-gpio-protocol.ts';
import { DriveValue, IrqType, Pull, isDirection, isIrqType } from '../../../services/common/src/line-model.ts';
import type { FuzzTarget } from '../target.ts';

type Op =
  | { readonly kind: 'req'; readonly bytes: Uint8Array; readonly writable: number | 'names' }
  | { readonly kind: 'ev'; readonly bytes: Uint8Array; readonly writable: number }
  | { readonly kind: 'drive'; readonly offset: number; readonly value: number }
  | { readonly kind: 'turn' };

const reqBytesArb = fc.oneof(
  {
    weight: 6,
    arbitrary: fc
      .record({
        type: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: 6 }) }, { weight: 3, arbitrary: fc.constantFrom(3, 5, 6) }, { weight: 1, arbitrary: fc.nat(0xffff) }),
        gpio: fc.oneof({ weight: 8, arbitrary: fc.nat(2) }, { weight: 2, arbitrary: fc.nat(6) }, { weight: 1, arbitrary: fc.nat(0xffff) }),
        value: fc.oneof({ weight: 8, arbitrary: fc.constantFrom(0, 1, 2, 3, 4, 8) }, { weight: 2, arbitrary: fc.nat(9) }, { weight: 1, arbitrary: fc.nat() }),
      })
      .map((r) => encodeRequest(r)),
  },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 16 }) },
);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant('req' as const),
      bytes: reqBytesArb,
      writable: fc.oneof({ weight: 6, arbitrary: fc.constant(2) }, { weight: 1, arbitrary: fc.constant('names' as const) }, { weight: 2, arbitrary: fc.nat(20) }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('ev' as const),
      bytes: fc.oneof({ weight: 6, arbitrary: fc.oneof(fc.nat(2), fc.nat(6)).map(encodeEventRequest) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 4 }) }),
      writable: fc.oneof({ weight: 6, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.nat(2) }),
    }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('drive' as const), offset: fc.oneof(fc.nat(2), fc.nat(5)), value: fc.nat(2) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'turn' as const }) },
);

const inputArb = fc.record({
  ngpio: fc.integer({ min: 1, max: 6 }),
  named: fc.boolean(),
  bias: fc.array(fc.constantFrom(Pull.NONE, Pull.UP, Pull.DOWN), { minLength: 6, maxLength: 6 }),
  irq: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  ops: fc.array(opArb, { maxLength: 40, size: 'medium' }),
});
type Input = typeof inputArb extends fc.Arbitrary<infer T> ? T : never;

interface ModelLine {
  direction: number;
  outputValue: 0 | 1;
  irqType: number;
  bias: number;
  drive: number;
  level: 0 | 1;
  pending: FakeChain | null;
  latched: boolean;
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

async function run(input: Input): Promise<void> {
  const ngpio = input.ngpio;
  const names = input.named ? Array.from({ length: ngpio }, (_, i) => (i % 3 === 2 ? '' : `L${i}`)) : [];
  const bias = input.bias.slice(0, ngpio) as Pull[];
  const backend = new StandaloneBackend({ ngpio, names, bias });
  await backend.start();
  const h = harness(backend, { irq: input.irq });
  const namesBlock = encodeNamesBlock(ngpio, names);
  const namesNeed = 1 + namesBlock.length;

  const resolve = (l: ModelLine): 0 | 1 => {
    const drivers: number[] = [];
    if (l.direction === 1) drivers.push(l.outputValue);
    if (l.drive !== DriveValue.RELEASE) drivers.push(l.drive === DriveValue.HIGH ? 1 : 0);
    if (drivers.length === 0) return l.bias === Pull.UP ? 1 : 0;
    return drivers.every((d) => d === 1) ? 1 : 0;
  };
  const lines: ModelLine[] = Array.from({ length: ngpio }, (_, i) => {
    const l: ModelLine = { direction: 0, outputValue: 0, irqType: IrqType.NONE, bias: bias[i] as number, drive: 0, level: 0, pending: null, latched: false };
    l.level = resolve(l);
    return l;
  });

  // Expected completions: chain -> [used length, bytes]; eventq chain -> status.
  const expectReq = new Map<FakeChain, { used: number; data: number[] }>();
  const expectEv = new Map<FakeChain, number>(); // 0 INVALID, 1 VALID
  const evChains: FakeChain[] = [];
  const reqChains: FakeChain[] = [];
  let queued: { chain: FakeChain; type: number; gpio: number; value: number }[] = [];

  const finish = (l: ModelLine, status: number): void => {
    if (l.pending === null) return;
    expectEv.set(l.pending, status);
    l.pending = null;
  };
  const fireIfReady = (l: ModelLine): void => {
    if (l.pending === null || l.irqType === IrqType.NONE) return;
    if (l.irqType === IrqType.LEVEL_HIGH || l.irqType === IrqType.LEVEL_LOW) {
      if ((l.irqType === IrqType.LEVEL_HIGH) === (l.level === 1)) finish(l, 1);
    } else if (l.latched) {
      l.latched = false;
      finish(l, 1);
    }
  };
  const setLevel = (l: ModelLine): void => {
    const now = resolve(l);
    if (now === l.level) return;
    l.level = now;
    if (l.irqType === IrqType.NONE) return;
    if (l.irqType === IrqType.LEVEL_HIGH || l.irqType === IrqType.LEVEL_LOW) {
      if (l.pending !== null && (l.irqType === IrqType.LEVEL_HIGH) === (now === 1)) finish(l, 1);
      return;
    }
    const wanted = now === 1 ? (l.irqType & IrqType.EDGE_RISING) !== 0 : (l.irqType & IrqType.EDGE_FALLING) !== 0;
    if (!wanted) return;
    if (l.pending !== null) finish(l, 1);
    else l.latched = true;
  };
  /** Apply queued (validated, in-sequence) requests in arrival order: what the device does by the next turn. */
  const settle = (): void => {
    for (const q of queued) {
      const l = lines[q.gpio] as ModelLine;
      const ok = (v: number): void => void expectReq.set(q.chain, { used: 2, data: [0, v] });
      const err = (): void => void expectReq.set(q.chain, { used: 2, data: [1, 0] });
      switch (q.type) {
        case RequestType.GET_DIRECTION: ok(l.direction); break;
        case RequestType.GET_VALUE: ok(l.level); break;
        case RequestType.SET_DIRECTION:
          if (!isDirection(q.value)) { err(); break; }
          l.direction = q.value;
          if (q.value === 0) l.outputValue = 0;
          setLevel(l);
          ok(0);
          break;
        case RequestType.SET_VALUE:
          if (q.value > 1) { err(); break; }
          l.outputValue = q.value as 0 | 1;
          setLevel(l);
          ok(0);
          break;
        case RequestType.SET_IRQ_TYPE:
          if (!isIrqType(q.value) || !input.irq) { err(); break; }
          if (q.value === IrqType.NONE) {
            l.latched = false;
            l.irqType = IrqType.NONE;
            finish(l, 0);
          } else if (l.irqType !== q.value) {
            l.latched = false;
            l.irqType = q.value;
            fireIfReady(l);
          }
          ok(0);
          break;
      }
    }
    queued = [];
  };
  const settleDevice = async (): Promise<void> => {
    await turn();
    await turn();
    settle();
  };

  for (const op of input.ops) {
    if (op.kind === 'turn') {
      await settleDevice();
    } else if (op.kind === 'drive') {
      await settleDevice();
      if (op.offset >= ngpio) continue;
      backend.drive(op.offset, op.value as DriveValue);
      const l = lines[op.offset] as ModelLine;
      l.drive = op.value;
      setLevel(l);
    } else if (op.kind === 'req') {
      const w = op.writable === 'names' ? namesNeed : op.writable;
      const chain = h.rq.add(op.bytes, w);
      reqChains.push(chain);
      const ok8 = op.bytes.length === 8;
      const dv = new DataView(op.bytes.buffer, op.bytes.byteOffset, op.bytes.byteLength);
      const type = ok8 ? dv.getUint16(0, true) : -1;
      const gpio = ok8 ? dv.getUint16(2, true) : -1;
      const value = ok8 ? dv.getUint32(4, true) : -1;
      const errShort = { used: Math.min(2, w), data: [1, 0].slice(0, Math.min(2, w)) };
      if (w === 0) expectReq.set(chain, { used: 0, data: [] });
      else if (!ok8) expectReq.set(chain, errShort);
      else if (type === RequestType.GET_LINE_NAMES) expectReq.set(chain, w >= namesNeed ? { used: namesNeed, data: [0, ...namesBlock] } : errShort);
      else if (w < 2 || type < 1 || type > 6 || gpio >= ngpio) expectReq.set(chain, errShort);
      else queued.push({ chain, type, gpio, value });
      h.dev.kick(0);
    } else {
      const chain = h.eq.add(op.bytes, op.writable);
      evChains.push(chain);
      if (op.writable === 0) expectEv.set(chain, -1);
      else {
        const gpio = op.bytes.length === 2 ? (op.bytes[0] as number) | ((op.bytes[1] as number) << 8) : -1;
        const l = gpio >= 0 && gpio < ngpio ? (lines[gpio] as ModelLine) : undefined;
        if (l === undefined || l.irqType === IrqType.NONE || l.pending !== null) expectEv.set(chain, 0);
        else {
          l.pending = chain;
          fireIfReady(l);
        }
      }
      if (input.irq) h.dev.kick(1);
    }
  }
  await settleDevice();

  assert.deepEqual(h.broken, [], 'no queue marked broken');
  // requestq: exactly one push each, as the reference says.
  for (const c of reqChains) {
    const pushes = h.rq.pushes.filter((p) => p.chain === c);
    assert.equal(pushes.length, 1, `request chain ${c.head} pushed ${pushes.length} times`);
    const p = pushes[0]!;
    const want = expectReq.get(c);
    assert.ok(want !== undefined);
    assert.ok([0, 1, 2, namesNeed].includes(p.usedLength), `used length ${p.usedLength}`);
    assert.equal(p.usedLength, want.used, `used length of request ${[...c.readable].join(',')} (writable ${c.writableLength})`);
    assert.deepEqual([...p.data], want.data, `response to request ${[...c.readable].join(',')} (writable ${c.writableLength})`);
  }
  assert.equal(h.rq.pushes.length, reqChains.length);
  // eventq: without F_IRQ the eventq does not exist.
  if (!input.irq) assert.equal(h.eq.pushes.length, 0);
  else {
    const pendingPerLine = new Map<number, number>();
    for (const c of evChains) {
      const pushes = h.eq.pushes.filter((p) => p.chain === c);
      assert.ok(pushes.length <= 1, 'an eventq buffer returned twice');
      const want = expectEv.get(c);
      if (pushes.length === 0) {
        assert.equal(want, undefined, `eventq buffer ${[...c.readable].join(',')} not returned, expected status ${String(want)}`);
        const gpio = (c.readable[0] as number) | ((c.readable[1] as number) << 8);
        pendingPerLine.set(gpio, (pendingPerLine.get(gpio) ?? 0) + 1);
        assert.equal(lines[gpio]?.pending, c, 'the model holds the same pending buffer');
        continue;
      }
      const p = pushes[0]!;
      if (want === -1) assert.equal(p.usedLength, 0);
      else {
        assert.equal(p.usedLength, 1);
        assert.equal(p.data[0], want, `eventq status for buffer ${[...c.readable].join(',')}`);
      }
    }
    for (const [gpio, n] of pendingPerLine) assert.equal(n, 1, `${n} pending buffers on line ${gpio}`);
  }
  // Device state = model state.
  lines.forEach((l, i) => {
    const s = backend.lineInfo(i);
    assert.deepEqual(
      { direction: s.direction, outputValue: s.outputValue, irqType: s.irqType, level: s.level },
      { direction: l.direction, outputValue: l.outputValue, irqType: l.irqType, level: l.level },
      `state of line ${i}`,
    );
  });
  h.dev.close();
  await backend.close();
}

export const gpioDeviceTarget: FuzzTarget = {
  name: 'gpio-device',
  description: 'random requestq/eventq chains, drives and turns -> GpioDevice on a standalone backend vs a reference model',
  weight: 15,
  testRuns: 600,
  property: () => fc.asyncProperty(inputArb, run),
};
