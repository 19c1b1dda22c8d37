/**
 * Target "codec": hostile byte streams into MessageReader, then every framed message into
 * every payload decoder.
 *
 * Streams mix valid requests (random ids, flags and payloads, so framing holds for a
 * while), garbage headers (bad version bits, sizes over the limit) and raw noise, cut into
 * random chunks, each chunk carrying 0..10 fresh fds. Properties:
 *  - push() never throws; it returns messages plus null or a typed VhostUserCodecError;
 *  - every fd handed in comes back exactly once: attached to a message, in an error's
 *    `fds`, or from takePendingFds() at the end (no fd lost, none duplicated);
 *  - no message carries more than MAX_FDS_PER_MESSAGE fds, payload length equals the
 *    header's size field and is within the reader's limit;
 *  - after a failure every later push answers CLOSED and hands its fds straight back;
 *  - decoders (u64, state, addr, mem table, vring file, config, expectNoFds) throw only
 *    VhostUserCodecError, and what they return stays inside the payload's domain.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  CodecErrorKind,
  MessageReader,
  VhostUserCodecError,
  decodeAddr,
  decodeConfig,
  decodeMemTable,
  decodeState,
  decodeU64,
  decodeVringFile,
  encodeMessage,
  expectNoFds,
} from '../../../services/agent/src/vhost-user/codec.ts';
import { HEADER_SIZE, MAX_CONFIG_SIZE, MAX_FDS_PER_MESSAGE, MAX_MEM_REGIONS, MAX_PAYLOAD_SIZE } from '../../../services/agent/src/vhost-user/protocol.ts';
import type { FuzzTarget } from '../target.ts';

const pieceArb = fc.oneof(
  // a well-framed message: version bit set, random other flags
  {
    weight: 6,
    arbitrary: fc
      .record({
        request: fc.oneof(fc.integer({ min: 0, max: 45 }), fc.nat()),
        flags: fc.nat(0xff).map((f) => (f & ~0x3) | 0x1),
        payload: fc.oneof(fc.uint8Array({ maxLength: 48 }), fc.constantFrom(8, 12, 40, 72, 264).chain((n) => fc.uint8Array({ minLength: n, maxLength: n }))),
      })
      .map((m) => encodeMessage(m.request, m.flags, m.payload)),
  },
  // a header that lies: bad version bits or an oversized / huge size field
  {
    weight: 1,
    arbitrary: fc
      .record({ request: fc.nat(), flags: fc.nat(), size: fc.oneof(fc.nat(64), fc.constant(MAX_PAYLOAD_SIZE + 1), fc.constant(0xffffffff), fc.nat()) })
      .map((h) => {
        const b = new Uint8Array(HEADER_SIZE);
        const dv = new DataView(b.buffer);
        dv.setUint32(0, h.request, true);
        dv.setUint32(4, h.flags, true);
        dv.setUint32(8, h.size, true);
        return b;
      }),
  },
  // noise
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 40 }) },
);

const inputArb = fc.record({
  pieces: fc.array(pieceArb, { maxLength: 10 }),
  cuts: fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 12 }),
  fdCounts: fc.array(fc.oneof({ weight: 5, arbitrary: fc.nat(2) }, { weight: 1, arbitrary: fc.nat(10) }), { minLength: 1, maxLength: 12 }),
  maxPayload: fc.oneof(fc.constant(MAX_PAYLOAD_SIZE), fc.nat(300)),
  extraPushes: fc.nat(2),
});

function checkDecoders(payload: Uint8Array, fds: readonly number[]): void {
  const attempts: (() => void)[] = [
    () => {
      const v = decodeU64(payload);
      assert.ok(v >= 0n && v < 1n << 64n);
    },
    () => {
      const s = decodeState(payload);
      assert.ok(s.index >= 0 && s.index <= 0xffffffff && s.num >= 0 && s.num <= 0xffffffff);
    },
    () => decodeAddr(payload),
    () => {
      const regions = decodeMemTable(payload, fds);
      assert.ok(regions.length <= MAX_MEM_REGIONS);
      assert.equal(regions.length, fds.length);
      regions.forEach((r, i) => {
        assert.equal(r.fd, fds[i]);
        assert.ok(r.memorySize > 0n);
        assert.ok(r.guestPhysAddr + r.memorySize <= 1n << 64n);
      });
    },
    () => {
      const f = decodeVringFile(payload, fds);
      assert.ok(f.index >= 0 && f.index <= 0xff);
      if (f.fd !== null) assert.ok(fds.includes(f.fd));
    },
    () => {
      const c = decodeConfig(payload);
      assert.ok(c.size <= MAX_CONFIG_SIZE);
      assert.equal(c.data.length, c.size);
    },
    () => expectNoFds(fds, 'fuzz'),
  ];
  for (const f of attempts) {
    try {
      f();
    } catch (e) {
      if (e instanceof assert.AssertionError) throw e;
      assert.ok(e instanceof VhostUserCodecError, `decoder threw ${String(e)}`);
    }
  }
}

export const codecTarget: FuzzTarget = {
  name: 'codec',
  description: 'random byte streams in random chunks with random fds -> MessageReader and decoders',
  weight: 45,
  testRuns: 3000,
  property: () =>
    fc.property(inputArb, (input) => {
      const stream = new Uint8Array(input.pieces.reduce((n, p) => n + p.length, 0));
      let o = 0;
      for (const p of input.pieces) {
        stream.set(p, o);
        o += p.length;
      }
      const reader = new MessageReader({ maxPayload: input.maxPayload });
      let nextFd = 1;
      const seen: number[] = [];
      let failed = false;
      const pushOne = (chunk: Uint8Array, fds: number[]): void => {
        let res: ReturnType<MessageReader['push']>;
        try {
          res = reader.push(chunk, fds);
        } catch (e) {
          assert.fail(`MessageReader.push threw ${String(e)}`);
        }
        for (const m of res.messages) {
          assert.ok(!failed, 'a message after the reader failed');
          assert.ok(m.fds.length <= MAX_FDS_PER_MESSAGE, `${m.fds.length} fds on one message`);
          assert.ok(m.payload.length <= input.maxPayload);
          assert.equal((m.flags & 0x3), 1, 'framed message without version 1');
          seen.push(...m.fds);
          checkDecoders(m.payload, m.fds);
        }
        if (res.error !== null) {
          assert.ok(res.error instanceof VhostUserCodecError);
          assert.ok(res.error.fatal, `non-fatal ${res.error.kind} from the reader`);
          if (failed) {
            assert.equal(res.error.kind, CodecErrorKind.CLOSED);
            assert.equal(res.messages.length, 0);
          }
          failed = true;
          seen.push(...res.error.fds);
        }
      };
      let off = 0;
      let ci = 0;
      while (off < stream.length || ci === 0) {
        const n = input.cuts[ci % input.cuts.length] as number;
        const k = input.fdCounts[ci % input.fdCounts.length] as number;
        ci++;
        const fds = Array.from({ length: k }, () => nextFd++);
        pushOne(stream.slice(off, off + n), fds);
        off += n;
        if (stream.length === 0) break;
      }
      for (let i = 0; i < input.extraPushes; i++) pushOne(new Uint8Array(0), [nextFd++]);
      seen.push(...reader.takePendingFds());
      assert.deepEqual(
        seen.sort((a, b) => a - b),
        Array.from({ length: nextFd - 1 }, (_, i) => i + 1),
        'every fd handed in is returned exactly once',
      );
      if (!failed) assert.ok(reader.bufferedBytes < HEADER_SIZE + Math.max(input.maxPayload, 0) + 1);
    }),
};
