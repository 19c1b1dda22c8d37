/**
 * The frontend test driver: plays QEMU (vhost-user front-end) and the guest's
 * gpio-virtio driver against a real agent over a real UNIX socket, with memfd-backed
 * guest memory, real split rings and real eventfds (the native Platform).
 *
 *   const fe = await Frontend.connect('/tmp/x.sock');
 *   await fe.start();                       // QEMU 10.x-like handshake, DRIVER_OK
 *   const r = await fe.request(GET_VALUE, 3);  // -> { status, value, usedLen, bytes }
 *   const ev = fe.armIrq(3);                // queue an eventq buffer (= unmask)
 *   await ev;                               // -> { status: VALID|INVALID, usedLen }
 *
 * Raw access (`send`, `call`, the rings) lets tests send hostile input.
 */
import { createNativePlatform } from '../../services/agent/src/os/native-platform.ts';
import type { FdSocket, MappedRegion, Platform, Watch } from '../../services/agent/src/os/platform.ts';
import { MessageReader, encodeAddrPayload, encodeMemTablePayload, encodeRequest, encodeStatePayload, encodeU64Payload, encodeVringFilePayload, type VhostUserMessage } from '../../services/agent/src/vhost-user/codec.ts';
import { HeaderFlag, ProtocolFeatureBit, Request, featureMask } from '../../services/agent/src/vhost-user/protocol.ts';
import { DriverRing, GuestAllocator, GuestRam, layoutRing, type UsedChain } from './virtio-driver.ts';

/** virtio-gpio request types. */
export const Gpio = {
  GET_NAMES: 1,
  GET_DIRECTION: 2,
  SET_DIRECTION: 3,
  GET_VALUE: 4,
  SET_VALUE: 5,
  SET_IRQ_TYPE: 6,
} as const;

export const GPIO_F_IRQ = 1n;
const VERSION_1 = featureMask(32);
const INDIRECT = featureMask(28);
const EVENT_IDX = featureMask(29);
const PROTOCOL_FEATURES = featureMask(30);

/** A fake front-end virtual address for guest RAM (ring addresses are sent as VAs). */
const FRONTEND_VA = 0x7f00_0000_0000n;

export interface GpioResponse {
  readonly status: number;
  readonly value: number;
  readonly usedLen: number;
  /** Every byte of the writable buffer. */
  readonly bytes: Uint8Array;
}

export interface EventCompletion {
  readonly status: number;
  readonly usedLen: number;
}

export interface FrontendOptions {
  /** Ring size (QEMU 10: 64, QEMU 7.2: 256). */
  readonly queueSize?: number;
  /** Guest RAM size in bytes (default 1 MiB). */
  readonly memorySize?: number;
  /** Negotiate EVENT_IDX (default true). */
  readonly eventIdx?: boolean;
  /** Negotiate INDIRECT_DESC and use indirect chains (default false: 2 descriptors, like Linux without it). */
  readonly indirect?: boolean;
  /** Negotiate VIRTIO_GPIO_F_IRQ (default true; QEMU 7.2 never does). */
  readonly irq?: boolean;
  /** How long request()/armIrq()/replies may take before the driver gives up (default 10 s). */
  readonly timeoutMs?: number;
  /**
   * Which QEMU start() imitates (default 'qemu10'). 'qemu72' changes the defaults to
   * queueSize 256, irq false, eventIdx false (7.2 sends SET_FEATURES 0x140000000).
   */
  readonly sequence?: 'qemu10' | 'qemu72';
}

/** The u64 of a REPLY_ACK / u64 reply (throws when there is none). */
function u64Of(m: VhostUserMessage | undefined): bigint {
  if (m === undefined || m.payload.length !== 8) throw new Error('expected a u64 reply');
  return new DataView(m.payload.buffer, m.payload.byteOffset, 8).getBigUint64(0, true);
}

