/**
 * The device side of a virtio split virtqueue (virtio 1.2 §2.7) over guest memory.
 * The ring lives in memory the guest can change at any moment: every index, length and
 * address is validated, chains are bounded, and a malformed chain throws VirtqueueError
 * with the reason (the device should then mark itself broken).
 */
import { AddressSpace, GuestMemory, GuestMemoryError } from './memory.ts';
import { VirtqueueError } from './types.ts';
import type { DescriptorChain, Virtqueue } from './types.ts';

/** Descriptor flags. */
export const DescFlag = { NEXT: 1, WRITE: 2, INDIRECT: 4 } as const;
/** avail.flags: the driver does not want interrupts (ignored with EVENT_IDX). */
export const AVAIL_F_NO_INTERRUPT = 1;
/** used.flags: the device does not want kicks. */
export const USED_F_NO_NOTIFY = 1;

const DESC_SIZE = 16;
/** Readable bytes copied out of one chain at most (the GPIO device needs 8). */
export const DEFAULT_MAX_READABLE = 1 << 20;
/** Entries of one indirect table at most. */
export const MAX_INDIRECT_ENTRIES = 32768;
const U32_MAX = 0xffffffff;

/** `vring_need_event`: should the other side be notified, given its event index? */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

export interface SplitQueueOptions {
  readonly index: number;
  /** Queue size: a power of two, 1 … 32768. */
  readonly size: number;
  /** Ring addresses (front-end virtual by default: SET_VRING_ADDR). */
  readonly descAddr: bigint;
  readonly availAddr: bigint;
  readonly usedAddr: bigint;
  readonly addressSpace?: AddressSpace;
  readonly memory: GuestMemory;
  /** RING_EVENT_IDX negotiated. */
  readonly eventIdx: boolean;
  /** RING_INDIRECT_DESC negotiated. */
  readonly indirectDesc: boolean;
  /** SET_VRING_BASE: the next avail index to process. */
  readonly nextAvailIndex: number;
  /** Signal the driver (write the call eventfd). */
  readonly notify: () => void;
  /** Full memory fence. */
  readonly fence: () => void;
  readonly maxReadable?: number;
}

interface Segment {
  readonly addr: bigint;
  readonly len: number;
}

interface RingViews {
  readonly desc: DataView;
  readonly avail: DataView;
  readonly used: DataView;
}

/**
 * A split virtqueue. After `detach()` (the front-end took the ring back) pop() returns
 * null and push/write/notify of its chains are ignored, so late completions from a device
 * never touch memory the queue no longer owns.
 */
export class SplitQueue implements Virtqueue {
  readonly index: number;
  readonly size: number;
  readonly #opts: SplitQueueOptions;
  #memory: GuestMemory;
  #rings: RingViews | null;
  #lastAvail: number;
  #usedIdx: number;
  #signalledUsed = 0;
  #signalledValid = false;
  readonly #maxReadable: number;

  constructor(opts: SplitQueueOptions) {
    const { size } = opts;
    if (!Number.isInteger(size) || size < 1 || size > 32768 || (size & (size - 1)) !== 0) {
      throw new VirtqueueError(`queue ${opts.index}: size ${size} is not a power of two in 1..32768`);
    }
    if (!Number.isInteger(opts.nextAvailIndex) || opts.nextAvailIndex < 0 || opts.nextAvailIndex > 0xffff) {
      throw new VirtqueueError(`queue ${opts.index}: base ${opts.nextAvailIndex} is not a u16`);
    }
    this.index = opts.index;
    this.size = size;
    this.#opts = opts;
    this.#memory = opts.memory;
    this.#maxReadable = opts.maxReadable ?? DEFAULT_MAX_READABLE;
    this.#rings = this.#mapRings(opts.memory);
    this.#lastAvail = opts.nextAvailIndex;
    this.#usedIdx = this.#rings.used.getUint16(2, true);
  }

  /** The next avail index to process (GET_VRING_BASE). */
  get nextAvailIndex(): number {
    return this.#lastAvail;
  }
  /** The device's used index (next used.idx to publish). */
  get usedIndex(): number {
    return this.#usedIdx;
  }
  get detached(): boolean {
    return this.#rings === null;
  }

  /** Stop using guest memory for good. */
  detach(): void {
    this.#rings = null;
  }

  /**
   * Switch to a new memory table (SET_MEM_TABLE while running). Chains already popped
   * keep working: their buffers are re-translated on write. Throws VirtqueueError (and
   * detaches) when the rings are not inside the new memory.
   */
  replaceMemory(memory: GuestMemory): void {
    try {
      this.#rings = this.#mapRings(memory);
      this.#memory = memory;
    } catch (e) {
      this.#rings = null;
      throw e;
    }
  }

