import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createNativePlatform, SocketClosedError } from './native-platform.ts';
import { isOsError, loadNative, OsError } from './native.ts';
import type { FdSocket, Platform } from './platform.ts';

const platform: Platform = createNativePlatform();
const dir = mkdtempSync(join(tmpdir(), 'gpiofabric-native-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let seq = 0;
const sockPath = (): string => join(dir, `s${seq++}.sock`);

/** Listen on a fresh path and connect to it: [server side, client side, close-all]. */
async function pair(): Promise<{ server: FdSocket; client: FdSocket; done: () => void }> {
  const path = sockPath();
  let resolveServer!: (s: FdSocket) => void;
  const accepted = new Promise<FdSocket>((r) => (resolveServer = r));
  const listener = platform.listenUnix(path, resolveServer);
  const client = await platform.connectUnix(path);
  const server = await accepted;
  return {
    server,
    client,
    done: () => {
      client.close();
      server.close();
      listener.close();
    },
  };
}

/** Collects everything a socket receives until `n` bytes arrived. */
function collect(sock: FdSocket, n: number): Promise<{ data: Uint8Array; fds: number[] }> {
  return new Promise((resolve, reject) => {
    const parts: Uint8Array[] = [];
    const fds: number[] = [];
    let got = 0;
    sock.onClose((err) => reject(err ?? new Error(`closed after ${got} of ${n} bytes`)));
    sock.onData((data, f) => {
      parts.push(data);
      fds.push(...f);
      got += data.byteLength;
      if (got >= n) resolve({ data: Buffer.concat(parts), fds });
    });
  });
}

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

function openFdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

describe('native platform: sockets', () => {
  it('listens, connects and carries bytes both ways', async () => {
    const { server, client, done } = await pair();
    const toServer = collect(server, 5);
    client.send(new TextEncoder().encode('hello'));
    assert.equal(new TextDecoder().decode((await toServer).data), 'hello');
    const toClient = collect(client, 3);
    server.send(new Uint8Array([1, 2, 3]));
    assert.deepEqual([...(await toClient).data], [1, 2, 3]);
    done();
  });

  it('passes an eventfd and a memfd: kicks and shared memory cross the socket', async () => {
    const { server, client, done } = await pair();
    const efd = platform.eventfd();
    const mfd = platform.memfd('shared', 8192);
    const received = collect(server, 1);
    client.send(new Uint8Array([0x42]), [efd, mfd]);
    const { data, fds } = await received;
    assert.deepEqual([...data], [0x42]);
    assert.equal(fds.length, 2);
    const [efdPeer, mfdPeer] = fds as [number, number];
    assert.notEqual(efdPeer, efd);

    // eventfd: written on one side, read on the other.
    platform.eventfdWrite(efd, 3n);
    assert.equal(platform.eventfdRead(efdPeer), 3n);
    assert.equal(platform.eventfdRead(efdPeer), 0n);
    platform.eventfdWrite(efdPeer);
    assert.equal(platform.eventfdRead(efd), 1n);

    // memfd: both mappings see each other's writes.
    const a = platform.mmap(mfd, 8192, 0);
    const b = platform.mmap(mfdPeer, 4096, 4096);
    new Uint8Array(a.buffer)[4096 + 7] = 0xaa;
    assert.equal(new Uint8Array(b.buffer)[7], 0xaa);
    new DataView(b.buffer).setUint32(100, 0xdeadbeef, true);
    platform.fence();
    assert.equal(new DataView(a.buffer).getUint32(4096 + 100, true), 0xdeadbeef);

    a.unmap();
    b.unmap();
    for (const fd of [efd, mfd, efdPeer, mfdPeer]) platform.close(fd);
    done();
  });

  it('delivers a large message and many small ones intact and in order (write queue)', async () => {
    const { server, client, done } = await pair();
    const big = new Uint8Array(8 * 1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >>> 12)) & 0xff;
    const small = 2000;
    const total = big.length + small * 4;
    const received = collect(server, total);
    client.send(big); // far beyond the socket buffer: EAGAIN, queued, flushed on writable
    for (let i = 0; i < small; i++) client.send(new Uint8Array(new Uint32Array([i]).buffer));
    const { data } = await received;
    assert.equal(data.length, total);
    assert.ok(Buffer.from(data.subarray(0, big.length)).equals(big));
    const tail = new DataView(data.buffer, data.byteOffset + big.length);
    for (let i = 0; i < small; i++) assert.equal(tail.getUint32(i * 4, true), i);
    done();
  });

  it('keeps fds attached to their bytes when a send is queued', async () => {
    const { server, client, done } = await pair();
    const filler = new Uint8Array(4 * 1024 * 1024);
    const efd = platform.eventfd();
    const received = collect(server, filler.length + 1);
    client.send(filler); // fills the socket: the next send is queued
    client.send(new Uint8Array([9]), [efd]);
    platform.close(efd); // the queue holds its own dup
    const { data, fds } = await received;
    assert.equal(data[data.length - 1], 9);
    assert.equal(fds.length, 1);
    platform.eventfdWrite(fds[0] as number, 5n);
    assert.equal(platform.eventfdRead(fds[0] as number), 5n);
    platform.close(fds[0] as number);
    done();
  });

  it('keeps chunks (and their fds) that arrive before onData is registered', async () => {
    const { server, client, done } = await pair();
    const efd = platform.eventfd();
    client.send(new Uint8Array([5, 6]), [efd]);
    // A poll pass in which the marker fires also reads the (handler-less) server socket.
    const marker = platform.eventfd();
    const passed = deferred<void>();
    const w = platform.watchReadable(marker, () => passed.resolve());
    platform.eventfdWrite(marker);
    await passed.promise;
    w.stop();
    platform.close(marker);
    const { data, fds } = await collect(server, 2);
    assert.deepEqual([...data], [5, 6]);
    assert.equal(fds.length, 1);
    platform.close(fds[0] as number);
    platform.close(efd);
    done();
  });

  it('accepts at most 32 fds per message and closes the rest', async () => {
    const { server, client, done } = await pair();
    const efd = platform.eventfd();
    const before = openFdCount();
    const received = collect(server, 1);
    client.send(new Uint8Array([1]), Array.from({ length: 40 }, () => efd));
    const { fds } = await received;
    assert.equal(fds.length, 32);
    for (const fd of fds) platform.close(fd);
    assert.equal(openFdCount(), before); // the 8 extra were closed, not leaked
    platform.close(efd);
    done();
  });

  it('reports a peer hang-up once, without error, and send() then throws', async () => {
    const { server, client, done } = await pair();
    const closes: Array<Error | undefined> = [];
    const closed = new Promise<void>((r) =>
      server.onClose((err) => {
        closes.push(err);
        r();
      }),
    );
    server.onData(() => assert.fail('no data expected'));
    client.close();
    await closed;
    assert.deepEqual(closes, [undefined]);
    assert.throws(() => server.send(new Uint8Array([1])), SocketClosedError);
    server.close();
    assert.equal(closes.length, 1);
    // onClose registered after the fact still hears about it.
    let late = 0;
    server.onClose(() => late++);
    assert.equal(late, 1);
    done();
  });

  it('close() is idempotent and runs onClose callbacks exactly once', async () => {
    const { client, done } = await pair();
    let calls = 0;
    client.onClose((err) => {
      assert.equal(err, undefined);
      calls++;
    });
    client.close();
    client.close();
    assert.equal(calls, 1);
    assert.throws(() => client.send(new Uint8Array([1])), SocketClosedError);
    done();
  });

  it('replaces a stale socket file', async () => {
    const path = sockPath();
    const native = loadNative();
    native.close(native.unixListen(path, 1)); // leaves the socket file behind
    assert.ok(statSync(path).isSocket());
    const { promise, resolve } = deferred<FdSocket>();
    const listener = platform.listenUnix(path, resolve);
    const client = await platform.connectUnix(path);
    const server = await promise;
    const got = collect(server, 2);
    client.send(new Uint8Array([7, 8]));
    assert.deepEqual([...(await got).data], [7, 8]);
    client.close();
    server.close();
    listener.close();
    assert.equal(existsSync(path), false); // the listener removes its socket file
  });

  it('refuses to replace a regular file at the socket path', () => {
    const path = sockPath();
    writeFileSync(path, 'precious');
    assert.throws(
      () => platform.listenUnix(path, () => assert.fail('no connection')),
      (e: unknown) => isOsError(e, 'EEXIST') && /not a socket/.test(e.message) && e.syscall === 'listen',
    );
    assert.ok(statSync(path).isFile());
  });

  it('rejects connecting to a missing path with ENOENT', async () => {
    await assert.rejects(platform.connectUnix(join(dir, 'missing.sock')), (e: unknown) => isOsError(e, 'ENOENT'));
  });

  it('a bad fd argument to send() throws without killing the socket', async () => {
    const { server, client, done } = await pair();
    assert.throws(() => client.send(new Uint8Array([1]), [-1]), RangeError);
    assert.throws(() => client.send(new Uint8Array([1]), [987654]), (e: unknown) => isOsError(e, 'EBADF') && /fds\[0\]/.test(e.message));
    const got = collect(server, 1);
    client.send(new Uint8Array([3]));
    assert.deepEqual([...(await got).data], [3]);
    done();
  });
});

describe('native platform: memory', () => {
  it('validates mmap arguments and file bounds', () => {
    const fd = platform.memfd('bounds', 4096);
    assert.throws(() => platform.mmap(fd, 0, 0), RangeError);
    assert.throws(() => platform.mmap(fd, 4096, 100), RangeError);
    assert.throws(() => platform.mmap(fd, 1.5, 0), RangeError);
    assert.throws(() => platform.mmap(fd, 2 ** 60, 0), RangeError);
    assert.throws(() => platform.mmap(fd, 8192, 0), (e: unknown) => isOsError(e, 'EINVAL') && /beyond the end/.test(e.message));
    assert.throws(() => platform.mmap(fd, 4096, 4096), (e: unknown) => isOsError(e, 'EINVAL'));
    assert.throws(() => platform.mmap(999999, 4096, 0), (e: unknown) => isOsError(e, 'EBADF'));
    platform.close(fd);
  });

  it('unmap detaches the ArrayBuffer (byteLength 0) and is idempotent', () => {
    const fd = platform.memfd('unmap', 3 * 4096);
    const region = platform.mmap(fd, 3 * 4096, 0);
    const view = new Uint8Array(region.buffer);
    view[5] = 1;
    assert.equal(region.buffer.byteLength, 3 * 4096);
    region.unmap();
    assert.equal(region.buffer.byteLength, 0);
    assert.equal(view.length, 0);
    assert.equal(view[5], undefined); // a detached view reads nothing; no access to the old range
    region.unmap();
    assert.throws(() => loadNative().unmap(new ArrayBuffer(8)), TypeError);
    // The data survived in the file: a new mapping sees it.
    const again = platform.mmap(fd, 4096, 0);
    assert.equal(new Uint8Array(again.buffer)[5], 1);
    again.unmap();
    platform.close(fd);
  });
});

describe('native platform: eventfd and watches', () => {
  it('a watch fires when the eventfd is written and stop() stops it', async () => {
    const a = platform.eventfd();
    const b = platform.eventfd();
    let firedA = 0;
    const { promise: fired, resolve } = deferred<void>();
    const watchA = platform.watchReadable(a, () => {
      firedA++;
      assert.equal(platform.eventfdRead(a), 2n);
      resolve();
    });
    platform.eventfdWrite(a, 2n);
    await fired;
    assert.equal(firedA, 1);
    watchA.stop();
    watchA.stop();

    // Make both fds readable; b's watch firing proves a poll pass happened, in which a
    // still-active watch on `a` would have fired too.
    const { promise: firedB, resolve: resolveB } = deferred<void>();
    const watchB = platform.watchReadable(b, () => {
      platform.eventfdRead(b);
      resolveB();
    });
    platform.eventfdWrite(a);
    platform.eventfdWrite(b);
    await firedB;
    watchB.stop();
    assert.equal(firedA, 1);
    assert.equal(platform.eventfdRead(a), 1n); // nobody drained it
    platform.close(a);
    platform.close(b);
  });

  it('refuses a second watch on one fd; close(fd) stops an active watch', () => {
    const fd = platform.eventfd();
    const w = platform.watchReadable(fd, () => assert.fail('not written'));
    assert.throws(() => platform.watchReadable(fd, () => undefined), (e: unknown) => isOsError(e, 'EBUSY'));
    platform.close(fd); // stops w first, so the loop is not kept alive by it
    w.stop();
  });

  it('bad fds and values give errors, not crashes', () => {
    assert.throws(() => platform.eventfdRead(-1), RangeError);
    assert.throws(() => platform.eventfdRead(999999), (e: unknown) => isOsError(e, 'EBADF') && /^read: EBADF/.test(e.message));
    assert.throws(() => platform.eventfdWrite(999999), (e: unknown) => isOsError(e, 'EBADF'));
    assert.throws(() => platform.close(999999), (e: unknown) => e instanceof OsError && e.syscall === 'close');
    assert.throws(() => platform.watchReadable(999999, () => undefined), (e: unknown) => isOsError(e, 'EBADF'));
    const fd = platform.eventfd();
    assert.throws(() => platform.eventfdWrite(fd, 0n), RangeError);
    assert.throws(() => platform.eventfdWrite(fd, 2n ** 64n - 1n), RangeError);
    assert.throws(() => platform.eventfdWrite(fd, -1n), RangeError);
    const native = loadNative();
    assert.throws(() => native.recvMsg(fd, new Uint8Array(0)), RangeError);
    assert.throws(() => native.recvMsg(999999, new Uint8Array(8)), (e: unknown) => isOsError(e, 'EBADF') && e.message.startsWith('recvmsg: EBADF'));
    assert.throws(() => native.sendMsg(fd, new Uint8Array(1)), (e: unknown) => isOsError(e, 'ENOTSOCK'));
    assert.throws(() => native.watchStart({} as never, 1), TypeError);
    platform.close(fd);
  });
});

describe('native platform: process behaviour', () => {
  const runChild = (code: string, nodeArgs: readonly string[] = []): Promise<{ status: number | null; stdout: string; stderr: string }> =>
    new Promise((resolve, reject) => {
      const moduleUrl = new URL('./native-platform.ts', import.meta.url).href;
      const child = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', '--input-type=module', '-e', code.replaceAll('MODULE', moduleUrl).replaceAll('DIR', dir)], {
        cwd: fileURLToPath(new URL('../../../..', import.meta.url)),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      // A guard against a hang (a leaked handle would keep the child alive), not a timing check.
      const guard = setTimeout(() => child.kill('SIGKILL'), 30_000);
      child.on('error', reject);
      child.on('close', (status) => {
        clearTimeout(guard);
        resolve({ status, stdout, stderr });
      });
    });

  it('exits by itself after sockets, listeners, watches and mappings are closed', async () => {
    const r = await runChild(`
      import { createNativePlatform } from 'MODULE';
      const p = createNativePlatform();
      const path = 'DIR/exit-' + process.pid + '.sock';
      let server;
      const l = p.listenUnix(path, (s) => { server = s; s.onData((d) => { s.send(d); }); });
      const c = await p.connectUnix(path);
      const efd = p.eventfd();
      const w = p.watchReadable(efd, () => { p.eventfdRead(efd); });
      const m = p.mmap(p.memfd('x', 4096), 4096, 0);
      await new Promise((r) => { c.onData(r); c.send(new Uint8Array([1])); });
      w.stop(); m.unmap(); c.close(); server.close(); l.close(); p.close(efd);
      console.log('done');
    `);
    assert.equal(r.stderr.includes('Error'), false, r.stderr);
    assert.equal(r.status, 0);
    assert.match(r.stdout, /done/);
  });

  it('mappings dropped without unmap() are released by the garbage collector, once', async () => {
    const r = await runChild(
      `
      import { readFileSync } from 'node:fs';
      import { createNativePlatform } from 'MODULE';
      const p = createNativePlatform();
      const fd = p.memfd('gcprobe', 1 << 20);
      const count = () => readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes('memfd:gcprobe')).length;
      const mapSome = () => {
        for (let i = 0; i < 64; i++) {
          const r = p.mmap(fd, 1 << 20, 0);
          new Uint8Array(r.buffer)[i] = i;
          if (i % 2 === 0) r.unmap(); // half unmapped explicitly, half left to the GC
        }
      };
      mapSome(); // in a function so no stack slot keeps the last region alive
      const mapped = count();
      for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((r) => setImmediate(r)); }
      console.log('mapped=' + mapped + ' left=' + count());
      p.close(fd);
    `,
      ['--expose-gc'],
    );
    assert.equal(r.status, 0, r.stderr);
    const m = /mapped=(\d+) left=(\d+)/.exec(r.stdout);
    assert.ok(m, r.stdout);
    assert.ok(Number(m[1]) >= 1); // some mappings were still alive before the GC
    assert.equal(Number(m[2]), 0);
  });

  it('an exception thrown in a watch callback reaches uncaughtException', async () => {
    const r = await runChild(`
      import { createNativePlatform } from 'MODULE';
      const p = createNativePlatform();
      const efd = p.eventfd();
      let w;
      process.on('uncaughtException', (e) => { console.log('caught: ' + e.message); w.stop(); p.close(efd); });
      w = p.watchReadable(efd, () => { throw new Error('boom'); });
      p.eventfdWrite(efd);
    `);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /caught: boom/);
  });

  it('without a handler, a callback exception ends the process like any uncaught error', async () => {
    const r = await runChild(`
      import { createNativePlatform } from 'MODULE';
      const p = createNativePlatform();
      const efd = p.eventfd();
      p.watchReadable(efd, () => { throw new Error('unhandled-boom'); });
      p.eventfdWrite(efd);
    `);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /unhandled-boom/);
  });
});
