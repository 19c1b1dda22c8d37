/**
 * Value Change Dump (IEEE 1364 §18) for line traces, with no I/O:
 *
 * - the writer: header text ($date, $version, $timescale, one $scope module per chip,
 *   one 1-bit wire per line, $dumpvars with the initial values) and the value-change
 *   text (`#<time>` then `<value><id>` lines), with times that never go back;
 * - the recorder: turns line events from several per-chip streams into value changes
 *   in time order (deduplicated by sequence number, held briefly so the streams can be
 *   merged, clamped so that time never goes back and no pulse disappears).
 *
 * `gpio-fabric trace` (services/cli/src/commands/trace.ts) does the I/O around these.
 */

/** Timescale of the traces: 1 µs (see docs/trace.md for why not 1 ns). */
export const VCD_TIMESCALE = '1 us';
/** Nanoseconds per VCD time unit at VCD_TIMESCALE. */
export const NS_PER_TICK = 1000n;

/** A signal value: 0, 1, or unknown. */
export type VcdValue = 0 | 1 | 'x';

/** One 1-bit signal: its scope (the chip id) and its reference name (e.g. `vm-a.led0`). */
export interface VcdSignalSpec {
  readonly scope: string;
  readonly name: string;
}

/** Everything written before the first value change. */
export interface VcdHeader {
  /** Free text of the $date section (e.g. an ISO 8601 time). */
  readonly date: string;
  /** Free text of the $version section. */
  readonly version: string;
  /** Optional $comment section (free text; `$end` inside it is defused). */
  readonly comment?: string;
  readonly signals: readonly VcdSignalSpec[];
}

/** A value change of signal number `signal` (index into the header's signals) at `time` (VCD time units). */
export interface VcdChange {
  readonly time: bigint;
  readonly signal: number;
  readonly value: VcdValue;
}

/** First and number of the printable ASCII characters VCD identifiers are made of ('!'..'~'). */
const ID_FIRST = 33;
const ID_RADIX = 94;

/**
 * Identifier code of signal number `i` (0-based): bijective base 94 over '!'..'~', so
 * 0 → `!`, 93 → `~`, 94 → `!!`, 95 → `!"`, ... Every index gets a distinct code.
 */
export function vcdIdentifier(i: number): string {
  if (!Number.isSafeInteger(i) || i < 0) throw new RangeError(`signal index ${i} is not a whole number >= 0`);
  let n = i + 1;
  let s = '';
  while (n > 0) {
    n -= 1;
    s = String.fromCharCode(ID_FIRST + (n % ID_RADIX)) + s;
    n = Math.floor(n / ID_RADIX);
  }
  return s;
}

/**
 * A name usable as a VCD scope or reference: every character outside printable ASCII
 * 33..126 (spaces, controls, non-ASCII) becomes `_`; an empty name becomes `_`.
 */
export function vcdName(s: string): string {
  const out = s.replace(/[^\x21-\x7e]/g, '_');
  return out === '' ? '_' : out;
}

/**
 * Reference names of the signals: sanitized with vcdName and made unique within each
 * scope (a later duplicate gets `~2`, `~3`, ... appended).
 */
export function vcdReferences(signals: readonly VcdSignalSpec[]): string[] {
  const taken = new Set<string>();
  return signals.map((s) => {
    const scope = vcdName(s.scope);
    const base = vcdName(s.name);
    let ref = base;
    for (let k = 2; taken.has(`${scope}\n${ref}`); k++) ref = `${base}~${k}`;
    taken.add(`${scope}\n${ref}`);
    return ref;
  });
}

/** Text of a free-form section; a literal `$end` inside would end it early, so it is defused. */
const freeText = (s: string): string => s.replace(/\$end/g, '$ end');

const valueText = (v: VcdValue): string => (v === 'x' ? 'x' : String(v));

/**
 * Header text up to and including the `#0` `$dumpvars` block with the initial values
 * (`initial[i]` of signal i). Signals are grouped by scope, scopes in order of first
 * appearance; identifiers follow the signal order.
 */
