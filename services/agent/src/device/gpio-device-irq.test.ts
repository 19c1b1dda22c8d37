import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Direction, DriveValue, IrqType, Pull } from '../../../common/src/line-model.ts';
import { StandaloneBackend } from '../backend/standalone-backend.ts';
import { ScriptedBackend } from '../backend/scripted-backend.ts';
import { BackendError } from '../backend/line-backend.ts';
import { FakeVirtqueue } from './fake-virtqueue.ts';
import type { FakeChain } from './fake-virtqueue.ts';
import { RequestType as T, encodeEventRequest } from './virtio-gpio-protocol.ts';
import { flush, harness } from './device-harness.ts';

type H = ReturnType<typeof harness>;

const VALID = [1];
const INVALID = [0];

async function setIrq(h: H, gpio: number, type: IrqType): Promise<FakeChain> {
  const c = h.request(T.SET_IRQ_TYPE, gpio, type);
  await flush();
  return c;
}

async function enable(h: H, gpio: number, type: IrqType): Promise<void> {
  const c = await setIrq(h, gpio, type);
  assert.deepEqual([...(h.pushOf(c)?.data ?? [])], [0, 0], `SET_IRQ_TYPE ${type} answered OK`);
}

/** The eventq completion of a buffer: [status] with used length 1, or undefined if still pending. */
function eventResult(h: H, c: FakeChain): number[] | undefined {
  const p = h.pushOf(c);
  if (p === undefined) return undefined;
  assert.equal(p.usedLength, 1, 'eventq used length is exactly 1');
  return [...p.data];
}

function setup(ngpio = 4, bias: Pull = Pull.DOWN) {
  const backend = new StandaloneBackend({ ngpio, bias });
  const h = harness(backend);
  return { backend, h };
}

test('enable, unmask, edge: the buffer completes VALID and the line is masked again', async () => {
  const { backend, h } = setup();
  await enable(h, 2, IrqType.EDGE_RISING);
  const buf = h.unmask(2);
  assert.equal(eventResult(h, buf), undefined, 'nothing to report yet');
  assert.deepEqual(h.dev.irqState(2), { type: IrqType.EDGE_RISING, unmasked: true, latched: false });
  backend.drive(2, DriveValue.HIGH);
  assert.deepEqual(eventResult(h, buf), VALID);
  assert.equal(h.eq.notifies, 1);
  assert.equal(h.dev.irqState(2)?.unmasked, false);
  assert.deepEqual(h.interrupts, ['valid']);
  h.dev.close();
});

test('an edge while masked is latched and reported at once on unmask', async () => {
  const { backend, h } = setup();
  await enable(h, 1, IrqType.EDGE_BOTH);
  backend.drive(1, DriveValue.HIGH);
  backend.drive(1, DriveValue.LOW);
  assert.equal(h.dev.irqState(1)?.latched, true);
  assert.equal(h.eq.pushes.length, 0);
  const buf = h.unmask(1);
  assert.deepEqual(eventResult(h, buf), VALID);
  assert.equal(h.dev.irqState(1)?.latched, false, 'one latch, reported once');
  const again = h.unmask(1);
  assert.equal(eventResult(h, again), undefined);
  assert.deepEqual(h.interrupts, ['latched', 'valid']);
  h.dev.close();
});

test('edges before the line is enabled are not latched', async () => {
  const { backend, h } = setup();
  backend.drive(0, DriveValue.HIGH);
  await enable(h, 0, IrqType.EDGE_RISING);
  const buf = h.unmask(0);
  assert.equal(eventResult(h, buf), undefined);
  h.dev.close();
});

test('SET_IRQ_TYPE NONE discards a latched edge', async () => {
  const { backend, h } = setup();
  await enable(h, 0, IrqType.EDGE_RISING);
  backend.drive(0, DriveValue.HIGH);
  assert.equal(h.dev.irqState(0)?.latched, true);
  await enable(h, 0, IrqType.NONE);
  assert.equal(h.dev.irqState(0)?.latched, false);
  await enable(h, 0, IrqType.EDGE_RISING);
  const buf = h.unmask(0);
  assert.equal(eventResult(h, buf), undefined, 'the old edge is gone');
  h.dev.close();
});

