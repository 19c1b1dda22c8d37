/**
 * The Platform (./platform.ts) on the agent's own N-API addon (./native.ts).
 *
 * Sockets are non-blocking and driven by one libuv poll watcher each: readable events are
 * drained with recvmsg until EAGAIN (at most READS_PER_WAKE per wake-up so one busy peer
 * cannot starve the loop; the watcher is level-triggered and fires again), and sends that
 * hit EAGAIN go to a per-socket write queue flushed on writable events. fds queued for a
 * later send are dup()ed, so the caller may close its own copies as soon as send() returns.
 */
import { constants as bufferConstants } from 'node:buffer';
import { lstatSync, unlinkSync } from 'node:fs';
import type { FdSocket, MappedRegion, Platform, UnixListener, Watch } from './platform.ts';
import { isOsError, loadNative, OsError, PollEvent } from './native.ts';
import type { NativeBinding, WatchHandle } from './native.ts';

/** recvmsg calls per readable wake-up, per socket. */
const READS_PER_WAKE = 64;
/** accept calls per readable wake-up of a listener. */
const ACCEPTS_PER_WAKE = 64;
/** Receive buffer per socket (vhost-user messages are far smaller). */
const RECV_BUFFER_SIZE = 64 * 1024;
/** A socket whose unsent data exceeds this is closed with an error (the peer is not reading). */
const MAX_QUEUED_BYTES = 64 * 1024 * 1024;
/** Listen backlog. */
const BACKLOG = 64;
/** Pause of a listener after accept() failed for lack of resources (EMFILE…). */
const ACCEPT_BACKOFF_MS = 100;
/** connectUnix retries EAGAIN (backlog full) for this long. */
const CONNECT_RETRY_MS = 1000;

/** send() on a socket that is closed (by close(), the peer, or an error). */
export class SocketClosedError extends Error {
  override readonly name: string = 'SocketClosedError';
}

/** A socket's peer did not read and its write queue overflowed. */
export class WriteQueueOverflowError extends Error {
  override readonly name: string = 'WriteQueueOverflowError';
}

/**
 * One poll watcher per fd (libuv allows only one). The registry lets Platform.close(fd)
 * stop a watcher before the fd goes away and refuses a second watcher on the same fd.
 */
class FdWatcher {
  private static readonly active = new Map<number, FdWatcher>();
  private handle: WatchHandle | undefined;
  private events = 0;

  constructor(
    private readonly native: NativeBinding,
    readonly fd: number,
    cb: (events: number, error: OsError | undefined) => void,
  ) {
    if (FdWatcher.active.has(fd)) {
      throw new OsError(`watch: EBUSY (fd ${fd} is already watched)`, 'EBUSY', 16, 'watch');
    }
    this.handle = native.watchCreate(fd, cb);
    FdWatcher.active.set(fd, this);
  }

  static closeFor(fd: number): void {
    FdWatcher.active.get(fd)?.close();
  }

  /** Watch for `events` (0 stops watching). */
  setEvents(events: number): void {
    if (this.handle === undefined || events === this.events) return;
    if (events === 0) this.native.watchStop(this.handle);
    else this.native.watchStart(this.handle, events);
    this.events = events;
  }

  close(): void {
    if (this.handle === undefined) return;
    this.native.watchClose(this.handle);
    this.handle = undefined;
    if (FdWatcher.active.get(this.fd) === this) FdWatcher.active.delete(this.fd);
  }
}

interface Chunk {
  readonly data: Uint8Array;
  readonly fds: number[];
}

class NativeFdSocket implements FdSocket {
  private readonly watcher: FdWatcher;
  private readonly recvBuffer = new Uint8Array(RECV_BUFFER_SIZE);
  private readonly dataHandlers: Array<(data: Uint8Array, fds: readonly number[]) => void> = [];
  private readonly closeHandlers: Array<(error?: Error) => void> = [];
  /** Chunks read before anyone registered onData. */
  private readonly early: Chunk[] = [];
  /** Unsent data; fds are our own dups, sent with the chunk's first byte. */
  private readonly queue: Chunk[] = [];
  private queuedBytes = 0;
  private closed = false;
  private closeError: Error | undefined;

  constructor(
    private readonly native: NativeBinding,
    readonly fd: number,
  ) {
    try {
      this.watcher = new FdWatcher(native, fd, (events, error) => this.onPoll(events, error));
      this.watcher.setEvents(PollEvent.READABLE | PollEvent.DISCONNECT);
    } catch (e) {
      this.watcherCleanup();
      native.close(fd);
      throw e;
    }
  }

  private watcherCleanup(): void {
    FdWatcher.closeFor(this.fd);
  }

