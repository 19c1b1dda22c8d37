import { describe, it } from 'node:test';
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
  encodeAck,
  encodeAddrPayload,
  encodeConfigPayload,
  encodeConfigReply,
  encodeMemTablePayload,
  encodeMessage,
  encodeRequest,
  encodeStatePayload,
  encodeStateReply,
  encodeU64Payload,
  encodeU64Reply,
  encodeVringFilePayload,
} from './codec.ts';
import { HEADER_SIZE, MAX_PAYLOAD_SIZE, REPLY_FLAGS, Request } from './protocol.ts';

const FC = { seed: 20240611, numRuns: 2000 } as const;

function header(b: Uint8Array): { request: number; flags: number; size: number } {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return { request: dv.getUint32(0, true), flags: dv.getUint32(4, true), size: dv.getUint32(8, true) };
}

function codecError(kind: string) {
  return (e: unknown): boolean => e instanceof VhostUserCodecError && e.kind === kind;
}

describe('MessageReader framing', () => {
  it('reassembles messages split at every byte and attaches fds to the message they came with', () => {
    const a = encodeRequest(Request.GET_FEATURES);
    const b = encodeRequest(Request.SET_VRING_CALL, encodeVringFilePayload(1, false));
    const c = encodeRequest(Request.SET_OWNER);
    const stream = new Uint8Array([...a, ...b, ...c]);
    for (let cut = 1; cut < stream.length; cut++) {
      const r = new MessageReader();
      // b's first byte arrives with fd 7 (as SCM_RIGHTS attaches fds to a sendmsg's first byte)
      const bStart = a.length;
      const first = stream.slice(0, Math.min(cut, bStart));
      const out = [...r.push(first, []).messages];
      let pos = first.length;
      if (pos < bStart) {
        out.push(...r.push(stream.slice(pos, bStart), []).messages);
        pos = bStart;
      }
      // the kernel ends a read after the skb that carried fds: the chunk stops at b's end
      const second = stream.slice(pos, Math.min(bStart + b.length, Math.max(pos + 1, cut)));
      out.push(...r.push(second, [7]).messages);
      pos += second.length;
      out.push(...r.push(stream.slice(pos), []).messages);
      assert.deepEqual(out.map((m) => m.request), [Request.GET_FEATURES, Request.SET_VRING_CALL, Request.SET_OWNER]);
      assert.deepEqual(out.map((m) => m.fds), [[], [7], []], `cut ${cut}`);
      assert.equal(r.bufferedBytes, 0);
    }
  });

  it('gives fds arriving mid-message to that message, and hands back fds of an incomplete one', () => {
    const r = new MessageReader();
    const m = encodeRequest(Request.SET_MEM_TABLE, new Uint8Array(40));
    assert.equal(r.push(m.slice(0, 20), []).messages.length, 0);
    assert.equal(r.push(m.slice(20, 30), [3, 4]).messages.length, 0);
    assert.deepEqual(r.takePendingFds(), [3, 4]);
    const done = r.push(m.slice(30), [5]).messages;
    assert.deepEqual(done[0]?.fds, [5]);
  });

  it('rejects bad version bits and oversized payloads as fatal, handing back stranded fds', () => {
    for (const flags of [0, 2, 3, 0x6]) {
      const r = new MessageReader();
      const res = r.push(encodeMessage(Request.GET_FEATURES, flags), [9]);
      assert.ok(res.error !== null && res.error.kind === CodecErrorKind.BAD_VERSION && res.error.fatal);
      assert.deepEqual(res.error.fds, [9]);
      const again = r.push(encodeRequest(Request.GET_FEATURES), [10]);
      assert.equal(again.error?.kind, CodecErrorKind.CLOSED);
      assert.deepEqual(again.error?.fds, [10]);
    }
    const hdr = new Uint8Array(HEADER_SIZE);
    const dv = new DataView(hdr.buffer);
    dv.setUint32(0, Request.SET_CONFIG, true);
    dv.setUint32(4, 1, true);
    dv.setUint32(8, MAX_PAYLOAD_SIZE + 1, true);
    const good = encodeRequest(Request.GET_FEATURES);
    const r = new MessageReader();
    const res = r.push(new Uint8Array([...good, ...hdr]), []);
    assert.equal(res.messages.length, 1, 'messages before the bad header are still delivered');
    assert.equal(res.error?.kind, CodecErrorKind.OVERSIZED);
    // exactly at the limit is fine
    assert.equal(new MessageReader().push(encodeRequest(99, new Uint8Array(MAX_PAYLOAD_SIZE)), []).messages.length, 1);
  });

  it('refuses more than 8 fds for one message', () => {
    const res = new MessageReader().push(encodeRequest(Request.SET_MEM_TABLE), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(res.error?.kind, CodecErrorKind.TOO_MANY_FDS);
    assert.deepEqual([...(res.error?.fds ?? [])].sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('property: any chunking of a valid stream yields the same messages and never loses an fd', () => {
    const msgArb = fc.record({
      request: fc.integer({ min: 0, max: 50 }),
      payload: fc.uint8Array({ maxLength: 64 }),
      nfds: fc.integer({ min: 0, max: 3 }),
    });
    fc.assert(
      fc.property(fc.array(msgArb, { minLength: 1, maxLength: 8 }), fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 20 }), (msgs, cuts) => {
        let nextFd = 1;
        const encoded = msgs.map((m) => ({ bytes: encodeRequest(m.request, m.payload), fds: Array.from({ length: m.nfds }, () => nextFd++) }));
        // Chunks never merge across a message that carries fds (the kernel ends a read there).
        const chunks: { data: Uint8Array; fds: number[] }[] = [];
        let ci = 0;
        for (const e of encoded) {
          let off = 0;
          let first = true;
          while (off < e.bytes.length) {
            const n = cuts[ci++ % cuts.length] as number;
            chunks.push({ data: e.bytes.slice(off, off + n), fds: first ? e.fds : [] });
            first = false;
            off += n;
          }
        }
        const r = new MessageReader();
        const out = chunks.flatMap((c) => {
          const res = r.push(c.data, c.fds);
          assert.equal(res.error, null);
          return res.messages;
        });
        assert.equal(out.length, msgs.length);
        out.forEach((m, i) => {
          assert.equal(m.request, msgs[i]?.request);
          assert.deepEqual([...m.payload], [...(msgs[i]?.payload ?? [])]);
          assert.deepEqual(m.fds, encoded[i]?.fds);
        });
      }),
      FC,
    );
  });

  it('property: random bytes and fds never throw, and every fd is returned exactly once', () => {
    fc.assert(
      fc.property(fc.array(fc.record({ data: fc.uint8Array({ maxLength: 48 }), nfds: fc.integer({ min: 0, max: 3 }) }), { maxLength: 10 }), (chunks) => {
        const r = new MessageReader({ maxPayload: 32 });
        let nextFd = 1;
        const seen: number[] = [];
        for (const c of chunks) {
          const fds = Array.from({ length: c.nfds }, () => nextFd++);
          const res = r.push(c.data, fds);
          for (const m of res.messages) seen.push(...m.fds);
          if (res.error !== null) seen.push(...res.error.fds);
        }
        seen.push(...r.takePendingFds());
        assert.deepEqual(seen.sort((a, b) => a - b), Array.from({ length: nextFd - 1 }, (_, i) => i + 1));
      }),
      FC,
    );
  });
});

describe('payload decoders', () => {
  it('u64 and state need exact sizes', () => {
    assert.equal(decodeU64(encodeU64Payload(0x140000001n)), 0x140000001n);
    assert.deepEqual(decodeState(encodeStatePayload({ index: 1, num: 256 })), { index: 1, num: 256 });
    for (const n of [0, 4, 7, 9, 16]) {
      assert.throws(() => decodeU64(new Uint8Array(n)), codecError(CodecErrorKind.BAD_SIZE));
      assert.throws(() => decodeState(new Uint8Array(n)), codecError(CodecErrorKind.BAD_SIZE));
    }
  });

  it('addr is 40 bytes with u64 addresses', () => {
    const a = { index: 1, flags: 0, desc: 0x7f0000001000n, used: 0x7f0000003000n, avail: 0x7f0000002000n, log: 0n };
    assert.deepEqual(decodeAddr(encodeAddrPayload(a)), a);
    assert.throws(() => decodeAddr(new Uint8Array(48)), codecError(CodecErrorKind.BAD_SIZE));
    assert.throws(() => decodeAddr(new Uint8Array(32)), codecError(CodecErrorKind.BAD_SIZE));
  });

  it('mem table: n ≤ 8, exact size, one fd per region, no zero-size or wrapping region', () => {
    const region = { guestPhysAddr: 0xc0000n, memorySize: 0xff40000n, userspaceAddr: 0x7f00000c0000n, mmapOffset: 0xc0000n };
    const regions = [{ guestPhysAddr: 0n, memorySize: 0xa0000n, userspaceAddr: 0x7f0000000000n, mmapOffset: 0n }, region];
    const p = encodeMemTablePayload(regions);
    assert.equal(p.length, 8 + 2 * 32);
    assert.deepEqual(decodeMemTable(p, [10, 11]), regions.map((r, i) => ({ ...r, fd: 10 + i })));
    assert.throws(() => decodeMemTable(p, [10]), codecError(CodecErrorKind.BAD_FDS));
    assert.throws(() => decodeMemTable(p, [10, 11, 12]), codecError(CodecErrorKind.BAD_FDS));
    assert.throws(() => decodeMemTable(p.slice(0, p.length - 1), [10, 11]), codecError(CodecErrorKind.BAD_SIZE));
    assert.throws(() => decodeMemTable(new Uint8Array([...p, 0]), [10, 11]), codecError(CodecErrorKind.BAD_SIZE));
    assert.throws(() => decodeMemTable(new Uint8Array(4), []), codecError(CodecErrorKind.BAD_SIZE));
    const nine = encodeMemTablePayload(Array.from({ length: 9 }, () => region));
    assert.throws(() => decodeMemTable(nine, [1, 2, 3, 4, 5, 6, 7, 8, 9]), codecError(CodecErrorKind.BAD_VALUE));
    const eight = encodeMemTablePayload(Array.from({ length: 8 }, () => region));
    assert.equal(decodeMemTable(eight, [1, 2, 3, 4, 5, 6, 7, 8]).length, 8);
    assert.throws(() => decodeMemTable(encodeMemTablePayload([{ ...region, memorySize: 0n }]), [1]), codecError(CodecErrorKind.BAD_VALUE));
    assert.throws(() => decodeMemTable(encodeMemTablePayload([{ ...region, guestPhysAddr: 0xffffffffffffff00n }]), [1]), codecError(CodecErrorKind.BAD_VALUE));
    assert.throws(() => decodeMemTable(encodeMemTablePayload([{ ...region, userspaceAddr: 0xfffffffffff00000n }]), [1]), codecError(CodecErrorKind.BAD_VALUE));
    // a huge n in the header must not allocate or crash
    const huge = new Uint8Array(8);
    new DataView(huge.buffer).setUint32(0, 0xffffffff, true);
    assert.throws(() => decodeMemTable(huge, []), codecError(CodecErrorKind.BAD_VALUE));
  });

  it('vring file: index in bits 0-7, NOFD bit 8 exactly when no fd comes along', () => {
    assert.deepEqual(decodeVringFile(encodeVringFilePayload(1, false), [5]), { index: 1, fd: 5 });
    assert.deepEqual(decodeVringFile(encodeVringFilePayload(255, true), []), { index: 255, fd: null });
    assert.throws(() => decodeVringFile(encodeVringFilePayload(0, false), []), codecError(CodecErrorKind.BAD_FDS));
    assert.throws(() => decodeVringFile(encodeVringFilePayload(0, false), [1, 2]), codecError(CodecErrorKind.BAD_FDS));
    assert.throws(() => decodeVringFile(encodeVringFilePayload(0, true), [1]), codecError(CodecErrorKind.BAD_FDS));
    assert.throws(() => decodeVringFile(encodeU64Payload(0x200n), [1]), codecError(CodecErrorKind.BAD_VALUE));
    assert.throws(() => decodeVringFile(new Uint8Array(4), [1]), codecError(CodecErrorKind.BAD_SIZE));
  });

  it('config: 12-byte header + size bytes, size ≤ 256', () => {
    const c = decodeConfig(encodeConfigPayload({ offset: 0, flags: 0, data: new Uint8Array(8) }));
    assert.deepEqual({ ...c, data: [...c.data] }, { offset: 0, size: 8, flags: 0, data: [0, 0, 0, 0, 0, 0, 0, 0] });
    const big = new Uint8Array(12 + 257);
    new DataView(big.buffer).setUint32(4, 257, true);
    assert.throws(() => decodeConfig(big), codecError(CodecErrorKind.BAD_VALUE));
    const short = encodeConfigPayload({ offset: 0, flags: 0, data: new Uint8Array(8) }).slice(0, 19);
    assert.throws(() => decodeConfig(short), codecError(CodecErrorKind.BAD_SIZE));
    assert.throws(() => decodeConfig(new Uint8Array(11)), codecError(CodecErrorKind.BAD_SIZE));
    assert.equal(decodeConfig(encodeConfigPayload({ offset: 4, flags: 0, data: new Uint8Array(256) })).size, 256);
  });

  it('property: decoders only ever throw VhostUserCodecError on random input', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.array(fc.nat(), { maxLength: 10 }), (p, fds) => {
        for (const f of [() => decodeU64(p), () => decodeState(p), () => decodeAddr(p), () => decodeMemTable(p, fds), () => decodeVringFile(p, fds), () => decodeConfig(p)]) {
          try {
            f();
          } catch (e) {
            assert.ok(e instanceof VhostUserCodecError, String(e));
          }
        }
      }),
      FC,
    );
  });
});

