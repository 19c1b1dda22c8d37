/**
 * Target "session": sequences of well-formed and malformed vhost-user messages into a
 * VhostUserSession over the FakePlatform, serving a GpioDevice on a StandaloneBackend.
 *
 * Generated per run: 1..40 steps, each one of
 *  - a well-formed request for a random id (features, protocol features, owner, reset,
 *    SET_MEM_TABLE with fresh memfds, vring num/addr/base/enable, GET_VRING_BASE,
 *    KICK/CALL/ERR with a fresh eventfd or NOFD, config, status, queue num), with random
 *    ring indexes and values (in and out of range);
 *  - a malformed one: any request id (known or unknown, up to u32), a random payload,
 *    0..3 random fds (memfds or eventfds);
 *  - flags: version 1, optionally NEED_REPLY, sometimes the REPLY bit or random bits;
 *  - a kick of a ring (written to a copy of a kick eventfd handed over earlier), random
 *    bytes scribbled into guest memory (rings included), or an event-loop turn.
 * Properties:
 *  - handle() never throws; the device never makes the process throw;
 *  - replies: exactly one for requests that always have one or carry NEED_REPLY, none
 *    otherwise; each has flags exactly 0x5, the request's id, a size field equal to its
 *    payload, and a size the request allows (u64 = 8, GET_VRING_BASE = 8, GET_CONFIG =
 *    12 + asked size, REPLY_ACK = 8 with 0 or 1; 0 = the error reply);
 *  - after session.close() and the device settling, the fake platform has no fd, no
 *    mapping and no watcher left (the run's own fd copies are closed first).
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { StandaloneBackend } from '../../../services/agent/src/backend/standalone-backend.ts';
import { GpioDevice, silentLogger } from '../../../services/agent/src/device/gpio-device.ts';
import {
  encodeAddrPayload,
  encodeConfigPayload,
  encodeMemTablePayload,
  encodeMessage,
  encodeStatePayload,
  encodeU64Payload,
  encodeVringFilePayload,
} from '../../../services/agent/src/vhost-user/codec.ts';
import { HEADER_SIZE, HeaderFlag, REPLY_FLAGS, REQUESTS_WITH_REPLY, Request } from '../../../services/agent/src/vhost-user/protocol.ts';
import { VhostUserSession } from '../../../services/agent/src/vhost-user/session.ts';
import { FakePlatform } from '../../support/fake-platform.ts';
import { U64_MAX } from '../target.ts';
import type { FuzzTarget } from '../target.ts';

const MEM_SIZE = 0x10000;
const GPA = 0x100000n;
const UVA = 0x7f12_3400_0000n;

type FdSpec = 'memfd' | 'eventfd';
type Step =
  | { readonly kind: 'msg'; readonly request: number; readonly flags: number; readonly payload: Uint8Array; readonly fds: readonly FdSpec[] }
  | { readonly kind: 'kick'; readonly which: number }
  | { readonly kind: 'scribble'; readonly offset: number; readonly bytes: Uint8Array }
  | { readonly kind: 'turn' };

const ringIndex = fc.oneof({ weight: 8, arbitrary: fc.nat(1) }, { weight: 1, arbitrary: fc.nat(0xff) }, { weight: 1, arbitrary: fc.nat() });
const u64Arb = fc.oneof(fc.bigInt({ min: 0n, max: U64_MAX }), fc.constantFrom(0n, 1n, 0x1_4000_0001n, 0x1_7000_0001n, 0x40000000n | (1n << 32n) | 1n));
const features = fc.oneof(
  fc.constantFrom(0x1_7000_0001n, 0x1_3000_0001n, 0x1_0000_0001n, 0x1_4000_0001n, 0x1_0000_0000n),
  u64Arb,
);
const ringAddr = (index: number, part: number): bigint => UVA + BigInt(index & 1) * 0x4000n + BigInt(part) * 0x1000n;

/** A well-formed request: [request, payload, fds]. */
const wellFormed: fc.Arbitrary<[number, Uint8Array, FdSpec[]]> = fc.oneof(
  fc.constantFrom(Request.GET_FEATURES, Request.GET_PROTOCOL_FEATURES, Request.SET_OWNER, Request.RESET_OWNER, Request.GET_QUEUE_NUM, Request.GET_STATUS, Request.RESET_DEVICE)
    .map((r): [number, Uint8Array, FdSpec[]] => [r, new Uint8Array(0), []]),
  features.map((f): [number, Uint8Array, FdSpec[]] => [Request.SET_FEATURES, encodeU64Payload(f), []]),
  fc.oneof(fc.constantFrom(0x209n, 0x9n, 0n, 0x200n), u64Arb).map((f): [number, Uint8Array, FdSpec[]] => [Request.SET_PROTOCOL_FEATURES, encodeU64Payload(f), []]),
  fc
    .record({
      n: fc.integer({ min: 1, max: 2 }),
      gpa: fc.oneof(fc.constant(GPA), fc.bigInt({ min: 0n, max: 1n << 48n }), fc.constant(U64_MAX - 0xffffn)),
      size: fc.oneof(fc.constant(BigInt(MEM_SIZE)), fc.bigInt({ min: 1n, max: BigInt(MEM_SIZE) }), fc.bigInt({ min: 1n, max: U64_MAX })),
      mmapOffset: fc.oneof(fc.constant(0n), fc.bigInt({ min: 0n, max: 0x2000n })),
    })
    .map(({ n, gpa, size, mmapOffset }): [number, Uint8Array, FdSpec[]] => {
      const regions = Array.from({ length: n }, (_, i) => ({
        guestPhysAddr: (gpa + BigInt(i) * 0x1000000n) & U64_MAX,
        memorySize: size,
        userspaceAddr: UVA + BigInt(i) * 0x1000000n,
        mmapOffset,
      }));
      // a region the fd cannot back would wrap: keep the payload encodable
      return [Request.SET_MEM_TABLE, encodeMemTablePayload(regions), Array.from({ length: n }, () => 'memfd' as const)];
    }),
  fc.record({ index: ringIndex, num: fc.oneof(fc.constantFrom(1, 2, 8, 64, 256), fc.nat(0x10000), fc.nat()) })
    .map((s): [number, Uint8Array, FdSpec[]] => [Request.SET_VRING_NUM, encodeStatePayload(s), []]),
  fc.record({ index: ringIndex, num: fc.oneof(fc.nat(8), fc.nat(0xffff), fc.nat()) }).chain((s) =>
    fc.constantFrom(Request.SET_VRING_BASE, Request.GET_VRING_BASE, Request.SET_VRING_ENABLE).map((r): [number, Uint8Array, FdSpec[]] => [
      r,
      encodeStatePayload(r === Request.SET_VRING_ENABLE ? { index: s.index, num: s.num % 3 === 2 ? s.num : s.num % 2 } : s),
      [],
    ]),
  ),
  fc
    .record({ index: ringIndex, flags: fc.oneof(fc.constant(0), fc.nat()), raw: fc.option(fc.tuple(u64Arb, u64Arb, u64Arb), { nil: undefined }) })
    .map(({ index, flags, raw }): [number, Uint8Array, FdSpec[]] => [
      Request.SET_VRING_ADDR,
      encodeAddrPayload({
        index, flags,
        desc: raw?.[0] ?? ringAddr(index, 0), avail: raw?.[1] ?? ringAddr(index, 1), used: raw?.[2] ?? ringAddr(index, 2), log: 0n,
      }),
      [],
    ]),
  fc.record({ r: fc.constantFrom(Request.SET_VRING_KICK, Request.SET_VRING_CALL, Request.SET_VRING_ERR), index: fc.oneof(fc.nat(1), fc.nat(0xff)), nofd: fc.boolean() })
    .map(({ r, index, nofd }): [number, Uint8Array, FdSpec[]] => [r, encodeVringFilePayload(index, nofd), nofd ? [] : ['eventfd']]),
  fc.record({ r: fc.constantFrom(Request.GET_CONFIG, Request.SET_CONFIG), offset: fc.oneof(fc.nat(8), fc.nat()), size: fc.nat(16), flags: fc.nat(1) })
    .map(({ r, offset, size, flags }): [number, Uint8Array, FdSpec[]] => [r, encodeConfigPayload({ offset, flags, data: new Uint8Array(size) }), []]),
  fc.oneof(fc.nat(0xff), fc.nat()).map((v): [number, Uint8Array, FdSpec[]] => [Request.SET_STATUS, encodeU64Payload(BigInt(v)), []]),
);

