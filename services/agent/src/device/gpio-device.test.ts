import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Direction, IrqType, Pull } from '../../../common/src/line-model.ts';
import { FabricError, ErrorCode } from '../../../common/src/errors.ts';
import { StandaloneBackend } from '../backend/standalone-backend.ts';
import { ScriptedBackend } from '../backend/scripted-backend.ts';
import { BackendError } from '../backend/line-backend.ts';
import { GpioDevice } from './gpio-device.ts';
import { FakeVirtqueue } from './fake-virtqueue.ts';
import { RequestType as T, decodeConfig, encodeRequest } from './virtio-gpio-protocol.ts';
import { flush, harness, waitUntil } from './device-harness.ts';

const bytes = (u: Uint8Array | undefined): number[] => (u === undefined ? [] : [...u]);

test('features and queues: VERSION_1 | F_IRQ | INDIRECT_DESC | EVENT_IDX, two queues', () => {
  const dev = new GpioDevice({ backend: new StandaloneBackend({ ngpio: 1 }) });
  assert.equal(dev.deviceFeatures, (1n << 32n) | (1n << 29n) | (1n << 28n) | 1n);
  assert.equal(dev.numQueues, 2);
  dev.close();
});

test('config space: ngpio and gpio_names_size for no names, some names, all names', () => {
  const none = new GpioDevice({ backend: new StandaloneBackend({ ngpio: 5 }) });
  assert.deepEqual(bytes(none.config()), [5, 0, 0, 0, 0, 0, 0, 0]);
  const some = new GpioDevice({ backend: new StandaloneBackend({ ngpio: 3, names: ['', 'led', ''] }) });
  assert.deepEqual(decodeConfig(some.config()), { ngpio: 3, gpioNamesSize: 6 });
  const all = new GpioDevice({ backend: new StandaloneBackend({ ngpio: 300, names: Array.from({ length: 300 }, (_, i) => `l${i}`) }) });
  const size = Array.from({ length: 300 }, (_, i) => `l${i}`.length + 1).reduce((a, b) => a + b, 0);
  assert.deepEqual(bytes(all.config()), [300 & 0xff, 300 >> 8, 0, 0, size & 0xff, (size >> 8) & 0xff, 0, 0]);
  // config() returns a copy: a caller cannot corrupt the device's config.
  all.config()[0] = 99;
  assert.equal(all.config()[0], 300 & 0xff);
  for (const d of [none, some, all]) d.close();
});

test('GET_LINE_NAMES: status + names block, used length exactly 1 + gpio_names_size', async () => {
  const h = harness(new StandaloneBackend({ ngpio: 3, names: ['a', '', 'cd'] }));
  const c = h.request(T.GET_LINE_NAMES, 0, 0, 64);
  const p = h.pushOf(c);
  assert.equal(p?.usedLength, 1 + 6);
  assert.deepEqual(bytes(p?.data), [0, 0x61, 0, 0, 0x63, 0x64, 0]);
  // gpio != 0 is tolerated.
  const c2 = h.request(T.GET_LINE_NAMES, 2, 0, 7);
  assert.equal(h.pushOf(c2)?.usedLength, 7);
  // A buffer too small for the block is answered ERR (2 bytes).
  const c3 = h.request(T.GET_LINE_NAMES, 0, 0, 6);
  assert.equal(h.pushOf(c3)?.usedLength, 2);
  assert.deepEqual(bytes(h.pushOf(c3)?.data), [1, 0]);
  assert.equal(h.rq.notifies, 3);
  h.dev.close();
});

test('GET_LINE_NAMES without names: OK with an empty block (used length 1)', () => {
  const h = harness(new StandaloneBackend({ ngpio: 2 }));
  const c = h.request(T.GET_LINE_NAMES, 0, 0, 2);
  assert.equal(h.pushOf(c)?.usedLength, 1);
  assert.deepEqual(bytes(h.pushOf(c)?.data), [0]);
  h.dev.close();
});