interface Waiter<T> {
  resolve(v: T): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

export class Frontend {
  readonly platform: Platform;
  readonly socket: FdSocket;
  readonly opts: Required<FrontendOptions>;
  #reader = new MessageReader();
  #replies: VhostUserMessage[] = [];
  #replyWaiters: Waiter<VhostUserMessage>[] = [];
  #closed = false;
  #closeError: Error | undefined;

  memfd = -1;
  mapping: MappedRegion | undefined;
  ram: GuestRam | undefined;
  rings: DriverRing[] = [];
  kickFds: number[] = [];
  callFds: number[] = [];
  #watches: Watch[] = [];
  #pending = new Map<object, Waiter<UsedChain>>();
  features = 0n;
  deviceFeatures = 0n;

  private constructor(platform: Platform, socket: FdSocket, opts: FrontendOptions) {
    this.platform = platform;
    this.socket = socket;
    const q72 = opts.sequence === 'qemu72';
    this.opts = {
      queueSize: opts.queueSize ?? (q72 ? 256 : 64),
      memorySize: opts.memorySize ?? 1 << 20,
      eventIdx: opts.eventIdx ?? !q72,
      indirect: opts.indirect ?? false,
      irq: opts.irq ?? !q72,
      timeoutMs: opts.timeoutMs ?? 10_000,
      sequence: opts.sequence ?? 'qemu10',
    };
    socket.onData((data, fds) => {
      for (const fd of fds) platform.close(fd);
      const r = this.#reader.push(data);
      for (const m of r.messages) {
        const w = this.#replyWaiters.shift();
        if (w !== undefined) {
          clearTimeout(w.timer);
          w.resolve(m);
        } else this.#replies.push(m);
      }
      if (r.error !== null) this.#fail(r.error);
    });
    socket.onClose((e) => this.#fail(e ?? new Error('agent closed the vhost-user connection')));
  }

  /** Connect to an agent's socket, retrying while it is not listening yet. */
  static async connect(path: string, opts: FrontendOptions = {}, platform: Platform = createNativePlatform()): Promise<Frontend> {
    const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
    for (;;) {
      try {
        const s = await platform.connectUnix(path);
        return new Frontend(platform, s, opts);
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`cannot connect to ${path}: ${(e as Error).message}`, { cause: e });
        await new Promise((r) => setTimeout(r, 25));
      }
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  #fail(e: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeError = e;
    for (const w of this.#replyWaiters) {
      clearTimeout(w.timer);
      w.reject(e);
    }
    this.#replyWaiters = [];
    for (const w of this.#pending.values()) {
      clearTimeout(w.timer);
      w.reject(e);
    }
    this.#pending.clear();
  }

  /** Send one raw message (bytes as given) with optional fds. */
  sendRaw(bytes: Uint8Array, fds: readonly number[] = []): void {
    this.socket.send(bytes, fds);
  }

  /** Send a request; returns the reply when one is expected. */
  async send(request: number, payload?: Uint8Array, o: { fds?: readonly number[]; needReply?: boolean; expectReply?: boolean } = {}): Promise<VhostUserMessage | undefined> {
    this.socket.send(encodeRequest(request, payload, o.needReply === true ? { needReply: true } : undefined), o.fds ?? []);
    if (o.expectReply !== true && o.needReply !== true) return undefined;
    return this.nextReply(request);
  }

  /** The next reply message; checks it answers `request` with flags exactly 0x5. */
  async nextReply(request?: number): Promise<VhostUserMessage> {
    const m = this.#replies.shift() ?? (await new Promise<VhostUserMessage>((resolve, reject) => {
      if (this.#closed) {
        reject(this.#closeError ?? new Error('closed'));
        return;
      }
      const timer = setTimeout(() => reject(new Error(`no vhost-user reply within ${this.opts.timeoutMs} ms`)), this.opts.timeoutMs);
      this.#replyWaiters.push({ resolve, reject, timer });
    }));
    if (request !== undefined && m.request !== request) throw new Error(`reply to request ${m.request}, expected ${request}`);
    if (m.flags !== (HeaderFlag.VERSION | HeaderFlag.REPLY)) throw new Error(`reply flags 0x${m.flags.toString(16)}, expected 0x5`);
    return m;
  }

