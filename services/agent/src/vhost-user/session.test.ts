import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { FakePlatform } from '../../../../test/support/fake-platform.ts';
import { DriverRing, GuestAllocator, GuestRam, layoutRing } from '../../../../test/support/virtio-driver.ts';
import type { DescriptorChain, Virtqueue, VirtioDevice } from '../virtio/types.ts';
import {
  decodeConfig,
  decodeState,
  decodeU64,
  encodeAddrPayload,
  encodeConfigPayload,
  encodeMemTablePayload,
  encodeStatePayload,
  encodeU64Payload,
  encodeVringFilePayload,
} from './codec.ts';
import type { VhostUserMessage } from './codec.ts';
import { HeaderFlag, Request, TRANSPORT_FEATURES } from './protocol.ts';
import { VhostUserSession } from './session.ts';

const F_IRQ = 1n;
const CONFIG = Uint8Array.from([8, 0, 0, 0, 0x20, 0, 0, 0]); // ngpio 8, names size 32

/** A tiny device: answers each request with [0, first readable byte]. */
class EchoDevice implements VirtioDevice {
  readonly deviceFeatures = TRANSPORT_FEATURES | F_IRQ;
  readonly numQueues = 2;
  readonly calls: string[] = [];
  readonly queues = new Map<number, Virtqueue>();
  features = -1n;
  /** When false, popped chains are held (in flight) instead of answered. */
  answer = true;
  readonly held: DescriptorChain[] = [];
  config(): Uint8Array {
    return CONFIG;
  }
  setFeatures(f: bigint): void {
    this.features = f;
    this.calls.push(`setFeatures(0x${f.toString(16)})`);
  }
  startQueue(q: Virtqueue): void {
    this.calls.push(`start(${q.index})`);
    this.queues.set(q.index, q);
    this.#drain(q);
  }
  kick(i: number): void {
    this.calls.push(`kick(${i})`);
    const q = this.queues.get(i);
    if (q !== undefined) this.#drain(q);
  }
  stopQueue(i: number): void {
    this.calls.push(`stop(${i})`);
    this.queues.delete(i);
  }
  reset(): void {
    this.calls.push('reset');
    this.queues.clear();
  }
  #drain(q: Virtqueue): void {
    for (let c = q.pop(); c !== null; c = q.pop()) {
      if (!this.answer) {
        this.held.push(c);
        continue;
      }
      c.write(Uint8Array.from([0, c.readable[0] ?? 0]));
      q.push(c, 2);
    }
    q.notify();
  }
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await tick();
}

const UVA = 0x7f1200000000n;
const LOW = { guestPhysAddr: 0n, memorySize: 0xa0000n, userspaceAddr: UVA, mmapOffset: 0n };
const HIGH = { guestPhysAddr: 0xc0000n, memorySize: 0x140000n, userspaceAddr: UVA + 0xc0000n, mmapOffset: 0xc0000n };

/** Plays QEMU + the guest driver against a session (no socket: messages go straight in). */
class Frontend {
  readonly platform = new FakePlatform();
  readonly device = new EchoDevice();
  readonly replies: { request: number; flags: number; payload: Uint8Array }[] = [];
  readonly logs: string[] = [];
  readonly session: VhostUserSession;
  readonly memfd: number;
  readonly ram: GuestRam;
  readonly calls = new Map<number, number>(); // ring → the front-end's call eventfd
  readonly kicks = new Map<number, number>();
  readonly rings = new Map<number, DriverRing>();
  readonly allocator = new GuestAllocator(0x180000n, 0x80000n);

  constructor() {
    this.session = new VhostUserSession({
      platform: this.platform,
      device: this.device,
      send: (b) => {
        const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
        assert.equal(dv.getUint32(8, true), b.length - 12, 'reply size field matches');
        this.replies.push({ request: dv.getUint32(0, true), flags: dv.getUint32(4, true), payload: b.slice(12) });
      },
      log: (m) => this.logs.push(m),
    });
    this.memfd = this.platform.memfd('guest-ram', 0x200000);
    const buf = this.platform.memfdBuffer(this.memfd);
    this.ram = new GuestRam([
      { gpa: 0n, bytes: new Uint8Array(buf, 0, 0xa0000) },
      { gpa: 0xc0000n, bytes: new Uint8Array(buf, 0xc0000, 0x140000) },
    ]);
  }