describe('reply encoders', () => {
  it('replies carry flags exactly 0x5 and the request id', () => {
    for (const b of [encodeU64Reply(Request.GET_FEATURES, 1n), encodeAck(Request.SET_MEM_TABLE, true), encodeStateReply(Request.GET_VRING_BASE, { index: 1, num: 7 })]) {
      assert.equal(header(b).flags, 0x5);
      assert.equal(REPLY_FLAGS, 0x5);
    }
    const ack = encodeAck(Request.SET_MEM_TABLE, true);
    assert.deepEqual(header(ack), { request: Request.SET_MEM_TABLE, flags: 5, size: 8 });
    assert.equal(decodeU64(ack.slice(12)), 0n);
    assert.notEqual(decodeU64(encodeAck(Request.SET_MEM_TABLE, false).slice(12)), 0n);
    const st = encodeStateReply(Request.GET_VRING_BASE, { index: 1, num: 7 });
    assert.deepEqual(decodeState(st.slice(12)), { index: 1, num: 7 });
  });

  it('GET_CONFIG reply is 12-byte header + requested size, or zero size on failure', () => {
    const data = Uint8Array.from([1, 2, 3, 4]);
    const r = encodeConfigReply(Request.GET_CONFIG, { offset: 4, size: 4, flags: 0 }, data);
    assert.deepEqual(header(r), { request: Request.GET_CONFIG, flags: 5, size: 16 });
    const c = decodeConfig(r.slice(12));
    assert.deepEqual([c.offset, c.size, [...c.data]], [4, 4, [1, 2, 3, 4]]);
    assert.equal(header(encodeConfigReply(Request.GET_CONFIG, { offset: 0, size: 8, flags: 0 }, null)).size, 0);
    assert.equal(header(encodeConfigReply(Request.GET_CONFIG, { offset: 0, size: 8, flags: 0 }, data)).size, 0, 'wrong-size data is a failure');
  });
});
