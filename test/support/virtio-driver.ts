/**
 * The DRIVER side of a virtio split virtqueue (what Linux's virtio_ring does), over guest
 * memory given as regions of bytes at guest-physical addresses. Used by tests of the
 * device side and by the front-end test driver that plays QEMU + guest against an agent.
 *
 * Also exposes raw accessors (writeDesc, setAvailIdx, …) so tests can build hostile rings.
 */

/** Descriptor flags. */
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** Guest RAM as a list of regions at guest-physical addresses. */
export class GuestRam {
  readonly regions: readonly { readonly gpa: bigint; readonly bytes: Uint8Array }[];
  constructor(regions: readonly { readonly gpa: bigint; readonly bytes: Uint8Array }[]) {
    this.regions = regions;
  }
  /** A view of `len` bytes at `gpa` (must lie inside one region). */
  view(gpa: bigint, len: number): Uint8Array {
    for (const r of this.regions) {
      if (gpa >= r.gpa && gpa + BigInt(len) <= r.gpa + BigInt(r.bytes.length)) {
        const off = Number(gpa - r.gpa);
        return r.bytes.subarray(off, off + len);
      }
    }
    throw new RangeError(`guest range 0x${gpa.toString(16)}+${len} not in RAM`);
  }
  dataView(gpa: bigint, len: number): DataView {
    const v = this.view(gpa, len);
    return new DataView(v.buffer, v.byteOffset, v.byteLength);
  }
}

/** Ring placement: desc (align 16), avail (align 2), used (align 4). */
export interface RingLayout {
  readonly desc: bigint;
  readonly avail: bigint;
  readonly used: bigint;
  /** First byte after the used ring. */
  readonly end: bigint;
}

/** Lay out a ring of `size` entries from `base` (used ring on the next 4 KiB page, like legacy layout). */
export function layoutRing(size: number, base: bigint): RingLayout {
  const align = (v: bigint, a: bigint): bigint => ((v + a - 1n) / a) * a;
  const desc = align(base, 16n);
  const avail = desc + BigInt(16 * size);
  const used = align(avail + BigInt(6 + 2 * size), 4096n);
  return { desc, avail, used, end: used + BigInt(6 + 8 * size) };
}

/** A first-fit allocator of guest-physical buffer space. */
export class GuestAllocator {
  #free: { start: bigint; len: bigint }[];
  constructor(start: bigint, len: bigint) {
    this.#free = [{ start, len }];
  }
  alloc(len: number, align = 8): bigint {
    const l = BigInt(Math.max(1, len));
    const a = BigInt(align);
    for (const [i, f] of this.#free.entries()) {
      const s = ((f.start + a - 1n) / a) * a;
      const pad = s - f.start;
      if (f.len >= pad + l) {
        const rest = { start: s + l, len: f.len - pad - l };
        const parts = [];
        if (pad > 0n) parts.push({ start: f.start, len: pad });
        if (rest.len > 0n) parts.push(rest);
        this.#free.splice(i, 1, ...parts);
        return s;
      }
    }
    throw new RangeError(`guest allocator: no room for ${len} bytes`);
  }
  free(addr: bigint, len: number): void {
    this.#free.push({ start: addr, len: BigInt(Math.max(1, len)) });
    this.#free.sort((x, y) => (x.start < y.start ? -1 : 1));
    const merged: { start: bigint; len: bigint }[] = [];
    for (const f of this.#free) {
      const last = merged[merged.length - 1];
      if (last !== undefined && last.start + last.len === f.start) last.len += f.len;
      else merged.push({ ...f });
    }
    this.#free = merged;
  }
}

export interface ChainSpec {
  /** Device-readable buffers (their contents). */
  readonly readable?: readonly Uint8Array[];
  /** Device-writable buffer sizes. */
  readonly writable?: readonly number[];
  /** Put the chain in an indirect table (one ring descriptor). */
  readonly indirect?: boolean;
}

/** A completed chain read back from the used ring. */
export interface UsedChain {
  readonly head: number;
  readonly len: number;
  /** The bytes of the writable buffers, concatenated (all of them, not just `len`). */
  readonly written: Uint8Array;
  /** What was passed as `token` to addChain. */
  readonly token: unknown;
}

interface Outstanding {
  readonly descs: number[];
  readonly buffers: { addr: bigint; len: number; writable: boolean }[];
  readonly indirectTable: { addr: bigint; len: number } | null;
  readonly token: unknown;
}

