/**
 * The line store: the one place that owns chips, lines, nets, leases and events.
 * Two implementations: MemoryStore (the embedded default, one process) and RedisStore
 * (production, shared by every service replica). Both pass test/contract/store.contract.ts.
 *
 * Every mutating method is atomic (Redis: one Lua script, one round trip) and either
 * fully applies or throws a FabricError and changes nothing.
 */
import type { FabricError } from '../../../common/src/errors.ts';
import type { Direction, DriveMode, DriveValue, Edge, IrqType, Level, Pull } from '../../../common/src/line-model.ts';

export type LineSelector = { readonly kind: 'offset'; readonly offset: number } | { readonly kind: 'name'; readonly name: string };

export interface LineAddress {
  readonly chip: string;
  readonly line: LineSelector;
}

export interface ChipInfo {
  readonly id: string;
  readonly ngpio: number;
  /** One per line, "" when unnamed. */
  readonly names: readonly string[];
  readonly owner: string;
  readonly online: boolean;
  readonly leaseExpiresAtMs: number;
  readonly lastSeq: bigint;
}

export interface LineInfo {
  readonly chip: string;
  readonly offset: number;
  readonly name: string;
  readonly direction: Direction;
  readonly outputValue: Level;
  readonly irqType: IrqType;
  readonly bias: Pull;
  readonly level: Level;
  /** Net name or "" when unwired. */
  readonly net: string;
  readonly externalDrive: DriveValue;
}

export interface NetInfo {
  readonly name: string;
  readonly members: readonly { readonly chip: string; readonly offset: number }[];
  readonly pull: Pull;
  readonly driveMode: DriveMode;
  readonly level: Level;
  readonly externalDrive: DriveValue;
  readonly contention: boolean;
  readonly contentionCount: bigint;
}

export interface LineEventRecord {
  readonly chip: string;
  readonly offset: number;
  readonly level: Level;
  readonly edge: Edge;
  readonly seq: bigint;
  readonly timestampNs: bigint;
  /**
   * The change is an echo: an OpStream operation (lineOps) of the lease holder changed
   * the level of the line it operated on while that line's irq type was NONE. The
   * operation's outcome carries the line's level; watch streams with omit_echoes leave
   * the event out.
   */
  readonly echo?: true;
}

export interface RegisterChipInput {
  readonly chip: string;
  readonly ngpio: number;
  readonly names: readonly string[];
  readonly owner: string;
  readonly leaseTtlMs: number;
}

export interface RegisterChipResult {
  readonly leaseToken: bigint;
  readonly chip: ChipInfo;
  readonly lines: readonly LineInfo[];
  readonly restored: boolean;
  readonly tookOver: boolean;
}

/** virtio-gpio request types forwarded by agents (numbers equal virtio-gpio's). */
export const LineOp = { GET_DIRECTION: 2, SET_DIRECTION: 3, GET_VALUE: 4, SET_VALUE: 5, SET_IRQ_TYPE: 6 } as const;
export type LineOp = (typeof LineOp)[keyof typeof LineOp];

export interface LineOpInput {
  readonly chip: string;
  readonly leaseToken: bigint;
  readonly op: LineOp;
  readonly offset: number;
  readonly value: number;
}

/** One operation of a LineStore.lineOps batch. */
export interface BatchLineOp {
  readonly op: LineOp;
  readonly offset: number;
  readonly value: number;
}

/** The outcome of one operation of a batch: its response value, or why it failed (it changed nothing). */
export type LineOpOutcome =
  | {
    readonly ok: true;
    readonly value: number;
    /** The chip's newest event seq at the end of the batch (the same for every operation of it). */
    readonly seq: bigint;
    /** The operation's line's observed level at the end of the batch (as of `seq`). */
    readonly level: Level;
  }
  | { readonly ok: false; readonly error: FabricError };

export interface WireInput {
  /** "" = generate a name. */
  readonly name: string;
  readonly members: readonly LineAddress[];
  readonly pull: Pull;
  readonly driveMode: DriveMode;
}

export type DriveTarget = { readonly kind: 'line'; readonly line: LineAddress } | { readonly kind: 'net'; readonly net: string };

/** A validated topology document (see services/linestate/src/topology.ts). */
export interface Topology {
  readonly chips: readonly { readonly id: string; readonly ngpio: number; readonly names: readonly string[]; readonly bias: readonly { readonly offset: number; readonly pull: Pull }[] }[];
  readonly nets: readonly { readonly name: string; readonly members: readonly LineAddress[]; readonly pull: Pull; readonly driveMode: DriveMode }[];
  readonly drives: readonly { readonly target: DriveTarget; readonly value: DriveValue }[];
}

export interface ApplyResult {
  readonly changes: readonly string[];
  readonly chips: number;
  readonly nets: number;
}

export interface EventSubscription {
  close(): void;
}

export interface LineStore {
  registerChip(input: RegisterChipInput): Promise<RegisterChipResult>;
  renewLease(chip: string, token: bigint): Promise<{ leaseExpiresAtMs: number }>;
  releaseChip(chip: string, token: bigint): Promise<void>;
  /** Returns the response value (direction number, level, or 0). */
  lineOp(input: LineOpInput): Promise<number>;
  /**
   * Operations on one chip under one lease, applied in order in one atomic step (one
   * Redis script). Every batch, even an empty one or one whose operations are all
   * malformed, checks the chip and the lease first: an unknown chip, a stale lease or an
   * unreachable store rejects the whole batch (nothing applied). An invalid operation
   * (offset, op, value) fails alone as its outcome and changes nothing; the others still
   * apply. At most MAX_OP_BATCH (validate.ts) operations. A change an operation makes
   * to its own line while the line's irq type is NONE is marked as an echo
   * (LineEventRecord.echo); every successful outcome carries its line's level as of the
   * chip's seq at the end of the batch, so a client that watches without echoes still
   * knows its lines' levels.
   * Unary lineOp marks nothing.
   */
  lineOps(chip: string, leaseToken: bigint, ops: readonly BatchLineOp[]): Promise<readonly LineOpOutcome[]>;
  getNames(chip: string): Promise<readonly string[]>;

  wire(input: WireInput): Promise<NetInfo>;
  unwire(name: string): Promise<void>;
  listChips(): Promise<readonly ChipInfo[]>;
  /**
   * The chips `ids` in order, undefined for a chip that is not registered; reads only
   * those chips (cost independent of how many chips the fabric holds). Optional: callers
   * fall back to listChips() when a store lacks it.
   */
  getChips?(ids: readonly string[]): Promise<readonly (ChipInfo | undefined)[]>;
  /** chip "" = every chip. */
  listLines(chip: string): Promise<readonly LineInfo[]>;
  listNets(): Promise<readonly NetInfo[]>;
  getLine(line: LineAddress): Promise<LineInfo>;
  /** Returns the level of the target after the change. */
  drive(target: DriveTarget, value: DriveValue): Promise<Level>;
  setBias(line: LineAddress, bias: Pull): Promise<LineInfo>;
  applyTopology(topology: Topology, dryRun: boolean): Promise<ApplyResult>;

  /** Events of `chip` with seq > afterSeq, oldest first, at most `limit`. */
  readEvents(chip: string, afterSeq: bigint, limit: number): Promise<readonly LineEventRecord[]>;
  /**
   * Live events (pushed, never polled). `chips` empty = every chip. The listener sees
   * each event at most once, in per-chip seq order, from the moment the returned
   * promise resolves.
   */
  subscribe(chips: readonly string[], listener: (e: LineEventRecord) => void): Promise<EventSubscription>;
  close(): Promise<void>;
}
