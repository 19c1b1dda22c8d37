/**
 * Thin typed binding of the agent's N-API addon (services/agent/native, C sources in
 * native/src). Nothing here adds behaviour: see ./native-platform.ts for the Platform
 * built on it, and docs/native.md for the ownership rules.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * A failed system call. `code` is the errno name (e.g. "EBADF"), `syscall` the call that
 * failed; the message reads "recvmsg: EBADF (Bad file descriptor)".
 */
export class OsError extends Error {
  override readonly name: string = 'OsError';
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;
  constructor(message: string, code: string, errno: number, syscall: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.errno = errno;
    this.syscall = syscall;
  }
}

/** The addon's .node file is missing or cannot be loaded. */
export class NativeAddonError extends Error {
  override readonly name: string = 'NativeAddonError';
}

/** True when `e` is an OsError with the given errno name. */
export function isOsError(e: unknown, code?: string): e is OsError {
  return e instanceof OsError && (code === undefined || e.code === code);
}

/** Result of one recvmsg(): `bytes` 0 means end of stream. */
export interface RecvResult {
  readonly bytes: number;
  /** fds received with the data (O_CLOEXEC); the caller owns them. */
  readonly fds: number[];
  /** Some fds were dropped (MSG_CTRUNC or more than 32): they were closed, not leaked. */
  readonly truncated: boolean;
}

/** Event bits for watchStart / the watch callback (libuv's uv_poll_event values). */
export const PollEvent = {
  READABLE: 1,
  WRITABLE: 2,
  DISCONNECT: 4,
} as const;
export type PollEvent = (typeof PollEvent)[keyof typeof PollEvent];

declare const watchHandleBrand: unique symbol;
/** An opaque uv_poll_t handle. */
export type WatchHandle = { readonly [watchHandleBrand]: true };

/** The functions exported by gpiofabric_native.node. All throw OsError on syscall failure. */
export interface NativeBinding {
  setErrorClass(ctor: new (message: string, code: string, errno: number, syscall: string) => Error): void;

  /** socket+bind+listen, non-blocking and CLOEXEC; unlinks a stale *socket* file first. */
  unixListen(path: string, backlog: number): number;
  /** accept4 (non-blocking, CLOEXEC); -1 when no connection is pending. */
  unixAccept(fd: number): number;
  /** socket+connect, non-blocking and CLOEXEC. EAGAIN when the listener's backlog is full. */
  unixConnect(path: string): number;
  /** recvmsg with MSG_CMSG_CLOEXEC into `buffer`; null when nothing is pending (EAGAIN). */
  recvMsg(fd: number, buffer: Uint8Array): RecvResult | null;
  /** sendmsg (MSG_NOSIGNAL) with fds on the first byte; bytes sent, or -1 on EAGAIN. */
  sendMsg(fd: number, data: Uint8Array, fds?: readonly number[]): number;
  close(fd: number): void;
  /** fcntl(F_DUPFD_CLOEXEC). */
  dup(fd: number): number;

  /** mmap MAP_SHARED read/write as an external ArrayBuffer (munmapped on GC or unmap()). */
  mmap(fd: number, length: number, offset: number): ArrayBuffer;
  /** Detach the ArrayBuffer and munmap now; false when it was already unmapped. */
  unmap(buffer: ArrayBuffer): boolean;
  memfd(name: string, size: number): number;
  fence(): void;
  pageSize(): number;

  eventfd(): number;
  eventfdRead(fd: number): bigint;
  eventfdWrite(fd: number, value?: bigint | number): void;

  /** A uv_poll_t on the Node loop; cb(events, error) runs via napi_make_callback. */
  watchCreate(fd: number, cb: (events: number, error: OsError | undefined) => void): WatchHandle;
  watchStart(handle: WatchHandle, events: number): void;
  watchStop(handle: WatchHandle): void;
  watchClose(handle: WatchHandle): void;
}

const here = dirname(fileURLToPath(import.meta.url));
/** Where scripts/build-addon.mjs puts the addon. */
export const NATIVE_ADDON_PATH = resolve(here, '..', '..', 'native', 'build', 'Release', 'gpiofabric_native.node');

let cached: NativeBinding | undefined;

/** Load the addon once (throws NativeAddonError with a fix-it hint when it is missing). */
export function loadNative(): NativeBinding {
  if (cached !== undefined) return cached;
  if (!existsSync(NATIVE_ADDON_PATH)) {
    throw new NativeAddonError(
      `the agent's native addon is not built (${NATIVE_ADDON_PATH} is missing); ` +
        'run `npm install` or `npm run build:addon` (needs a C compiler and the Node headers)',
    );
  }
  let binding: NativeBinding;
  try {
    const require = createRequire(import.meta.url);
    binding = require(join(NATIVE_ADDON_PATH)) as NativeBinding;
  } catch (cause) {
    throw new NativeAddonError(
      `cannot load the agent's native addon ${NATIVE_ADDON_PATH}; rebuild it with \`npm run build:addon\``,
      { cause },
    );
  }
  binding.setErrorClass(OsError);
  cached = binding;
  return binding;
}