  async getU64(request: number): Promise<bigint> {
    const r = await this.send(request, undefined, { expectReply: true });
    if (r === undefined || r.payload.length !== 8) throw new Error('bad u64 reply');
    return new DataView(r.payload.buffer, r.payload.byteOffset, 8).getBigUint64(0, true);
  }

  async getConfig(offset = 0, size = 8): Promise<Uint8Array> {
    const p = new Uint8Array(12 + size);
    const v = new DataView(p.buffer);
    v.setUint32(0, offset, true);
    v.setUint32(4, size, true);
    const r = await this.send(Request.GET_CONFIG, p, { expectReply: true });
    if (r === undefined) throw new Error('no GET_CONFIG reply');
    return r.payload.slice(12);
  }

  /**
   * The whole handshake up to DRIVER_OK.
   *  - 'qemu10' (default): features, protocol features, owner, config, then at DRIVER_OK:
   *    SET_FEATURES, SET_MEM_TABLE, per ring NUM/BASE/ADDR/KICK/CALL, ENABLE.
   *  - 'qemu72': GET_QUEUE_NUM and GET_CONFIG at connect (before SET_FEATURES), F_IRQ never
   *    negotiated, only ring 0 configured, SET_VRING_ENABLE(1) for ring 0 AND the
   *    never-configured ring 1 (observed QEMU 7.2 behaviour).
   * `enable: false` stops before SET_VRING_ENABLE (see enableRings()).
   */
  async start(o: { enable?: boolean } = {}): Promise<void> {
    await this.negotiate();
    this.createMemory();
    await this.sendMemTable();
    for (let i = 0; i < this.ringCount; i++) await this.configureRing(i);
    if (o.enable !== false) await this.enableRings();
  }

  /** Number of rings the driver sets up: 2 with F_IRQ, else 1. */
  get ringCount(): number {
    return this.opts.irq ? 2 : 1;
  }

  /** Connect phase plus SET_FEATURES. */
  async negotiate(): Promise<void> {
    this.deviceFeatures = await this.getU64(Request.GET_FEATURES);
    const proto = await this.getU64(Request.GET_PROTOCOL_FEATURES);
    const wantProto = proto & (featureMask(ProtocolFeatureBit.REPLY_ACK) | featureMask(ProtocolFeatureBit.CONFIG) | featureMask(ProtocolFeatureBit.MQ));
    await this.send(Request.SET_PROTOCOL_FEATURES, encodeU64Payload(wantProto));
    if (this.opts.sequence === 'qemu72') {
      const n = await this.getU64(Request.GET_QUEUE_NUM);
      if (n < 1n) throw new Error(`GET_QUEUE_NUM answered ${n}`);
    }
    await this.send(Request.SET_OWNER);
    await this.getConfig();
    let f = VERSION_1 | PROTOCOL_FEATURES;
    if (this.opts.irq) f |= GPIO_F_IRQ;
    if (this.opts.eventIdx) f |= EVENT_IDX;
    if (this.opts.indirect) f |= INDIRECT;
    this.features = f & (this.deviceFeatures | PROTOCOL_FEATURES);
    await this.send(Request.SET_FEATURES, encodeU64Payload(this.features));
  }

  /** Create the guest RAM (memfd, mapped here) and the driver-side rings in it. No message sent. */
  createMemory(): void {
    const size = this.opts.memorySize;
    this.memfd = this.platform.memfd('gf-guest-ram', size);
    this.mapping = this.platform.mmap(this.memfd, size, 0);
    this.ram = new GuestRam([{ gpa: 0n, bytes: new Uint8Array(this.mapping.buffer) }]);
    const nq = this.ringCount;
    const q = this.opts.queueSize;
    const ringBytes = 0x3000 + 16 * q + 8 * q;
    const ringsEnd = BigInt(nq * ringBytes);
    const alloc = new GuestAllocator(ringsEnd, BigInt(size) - ringsEnd);
    for (let i = 0; i < nq; i++) {
      const layout = layoutRing(q, BigInt(i * ringBytes));
      this.rings.push(new DriverRing({ ram: this.ram, size: q, layout, allocator: alloc, eventIdx: this.opts.eventIdx, fence: () => this.platform.fence() }));
    }
  }