export function vcdHeaderText(h: VcdHeader, initial: readonly VcdValue[]): string {
  if (initial.length !== h.signals.length) throw new RangeError(`${initial.length} initial values for ${h.signals.length} signals`);
  const refs = vcdReferences(h.signals);
  const out: string[] = [];
  out.push('$date', `\t${freeText(h.date)}`, '$end');
  out.push('$version', `\t${freeText(h.version)}`, '$end');
  if (h.comment !== undefined) out.push('$comment', ...freeText(h.comment).split('\n').map((l) => `\t${l}`), '$end');
  out.push('$timescale', `\t${VCD_TIMESCALE}`, '$end');
  const scopes = new Map<string, number[]>();
  h.signals.forEach((s, i) => {
    const scope = vcdName(s.scope);
    const list = scopes.get(scope);
    if (list === undefined) scopes.set(scope, [i]);
    else list.push(i);
  });
  for (const [scope, members] of scopes) {
    out.push(`$scope module ${scope} $end`);
    for (const i of members) out.push(`$var wire 1 ${vcdIdentifier(i)} ${refs[i] ?? '_'} $end`);
    out.push('$upscope $end');
  }
  out.push('$enddefinitions $end');
  out.push('#0', '$dumpvars');
  initial.forEach((v, i) => out.push(`${valueText(v)}${vcdIdentifier(i)}`));
  out.push('$end');
  return `${out.join('\n')}\n`;
}

/** Error of a VcdEncoder fed a time that goes back or an unknown signal. */
export class VcdOrderError extends Error {
  override readonly name = 'VcdOrderError';
}

/**
 * Encodes value changes after the header. Times must not go back (VcdOrderError);
 * changes at the current time share its `#<time>` line. Time 0 is the $dumpvars time.
 */
export class VcdEncoder {
  private time = 0n;
  constructor(private readonly signalCount: number) {}

  /** The latest time written (0 after the header). */
  get lastTime(): bigint {
    return this.time;
  }

  /** Text of `changes`, in the given order. */
  changes(changes: readonly VcdChange[]): string {
    let s = '';
    for (const c of changes) {
      if (!Number.isInteger(c.signal) || c.signal < 0 || c.signal >= this.signalCount) throw new VcdOrderError(`no signal number ${c.signal} (${this.signalCount} signals)`);
      if (c.time < this.time) throw new VcdOrderError(`time ${c.time} is before the latest time written, ${this.time}`);
      if (c.time > this.time) {
        this.time = c.time;
        s += `#${c.time}\n`;
      }
      s += `${valueText(c.value)}${vcdIdentifier(c.signal)}\n`;
    }
    return s;
  }

  /** A final `#<time>` so viewers show the trace up to `time`; "" when it is not after the latest time. */
  end(time: bigint): string {
    if (time <= this.time) return '';
    this.time = time;
    return `#${time}\n`;
  }
}

/** A whole VCD document: header, changes (in time order) and an optional end time. */
export function writeVcd(h: VcdHeader, initial: readonly VcdValue[], changes: readonly VcdChange[], endTime?: bigint): string {
  const enc = new VcdEncoder(h.signals.length);
  return vcdHeaderText(h, initial) + enc.changes(changes) + (endTime === undefined ? '' : enc.end(endTime));
}

// ---------------------------------------------------------------------------------------
// Recording line events

/** A traced line. `name` is the line's name, "" when unnamed. */
export interface TraceLine {
  readonly chip: string;
  readonly offset: number;
  readonly name: string;
}

/** The fields of a LineEvent the recorder uses (uint64 fields as bigint). */
export interface TraceEvent {
  readonly chip: string;
  readonly offset: number;
  readonly level: number;
  readonly seq: bigint;
  readonly timestampNs: bigint;
}

export interface TraceRecorderOptions {
  readonly lines: readonly TraceLine[];
  /** Time 0 of the trace, ns since the epoch. */
  readonly originNs: bigint;
  /** Per chip: the cursor the chip's stream resumes after (its last seq at the start). */
  readonly cursors: ReadonlyMap<string, bigint>;
  /** How long (ms) an event is held before it is written, so streams of several chips merge in time order. */
  readonly holdMs: number;
}

/** Counters of a TraceRecorder. */
export interface TraceStats {
  /** Value changes produced. */
  changes: number;
  /** Events repeated by a stream (seq not after the last one seen) and dropped. */
  duplicates: number;
  /** Events missing from a stream (jumps in seq), e.g. trimmed by the service's retention. */
  lost: number;
  /** Changes written later than their timestamp: stamped before time 0, after a later change
   *  of another chip had been written, or within 1 µs of the line's previous change. */
  shifted: number;
}

interface Pending { readonly e: TraceEvent; readonly signal: number; readonly arrivalMs: number; readonly n: number }

/** Signal reference `<chip>.<name>` (or `<chip>.<offset>` for an unnamed line). */
export const traceSignalName = (l: TraceLine): string => `${l.chip}.${l.name === '' ? String(l.offset) : l.name}`;

/**
 * Turns line events into VCD value changes. Feed every event of the watched chips to
 * `push` (in each chip's stream order); call `begin` once with the snapshot to get the
 * initial values, then `drain` repeatedly to get the changes that are ready.
 */