test('every request type: happy path, exact used lengths and response bytes', async () => {
  const backend = new StandaloneBackend({ ngpio: 4, bias: Pull.NONE });
  const h = harness(backend);
  const step = async (type: number, gpio: number, value: number): Promise<number[]> => {
    const c = h.request(type, gpio, value);
    await flush();
    const p = h.pushOf(c);
    assert.equal(p?.usedLength, 2, `used length of ${type}`);
    return bytes(p?.data);
  };
  assert.deepEqual(await step(T.GET_DIRECTION, 1, 0), [0, Direction.NONE]);
  assert.deepEqual(await step(T.SET_VALUE, 1, 1), [0, 0]);
  assert.deepEqual(await step(T.GET_VALUE, 1, 0), [0, 0], 'value applies only once OUT');
  assert.deepEqual(await step(T.SET_DIRECTION, 1, Direction.OUT), [0, 0]);
  assert.deepEqual(await step(T.GET_DIRECTION, 1, 0), [0, Direction.OUT]);
  assert.deepEqual(await step(T.GET_VALUE, 1, 0), [0, 1]);
  assert.deepEqual(await step(T.SET_DIRECTION, 1, Direction.IN), [0, 0]);
  assert.deepEqual(await step(T.GET_DIRECTION, 1, 0), [0, Direction.IN]);
  assert.deepEqual(await step(T.SET_IRQ_TYPE, 1, IrqType.EDGE_BOTH), [0, 0]);
  assert.equal(backend.snapshot()[1]?.irqType, IrqType.EDGE_BOTH, 'irq type forwarded to the backend');
  assert.deepEqual(await step(T.SET_DIRECTION, 1, Direction.NONE), [0, 0]);
  assert.equal(h.rq.pushes.length, 10);
  assert.equal(h.rq.notifies, 10, 'every push is followed by a notify');
  assert.ok(h.requests.every((r) => r.outcome === 'ok'));
  assert.equal(h.requests[0]?.type, 'GET_DIRECTION');
  h.dev.close();
});

test('bad input is answered ERR with used length 2 and never reaches the backend', async () => {
  const backend = new ScriptedBackend(4);
  const h = harness(backend);
  const cases: [number, number, number][] = [
    [0, 0, 0], // unknown type
    [7, 0, 0], // unknown type
    [0xffff, 0, 0],
    [T.GET_VALUE, 4, 0], // gpio >= ngpio
    [T.GET_DIRECTION, 0xffff, 0],
    [T.SET_VALUE, 0, 2],
    [T.SET_DIRECTION, 0, 3],
    [T.SET_IRQ_TYPE, 0, 5],
    [T.SET_IRQ_TYPE, 0, 16],
  ];
  const chains = cases.map(([t, g, v]) => h.request(t, g, v));
  // Malformed request sizes.
  const short = h.rq.add(new Uint8Array(7), 2);
  const long = h.rq.add(new Uint8Array(9), 2);
  h.dev.kick(0);
  await flush();
  for (const c of [...chains, short, long]) {
    assert.equal(h.pushOf(c)?.usedLength, 2);
    assert.deepEqual(bytes(h.pushOf(c)?.data), [1, 0]);
  }
  assert.equal(backend.callLog.length, 0);
  assert.equal(h.rq.notifies, h.rq.pushes.length);
  assert.ok(h.requests.every((r) => r.outcome === 'err'));
  h.dev.close();
});

test('a writable part too small for the status is returned with used length 0; 1 byte gets the ERR status only', async () => {
  const backend = new ScriptedBackend(2);
  const h = harness(backend);
  const none = h.request(T.GET_VALUE, 0, 0, 0);
  const one = h.request(T.GET_VALUE, 0, 0, 1);
  const names = h.request(T.GET_LINE_NAMES, 0, 0, 0);
  await flush();
  assert.equal(h.pushOf(none)?.usedLength, 0);
  assert.equal(none.writeCount, 0);
  assert.equal(h.pushOf(names)?.usedLength, 0);
  assert.equal(h.pushOf(one)?.usedLength, 1);
  assert.deepEqual(bytes(h.pushOf(one)?.data), [1]);
  assert.equal(backend.callLog.length, 0);
  assert.ok(h.logs.some((l) => l.level === 'warn' && /no writable buffer/.test(l.msg)));
  assert.deepEqual(h.requests.filter((r) => r.outcome === 'dropped').length, 2);
  h.dev.close();
});

test('same-line requests run one at a time and are answered in order; other lines overtake', async () => {
  const backend = new ScriptedBackend(4);
  const h = harness(backend);
  const a = h.request(T.GET_VALUE, 0); // line 0, first
  const b = h.request(T.SET_VALUE, 0, 1); // line 0, second
  const bad = h.request(T.SET_VALUE, 0, 9); // line 0, third, invalid
  const c = h.request(T.GET_VALUE, 1); // line 1
  await flush();
  // b is not sent to the backend before a is answered.
  assert.deepEqual(backend.pending().map((x) => [x.op, x.offset]), [['getValue', 0], ['getValue', 1]]);
  backend.pending()[1]?.resolve(1); // line 1 finishes first
  await flush();
  assert.deepEqual(h.rq.pushes.map((p) => p.chain), [c]);
  assert.deepEqual(bytes(h.pushOf(c)?.data), [0, 1]);
  backend.pending()[0]?.resolve(0); // a
  await flush();
  assert.deepEqual(h.rq.pushes.map((p) => p.chain), [c, a]);
  assert.deepEqual(backend.pending().map((x) => [x.op, x.offset, x.arg]), [['setValue', 0, 1]]);
  backend.pending()[0]?.resolve();
  await flush();
  assert.deepEqual(h.rq.pushes.map((p) => p.chain), [c, a, b, bad]);
  assert.deepEqual(bytes(h.pushOf(bad)?.data), [1, 0]);
  h.dev.close();
});