  /** SET_MEM_TABLE (one region, NEED_REPLY); returns the ack value (0 = success). */
  async sendMemTable(): Promise<bigint> {
    const r = await this.send(Request.SET_MEM_TABLE, encodeMemTablePayload([{ guestPhysAddr: 0n, memorySize: BigInt(this.opts.memorySize), userspaceAddr: FRONTEND_VA, mmapOffset: 0n }]), { fds: [this.memfd], needReply: true });
    return u64Of(r);
  }

  /** The front-end virtual address QEMU would send for guest-physical `gpa`. */
  va(gpa: bigint): bigint {
    return FRONTEND_VA + gpa;
  }

  /** SET_VRING_NUM/BASE/ADDR/KICK/CALL for ring `i` (ADDR overridable for hostile tests). */
  async configureRing(i: number, o: { addr?: { desc: bigint; avail: bigint; used: bigint } } = {}): Promise<void> {
    const ring = this.rings[i];
    if (ring === undefined) throw new Error(`no ring ${i}`);
    const layout = ring.layout;
    await this.send(Request.SET_VRING_NUM, encodeStatePayload({ index: i, num: ring.size }));
    await this.send(Request.SET_VRING_BASE, encodeStatePayload({ index: i, num: 0 }));
    const a = o.addr ?? { desc: this.va(layout.desc), avail: this.va(layout.avail), used: this.va(layout.used) };
    await this.send(Request.SET_VRING_ADDR, encodeAddrPayload({ index: i, flags: 0, desc: a.desc, used: a.used, avail: a.avail, log: 0n }));
    await this.setKick(i);
    const call = this.platform.eventfd();
    this.callFds[i] = call;
    await this.send(Request.SET_VRING_CALL, encodeVringFilePayload(i, false), { fds: [call] });
    this.#watches.push(this.platform.watchReadable(call, () => this.#onCall(i)));
  }

  /** A new kick eventfd for ring `i` (the old one closed), sent with SET_VRING_KICK. */
  async setKick(i: number): Promise<void> {
    const old = this.kickFds[i];
    const kick = this.platform.eventfd();
    this.kickFds[i] = kick;
    await this.send(Request.SET_VRING_KICK, encodeVringFilePayload(i, false), { fds: [kick] });
    if (old !== undefined && old >= 0) this.platform.close(old);
  }

  /** SET_VRING_ENABLE for every ring (QEMU 7.2: both rings even when only one was configured). */
  async enableRings(on = true): Promise<void> {
    const n = this.opts.sequence === 'qemu72' ? 2 : this.ringCount;
    for (let i = 0; i < n; i++) {
      const ack = await this.send(Request.SET_VRING_ENABLE, encodeStatePayload({ index: i, num: on ? 1 : 0 }), { needReply: true });
      if (u64Of(ack) !== 0n) throw new Error(`SET_VRING_ENABLE(${i}, ${on ? 1 : 0}) failed`);
    }
  }

  /** GET_VRING_BASE (the ring stops): the next avail index the back-end would process. */
  async getVringBase(i: number): Promise<number> {
    const r = await this.send(Request.GET_VRING_BASE, encodeStatePayload({ index: i, num: 0 }), { expectReply: true });
    if (r === undefined || r.payload.length !== 8) throw new Error('bad GET_VRING_BASE reply');
    const v = new DataView(r.payload.buffer, r.payload.byteOffset, 8);
    if (v.getUint32(0, true) !== i) throw new Error(`GET_VRING_BASE reply for ring ${v.getUint32(0, true)}, expected ${i}`);
    return v.getUint32(4, true);
  }