  send(data: Uint8Array, fds: readonly number[] = []): void {
    if (this.closed) {
      throw new SocketClosedError('send on a closed socket', this.closeError ? { cause: this.closeError } : undefined);
    }
    if (data.byteLength === 0) {
      if (fds.length > 0) throw new RangeError('fds need at least one byte of data to ride on');
      return;
    }
    if (this.queue.length === 0) {
      let sent: number;
      try {
        sent = this.native.sendMsg(this.fd, data, fds);
      } catch (e) {
        // A bad argument (or a bad fd to pass) leaves the socket fine; sendmsg failing does not.
        if (!(e instanceof OsError) || e.syscall !== 'sendmsg') throw e;
        this.finish(e);
        throw new SocketClosedError(`send failed: ${e.message}`, { cause: e });
      }
      if (sent === data.byteLength) return;
      if (sent > 0) {
        this.enqueue(data.subarray(sent), []); // the fds went with the first byte
        return;
      }
    }
    this.enqueue(data, fds);
  }

  private enqueue(data: Uint8Array, fds: readonly number[]): void {
    if (this.queuedBytes + data.byteLength > MAX_QUEUED_BYTES) {
      const err = new WriteQueueOverflowError(
        `write queue over ${MAX_QUEUED_BYTES} bytes: the peer is not reading; socket closed`,
      );
      this.finish(err);
      throw err;
    }
    const dups: number[] = [];
    try {
      for (const fd of fds) dups.push(this.native.dup(fd));
    } catch (e) {
      for (const fd of dups) this.native.close(fd);
      throw e;
    }
    this.queue.push({ data: data.slice(), fds: dups });
    this.queuedBytes += data.byteLength;
    this.watcher.setEvents(PollEvent.READABLE | PollEvent.WRITABLE | PollEvent.DISCONNECT);
  }

  private flush(): void {
    while (!this.closed) {
      const head = this.queue[0];
      if (head === undefined) {
        this.watcher.setEvents(PollEvent.READABLE | PollEvent.DISCONNECT);
        return;
      }
      let sent: number;
      try {
        sent = this.native.sendMsg(this.fd, head.data, head.fds);
      } catch (e) {
        this.finish(e instanceof Error ? e : new Error(String(e)));
        return;
      }
      if (sent < 0) return; // EAGAIN: wait for the next writable event
      for (const fd of head.fds) this.native.close(fd);
      this.queuedBytes -= sent;
      if (sent < head.data.byteLength) this.queue[0] = { data: head.data.subarray(sent), fds: [] };
      else this.queue.shift();
    }
  }

  onData(cb: (data: Uint8Array, fds: readonly number[]) => void): void {
    this.dataHandlers.push(cb);
    if (this.early.length > 0 && this.dataHandlers.length === 1) {
      queueMicrotask(() => {
        while (!this.closed && this.early.length > 0) {
          const chunk = this.early.shift();
          if (chunk !== undefined) this.deliver(chunk);
        }
      });
    }
  }

  onClose(cb: (error?: Error) => void): void {
    if (this.closed) {
      if (this.closeError === undefined) cb();
      else cb(this.closeError);
      return;
    }
    this.closeHandlers.push(cb);
  }

  close(): void {
    this.finish(undefined);
  }

  private deliver(chunk: Chunk): void {
    for (const h of this.dataHandlers) h(chunk.data, chunk.fds);
  }

  private onPoll(events: number, error: OsError | undefined): void {
    if (this.closed) return;
    if (error !== undefined) {
      this.finish(error);
      return;
    }
    if ((events & PollEvent.WRITABLE) !== 0) this.flush();
    if ((events & (PollEvent.READABLE | PollEvent.DISCONNECT)) !== 0) this.read();
  }

  private read(): void {
    for (let i = 0; i < READS_PER_WAKE && !this.closed; i++) {
      let r;
      try {
        r = this.native.recvMsg(this.fd, this.recvBuffer);
      } catch (e) {
        this.finish(e instanceof Error ? e : new Error(String(e)));
        return;
      }
      if (r === null) return; // drained
      if (r.bytes === 0) {
        for (const fd of r.fds) this.native.close(fd);
        this.finish(undefined); // orderly EOF
        return;
      }
      const chunk: Chunk = { data: this.recvBuffer.slice(0, r.bytes), fds: r.fds };
      if (this.dataHandlers.length === 0) this.early.push(chunk);
      else this.deliver(chunk);
    }
  }

  private finish(error: Error | undefined): void {
    if (this.closed) return;
    this.closed = true;
    this.closeError = error;
    this.watcher.close(); // stop polling before the fd goes away
    try {
      this.native.close(this.fd);
    } catch {
      // already invalid: nothing left to release
    }
    for (const chunk of [...this.queue, ...this.early]) for (const fd of chunk.fds) this.native.close(fd);
    this.queue.length = 0;
    this.early.length = 0;
    this.queuedBytes = 0;
    const handlers = this.closeHandlers.splice(0);
    for (const h of handlers) {
      if (error === undefined) h();
      else h(error);
    }
  }
}

class NativeUnixListener implements UnixListener {
  private readonly watcher: FdWatcher;
  private readonly ino: bigint | undefined;
  private closed = false;
  private backoff: NodeJS.Timeout | undefined;

