/**
 * The line backend: where the state of one chip's lines lives. The virtio-gpio device
 * model (../device/gpio-device.ts) forwards every line operation here and listens to the
 * backend's events to raise guest interrupts.
 *
 * Two implementations:
 *  - StandaloneBackend (./standalone-backend.ts): in-process, one chip, no service.
 *  - a remote backend: gRPC to the line-state service (registers the chip, holds the
 *    lease, streams the chip's events).
 *
 * Contract every implementation keeps:
 *  - Operations may be called concurrently for different lines; the device never issues
 *    two concurrent operations for one line except after a timeout (see gpio-device.ts).
 *  - Failures reject with a BackendError (keeping `cause`) or a FabricError (passed
 *    through unchanged from the service); never with anything else, never synchronously.
 *  - Events are delivered to listeners in per-chip `seq` order, each at most once, and
 *    `levels()` already reflects an event (or something newer) when its listeners run.
 *    The remote backend is not sent the echoes of its own operations (a change an
 *    operation made to its own line while the line's irq type was NONE; docs/line-model.md):
 *    `levels()` has those from the operations' results.
 *  - A listener that throws does not affect the backend or other listeners.
 */
import type { Direction, Edge, IrqType, Level } from '../../../common/src/line-model.ts';
import { FabricError } from '../../../common/src/errors.ts';

/** A change of one line's observed level. */
export interface LineEvent {
  readonly offset: number;
  /** The new observed level. */
  readonly level: Level;
  /** RISING (0 -> 1) or FALLING (1 -> 0). */
  readonly edge: Edge;
  /** Monotonic per chip, starting at 1. */
  readonly seq: bigint;
  /** Wall-clock time of the change, ns since the Unix epoch. */
  readonly timestampNs: bigint;
}

export type LineEventListener = (e: LineEvent) => void;

export interface LineBackend {
  /** Chip id (e.g. "vm-a"): for logs and metric labels. */
  readonly chip: string;
  /** Number of lines, 1..65535; fixed for the backend's life. */
  readonly ngpio: number;
  /** Line names: empty, or one per line with "" for an unnamed line; fixed. */
  readonly names: readonly string[];
  /** Register (remote) and load the line state. Call once, before any operation. */
  start(): Promise<void>;
  getDirection(offset: number): Promise<Direction>;
  /** NONE discards the line's guest state (direction and stored output value). */
  setDirection(offset: number, direction: Direction): Promise<void>;
  /** The line's observed level (the net's level when wired). */
  getValue(offset: number): Promise<Level>;
  /** Stores the output value; it drives the line while (or once) it is an output. */
  setValue(offset: number, value: Level): Promise<void>;
  /** Records the irq type (interrupt delivery itself happens in the device model). */
  setIrqType(offset: number, type: IrqType): Promise<void>;
  /** Observed level of every line as last known (initial state, then events and operation results). */
  levels(): readonly Level[];
  /** Subscribe to level-change events; returns the unsubscribe function. */
  onEvent(listener: LineEventListener): () => void;
  /** Stop: later operations reject with BackendError; listeners get no more events. */
  close(): Promise<void>;
}

/** A backend operation failed (the device answers the guest ERR). */
export class BackendError extends Error {
  override readonly name: string = 'BackendError';
}

/** The backend was closed (or never started) when an operation arrived. */
export class BackendClosedError extends BackendError {
  override readonly name: string = 'BackendClosedError';
}

/** Wrap anything thrown into a BackendError, passing BackendError and FabricError through. */
export function toBackendError(e: unknown, what: string): BackendError | FabricError {
  if (e instanceof BackendError || e instanceof FabricError) return e;
  return new BackendError(`${what}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
}
