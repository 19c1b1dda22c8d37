/**
 * Pure input validation and formatting shared by both line stores. Nothing here reads
 * state: state-dependent checks live in each store (Redis: inside the Lua scripts).
 */
import { invalidArgument, type FabricError } from '../../../common/src/errors.ts';
import { DriveMode, DriveValue, Pull, isDriveMode, isDriveValue, isPull } from '../../../common/src/line-model.ts';
import type { BatchLineOp, LineAddress, Topology } from './store.ts';

/** Chip ids and net names: 1-64 chars of [A-Za-z0-9._-]. */
export const ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
/** Largest ngpio the service accepts (virtio-gpio itself allows 65535). */
export const MAX_NGPIO = 1024;
export const MAX_NAME_LENGTH = 64;
export const MAX_OWNER_LENGTH = 128;
/** Lease TTL bounds; 0 in a request means DEFAULT. */
export const LEASE_TTL_MS = { DEFAULT: 10_000, MIN: 500, MAX: 600_000 } as const;
/** Largest number of members of one net. */
export const MAX_NET_MEMBERS = 2048; // keeps every Lua multi-argument call under its stack limit
/** Default and largest page of readEvents. */
export const READ_EVENTS_LIMIT = { DEFAULT: 1000, MAX: 10_000 } as const;
/** Most operations in one LineStore.lineOps batch (and one OpStream message). */
export const MAX_OP_BATCH = 1024;
/** Default per-chip event retention. */
export const DEFAULT_EVENT_RETENTION = 10_000;

export function checkChipId(id: string): void {
  if (typeof id !== 'string' || !ID_PATTERN.test(id)) {
    throw invalidArgument(`chip id ${JSON.stringify(id)} must be 1-64 characters of A-Z a-z 0-9 . _ -`);
  }
}

export function checkNetName(name: string): void {
  if (typeof name !== 'string' || !ID_PATTERN.test(name)) {
    throw invalidArgument(`net name ${JSON.stringify(name)} must be 1-64 characters of A-Z a-z 0-9 . _ -`);
  }
}

export function checkNgpio(ngpio: number): void {
  if (!Number.isInteger(ngpio) || ngpio < 1 || ngpio > MAX_NGPIO) {
    throw invalidArgument(`ngpio ${ngpio} is out of range 1..${MAX_NGPIO}`);
  }
}

/** Names: empty, or exactly ngpio entries; each "" or printable 7-bit ASCII, <= 64 chars, non-empty ones unique. */
export function checkNames(names: readonly string[], ngpio: number, chip: string): void {
  if (!Array.isArray(names)) throw invalidArgument(`names of chip ${chip} must be a list`);
  if (names.length === 0) return;
  if (names.length !== ngpio) {
    throw invalidArgument(`chip ${chip} has ${ngpio} lines but ${names.length} names were given (give none or exactly ${ngpio})`);
  }
  const seen = new Map<string, number>();
  names.forEach((n, i) => {
    if (typeof n !== 'string') throw invalidArgument(`name of line ${i} of chip ${chip} is not a string`);
    if (n === '') return;
    if (n.length > MAX_NAME_LENGTH) throw invalidArgument(`name of line ${i} of chip ${chip} is longer than ${MAX_NAME_LENGTH} characters`);
    if (!/^[\x20-\x7e]+$/.test(n)) {
      throw invalidArgument(`name of line ${i} of chip ${chip} must be printable 7-bit ASCII: ${JSON.stringify(n)}`);
    }
    const prev = seen.get(n);
    if (prev !== undefined) throw invalidArgument(`line name ${JSON.stringify(n)} of chip ${chip} is used by lines ${prev} and ${i}`);
    seen.set(n, i);
  });
}

export function checkOwner(owner: string): void {
  if (typeof owner !== 'string' || owner === '' || owner.length > MAX_OWNER_LENGTH || !/^[\x20-\x7e]+$/.test(owner)) {
    throw invalidArgument(`owner must be 1-${MAX_OWNER_LENGTH} printable ASCII characters`);
  }
}

