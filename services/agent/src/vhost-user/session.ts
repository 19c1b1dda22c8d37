/**
 * The per-connection vhost-user state machine (back-end side). I/O only through the
 * injected Platform (mmap, eventfds) and the `send` callback (reply bytes); fed with
 * framed messages from MessageReader. Never throws out of handle(): a bad request is
 * answered with a failure (when the front-end waits for a reply) and logged.
 *
 * Ring lifecycle: a ring runs (a SplitQueue exists and the device has it) when features
 * were set, a memory table is mapped, NUM/ADDR are set, a kick fd is present and the ring
 * is enabled (SET_VRING_ENABLE 1, or implicitly at SET_FEATURES when bit 30 was not
 * negotiated). It stops on SET_VRING_ENABLE 0 (keeping its kick fd) or GET_VRING_BASE
 * (which also drops the kick fd: QEMU sends a new one before restarting).
 */
import type { Platform, MappedRegion, Watch } from '../os/platform.ts';
import type { VirtioDevice } from '../virtio/types.ts';
import { GuestMemory } from '../virtio/memory.ts';
import { SplitQueue } from '../virtio/split-queue.ts';
import {
  HeaderFlag,
  MAX_QUEUE_SIZE,
  PROTOCOL_FEATURES_MASK,
  ProtocolFeatureBit,
  REQUESTS_WITH_REPLY,
  Request,
  VirtioFeatureBit,
  featureMask,
  requestName,
} from './protocol.ts';
import {
  decodeAddr,
  decodeConfig,
  decodeMemTable,
  decodeState,
  decodeU64,
  decodeVringFile,
  encodeAck,
  encodeConfigReply,
  encodeReply,
  encodeStateReply,
  encodeU64Reply,
  expectNoFds,
} from './codec.ts';
import type { VhostUserMessage, VringAddr } from './codec.ts';

/** A request the session refuses (answered with a failure). */
export class VhostUserRequestError extends Error {
  override readonly name = 'VhostUserRequestError';
}

/** Protocol features offered by default: MQ | REPLY_ACK | CONFIG (0x209). */
export const DEFAULT_PROTOCOL_FEATURES =
  featureMask(ProtocolFeatureBit.MQ) | featureMask(ProtocolFeatureBit.REPLY_ACK) | featureMask(ProtocolFeatureBit.CONFIG);

export interface VhostUserSessionOptions {
  readonly platform: Platform;
  readonly device: VirtioDevice;
  /** Send reply bytes to the front-end (no fds). */
  readonly send: (bytes: Uint8Array) => void;
  readonly log?: (message: string) => void;
  /** Protocol features to offer (default DEFAULT_PROTOCOL_FEATURES; add STATUS if wanted). */
  readonly protocolFeatures?: bigint;
}

interface Ring {
  readonly index: number;
  num: number | null;
  addr: VringAddr | null;
  base: number;
  kickFd: number | null;
  kickWatch: Watch | null;
  callFd: number | null;
  errFd: number | null;
  enabled: boolean;
  queue: SplitQueue | null;
}

interface Mapping {
  readonly memory: GuestMemory;
  readonly regions: readonly MappedRegion[];
}

/** Snapshot of one ring, for tests and diagnostics. */
export interface RingInfo {
  readonly index: number;
  readonly num: number | null;
  readonly base: number;
  readonly enabled: boolean;
  readonly running: boolean;
  readonly kickFd: number | null;
  readonly callFd: number | null;
  readonly errFd: number | null;
}

/** One front-end connection's vhost-user state. */
export class VhostUserSession {
  readonly #platform: Platform;
  readonly #device: VirtioDevice;
  readonly #send: (bytes: Uint8Array) => void;
  readonly #log: (message: string) => void;
  readonly #offeredProtocol: bigint;
  readonly #rings: Ring[];
  #ackedFeatures = 0n;
  #featuresSet = false;
  #ackedProtocol = 0n;
  #owner = false;
  #status = 0;
  #mapping: Mapping | null = null;
  #closed = false;
  #kept = new Set<number>();

