/**
 * Test doubles for the transport seam: an array-backed Virtqueue that records every push
 * (with the bytes written and the used length) and counts notify() calls. Used by the
 * device-model tests; no guest memory involved.
 */
import { VirtqueueError } from '../virtio/types.ts';
import type { DescriptorChain, Virtqueue } from '../virtio/types.ts';

/** A chain built from plain bytes. `written` holds what the device wrote. */
export class FakeChain implements DescriptorChain {
  readonly written: Uint8Array;
  private writes = 0;
  constructor(
    readonly head: number,
    readonly readable: Uint8Array,
    readonly writableLength: number,
  ) {
    this.written = new Uint8Array(writableLength);
  }
  write(data: Uint8Array): void {
    if (data.length > this.writableLength) throw new VirtqueueError(`write of ${data.length} bytes into ${this.writableLength} writable bytes`);
    this.written.set(data, 0);
    this.writes++;
  }
  get writeCount(): number {
    return this.writes;
  }
}

/** One push, as recorded. */
export interface PushRecord {
  readonly queue: number;
  readonly chain: FakeChain;
  readonly usedLength: number;
  /** The first usedLength bytes of what was written. */
  readonly data: Uint8Array;
}

/** Shared across queues to check the order of pushes between them. */
export class PushLog {
  readonly entries: PushRecord[] = [];
}

export class FakeVirtqueue implements Virtqueue {
  readonly pushes: PushRecord[] = [];
  notifies = 0;
  private readonly avail: (FakeChain | Error)[] = [];
  private nextHead = 0;

  constructor(
    readonly index: number,
    readonly size = 256,
    private readonly log: PushLog = new PushLog(),
  ) {}

  /** Make a chain available (as the driver would before a kick). */
  add(readable: Uint8Array, writableLength: number): FakeChain {
    const c = new FakeChain(this.nextHead++ % Math.max(1, this.size), readable, writableLength);
    this.avail.push(c);
    return c;
  }

  /** Make the next pop() throw this error (a malformed chain). */
  addBroken(error: Error = new VirtqueueError('descriptor address outside guest memory')): void {
    this.avail.push(error);
  }

  get availableCount(): number {
    return this.avail.length;
  }

  pop(): DescriptorChain | null {
    const next = this.avail.shift();
    if (next === undefined) return null;
    if (next instanceof Error) throw next;
    return next;
  }

  push(chain: DescriptorChain, usedLength: number): void {
    if (!(chain instanceof FakeChain)) throw new Error('FakeVirtqueue.push: not a FakeChain');
    if (usedLength > chain.writableLength) throw new VirtqueueError(`used length ${usedLength} > writable ${chain.writableLength}`);
    const rec: PushRecord = { queue: this.index, chain, usedLength, data: chain.written.slice(0, usedLength) };
    this.pushes.push(rec);
    this.log.entries.push(rec);
  }

  notify(): void {
    this.notifies++;
  }
}