  #mapRings(memory: GuestMemory): RingViews {
    const o = this.#opts;
    const space = o.addressSpace ?? AddressSpace.FRONTEND_VIRTUAL;
    const n = this.size;
    const extra = o.eventIdx ? 2 : 0;
    const check = (addr: bigint, align: bigint, len: number, what: string): DataView => {
      if (addr % align !== 0n) throw new VirtqueueError(`queue ${o.index}: ${what} address 0x${addr.toString(16)} not ${align}-aligned`);
      try {
        const s = memory.translate(addr, len, space);
        return new DataView(s.buffer, s.offset, s.length);
      } catch (e) {
        throw new VirtqueueError(`queue ${o.index}: ${what} ring not in guest memory: ${(e as Error).message}`, { cause: e });
      }
    };
    return {
      desc: check(o.descAddr, 16n, DESC_SIZE * n, 'descriptor table'),
      avail: check(o.availAddr, 2n, 4 + 2 * n + extra, 'avail'),
      used: check(o.usedAddr, 4n, 4 + 8 * n + extra, 'used'),
    };
  }

  pop(): DescriptorChain | null {
    const rings = this.#rings;
    if (rings === null) return null;
    let availIdx = rings.avail.getUint16(2, true);
    this.#opts.fence(); // acquire: ring entries after the index
    let pending = (availIdx - this.#lastAvail) & 0xffff;
    if (pending === 0) {
      if (!this.#opts.eventIdx) return null;
      // Publish where we are, then re-check: the driver may have added a buffer while it
      // still saw an older avail_event and decided not to kick.
      this.#setAvailEvent(rings, this.#lastAvail);
      this.#opts.fence();
      availIdx = rings.avail.getUint16(2, true);
      this.#opts.fence();
      pending = (availIdx - this.#lastAvail) & 0xffff;
      if (pending === 0) return null;
    }
    if (pending > this.size) {
      throw new VirtqueueError(`queue ${this.index}: avail.idx ${availIdx} is ${pending} ahead of ${this.#lastAvail} (queue size ${this.size})`);
    }
    const head = rings.avail.getUint16(4 + 2 * (this.#lastAvail % this.size), true);
    if (head >= this.size) throw new VirtqueueError(`queue ${this.index}: head index ${head} out of range`);
    const chain = this.#walk(rings, head);
    this.#lastAvail = (this.#lastAvail + 1) & 0xffff;
    if (this.#opts.eventIdx) this.#setAvailEvent(rings, this.#lastAvail);
    return chain;
  }

  #setAvailEvent(rings: RingViews, value: number): void {
    rings.used.setUint16(4 + 8 * this.size, value, true);
  }

  #walk(rings: RingViews, head: number): SplitChain {
    const readable: Segment[] = [];
    const writable: Segment[] = [];
    let readableLen = 0;
    let writableLen = 0;
    let table = rings.desc;
    let tableSize = this.size;
    let indirect = false;
    let i = head;
    let count = 0;
    const q = `queue ${this.index} chain ${head}`;
    for (;;) {
      if (count >= tableSize) throw new VirtqueueError(`${q}: descriptor loop or chain longer than ${tableSize}`);
      count++;
      const o = i * DESC_SIZE;
      const addr = table.getBigUint64(o, true);
      const len = table.getUint32(o + 8, true);
      const flags = table.getUint16(o + 12, true);
      const next = table.getUint16(o + 14, true);
      if ((flags & DescFlag.INDIRECT) !== 0) {
        if (!this.#opts.indirectDesc) throw new VirtqueueError(`${q}: INDIRECT descriptor but RING_INDIRECT_DESC not negotiated`);
        if (indirect) throw new VirtqueueError(`${q}: nested INDIRECT descriptor`);
        if (i !== head) throw new VirtqueueError(`${q}: INDIRECT descriptor not at the head of the chain`);
        if ((flags & DescFlag.NEXT) !== 0) throw new VirtqueueError(`${q}: INDIRECT combined with NEXT`);
        if (len === 0 || len % DESC_SIZE !== 0) throw new VirtqueueError(`${q}: indirect table length ${len} is not a non-zero multiple of 16`);
        const entries = len / DESC_SIZE;
        if (entries > MAX_INDIRECT_ENTRIES) throw new VirtqueueError(`${q}: indirect table of ${entries} entries`);
        if (addr % 16n !== 0n) throw new VirtqueueError(`${q}: indirect table address 0x${addr.toString(16)} not 16-aligned`);
        table = this.#view(addr, len, q);
        tableSize = entries;
        indirect = true;
        count = 0;
        i = 0;
        continue;
      }
      if (len === 0) throw new VirtqueueError(`${q}: zero-length descriptor ${i}`);
      this.#view(addr, len, q); // bounds check now, whatever happens later
      if ((flags & DescFlag.WRITE) !== 0) {
        writableLen += len;
        if (writableLen > U32_MAX) throw new VirtqueueError(`${q}: writable length over 4 GiB`);
        writable.push({ addr, len });
      } else {
        if (writable.length > 0) throw new VirtqueueError(`${q}: readable descriptor after a writable one`);
        readableLen += len;
        if (readableLen > this.#maxReadable) throw new VirtqueueError(`${q}: readable length over ${this.#maxReadable}`);
        readable.push({ addr, len });
      }
      if ((flags & DescFlag.NEXT) === 0) break;
      if (next >= tableSize) throw new VirtqueueError(`${q}: next index ${next} out of range (${tableSize})`);
      i = next;
    }
    const data = new Uint8Array(readableLen);
    let at = 0;
    for (const s of readable) {
      const v = this.#view(s.addr, s.len, q);
      data.set(new Uint8Array(v.buffer, v.byteOffset, v.byteLength), at);
      at += s.len;
    }
    return new SplitChain(this, head, data, writable, writableLen);
  }

  #view(addr: bigint, len: number, what: string): DataView {
    try {
      const s = this.#memory.translateGuestPhysical(addr, len);
      return new DataView(s.buffer, s.offset, s.length);
    } catch (e) {
      if (e instanceof GuestMemoryError) throw new VirtqueueError(`${what}: ${e.message}`, { cause: e });
      throw e;
    }
  }

  /** @internal Scatter into a chain's writable buffers (ignored once detached). */
  writeChain(chain: SplitChain, segments: readonly Segment[], data: Uint8Array): void {
    if (this.#rings === null) return;
    let at = 0;
    for (const s of segments) {
      if (at >= data.length) break;
      const n = Math.min(s.len, data.length - at);
      const v = this.#view(s.addr, n, `queue ${this.index} chain ${chain.head}`);
      new Uint8Array(v.buffer, v.byteOffset, n).set(data.subarray(at, at + n));
      at += n;
    }
  }

  push(chain: DescriptorChain, usedLength: number): void {
    if (!(chain instanceof SplitChain) || chain.queue !== this) {
      throw new VirtqueueError(`queue ${this.index}: chain ${chain.head} does not belong to this queue`);
    }
    if (!Number.isInteger(usedLength) || usedLength < 0 || usedLength > chain.writableLength) {
      throw new VirtqueueError(`queue ${this.index}: used length ${usedLength} outside 0..${chain.writableLength}`);
    }
    if (chain.completed) throw new VirtqueueError(`queue ${this.index}: chain ${chain.head} pushed twice`);
    chain.completed = true;
    const rings = this.#rings;
    if (rings === null) return;
    const slot = 4 + 8 * (this.#usedIdx % this.size);
    rings.used.setUint32(slot, chain.head, true);
    rings.used.setUint32(slot + 4, usedLength, true);
    this.#opts.fence(); // release: the element before the index
    this.#usedIdx = (this.#usedIdx + 1) & 0xffff;
    rings.used.setUint16(2, this.#usedIdx, true);
  }

  notify(): void {
    const rings = this.#rings;
    if (rings === null) return;
    this.#opts.fence(); // used.idx store before reading used_event / flags
    if (this.#opts.eventIdx) {
      const usedEvent = rings.avail.getUint16(4 + 2 * this.size, true);
      const old = this.#signalledUsed;
      const valid = this.#signalledValid;
      this.#signalledUsed = this.#usedIdx;
      this.#signalledValid = true;
      // The first notify after (re)start always signals: a spurious interrupt is harmless,
      // a missed one hangs the driver.
      if (valid && !vringNeedEvent(usedEvent, this.#usedIdx, old)) return;
    } else if ((rings.avail.getUint16(0, true) & AVAIL_F_NO_INTERRUPT) !== 0) {
      return;
    }
    this.#opts.notify();
  }
}

class SplitChain implements DescriptorChain {
  completed = false;
  readonly queue: SplitQueue;
  readonly head: number;
  readonly readable: Uint8Array;
  readonly writableLength: number;
  readonly #segments: readonly Segment[];

  constructor(queue: SplitQueue, head: number, readable: Uint8Array, segments: readonly Segment[], writableLength: number) {
    this.queue = queue;
    this.head = head;
    this.readable = readable;
    this.#segments = segments;
    this.writableLength = writableLength;
  }

  write(data: Uint8Array): void {
    if (data.length > this.writableLength) {
      throw new VirtqueueError(`chain ${this.head}: ${data.length} bytes do not fit ${this.writableLength} writable bytes`);
    }
    this.queue.writeChain(this, this.#segments, data);
  }
}
