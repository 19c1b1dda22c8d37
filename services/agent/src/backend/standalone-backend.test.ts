import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Direction, DriveValue, Edge, IrqType, Pull } from '../../../common/src/line-model.ts';
import { FabricError } from '../../../common/src/errors.ts';
import { StandaloneBackend } from './standalone-backend.ts';
import { BackendClosedError, BackendError } from './line-backend.ts';
import type { LineEvent } from './line-backend.ts';

function withEvents(b: StandaloneBackend): LineEvent[] {
  const events: LineEvent[] = [];
  b.onEvent((e) => events.push(e));
  return events;
}

test('lines start NONE, value 0, floating low unless biased', async () => {
  const b = new StandaloneBackend({ ngpio: 3, bias: [Pull.NONE, Pull.UP, Pull.DOWN] });
  await b.start();
  assert.deepEqual(b.levels(), [0, 1, 0]);
  assert.equal(await b.getDirection(0), Direction.NONE);
  assert.equal(await b.getValue(1), 1, 'pull-up reads 1');
  assert.equal(await b.getValue(2), 0, 'pull-down reads 0');
  const s = b.snapshot();
  assert.equal(s.length, 3);
  assert.deepEqual(s[1], { chip: 'standalone', offset: 1, name: '', direction: 0, outputValue: 0, irqType: 0, bias: Pull.UP, level: 1, net: '', externalDrive: 0 });
});

test('SET_VALUE before OUT is stored and applies when the line becomes OUT', async () => {
  const b = new StandaloneBackend({ ngpio: 1 });
  const events = withEvents(b);
  await b.setValue(0, 1);
  assert.equal(await b.getValue(0), 0, 'not an output yet: floats low');
  assert.equal(events.length, 0);
  await b.setDirection(0, Direction.OUT);
  assert.equal(await b.getValue(0), 1);
  assert.equal(b.snapshot()[0]?.outputValue, 1);
  assert.equal(events.length, 1);
  assert.equal(events[0]?.edge, Edge.RISING);
  assert.equal(events[0]?.level, 1);
  assert.equal(events[0]?.seq, 1n);
  // Switching to input stops driving: back to the pull.
  await b.setDirection(0, Direction.IN);
  assert.equal(await b.getValue(0), 0);
  assert.equal(events[1]?.edge, Edge.FALLING);
  assert.equal(events[1]?.seq, 2n);
  assert.ok((events[1]?.timestampNs ?? 0n) >= (events[0]?.timestampNs ?? 0n));
});

test('SET_DIRECTION NONE discards the stored value; bias, drive and irq type stay', async () => {
  const b = new StandaloneBackend({ ngpio: 1, bias: Pull.DOWN });
  await b.setValue(0, 1);
  await b.setIrqType(0, IrqType.EDGE_BOTH);
  await b.setDirection(0, Direction.OUT);
  assert.equal(await b.getValue(0), 1);
  await b.setDirection(0, Direction.NONE);
  assert.equal(await b.getValue(0), 0);
  const l = b.snapshot()[0];
  assert.equal(l?.outputValue, 0);
  assert.equal(l?.direction, Direction.NONE);
  assert.equal(l?.bias, Pull.DOWN);
  assert.equal(l?.irqType, IrqType.EDGE_BOTH);
  // The stored value was discarded: becoming OUT again drives the default 0.
  await b.setDirection(0, Direction.OUT);
  assert.equal(await b.getValue(0), 0);
});

test('external drive overrides the pull; agreeing with own output is no contention, disagreeing resolves low', async () => {
  const b = new StandaloneBackend({ ngpio: 2, bias: Pull.UP });
  const events = withEvents(b);
  assert.equal(b.drive(0, DriveValue.LOW), 0);
  assert.deepEqual(events.map((e) => [e.offset, e.level, e.edge, e.seq]), [[0, 0, Edge.FALLING, 1n]]);
  assert.equal(b.drive(0, DriveValue.RELEASE), 1, 'released: pull-up again');
  assert.equal(b.drive(0, DriveValue.HIGH), 1, 'no change, no event');
  assert.equal(events.length, 2);
  await b.setValue(0, 1);
  await b.setDirection(0, Direction.OUT);
  assert.equal(b.contentionCount, 0);
  await b.setValue(0, 0);
  assert.equal(await b.getValue(0), 0, 'push-pull disagreement resolves low');
  assert.equal(b.contentionCount, 1);
  await b.setValue(0, 0);
  assert.equal(b.contentionCount, 1, 'staying in contention is counted once');
  assert.equal(b.snapshot()[0]?.externalDrive, DriveValue.HIGH);
  assert.equal(b.lastSeq, 3n);
  // Line 1 is independent.
  assert.equal(await b.getValue(1), 1);
});

test('bias can be changed at run time and raises an event', async () => {
  const b = new StandaloneBackend({ ngpio: 1 });
  const events = withEvents(b);
  assert.equal(b.setBias(0, Pull.UP), 1);
  assert.deepEqual(events.map((e) => e.edge), [Edge.RISING]);
  assert.equal(b.setBias(0, Pull.DOWN), 0);
  assert.deepEqual(events.map((e) => e.edge), [Edge.RISING, Edge.FALLING]);
});

test('events: seq per chip across lines, listener errors are contained, unsubscribe works', async () => {
  const b = new StandaloneBackend({ ngpio: 2, clockNs: () => 42n });
  const seen: LineEvent[] = [];
  b.onEvent(() => {
    throw new Error('listener bug');
  });
  const off = b.onEvent((e) => seen.push(e));
  b.drive(0, DriveValue.HIGH);
  b.drive(1, DriveValue.HIGH);
  assert.deepEqual(seen.map((e) => [e.offset, e.seq, e.timestampNs]), [[0, 1n, 42n], [1, 2n, 42n]]);
  off();
  b.drive(1, DriveValue.LOW);
  assert.equal(seen.length, 2);
  assert.equal(b.lastSeq, 3n);
});

test('bad arguments are FabricErrors; a closed backend rejects with BackendClosedError', async () => {
  assert.throws(() => new StandaloneBackend({ ngpio: 0 }), FabricError);
  assert.throws(() => new StandaloneBackend({ ngpio: 2, names: ['a', 'a'] }), FabricError);
  assert.throws(() => new StandaloneBackend({ ngpio: 2, bias: [Pull.UP] }), FabricError);
  const b = new StandaloneBackend({ ngpio: 2, names: ['x', ''] });
  assert.deepEqual(b.names, ['x', '']);
  await assert.rejects(b.getValue(2), FabricError);
  await assert.rejects(b.setValue(0, 2 as 0), FabricError);
  await assert.rejects(b.setDirection(0, 7 as 0), FabricError);
  await assert.rejects(b.setIrqType(0, 5 as 0), FabricError);
  assert.throws(() => b.drive(0, 9 as 0), FabricError);
  await b.close();
  await assert.rejects(b.getValue(0), BackendClosedError);
  await assert.rejects(b.getValue(0), BackendError);
  assert.equal(b.snapshot().length, 2, 'listings still work after close');
});