  constructor(
    private readonly native: NativeBinding,
    readonly path: string,
    private readonly fd: number,
    private readonly onConnection: (socket: FdSocket) => void,
  ) {
    this.ino = lstatSync(path, { bigint: true, throwIfNoEntry: false })?.ino;
    try {
      this.watcher = new FdWatcher(native, fd, (_events, error) => this.onReadable(error));
      this.watcher.setEvents(PollEvent.READABLE);
    } catch (e) {
      FdWatcher.closeFor(fd);
      native.close(fd);
      throw e;
    }
  }

  private onReadable(error: OsError | undefined): void {
    if (this.closed) return;
    if (error !== undefined) {
      this.pause(error);
      return;
    }
    for (let i = 0; i < ACCEPTS_PER_WAKE && !this.closed; i++) {
      let fd: number;
      try {
        fd = this.native.unixAccept(this.fd);
      } catch (e) {
        // The peer gave up before we accepted: try the next one.
        if (isOsError(e, 'ECONNABORTED') || isOsError(e, 'EPROTO')) continue;
        // EMFILE, ENFILE, ENOBUFS, ENOMEM…: the listener stays readable, so back off.
        this.pause(e);
        return;
      }
      if (fd < 0) return;
      this.onConnection(new NativeFdSocket(this.native, fd));
    }
  }

  private pause(error: unknown): void {
    process.emitWarning(
      `unix listener ${this.path}: ${error instanceof Error ? error.message : String(error)}; pausing accept for ${ACCEPT_BACKOFF_MS} ms`,
    );
    this.watcher.setEvents(0);
    this.backoff = setTimeout(() => {
      this.backoff = undefined;
      if (!this.closed) this.watcher.setEvents(PollEvent.READABLE);
    }, ACCEPT_BACKOFF_MS);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.backoff !== undefined) clearTimeout(this.backoff);
    this.watcher.close();
    this.native.close(this.fd);
    // Remove our socket file, but not one that somebody has put there since.
    const st = lstatSync(this.path, { bigint: true, throwIfNoEntry: false });
    if (st !== undefined && st.isSocket() && st.ino === this.ino) {
      try {
        unlinkSync(this.path);
      } catch {
        // gone already
      }
    }
  }
}

class NativeWatch implements Watch {
  private readonly watcher: FdWatcher;

  constructor(native: NativeBinding, fd: number, cb: () => void) {
    this.watcher = new FdWatcher(native, fd, (_events, error) => {
      if (error !== undefined) {
        // The fd went bad under the watcher (e.g. closed elsewhere): stop, do not spin.
        this.stop();
        process.emitWarning(`watch on fd ${fd} stopped: ${error.message}`);
        return;
      }
      cb();
    });
    try {
      this.watcher.setEvents(PollEvent.READABLE);
    } catch (e) {
      this.watcher.close();
      throw e;
    }
  }

  stop(): void {
    this.watcher.close();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The Platform on the native addon. Throws NativeAddonError when the addon is not built. */
export function createNativePlatform(): Platform {
  const native = loadNative();
  return {
    listenUnix(path, onConnection) {
      const fd = native.unixListen(path, BACKLOG);
      return new NativeUnixListener(native, path, fd, onConnection);
    },

    async connectUnix(path) {
      const deadline = Date.now() + CONNECT_RETRY_MS;
      for (let delay = 1; ; delay = Math.min(delay * 2, 50)) {
        try {
          return new NativeFdSocket(native, native.unixConnect(path));
        } catch (e) {
          if (!isOsError(e, 'EAGAIN') || Date.now() >= deadline) throw e;
        }
        await sleep(delay);
      }
    },

    mmap(fd, length, offset) {
      if (!Number.isSafeInteger(length) || length <= 0 || length > bufferConstants.MAX_LENGTH) {
        throw new RangeError(`mmap length must be an integer in [1, ${bufferConstants.MAX_LENGTH}], got ${length}`);
      }
      if (!Number.isSafeInteger(offset) || offset < 0 || offset % native.pageSize() !== 0) {
        throw new RangeError(`mmap offset must be a non-negative multiple of the page size, got ${offset}`);
      }
      const buffer = native.mmap(fd, length, offset);
      return {
        buffer,
        unmap(): void {
          native.unmap(buffer);
        },
      } satisfies MappedRegion;
    },

    memfd: (name, size) => native.memfd(name, size),
    eventfd: () => native.eventfd(),
    eventfdRead: (fd) => native.eventfdRead(fd),
    eventfdWrite: (fd, value = 1n) => native.eventfdWrite(fd, value),
    watchReadable: (fd, cb) => new NativeWatch(native, fd, cb),
    fence: () => native.fence(),
    close(fd) {
      FdWatcher.closeFor(fd); // libuv: stop polling before the fd is closed
      native.close(fd);
    },
  };
}
