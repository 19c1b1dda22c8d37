/**
 * virtio-gpio (virtio 1.2 §5.18, device id 41): every constant of the device and the pure
 * codecs for its config space, names block, requestq and eventq messages. No I/O here.
 *
 * All multi-byte fields are little-endian.
 */
import { Direction, IrqType, isIrqType } from '../../../common/src/line-model.ts';

export { Direction, IrqType, isIrqType };

/** virtio device id of a GPIO controller. */
export const VIRTIO_ID_GPIO = 41;

/** Feature bit numbers the GPIO device offers (generic virtio bits included). */
export const FeatureBit = {
  /** VIRTIO_GPIO_F_IRQ: the device has an eventq and supports interrupts. */
  GPIO_F_IRQ: 0,
  /** VIRTIO_RING_F_INDIRECT_DESC. */
  RING_INDIRECT_DESC: 28,
  /** VIRTIO_RING_F_EVENT_IDX. */
  RING_EVENT_IDX: 29,
  /** VIRTIO_F_VERSION_1 (modern device; Linux virtio-pci requires it). */
  VERSION_1: 32,
} as const;
export type FeatureBit = (typeof FeatureBit)[keyof typeof FeatureBit];

/** 64-bit feature mask of one bit. */
export const featureMask = (bit: FeatureBit): bigint => 1n << BigInt(bit);

/** Queue indexes. The eventq exists only when F_IRQ is negotiated. */
export const QueueIndex = { REQUESTQ: 0, EVENTQ: 1 } as const;
export type QueueIndex = (typeof QueueIndex)[keyof typeof QueueIndex];

/** requestq message types (spec names; Linux calls 1 GET_NAMES and 6 IRQ_TYPE). */
export const RequestType = {
  GET_LINE_NAMES: 1,
  GET_DIRECTION: 2,
  SET_DIRECTION: 3,
  GET_VALUE: 4,
  SET_VALUE: 5,
  SET_IRQ_TYPE: 6,
} as const;
export type RequestType = (typeof RequestType)[keyof typeof RequestType];

export const isRequestType = (v: number): v is RequestType => Number.isInteger(v) && v >= 1 && v <= 6;

const REQUEST_TYPE_NAMES: Readonly<Record<RequestType, string>> = {
  1: 'GET_LINE_NAMES',
  2: 'GET_DIRECTION',
  3: 'SET_DIRECTION',
  4: 'GET_VALUE',
  5: 'SET_VALUE',
  6: 'SET_IRQ_TYPE',
};

/** Name of a request type for logs and metric labels ("UNKNOWN" for anything else). */
export function requestTypeName(type: number): string {
  return isRequestType(type) ? REQUEST_TYPE_NAMES[type] : 'UNKNOWN';
}

/** requestq response status. */
export const Status = { OK: 0, ERR: 1 } as const;
export type Status = (typeof Status)[keyof typeof Status];

/** eventq response status. */
export const EventStatus = { INVALID: 0, VALID: 1 } as const;
export type EventStatus = (typeof EventStatus)[keyof typeof EventStatus];

/** Wire sizes in bytes. */
export const Size = {
  /** requestq request: type le16, gpio le16, value le32. */
  REQUEST: 8,
  /** requestq response: status u8, value u8. */
  RESPONSE: 2,
  /** eventq request: gpio le16. */
  EVENT_REQUEST: 2,
  /** eventq response: status u8. */
  EVENT_RESPONSE: 1,
  /** config space: ngpio le16, padding u8[2], gpio_names_size le32. */
  CONFIG: 8,
} as const;

/** Largest ngpio the le16 config field carries. */
export const MAX_NGPIO = 0xffff;

/** A value that cannot be encoded (bad names, ngpio out of range). */
export class GpioProtocolError extends Error {
  override readonly name = 'GpioProtocolError';
}

// ---------------------------------------------------------------------------------------
// Config space

export interface GpioConfig {
  readonly ngpio: number;
  readonly gpioNamesSize: number;
}

/** The 8 config-space bytes. */
export function encodeConfig(config: GpioConfig): Uint8Array {
  const { ngpio, gpioNamesSize } = config;
  if (!Number.isInteger(ngpio) || ngpio < 1 || ngpio > MAX_NGPIO) {
    throw new GpioProtocolError(`ngpio ${ngpio} is outside 1..${MAX_NGPIO}`);
  }
  if (!Number.isInteger(gpioNamesSize) || gpioNamesSize < 0 || gpioNamesSize > 0xffffffff) {
    throw new GpioProtocolError(`gpio_names_size ${gpioNamesSize} does not fit le32`);
  }
  const out = new Uint8Array(Size.CONFIG);
  const dv = new DataView(out.buffer);
  dv.setUint16(0, ngpio, true);
  // bytes 2..3: padding, zero
  dv.setUint32(4, gpioNamesSize, true);
  return out;
}

/** Parse config-space bytes (used by tests and diagnostics). Null when not 8 bytes. */
export function decodeConfig(bytes: Uint8Array): GpioConfig | null {
  if (bytes.length !== Size.CONFIG) return null;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { ngpio: dv.getUint16(0, true), gpioNamesSize: dv.getUint32(4, true) };
}

// ---------------------------------------------------------------------------------------
// Names block

/**
 * Check line names: either none (empty array) or exactly one entry per line; "" is an
 * unnamed line; named lines are unique, non-empty 7-bit ASCII without NUL.
 * Throws GpioProtocolError.
 */