/** Returns the effective TTL (0 = default). */
export function resolveLeaseTtl(ttl: number, defaultTtl: number = LEASE_TTL_MS.DEFAULT): number {
  if (!Number.isInteger(ttl) || ttl < 0) throw invalidArgument(`lease TTL ${ttl} ms is not a non-negative integer`);
  if (ttl === 0) return defaultTtl;
  if (ttl < LEASE_TTL_MS.MIN || ttl > LEASE_TTL_MS.MAX) {
    throw invalidArgument(`lease TTL ${ttl} ms is out of range ${LEASE_TTL_MS.MIN}..${LEASE_TTL_MS.MAX}`);
  }
  return ttl;
}

export function checkPull(p: number, what = 'pull'): void {
  if (typeof p !== 'number' || !isPull(p)) throw invalidArgument(`${what} ${p} is not one of 0 (none), 1 (up), 2 (down)`);
}

export function checkDriveMode(m: number): void {
  if (typeof m !== 'number' || !isDriveMode(m)) throw invalidArgument(`drive mode ${m} is not one of 0 (push-pull), 1 (open-drain)`);
}

export function checkDriveValue(v: number): void {
  if (typeof v !== 'number' || !isDriveValue(v)) throw invalidArgument(`drive value ${v} is not one of 0 (release), 1 (low), 2 (high)`);
}

/** Shape check of a line address (existence is checked by the store). */
export function checkLineAddress(a: LineAddress): void {
  if (a === null || typeof a !== 'object' || a.line === null || typeof a.line !== 'object') throw invalidArgument('line address is malformed');
  if (typeof a.chip !== 'string' || a.chip === '') throw invalidArgument('line address has no chip');
  if (a.line.kind === 'offset') {
    if (!Number.isInteger(a.line.offset) || a.line.offset < 0) throw invalidArgument(`line offset ${a.line.offset} is not a non-negative integer`);
  } else if (a.line.kind === 'name') {
    if (typeof a.line.name !== 'string' || a.line.name === '') throw invalidArgument('line name is empty');
  } else {
    throw invalidArgument('line address has neither offset nor name');
  }
}

export function lineRefText(a: LineAddress): string {
  return a.line.kind === 'offset' ? `${a.chip}:${a.line.offset}` : `${a.chip}:${a.line.name}`;
}

export function checkReadLimit(limit: number): number {
  if (!Number.isInteger(limit) || limit < 0) throw invalidArgument(`limit ${limit} is not a non-negative integer`);
  if (limit === 0) return READ_EVENTS_LIMIT.DEFAULT;
  return Math.min(limit, READ_EVENTS_LIMIT.MAX);
}

export function checkAfterSeq(afterSeq: bigint): void {
  if (typeof afterSeq !== 'bigint' || afterSeq < 0n) throw invalidArgument(`cursor ${String(afterSeq)} is not a non-negative integer`);
}

/** Shape check of a whole topology (everything that does not depend on stored state). */
export function checkTopologyShape(t: Topology): void {
  if (t === null || typeof t !== 'object' || !Array.isArray(t.chips) || !Array.isArray(t.nets) || !Array.isArray(t.drives)) {
    throw invalidArgument('topology must have chips, nets and drives lists');
  }
  const chipIds = new Set<string>();
  for (const c of t.chips) {
    checkChipId(c.id);
    if (chipIds.has(c.id)) throw invalidArgument(`topology declares chip ${c.id} twice`);
    chipIds.add(c.id);
    checkNgpio(c.ngpio);
    checkNames(c.names, c.ngpio, c.id);
    if (!Array.isArray(c.bias)) throw invalidArgument(`bias of chip ${c.id} must be a list`);
    for (const b of c.bias) {
      if (!Number.isInteger(b.offset) || b.offset < 0 || b.offset >= c.ngpio) {
        throw invalidArgument(`bias of chip ${c.id}: offset ${b.offset} is out of range 0..${c.ngpio - 1}`);
      }
      checkPull(b.pull, `bias of ${c.id}:${b.offset}`);
    }
  }
  const netNames = new Set<string>();
  for (const n of t.nets) {
    checkNetName(n.name);
    if (netNames.has(n.name)) throw invalidArgument(`topology declares net ${n.name} twice`);
    netNames.add(n.name);
    checkPull(n.pull, `pull of net ${n.name}`);
    checkDriveMode(n.driveMode);
    if (!Array.isArray(n.members) || n.members.length < 2) throw invalidArgument(`net ${n.name} needs at least 2 members`);
    if (n.members.length > MAX_NET_MEMBERS) throw invalidArgument(`net ${n.name} has more than ${MAX_NET_MEMBERS} members`);
    for (const m of n.members) checkLineAddress(m);
  }
  for (const d of t.drives) {
    checkDriveValue(d.value);
    if (d.target.kind === 'line') checkLineAddress(d.target.line);
    else if (d.target.kind === 'net') {
      if (!netNames.has(d.target.net)) throw invalidArgument(`drive targets net ${d.target.net}, which the topology does not declare`);
    } else throw invalidArgument('drive target is neither a line nor a net');
  }
}