  /** Send a request; fds are dup'ed as SCM_RIGHTS would (the session owns the copies). Returns the reply if one came. */
  req(request: number, payload: Uint8Array = new Uint8Array(0), opts: { fds?: number[]; needReply?: boolean } = {}): { request: number; flags: number; payload: Uint8Array } | undefined {
    const before = this.replies.length;
    const msg: VhostUserMessage = {
      request,
      flags: HeaderFlag.VERSION | (opts.needReply === true ? HeaderFlag.NEED_REPLY : 0),
      payload,
      fds: (opts.fds ?? []).map((fd) => this.platform.dup(fd)),
    };
    this.session.handle(msg);
    assert.ok(this.replies.length - before <= 1, 'at most one reply per request');
    const r = this.replies[before];
    if (r !== undefined) assert.equal(r.flags, 0x5, `reply to ${request} has flags 0x5`);
    return r;
  }
  u64(request: number): bigint {
    const r = this.req(request);
    assert.ok(r !== undefined);
    return decodeU64(r.payload);
  }
  ack(request: number, payload: Uint8Array, fds?: number[]): bigint {
    const r = this.req(request, payload, { needReply: true, ...(fds === undefined ? {} : { fds }) });
    assert.ok(r !== undefined, `ack for ${request}`);
    return decodeU64(r.payload);
  }
  setCall(ring: number): number {
    const fd = this.platform.eventfd();
    const old = this.calls.get(ring);
    if (old !== undefined) this.platform.close(old);
    this.calls.set(ring, fd);
    this.req(Request.SET_VRING_CALL, encodeVringFilePayload(ring, false), { fds: [fd] });
    return fd;
  }
  setErr(ring: number): void {
    const fd = this.platform.eventfd();
    this.req(Request.SET_VRING_ERR, encodeVringFilePayload(ring, false), { fds: [fd] });
    this.platform.close(fd);
  }
  getConfig(offset: number, size: number): { request: number; flags: number; payload: Uint8Array } {
    const r = this.req(Request.GET_CONFIG, encodeConfigPayload({ offset, flags: 0, data: new Uint8Array(size) }));
    assert.ok(r !== undefined);
    return r;
  }
  memTable(): bigint {
    return this.ack(Request.SET_MEM_TABLE, encodeMemTablePayload([LOW, HIGH]), [this.memfd, this.memfd]);
  }
  /** NUM, BASE, ADDR, KICK, CALL for one ring, rings laid out in the high region. */
  configureRing(ring: number, size: number, eventIdx: boolean): DriverRing {
    const layout = layoutRing(size, 0x100000n + BigInt(ring) * 0x40000n);
    const driver = new DriverRing({ ram: this.ram, size, layout, allocator: this.allocator, eventIdx });
    this.rings.set(ring, driver);
    const toUva = (gpa: bigint): bigint => gpa - HIGH.guestPhysAddr + HIGH.userspaceAddr;
    this.req(Request.SET_VRING_NUM, encodeStatePayload({ index: ring, num: size }));
    this.req(Request.SET_VRING_BASE, encodeStatePayload({ index: ring, num: 0 }));
    this.req(Request.SET_VRING_ADDR, encodeAddrPayload({ index: ring, flags: 0, desc: toUva(layout.desc), used: toUva(layout.used), avail: toUva(layout.avail), log: 0n }));
    const kick = this.platform.eventfd();
    this.kicks.set(ring, kick);
    this.req(Request.SET_VRING_KICK, encodeVringFilePayload(ring, false), { fds: [kick] });
    this.setCall(ring);
    return driver;
  }
  /** The guest queues a request on `ring` and kicks. */
  guestRequest(ring: number, byte: number): void {
    const d = this.rings.get(ring);
    assert.ok(d !== undefined);
    d.addChain({ readable: [Uint8Array.from([byte, 0, 0, 0, 0, 0, 0, 0])], writable: [2] }, byte);
    if (d.publish()) this.platform.eventfdWrite(this.kicks.get(ring) as number, 1n);
  }
  callCount(ring: number): bigint {
    return this.platform.eventfdPeek(this.calls.get(ring) as number);
  }
  /** The session's own fds (everything open that the front-end does not hold). */
  sessionFds(): number[] {
    const mine = new Set([this.memfd, ...this.calls.values(), ...this.kicks.values()]);
    return this.platform.openFds().filter((fd) => !mine.has(fd));
  }
}

