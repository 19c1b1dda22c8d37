/**
 * StandaloneBackend: one chip whose lines live in this process (no line-state service),
 * like rust-vmm's mock chip but with the fabric's line model (DESIGN.md):
 *
 *  - direction NONE / IN / OUT; a stored output value that drives the line while it is
 *    OUT (SET_VALUE before OUT applies when the line becomes OUT);
 *  - SET_DIRECTION NONE discards the guest's line state: direction NONE, stored value 0.
 *    Bias and external drive are operator state and are kept; the irq type is interrupt
 *    controller state, changed only by SET_IRQ_TYPE;
 *  - per-line bias (pull-up / pull-down / none) and an external drive (the agent's control
 *    API, tests);
 *  - observed level = resolveNet(drivers = own OUT value + external drive, pull = bias,
 *    push-pull); a disagreement resolves low (wired-AND) and is counted;
 *  - an event (edge, per-chip seq from 1, timestamp ns) on every change of observed level,
 *    delivered synchronously to listeners before the operation's promise settles.
 */
import {
  Direction,
  DriveMode,
  DriveValue,
  IrqType,
  Pull,
  edgeOf,
  isDirection,
  isDriveValue,
  isIrqType,
  isPull,
  resolveNet,
} from '../../../common/src/line-model.ts';
import type { Level } from '../../../common/src/line-model.ts';
import { invalidArgument, outOfRange } from '../../../common/src/errors.ts';
import type { LineInfo } from '../../../linestate/src/store/store.ts';
import { BackendClosedError } from './line-backend.ts';
import type { LineBackend, LineEvent, LineEventListener } from './line-backend.ts';
import { validateNames, MAX_NGPIO } from '../device/virtio-gpio-protocol.ts';

export interface StandaloneBackendOptions {
  /** Chip id; default "standalone". */
  readonly chip?: string;
  /** Number of lines, 1..65535. */
  readonly ngpio: number;
  /** Line names: none, or one per line ("" = unnamed); unique 7-bit ASCII. */
  readonly names?: readonly string[];
  /** Bias of every line (one Pull), or one per line. Default Pull.NONE (floats low). */
  readonly bias?: Pull | readonly Pull[];
  /** Clock for event timestamps (ns since the epoch). Default: process clock. */
  readonly clockNs?: () => bigint;
}

interface LineState {
  direction: Direction;
  outputValue: Level;
  irqType: IrqType;
  bias: Pull;
  externalDrive: DriveValue;
  level: Level;
  contention: boolean;
}

const epochNs0 = BigInt(Date.now()) * 1_000_000n;
const hr0 = process.hrtime.bigint();
/** Wall-clock ns since the epoch, monotonic within the process. */
const processClockNs = (): bigint => epochNs0 + (process.hrtime.bigint() - hr0);

export class StandaloneBackend implements LineBackend {
  readonly chip: string;
  readonly ngpio: number;
  readonly names: readonly string[];
  private readonly lines: LineState[];
  private readonly levelView: Level[];
  private readonly listeners = new Set<LineEventListener>();
  private readonly clockNs: () => bigint;
  private seq = 0n;
  private closed = false;
  private contentions = 0;

  constructor(options: StandaloneBackendOptions) {
    const { ngpio } = options;
    if (!Number.isInteger(ngpio) || ngpio < 1 || ngpio > MAX_NGPIO) throw invalidArgument(`ngpio ${ngpio} is outside 1..${MAX_NGPIO}`);
    const names = options.names ?? [];
    try {
      validateNames(ngpio, names);
    } catch (e) {
      throw invalidArgument(e instanceof Error ? e.message : String(e), e);
    }
    const bias = options.bias ?? Pull.NONE;
    if (typeof bias !== 'number' && bias.length !== ngpio) throw invalidArgument(`${bias.length} bias values given for ${ngpio} lines`);
    this.chip = options.chip ?? 'standalone';
    this.ngpio = ngpio;
    this.names = Object.freeze([...names]);
    this.clockNs = options.clockNs ?? processClockNs;
    this.lines = [];
    this.levelView = [];
    for (let i = 0; i < ngpio; i++) {
      const b = typeof bias === 'number' ? bias : bias[i];
      if (b === undefined || !isPull(b)) throw invalidArgument(`bias of line ${i} is not a Pull`);
      const line: LineState = { direction: Direction.NONE, outputValue: 0, irqType: IrqType.NONE, bias: b, externalDrive: DriveValue.RELEASE, level: 0, contention: false };
      line.level = this.resolve(line).level;
      this.lines.push(line);
      this.levelView.push(line.level);
    }
  }

