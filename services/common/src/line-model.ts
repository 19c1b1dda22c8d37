/**
 * The line model shared by every component: value domains (numbered as virtio-gpio
 * numbers them) and the pure rule that resolves a net's level from its drivers.
 * The Redis store re-implements `resolveNet` in Lua; the contract suite checks both agree.
 */

export const Direction = { NONE: 0, OUT: 1, IN: 2 } as const;
export type Direction = (typeof Direction)[keyof typeof Direction];

export const IrqType = {
  NONE: 0,
  EDGE_RISING: 1,
  EDGE_FALLING: 2,
  EDGE_BOTH: 3,
  LEVEL_HIGH: 4,
  LEVEL_LOW: 8,
} as const;
export type IrqType = (typeof IrqType)[keyof typeof IrqType];

export const Pull = { NONE: 0, UP: 1, DOWN: 2 } as const;
export type Pull = (typeof Pull)[keyof typeof Pull];

export const DriveMode = { PUSH_PULL: 0, OPEN_DRAIN: 1 } as const;
export type DriveMode = (typeof DriveMode)[keyof typeof DriveMode];

/** External drive: RELEASE = not driven. */
export const DriveValue = { RELEASE: 0, LOW: 1, HIGH: 2 } as const;
export type DriveValue = (typeof DriveValue)[keyof typeof DriveValue];

export const Edge = { NONE: 0, RISING: 1, FALLING: 2 } as const;
export type Edge = (typeof Edge)[keyof typeof Edge];

export type Level = 0 | 1;

export const isDirection = (v: number): v is Direction => v === 0 || v === 1 || v === 2;
export const isIrqType = (v: number): v is IrqType => v === 0 || v === 1 || v === 2 || v === 3 || v === 4 || v === 8;
export const isPull = (v: number): v is Pull => v === 0 || v === 1 || v === 2;
export const isDriveMode = (v: number): v is DriveMode => v === 0 || v === 1;
export const isDriveValue = (v: number): v is DriveValue => v === 0 || v === 1 || v === 2;

/** Level an undriven net (or line) settles to. Floating (PULL_NONE) reads 0. */
export function pullLevel(pull: Pull): Level {
  return pull === Pull.UP ? 1 : 0;
}

export interface Resolution {
  readonly level: Level;
  /** Push-pull drivers disagree. */
  readonly contention: boolean;
}

/**
 * Resolve a net (or an unwired line, a net of one with its bias as pull).
 *
 * drivers: the values driven onto the net: each member line whose direction is OUT
 * contributes its stored output value, and an external drive (of the net or of a member
 * line) contributes its value.
 *
 *  - No driver: the pull's level (PULL_NONE floats and reads 0).
 *  - Push-pull, all drivers agree: their value.
 *  - Push-pull, drivers disagree: contention; the level resolves to 0 (wired-AND: low
 *    wins, as a strong low on real silicon usually does) and the store counts the event.
 *  - Open-drain: a driver at 0 pulls the net low; a driver at 1 releases it. The net is 0
 *    if any driver drives 0, otherwise 1 when pulled up or when some driver drives 1
 *    (an implicit pull-up, as on an I²C bus), otherwise the pull's level. Never contention.
 */
export function resolveNet(drivers: readonly Level[], pull: Pull, mode: DriveMode): Resolution {
  if (drivers.length === 0) return { level: pullLevel(pull), contention: false };
  let zeros = 0;
  for (const d of drivers) if (d === 0) zeros++;
  const ones = drivers.length - zeros;
  if (mode === DriveMode.OPEN_DRAIN) {
    if (zeros > 0) return { level: 0, contention: false };
    return { level: 1, contention: false };
  }
  if (zeros > 0 && ones > 0) return { level: 0, contention: true };
  return { level: ones > 0 ? 1 : 0, contention: false };
}

/** Edge between two observed levels. */
export function edgeOf(from: Level, to: Level): Edge {
  if (from === to) return Edge.NONE;
  return to === 1 ? Edge.RISING : Edge.FALLING;
}

/** Parse `chip:line` where line is an offset or a line name. */
export function parseLineRef(s: string): { chip: string; line: { kind: 'offset'; offset: number } | { kind: 'name'; name: string } } {
  const i = s.lastIndexOf(':');
  if (i <= 0 || i === s.length - 1) throw new Error(`"${s}" is not CHIP:LINE (e.g. vm-a:3 or vm-a:led0)`);
  const chip = s.slice(0, i);
  const line = s.slice(i + 1);
  if (/^[0-9]+$/.test(line)) return { chip, line: { kind: 'offset', offset: Number(line) } };
  return { chip, line: { kind: 'name', name: line } };
}