  constructor(opts: VhostUserSessionOptions) {
    this.#platform = opts.platform;
    this.#device = opts.device;
    this.#send = opts.send;
    this.#log = opts.log ?? (() => {});
    this.#offeredProtocol = opts.protocolFeatures ?? DEFAULT_PROTOCOL_FEATURES;
    const n = opts.device.numQueues;
    this.#rings = Array.from({ length: n }, (_, index) => ({
      index,
      num: null,
      addr: null,
      base: 0,
      kickFd: null,
      kickWatch: null,
      callFd: null,
      errFd: null,
      enabled: false,
      queue: null,
    }));
  }

  /** Virtio features offered to the front-end: the device's plus VHOST_USER_F_PROTOCOL_FEATURES. */
  get offeredFeatures(): bigint {
    return this.#device.deviceFeatures | PROTOCOL_FEATURES_MASK;
  }
  get ackedFeatures(): bigint {
    return this.#ackedFeatures;
  }
  get ackedProtocolFeatures(): bigint {
    return this.#ackedProtocol;
  }
  get closed(): boolean {
    return this.#closed;
  }
  get hasMemory(): boolean {
    return this.#mapping !== null;
  }
  ring(index: number): RingInfo | undefined {
    const r = this.#rings[index];
    if (r === undefined) return undefined;
    return {
      index: r.index,
      num: r.num,
      base: r.queue?.nextAvailIndex ?? r.base,
      enabled: r.enabled,
      running: r.queue !== null,
      kickFd: r.kickFd,
      callFd: r.callFd,
      errFd: r.errFd,
    };
  }

  /** Handle one framed message. Takes ownership of its fds. Never throws. */
  handle(msg: VhostUserMessage): void {
    if (this.#closed) {
      this.#closeFds(msg.fds);
      return;
    }
    const name = requestName(msg.request);
    const needReply = (msg.flags & HeaderFlag.NEED_REPLY) !== 0;
    const alwaysReply = REQUESTS_WITH_REPLY.has(msg.request);
    this.#kept = new Set();
    let reply: Uint8Array | undefined;
    let ok = true;
    try {
      if ((msg.flags & HeaderFlag.REPLY) !== 0) throw new VhostUserRequestError('REPLY flag set on a request');
      reply = this.#dispatch(msg);
    } catch (e) {
      ok = false;
      this.#log(`vhost-user ${name} failed: ${(e as Error).message}`);
      // A failed request that has a reply by definition gets a zero-size payload, which
      // QEMU reports as an error ("bad msg size") instead of waiting forever.
      if (alwaysReply) reply = encodeReply(msg.request);
    }
    this.#closeFds(msg.fds.filter((fd) => !this.#kept.has(fd)));
    this.#kept = new Set();
    if (alwaysReply) {
      this.#reply(reply ?? encodeReply(msg.request));
    } else if (needReply) {
      this.#reply(encodeAck(msg.request, ok));
    }
  }

  /** Release everything: rings stopped, watchers stopped, fds closed, memory unmapped, device reset. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const r of this.#rings) {
      this.#stopRing(r);
      this.#dropKick(r);
      r.callFd = this.#replaceFd(r.callFd, null);
      r.errFd = this.#replaceFd(r.errFd, null);
    }
    this.#unmap(this.#mapping);
    this.#mapping = null;
    try {
      this.#device.reset();
    } catch (e) {
      this.#log(`device reset failed: ${(e as Error).message}`);
    }
  }

  #reply(bytes: Uint8Array): void {
    try {
      this.#send(bytes);
    } catch (e) {
      this.#log(`vhost-user reply not sent: ${(e as Error).message}`);
    }
  }

  #closeFds(fds: readonly number[]): void {
    for (const fd of fds) {
      try {
        this.#platform.close(fd);
      } catch (e) {
        this.#log(`close(${fd}) failed: ${(e as Error).message}`);
      }
    }
  }

  #ringAt(index: number): Ring {
    const r = this.#rings[index];
    if (r === undefined) throw new VhostUserRequestError(`ring index ${index} out of range (device has ${this.#rings.length} queues)`);
    return r;
  }

  #dispatch(msg: VhostUserMessage): Uint8Array | undefined {
    const { request, payload, fds } = msg;
    switch (request) {
      case Request.GET_FEATURES:
        expectNoFds(fds, 'GET_FEATURES');
        return encodeU64Reply(request, this.offeredFeatures);
      case Request.SET_FEATURES:
        expectNoFds(fds, 'SET_FEATURES');
        this.#setFeatures(decodeU64(payload, 'SET_FEATURES'));
        return undefined;
      case Request.GET_PROTOCOL_FEATURES:
        expectNoFds(fds, 'GET_PROTOCOL_FEATURES');
        return encodeU64Reply(request, this.#offeredProtocol);
      case Request.SET_PROTOCOL_FEATURES: {
        expectNoFds(fds, 'SET_PROTOCOL_FEATURES');
        const v = decodeU64(payload, 'SET_PROTOCOL_FEATURES');
        if ((v & ~this.#offeredProtocol) !== 0n) {
          throw new VhostUserRequestError(`protocol features 0x${v.toString(16)} include unoffered bits 0x${(v & ~this.#offeredProtocol).toString(16)}`);
        }
        this.#ackedProtocol = v;
        return undefined;
      }
      case Request.SET_OWNER:
        expectNoFds(fds, 'SET_OWNER');
        this.#owner = true;
        return undefined;
      case Request.RESET_OWNER:
      case Request.RESET_DEVICE:
        expectNoFds(fds, requestName(request));
        this.#resetDevice();
        return undefined;
      case Request.SET_MEM_TABLE:
        this.#setMemTable(decodeMemTable(payload, fds));
        return undefined;
      case Request.SET_VRING_NUM: {
        expectNoFds(fds, 'SET_VRING_NUM');
        const s = decodeState(payload);
        const r = this.#ringAt(s.index);
        if (r.queue !== null) throw new VhostUserRequestError(`ring ${s.index} is running`);
        if (s.num < 1 || s.num > MAX_QUEUE_SIZE || (s.num & (s.num - 1)) !== 0) {
          throw new VhostUserRequestError(`ring ${s.index}: size ${s.num} is not a power of two in 1..${MAX_QUEUE_SIZE}`);
        }
        r.num = s.num;
        return undefined;
      }
      case Request.SET_VRING_ADDR: {
        expectNoFds(fds, 'SET_VRING_ADDR');
        const a = decodeAddr(payload);
        const r = this.#ringAt(a.index);
        if (r.queue !== null) throw new VhostUserRequestError(`ring ${a.index} is running`);
        r.addr = a;
        this.#tryStart(r);
        return undefined;
      }
      case Request.SET_VRING_BASE: {
        expectNoFds(fds, 'SET_VRING_BASE');
        const s = decodeState(payload);
        const r = this.#ringAt(s.index);
        if (r.queue !== null) throw new VhostUserRequestError(`ring ${s.index} is running`);
        if (s.num > 0xffff) throw new VhostUserRequestError(`ring ${s.index}: base ${s.num} is not a u16`);
        r.base = s.num;
        return undefined;
      }
      case Request.GET_VRING_BASE: {
        expectNoFds(fds, 'GET_VRING_BASE');
        const s = decodeState(payload);
        const r = this.#ringAt(s.index);
        this.#stopRing(r, true);
        this.#dropKick(r);
        return encodeStateReply(request, { index: s.index, num: r.base });
      }
      case Request.SET_VRING_KICK: {
        const f = decodeVringFile(payload, fds);
        const r = this.#ringAt(f.index);
        if (f.fd === null) throw new VhostUserRequestError(`ring ${f.index}: polling mode (kick NOFD) is not supported`);
        const fd = f.fd;
        const watch = this.#platform.watchReadable(fd, () => this.#onKick(r, fd));
        this.#dropKick(r);
        this.#kept.add(fd);
        r.kickFd = fd;
        r.kickWatch = watch;
        this.#tryStart(r);
        return undefined;
      }
      case Request.SET_VRING_CALL: {
        const f = decodeVringFile(payload, fds);
        const r = this.#ringAt(f.index);
        if (f.fd !== null) this.#kept.add(f.fd);
        r.callFd = this.#replaceFd(r.callFd, f.fd);
        return undefined;
      }
      case Request.SET_VRING_ERR: {
        const f = decodeVringFile(payload, fds);
        const r = this.#ringAt(f.index);
        if (f.fd !== null) this.#kept.add(f.fd);
        r.errFd = this.#replaceFd(r.errFd, f.fd);
        return undefined;
      }
      case Request.GET_QUEUE_NUM:
        expectNoFds(fds, 'GET_QUEUE_NUM');
        return encodeU64Reply(request, BigInt(this.#rings.length));
      case Request.SET_VRING_ENABLE: {
        expectNoFds(fds, 'SET_VRING_ENABLE');
        const s = decodeState(payload);
        const r = this.#ringAt(s.index);
        if (s.num > 1) throw new VhostUserRequestError(`ring ${s.index}: enable value ${s.num} is not 0 or 1`);
        r.enabled = s.num === 1;
        if (r.enabled) this.#tryStart(r);
        else this.#stopRing(r, true);
        return undefined;
      }
      case Request.GET_CONFIG: {
        expectNoFds(fds, 'GET_CONFIG');
        const c = decodeConfig(payload);
        const config = this.#device.config();
        if (c.offset + c.size > config.length) {
          this.#log(`vhost-user GET_CONFIG offset ${c.offset} size ${c.size} outside the ${config.length}-byte config: zero-size reply`);
          return encodeConfigReply(request, c, null);
        }
        return encodeConfigReply(request, c, config.slice(c.offset, c.offset + c.size));
      }
      case Request.SET_CONFIG: {
        expectNoFds(fds, 'SET_CONFIG');
        const c = decodeConfig(payload);
        this.#log(`vhost-user SET_CONFIG offset ${c.offset} size ${c.size} ignored (config space is read-only)`);
        return undefined;
      }
      case Request.SET_STATUS: {
        expectNoFds(fds, 'SET_STATUS');
        const v = decodeU64(payload, 'SET_STATUS');
        if (v > 0xffn) throw new VhostUserRequestError(`status 0x${v.toString(16)} is not a byte`);
        this.#status = Number(v);
        return undefined;
      }
      case Request.GET_STATUS:
        expectNoFds(fds, 'GET_STATUS');
        return encodeU64Reply(request, BigInt(this.#status));
      default:
        throw new VhostUserRequestError(`unsupported request ${requestName(request)} (size ${payload.length}, ${fds.length} fds)`);
    }
  }

  #setFeatures(v: bigint): void {
    const offered = this.offeredFeatures;
    if ((v & ~offered) !== 0n) {
      throw new VhostUserRequestError(`features 0x${v.toString(16)} include unoffered bits 0x${(v & ~offered).toString(16)}`);
    }
    this.#ackedFeatures = v;
    this.#featuresSet = true;
    this.#device.setFeatures(v & ~PROTOCOL_FEATURES_MASK);
    if ((v & PROTOCOL_FEATURES_MASK) === 0n) {
      // Without VHOST_USER_F_PROTOCOL_FEATURES rings are enabled from the start.
      for (const r of this.#rings) r.enabled = true;
    }
    for (const r of this.#rings) this.#tryStart(r);
  }

  #setMemTable(regions: ReturnType<typeof decodeMemTable>): void {
    const mapped: MappedRegion[] = [];
    let memory: GuestMemory;
    try {
      for (const r of regions) {
        const length = r.memorySize + r.mmapOffset;
        if (length > BigInt(Number.MAX_SAFE_INTEGER)) throw new VhostUserRequestError(`region of ${length} bytes cannot be mapped`);
        mapped.push(this.#platform.mmap(r.fd, Number(length), 0));
      }
      memory = new GuestMemory(
        regions.map((r, i) => ({
          guestPhysAddr: r.guestPhysAddr,
          memorySize: r.memorySize,
          userspaceAddr: r.userspaceAddr,
          mmapOffset: r.mmapOffset,
          buffer: (mapped[i] as MappedRegion).buffer,
        })),
      );
    } catch (e) {
      for (const m of mapped) m.unmap();
      throw e;
    }
    // Running rings move to the new table before the old mappings go away.
    for (const r of this.#rings) {
      if (r.queue === null) continue;
      try {
        r.queue.replaceMemory(memory);
      } catch (e) {
        this.#log(`ring ${r.index} stopped: ${(e as Error).message}`);
        this.#stopRing(r);
      }
    }
    this.#unmap(this.#mapping);
    this.#mapping = { memory, regions: mapped };
    for (const r of this.#rings) this.#tryStart(r);
  }

  #unmap(m: Mapping | null): void {
    if (m === null) return;
    for (const region of m.regions) {
      try {
        region.unmap();
      } catch (e) {
        this.#log(`munmap failed: ${(e as Error).message}`);
      }
    }
  }

  #resetDevice(): void {
    for (const r of this.#rings) {
      this.#stopRing(r);
      this.#dropKick(r);
      r.callFd = this.#replaceFd(r.callFd, null);
      r.errFd = this.#replaceFd(r.errFd, null);
      r.num = null;
      r.addr = null;
      r.base = 0;
      r.enabled = false;
    }
    this.#ackedFeatures = 0n;
    this.#featuresSet = false;
    this.#status = 0;
    try {
      this.#device.reset();
    } catch (e) {
      this.#log(`device reset failed: ${(e as Error).message}`);
    }
  }

  /** Replace a stored fd, closing the old one. Returns the new value. */
  #replaceFd(old: number | null, fd: number | null): number | null {
    if (old !== null && old !== fd) this.#closeFds([old]);
    return fd;
  }

  #dropKick(r: Ring): void {
    r.kickWatch?.stop();
    r.kickWatch = null;
    r.kickFd = this.#replaceFd(r.kickFd, null);
  }

  #onKick(r: Ring, fd: number): void {
    if (r.kickFd !== fd) return;
    try {
      this.#platform.eventfdRead(fd);
    } catch (e) {
      this.#log(`ring ${r.index}: kick read failed: ${(e as Error).message}`);
      return;
    }
    if (r.queue === null) return; // not running: the re-scan at start picks the work up
    try {
      this.#device.kick(r.index);
    } catch (e) {
      this.#log(`ring ${r.index}: device kick handler failed: ${(e as Error).message}`);
    }
  }

  #tryStart(r: Ring): void {
    if (r.queue !== null || this.#closed) return;
    if (!this.#featuresSet || this.#mapping === null || r.num === null || r.addr === null || r.kickFd === null || !r.enabled) return;
    const features = this.#ackedFeatures;
    let queue: SplitQueue;
    try {
      queue = new SplitQueue({
        index: r.index,
        size: r.num,
        descAddr: r.addr.desc,
        availAddr: r.addr.avail,
        usedAddr: r.addr.used,
        memory: this.#mapping.memory,
        eventIdx: (features & featureMask(VirtioFeatureBit.RING_EVENT_IDX)) !== 0n,
        indirectDesc: (features & featureMask(VirtioFeatureBit.RING_INDIRECT_DESC)) !== 0n,
        nextAvailIndex: r.base,
        notify: () => this.#signal(r),
        fence: () => this.#platform.fence(),
      });
    } catch (e) {
      this.#log(`ring ${r.index} cannot start: ${(e as Error).message}`);
      return;
    }
    r.queue = queue;
    try {
      this.#device.startQueue(queue);
    } catch (e) {
      this.#log(`ring ${r.index}: device startQueue failed: ${(e as Error).message}`);
    }
  }

  /**
   * Stop a running ring. `flush`: the front-end keeps the ring (pause, disable), so the
   * device first completes what it popped and has not answered (the reported base
   * counts those chains as consumed; unanswered they would hang the guest).
   */
  #stopRing(r: Ring, flush = false): void {
    const q = r.queue;
    if (q === null) return;
    if (flush) {
      try {
        this.#device.flushQueue?.(r.index);
      } catch (e) {
        this.#log(`ring ${r.index}: device flushQueue failed: ${(e as Error).message}`);
      }
    }
    try {
      this.#device.stopQueue(r.index);
    } catch (e) {
      this.#log(`ring ${r.index}: device stopQueue failed: ${(e as Error).message}`);
    }
    r.base = q.nextAvailIndex;
    q.detach();
    r.queue = null;
  }

  #signal(r: Ring): void {
    if (r.callFd === null) return;
    try {
      this.#platform.eventfdWrite(r.callFd, 1n);
    } catch (e) {
      this.#log(`ring ${r.index}: call signal failed: ${(e as Error).message}`);
    }
  }
}