test('SET_IRQ_TYPE NONE returns the pending buffer INVALID, pushed before the response', async () => {
  const { backend, h } = setup();
  await enable(h, 3, IrqType.EDGE_FALLING);
  const buf = h.unmask(3);
  const before = h.pushLog.entries.length;
  const resp = await setIrq(h, 3, IrqType.NONE);
  const order = h.pushLog.entries.slice(before).map((p) => [p.queue, p.chain === buf ? 'buffer' : p.chain === resp ? 'response' : '?']);
  assert.deepEqual(order, [
    [1, 'buffer'],
    [0, 'response'],
  ]);
  assert.deepEqual(eventResult(h, buf), INVALID);
  assert.deepEqual([...(h.pushOf(resp)?.data ?? [])], [0, 0]);
  assert.equal(h.eq.notifies, 1);
  assert.equal(backend.snapshot()[3]?.irqType, IrqType.NONE);
  h.dev.close();
});

test('a buffer queued while the line is disabled comes back INVALID at once', async () => {
  const { h } = setup();
  const buf = h.unmask(0);
  assert.deepEqual(eventResult(h, buf), INVALID);
  assert.equal(h.eq.notifies, 1);
  assert.deepEqual(h.interrupts, ['invalid']);
  h.dev.close();
});

test('malformed eventq buffers: wrong size or gpio out of range -> INVALID, no writable byte -> used length 0', async () => {
  const { h } = setup(2);
  await enable(h, 0, IrqType.EDGE_RISING);
  const far = h.unmask(2);
  const long = h.eq.add(Uint8Array.of(0, 0, 0), 1);
  const short = h.eq.add(Uint8Array.of(0), 1);
  const noStatus = h.eq.add(encodeEventRequest(0), 0);
  h.dev.kick(1);
  assert.deepEqual(eventResult(h, far), INVALID);
  assert.deepEqual(eventResult(h, long), INVALID);
  assert.deepEqual(eventResult(h, short), INVALID);
  assert.equal(h.pushOf(noStatus)?.usedLength, 0);
  assert.equal(h.dev.irqState(0)?.unmasked, false, 'none of them unmasked line 0');
  h.dev.close();
});

test('a second buffer for a line that already has one comes back INVALID; the first stays', async () => {
  const { backend, h } = setup();
  await enable(h, 1, IrqType.EDGE_RISING);
  const first = h.unmask(1);
  const second = h.unmask(1);
  assert.deepEqual(eventResult(h, second), INVALID);
  assert.equal(eventResult(h, first), undefined);
  backend.drive(1, DriveValue.HIGH);
  assert.deepEqual(eventResult(h, first), VALID);
  h.dev.close();
});

test('edge filtering: rising ignores falling edges, falling ignores rising edges, both takes both', async () => {
  const { backend, h } = setup();
  await enable(h, 0, IrqType.EDGE_RISING);
  await enable(h, 1, IrqType.EDGE_FALLING);
  await enable(h, 2, IrqType.EDGE_BOTH);
  // Raise every line while masked.
  for (const g of [0, 1, 2]) backend.drive(g, DriveValue.HIGH);
  assert.deepEqual([0, 1, 2].map((g) => h.dev.irqState(g)?.latched), [true, false, true]);
  const r = [0, 1, 2].map((g) => h.unmask(g));
  assert.deepEqual(r.map((c) => eventResult(h, c)), [VALID, undefined, VALID]);
  // Now unmasked again where needed, lower every line.
  const r0 = h.unmask(0);
  const r2 = h.unmask(2);
  for (const g of [0, 1, 2]) backend.drive(g, DriveValue.LOW);
  assert.equal(eventResult(h, r0), undefined, 'falling edge ignored by EDGE_RISING');
  assert.deepEqual(eventResult(h, r[1] as FakeChain), VALID, 'falling edge reported by EDGE_FALLING');
  assert.deepEqual(eventResult(h, r2), VALID);
  h.dev.close();
});

