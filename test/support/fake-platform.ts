/**
 * An in-memory Platform for tests: fake memfds are ArrayBuffers, fake eventfds are
 * counters whose watchers run from setImmediate, fake UNIX sockets are in-memory pairs
 * that pass fds the way SCM_RIGHTS does (the receiver gets new fd numbers for the same
 * open file). It counts open fds and live mappings so tests can assert that everything
 * was released, and it throws on a double close (EBADF), which real code must never do.
 */
import type { FdSocket, MappedRegion, Platform, UnixListener, Watch } from '../../services/agent/src/os/platform.ts';

type FakeFile =
  | { readonly kind: 'memfd'; readonly name: string; readonly buffer: ArrayBuffer; refs: number }
  | { readonly kind: 'eventfd'; counter: bigint; readonly watchers: Set<EventWatcher>; refs: number };

interface EventWatcher {
  readonly cb: () => void;
  active: boolean;
}

export class FakePlatformError extends Error {
  override readonly name = 'FakePlatformError';
}

export interface FakeSocketOptions {
  /** Split every send into chunks of at most this many bytes (fds ride on the first). */
  readonly maxChunk?: number;
}

/** One end of an in-memory socket pair. */
export class FakeSocket implements FdSocket {
  peer: FakeSocket | null = null;
  #closed = false;
  readonly #dataCbs: ((d: Uint8Array, fds: readonly number[]) => void)[] = [];
  readonly #closeCbs: ((e?: Error) => void)[] = [];
  readonly #queue: { data: Uint8Array; fds: readonly number[] }[] = [];
  #flushScheduled = false;
  readonly #platform: FakePlatform;
  readonly #maxChunk: number;
  /** Bytes this end has sent (for assertions). */
  sentBytes = 0;

  constructor(platform: FakePlatform, options?: FakeSocketOptions) {
    this.#platform = platform;
    this.#maxChunk = options?.maxChunk ?? Number.MAX_SAFE_INTEGER;
  }

  get closed(): boolean {
    return this.#closed;
  }

  send(data: Uint8Array, fds: readonly number[] = []): void {
    if (this.#closed || this.peer === null || this.peer.closed) throw new FakePlatformError('send on a closed socket (EPIPE)');
    const peer = this.peer;
    // SCM_RIGHTS: the receiver gets its own fds for the same files.
    const dup = fds.map((fd) => this.#platform.dup(fd));
    this.sentBytes += data.length;
    for (let off = 0; off < data.length || off === 0; off += this.#maxChunk) {
      peer.#enqueue(data.slice(off, Math.min(data.length, off + this.#maxChunk)), off === 0 ? dup : []);
      if (data.length === 0) break;
    }
  }

  #enqueue(data: Uint8Array, fds: readonly number[]): void {
    this.#queue.push({ data, fds });
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => this.#flush());
    }
  }

