/**
 * Hostile front-ends and guests against a running agent over a real socket. After every
 * case the agent must still serve a fresh, well-behaved front-end, and a second agent in
 * the same process (with a front-end connected all along) must be unaffected.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startAgent, type RunningAgent } from '../../services/agent/src/agent.ts';
import { encodeMemTablePayload, encodeMessage, encodeRequest, encodeStatePayload, encodeU64Payload, encodeVringFilePayload, encodeAddrPayload } from '../../services/agent/src/vhost-user/codec.ts';
import { Request } from '../../services/agent/src/vhost-user/protocol.ts';
import { Frontend, Gpio, type FrontendOptions } from '../support/frontend.ts';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../support/virtio-driver.ts';
import { quietLog, tempDir, waitFor } from './fixtures.ts';

const OK = 0;
const ERR = 1;

const ackOf = (m: { payload: Uint8Array } | undefined): bigint => {
  assert.ok(m !== undefined && m.payload.length === 8, 'a u64 ack');
  return new DataView(m.payload.buffer, m.payload.byteOffset, 8).getBigUint64(0, true);
};

describe('hostile input: the agent keeps serving', () => {
  const dir = tempDir();
  let subject: RunningAgent;
  let bystander: RunningAgent;
  let bystanderFe: Frontend;

  before(async () => {
    subject = await startAgent({ socketPath: dir.path('subject.sock'), chip: 'subject', ngpio: 4, names: ['a', 'b', 'c', 'd'], backend: { kind: 'standalone' }, log: quietLog });
    bystander = await startAgent({ socketPath: dir.path('bystander.sock'), chip: 'bystander', ngpio: 4, backend: { kind: 'standalone' }, log: quietLog });
    bystanderFe = await Frontend.connect(bystander.socketPath);
    await bystanderFe.start();
    const r = await bystanderFe.request(Gpio.SET_DIRECTION, 0, 1);
    assert.equal(r.status, OK);
  });
  after(async () => {
    bystanderFe.close();
    await subject.close();
    await bystander.close();
    dir.rm();
  });

  /** A well-behaved front-end gets a working device from the subject; the bystander still works. */
  const assertHealthy = async (): Promise<void> => {
    await waitFor(() => !subject.server.connected, 'the subject to drop the hostile connection');
    const fe = await Frontend.connect(subject.socketPath);
    try {
      await fe.start();
      assert.deepEqual([...(await fe.getConfig(0, 8))], [4, 0, 0, 0, 8, 0, 0, 0]);
      const set = await fe.request(Gpio.SET_DIRECTION, 2, 1);
      assert.deepEqual([set.status, set.usedLen], [OK, 2]);
      await fe.request(Gpio.SET_VALUE, 2, 1);
      const get = await fe.request(Gpio.GET_VALUE, 2);
      assert.deepEqual([get.status, get.value, get.usedLen], [OK, 1, 2]);
      assert.equal(subject.device.broken, null);
    } finally {
      fe.close();
    }
    await waitFor(() => !subject.server.connected, 'the subject to see the healthy front-end go');
    const b = await bystanderFe.request(Gpio.GET_DIRECTION, 0);
    assert.deepEqual([b.status, b.value, b.usedLen], [OK, 1, 2], 'the bystander agent is unaffected');
  };

  const hostile = (name: string, fn: (fe: Frontend) => Promise<void>, opts: FrontendOptions = {}): void => {
    it(name, async () => {
      const fe = await Frontend.connect(subject.socketPath, { timeoutMs: 5000, ...opts });
      // Let the agent accept this connection first, so the next one is not taken for a second front-end.
      await waitFor(() => subject.server.connected, 'the subject to accept the connection');
      try {
        await fn(fe);
      } finally {
        fe.close();
      }
      await assertHealthy();
    });
  };

  /** Put one raw chain (descriptor 0 onward, already written) on ring `i` and kick. */
  const publishRaw = (fe: Frontend, i: number, head = 0): void => {
    const ring = fe.rings[i];
    assert.ok(ring !== undefined);
    ring.setAvailRing(0, head);
    ring.setAvailIdx(1);
    fe.kick(i);
  };
  const DATA = 0x80000n; // inside the 1 MiB guest RAM, away from the rings

  // ---- vhost-user messages ----

  hostile('a truncated header, then close', async (fe) => {
    fe.sendRaw(encodeRequest(Request.GET_FEATURES).subarray(0, 6));
  });

  hostile('a header promising more payload than sent, then close', async (fe) => {
    fe.sendRaw(encodeRequest(Request.SET_FEATURES, encodeU64Payload(1n)).subarray(0, 16));
  });

  hostile('an oversized payload size in the header: the agent drops the connection', async (fe) => {
    const m = encodeMessage(Request.GET_FEATURES, 0x1, new Uint8Array(0));
    new DataView(m.buffer, m.byteOffset).setUint32(8, 0x7fff_ffff, true);
    fe.sendRaw(m);
    await waitFor(() => fe.closed, 'the agent to close the connection');
  });

  hostile('bad version bits in the flags: the agent drops the connection', async (fe) => {
    fe.sendRaw(encodeMessage(Request.GET_FEATURES, 0x2));
    await waitFor(() => fe.closed, 'the agent to close the connection');
  });

  hostile('SET_MEM_TABLE without fds and with the wrong fd count: failure acks, connection usable', async (fe) => {
    await fe.negotiate();
    const region = { guestPhysAddr: 0n, memorySize: 1n << 20n, userspaceAddr: 0x7f00_0000_0000n, mmapOffset: 0n };
    assert.notEqual(ackOf(await fe.send(Request.SET_MEM_TABLE, encodeMemTablePayload([region]), { needReply: true })), 0n, 'no fd');
    const fd = fe.platform.memfd('x', 1 << 20);
    const two = encodeMemTablePayload([region, { ...region, guestPhysAddr: 1n << 20n }]);
    assert.notEqual(ackOf(await fe.send(Request.SET_MEM_TABLE, two, { needReply: true, fds: [fd] })), 0n, 'two regions, one fd');
    fe.platform.close(fd);
    assert.ok((await fe.getU64(Request.GET_FEATURES)) > 0n, 'still answering');
  });

  hostile('SET_VRING_KICK / SET_VRING_CALL without an fd: failure acks', async (fe) => {
    await fe.negotiate();
    assert.notEqual(ackOf(await fe.send(Request.SET_VRING_KICK, encodeVringFilePayload(0, false), { needReply: true })), 0n);
    assert.notEqual(ackOf(await fe.send(Request.SET_VRING_KICK, encodeVringFilePayload(0, true), { needReply: true })), 0n, 'polling mode refused');
    assert.notEqual(ackOf(await fe.send(Request.SET_VRING_CALL, encodeVringFilePayload(9, true), { needReply: true })), 0n, 'ring 9 does not exist');
    assert.notEqual(ackOf(await fe.send(Request.SET_VRING_NUM, encodeStatePayload({ index: 0, num: 100 }), { needReply: true })), 0n, 'size not a power of two');
  });

  hostile('unknown request types, with and without NEED_REPLY', async (fe) => {
    assert.notEqual(ackOf(await fe.send(99, new Uint8Array(8), { needReply: true })), 0n);
    await fe.send(0x7fff_ffff, new Uint8Array(3));
    await fe.send(Request.SET_LOG_BASE, new Uint8Array(16));
    assert.ok((await fe.getU64(Request.GET_FEATURES)) > 0n, 'still answering');
  });

  hostile('GET_CONFIG beyond the 8-byte config: zero-size replies', async (fe) => {
    for (const [off, size] of [[4, 8], [0, 16], [8, 1], [0xffff_ffff, 8], [7, 2]] as const) {
      assert.equal((await fe.getConfig(off, size)).length, 0, `offset ${off} size ${size}`);
    }
    assert.deepEqual([...(await fe.getConfig(6, 2))], [0, 0]);
  });

  // ---- ring set-up order ----

  hostile('a request queued and kicked before SET_MEM_TABLE is answered once the table arrives', async (fe) => {
    await fe.negotiate();
    fe.createMemory();
    await fe.configureRing(0);
    await fe.configureRing(1);
    await fe.enableRings();
    const r = fe.request(Gpio.GET_DIRECTION, 1);
    assert.equal(await fe.sendMemTable(), 0n);
    assert.deepEqual((await r).usedLen, 2);
  });

  hostile('ring addresses outside guest memory: the ring does not start; correct addresses later start it', async (fe) => {
    await fe.negotiate();
    fe.createMemory();
    assert.equal(await fe.sendMemTable(), 0n);
    await fe.configureRing(0, { addr: { desc: fe.va(0x4000_0000n), avail: fe.va(0x4000_1000n), used: fe.va(0x4000_2000n) } });
    await fe.configureRing(1);
    await fe.enableRings();
    const r = fe.request(Gpio.GET_DIRECTION, 1);
    await fe.send(Request.SET_VRING_ENABLE, encodeStatePayload({ index: 0, num: 0 }), { needReply: true });
    const l = fe.rings[0]?.layout;
    assert.ok(l !== undefined);
    await fe.send(Request.SET_VRING_ADDR, encodeAddrPayload({ index: 0, flags: 0, desc: fe.va(l.desc), used: fe.va(l.used), avail: fe.va(l.avail), log: 0n }));
    await fe.send(Request.SET_VRING_ENABLE, encodeStatePayload({ index: 0, num: 1 }), { needReply: true });
    assert.deepEqual([(await r).status, (await r).usedLen], [OK, 2], 'the queued request was answered, no kick lost');
  });

  hostile('kicks before SET_VRING_ENABLE are not lost', async (fe) => {
    await fe.start({ enable: false });
    const r = fe.request(Gpio.GET_DIRECTION, 3);
    const e = fe.armIrq(3);
    await fe.enableRings();
    assert.deepEqual([(await r).status, (await r).usedLen], [OK, 2]);
    assert.deepEqual(await e, { status: 0, usedLen: 1 }, 'eventq buffer of a disabled line: INVALID');
  });

  // ---- guest memory ----

  const breaks = (name: string, write: (fe: Frontend) => void, opts: FrontendOptions = {}): void =>
    hostile(
      name,
      async (fe) => {
        await fe.start();
        write(fe);
        publishRaw(fe, 0);
        await waitFor(() => subject.device.broken !== null, 'the device to mark the ring broken');
        assert.equal(fe.rings[0]?.usedIdx, 0, 'nothing pushed for a malformed chain');
        const e = await fe.armIrq(0);
        assert.deepEqual(e, { status: 0, usedLen: 1 }, 'the other queue still works');
      },
      opts,
    );

  breaks('a descriptor address outside guest memory marks the ring broken', (fe) => {
    fe.rings[0]?.writeDesc(0, { addr: 0x1_0000_0000n, len: 8, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    fe.rings[0]?.writeDesc(1, { addr: DATA, len: 2, flags: VIRTQ_DESC_F_WRITE, next: 0 });
  });

  breaks('a descriptor straddling the end of guest memory marks the ring broken', (fe) => {
    fe.rings[0]?.writeDesc(0, { addr: (1n << 20n) - 4n, len: 8, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    fe.rings[0]?.writeDesc(1, { addr: DATA, len: 2, flags: VIRTQ_DESC_F_WRITE, next: 0 });
  });

  breaks('a descriptor loop marks the ring broken', (fe) => {
    fe.rings[0]?.writeDesc(0, { addr: DATA, len: 8, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    fe.rings[0]?.writeDesc(1, { addr: DATA + 16n, len: 2, flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, next: 0 });
  });

  breaks(
    'an over-long chain (indirect table of 32769 entries) marks the ring broken',
    (fe) => {
      fe.rings[0]?.writeDesc(0, { addr: 0x20000n, len: 16 * 32769, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    },
    { indirect: true },
  );

  breaks('a readable descriptor after a writable one marks the ring broken', (fe) => {
    fe.rings[0]?.writeDesc(0, { addr: DATA, len: 2, flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, next: 1 });
    fe.rings[0]?.writeDesc(1, { addr: DATA + 16n, len: 8, flags: 0, next: 0 });
  });

  breaks('a zero-length writable descriptor marks the ring broken', (fe) => {
    fe.rings[0]?.writeDesc(0, { addr: DATA, len: 8, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    fe.rings[0]?.writeDesc(1, { addr: DATA + 16n, len: 0, flags: VIRTQ_DESC_F_WRITE, next: 0 });
  });

  breaks('avail.idx far ahead of the device marks the ring broken', (fe) => {
    fe.rings[0]?.setAvailIdx(1000);
    fe.kick(0);
  });

  hostile('wrong buffer sizes are answered without breaking the ring', async (fe) => {
    await fe.start();
    const four = await fe.submit(0, [new Uint8Array([4, 0, 1, 0])], [2]);
    assert.deepEqual([four.len, four.written[0]], [2, ERR], 'a 4-byte request: ERR, used length 2');
    const twelve = await fe.submit(0, [new Uint8Array(12)], [2]);
    assert.deepEqual([twelve.len, twelve.written[0]], [2, ERR], 'a 12-byte request: ERR');
    const one = await fe.request(Gpio.GET_VALUE, 0, 0, 1);
    assert.deepEqual([one.status, one.usedLen], [ERR, 1], 'a 1-byte response buffer: the ERR status alone');
    const none = await fe.submit(0, [new Uint8Array([4, 0, 0, 0, 0, 0, 0, 0])], []);
    assert.equal(none.len, 0, 'no writable buffer: used length 0');
    const ev = await fe.submit(1, [new Uint8Array([0, 0, 0])], [1]);
    assert.deepEqual([ev.len, ev.written[0]], [1, 0], 'a 3-byte eventq request: INVALID');
    const evNone = await fe.submit(1, [new Uint8Array([0, 0])], []);
    assert.equal(evNone.len, 0, 'an eventq buffer without a status byte: used length 0');
    assert.equal(subject.device.broken, null);
    const r = await fe.request(Gpio.GET_DIRECTION, 0);
    assert.deepEqual([r.status, r.usedLen], [OK, 2], 'the ring still works');
  });
});