test('LEVEL_HIGH: fires on unmask while high, re-fires after re-unmask, stops when the level drops', async () => {
  const { backend, h } = setup();
  await enable(h, 0, IrqType.LEVEL_HIGH);
  backend.drive(0, DriveValue.HIGH);
  assert.equal(h.dev.irqState(0)?.latched, false, 'level types never latch');
  const b1 = h.unmask(0);
  assert.deepEqual(eventResult(h, b1), VALID, 'active on unmask');
  const b2 = h.unmask(0);
  assert.deepEqual(eventResult(h, b2), VALID, 'still active: re-fires');
  backend.drive(0, DriveValue.LOW);
  const b3 = h.unmask(0);
  assert.equal(eventResult(h, b3), undefined, 'inactive: the buffer waits');
  backend.drive(0, DriveValue.HIGH);
  assert.deepEqual(eventResult(h, b3), VALID, 'becoming active while unmasked fires');
  h.dev.close();
});

test('LEVEL_LOW: active low fires, high does not; a pulse while masked is not latched', async () => {
  const { backend, h } = setup(2, Pull.UP);
  await enable(h, 1, IrqType.LEVEL_LOW);
  const b1 = h.unmask(1);
  assert.equal(eventResult(h, b1), undefined, 'pulled up: inactive');
  backend.drive(1, DriveValue.LOW);
  assert.deepEqual(eventResult(h, b1), VALID);
  const b2 = h.unmask(1);
  assert.deepEqual(eventResult(h, b2), VALID, 'still low');
  backend.drive(1, DriveValue.RELEASE);
  const b3 = h.unmask(1);
  assert.equal(eventResult(h, b3), undefined);
  // Masked pulse: take the buffer out of play by disabling, pulse, re-enable.
  await enable(h, 1, IrqType.NONE);
  assert.deepEqual(eventResult(h, b3), INVALID);
  await enable(h, 1, IrqType.LEVEL_LOW);
  backend.drive(1, DriveValue.LOW);
  backend.drive(1, DriveValue.RELEASE);
  const b4 = h.unmask(1);
  assert.equal(eventResult(h, b4), undefined, 'a level pulse while masked is not remembered');
  h.dev.close();
});

test('a type change without NONE in between: the latch is dropped, the pending buffer kept', async () => {
  const { backend, h } = setup();
  await enable(h, 0, IrqType.EDGE_RISING);
  backend.drive(0, DriveValue.HIGH);
  assert.equal(h.dev.irqState(0)?.latched, true);
  await enable(h, 0, IrqType.EDGE_FALLING);
  assert.deepEqual(h.dev.irqState(0), { type: IrqType.EDGE_FALLING, unmasked: false, latched: false });
  const buf = h.unmask(0);
  assert.equal(eventResult(h, buf), undefined);
  // Pending buffer survives a change to LEVEL_HIGH and fires because the line is high.
  await enable(h, 0, IrqType.LEVEL_HIGH);
  assert.deepEqual(eventResult(h, buf), VALID);
  // Same type again is accepted and changes nothing.
  const b2 = h.unmask(0);
  assert.deepEqual(eventResult(h, b2), VALID);
  backend.drive(0, DriveValue.LOW);
  const b3 = h.unmask(0);
  await enable(h, 0, IrqType.LEVEL_HIGH);
  assert.equal(eventResult(h, b3), undefined);
  assert.equal(h.dev.irqState(0)?.unmasked, true);
  h.dev.close();
});

test('SET_IRQ_TYPE the backend refuses: ERR, and the interrupt state is unchanged', async () => {
  const backend = new ScriptedBackend(2);
  backend.autoResolve = () => 0;
  const h = harness(backend);
  await enable(h, 0, IrqType.EDGE_RISING);
  const buf = h.unmask(0);
  backend.autoResolve = (op) => {
    if (op === 'setIrqType') throw new BackendError('service unavailable');
    return 0;
  };
  const resp = await setIrq(h, 0, IrqType.NONE);
  assert.deepEqual([...(h.pushOf(resp)?.data ?? [])], [1, 0]);
  assert.equal(eventResult(h, buf), undefined, 'the pending buffer was not returned');
  assert.deepEqual(h.dev.irqState(0), { type: IrqType.EDGE_RISING, unmasked: true, latched: false });
  backend.emit(0, 1);
  assert.deepEqual(eventResult(h, buf), VALID, 'still enabled');
  // A refused enable leaves the line disabled.
  const resp2 = await setIrq(h, 1, IrqType.EDGE_RISING);
  assert.deepEqual([...(h.pushOf(resp2)?.data ?? [])], [1, 0]);
  assert.equal(h.dev.irqState(1)?.type, IrqType.NONE);
  assert.deepEqual(eventResult(h, h.unmask(1)), INVALID);
  h.dev.close();
});