export interface DriverRingOptions {
  readonly ram: GuestRam;
  readonly size: number;
  readonly layout: RingLayout;
  /** Where data buffers and indirect tables are allocated. */
  readonly allocator: GuestAllocator;
  /** EVENT_IDX negotiated. */
  readonly eventIdx?: boolean;
  /** Start index (free-running u16) for avail and used, default 0: lets tests start near 0xffff. */
  readonly startIndex?: number;
  /**
   * Full memory fence, for a device in another thread or process (the native platform's
   * fence()). Used between publishing an index and reading the device's event index, as
   * Linux's virtio_ring does (a store-load reordering there loses a kick or a call).
   */
  readonly fence?: () => void;
}

/** The driver side of one split ring. */
export class DriverRing {
  readonly size: number;
  readonly layout: RingLayout;
  readonly ram: GuestRam;
  readonly eventIdx: boolean;
  readonly #alloc: GuestAllocator;
  #freeDescs: number[];
  #availShadow: number;
  #availPublished: number;
  #lastUsed: number;
  readonly #outstanding = new Map<number, Outstanding>();

  readonly #fence: () => void;
  constructor(opts: DriverRingOptions) {
    this.#fence = opts.fence ?? (() => {});
    this.size = opts.size;
    this.layout = opts.layout;
    this.ram = opts.ram;
    this.eventIdx = opts.eventIdx ?? false;
    this.#alloc = opts.allocator;
    this.#freeDescs = Array.from({ length: opts.size }, (_, i) => i);
    const start = (opts.startIndex ?? 0) & 0xffff;
    this.#availShadow = start;
    this.#availPublished = start;
    this.#lastUsed = start;
    // zero the rings, then set the start indices
    this.ram.view(this.layout.desc, 16 * this.size).fill(0);
    this.ram.view(this.layout.avail, 6 + 2 * this.size).fill(0);
    this.ram.view(this.layout.used, 6 + 8 * this.size).fill(0);
    this.setAvailIdx(start);
    this.#used().setUint16(2, start, true);
  }