  /** Restart a ring stopped by GET_VRING_BASE (what QEMU does on resume): BASE, a new KICK, ENABLE. */
  async resumeRing(i: number, base: number): Promise<void> {
    await this.send(Request.SET_VRING_BASE, encodeStatePayload({ index: i, num: base }));
    await this.setKick(i);
    const ack = await this.send(Request.SET_VRING_ENABLE, encodeStatePayload({ index: i, num: 1 }), { needReply: true });
    if (u64Of(ack) !== 0n) throw new Error(`SET_VRING_ENABLE(${i}, 1) failed`);
  }

  /** Signal ring `i`'s kick eventfd (after raw ring edits). */
  kick(i: number): void {
    const fd = this.kickFds[i];
    if (fd === undefined) throw new Error(`no kick fd for ring ${i}`);
    this.platform.eventfdWrite(fd, 1n);
  }

  #onCall(i: number): void {
    this.platform.eventfdRead(this.callFds[i] as number);
    const ring = this.rings[i];
    if (ring === undefined) return;
    let used: UsedChain[];
    try {
      used = ring.takeUsed();
    } catch (e) {
      // The device returned something the driver never gave it: fail every waiter.
      this.#fail(e as Error);
      return;
    }
    for (const u of used) {
      const w = this.#pending.get(u.token as object);
      if (w === undefined) continue;
      this.#pending.delete(u.token as object);
      clearTimeout(w.timer);
      w.resolve(u);
    }
  }

  /** Add a chain to ring `i`, publish, kick; resolves with the used entry. */
  submit(i: number, readable: Uint8Array[], writable: number[], o: { kick?: boolean } = {}): Promise<UsedChain> {
    const ring = this.rings[i];
    if (ring === undefined) return Promise.reject(new Error(`no ring ${i}`));
    if (this.#closed) return Promise.reject(this.#closeError ?? new Error('closed'));
    const token = {};
    const p = new Promise<UsedChain>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(token);
        reject(new Error(`no used entry on ring ${i} within ${this.opts.timeoutMs} ms`));
      }, this.opts.timeoutMs);
      this.#pending.set(token, { resolve, reject, timer });
    });
    ring.addChain({ readable, writable, indirect: this.opts.indirect }, token);
    const wants = ring.publish();
    if (o.kick !== false && wants) this.platform.eventfdWrite(this.kickFds[i] as number, 1n);
    return p;
  }

  /** A requestq round trip. `writable` defaults to 2 (the response size). */
  async request(type: number, gpio: number, value = 0, writable = 2): Promise<GpioResponse> {
    const req = new Uint8Array(8);
    const v = new DataView(req.buffer);
    v.setUint16(0, type, true);
    v.setUint16(2, gpio, true);
    v.setUint32(4, value, true);
    const u = await this.submit(0, [req], [writable]);
    return { status: u.written[0] ?? 255, value: u.written[1] ?? 255, usedLen: u.len, bytes: u.written };
  }

  /** Queue an eventq buffer for `gpio` (= unmask); resolves when the device returns it. */
  armIrq(gpio: number): Promise<EventCompletion> {
    const req = new Uint8Array(2);
    new DataView(req.buffer).setUint16(0, gpio, true);
    return this.submit(1, [req], [1]).then((u) => ({ status: u.written[0] ?? 255, usedLen: u.len }));
  }

  /** Close the connection and release every fd and mapping. */
  close(): void {
    for (const w of this.#watches) w.stop();
    this.#watches = [];
    this.socket.close();
    for (const fd of [...this.kickFds, ...this.callFds]) if (fd !== undefined && fd >= 0) this.platform.close(fd);
    this.kickFds = [];
    this.callFds = [];
    if (this.memfd >= 0) this.platform.close(this.memfd);
    this.memfd = -1;
    this.mapping?.unmap();
    this.mapping = undefined;
    this.#fail(new Error('front-end closed'));
  }
}