export const pullText = (p: Pull): string => (p === Pull.UP ? 'up' : p === Pull.DOWN ? 'down' : 'none');
export const modeText = (m: DriveMode): string => (m === DriveMode.OPEN_DRAIN ? 'open-drain' : 'push-pull');
export const driveText = (v: DriveValue): string => (v === DriveValue.HIGH ? 'high' : v === DriveValue.LOW ? 'low' : 'release');

/** One change found by applyTopology, formatted by `changeText` (same text from both stores). */
export type TopologyChange =
  | { readonly kind: 'create-chip'; readonly chip: string; readonly ngpio: number }
  | { readonly kind: 'names'; readonly chip: string }
  | { readonly kind: 'bias'; readonly chip: string; readonly offset: number; readonly pull: Pull }
  | { readonly kind: 'remove-net'; readonly net: string }
  | { readonly kind: 'wire-net' | 'update-net'; readonly net: string; readonly members: readonly string[]; readonly pull: Pull; readonly mode: DriveMode }
  | { readonly kind: 'drive-line'; readonly chip: string; readonly offset: number; readonly value: DriveValue }
  | { readonly kind: 'drive-net'; readonly net: string; readonly value: DriveValue };

export function changeText(c: TopologyChange): string {
  switch (c.kind) {
    case 'create-chip':
      return `create chip ${c.chip} (${c.ngpio} lines)`;
    case 'names':
      return `set line names of chip ${c.chip}`;
    case 'bias':
      return `set bias ${c.chip}:${c.offset} pull ${pullText(c.pull)}`;
    case 'remove-net':
      return `remove net ${c.net}`;
    case 'wire-net':
      return `wire net ${c.net}: ${c.members.join(' ')} (pull ${pullText(c.pull)}, ${modeText(c.mode)})`;
    case 'update-net':
      return `update net ${c.net}: ${c.members.join(' ')} (pull ${pullText(c.pull)}, ${modeText(c.mode)})`;
    case 'drive-line':
      return c.value === DriveValue.RELEASE ? `release ${c.chip}:${c.offset}` : `drive ${c.chip}:${c.offset} ${driveText(c.value)}`;
    case 'drive-net':
      return c.value === DriveValue.RELEASE ? `release net ${c.net}` : `drive net ${c.net} ${driveText(c.value)}`;
  }
}

/** A lineOps batch: an array of at most MAX_OP_BATCH operations (the whole batch fails otherwise). */
export function checkOpBatch(ops: readonly BatchLineOp[]): void {
  if (!Array.isArray(ops)) throw invalidArgument('ops must be an array of line operations');
  if (ops.length > MAX_OP_BATCH) throw invalidArgument(`a batch has at most ${MAX_OP_BATCH} line operations, got ${ops.length}`);
}

/** What is wrong with one operation's shape (no state needed), or undefined. */
export function opShapeError(o: BatchLineOp): FabricError | undefined {
  if (typeof o !== 'object' || o === null) return invalidArgument('a line operation must be an object { op, offset, value }');
  if (!Number.isInteger(o.offset) || o.offset < 0) return invalidArgument(`offset ${String(o.offset)} is not a non-negative integer`);
  if (!Number.isInteger(o.op)) return invalidArgument(`unknown line operation ${String(o.op)}`);
  return undefined;
}
