/**
 * Pure vhost-user codec: stream framing (bytes + SCM_RIGHTS fds → messages), payload
 * decoders that check exact sizes, and encoders for replies (and, for test front-ends,
 * requests). No I/O; every input is treated as hostile.
 */
import {
  HEADER_SIZE,
  HeaderFlag,
  MAX_CONFIG_SIZE,
  MAX_FDS_PER_MESSAGE,
  MAX_MEM_REGIONS,
  MAX_PAYLOAD_SIZE,
  PayloadSize,
  REPLY_FLAGS,
  VRING_INDEX_MASK,
  VRING_NOFD_MASK,
} from './protocol.ts';

/** One framed message. The receiver owns `fds` (close what you do not keep). */
export interface VhostUserMessage {
  readonly request: number;
  readonly flags: number;
  readonly payload: Uint8Array;
  readonly fds: readonly number[];
}

export const CodecErrorKind = {
  /** Header size field above MAX_PAYLOAD_SIZE (framing lost). */
  OVERSIZED: 'oversized',
  /** Version bits are not 1 (framing lost). */
  BAD_VERSION: 'bad-version',
  /** More fds arrived for one message than any message may carry. */
  TOO_MANY_FDS: 'too-many-fds',
  /** The reader already failed; nothing more is accepted. */
  CLOSED: 'closed',
  /** A payload has the wrong size for its type. */
  BAD_SIZE: 'bad-size',
  /** A message carries the wrong number of fds for its payload. */
  BAD_FDS: 'bad-fds',
  /** A field holds a value outside its domain. */
  BAD_VALUE: 'bad-value',
} as const;
export type CodecErrorKind = (typeof CodecErrorKind)[keyof typeof CodecErrorKind];

/** Codec failure. `fatal` errors mean stream framing is lost: close the connection. */
export class VhostUserCodecError extends Error {
  override readonly name = 'VhostUserCodecError';
  readonly kind: CodecErrorKind;
  /** Fds the reader was holding and now hands back to the caller to close. */
  readonly fds: readonly number[];
  constructor(kind: CodecErrorKind, message: string, options?: { cause?: unknown; fds?: readonly number[] }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.kind = kind;
    this.fds = options?.fds ?? [];
  }
  get fatal(): boolean {
    return (
      this.kind === CodecErrorKind.OVERSIZED ||
      this.kind === CodecErrorKind.BAD_VERSION ||
      this.kind === CodecErrorKind.TOO_MANY_FDS ||
      this.kind === CodecErrorKind.CLOSED
    );
  }
}

export interface ReadResult {
  /** Complete messages, in stream order. */
  readonly messages: VhostUserMessage[];
  /** Set when framing failed after `messages`; the reader accepts nothing more. */
  readonly error: VhostUserCodecError | null;
}

/**
 * Reassembles messages from stream chunks. fds received with a chunk belong to the last
 * message whose first byte is in that chunk (the kernel attaches SCM_RIGHTS to the first
 * byte of a sendmsg and ends a read after a skb carrying fds); when no message starts in
 * the chunk they belong to the message in progress.
 */
export class MessageReader {
  #buf: Uint8Array = new Uint8Array(0);
  #pendingFds: number[] = [];
  #failed = false;
  readonly #maxPayload: number;

  constructor(options?: { maxPayload?: number }) {
    this.#maxPayload = options?.maxPayload ?? MAX_PAYLOAD_SIZE;
  }

  /** Bytes buffered for an incomplete message. */
  get bufferedBytes(): number {
    return this.#buf.length;
  }

  /** Hand back (and forget) fds held for an incomplete message, e.g. on disconnect. */
  takePendingFds(): number[] {
    const fds = this.#pendingFds;
    this.#pendingFds = [];
    return fds;
  }