const malformed: fc.Arbitrary<[number, Uint8Array, FdSpec[]]> = fc.tuple(
  fc.oneof({ weight: 6, arbitrary: fc.nat(45) }, { weight: 1, arbitrary: fc.nat() }),
  fc.oneof(fc.uint8Array({ maxLength: 48 }), fc.constantFrom(0, 8, 12, 40, 72).chain((n) => fc.uint8Array({ minLength: n, maxLength: n }))),
  fc.array(fc.constantFrom<FdSpec>('memfd', 'eventfd'), { maxLength: 3 }),
);

const flagsArb = fc.oneof(
  { weight: 10, arbitrary: fc.constantFrom(HeaderFlag.VERSION, HeaderFlag.VERSION | HeaderFlag.NEED_REPLY) },
  { weight: 1, arbitrary: fc.constant(HeaderFlag.VERSION | HeaderFlag.REPLY) },
  { weight: 1, arbitrary: fc.nat(0xff).map((f) => (f & ~3) | 1) },
);

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 15,
    arbitrary: fc.tuple(fc.oneof({ weight: 4, arbitrary: wellFormed }, { weight: 1, arbitrary: malformed }), flagsArb).map(([[request, payload, fds], flags]): Step => ({ kind: 'msg', request, flags, payload, fds })),
  },
  { weight: 2, arbitrary: fc.nat(3).map((which): Step => ({ kind: 'kick', which })) },
  { weight: 1, arbitrary: fc.record({ offset: fc.oneof(fc.constantFrom(0x1000, 0x2000, 0x5000, 0x6000), fc.nat(MEM_SIZE - 1)), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }).map((s): Step => ({ kind: 'scribble', ...s })) },
  { weight: 1, arbitrary: fc.constant<Step>({ kind: 'turn' }) },
);

