/**
 * ScriptedBackend: a LineBackend test double whose operations stay pending until the test
 * settles them (or settle at once with `autoResolve`), so tests control delays, failures
 * and completion order. Events and levels are injected with `emit()`.
 */
import type { Direction, IrqType, Level } from '../../../common/src/line-model.ts';
import { edgeOf } from '../../../common/src/line-model.ts';
import type { LineBackend, LineEvent, LineEventListener } from './line-backend.ts';

export type ScriptedOp = 'getDirection' | 'setDirection' | 'getValue' | 'setValue' | 'setIrqType';

/** One backend call the test can settle. */
export interface ScriptedCall {
  readonly op: ScriptedOp;
  readonly offset: number;
  /** The argument (direction, value, irq type); undefined for getters. */
  readonly arg: number | undefined;
  resolve(value?: number): void;
  reject(error: unknown): void;
  readonly settled: boolean;
}

export class ScriptedBackend implements LineBackend {
  /** Calls left pending for the test to settle (manual mode). */
  readonly calls: ScriptedCall[] = [];
  /** Every call made, in order (both modes). */
  readonly callLog: { readonly op: ScriptedOp; readonly offset: number; readonly arg: number | undefined }[] = [];
  /** When set, calls settle at once with this function's result (throw to fail). */
  autoResolve: ((op: ScriptedOp, offset: number, arg: number | undefined) => number) | undefined;
  private readonly levelArr: Level[];
  private readonly listeners = new Set<LineEventListener>();
  private seq = 0n;

  constructor(
    readonly ngpio: number,
    readonly names: readonly string[] = [],
    readonly chip = 'scripted',
  ) {
    this.levelArr = new Array<Level>(ngpio).fill(0);
  }

  async start(): Promise<void> {}
  getDirection(offset: number): Promise<Direction> {
    return this.call('getDirection', offset, undefined) as Promise<Direction>;
  }
  setDirection(offset: number, d: Direction): Promise<void> {
    return this.call('setDirection', offset, d).then(() => undefined);
  }
  getValue(offset: number): Promise<Level> {
    return this.call('getValue', offset, undefined) as Promise<Level>;
  }
  setValue(offset: number, v: Level): Promise<void> {
    return this.call('setValue', offset, v).then(() => undefined);
  }
  setIrqType(offset: number, t: IrqType): Promise<void> {
    return this.call('setIrqType', offset, t).then(() => undefined);
  }
  levels(): readonly Level[] {
    return this.levelArr;
  }
  onEvent(listener: LineEventListener): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }
  async close(): Promise<void> {
    this.listeners.clear();
  }

  get listenerCount(): number {
    return this.listeners.size;
  }

  /** Unsettled calls, oldest first. */
  pending(): ScriptedCall[] {
    return this.calls.filter((c) => !c.settled);
  }

  /** Set a line's level; emits an event when it changes. */
  emit(offset: number, level: Level): void {
    const from = this.levelArr[offset];
    if (from === undefined || from === level) return;
    this.levelArr[offset] = level;
    this.seq += 1n;
    const e: LineEvent = { offset, level, edge: edgeOf(from, level), seq: this.seq, timestampNs: BigInt(Date.now()) * 1_000_000n };
    for (const l of [...this.listeners]) l(e);
  }

  private call(op: ScriptedOp, offset: number, arg: number | undefined): Promise<number> {
    this.callLog.push({ op, offset, arg });
    if (this.autoResolve !== undefined) {
      try {
        return Promise.resolve(this.autoResolve(op, offset, arg));
      } catch (e) {
        return Promise.reject(e);
      }
    }
    return new Promise<number>((res, rej) => {
      let settled = false;
      this.calls.push({
        op,
        offset,
        arg,
        resolve(v = 0) {
          if (settled) return;
          settled = true;
          res(v);
        },
        reject(e) {
          if (settled) return;
          settled = true;
          rej(e);
        },
        get settled() {
          return settled;
        },
      });
    });
  }
}