  push(chunk: Uint8Array, fds: readonly number[] = []): ReadResult {
    if (this.#failed) {
      return {
        messages: [],
        error: new VhostUserCodecError(CodecErrorKind.CLOSED, 'reader failed earlier', { fds: [...fds] }),
      };
    }
    const chunkStart = this.#buf.length;
    const data = concat(this.#buf, chunk);

    // Pass 1: find message starts (until an incomplete header or a header error).
    const starts: number[] = [];
    let pos = 0;
    while (pos < data.length) {
      starts.push(pos);
      if (data.length - pos < HEADER_SIZE) break;
      const size = readU32(data, pos + 8);
      if (size > this.#maxPayload || (readU32(data, pos + 4) & HeaderFlag.VERSION_MASK) !== HeaderFlag.VERSION) break;
      pos += HEADER_SIZE + size;
    }
    let target = 0; // the in-progress message (position 0) by default
    for (const s of starts) if (s >= chunkStart) target = s;

    // Pass 2: emit messages, attaching fds.
    const messages: VhostUserMessage[] = [];
    let carried = this.#pendingFds;
    this.#pendingFds = [];
    let attached = false;
    pos = 0;
    const fail = (kind: CodecErrorKind, msg: string): ReadResult => {
      this.#failed = true;
      this.#buf = new Uint8Array(0);
      const stranded = [...carried, ...(attached ? [] : fds)];
      return { messages, error: new VhostUserCodecError(kind, msg, { fds: stranded }) };
    };
    for (;;) {
      if (pos === target && !attached) {
        carried = [...carried, ...fds];
        attached = true;
      }
      if (carried.length > MAX_FDS_PER_MESSAGE) {
        return fail(CodecErrorKind.TOO_MANY_FDS, `${carried.length} fds for one message (max ${MAX_FDS_PER_MESSAGE})`);
      }
      if (data.length - pos < HEADER_SIZE) break;
      const request = readU32(data, pos);
      const flags = readU32(data, pos + 4);
      const size = readU32(data, pos + 8);
      if ((flags & HeaderFlag.VERSION_MASK) !== HeaderFlag.VERSION) {
        return fail(CodecErrorKind.BAD_VERSION, `bad version bits in flags 0x${flags.toString(16)} (request ${request})`);
      }
      if (size > this.#maxPayload) {
        return fail(CodecErrorKind.OVERSIZED, `payload size ${size} over the limit ${this.#maxPayload} (request ${request})`);
      }
      if (data.length - pos - HEADER_SIZE < size) break;
      const payload = data.slice(pos + HEADER_SIZE, pos + HEADER_SIZE + size);
      messages.push({ request, flags, payload, fds: carried });
      carried = [];
      pos += HEADER_SIZE + size;
    }
    this.#pendingFds = carried;
    this.#buf = data.slice(pos);
    return { messages, error: null };
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}
function readU32(b: Uint8Array, off: number): number {
  return view(b).getUint32(off, true);
}

function expectSize(payload: Uint8Array, size: number, what: string): DataView {
  if (payload.length !== size) {
    throw new VhostUserCodecError(CodecErrorKind.BAD_SIZE, `${what} payload must be ${size} bytes, got ${payload.length}`);
  }
  return view(payload);
}

const U64_MAX = (1n << 64n) - 1n;

// ---------------------------------------------------------------------------------------
// Payload types and decoders

/** vhost_vring_state. */
export interface VringState {
  readonly index: number;
  readonly num: number;
}
/** vhost_vring_addr: ring addresses are front-end virtual addresses. */
export interface VringAddr {
  readonly index: number;
  readonly flags: number;
  readonly desc: bigint;
  readonly used: bigint;
  readonly avail: bigint;
  readonly log: bigint;
}
/** One SET_MEM_TABLE region, with the fd that backs it. */
export interface MemRegion {
  readonly guestPhysAddr: bigint;
  readonly memorySize: bigint;
  readonly userspaceAddr: bigint;
  readonly mmapOffset: bigint;
  readonly fd: number;
}
/** SET_VRING_KICK / CALL / ERR: `fd` null when the NOFD bit is set. */
export interface VringFile {
  readonly index: number;
  readonly fd: number | null;
}
/** GET_CONFIG / SET_CONFIG payload. */
export interface ConfigPayload {
  readonly offset: number;
  readonly size: number;
  readonly flags: number;
  readonly data: Uint8Array;
}

/** u64 payload (features, protocol features, status). Exactly 8 bytes. */
export function decodeU64(payload: Uint8Array, what = 'u64'): bigint {
  return expectSize(payload, PayloadSize.U64, what).getBigUint64(0, true);
}

/** vring state (u32 index, u32 num). Exactly 8 bytes. */
export function decodeState(payload: Uint8Array): VringState {
  const dv = expectSize(payload, PayloadSize.STATE, 'vring state');
  return { index: dv.getUint32(0, true), num: dv.getUint32(4, true) };
}

/** vring addresses. Exactly 40 bytes. */
export function decodeAddr(payload: Uint8Array): VringAddr {
  const dv = expectSize(payload, PayloadSize.ADDR, 'vring addr');
  return {
    index: dv.getUint32(0, true),
    flags: dv.getUint32(4, true),
    desc: dv.getBigUint64(8, true),
    used: dv.getBigUint64(16, true),
    avail: dv.getBigUint64(24, true),
    log: dv.getBigUint64(32, true),
  };
}

/**
 * SET_MEM_TABLE: u32 n ≤ 8, u32 padding, n regions; exactly one fd per region, in order.
 * Regions must be non-empty and must not wrap the 64-bit address space.
 */
export function decodeMemTable(payload: Uint8Array, fds: readonly number[]): MemRegion[] {
  if (payload.length < PayloadSize.MEM_TABLE_HEADER) {
    throw new VhostUserCodecError(CodecErrorKind.BAD_SIZE, `mem table payload too short (${payload.length} bytes)`);
  }
  const dv = view(payload);
  const n = dv.getUint32(0, true);
  if (n > MAX_MEM_REGIONS) {
    throw new VhostUserCodecError(CodecErrorKind.BAD_VALUE, `mem table has ${n} regions (max ${MAX_MEM_REGIONS})`);
  }
  expectSize(payload, PayloadSize.MEM_TABLE_HEADER + n * PayloadSize.MEM_REGION, `mem table with ${n} regions`);
  if (fds.length !== n) {
    throw new VhostUserCodecError(CodecErrorKind.BAD_FDS, `mem table has ${n} regions but ${fds.length} fds`);
  }
  const regions: MemRegion[] = [];
  for (let i = 0; i < n; i++) {
    const o = PayloadSize.MEM_TABLE_HEADER + i * PayloadSize.MEM_REGION;
    const r: MemRegion = {
      guestPhysAddr: dv.getBigUint64(o, true),
      memorySize: dv.getBigUint64(o + 8, true),
      userspaceAddr: dv.getBigUint64(o + 16, true),
      mmapOffset: dv.getBigUint64(o + 24, true),
      fd: fds[i] as number,
    };
    if (r.memorySize === 0n) throw new VhostUserCodecError(CodecErrorKind.BAD_VALUE, `region ${i} has size 0`);
    if (r.guestPhysAddr + r.memorySize - 1n > U64_MAX || r.userspaceAddr + r.memorySize - 1n > U64_MAX || r.mmapOffset + r.memorySize - 1n > U64_MAX) {
      throw new VhostUserCodecError(CodecErrorKind.BAD_VALUE, `region ${i} wraps the 64-bit address space`);
    }
    regions.push(r);
  }
  return regions;
}

/** SET_VRING_KICK/CALL/ERR: u64 index | NOFD; one fd unless NOFD, none with NOFD. */
export function decodeVringFile(payload: Uint8Array, fds: readonly number[]): VringFile {
  const v = expectSize(payload, PayloadSize.U64, 'vring file').getBigUint64(0, true);
  if ((v & ~(VRING_INDEX_MASK | VRING_NOFD_MASK)) !== 0n) {
    throw new VhostUserCodecError(CodecErrorKind.BAD_VALUE, `vring file value 0x${v.toString(16)} has reserved bits set`);
  }
  const index = Number(v & VRING_INDEX_MASK);
  if ((v & VRING_NOFD_MASK) !== 0n) {
    if (fds.length !== 0) throw new VhostUserCodecError(CodecErrorKind.BAD_FDS, `vring file with NOFD carries ${fds.length} fds`);
    return { index, fd: null };
  }
  if (fds.length !== 1) throw new VhostUserCodecError(CodecErrorKind.BAD_FDS, `vring file needs exactly 1 fd, got ${fds.length}`);
  return { index, fd: fds[0] as number };
}

/** GET/SET_CONFIG: 12-byte header + `size` bytes, size ≤ 256, offset + size without overflow. */
export function decodeConfig(payload: Uint8Array): ConfigPayload {
  if (payload.length < PayloadSize.CONFIG_HEADER) {
    throw new VhostUserCodecError(CodecErrorKind.BAD_SIZE, `config payload too short (${payload.length} bytes)`);
  }
  const dv = view(payload);
  const offset = dv.getUint32(0, true);
  const size = dv.getUint32(4, true);
  const flags = dv.getUint32(8, true);
  if (size > MAX_CONFIG_SIZE) {
    throw new VhostUserCodecError(CodecErrorKind.BAD_VALUE, `config size ${size} over ${MAX_CONFIG_SIZE}`);
  }
  expectSize(payload, PayloadSize.CONFIG_HEADER + size, `config of size ${size}`);
  return { offset, size, flags, data: payload.slice(PayloadSize.CONFIG_HEADER) };
}

/** Requests without fds: throws BAD_FDS when any fd came along. */
export function expectNoFds(fds: readonly number[], what: string): void {
  if (fds.length !== 0) throw new VhostUserCodecError(CodecErrorKind.BAD_FDS, `${what} carries ${fds.length} unexpected fds`);
}

// ---------------------------------------------------------------------------------------
// Encoders

/** A whole message: 12-byte header + payload. */
export function encodeMessage(request: number, flags: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  const dv = view(out);
  dv.setUint32(0, request >>> 0, true);
  dv.setUint32(4, flags >>> 0, true);
  dv.setUint32(8, payload.length, true);
  out.set(payload, HEADER_SIZE);
  return out;
}

/** A reply: flags exactly 0x5 (version 1 | REPLY). */
export function encodeReply(request: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  return encodeMessage(request, REPLY_FLAGS, payload);
}

export function encodeU64Payload(value: bigint): Uint8Array {
  if (value < 0n || value > U64_MAX) throw new RangeError(`u64 out of range: ${value}`);
  const out = new Uint8Array(8);
  view(out).setBigUint64(0, value, true);
  return out;
}

export function encodeStatePayload(state: VringState): Uint8Array {
  const out = new Uint8Array(PayloadSize.STATE);
  const dv = view(out);
  dv.setUint32(0, state.index >>> 0, true);
  dv.setUint32(4, state.num >>> 0, true);
  return out;
}

/** u64 reply (GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_STATUS, REPLY_ACK). */
export function encodeU64Reply(request: number, value: bigint): Uint8Array {
  return encodeReply(request, encodeU64Payload(value));
}

/** REPLY_ACK: u64 0 on success, 1 on failure. */
export function encodeAck(request: number, ok: boolean): Uint8Array {
  return encodeU64Reply(request, ok ? 0n : 1n);
}

/** GET_VRING_BASE reply. */
export function encodeStateReply(request: number, state: VringState): Uint8Array {
  return encodeReply(request, encodeStatePayload(state));
}

export function encodeConfigPayload(config: { offset: number; flags: number; data: Uint8Array }): Uint8Array {
  if (config.data.length > MAX_CONFIG_SIZE) throw new RangeError(`config data over ${MAX_CONFIG_SIZE} bytes`);
  const out = new Uint8Array(PayloadSize.CONFIG_HEADER + config.data.length);
  const dv = view(out);
  dv.setUint32(0, config.offset >>> 0, true);
  dv.setUint32(4, config.data.length, true);
  dv.setUint32(8, config.flags >>> 0, true);
  out.set(config.data, PayloadSize.CONFIG_HEADER);
  return out;
}

/**
 * GET_CONFIG reply: the request's 12-byte header echoed followed by exactly `size` config
 * bytes; `data` null means failure, sent as a zero-size payload (vhost-user.rst: "a zero
 * length payload indicates an error").
 */
export function encodeConfigReply(request: number, req: { offset: number; size: number; flags: number }, data: Uint8Array | null): Uint8Array {
  if (data === null || data.length !== req.size) return encodeReply(request);
  return encodeReply(request, encodeConfigPayload({ offset: req.offset, flags: req.flags, data }));
}

export function encodeAddrPayload(addr: VringAddr): Uint8Array {
  const out = new Uint8Array(PayloadSize.ADDR);
  const dv = view(out);
  dv.setUint32(0, addr.index >>> 0, true);
  dv.setUint32(4, addr.flags >>> 0, true);
  dv.setBigUint64(8, addr.desc, true);
  dv.setBigUint64(16, addr.used, true);
  dv.setBigUint64(24, addr.avail, true);
  dv.setBigUint64(32, addr.log, true);
  return out;
}

/** SET_MEM_TABLE payload (fds go alongside, in region order). */
export function encodeMemTablePayload(regions: readonly Omit<MemRegion, 'fd'>[]): Uint8Array {
  const out = new Uint8Array(PayloadSize.MEM_TABLE_HEADER + regions.length * PayloadSize.MEM_REGION);
  const dv = view(out);
  dv.setUint32(0, regions.length, true);
  regions.forEach((r, i) => {
    const o = PayloadSize.MEM_TABLE_HEADER + i * PayloadSize.MEM_REGION;
    dv.setBigUint64(o, r.guestPhysAddr, true);
    dv.setBigUint64(o + 8, r.memorySize, true);
    dv.setBigUint64(o + 16, r.userspaceAddr, true);
    dv.setBigUint64(o + 24, r.mmapOffset, true);
  });
  return out;
}

/** SET_VRING_KICK/CALL/ERR payload. */
export function encodeVringFilePayload(index: number, noFd: boolean): Uint8Array {
  return encodeU64Payload((BigInt(index) & VRING_INDEX_MASK) | (noFd ? VRING_NOFD_MASK : 0n));
}

/** A front-end request (flags = version 1, plus NEED_REPLY when asked). */
export function encodeRequest(request: number, payload?: Uint8Array, options?: { needReply?: boolean }): Uint8Array {
  return encodeMessage(request, HeaderFlag.VERSION | (options?.needReply === true ? HeaderFlag.NEED_REPLY : 0), payload);
}
