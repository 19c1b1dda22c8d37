import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestMemory } from './memory.ts';
import { SplitQueue, vringNeedEvent } from './split-queue.ts';
import { VirtqueueError } from './types.ts';
import { DriverRing, GuestAllocator, GuestRam, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, layoutRing } from '../../../../test/support/virtio-driver.ts';

const GPA = 0x100000n;
const UVA_DELTA = 0x7f0000000000n; // front-end virtual = gpa + delta
const RAM = 0x20000;

interface Rig {
  readonly driver: DriverRing;
  readonly queue: SplitQueue;
  readonly ram: GuestRam;
  notifies: number;
  fences: number;
  onFence: (() => void) | null;
}

function rig(opts: { size?: number; eventIdx?: boolean; indirect?: boolean; start?: number; maxReadable?: number } = {}): Rig {
  const size = opts.size ?? 8;
  const buffer = new ArrayBuffer(RAM);
  const ram = new GuestRam([{ gpa: GPA, bytes: new Uint8Array(buffer) }]);
  const layout = layoutRing(size, GPA);
  const allocator = new GuestAllocator(layout.end, BigInt(RAM) - (layout.end - GPA));
  const driver = new DriverRing({ ram, size, layout, allocator, eventIdx: opts.eventIdx ?? false, startIndex: opts.start ?? 0 });
  const memory = new GuestMemory([{ guestPhysAddr: GPA, memorySize: BigInt(RAM), userspaceAddr: GPA + UVA_DELTA, mmapOffset: 0n, buffer }]);
  const r: Rig = {
    driver,
    ram,
    notifies: 0,
    fences: 0,
    onFence: null,
    queue: undefined as unknown as SplitQueue,
  };
  (r as { queue: SplitQueue }).queue = new SplitQueue({
    index: 0,
    size,
    descAddr: layout.desc + UVA_DELTA,
    availAddr: layout.avail + UVA_DELTA,
    usedAddr: layout.used + UVA_DELTA,
    memory,
    eventIdx: opts.eventIdx ?? false,
    indirectDesc: opts.indirect ?? true,
    nextAvailIndex: opts.start ?? 0,
    notify: () => r.notifies++,
    fence: () => {
      r.fences++;
      r.onFence?.();
    },
    ...(opts.maxReadable === undefined ? {} : { maxReadable: opts.maxReadable }),
  });
  return r;
}

const bytes = (...v: number[]): Uint8Array => Uint8Array.from(v);
const vqErr = (re: RegExp) => (e: unknown): boolean => e instanceof VirtqueueError && re.test(e.message);

