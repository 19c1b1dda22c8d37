/**
 * Target "virtqueue": the split-virtqueue walker (SplitQueue) over hostile guest memory.
 *
 * Generated: 1..3 memory regions (random guest-physical addresses up to the top of the
 * u64 space, adjacent or apart, random mmap offsets with canary bytes before and after
 * each region in its mapping, random contents), a queue of size 1..64 whose rings lie
 * inside, across or outside the memory, random descriptors (addresses inside / straddling
 * / outside / near 2^64, lengths 0, small, huge, flags incl. INDIRECT/NEXT/WRITE, random
 * next indices), up to two indirect tables in guest memory, random avail ring heads and
 * avail.idx, EVENT_IDX and INDIRECT_DESC on or off, a random readable-bytes limit.
 *
 * Properties, per pop():
 *  - it returns null, a chain, or throws VirtqueueError; nothing else;
 *  - a chain equals what an independent reference walk of the spec's rules computes:
 *    the same head, the same readable bytes, the same writable length; an error happens
 *    exactly when the reference walk finds a violation; a failing pop fails again;
 *  - the work is bounded: memory translations per pop ≤ 2 × (queue size + largest
 *    possible indirect table) + 8, so a looping chain cannot hang the agent;
 *  - writing a full chain and pushing it changes guest memory only in the chain's
 *    writable buffers and the used ring (plus avail_event), never a canary byte outside
 *    the regions, and publishes (head, length) at the right used slot.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestMemory } from '../../../services/agent/src/virtio/memory.ts';
import type { GuestMemoryRegion, MemorySlice } from '../../../services/agent/src/virtio/memory.ts';
import { DescFlag, MAX_INDIRECT_ENTRIES, SplitQueue } from '../../../services/agent/src/virtio/split-queue.ts';
import { VirtqueueError } from '../../../services/agent/src/virtio/types.ts';
import type { DescriptorChain } from '../../../services/agent/src/virtio/types.ts';
import { U64_MAX } from '../target.ts';
import type { FuzzTarget } from '../target.ts';

const CANARY = 0xa5;
const UVA_DELTA = 0x7f00_0000_0000n;

interface Region {
  readonly gpa: bigint;
  readonly uva: bigint;
  readonly size: number;
  readonly mmapOffset: number;
  readonly buffer: ArrayBuffer;
  readonly bytes: Uint8Array; // the region's bytes inside buffer
}

/** A GuestMemory that counts translations (a deterministic bound on work per pop). */
class CountingMemory extends GuestMemory {
  translations = 0;
  override translateGuestPhysical(addr: bigint, length: number): MemorySlice {
    this.translations++;
    return super.translateGuestPhysical(addr, length);
  }
}

const regionArb = fc.record({
  gap: fc.oneof(fc.constant(0), fc.nat(0x2000), fc.bigInt({ min: 0n, max: 1n << 40n })),
  size: fc.integer({ min: 16, max: 8192 }),
  mmapOffset: fc.oneof(fc.constant(0), fc.nat(64)),
  tail: fc.nat(32),
  fill: fc.nat(),
});

const addrChoiceArb = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('inside' as const), region: fc.nat(2), at: fc.double({ min: 0, max: 1, noNaN: true }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('indirect' as const), table: fc.nat(1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('straddle' as const), region: fc.nat(2), back: fc.integer({ min: 1, max: 16 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('raw' as const), addr: fc.oneof(fc.bigInt({ min: 0n, max: U64_MAX }), fc.bigInt({ min: U64_MAX - 64n, max: U64_MAX })) }) },
);
const lenArb = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 1, max: 64 }) },
  { weight: 1, arbitrary: fc.constant(0) },
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 8 }).map((n) => n * 16) },
  { weight: 1, arbitrary: fc.oneof(fc.nat(), fc.constant(0xffffffff), fc.integer({ min: 0xfffffff0, max: 0xffffffff })) },
);
const flagsArb = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(0, DescFlag.NEXT, DescFlag.WRITE, DescFlag.NEXT | DescFlag.WRITE) },
  { weight: 2, arbitrary: fc.constant(DescFlag.INDIRECT) },
  { weight: 2, arbitrary: fc.nat(7) },
  { weight: 1, arbitrary: fc.nat(0xffff) },
);
const descArb = fc.record({ addr: addrChoiceArb, len: lenArb, flags: flagsArb, next: fc.oneof({ weight: 4, arbitrary: fc.nat(7) }, { weight: 1, arbitrary: fc.nat(70) }) });

