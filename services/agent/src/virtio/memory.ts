/**
 * Guest memory as seen by the back-end: the SET_MEM_TABLE regions and their mappings.
 * Translates guest-physical addresses (descriptor addresses) and front-end virtual
 * addresses (vring addresses) to a place in a mapped buffer. Every address comes from an
 * untrusted peer, so a range must lie wholly inside one region and all arithmetic is done
 * on bigints (u64) before anything becomes a JS number.
 */

/** A region of guest memory and the mapping that backs it. */
export interface GuestMemoryRegion {
  readonly guestPhysAddr: bigint;
  readonly memorySize: bigint;
  /** Front-end (QEMU) virtual address of the region's first byte. */
  readonly userspaceAddr: bigint;
  /** Offset of the region's first byte inside `buffer`. */
  readonly mmapOffset: bigint;
  /** The mapping of the region's fd from file offset 0 (at least mmapOffset + memorySize bytes). */
  readonly buffer: ArrayBuffer;
}

/** A translated range: `length` bytes at `offset` in `buffer`. */
export interface MemorySlice {
  readonly buffer: ArrayBuffer;
  readonly offset: number;
  readonly length: number;
}

export class GuestMemoryError extends Error {
  override readonly name = 'GuestMemoryError';
}

/** Which address space an address belongs to. */
export const AddressSpace = {
  /** Guest-physical: descriptor addresses. */
  GUEST_PHYSICAL: 'guest-physical',
  /** Front-end virtual: SET_VRING_ADDR addresses. */
  FRONTEND_VIRTUAL: 'frontend-virtual',
} as const;
export type AddressSpace = (typeof AddressSpace)[keyof typeof AddressSpace];

const U64_MAX = (1n << 64n) - 1n;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

interface Region {
  readonly gpa: bigint;
  readonly uva: bigint;
  readonly size: bigint;
  readonly base: number;
  readonly buffer: ArrayBuffer;
}

/**
 * Immutable set of regions. Zero-length ranges are valid when their address lies inside
 * a region or at its end (start ≤ addr ≤ start + size) and translate to an empty slice.
 */
export class GuestMemory {
  readonly #regions: readonly Region[];

  /** Validates the regions: non-empty, no u64 wrap, mapping big enough, no overlaps. */
  constructor(regions: readonly GuestMemoryRegion[]) {
    const out: Region[] = [];
    for (const [i, r] of regions.entries()) {
      if (r.memorySize <= 0n) throw new GuestMemoryError(`region ${i}: size must be positive`);
      for (const [name, v] of [['guest_phys_addr', r.guestPhysAddr], ['userspace_addr', r.userspaceAddr], ['mmap_offset', r.mmapOffset]] as const) {
        if (v < 0n || v + r.memorySize - 1n > U64_MAX) throw new GuestMemoryError(`region ${i}: ${name} + size wraps u64`);
      }
      const end = r.mmapOffset + r.memorySize;
      if (end > MAX_SAFE) throw new GuestMemoryError(`region ${i}: mapping too large`);
      if (BigInt(r.buffer.byteLength) < end) {
        throw new GuestMemoryError(`region ${i}: mapping has ${r.buffer.byteLength} bytes, needs ${end}`);
      }
      out.push({ gpa: r.guestPhysAddr, uva: r.userspaceAddr, size: r.memorySize, base: Number(r.mmapOffset), buffer: r.buffer });
    }
    for (let i = 0; i < out.length; i++) {
      for (let j = i + 1; j < out.length; j++) {
        const a = out[i] as Region;
        const b = out[j] as Region;
        if (a.gpa < b.gpa + b.size && b.gpa < a.gpa + a.size) throw new GuestMemoryError(`regions ${i} and ${j} overlap in guest-physical space`);
        if (a.uva < b.uva + b.size && b.uva < a.uva + a.size) throw new GuestMemoryError(`regions ${i} and ${j} overlap in front-end virtual space`);
      }
    }
    this.#regions = out;
  }

  get regionCount(): number {
    return this.#regions.length;
  }

  /** Translate `length` bytes at guest-physical `addr`. Throws GuestMemoryError. */
  translateGuestPhysical(addr: bigint, length: number): MemorySlice {
    return this.#translate(addr, length, AddressSpace.GUEST_PHYSICAL);
  }

  /** Translate `length` bytes at front-end virtual `addr`. Throws GuestMemoryError. */
  translateFrontendVirtual(addr: bigint, length: number): MemorySlice {
    return this.#translate(addr, length, AddressSpace.FRONTEND_VIRTUAL);
  }

  translate(addr: bigint, length: number, space: AddressSpace): MemorySlice {
    return this.#translate(addr, length, space);
  }

  /** A Uint8Array over the range (a view: writes go to guest memory). */
  bytes(addr: bigint, length: number, space: AddressSpace): Uint8Array {
    const s = this.#translate(addr, length, space);
    return new Uint8Array(s.buffer, s.offset, s.length);
  }

  #translate(addr: bigint, length: number, space: AddressSpace): MemorySlice {
    if (typeof addr !== 'bigint' || addr < 0n || addr > U64_MAX) throw new GuestMemoryError(`address ${String(addr)} is not a u64`);
    if (!Number.isSafeInteger(length) || length < 0) throw new GuestMemoryError(`bad length ${length}`);
    const len = BigInt(length);
    for (const r of this.#regions) {
      const start = space === AddressSpace.GUEST_PHYSICAL ? r.gpa : r.uva;
      if (addr < start) continue;
      const rel = addr - start;
      if (rel > r.size) continue;
      if (len === 0n || rel + len <= r.size) {
        if (len === 0n) return { buffer: r.buffer, offset: r.base + Number(rel), length: 0 };
        return { buffer: r.buffer, offset: r.base + Number(rel), length };
      }
      if (rel < r.size) {
        throw new GuestMemoryError(`${space} range 0x${addr.toString(16)}+${length} crosses the end of a memory region`);
      }
    }
    throw new GuestMemoryError(`${space} range 0x${addr.toString(16)}+${length} is outside guest memory`);
  }
}
