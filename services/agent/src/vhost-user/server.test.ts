import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { FakePlatform } from '../../../../test/support/fake-platform.ts';
import type { FdSocket } from '../os/platform.ts';
import type { Virtqueue, VirtioDevice } from '../virtio/types.ts';
import { MessageReader, decodeU64, encodeMemTablePayload, encodeMessage, encodeRequest, encodeU64Payload, encodeVringFilePayload } from './codec.ts';
import type { VhostUserMessage } from './codec.ts';
import { Request, TRANSPORT_FEATURES } from './protocol.ts';
import { serveVhostUser } from './server.ts';

class CountingDevice implements VirtioDevice {
  readonly deviceFeatures = TRANSPORT_FEATURES;
  readonly numQueues = 2;
  resets = 0;
  config(): Uint8Array {
    return new Uint8Array(8);
  }
  setFeatures(): void {}
  startQueue(_q: Virtqueue): void {}
  kick(): void {}
  stopQueue(): void {}
  reset(): void {
    this.resets++;
  }
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
async function until(cond: () => boolean): Promise<void> {
  const deadline = Date.now() + 3000; // above SECOND_CONNECTION_GRACE_MS
  while (!cond() && Date.now() < deadline) await tick();
  assert.ok(cond(), 'condition reached');
}

/** A front-end connection that collects replies. */
async function connect(platform: FakePlatform, path: string): Promise<{ socket: FdSocket; replies: VhostUserMessage[]; closed: () => boolean }> {
  const socket = await platform.connectUnix(path);
  const reader = new MessageReader();
  const replies: VhostUserMessage[] = [];
  let closed = false;
  socket.onData((d, fds) => replies.push(...reader.push(d, fds).messages));
  socket.onClose(() => (closed = true));
  return { socket, replies, closed: () => closed };
}

describe('serveVhostUser', () => {
  it('serves one front-end at a time, re-serves after a disconnect, releases everything', async () => {
    const platform = new FakePlatform();
    platform.socketOptions = { maxChunk: 5 }; // replies and requests arrive in 5-byte pieces
    const device = new CountingDevice();
    const logs: string[] = [];
    const events: string[] = [];
    const server = serveVhostUser({
      platform,
      socketPath: '/run/gpio/vm-a.sock',
      device,
      log: (m) => logs.push(m),
      onConnect: () => events.push('connect'),
      onDisconnect: (e) => events.push(e === undefined ? 'disconnect' : `disconnect: ${e.message}`),
    });
    const a = await connect(platform, '/run/gpio/vm-a.sock');
    assert.equal(server.connected, true);
    a.socket.send(encodeRequest(Request.GET_FEATURES));
    await until(() => a.replies.length === 1);
    assert.equal(a.replies[0]?.flags, 0x5);
    assert.equal(decodeU64(a.replies[0]?.payload ?? new Uint8Array()), TRANSPORT_FEATURES | (1n << 30n));

    // a second concurrent front-end is refused
    const b = await connect(platform, '/run/gpio/vm-a.sock');
    await until(() => b.closed());
    assert.ok(logs.some((l) => l.includes('refusing a second connection')));

    // give the session a memory table and a call fd, then disconnect
    const memfd = platform.memfd('ram', 0x10000);
    a.socket.send(encodeRequest(Request.SET_MEM_TABLE, encodeMemTablePayload([{ guestPhysAddr: 0n, memorySize: 0x10000n, userspaceAddr: 0x7f0000000000n, mmapOffset: 0n }]), { needReply: true }), [memfd]);
    const call = platform.eventfd();
    a.socket.send(encodeRequest(Request.SET_VRING_CALL, encodeVringFilePayload(0, false)), [call]);
    await until(() => a.replies.length === 2);
    assert.equal(decodeU64(a.replies[1]?.payload ?? new Uint8Array()), 0n);
    assert.equal(platform.mappingCount, 1);
    a.socket.close();
    await until(() => !server.connected);
    assert.equal(platform.mappingCount, 0);
    assert.deepEqual(platform.openFds(), [memfd, call], 'only the front-end\'s own fds remain');
    assert.equal(device.resets, 1);

    // the next front-end (QEMU restarted) is served
    const c = await connect(platform, '/run/gpio/vm-a.sock');
    c.socket.send(encodeRequest(Request.GET_PROTOCOL_FEATURES));
    await until(() => c.replies.length === 1);
    assert.equal(decodeU64(c.replies[0]?.payload ?? new Uint8Array()), 0x209n);
    await server.close();
    await until(() => c.closed());
    await assert.rejects(platform.connectUnix('/run/gpio/vm-a.sock'));
    assert.deepEqual(events, ['connect', 'disconnect', 'connect', 'disconnect']);
    platform.close(memfd);
    platform.close(call);
    assert.deepEqual(platform.openFds(), []);
  });

  it('a connection arriving while the active one is going away is served, not refused', async () => {
    const platform = new FakePlatform();
    const logs: string[] = [];
    const server = serveVhostUser({ platform, socketPath: '/run/gpio/vm-r.sock', device: new CountingDevice(), log: (m) => logs.push(m) });
    const a = await connect(platform, '/run/gpio/vm-r.sock');
    const b = await connect(platform, '/run/gpio/vm-r.sock'); // waits: a is still active
    a.socket.close(); // a's hang-up arrives after b's connection (a front-end reconnecting at once)
    b.socket.send(encodeRequest(Request.GET_PROTOCOL_FEATURES));
    await until(() => b.replies.length === 1);
    assert.equal(b.closed(), false);
    assert.ok(!logs.some((l) => l.includes('refusing a second connection')), logs.join('\n'));
    await server.close();
  });

  it('a framing error closes the connection and every fd that came with it', async () => {
    const platform = new FakePlatform();
    const device = new CountingDevice();
    const errors: string[] = [];
    const server = serveVhostUser({ platform, socketPath: 's', device, onDisconnect: (e) => errors.push(e?.message ?? '') });
    const a = await connect(platform, 's');
    a.socket.send(encodeRequest(Request.SET_FEATURES, encodeU64Payload(1n << 32n)));
    const ev = platform.eventfd();
    a.socket.send(encodeMessage(Request.SET_VRING_KICK, 0x2, encodeVringFilePayload(0, false)), [ev]);
    await until(() => a.closed());
    assert.equal(errors.length, 1);
    assert.match(errors[0] ?? '', /version/);
    assert.deepEqual(platform.openFds(), [ev]);
    platform.close(ev);
    await server.close();
  });
});
