/**
 * Proto <-> store conversion and request validation. Pure: no I/O. uint64 fields travel
 * as decimal strings (ts-proto forceLong=string) and become bigint in the store; enum
 * numbers arrive raw (an unknown number is not rejected by the decoder) and are checked
 * here, so every bad request is an INVALID_ARGUMENT a person can act on.
 */
import { invalidArgument } from '../../../common/src/errors.ts';
import {
  Direction, DriveMode, DriveValue, IrqType, Pull,
  isDirection, isDriveMode, isDriveValue, isIrqType, isPull,
} from '../../../common/src/line-model.ts';
import type * as pb from '../../../common/src/gen/gpiofabric/v1/linestate.ts';
import { LineOp, type ChipInfo, type LineAddress, type LineEventRecord, type LineInfo, type NetInfo } from '../store/store.ts';
import { MAX_NAME_LENGTH, idProblem } from '../names.ts';

const U64_MAX = (1n << 64n) - 1n;

/** A uint64 request field (decimal string) as bigint. */
export function u64(s: string, field: string): bigint {
  if (!/^[0-9]{1,20}$/.test(s)) throw invalidArgument(`${field} ${JSON.stringify(s)} is not an unsigned 64-bit integer`);
  const v = BigInt(s);
  if (v > U64_MAX) throw invalidArgument(`${field} ${s} is larger than 2^64-1`);
  return v;
}

export function chipId(s: string, field = 'chip'): string {
  if (s === '') throw invalidArgument(`${field} is required (a chip id such as "vm-a")`);
  const p = idProblem('chip id', s);
  if (p !== undefined) throw invalidArgument(`${field}: ${p}`);
  return s;
}

export function netName(s: string, field = 'name'): string {
  if (s === '') throw invalidArgument(`${field} is required (a net name)`);
  const p = idProblem('net name', s);
  if (p !== undefined) throw invalidArgument(`${field}: ${p}`);
  return s;
}

const enumText = (table: Readonly<Record<string, number>>): string =>
  Object.entries(table).map(([k, v]) => `${v} (${k})`).join(', ');

export function direction(v: number, field = 'direction'): Direction {
  if (!isDirection(v)) throw invalidArgument(`${field} ${v} is not a direction: use ${enumText(Direction)}`);
  return v;
}
export function irqType(v: number, field = 'irq type'): IrqType {
  if (!isIrqType(v)) throw invalidArgument(`${field} ${v} is not an irq type: use ${enumText(IrqType)}`);
  return v;
}
export function pull(v: number, field = 'pull'): Pull {
  if (!isPull(v)) throw invalidArgument(`${field} ${v} is not a pull: use ${enumText(Pull)}`);
  return v;
}
export function driveMode(v: number, field = 'drive_mode'): DriveMode {
  if (!isDriveMode(v)) throw invalidArgument(`${field} ${v} is not a drive mode: use ${enumText(DriveMode)}`);
  return v;
}
export function driveValue(v: number, field = 'value'): DriveValue {
  if (!isDriveValue(v)) throw invalidArgument(`${field} ${v} is not a drive value: use ${enumText(DriveValue)}`);
  return v;
}

const LINE_OPS: ReadonlySet<number> = new Set(Object.values(LineOp));

/** Validate op and value of a LineOp request. */
export function lineOp(op: number, value: number): { op: LineOp; value: number } {
  if (!LINE_OPS.has(op)) throw invalidArgument(`op ${op} is not a line operation: use ${enumText(LineOp)}`);
  const o = op as LineOp;
  switch (o) {
    case LineOp.SET_DIRECTION:
      direction(value, 'SET_DIRECTION value');
      break;
    case LineOp.SET_VALUE:
      if (value !== 0 && value !== 1) throw invalidArgument(`SET_VALUE value ${value} is not 0 or 1`);
      break;
    case LineOp.SET_IRQ_TYPE:
      irqType(value, 'SET_IRQ_TYPE value');
      break;
    case LineOp.GET_DIRECTION:
    case LineOp.GET_VALUE:
      break;
  }
  return { op: o, value };
}

/** A LineRef (required) as a store LineAddress. */
export function lineRef(r: pb.LineRef | undefined, field = 'line'): LineAddress {
  if (r === undefined) throw invalidArgument(`${field} is required (chip and offset or name)`);
  const chip = chipId(r.chip, `${field}.chip`);
  const l = r.line;
  if (l === undefined) throw invalidArgument(`${field} needs an offset or a name (e.g. ${chip}:3 or ${chip}:led0)`);
  if (l.$case === 'offset') return { chip, line: { kind: 'offset', offset: l.value } };
  if (l.value === '') throw invalidArgument(`${field}.name is empty`);
  if (l.value.length > MAX_NAME_LENGTH) throw invalidArgument(`${field}.name is longer than ${MAX_NAME_LENGTH} characters`);
  return { chip, line: { kind: 'name', name: l.value } };
}

export function chipToProto(c: ChipInfo): pb.Chip {
  return {
    id: c.id, ngpio: c.ngpio, names: [...c.names], owner: c.owner, online: c.online,
    leaseExpiresAtMs: String(Math.max(0, Math.trunc(c.leaseExpiresAtMs))), lastSeq: c.lastSeq.toString(),
  };
}

export function lineToProto(l: LineInfo): pb.LineState {
  return {
    chip: l.chip, offset: l.offset, name: l.name, direction: l.direction, outputValue: l.outputValue,
    irqType: l.irqType, bias: l.bias, level: l.level, net: l.net, externalDrive: l.externalDrive,
  };
}

export function netToProto(n: NetInfo): pb.Net {
  return {
    name: n.name,
    members: n.members.map((m) => ({ chip: m.chip, line: { $case: 'offset', value: m.offset } })),
    pull: n.pull, driveMode: n.driveMode, level: n.level, externalDrive: n.externalDrive,
    contention: n.contention, contentionCount: n.contentionCount.toString(),
  };
}

/** `echoesBefore`: echoes of the chip the stream left out directly before this event (omit_echoes). */
export function eventToProto(e: LineEventRecord, echoesBefore = 0): pb.LineEvent {
  return { chip: e.chip, offset: e.offset, level: e.level, edge: e.edge, seq: e.seq.toString(), timestampNs: e.timestampNs.toString(), echoesBefore };
}
