/**
 * The OS surface the agent needs and Node lacks: UNIX sockets with SCM_RIGHTS fd
 * passing, mmap of guest memory, eventfds watched from the event loop. The native
 * implementation is ./native-platform.ts (N-API addon in services/agent/native);
 * protocol layers depend only on this interface so they can be tested with fakes.
 *
 * All fds are plain numbers owned by whoever received them: close what you keep.
 */

/** A connected stream UNIX socket that carries fds alongside bytes. */
export interface FdSocket {
  /** Send bytes, with fds attached to the first byte (SCM_RIGHTS). Throws on a dead socket. */
  send(data: Uint8Array, fds?: readonly number[]): void;
  /**
   * Called for every chunk read. fds that arrived with the chunk are passed with it (the
   * receiver owns them). Chunks do not respect message boundaries.
   */
  onData(cb: (data: Uint8Array, fds: readonly number[]) => void): void;
  /** Called once when the peer hangs up or the socket fails; `error` is set on failure. */
  onClose(cb: (error?: Error) => void): void;
  /** Close the socket (idempotent). onClose callbacks run. */
  close(): void;
}

export interface UnixListener {
  readonly path: string;
  close(): void;
}

export interface MappedRegion {
  /** The mapping, MAP_SHARED read/write. Valid until unmap(). */
  readonly buffer: ArrayBuffer;
  /** Unmap now (idempotent). Views on `buffer` must not be used afterwards. */
  unmap(): void;
}

export interface Watch {
  stop(): void;
}

export interface Platform {
  /** Listen on a UNIX stream socket path (an existing stale socket file is replaced). */
  listenUnix(path: string, onConnection: (socket: FdSocket) => void): UnixListener;
  /** Connect to a UNIX stream socket (used by the frontend test driver). */
  connectUnix(path: string): Promise<FdSocket>;

  /** mmap(fd) MAP_SHARED, PROT_READ|PROT_WRITE. */
  mmap(fd: number, length: number, offset: number): MappedRegion;
  /** memfd_create + ftruncate (tests, frontend test driver). */
  memfd(name: string, size: number): number;

  /** eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC). */
  eventfd(): number;
  /** Non-blocking read of an eventfd counter; 0n when nothing is pending. */
  eventfdRead(fd: number): bigint;
  /** Add `value` (default 1n) to an eventfd counter. */
  eventfdWrite(fd: number, value?: bigint): void;
  /** Run `cb` on the event loop whenever `fd` is readable. */
  watchReadable(fd: number, cb: () => void): Watch;

  /** Full memory fence (seq_cst), for the virtqueue memory-ordering rules. */
  fence(): void;
  close(fd: number): void;
}