const inputArb = fc.record({
  regions: fc.array(regionArb, { minLength: 1, maxLength: 3 }),
  topOfSpace: fc.boolean(),
  log2Size: fc.nat(6),
  ringPlacement: fc.oneof(
    { weight: 8, arbitrary: fc.record({ kind: fc.constant('good' as const), region: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.nat(2) }), slack: fc.oneof(fc.constant(0), fc.nat(64)) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('random' as const), desc: addrChoiceArb, avail: addrChoiceArb, used: addrChoiceArb }) },
  ),
  descs: fc.array(descArb, { minLength: 64, maxLength: 64 }),
  tables: fc.array(fc.record({ region: fc.nat(2), at: fc.double({ min: 0, max: 1, noNaN: true }), descs: fc.array(descArb, { minLength: 1, maxLength: 8 }) }), { minLength: 2, maxLength: 2 }),
  heads: fc.array(fc.oneof({ weight: 8, arbitrary: fc.nat(63) }, { weight: 1, arbitrary: fc.nat(0xffff) }), { minLength: 64, maxLength: 64 }),
  base: fc.oneof(fc.constant(0), fc.nat(0xffff), fc.integer({ min: 0xfff0, max: 0xffff })),
  pending: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: 4 }) }, { weight: 1, arbitrary: fc.nat(0xffff) }),
  eventIdx: fc.boolean(),
  indirectDesc: fc.boolean(),
  maxReadable: fc.option(fc.integer({ min: 1, max: 256 }), { nil: undefined }),
  pops: fc.integer({ min: 1, max: 12 }),
});
type Input = typeof inputArb extends fc.Arbitrary<infer T> ? T : never;

/** Deterministic filler (xorshift32). */
function fillRandom(bytes: Uint8Array, seed: number): void {
  let x = seed | 1;
  for (let i = 0; i < bytes.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x & 0xff;
  }
}

function buildRegions(input: Input): Region[] {
  const specs = input.regions;
  const sizes = specs.map((r, i) => (i === 0 ? Math.max(r.size, 4096) : r.size));
  const total = specs.reduce((n, r, i) => n + BigInt(r.gap) + BigInt(sizes[i] as number), 0n);
  // Either from a low address, or ending exactly at the top of the u64 space.
  let gpa = input.topOfSpace ? U64_MAX + 1n - total : 0x1000n;
  const out: Region[] = [];
  specs.forEach((r, i) => {
    gpa += BigInt(r.gap);
    const size = sizes[i] as number;
    const buffer = new ArrayBuffer(r.mmapOffset + size + r.tail);
    new Uint8Array(buffer).fill(CANARY);
    const bytes = new Uint8Array(buffer, r.mmapOffset, size);
    fillRandom(bytes, r.fill);
    out.push({ gpa, uva: (gpa + UVA_DELTA * BigInt(i + 1)) & U64_MAX, size, mmapOffset: r.mmapOffset, buffer, bytes });
    gpa += BigInt(size);
  });
  return out;
}

/** Reference translation: `len` bytes at `addr` wholly inside one region (gpa or uva). */
function refSlice(regions: readonly Region[], addr: bigint, len: number, space: 'gpa' | 'uva'): Uint8Array | null {
  for (const r of regions) {
    const start = space === 'gpa' ? r.gpa : r.uva;
    if (addr >= start && addr + BigInt(len) <= start + BigInt(r.size)) {
      const off = Number(addr - start);
      return r.bytes.subarray(off, off + len);
    }
  }
  return null;
}

function resolveAddr(c: Input['descs'][number]['addr'], regions: readonly Region[], tableAddrs: readonly bigint[], align = 1n): bigint {
  const pick = (i: number): Region => regions[i % regions.length] as Region;
  switch (c.kind) {
    case 'inside': {
      const r = pick(c.region);
      const off = BigInt(Math.floor(c.at * r.size));
      return r.gpa + (off / align) * align;
    }
    case 'indirect':
      return tableAddrs[c.table % tableAddrs.length] as bigint;
    case 'straddle': {
      const r = pick(c.region);
      const end = r.gpa + BigInt(r.size);
      return end - BigInt(Math.min(c.back, r.size));
    }
    case 'raw':
      return c.addr;
  }
}