function connectPhase(fe: Frontend): void {
  const features = fe.u64(Request.GET_FEATURES);
  assert.equal(features, TRANSPORT_FEATURES | F_IRQ | (1n << 30n));
  assert.equal(fe.u64(Request.GET_PROTOCOL_FEATURES), 0x209n);
  assert.equal(fe.req(Request.SET_PROTOCOL_FEATURES, encodeU64Payload(0x209n)), undefined);
  assert.equal(fe.u64(Request.GET_QUEUE_NUM), 2n);
  assert.equal(fe.req(Request.SET_OWNER), undefined);
  fe.u64(Request.GET_FEATURES);
  for (const ring of [0, 1]) {
    fe.setCall(ring);
    fe.setErr(ring);
  }
}

function assertConfigReply(r: { payload: Uint8Array }, offset: number, bytes: number[]): void {
  assert.equal(r.payload.length, 12 + bytes.length);
  const c = decodeConfig(r.payload);
  assert.deepEqual([c.offset, c.size, [...c.data]], [offset, bytes.length, bytes]);
}

describe('VhostUserSession replaying QEMU', () => {
  it('QEMU 7.2: connect, GET_CONFIG, start with only ring 0 configured, ENABLE both, traffic, disconnect', async () => {
    const fe = new Frontend();
    connectPhase(fe);
    assertConfigReply(fe.getConfig(0, 8), 0, [...CONFIG]);
    // driver start
    const oldCallFds = fe.sessionFds();
    fe.setCall(0);
    fe.setCall(1);
    assert.equal(fe.req(Request.SET_FEATURES, encodeU64Payload(0x140000000n)), undefined);
    assert.equal(fe.device.features, 0x100000000n, 'bit 30 is not passed to the device');
    assert.equal(fe.memTable(), 0n);
    assert.equal(fe.platform.mappingCount, 2);
    fe.configureRing(0, 256, false);
    assert.ok(oldCallFds.filter((fd) => fe.platform.isOpen(fd)).length === 2, 'only the two ERR fds of the connect phase remain');
    assert.equal(fe.session.ring(0)?.running, false, 'not running before ENABLE (bit 30 negotiated)');
    assert.equal(fe.ack(Request.SET_VRING_ENABLE, encodeStatePayload({ index: 0, num: 1 })), 0n);
    assert.equal(fe.ack(Request.SET_VRING_ENABLE, encodeStatePayload({ index: 1, num: 1 })), 0n, 'never-configured ring: accepted');
    assert.equal(fe.session.ring(0)?.running, true);
    assert.equal(fe.session.ring(1)?.running, false);
    assert.equal(fe.session.ring(1)?.enabled, true);
    assert.deepEqual(fe.device.calls.filter((c) => c.startsWith('start')), ['start(0)']);
    fe.guestRequest(0, 4);
    await settle();
    assert.deepEqual(fe.device.calls.slice(-1), ['kick(0)']);
    const used = fe.rings.get(0)?.takeUsed() ?? [];
    assert.deepEqual(used.map((u) => [u.len, [...u.written]]), [[2, [0, 4]]]);
    assert.ok(fe.callCount(0) >= 1n, 'call eventfd signalled');
    fe.session.close();
    assert.deepEqual(fe.sessionFds(), [], 'every session fd closed');
    assert.equal(fe.platform.mappingCount, 0);
    assert.equal(fe.platform.watcherCount, 0);
    assert.deepEqual(fe.device.calls.slice(-2), ['stop(0)', 'reset']);
    // messages after close are ignored and their fds closed
    fe.setCall(0);
    assert.deepEqual(fe.sessionFds(), []);
  });

  it('QEMU 10.0.2: both rings, kick before enable is re-scanned, GET_CONFIG per read, poweroff sequence', async () => {
    const fe = new Frontend();
    connectPhase(fe);
    fe.setCall(0);
    fe.setCall(1);
    fe.req(Request.SET_FEATURES, encodeU64Payload(0x140000001n | TRANSPORT_FEATURES));
    assert.equal(fe.memTable(), 0n);
    fe.configureRing(0, 64, true);
    fe.configureRing(1, 64, true);
    // the guest's first request arrives before SET_VRING_ENABLE
    fe.guestRequest(0, 9);
    await settle();
    assert.ok(!fe.device.calls.includes('kick(0)'), 'kick of a disabled ring does not reach the device');
    assert.equal(fe.ack(Request.SET_VRING_ENABLE, encodeStatePayload({ index: 0, num: 1 })), 0n);
    assert.equal(fe.ack(Request.SET_VRING_ENABLE, encodeStatePayload({ index: 1, num: 1 })), 0n);
    assert.deepEqual((fe.rings.get(0)?.takeUsed() ?? []).map((u) => [...u.written]), [[0, 9]], 're-scan at start found it');
    // byte-wise config reads (old kernels) and an out-of-range one
    assertConfigReply(fe.getConfig(0, 8), 0, [...CONFIG]);
    assertConfigReply(fe.getConfig(4, 1), 4, [0x20]);
    assertConfigReply(fe.getConfig(7, 1), 7, [0]);
    assert.equal(fe.getConfig(6, 4).payload.length, 0, 'outside the config: zero-size reply');
    assert.equal(fe.getConfig(0xffffffff, 8).payload.length, 0);
    assert.equal(fe.ack(Request.SET_CONFIG, encodeConfigPayload({ offset: 0, flags: 0, data: new Uint8Array(2) })), 0n, 'SET_CONFIG acked, ignored');
    // more traffic, one request left in flight
    fe.guestRequest(0, 1);
    await settle();
    fe.device.answer = false;
    fe.guestRequest(0, 2);
    await settle();
    assert.equal(fe.device.held.length, 1);
    // poweroff: ENABLE(0) both, GET_VRING_BASE both
    fe.ack(Request.SET_VRING_ENABLE, encodeStatePayload({ index: 0, num: 0 }));
    fe.ack(Request.SET_VRING_ENABLE, encodeStatePayload({ index: 1, num: 0 }));
    assert.ok(fe.device.calls.includes('stop(0)') && fe.device.calls.includes('stop(1)'));
    const base0 = fe.req(Request.GET_VRING_BASE, encodeStatePayload({ index: 0, num: 0 }));
    const base1 = fe.req(Request.GET_VRING_BASE, encodeStatePayload({ index: 1, num: 0 }));
    assert.deepEqual(decodeState(base0?.payload ?? new Uint8Array()), { index: 0, num: 3 });
    assert.deepEqual(decodeState(base1?.payload ?? new Uint8Array()), { index: 1, num: 0 });
    // a late completion of the held chain does not touch the (stopped) ring
    const usedBefore = fe.rings.get(0)?.usedIdx;
    const held = fe.device.held[0] as DescriptorChain;
    held.write(Uint8Array.from([0, 2]));
    assert.equal(fe.rings.get(0)?.usedIdx, usedBefore);
    assert.equal(fe.session.ring(0)?.kickFd, null, 'GET_VRING_BASE dropped the kick fd');
    fe.session.close();
    assert.deepEqual(fe.sessionFds(), []);
    assert.equal(fe.platform.mappingCount, 0);
    assert.equal(fe.platform.watcherCount, 0);
  });

  it('GET_VRING_BASE stops a running ring: later kicks do not reach the device; restart resumes at the base', async () => {
    const fe = new Frontend();
    connectPhase(fe);
    fe.req(Request.SET_FEATURES, encodeU64Payload(0x140000000n));
    fe.memTable();
    const d = fe.configureRing(0, 8, false);
    fe.ack(Request.SET_VRING_ENABLE, encodeStatePayload({ index: 0, num: 1 }));
    fe.guestRequest(0, 1);
    await settle();
    const base = fe.req(Request.GET_VRING_BASE, encodeStatePayload({ index: 0, num: 0 }));
    assert.deepEqual(decodeState(base?.payload ?? new Uint8Array()), { index: 0, num: 1 });
    assert.equal(fe.session.ring(0)?.running, false);
    const kicksBefore = fe.device.calls.filter((c) => c === 'kick(0)').length;
    d.addChain({ readable: [Uint8Array.from([5])], writable: [2] });
    d.publish();
    fe.platform.eventfdWrite(fe.kicks.get(0) as number, 1n);
    await settle();
    assert.equal(fe.device.calls.filter((c) => c === 'kick(0)').length, kicksBefore);
    // restart: QEMU sends BASE (from GET_VRING_BASE) and a new KICK
    fe.req(Request.SET_VRING_BASE, encodeStatePayload({ index: 0, num: 1 }));
    const kick = fe.platform.eventfd();
    fe.req(Request.SET_VRING_KICK, encodeVringFilePayload(0, false), { fds: [kick] });
    fe.platform.close(fe.kicks.get(0) as number);
    fe.kicks.set(0, kick);
    assert.equal(fe.session.ring(0)?.running, true);
    d.takeUsed();
    fe.session.close();
    assert.deepEqual(fe.sessionFds(), []);
  });

  it('a new CALL fd replaces and closes the old one, and signals go to the new one', async () => {
    const fe = new Frontend();
    connectPhase(fe);
    fe.req(Request.SET_FEATURES, encodeU64Payload(0x140000000n));
    fe.memTable();
    fe.configureRing(0, 8, false);
    fe.ack(Request.SET_VRING_ENABLE, encodeStatePayload({ index: 0, num: 1 }));
    const oldSessionFd = fe.session.ring(0)?.callFd;
    assert.ok(oldSessionFd !== null && oldSessionFd !== undefined);
    const oldFrontFd = fe.calls.get(0) as number;
    const keepOld = fe.platform.dup(oldFrontFd); // watch the old counter after the front-end drops it
    fe.platform.eventfdRead(keepOld); // the start-up notify
    fe.setCall(0);
    assert.equal(fe.platform.isOpen(oldSessionFd), false, 'old call fd closed');
    fe.guestRequest(0, 3);
    await settle();
    assert.equal(fe.platform.eventfdPeek(keepOld), 0n);
    assert.ok(fe.callCount(0) >= 1n);
    fe.platform.close(keepOld);
    // NOFD: no more signals, old fd closed
    const current = fe.session.ring(0)?.callFd as number;
    fe.req(Request.SET_VRING_CALL, encodeVringFilePayload(0, true));
    assert.equal(fe.platform.isOpen(current), false);
    fe.session.close();
    assert.deepEqual(fe.sessionFds(), []);
  });

  it('without bit 30, rings are enabled at SET_FEATURES', () => {
    const fe = new Frontend();
    fe.req(Request.SET_OWNER);
    fe.req(Request.SET_FEATURES, encodeU64Payload(1n << 32n));
    fe.memTable();
    fe.configureRing(0, 8, false);
    assert.equal(fe.session.ring(0)?.running, true);
    fe.session.close();
  });

  it('refuses what was not offered and malformed requests, without crashing or leaking fds', () => {
    const fe = new Frontend();
    fe.u64(Request.GET_FEATURES);
    assert.notEqual(fe.ack(Request.SET_FEATURES, encodeU64Payload(1n << 35n)), 0n, 'unoffered feature');
    assert.notEqual(fe.ack(Request.SET_PROTOCOL_FEATURES, encodeU64Payload(1n << 16n)), 0n, 'unoffered protocol feature');
    assert.notEqual(fe.ack(Request.SET_MEM_TABLE, encodeMemTablePayload([LOW, HIGH]), [fe.memfd]), 0n, 'fd count mismatch');
    assert.notEqual(fe.ack(Request.SET_MEM_TABLE, encodeMemTablePayload([LOW, { ...HIGH, memorySize: 0x10000000n }]), [fe.memfd, fe.memfd]), 0n, 'region beyond the memfd');
    assert.notEqual(fe.ack(Request.SET_MEM_TABLE, encodeMemTablePayload([LOW, { ...HIGH, guestPhysAddr: 0x10000n }]), [fe.memfd, fe.memfd]), 0n, 'overlap');
    assert.equal(fe.platform.mappingCount, 0, 'failed tables leave nothing mapped');
    assert.notEqual(fe.ack(Request.SET_VRING_NUM, encodeStatePayload({ index: 0, num: 100 })), 0n, 'not a power of two');
    assert.notEqual(fe.ack(Request.SET_VRING_NUM, encodeStatePayload({ index: 5, num: 8 })), 0n, 'ring out of range');
    assert.notEqual(fe.ack(Request.SET_VRING_ENABLE, encodeStatePayload({ index: 0, num: 2 })), 0n);
    assert.notEqual(fe.ack(Request.SET_VRING_BASE, encodeStatePayload({ index: 0, num: 0x10000 })), 0n);
    assert.notEqual(fe.ack(Request.SET_VRING_NUM, new Uint8Array(7)), 0n, 'bad size');
    assert.notEqual(fe.ack(Request.SET_LOG_BASE, new Uint8Array(16), [fe.memfd]), 0n, 'not offered');
    assert.notEqual(fe.ack(99, new Uint8Array(3)), 0n, 'unknown request');
    const ev = fe.platform.eventfd();
    assert.notEqual(fe.ack(Request.SET_VRING_KICK, encodeVringFilePayload(0, true)), 0n, 'polling kick');
    assert.notEqual(fe.ack(Request.SET_VRING_KICK, encodeVringFilePayload(9, false), [ev]), 0n, 'kick for a ring that does not exist');
    assert.equal(fe.req(Request.GET_FEATURES, new Uint8Array(0), { fds: [ev] })?.payload.length, 0, 'GET_FEATURES with a stray fd: error reply, fd closed');
    fe.platform.close(ev);
    // requests that always have a reply get a zero-size one on failure (QEMU reports it)
    assert.equal(fe.req(Request.GET_MAX_MEM_SLOTS)?.payload.length, 0);
    assert.equal(fe.req(Request.GET_VRING_BASE, encodeStatePayload({ index: 7, num: 0 }))?.payload.length, 0);
    // no reply expected: just logged
    assert.equal(fe.req(123), undefined);
    assert.equal(fe.req(Request.SET_VRING_ADDR, new Uint8Array(3)), undefined);
    assert.ok(fe.logs.length >= 15);
    assert.deepEqual(fe.sessionFds(), []);
    fe.session.close();
  });

  it('SET_MEM_TABLE while running moves the rings to the new table and unmaps the old one', async () => {
    const fe = new Frontend();
    connectPhase(fe);
    fe.req(Request.SET_FEATURES, encodeU64Payload(0x140000000n));
    fe.memTable();
    fe.configureRing(0, 8, false);
    fe.ack(Request.SET_VRING_ENABLE, encodeStatePayload({ index: 0, num: 1 }));
    assert.equal(fe.memTable(), 0n);
    assert.equal(fe.platform.mappingCount, 2);
    assert.equal(fe.session.ring(0)?.running, true);
    fe.guestRequest(0, 6);
    await settle();
    assert.deepEqual((fe.rings.get(0)?.takeUsed() ?? []).map((u) => [...u.written]), [[0, 6]]);
    // a table without the rings' region stops the ring
    assert.equal(fe.ack(Request.SET_MEM_TABLE, encodeMemTablePayload([LOW]), [fe.memfd]), 0n);
    assert.equal(fe.session.ring(0)?.running, false);
    assert.equal(fe.platform.mappingCount, 1);
    fe.session.close();
    assert.equal(fe.platform.mappingCount, 0);
    assert.deepEqual(fe.sessionFds(), []);
  });
});
