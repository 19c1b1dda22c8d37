/**
 * The seam between the virtio transport (vhost-user session + split virtqueues) and a
 * virtio device model (services/agent/src/device/). The transport owns the rings and
 * the eventfds; the device sees only these interfaces.
 */

/** One descriptor chain taken from a virtqueue. */
export interface DescriptorChain {
  /** Head descriptor index: the id returned in the used ring. */
  readonly head: number;
  /** The device-readable bytes of the chain, concatenated (bounded copy). */
  readonly readable: Uint8Array;
  /** Total bytes of the device-writable part of the chain. */
  readonly writableLength: number;
  /**
   * Write into the device-writable part, starting at its first byte. Throws a
   * VirtqueueError when `data` is longer than writableLength.
   */
  write(data: Uint8Array): void;
}

export class VirtqueueError extends Error {
  override readonly name = 'VirtqueueError';
}

export interface Virtqueue {
  readonly index: number;
  readonly size: number;
  /**
   * The next available chain, or null when the ring is empty. Throws VirtqueueError for a
   * malformed chain (address outside guest memory, loop, over-long chain, bad indirect
   * table): the device should then be marked broken.
   */
  pop(): DescriptorChain | null;
  /** Put a chain on the used ring with the number of bytes written (publishes used.idx). */
  push(chain: DescriptorChain, usedLength: number): void;
  /** Signal the driver (call eventfd) if the ring rules (EVENT_IDX, NO_INTERRUPT) say so. */
  notify(): void;
}

export interface VirtioDevice {
  /** Device feature bits offered (VERSION_1 etc. included by the device). */
  readonly deviceFeatures: bigint;
  readonly numQueues: number;
  /** The device's config space bytes (the transport honours offset/size of GET_CONFIG). */
  config(): Uint8Array;
  /** The driver's accepted features (called before any queue starts). */
  setFeatures(features: bigint): void;
  /** A queue is configured and enabled; also called to re-scan on (re-)enable. */
  startQueue(queue: Virtqueue): void;
  /** The driver kicked queue `index`. */
  kick(index: number): void;
  /**
   * Optional: the queue is about to stop while the front-end keeps the ring (VM pause,
   * SET_VRING_ENABLE 0, GET_VRING_BASE). Complete what was popped and not answered yet,
   * since the reported ring base counts it as consumed (the guest would wait forever).
   */
  flushQueue?(index: number): void;
  /** The queue stops (SET_VRING_ENABLE 0, GET_VRING_BASE, disconnect). */
  stopQueue(index: number): void;
  /** The frontend went away or reset the device: drop per-connection state. */
  reset(): void;
}