  async start(): Promise<void> {
    if (this.closed) throw new BackendClosedError(`chip ${this.chip}: backend is closed`);
  }

  async getDirection(offset: number): Promise<Direction> {
    return this.line(offset).direction;
  }

  async setDirection(offset: number, direction: Direction): Promise<void> {
    const line = this.line(offset);
    if (!isDirection(direction)) throw invalidArgument(`direction ${String(direction)} is not NONE/OUT/IN`);
    line.direction = direction;
    if (direction === Direction.NONE) line.outputValue = 0;
    this.update(offset, line);
  }

  async getValue(offset: number): Promise<Level> {
    return this.line(offset).level;
  }

  async setValue(offset: number, value: Level): Promise<void> {
    const line = this.line(offset);
    if (value !== 0 && value !== 1) throw invalidArgument(`value ${String(value)} is not 0 or 1`);
    line.outputValue = value;
    this.update(offset, line);
  }

  async setIrqType(offset: number, type: IrqType): Promise<void> {
    const line = this.line(offset);
    if (!isIrqType(type)) throw invalidArgument(`irq type ${String(type)} is unknown`);
    line.irqType = type;
  }

  levels(): readonly Level[] {
    return this.levelView;
  }

  onEvent(listener: LineEventListener): () => void {
    const wrapped: LineEventListener = (e) => listener(e);
    this.listeners.add(wrapped);
    return () => {
      this.listeners.delete(wrapped);
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.listeners.clear();
  }

  // ---- control surface (agent control API, tests) ----

  /** Drive a line from outside (RELEASE stops driving). Returns the observed level after. */
  drive(offset: number, value: DriveValue): Level {
    const line = this.line(offset);
    if (!isDriveValue(value)) throw invalidArgument(`drive value ${String(value)} is not RELEASE/LOW/HIGH`);
    line.externalDrive = value;
    this.update(offset, line);
    return line.level;
  }

  /** Change a line's bias. Returns the observed level after. */
  setBias(offset: number, bias: Pull): Level {
    const line = this.line(offset);
    if (!isPull(bias)) throw invalidArgument(`bias ${String(bias)} is not NONE/UP/DOWN`);
    line.bias = bias;
    this.update(offset, line);
    return line.level;
  }

  /** State of one line, shaped as the line-state service lists it (net is always ""). */
  lineInfo(offset: number): LineInfo {
    const l = this.line(offset, false);
    return {
      chip: this.chip,
      offset,
      name: this.names[offset] ?? '',
      direction: l.direction,
      outputValue: l.outputValue,
      irqType: l.irqType,
      bias: l.bias,
      level: l.level,
      net: '',
      externalDrive: l.externalDrive,
    };
  }

  /** State of every line, for listings. */
  snapshot(): LineInfo[] {
    const out: LineInfo[] = [];
    for (let i = 0; i < this.ngpio; i++) out.push(this.lineInfo(i));
    return out;
  }

  /** Sequence number of the newest event (0n before the first). */
  get lastSeq(): bigint {
    return this.seq;
  }

  /** How many times a line entered contention (own OUT value vs external drive disagree). */
  get contentionCount(): number {
    return this.contentions;
  }

  // ---- internals ----

  private line(offset: number, requireOpen = true): LineState {
    if (requireOpen && this.closed) throw new BackendClosedError(`chip ${this.chip}: backend is closed`);
    const line = Number.isInteger(offset) ? this.lines[offset] : undefined;
    if (line === undefined) throw outOfRange(`chip ${this.chip} has no line ${offset} (ngpio ${this.ngpio})`);
    return line;
  }

  private resolve(line: LineState): { level: Level; contention: boolean } {
    const drivers: Level[] = [];
    if (line.direction === Direction.OUT) drivers.push(line.outputValue);
    if (line.externalDrive !== DriveValue.RELEASE) drivers.push(line.externalDrive === DriveValue.HIGH ? 1 : 0);
    return resolveNet(drivers, line.bias, DriveMode.PUSH_PULL);
  }

  private update(offset: number, line: LineState): void {
    const r = this.resolve(line);
    if (r.contention && !line.contention) this.contentions++;
    line.contention = r.contention;
    if (r.level === line.level) return;
    const edge = edgeOf(line.level, r.level);
    line.level = r.level;
    this.levelView[offset] = r.level;
    this.seq += 1n;
    const event: LineEvent = { offset, level: r.level, edge, seq: this.seq, timestampNs: this.clockNs() };
    for (const l of [...this.listeners]) {
      try {
        l(event);
      } catch {
        // A listener's failure is its own; the backend and other listeners carry on.
      }
    }
  }
}