export class TraceRecorder {
  /** The VCD signals, one per traced line, in the order of `lines`. */
  readonly signals: readonly VcdSignalSpec[];
  readonly stats: TraceStats = { changes: 0, duplicates: 0, lost: 0, shifted: 0 };
  private readonly index = new Map<string, number>();
  private readonly lastSeq = new Map<string, bigint>();
  private pending: Pending[] = [];
  private arrivals = 0;
  private current: VcdValue[] | undefined;
  private lastChange: bigint[] = [];
  private lastTime = 0n;

  constructor(private readonly opts: TraceRecorderOptions) {
    this.signals = opts.lines.map((l) => ({ scope: l.chip, name: traceSignalName(l) }));
    opts.lines.forEach((l, i) => {
      const k = `${l.chip}\n${l.offset}`;
      if (!this.index.has(k)) this.index.set(k, i);
    });
    for (const [chip, seq] of opts.cursors) this.lastSeq.set(chip, seq);
  }

  /** The latest seq seen of `chip` (its cursor before any event). */
  seqOf(chip: string): bigint | undefined {
    return this.lastSeq.get(chip);
  }

  /** One event from a chip's stream, received at `arrivalMs` (any monotonic ms clock). */
  push(e: TraceEvent, arrivalMs: number): void {
    const last = this.lastSeq.get(e.chip);
    if (last !== undefined) {
      if (e.seq <= last) {
        this.stats.duplicates++;
        return;
      }
      if (e.seq > last + 1n) this.stats.lost += Number(e.seq - last - 1n);
    }
    this.lastSeq.set(e.chip, e.seq);
    const signal = this.index.get(`${e.chip}\n${e.offset}`);
    if (signal === undefined) return;
    this.pending.push({ e, signal, arrivalMs, n: this.arrivals++ });
  }

  /**
   * Fix the initial values (time 0). `snapshot(i)` is the level line i had in the
   * snapshot read after the streams were opened; `cutoff` per chip is the chip's last
   * seq read after that snapshot. An event with seq ≤ cutoff may already be in the
   * snapshot, so a line with such an event started at the opposite of the first one's
   * level (every event is a change); other lines started at their snapshot level. Events
   * up to the cutoffs must have been pushed before this call.
   */
  begin(snapshot: (signal: number) => number, cutoff: ReadonlyMap<string, bigint>): VcdValue[] {
    if (this.current !== undefined) throw new Error('begin() was already called');
    const initial: VcdValue[] = this.signals.map((_, i) => (snapshot(i) === 0 ? 0 : 1));
    const decided = new Set<number>();
    for (const p of this.pending) {
      const c = cutoff.get(p.e.chip);
      if (c === undefined || p.e.seq > c || decided.has(p.signal)) continue;
      decided.add(p.signal);
      initial[p.signal] = p.e.level === 0 ? 1 : 0;
    }
    this.current = [...initial];
    this.lastChange = initial.map(() => 0n);
    return initial;
  }

  /** Number of events waiting to be drained. */
  get waiting(): number {
    return this.pending.length;
  }

  /**
   * The changes ready at `nowMs` (events that arrived at least holdMs before), or all
   * waiting ones when `nowMs` is undefined, in time order with times that never go back.
   */
  drain(nowMs?: number): VcdChange[] {
    const current = this.current;
    if (current === undefined) throw new Error('drain() before begin()');
    this.pending.sort((a, b) => (a.e.timestampNs < b.e.timestampNs ? -1 : a.e.timestampNs > b.e.timestampNs ? 1 : a.n - b.n));
    let k = 0;
    while (k < this.pending.length && (nowMs === undefined || (this.pending[k]?.arrivalMs ?? 0) <= nowMs - this.opts.holdMs)) k++;
    const ready = this.pending.slice(0, k);
    this.pending = this.pending.slice(k);
    const out: VcdChange[] = [];
    for (const { e, signal } of ready) {
      const value: VcdValue = e.level === 0 ? 0 : 1;
      if (current[signal] === value) continue;
      const rel = e.timestampNs - this.opts.originNs;
      const raw = rel < 0n ? -1n : rel / NS_PER_TICK;
      let t = raw;
      if (t < this.lastTime) t = this.lastTime;
      const minForSignal = (this.lastChange[signal] ?? 0n) + 1n;
      if (t < minForSignal) t = minForSignal;
      if (t !== raw) this.stats.shifted++;
      current[signal] = value;
      this.lastChange[signal] = t;
      this.lastTime = t;
      this.stats.changes++;
      out.push({ time: t, signal, value });
    }
    return out;
  }
}