  #flush(): void {
    this.#flushScheduled = false;
    // Like the native platform, data that arrives before onData is registered is kept.
    if (this.#dataCbs.length === 0) return;
    while (this.#queue.length > 0 && !this.#closed) {
      const item = this.#queue.shift() as { data: Uint8Array; fds: readonly number[] };
      for (const cb of this.#dataCbs) cb(item.data, item.fds);
    }
    // fds still queued on a closed socket are released like the kernel does
    for (const item of this.#queue.splice(0)) for (const fd of item.fds) this.#platform.close(fd);
  }

  onData(cb: (data: Uint8Array, fds: readonly number[]) => void): void {
    this.#dataCbs.push(cb);
    if (this.#queue.length > 0 && !this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => this.#flush());
    }
  }
  onClose(cb: (error?: Error) => void): void {
    this.#closeCbs.push(cb);
  }

  close(): void {
    this.#hangup();
    const peer = this.peer;
    if (peer !== null) setImmediate(() => peer.#hangup());
  }

  #hangup(): void {
    if (this.#closed) return;
    // deliver what already arrived first (a real socket reads data before EOF)
    if (this.#queue.length > 0) this.#flush();
    this.#closed = true;
    for (const item of this.#queue.splice(0)) for (const fd of item.fds) this.#platform.close(fd);
    for (const cb of this.#closeCbs) cb();
  }
}

/** The fake Platform. */
export class FakePlatform implements Platform {
  #nextFd = 100;
  readonly #files = new Map<number, FakeFile>();
  readonly #listeners = new Map<string, (s: FdSocket) => void>();
  #mappings = 0;
  /** Number of fence() calls. */
  fences = 0;
  /** Options for sockets created by connectUnix. */
  socketOptions: FakeSocketOptions = {};

  /** Fds currently open, sorted. */
  openFds(): number[] {
    return [...this.#files.keys()].sort((a, b) => a - b);
  }
  /** Live mappings. */
  get mappingCount(): number {
    return this.#mappings;
  }
  isOpen(fd: number): boolean {
    return this.#files.has(fd);
  }
  /** The bytes behind a memfd (to act as the guest / front-end). */
  memfdBuffer(fd: number): ArrayBuffer {
    const f = this.#files.get(fd);
    if (f?.kind !== 'memfd') throw new FakePlatformError(`fd ${fd} is not a memfd`);
    return f.buffer;
  }
  /** Peek at an eventfd counter without consuming it. */
  eventfdPeek(fd: number): bigint {
    const f = this.#files.get(fd);
    if (f?.kind !== 'eventfd') throw new FakePlatformError(`fd ${fd} is not an eventfd`);
    return f.counter;
  }

  /** A connected pair (no listener involved). */
  socketPair(options?: FakeSocketOptions): [FakeSocket, FakeSocket] {
    const a = new FakeSocket(this, options);
    const b = new FakeSocket(this, options);
    a.peer = b;
    b.peer = a;
    return [a, b];
  }

  listenUnix(path: string, onConnection: (socket: FdSocket) => void): UnixListener {
    this.#listeners.set(path, onConnection);
    return {
      path,
      close: () => {
        if (this.#listeners.get(path) === onConnection) this.#listeners.delete(path);
      },
    };
  }

  async connectUnix(path: string): Promise<FdSocket> {
    const l = this.#listeners.get(path);
    if (l === undefined) throw new FakePlatformError(`connect ${path}: ECONNREFUSED`);
    const [client, server] = this.socketPair(this.socketOptions);
    await new Promise<void>((r) => setImmediate(r));
    l(server);
    return client;
  }

  mmap(fd: number, length: number, offset: number): MappedRegion {
    const f = this.#files.get(fd);
    if (f === undefined) throw new FakePlatformError(`mmap: EBADF ${fd}`);
    if (f.kind !== 'memfd') throw new FakePlatformError(`mmap: ENODEV (fd ${fd} is an ${f.kind})`);
    if (!Number.isSafeInteger(length) || length <= 0 || offset !== 0) throw new FakePlatformError(`mmap: EINVAL length ${length} offset ${offset}`);
    if (length > f.buffer.byteLength) throw new FakePlatformError(`mmap: ${length} bytes beyond a ${f.buffer.byteLength}-byte memfd`);
    this.#mappings++;
    let live = true;
    return {
      buffer: f.buffer,
      unmap: () => {
        if (!live) return;
        live = false;
        this.#mappings--;
      },
    };
  }

  memfd(name: string, size: number): number {
    const fd = this.#nextFd++;
    this.#files.set(fd, { kind: 'memfd', name, buffer: new ArrayBuffer(size), refs: 1 });
    return fd;
  }

  eventfd(): number {
    const fd = this.#nextFd++;
    this.#files.set(fd, { kind: 'eventfd', counter: 0n, watchers: new Set(), refs: 1 });
    return fd;
  }

  #eventfd(fd: number, op: string): Extract<FakeFile, { kind: 'eventfd' }> {
    const f = this.#files.get(fd);
    if (f?.kind !== 'eventfd') throw new FakePlatformError(`${op}: fd ${fd} is not an open eventfd`);
    return f;
  }

  eventfdRead(fd: number): bigint {
    const f = this.#eventfd(fd, 'eventfdRead');
    const v = f.counter;
    f.counter = 0n;
    return v;
  }

  eventfdWrite(fd: number, value = 1n): void {
    const f = this.#eventfd(fd, 'eventfdWrite');
    f.counter += value;
    for (const w of f.watchers) {
      setImmediate(() => {
        if (w.active && f.counter > 0n) w.cb();
      });
    }
  }

  watchReadable(fd: number, cb: () => void): Watch {
    const f = this.#files.get(fd);
    if (f === undefined) throw new FakePlatformError(`watchReadable: EBADF ${fd}`);
    if (f.kind !== 'eventfd') throw new FakePlatformError('watchReadable: only eventfds are supported by the fake');
    const w: EventWatcher = { cb, active: true };
    f.watchers.add(w);
    if (f.counter > 0n) setImmediate(() => w.active && f.counter > 0n && w.cb());
    return {
      stop: () => {
        w.active = false;
        f.watchers.delete(w);
      },
    };
  }

  /** Active watchers on all fds. */
  get watcherCount(): number {
    let n = 0;
    for (const f of this.#files.values()) if (f.kind === 'eventfd') n += f.watchers.size;
    return n;
  }

  fence(): void {
    this.fences++;
  }

  /** A new fd for the same open file (what SCM_RIGHTS does). */
  dup(fd: number): number {
    const f = this.#files.get(fd);
    if (f === undefined) throw new FakePlatformError(`dup: EBADF ${fd}`);
    f.refs++;
    const n = this.#nextFd++;
    this.#files.set(n, f);
    return n;
  }

  close(fd: number): void {
    const f = this.#files.get(fd);
    if (f === undefined) throw new FakePlatformError(`close: EBADF ${fd}`);
    this.#files.delete(fd);
    f.refs--;
  }
}