test('a backend that never answers: ERR at the deadline, the late result is ignored, the line moves on', async () => {
  const backend = new ScriptedBackend(2);
  const h = harness(backend, { requestDeadlineMs: 20 });
  const a = h.request(T.GET_VALUE, 0);
  const queued = h.request(T.GET_DIRECTION, 0); // arrives with a: its deadline runs out behind a
  await waitUntil(() => h.pushOf(a) !== undefined, 'the deadline answer');
  assert.deepEqual(bytes(h.pushOf(a)?.data), [1, 0]);
  assert.equal(h.pushOf(a)?.usedLength, 2);
  assert.equal(h.requests[0]?.outcome, 'timeout');
  // The deadline counts from arrival: the request queued behind a is answered ERR at once,
  // without a backend call, instead of after a second full deadline.
  await waitUntil(() => h.pushOf(queued) !== undefined, 'the queued request answered');
  assert.deepEqual(bytes(h.pushOf(queued)?.data), [1, 0]);
  // The line moves on: a new request gets its own call and answer.
  const n = backend.calls.length;
  const b = h.request(T.GET_DIRECTION, 0);
  await waitUntil(() => backend.calls.length === n + 1, 'the second call');
  backend.calls[0]?.resolve(1); // late result of a
  backend.calls[n]?.resolve(Direction.IN);
  await flush();
  assert.equal(h.rq.pushes.length, 3, 'the late result produced no second answer');
  assert.deepEqual(bytes(h.pushOf(b)?.data), [0, Direction.IN]);
  h.dev.close();
});

test('backend failures answer ERR: BackendError, FabricError, an out-of-range value, a synchronous throw', async () => {
  const backend = new ScriptedBackend(4);
  const h = harness(backend);
  const a = h.request(T.GET_VALUE, 0);
  const b = h.request(T.SET_VALUE, 1, 1);
  const c = h.request(T.GET_DIRECTION, 2);
  await flush();
  const [pa, pb, pc] = backend.pending();
  pa?.reject(new BackendError('redis down'));
  pb?.reject(new FabricError(ErrorCode.UNAVAILABLE, 'no service'));
  pc?.resolve(300);
  await flush();
  for (const x of [a, b, c]) assert.deepEqual(bytes(h.pushOf(x)?.data), [1, 0]);
  backend.autoResolve = () => {
    throw new Error('sync throw');
  };
  const d = h.request(T.GET_VALUE, 3);
  await flush();
  assert.deepEqual(bytes(h.pushOf(d)?.data), [1, 0]);
  assert.ok(h.requests.every((r) => r.outcome === 'err'));
  h.dev.close();
});

test('SET_IRQ_TYPE without F_IRQ is answered ERR without asking the backend', async () => {
  const backend = new ScriptedBackend(2);
  const h = harness(backend, { irq: false });
  assert.equal(h.dev.irqEnabled, false);
  const c = h.request(T.SET_IRQ_TYPE, 0, IrqType.EDGE_RISING);
  await flush();
  assert.deepEqual(bytes(h.pushOf(c)?.data), [1, 0]);
  assert.equal(backend.callLog.length, 0);
  h.dev.close();
});

test('pop() throwing VirtqueueError marks the device broken; nothing escapes kick()', async () => {
  const backend = new ScriptedBackend(2);
  backend.autoResolve = () => 1;
  const h = harness(backend);
  const before = h.request(T.GET_VALUE, 0);
  h.rq.addBroken();
  h.rq.add(encodeRequest({ type: T.GET_VALUE, gpio: 0, value: 0 }), 2);
  assert.doesNotThrow(() => h.dev.kick(0));
  assert.match(h.dev.broken ?? '', /VirtqueueError/);
  assert.deepEqual(h.broken.map((b) => b.queue), [0]);
  assert.equal(h.rq.availableCount, 1, 'processing of that queue stopped');
  assert.doesNotThrow(() => h.dev.kick(0));
  assert.equal(h.rq.availableCount, 1);
  await flush();
  assert.equal(h.pushOf(before), undefined, 'no push to a broken queue');
  assert.ok(h.logs.some((l) => l.level === 'error'));
  // Any other exception type from pop() is contained as well.
  const h2 = harness(new ScriptedBackend(1));
  h2.rq.addBroken(new TypeError('boom'));
  assert.doesNotThrow(() => h2.dev.kick(0));
  assert.ok(h2.dev.broken !== null);
  // reset() clears the broken state; a fresh queue works.
  h.dev.reset();
  assert.equal(h.dev.broken, null);
  const q = new FakeVirtqueue(0);
  h.dev.startQueue(q);
  q.add(encodeRequest({ type: T.GET_VALUE, gpio: 1, value: 0 }), 2);
  h.dev.kick(0);
  await flush();
  assert.deepEqual(bytes(q.pushes[0]?.data), [0, 1]);
  h.dev.close();
  h2.dev.close();
});

