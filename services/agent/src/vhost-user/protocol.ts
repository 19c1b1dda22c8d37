/**
 * vhost-user protocol constants (QEMU docs/interop/vhost-user.rst). One module for every
 * number that appears on the wire; the codec and the session import from here only.
 *
 * vhost-user messages use host byte order; this backend runs on little-endian Linux hosts
 * (x86-64, aarch64), so the codec reads and writes little-endian.
 */

/** Front-end → back-end request ids (all ids a QEMU 7.2 … 10.x front-end may send). */
export const Request = {
  NONE: 0,
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
  GET_SHARED_OBJECT: 41,
  SET_DEVICE_STATE_FD: 42,
  CHECK_DEVICE_STATE: 43,
} as const;
export type RequestId = (typeof Request)[keyof typeof Request];

const requestNames = new Map<number, string>(Object.entries(Request).map(([k, v]) => [v, k]));
/** Human-readable name of a request id (for logs), e.g. `GET_FEATURES` or `UNKNOWN(99)`. */
export function requestName(id: number): string {
  return requestNames.get(id) ?? `UNKNOWN(${id})`;
}

/**
 * Requests whose protocol defines a reply regardless of REPLY_ACK: the front-end blocks
 * until it arrives, so the back-end must always answer them (with an error-shaped reply
 * when it cannot serve them).
 */
export const REQUESTS_WITH_REPLY: ReadonlySet<number> = new Set<number>([
  Request.GET_FEATURES,
  Request.GET_VRING_BASE,
  Request.GET_PROTOCOL_FEATURES,
  Request.GET_QUEUE_NUM,
  Request.GET_CONFIG,
  Request.CREATE_CRYPTO_SESSION,
  Request.POSTCOPY_ADVISE,
  Request.POSTCOPY_END,
  Request.GET_INFLIGHT_FD,
  Request.GET_MAX_MEM_SLOTS,
  Request.GET_STATUS,
  Request.GET_SHARED_OBJECT,
  Request.SET_DEVICE_STATE_FD,
  Request.CHECK_DEVICE_STATE,
]);

/** Header flags. */
export const HeaderFlag = {
  VERSION_MASK: 0x3,
  /** The only protocol version. */
  VERSION: 0x1,
  REPLY: 0x4,
  NEED_REPLY: 0x8,
} as const;

/** Flags of every reply this back-end sends: QEMU rejects anything but exactly 0x5. */
export const REPLY_FLAGS = HeaderFlag.VERSION | HeaderFlag.REPLY;

/** Header: u32 request, u32 flags, u32 size. */
export const HEADER_SIZE = 12;
/**
 * Largest payload accepted. The biggest payload QEMU sends here is GET/SET_CONFIG
 * (12 + 256); 4 KiB (rust-vmm's MAX_MSG_SIZE) leaves room for messages we skip.
 */
export const MAX_PAYLOAD_SIZE = 0x1000;
/** Most fds one message may carry (VHOST_MEMORY_BASELINE_NREGIONS). */
export const MAX_FDS_PER_MESSAGE = 8;

/** Virtio feature bits (bit numbers) relevant to the transport. */
export const VirtioFeatureBit = {
  NOTIFY_ON_EMPTY: 24,
  RING_INDIRECT_DESC: 28,
  RING_EVENT_IDX: 29,
  /** vhost-user specific: the back-end supports GET/SET_PROTOCOL_FEATURES. */
  VHOST_USER_F_PROTOCOL_FEATURES: 30,
  VERSION_1: 32,
  ACCESS_PLATFORM: 33,
  RING_PACKED: 34,
  RING_RESET: 40,
} as const;

/** `1n << BigInt(bit)`. */
export function featureMask(bit: number): bigint {
  return 1n << BigInt(bit);
}

/** VHOST_USER_F_PROTOCOL_FEATURES as a mask (0x40000000). */
export const PROTOCOL_FEATURES_MASK = featureMask(VirtioFeatureBit.VHOST_USER_F_PROTOCOL_FEATURES);

/**
 * Transport feature bits the split virtqueue implementation supports: a device model may
 * OR these into its `deviceFeatures` (VERSION_1 | RING_INDIRECT_DESC | RING_EVENT_IDX).
 */
export const TRANSPORT_FEATURES =
  featureMask(VirtioFeatureBit.VERSION_1) |
  featureMask(VirtioFeatureBit.RING_INDIRECT_DESC) |
  featureMask(VirtioFeatureBit.RING_EVENT_IDX);

/** Protocol feature bits (GET/SET_PROTOCOL_FEATURES). */
export const ProtocolFeatureBit = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  NET_MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
  XEN_MMAP: 17,
  SHARED_OBJECT: 18,
  DEVICE_STATE: 19,
} as const;

/** Payload sizes (bytes) of the fixed-size payload types. */
export const PayloadSize = {
  U64: 8,
  STATE: 8,
  ADDR: 40,
  MEM_TABLE_HEADER: 8,
  MEM_REGION: 32,
  CONFIG_HEADER: 12,
} as const;

/** At most this many regions in SET_MEM_TABLE (without CONFIGURE_MEM_SLOTS). */
export const MAX_MEM_REGIONS = 8;
/** Largest config space transfer (VHOST_USER_MAX_CONFIG_SIZE). */
export const MAX_CONFIG_SIZE = 256;

/** SET_VRING_KICK/CALL/ERR u64: bits 0-7 ring index, bit 8 = no fd. */
export const VRING_INDEX_MASK = 0xffn;
export const VRING_NOFD_MASK = 0x100n;

/** vhost_vring_addr.flags bit 0: log used ring writes. */
export const VRING_ADDR_F_LOG = 0x1;

/** GET_CONFIG / SET_CONFIG flags. */
export const ConfigFlag = {
  WRITABLE: 0x0,
  LIVE_MIGRATION: 0x1,
} as const;

/** Largest split virtqueue size (virtio spec: Queue Size ≤ 32768, a power of 2). */
export const MAX_QUEUE_SIZE = 32768;