function writeDesc(target: Uint8Array, i: number, d: { addr: bigint; len: number; flags: number; next: number }): void {
  if (target.length < 16 * (i + 1)) return;
  const dv = new DataView(target.buffer, target.byteOffset + 16 * i, 16);
  dv.setBigUint64(0, d.addr, true);
  dv.setUint32(8, d.len >>> 0, true);
  dv.setUint16(12, d.flags & 0xffff, true);
  dv.setUint16(14, d.next & 0xffff, true);
}

interface RefChain {
  readonly readable: Uint8Array;
  readonly writable: readonly { addr: bigint; len: number }[];
  readonly writableLength: number;
}

/** The spec's chain rules, walked independently over the reference memory. */
function refWalk(regions: readonly Region[], ringDesc: Uint8Array, size: number, head: number, o: { indirectDesc: boolean; maxReadable: number }): RefChain | string {
  let table = ringDesc;
  let tableSize = size;
  let indirect = false;
  let i = head;
  let seen = 0;
  const readable: Uint8Array[] = [];
  const writable: { addr: bigint; len: number }[] = [];
  let rlen = 0;
  let wlen = 0;
  for (;;) {
    if (seen >= tableSize) return 'loop or over-long chain';
    seen++;
    const dv = new DataView(table.buffer, table.byteOffset + 16 * i, 16);
    const addr = dv.getBigUint64(0, true);
    const len = dv.getUint32(8, true);
    const flags = dv.getUint16(12, true);
    const next = dv.getUint16(14, true);
    if (flags & DescFlag.INDIRECT) {
      if (!o.indirectDesc || indirect || i !== head || flags & DescFlag.NEXT) return 'bad indirect use';
      if (len === 0 || len % 16 !== 0 || len / 16 > MAX_INDIRECT_ENTRIES || addr % 16n !== 0n) return 'bad indirect table';
      const t = refSlice(regions, addr, len, 'gpa');
      if (t === null) return 'indirect table outside memory';
      table = t;
      tableSize = len / 16;
      indirect = true;
      seen = 0;
      i = 0;
      continue;
    }
    if (len === 0) return 'zero length';
    const s = refSlice(regions, addr, len, 'gpa');
    if (s === null) return 'buffer outside memory';
    if (flags & DescFlag.WRITE) {
      wlen += len;
      if (wlen > 0xffffffff) return 'writable over 4 GiB';
      writable.push({ addr, len });
    } else {
      if (writable.length > 0) return 'readable after writable';
      rlen += len;
      if (rlen > o.maxReadable) return 'readable over the limit';
      readable.push(s.slice());
    }
    if (!(flags & DescFlag.NEXT)) break;
    if (next >= tableSize) return 'next out of range';
    i = next;
  }
  const data = new Uint8Array(rlen);
  let at = 0;
  for (const b of readable) {
    data.set(b, at);
    at += b.length;
  }
  return { readable: data, writable, writableLength: wlen };
}