describe('SplitQueue', () => {
  it('pops a direct chain, copies readable bytes, scatters writes, publishes used', () => {
    const r = rig();
    r.driver.addChain({ readable: [bytes(1, 2, 3), bytes(4, 5)], writable: [1, 3] }, 'req');
    assert.equal(r.queue.pop(), null, 'nothing published yet');
    r.driver.publish();
    const c = r.queue.pop();
    assert.ok(c !== null);
    assert.deepEqual([...c.readable], [1, 2, 3, 4, 5]);
    assert.equal(c.writableLength, 4);
    c.write(bytes(9, 8, 7));
    assert.throws(() => c.write(new Uint8Array(5)), VirtqueueError);
    assert.equal(r.queue.pop(), null);
    r.queue.push(c, 3);
    assert.throws(() => r.queue.push(c, 3), vqErr(/twice/));
    r.queue.notify();
    assert.equal(r.notifies, 1);
    const used = r.driver.takeUsed();
    assert.equal(used.length, 1);
    assert.deepEqual([used[0]?.len, used[0]?.token, [...(used[0]?.written ?? [])]], [3, 'req', [9, 8, 7, 0]]);
    assert.ok(r.fences > 0);
    assert.equal(r.queue.nextAvailIndex, 1);
  });

  it('pops indirect chains', () => {
    const r = rig();
    r.driver.addChain({ readable: [bytes(1, 0, 2, 0, 0, 0, 0, 0)], writable: [2], indirect: true });
    r.driver.addChain({ readable: [bytes(7)], writable: [1], indirect: true });
    r.driver.publish();
    const a = r.queue.pop();
    const b = r.queue.pop();
    assert.ok(a !== null && b !== null);
    assert.deepEqual([...a.readable], [1, 0, 2, 0, 0, 0, 0, 0]);
    assert.equal(a.writableLength, 2);
    assert.deepEqual([...b.readable], [7]);
    // complete out of order
    b.write(bytes(1));
    r.queue.push(b, 1);
    a.write(bytes(0, 1));
    r.queue.push(a, 2);
    const used = r.driver.takeUsed();
    assert.deepEqual(used.map((u) => [...u.written]), [[1], [0, 1]]);
  });

  it('handles u16 wraparound of avail and used indices', () => {
    const r = rig({ size: 8, start: 0xfffe });
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 3; i++) r.driver.addChain({ readable: [bytes(round, i)], writable: [1] });
      r.driver.publish();
      const chains = [];
      for (let c = r.queue.pop(); c !== null; c = r.queue.pop()) chains.push(c);
      assert.equal(chains.length, 3);
      for (const c of chains) {
        c.write(bytes(c.readable[1] as number));
        r.queue.push(c, 1);
      }
      assert.deepEqual(r.driver.takeUsed().map((u) => u.written[0]), [0, 1, 2]);
    }
    assert.equal(r.queue.nextAvailIndex, (0xfffe + 15) & 0xffff);
    assert.equal(r.queue.usedIndex, (0xfffe + 15) & 0xffff);
  });

  it('EVENT_IDX: publishes avail_event, signals only when used_event is crossed', () => {
    const r = rig({ eventIdx: true });
    assert.equal(r.queue.pop(), null);
    assert.equal(r.driver.availEvent, 0, 'avail_event published on empty');
    r.driver.addChain({ readable: [bytes(1)], writable: [1] });
    assert.equal(r.driver.publish(), true, 'kick wanted: avail_event 0 crossed');
    const c = r.queue.pop();
    assert.ok(c !== null);
    assert.equal(r.driver.availEvent, 1);
    // driver asks for an interrupt only after 2 more used entries
    r.driver.setUsedEvent(2);
    r.queue.push(c, 1);
    r.queue.notify();
    assert.equal(r.notifies, 1, 'first notify after start always signals');
    r.driver.addChain({ readable: [bytes(2)], writable: [1] });
    r.driver.addChain({ readable: [bytes(3)], writable: [1] });
    r.driver.publish();
    const d = r.queue.pop();
    const e = r.queue.pop();
    assert.ok(d !== null && e !== null);
    r.queue.push(d, 1);
    r.queue.notify();
    assert.equal(r.notifies, 1, 'used.idx 2 does not cross used_event 2');
    r.queue.push(e, 1);
    r.queue.notify();
    assert.equal(r.notifies, 2, 'used.idx 3 crosses used_event 2');
    r.queue.notify();
    assert.equal(r.notifies, 2, 'nothing new: no signal');
    // driver side: no kick needed when avail_event is behind
    r.driver.takeUsed();
    assert.equal(vringNeedEvent(5, 7, 6), false);
    assert.equal(vringNeedEvent(6, 7, 6), true);
    assert.equal(vringNeedEvent(0xffff, 0, 0xffff), true, 'wraps');
  });

  it('EVENT_IDX: a buffer published between the avail_event store and the re-check is not lost', () => {
    const r = rig({ eventIdx: true });
    let fence = 0;
    r.onFence = () => {
      // pop(): fence 1 after loading avail.idx (empty), fence 2 after storing avail_event:
      // the driver publishes right then, having seen no kick request.
      if (++fence === 2) {
        r.driver.addChain({ readable: [bytes(1)], writable: [1] });
        r.driver.publish();
      }
    };
    const c = r.queue.pop();
    assert.ok(c !== null, 'the re-check after the full fence finds the new buffer');
    assert.deepEqual([...c.readable], [1]);
  });

  it('without EVENT_IDX honours avail.flags NO_INTERRUPT', () => {
    const r = rig();
    r.driver.addChain({ readable: [bytes(1)], writable: [1] });
    r.driver.publish();
    const c = r.queue.pop();
    assert.ok(c !== null);
    r.driver.setNoInterrupt(true);
    r.queue.push(c, 1);
    r.queue.notify();
    assert.equal(r.notifies, 0);
    r.driver.setNoInterrupt(false);
    r.queue.notify();
    assert.equal(r.notifies, 1);
  });

  describe('malformed rings throw VirtqueueError', () => {
    const head = (r: Rig, d: { addr: bigint; len: number; flags: number; next: number }, i = 0): void => {
      r.driver.writeDesc(i, d);
      r.driver.setAvailRing(0, i);
      r.driver.setAvailIdx(1);
    };
    const data = GPA + 0x8000n;

    it('addresses outside memory', () => {
      const r = rig();
      head(r, { addr: GPA + BigInt(RAM) - 4n, len: 8, flags: 0, next: 0 });
      assert.throws(() => r.queue.pop(), vqErr(/crosses|outside/));
      const r2 = rig();
      head(r2, { addr: 0xfffffffffffffff0n, len: 0x20, flags: 0, next: 0 });
      assert.throws(() => r2.queue.pop(), vqErr(/outside/));
    });

    it('descriptor loops and over-long chains', () => {
      const r = rig();
      r.driver.writeDesc(0, { addr: data, len: 4, flags: VIRTQ_DESC_F_NEXT, next: 1 });
      head(r, { addr: data, len: 4, flags: VIRTQ_DESC_F_NEXT, next: 0 }, 1);
      assert.throws(() => r.queue.pop(), vqErr(/loop/));
      const self = rig();
      head(self, { addr: data, len: 4, flags: VIRTQ_DESC_F_NEXT, next: 0 });
      assert.throws(() => self.queue.pop(), vqErr(/loop/));
      const far = rig();
      head(far, { addr: data, len: 4, flags: VIRTQ_DESC_F_NEXT, next: 8 });
      assert.throws(() => far.queue.pop(), vqErr(/next index 8/));
    });

    it('readable after writable, zero-length, over-long readable', () => {
      const r = rig();
      r.driver.writeDesc(1, { addr: data, len: 4, flags: 0, next: 0 });
      head(r, { addr: data, len: 4, flags: VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, next: 1 });
      assert.throws(() => r.queue.pop(), vqErr(/readable descriptor after a writable/));
      const z = rig();
      head(z, { addr: data, len: 0, flags: VIRTQ_DESC_F_WRITE, next: 0 });
      assert.throws(() => z.queue.pop(), vqErr(/zero-length/));
      const big = rig({ maxReadable: 16 });
      head(big, { addr: data, len: 17, flags: 0, next: 0 });
      assert.throws(() => big.queue.pop(), vqErr(/readable length/));
    });

    it('bad indirect tables', () => {
      const nested = rig();
      nested.ram.dataView(data, 16).setUint16(12, VIRTQ_DESC_F_INDIRECT, true);
      nested.ram.dataView(data, 16).setUint32(8, 16, true);
      nested.ram.dataView(data, 16).setBigUint64(0, data, true);
      head(nested, { addr: data, len: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
      assert.throws(() => nested.queue.pop(), vqErr(/nested/));
      const withNext = rig();
      head(withNext, { addr: data, len: 16, flags: VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, next: 1 });
      assert.throws(() => withNext.queue.pop(), vqErr(/INDIRECT combined with NEXT/));
      const badLen = rig();
      head(badLen, { addr: data, len: 24, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
      assert.throws(() => badLen.queue.pop(), vqErr(/multiple of 16/));
      const notNegotiated = rig({ indirect: false });
      head(notNegotiated, { addr: data, len: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
      assert.throws(() => notNegotiated.queue.pop(), vqErr(/not negotiated/));
      const loop = rig();
      const t = loop.ram.dataView(data, 32);
      t.setBigUint64(0, data + 0x100n, true);
      t.setUint32(8, 4, true);
      t.setUint16(12, VIRTQ_DESC_F_NEXT, true);
      t.setUint16(14, 1, true);
      t.setBigUint64(16, data + 0x100n, true);
      t.setUint32(24, 4, true);
      t.setUint16(28, VIRTQ_DESC_F_NEXT, true);
      t.setUint16(30, 0, true);
      head(loop, { addr: data, len: 32, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
      assert.throws(() => loop.queue.pop(), vqErr(/loop/));
    });

    it('avail.idx jumping further than the queue size, and head out of range', () => {
      const r = rig();
      r.driver.setAvailIdx(9);
      assert.throws(() => r.queue.pop(), vqErr(/ahead/));
      const h = rig();
      h.driver.setAvailRing(0, 8);
      h.driver.setAvailIdx(1);
      assert.throws(() => h.queue.pop(), vqErr(/head index 8/));
    });

    it('rings outside memory or misaligned at construction', () => {
      const buffer = new ArrayBuffer(0x1000);
      const memory = new GuestMemory([{ guestPhysAddr: 0n, memorySize: 0x1000n, userspaceAddr: 0x1000n, mmapOffset: 0n, buffer }]);
      const base = { index: 0, size: 256, memory, eventIdx: false, indirectDesc: false, nextAvailIndex: 0, notify: () => {}, fence: () => {} };
      assert.throws(() => new SplitQueue({ ...base, descAddr: 0x1000n, availAddr: 0x1800n, usedAddr: 0x1a00n }), vqErr(/not in guest memory/));
      assert.throws(() => new SplitQueue({ ...base, size: 8, descAddr: 0x1008n, availAddr: 0x1800n, usedAddr: 0x1a00n }), vqErr(/aligned/));
      assert.throws(() => new SplitQueue({ ...base, size: 6, descAddr: 0x1000n, availAddr: 0x1800n, usedAddr: 0x1a00n }), vqErr(/power of two/));
      assert.ok(new SplitQueue({ ...base, size: 8, descAddr: 0x1000n, availAddr: 0x1800n, usedAddr: 0x1a00n }));
    });
  });

  it('after detach: pop returns null, push/write/notify of old chains do nothing', () => {
    const r = rig();
    r.driver.addChain({ readable: [bytes(1)], writable: [2] });
    r.driver.publish();
    const c = r.queue.pop();
    assert.ok(c !== null);
    r.queue.detach();
    c.write(bytes(5, 5));
    r.queue.push(c, 2);
    r.queue.notify();
    assert.equal(r.driver.usedIdx, 0);
    assert.equal(r.notifies, 0);
    assert.equal(r.queue.pop(), null);
    assert.throws(() => r.queue.push({ head: 0, readable: new Uint8Array(0), writableLength: 0, write: () => {} }, 0), vqErr(/does not belong/));
  });

  it('property: random descriptor tables and avail rings only ever produce VirtqueueError', () => {
    const descArb = fc.record({
      addr: fc.oneof(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.bigInt({ min: GPA, max: GPA + BigInt(RAM) })),
      len: fc.oneof(fc.nat(64), fc.nat()),
      flags: fc.nat(7),
      next: fc.nat(10),
    });
    fc.assert(
      fc.property(fc.array(descArb, { minLength: 8, maxLength: 8 }), fc.array(fc.nat(9), { minLength: 8, maxLength: 8 }), fc.nat(0xffff), fc.boolean(), (descs, ring, idx, eventIdx) => {
        const r = rig({ eventIdx });
        descs.forEach((d, i) => r.driver.writeDesc(i, d));
        ring.forEach((h, i) => r.driver.setAvailRing(i, h));
        // indirect tables pointing at random memory inside RAM: fill some RAM with noise
        r.ram.view(GPA + 0x8000n, 0x100).forEach((_, i, a) => (a[i] = (i * 37) & 0xff));
        r.driver.setAvailIdx(idx);
        for (let n = 0; n < 10; n++) {
          try {
            const c = r.queue.pop();
            if (c === null) break;
            c.write(new Uint8Array(Math.min(c.writableLength, 4)));
            r.queue.push(c, Math.min(c.writableLength, 4));
            r.queue.notify();
          } catch (e) {
            assert.ok(e instanceof VirtqueueError, String(e));
          }
        }
      }),
      { seed: 42, numRuns: 2000 },
    );
  });
});