test('a stopped queue gets no pushes for requests still in flight; a restarted queue is served', async () => {
  const backend = new ScriptedBackend(2);
  const h = harness(backend);
  const a = h.request(T.GET_VALUE, 0);
  await flush();
  h.dev.stopQueue(0);
  backend.pending()[0]?.resolve(1);
  await flush();
  assert.equal(h.pushOf(a), undefined);
  assert.equal(h.requests.at(-1)?.outcome, 'dropped');
  const q = new FakeVirtqueue(0);
  h.dev.startQueue(q);
  q.add(encodeRequest({ type: T.GET_VALUE, gpio: 0, value: 0 }), 2);
  h.dev.kick(0);
  await flush();
  backend.pending()[0]?.resolve(1);
  await flush();
  assert.deepEqual(bytes(q.pushes[0]?.data), [0, 1]);
  h.dev.close();
});

test('startQueue re-scans the ring (requests posted before the queue was enabled are served)', async () => {
  const backend = new StandaloneBackend({ ngpio: 1, bias: Pull.UP });
  const dev = new GpioDevice({ backend });
  const q = new FakeVirtqueue(0);
  q.add(encodeRequest({ type: T.GET_VALUE, gpio: 0, value: 0 }), 2);
  dev.startQueue(q);
  await flush();
  assert.deepEqual(bytes(q.pushes[0]?.data), [0, 1]);
  // Calling startQueue again with the same queue is a re-scan, not a restart.
  q.add(encodeRequest({ type: T.GET_DIRECTION, gpio: 0, value: 0 }), 2);
  dev.startQueue(q);
  await flush();
  assert.equal(q.pushes.length, 2);
  dev.close();
});

test('a full ring is drained in bounded slices; every request is answered', async () => {
  const backend = new StandaloneBackend({ ngpio: 2 });
  const h = harness(backend, { queueSize: 4 });
  const chains = Array.from({ length: 11 }, (_, i) => h.rq.add(encodeRequest({ type: T.GET_VALUE, gpio: i % 2, value: 0 }), 2));
  h.dev.kick(0);
  assert.ok(h.rq.availableCount > 0, 'one kick does not take more than a ring per turn');
  await flush(10);
  for (const c of chains) assert.equal(h.pushOf(c)?.usedLength, 2);
  h.dev.close();
});

test('a throwing metrics hook does not disturb the device', async () => {
  const backend = new StandaloneBackend({ ngpio: 1 });
  const dev = new GpioDevice({
    backend,
    hooks: {
      onRequest() {
        throw new Error('metrics bug');
      },
    },
  });
  const q = new FakeVirtqueue(0);
  dev.startQueue(q);
  q.add(encodeRequest({ type: T.GET_VALUE, gpio: 0, value: 0 }), 2);
  dev.kick(0);
  await flush();
  assert.equal(q.pushes.length, 1);
  dev.close();
});

test('close() detaches from the backend events', () => {
  const backend = new ScriptedBackend(1);
  const dev = new GpioDevice({ backend });
  assert.equal(backend.listenerCount, 1);
  dev.close();
  assert.equal(backend.listenerCount, 0);
});

test('bad construction options are refused', () => {
  assert.throws(() => new GpioDevice({ backend: new ScriptedBackend(1), requestDeadlineMs: 0 }), RangeError);
  assert.throws(() => new GpioDevice({ backend: new ScriptedBackend(2, ['x', 'x']) }));
});

test('flushQueue(requestq) answers every in-flight request ERR now; late results are ignored', async () => {
  const backend = new ScriptedBackend(2);
  const h = harness(backend);
  const a = h.request(T.GET_VALUE, 0);
  const b = h.request(T.SET_VALUE, 0, 1); // waits behind a: never reaches the backend
  const c = h.request(T.GET_VALUE, 1);
  await flush();
  h.dev.flushQueue(0);
  assert.deepEqual(h.rq.pushes.map((p) => p.chain), [a, b, c]);
  for (const x of [a, b, c]) assert.deepEqual(bytes(h.pushOf(x)?.data), [1, 0]);
  for (const p of backend.pending()) p.resolve(1);
  await flush();
  assert.equal(h.rq.pushes.length, 3, 'no second answer');
  assert.deepEqual(backend.callLog.map((x) => [x.op, x.offset]), [['getValue', 0], ['getValue', 1]]);
  h.dev.flushQueue(0);
  assert.equal(h.rq.pushes.length, 3, 'nothing left to flush');
  h.dev.close();
});
