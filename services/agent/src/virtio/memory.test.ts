import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { AddressSpace, GuestMemory, GuestMemoryError } from './memory.ts';

// QEMU's layout for 256 MiB of guest RAM, scaled down: two regions with a hole between.
const low = new ArrayBuffer(0x1000);
const high = new ArrayBuffer(0x3000);
const mem = new GuestMemory([
  { guestPhysAddr: 0n, memorySize: 0xa00n, userspaceAddr: 0x7f0000000000n, mmapOffset: 0n, buffer: low },
  { guestPhysAddr: 0xc00n, memorySize: 0x2400n, userspaceAddr: 0x7f0000000c00n, mmapOffset: 0xc00n, buffer: high },
]);
const isMemErr = (e: unknown): boolean => e instanceof GuestMemoryError;

describe('GuestMemory', () => {
  it('translates guest-physical and front-end virtual addresses with mmap_offset', () => {
    assert.deepEqual(mem.translateGuestPhysical(0x10n, 4), { buffer: low, offset: 0x10, length: 4 });
    assert.deepEqual(mem.translateGuestPhysical(0xc00n, 8), { buffer: high, offset: 0xc00, length: 8 });
    assert.deepEqual(mem.translateGuestPhysical(0x1000n, 8), { buffer: high, offset: 0x1000, length: 8 });
    assert.deepEqual(mem.translateFrontendVirtual(0x7f0000000c10n, 8), { buffer: high, offset: 0xc10, length: 8 });
    // the last byte of each region
    assert.equal(mem.translateGuestPhysical(0x9ffn, 1).offset, 0x9ff);
    assert.equal(mem.translateGuestPhysical(0x2fffn, 1).offset, 0x2fff);
    assert.equal(mem.translateGuestPhysical(0xc00n, 0x2400).length, 0x2400);
  });

  it('rejects ranges crossing a region end, in a hole, beyond memory or too large', () => {
    assert.throws(() => mem.translateGuestPhysical(0x9ffn, 2), isMemErr);
    assert.throws(() => mem.translateGuestPhysical(0xa00n, 1), isMemErr);
    assert.throws(() => mem.translateGuestPhysical(0xbffn, 2), isMemErr);
    assert.throws(() => mem.translateGuestPhysical(0x3000n, 1), isMemErr);
    assert.throws(() => mem.translateGuestPhysical(0x2fffn, 2), isMemErr);
    assert.throws(() => mem.translateGuestPhysical(0xffffffffffffffffn, 1), isMemErr);
    assert.throws(() => mem.translateGuestPhysical(0xc00n, Number.MAX_SAFE_INTEGER), isMemErr);
    assert.throws(() => mem.translateGuestPhysical(1n << 64n, 0), isMemErr);
    assert.throws(() => mem.translateGuestPhysical(-1n, 1), isMemErr);
    assert.throws(() => mem.translateGuestPhysical(0n, -1), isMemErr);
    assert.throws(() => mem.translateGuestPhysical(0n, 1.5), isMemErr);
    // guest-physical addresses are not front-end virtual ones
    assert.throws(() => mem.translateFrontendVirtual(0x10n, 1), isMemErr);
  });

  it('defines zero-length ranges: valid inside a region or at its end, empty slice', () => {
    assert.equal(mem.translateGuestPhysical(0xa00n, 0).length, 0);
    assert.equal(mem.translateGuestPhysical(0x3000n, 0).length, 0);
    assert.throws(() => mem.translateGuestPhysical(0xb00n, 0), isMemErr);
  });

  it('validates regions', () => {
    const buf = new ArrayBuffer(0x100);
    const r = { guestPhysAddr: 0n, memorySize: 0x100n, userspaceAddr: 0x1000n, mmapOffset: 0n, buffer: buf };
    assert.throws(() => new GuestMemory([{ ...r, memorySize: 0n }]), isMemErr);
    assert.throws(() => new GuestMemory([{ ...r, memorySize: 0x101n }]), isMemErr, 'mapping too small');
    assert.throws(() => new GuestMemory([{ ...r, mmapOffset: 1n }]), isMemErr, 'offset + size beyond mapping');
    assert.throws(() => new GuestMemory([{ ...r, guestPhysAddr: 0xffffffffffffff80n }]), isMemErr);
    assert.throws(() => new GuestMemory([r, { ...r, userspaceAddr: 0x9000n, guestPhysAddr: 0x80n }]), isMemErr, 'gpa overlap');
    assert.throws(() => new GuestMemory([r, { ...r, guestPhysAddr: 0x1000n, userspaceAddr: 0x1080n }]), isMemErr, 'uva overlap');
    assert.equal(new GuestMemory([r, { ...r, guestPhysAddr: 0x100n, userspaceAddr: 0x1100n }]).regionCount, 2);
  });

  it('property: any u64 address/length either translates inside the buffer or throws GuestMemoryError', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.oneof(fc.nat(0x4000), fc.integer()), fc.boolean(), (addr, len, uva) => {
        try {
          const s = mem.translate(uva ? addr | 0x7f0000000000n : addr & 0x3fffn, len, uva ? AddressSpace.FRONTEND_VIRTUAL : AddressSpace.GUEST_PHYSICAL);
          assert.ok(s.offset >= 0 && s.offset + s.length <= s.buffer.byteLength);
          assert.equal(s.length, len);
        } catch (e) {
          assert.ok(e instanceof GuestMemoryError, String(e));
        }
      }),
      { seed: 7, numRuns: 3000 },
    );
  });
});