/** The standard bring-up, so that many runs reach running rings before the random steps. */
function bringUp(): Step[] {
  const m = (request: number, payload: Uint8Array, fds: FdSpec[] = []): Step => ({ kind: 'msg', request, flags: HeaderFlag.VERSION, payload, fds });
  const steps: Step[] = [
    m(Request.SET_FEATURES, encodeU64Payload(0x1_7000_0001n)),
    m(Request.SET_MEM_TABLE, encodeMemTablePayload([{ guestPhysAddr: GPA, memorySize: BigInt(MEM_SIZE), userspaceAddr: UVA, mmapOffset: 0n }]), ['memfd']),
  ];
  for (const index of [0, 1]) {
    steps.push(m(Request.SET_VRING_NUM, encodeStatePayload({ index, num: 8 })));
    steps.push(m(Request.SET_VRING_ADDR, encodeAddrPayload({ index, flags: 0, desc: ringAddr(index, 0), avail: ringAddr(index, 1), used: ringAddr(index, 2), log: 0n })));
    steps.push(m(Request.SET_VRING_KICK, encodeVringFilePayload(index, false), ['eventfd']));
    steps.push(m(Request.SET_VRING_CALL, encodeVringFilePayload(index, false), ['eventfd']));
    steps.push(m(Request.SET_VRING_ENABLE, encodeStatePayload({ index, num: 1 })));
  }
  return steps;
}

const inputArb = fc.record({ bringUp: fc.boolean(), steps: fc.array(stepArb, { minLength: 1, maxLength: 40 }) });
type Input = typeof inputArb extends fc.Arbitrary<infer T> ? T : never;

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