  #avail(): DataView {
    return this.ram.dataView(this.layout.avail, 6 + 2 * this.size);
  }
  #used(): DataView {
    return this.ram.dataView(this.layout.used, 6 + 8 * this.size);
  }

  /** Free descriptors in the ring's table. */
  get freeDescriptors(): number {
    return this.#freeDescs.length;
  }
  /** Chains added and not yet seen in the used ring. */
  get inFlight(): number {
    return this.#outstanding.size;
  }

  /** Write one descriptor of the ring's table (raw, for hostile tests). */
  writeDesc(i: number, d: { addr: bigint; len: number; flags: number; next: number }): void {
    writeDescAt(this.ram, this.layout.desc + BigInt(16 * i), d);
  }
  /** Store avail.idx (raw). */
  setAvailIdx(idx: number): void {
    this.#avail().setUint16(2, idx & 0xffff, true);
  }
  get availIdx(): number {
    return this.#avail().getUint16(2, true);
  }
  /** Store avail.ring[slot] (raw). */
  setAvailRing(slot: number, head: number): void {
    this.#avail().setUint16(4 + 2 * (slot % this.size), head, true);
  }
  setNoInterrupt(on: boolean): void {
    const v = this.#avail();
    v.setUint16(0, on ? VIRTQ_AVAIL_F_NO_INTERRUPT : 0, true);
  }
  /** EVENT_IDX: ask for an interrupt when used.idx passes `idx`. */
  setUsedEvent(idx: number): void {
    this.#avail().setUint16(4 + 2 * this.size, idx & 0xffff, true);
  }
  /** EVENT_IDX: the device's avail_event. */
  get availEvent(): number {
    return this.#used().getUint16(4 + 8 * this.size, true);
  }
  get usedIdx(): number {
    return this.#used().getUint16(2, true);
  }
  get usedFlags(): number {
    return this.#used().getUint16(0, true);
  }

  /** Write buffers and descriptors for a chain and put its head in the avail ring (not yet published). Returns the head. */
  addChain(spec: ChainSpec, token?: unknown): number {
    const readable = spec.readable ?? [];
    const writable = spec.writable ?? [];
    const parts = [...readable.map((b) => ({ len: b.length, data: b as Uint8Array | null, writable: false })), ...writable.map((n) => ({ len: n, data: null, writable: true }))];
    if (parts.length === 0) throw new RangeError('empty chain');
    const buffers = parts.map((p) => {
      const addr = this.#alloc.alloc(p.len);
      if (p.data !== null) this.ram.view(addr, p.len).set(p.data);
      else this.ram.view(addr, p.len).fill(0);
      return { addr, len: p.len, writable: p.writable };
    });
    const needed = spec.indirect === true ? 1 : parts.length;
    if (this.#freeDescs.length < needed) {
      for (const b of buffers) this.#alloc.free(b.addr, b.len);
      throw new RangeError('ring full');
    }
    const descs = this.#freeDescs.splice(0, needed);
    let indirectTable: Outstanding['indirectTable'] = null;
    if (spec.indirect === true) {
      const len = 16 * parts.length;
      const addr = this.#alloc.alloc(len, 16);
      buffers.forEach((b, i) => {
        writeDescAt(this.ram, addr + BigInt(16 * i), {
          addr: b.addr,
          len: b.len,
          flags: (b.writable ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < buffers.length ? VIRTQ_DESC_F_NEXT : 0),
          next: i + 1 < buffers.length ? i + 1 : 0,
        });
      });
      this.writeDesc(descs[0] as number, { addr, len, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
      indirectTable = { addr, len };
    } else {
      buffers.forEach((b, i) => {
        const last = i + 1 === buffers.length;
        this.writeDesc(descs[i] as number, {
          addr: b.addr,
          len: b.len,
          flags: (b.writable ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
          next: last ? 0 : (descs[i + 1] as number),
        });
      });
    }
    const head = descs[0] as number;
    this.#outstanding.set(head, { descs, buffers, indirectTable, token });
    this.setAvailRing(this.#availShadow, head);
    this.#availShadow = (this.#availShadow + 1) & 0xffff;
    return head;
  }

  /**
   * Publish added chains (store avail.idx). Returns whether the device wants a kick:
   * EVENT_IDX → vring_need_event(avail_event, new, old); else !(used.flags & NO_NOTIFY).
   */
  publish(): boolean {
    const old = this.#availPublished;
    const now = this.#availShadow;
    this.setAvailIdx(now);
    this.#availPublished = now;
    this.#fence(); // avail.idx must be visible before avail_event is read
    if (this.eventIdx) {
      const ev = this.availEvent;
      return ((now - ev - 1) & 0xffff) < ((now - old) & 0xffff);
    }
    return (this.usedFlags & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  /** Read new used entries, free their descriptors and buffers. Throws on a used id that is not in flight. */
  takeUsed(): UsedChain[] {
    const out: UsedChain[] = [];
    const used = this.#used();
    const idx = used.getUint16(2, true);
    while (this.#lastUsed !== idx) {
      const slot = 4 + 8 * (this.#lastUsed % this.size);
      const head = used.getUint32(slot, true);
      const len = used.getUint32(slot + 4, true);
      const o = this.#outstanding.get(head);
      if (o === undefined) throw new Error(`device returned id ${head} which is not in flight`);
      this.#outstanding.delete(head);
      const wbufs = o.buffers.filter((b) => b.writable);
      const written = new Uint8Array(wbufs.reduce((n, b) => n + b.len, 0));
      let at = 0;
      for (const b of wbufs) {
        written.set(this.ram.view(b.addr, b.len), at);
        at += b.len;
      }
      for (const b of o.buffers) this.#alloc.free(b.addr, b.len);
      if (o.indirectTable !== null) this.#alloc.free(o.indirectTable.addr, o.indirectTable.len);
      this.#freeDescs.push(...o.descs);
      out.push({ head, len, written, token: o.token });
      this.#lastUsed = (this.#lastUsed + 1) & 0xffff;
    }
    if (this.eventIdx) {
      this.setUsedEvent(this.#lastUsed);
      // An entry the device published before it could see the new used_event got no
      // call: re-check after a full fence (virtqueue_enable_cb's race) and take it too.
      this.#fence();
      if (this.#used().getUint16(2, true) !== this.#lastUsed) out.push(...this.takeUsed());
    }
    return out;
  }
}

function writeDescAt(ram: GuestRam, at: bigint, d: { addr: bigint; len: number; flags: number; next: number }): void {
  const v = ram.dataView(at, 16);
  v.setBigUint64(0, d.addr, true);
  v.setUint32(8, d.len >>> 0, true);
  v.setUint16(12, d.flags, true);
  v.setUint16(14, d.next, true);
}