test('an output line with an irq type raises interrupts when its own value changes', async () => {
  const { h } = setup();
  await enable(h, 2, IrqType.EDGE_RISING);
  const buf = h.unmask(2);
  h.request(T.SET_VALUE, 2, 1);
  await flush();
  assert.equal(eventResult(h, buf), undefined, 'not an output yet');
  h.request(T.SET_DIRECTION, 2, Direction.OUT);
  await flush();
  assert.deepEqual(eventResult(h, buf), VALID);
  h.dev.close();
});

test('interrupts on one line leave the others alone', async () => {
  const { backend, h } = setup();
  await enable(h, 0, IrqType.EDGE_BOTH);
  await enable(h, 1, IrqType.EDGE_BOTH);
  const b0 = h.unmask(0);
  const b1 = h.unmask(1);
  backend.drive(1, DriveValue.HIGH);
  assert.equal(eventResult(h, b0), undefined);
  assert.deepEqual(eventResult(h, b1), VALID);
  h.dev.close();
});

test('stopQueue(eventq) drops pending buffers without pushing; edges then latch for the new ring', async () => {
  const { backend, h } = setup();
  await enable(h, 0, IrqType.EDGE_RISING);
  const old = h.unmask(0);
  h.dev.stopQueue(1);
  assert.equal(h.dev.irqState(0)?.unmasked, false);
  backend.drive(0, DriveValue.HIGH);
  assert.equal(h.pushOf(old), undefined, 'nothing pushed to a stopped queue');
  assert.equal(h.dev.irqState(0)?.latched, true);
  const eq2 = new FakeVirtqueue(1);
  h.dev.startQueue(eq2);
  eq2.add(encodeEventRequest(0), 1);
  h.dev.kick(1);
  assert.deepEqual([...(eq2.pushes[0]?.data ?? [])], VALID);
  h.dev.close();
});

test('reset() drops interrupt state and F_IRQ, keeps the backend state', async () => {
  const { backend, h } = setup();
  await enable(h, 0, IrqType.EDGE_RISING);
  backend.drive(0, DriveValue.HIGH);
  h.dev.reset();
  assert.deepEqual(h.dev.irqState(0), { type: IrqType.NONE, unmasked: false, latched: false });
  assert.equal(h.dev.irqEnabled, false);
  assert.equal(backend.snapshot()[0]?.level, 1);
  assert.equal(backend.snapshot()[0]?.irqType, IrqType.EDGE_RISING);
  h.dev.close();
});

test('flushQueue(eventq) returns pending buffers INVALID and keeps the enable and the latch', async () => {
  const { backend, h } = setup();
  await enable(h, 0, IrqType.EDGE_RISING);
  await enable(h, 1, IrqType.EDGE_RISING);
  const b0 = h.unmask(0);
  backend.drive(1, DriveValue.HIGH); // line 1 masked: latched
  h.dev.flushQueue(1);
  assert.deepEqual(eventResult(h, b0), INVALID);
  assert.deepEqual(h.dev.irqState(0), { type: IrqType.EDGE_RISING, unmasked: false, latched: false });
  assert.equal(h.dev.irqState(1)?.latched, true);
  h.dev.stopQueue(1);
  const eq2 = new FakeVirtqueue(1);
  h.dev.startQueue(eq2);
  eq2.add(encodeEventRequest(1), 1);
  h.dev.kick(1);
  assert.deepEqual([...(eq2.pushes[0]?.data ?? [])], VALID, 'the latched edge is reported on the new ring');
  h.dev.close();
});