function allowedReplySizes(request: number, payload: Uint8Array): number[] {
  switch (request) {
    case Request.GET_FEATURES:
    case Request.GET_PROTOCOL_FEATURES:
    case Request.GET_QUEUE_NUM:
    case Request.GET_STATUS:
    case Request.GET_VRING_BASE:
      return [0, 8];
    case Request.GET_CONFIG: {
      const asked = payload.length >= 8 ? new DataView(payload.buffer, payload.byteOffset, payload.byteLength).getUint32(4, true) : -1;
      return asked >= 0 ? [0, 12 + asked] : [0];
    }
    default:
      return [0];
  }
}

async function run(input: Input): Promise<void> {
  const platform = new FakePlatform();
  const backend = new StandaloneBackend({ ngpio: 4, names: ['a', 'b', '', 'd'] });
  await backend.start();
  const device = new GpioDevice({ backend, log: silentLogger, requestDeadlineMs: 1000 });
  const replies: Uint8Array[] = [];
  const session = new VhostUserSession({ platform, device, send: (b) => replies.push(b) });
  const kept: number[] = []; // our own copies of eventfds handed over (to kick)
  const memories: Uint8Array[] = [];
  const steps = [...(input.bringUp ? bringUp() : []), ...input.steps];
  try {
    for (const step of steps) {
      if (step.kind === 'turn') {
        await turn();
      } else if (step.kind === 'kick') {
        const fd = kept[step.which % Math.max(1, kept.length)];
        if (fd !== undefined) platform.eventfdWrite(fd, 1n);
        await turn();
      } else if (step.kind === 'scribble') {
        const mem = memories[memories.length - 1];
        if (mem !== undefined) mem.set(step.bytes.subarray(0, Math.max(0, mem.length - step.offset)), Math.min(step.offset, mem.length));
      } else {
        const fds = step.fds.map((k) => {
          if (k === 'memfd') {
            const fd = platform.memfd('guest', MEM_SIZE);
            memories.push(new Uint8Array(platform.memfdBuffer(fd)));
            return fd;
          }
          const fd = platform.eventfd();
          kept.push(platform.dup(fd));
          return fd;
        });
        const before = replies.length;
        try {
          session.handle({ request: step.request, flags: step.flags, payload: step.payload, fds });
        } catch (e) {
          assert.fail(`session.handle threw ${String(e)}`);
        }
        const got = replies.slice(before);
        const mustReply = REQUESTS_WITH_REPLY.has(step.request) || (step.flags & HeaderFlag.NEED_REPLY) !== 0;
        assert.equal(got.length, mustReply ? 1 : 0, `replies to request ${step.request} flags 0x${step.flags.toString(16)}`);
        const r = got[0];
        if (r === undefined) continue;
        assert.ok(r.length >= HEADER_SIZE);
        const dv = new DataView(r.buffer, r.byteOffset, r.byteLength);
        assert.equal(dv.getUint32(0, true), step.request, 'reply request id');
        assert.equal(dv.getUint32(4, true), REPLY_FLAGS, 'reply flags are exactly 0x5');
        const size = dv.getUint32(8, true);
        assert.equal(size, r.length - HEADER_SIZE, 'reply size field = payload length');
        if (REQUESTS_WITH_REPLY.has(step.request)) {
          const allowed = allowedReplySizes(step.request, step.payload);
          assert.ok(allowed.includes(size), `reply of ${size} bytes to request ${step.request} (allowed ${allowed.join('/')})`);
        } else {
          assert.equal(size, 8, 'REPLY_ACK is a u64');
          const v = dv.getBigUint64(HEADER_SIZE, true);
          assert.ok(v === 0n || v === 1n, `REPLY_ACK value ${v}`);
        }
      }
    }
  } finally {
    session.close();
    await turn();
    await turn();
    device.close();
    await backend.close();
    for (const fd of kept) platform.close(fd);
  }
  assert.deepEqual(platform.openFds(), [], 'fds left open after close');
  assert.equal(platform.mappingCount, 0, 'mappings left after close');
  assert.equal(platform.watcherCount, 0, 'watchers left after close');
}

export const sessionTarget: FuzzTarget = {
  name: 'session',
  description: 'random well-formed / malformed vhost-user messages, kicks and guest-memory scribbles -> VhostUserSession + GpioDevice',
  weight: 15,
  testRuns: 500,
  property: () => fc.asyncProperty(inputArb, run),
};