function run(input: Input): void {
  const regions = buildRegions(input);
  const size = 1 << input.log2Size;
  const maxReadable = input.maxReadable ?? 1 << 20;

  // Indirect tables: 16-aligned places in guest memory.
  const tableAddrs = input.tables.map((t) => resolveAddr({ kind: 'inside', region: t.region, at: t.at }, regions, [0n], 16n));

  // Ring placement (front-end virtual addresses).
  let descUva: bigint;
  let availUva: bigint;
  let usedUva: bigint;
  const extra = input.eventIdx ? 2 : 0;
  if (input.ringPlacement.kind === 'good') {
    // region 0 is at least 4 KiB: rings of up to 64 entries fit
    const r = regions[input.ringPlacement.region === 0 ? 0 : input.ringPlacement.region % regions.length] as Region;
    const slack = BigInt(input.ringPlacement.slack) * 16n;
    descUva = ((r.uva + slack + 15n) / 16n) * 16n;
    availUva = descUva + BigInt(16 * size);
    usedUva = ((availUva + BigInt(4 + 2 * size + extra) + 3n) / 4n) * 4n;
  } else {
    const toUva = (a: bigint): bigint => {
      for (const [k, r] of regions.entries()) if (a >= r.gpa && a < r.gpa + BigInt(r.size)) return a - r.gpa + (regions[k] as Region).uva;
      return a;
    };
    descUva = toUva(resolveAddr(input.ringPlacement.desc, regions, tableAddrs));
    availUva = toUva(resolveAddr(input.ringPlacement.avail, regions, tableAddrs));
    usedUva = toUva(resolveAddr(input.ringPlacement.used, regions, tableAddrs));
  }
  const ringDesc = refSlice(regions, descUva, 16 * size, 'uva');
  const ringAvail = refSlice(regions, availUva, 4 + 2 * size + extra, 'uva');
  const ringUsed = refSlice(regions, usedUva, 4 + 8 * size + extra, 'uva');
  const ringsOk = ringDesc !== null && ringAvail !== null && ringUsed !== null && descUva % 16n === 0n && availUva % 2n === 0n && usedUva % 4n === 0n;

  // Fill rings and tables (tables first: a ring may overlap one, the ring wins).
  input.tables.forEach((t, k) => {
    const at = refSlice(regions, tableAddrs[k] as bigint, 16 * t.descs.length, 'gpa');
    if (at === null) return;
    t.descs.forEach((d, i) => writeDesc(at, i, { ...d, addr: resolveAddr(d.addr, regions, tableAddrs), next: d.next % 10 }));
  });
  if (ringDesc !== null) for (let i = 0; i < size; i++) writeDesc(ringDesc, i, { ...(input.descs[i] as Input['descs'][number]), addr: resolveAddr((input.descs[i] as Input['descs'][number]).addr, regions, tableAddrs) });
  if (ringAvail !== null) {
    const dv = new DataView(ringAvail.buffer, ringAvail.byteOffset, ringAvail.byteLength);
    for (let s = 0; s < size; s++) dv.setUint16(4 + 2 * s, (input.heads[s] as number) % (input.heads[s]! > 63 ? 0x10000 : Math.max(size, 1) + 1), true);
    dv.setUint16(2, (input.base + input.pending) & 0xffff, true);
  }

  const memory = new CountingMemory(
    regions.map((r): GuestMemoryRegion => ({ guestPhysAddr: r.gpa, memorySize: BigInt(r.size), userspaceAddr: r.uva, mmapOffset: BigInt(r.mmapOffset), buffer: r.buffer })),
  );
  let notifies = 0;
  let queue: SplitQueue;
  try {
    queue = new SplitQueue({
      index: 0, size, descAddr: descUva, availAddr: availUva, usedAddr: usedUva, memory,
      eventIdx: input.eventIdx, indirectDesc: input.indirectDesc, nextAvailIndex: input.base,
      notify: () => notifies++, fence: () => {}, ...(input.maxReadable === undefined ? {} : { maxReadable: input.maxReadable }),
    });
  } catch (e) {
    assert.ok(e instanceof VirtqueueError, `SplitQueue constructor threw ${String(e)}`);
    assert.ok(!ringsOk, `rings inside memory were refused: ${(e as Error).message}`);
    return;
  }
  assert.ok(ringsOk, 'SplitQueue accepted rings outside guest memory or misaligned');

  const before = regions.map((r) => r.bytes.slice());
  const canaries = regions.map((r) => new Uint8Array(r.buffer).slice());
  const allowed: { addr: bigint; len: number }[] = [];
  const usedGpaRegion = regions.find((r) => usedUva >= r.uva && usedUva < r.uva + BigInt(r.size)) as Region;
  allowed.push({ addr: usedGpaRegion.gpa + (usedUva - usedGpaRegion.uva), len: 4 + 8 * size + extra });

  const maxTableEntries = Math.floor(regions.reduce((n, r) => n + r.size, 0) / 16);
  const workBound = 2 * (size + Math.min(maxTableEntries, MAX_INDIRECT_ENTRIES)) + 8;
  const availDv = new DataView((ringAvail as Uint8Array).buffer, (ringAvail as Uint8Array).byteOffset, (ringAvail as Uint8Array).byteLength);
  const usedDv = new DataView((ringUsed as Uint8Array).buffer, (ringUsed as Uint8Array).byteOffset, (ringUsed as Uint8Array).byteLength);
  let last = input.base;
  for (let n = 0; n < input.pops; n++) {
    // Reference expectation for this pop, computed before the device touches memory.
    const availIdx = availDv.getUint16(2, true);
    const pending = (availIdx - last) & 0xffff;
    let expected: RefChain | string | null;
    let head = -1;
    if (pending === 0) expected = null;
    else if (pending > size) expected = 'avail index too far ahead';
    else {
      head = availDv.getUint16(4 + 2 * (last % size), true);
      expected = head >= size ? 'head out of range' : refWalk(regions, ringDesc as Uint8Array, size, head, { indirectDesc: input.indirectDesc, maxReadable });
    }
    memory.translations = 0;
    let chain: DescriptorChain | null;
    try {
      chain = queue.pop();
    } catch (e) {
      assert.ok(e instanceof VirtqueueError, `pop threw ${String(e)}`);
      assert.ok(typeof expected === 'string', `pop failed (${e.message}) where the reference walk found a valid chain`);
      assert.ok(memory.translations <= workBound, `${memory.translations} translations in one pop (bound ${workBound})`);
      assert.throws(() => queue.pop(), VirtqueueError, 'a failing pop fails again');
      break;
    } finally {
      assert.ok(memory.translations <= 2 * workBound, `${memory.translations} translations (bound ${workBound})`);
    }
    assert.ok(memory.translations <= workBound, `${memory.translations} translations in one pop (bound ${workBound})`);
    if (chain === null) {
      assert.equal(expected, null, `pop returned null, the reference expected ${typeof expected === 'string' ? expected : 'a chain'}`);
      break;
    }
    assert.ok(expected !== null && typeof expected !== 'string', `pop returned a chain, the reference says: ${String(expected)}`);
    assert.equal(chain.head, head);
    assert.deepEqual(chain.readable, expected.readable);
    assert.equal(chain.writableLength, expected.writableLength);
    last = (last + 1) & 0xffff;
    assert.equal(queue.nextAvailIndex, last);
    // Fill the whole writable part, then publish it.
    const data = new Uint8Array(chain.writableLength);
    fillRandom(data, head * 977 + n);
    chain.write(data);
    const usedIdxBefore = queue.usedIndex;
    queue.push(chain, data.length);
    queue.notify();
    assert.equal(usedDv.getUint32(4 + 8 * (usedIdxBefore % size), true), head);
    assert.equal(usedDv.getUint32(8 + 8 * (usedIdxBefore % size), true), data.length);
    assert.equal(usedDv.getUint16(2, true), (usedIdxBefore + 1) & 0xffff);
    // The bytes landed in the reference segments, in order (a later segment that aliases
    // an earlier one wins; the used ring, written after the data, wins over both).
    const expectByte = new Map<bigint, number>();
    let at = 0;
    for (const s of expected.writable) {
      for (let i = 0; i < s.len; i++) expectByte.set(s.addr + BigInt(i), data[at + i] as number);
      at += s.len;
      allowed.push(s);
    }
    const usedRange = allowed[0] as { addr: bigint; len: number };
    for (const [a, v] of expectByte) {
      if (a >= usedRange.addr && a < usedRange.addr + BigInt(usedRange.len)) continue;
      assert.equal((refSlice(regions, a, 1, 'gpa') as Uint8Array)[0], v, `writable byte at 0x${a.toString(16)}`);
    }
    assert.throws(() => queue.push(chain as DescriptorChain, 0), VirtqueueError, 'a chain pushed twice');
  }

  // Nothing outside the regions changed; inside, only allowed ranges changed.
  regions.forEach((r, k) => {
    const all = new Uint8Array(r.buffer);
    const was = canaries[k] as Uint8Array;
    for (let i = 0; i < r.mmapOffset; i++) assert.equal(all[i], was[i], 'canary before a region');
    for (let i = r.mmapOffset + r.size; i < all.length; i++) assert.equal(all[i], was[i], 'canary after a region');
    const prev = before[k] as Uint8Array;
    for (let i = 0; i < r.size; i++) {
      if (r.bytes[i] === prev[i]) continue;
      const a = r.gpa + BigInt(i);
      assert.ok(allowed.some((s) => a >= s.addr && a < s.addr + BigInt(s.len)), `device wrote guest byte 0x${a.toString(16)} outside used ring and writable buffers`);
    }
  });
}

export const virtqueueTarget: FuzzTarget = {
  name: 'virtqueue',
  description: 'random guest memory layouts, descriptor tables, indirect tables and avail rings -> SplitQueue.pop()',
  weight: 20,
  testRuns: 1500,
  property: () => fc.property(inputArb, run),
};