export function validateNames(ngpio: number, names: readonly string[]): void {
  if (names.length === 0) return;
  if (names.length !== ngpio) {
    throw new GpioProtocolError(`${names.length} line names given for ${ngpio} lines (give none or exactly one per line)`);
  }
  const seen = new Set<string>();
  names.forEach((n, i) => {
    if (n === '') return;
    for (let k = 0; k < n.length; k++) {
      const c = n.charCodeAt(k);
      if (c === 0 || c > 0x7f) throw new GpioProtocolError(`name of line ${i} ("${n}") is not 7-bit ASCII without NUL`);
    }
    if (seen.has(n)) throw new GpioProtocolError(`line name "${n}" is used twice (names must be unique)`);
    seen.add(n);
  });
}

/**
 * The GET_LINE_NAMES block: one NUL-terminated string per line in line order, an unnamed
 * line is a lone 0 byte. Empty (gpio_names_size = 0) when no line is named.
 */
export function encodeNamesBlock(ngpio: number, names: readonly string[]): Uint8Array {
  validateNames(ngpio, names);
  if (names.every((n) => n === '')) return new Uint8Array(0);
  let size = 0;
  for (const n of names) size += n.length + 1;
  const out = new Uint8Array(size);
  let p = 0;
  for (const n of names) {
    for (let k = 0; k < n.length; k++) out[p++] = n.charCodeAt(k);
    out[p++] = 0;
  }
  return out;
}

/** Split a names block into one string per line ("" for unnamed). Null when malformed. */
export function decodeNamesBlock(block: Uint8Array): string[] | null {
  if (block.length === 0) return [];
  if (block[block.length - 1] !== 0) return null;
  const names: string[] = [];
  let start = 0;
  for (let i = 0; i < block.length; i++) {
    if (block[i] === 0) {
      names.push(String.fromCharCode(...block.subarray(start, i)));
      start = i + 1;
    }
  }
  return names;
}

// ---------------------------------------------------------------------------------------
// requestq

/** A parsed requestq request (values are raw: not yet range-checked). */
export interface GpioRequest {
  readonly type: number;
  readonly gpio: number;
  readonly value: number;
}

/** Parse the device-readable part of a requestq chain. Null unless exactly 8 bytes. */
export function parseRequest(bytes: Uint8Array): GpioRequest | null {
  if (bytes.length !== Size.REQUEST) return null;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { type: dv.getUint16(0, true), gpio: dv.getUint16(2, true), value: dv.getUint32(4, true) };
}

/** Encode a request (the driver's side; used by tests and tools). */
export function encodeRequest(req: GpioRequest): Uint8Array {
  const out = new Uint8Array(Size.REQUEST);
  const dv = new DataView(out.buffer);
  dv.setUint16(0, req.type, true);
  dv.setUint16(2, req.gpio, true);
  dv.setUint32(4, req.value >>> 0, true);
  return out;
}

/**
 * Check a request against the device: null when it may be executed, otherwise why it is
 * answered ERR. GET_LINE_NAMES ignores gpio and value (the spec says gpio 0; tolerated).
 * GET_* requests ignore `value`.
 */
export function checkRequest(req: GpioRequest, ngpio: number): string | null {
  if (!isRequestType(req.type)) return `unknown request type ${req.type}`;
  if (req.type === RequestType.GET_LINE_NAMES) return null;
  if (req.gpio >= ngpio) return `gpio ${req.gpio} >= ngpio ${ngpio}`;
  switch (req.type) {
    case RequestType.SET_DIRECTION:
      return req.value <= 2 ? null : `direction ${req.value} is not NONE/OUT/IN`;
    case RequestType.SET_VALUE:
      return req.value <= 1 ? null : `value ${req.value} is not 0 or 1`;
    case RequestType.SET_IRQ_TYPE:
      return isIrqType(req.value) ? null : `irq type ${req.value} is unknown`;
    default:
      return null;
  }
}

/** A 2-byte requestq response. */
export function encodeResponse(status: Status, value = 0): Uint8Array {
  return Uint8Array.of(status, value & 0xff);
}

/** The GET_LINE_NAMES response: status then the names block (1 + gpio_names_size bytes). */
export function encodeNamesResponse(status: Status, block: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + block.length);
  out[0] = status;
  out.set(block, 1);
  return out;
}

// ---------------------------------------------------------------------------------------
// eventq

/** Parse the device-readable part of an eventq chain (le16 gpio). Null unless 2 bytes. */
export function parseEventRequest(bytes: Uint8Array): number | null {
  if (bytes.length !== Size.EVENT_REQUEST) return null;
  return (bytes[0] ?? 0) | ((bytes[1] ?? 0) << 8);
}

/** Encode an eventq request (the driver's side; used by tests). */
export function encodeEventRequest(gpio: number): Uint8Array {
  return Uint8Array.of(gpio & 0xff, (gpio >> 8) & 0xff);
}

/** The 1-byte eventq response. */
export function encodeEventResponse(status: EventStatus): Uint8Array {
  return Uint8Array.of(status);
}

/** Edge-type irq types report edges; level types report an active level. */
export const isEdgeIrqType = (t: IrqType): boolean => t === IrqType.EDGE_RISING || t === IrqType.EDGE_FALLING || t === IrqType.EDGE_BOTH;
export const isLevelIrqType = (t: IrqType): boolean => t === IrqType.LEVEL_HIGH || t === IrqType.LEVEL_LOW;
