/**
 * Shared plumbing of the operator commands (wire, unwire, ls, get, drive, bias, watch,
 * apply): argument parsing that reports usage errors, the service address, one client
 * per invocation, and text formatting of line-state values.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ErrorCode, FabricError, isFabricError } from '../../common/src/errors.ts';
import { parseLineRef } from '../../common/src/line-model.ts';
import type { LineRef } from '../../common/src/gen/gpiofabric/v1/linestate.ts';
import { createLineStateClient, type LineStateClient } from '../../linestate/src/client.ts';
import { UsageError } from './command.ts';

export const DEFAULT_SERVER = '127.0.0.1:7070';

/** The --server option every operator command takes. */
export const serverOption = { server: { type: 'string' } } as const;
export const SERVER_HELP = `  --server ADDR     line-state service address (default $GPIOFABRIC_SERVER or ${DEFAULT_SERVER})`;

type Options = NonNullable<ParseArgsConfig['options']>;

/** node:util parseArgs in strict mode; its errors become UsageError (exit code 2). */
export function parse<O extends Options>(argv: readonly string[], options: O, positionals: { min: number; max: number; what: string }) {
  let r;
  try {
    r = parseArgs({ args: [...argv], options, strict: true, allowPositionals: true });
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message.replace(/^TypeError \[[A-Z_]+\]: /, '') : String(e));
  }
  const n = r.positionals.length;
  if (n < positionals.min) throw new UsageError(`missing ${positionals.what}`);
  if (n > positionals.max) throw new UsageError(`unexpected argument "${r.positionals[positionals.max] ?? ''}" (expected ${positionals.what})`);
  return r;
}

export function serverAddress(flag: string | undefined): string {
  const a = flag ?? process.env['GPIOFABRIC_SERVER'] ?? '';
  return a === '' ? DEFAULT_SERVER : a;
}

/** Run `fn` with a client of the service; the client is closed afterwards. */
export async function withClient<T>(server: string | undefined, fn: (c: LineStateClient) => Promise<T>): Promise<T> {
  const address = serverAddress(server);
  const client = createLineStateClient(address);
  try {
    return await fn(client);
  } catch (e) {
    throw reachable(e, address);
  } finally {
    client.close();
  }
}

/** Reword "no connection" failures so the operator knows what to check. */
export function reachable(e: unknown, address: string): unknown {
  if (isFabricError(e) && e.code === ErrorCode.UNAVAILABLE && /No connection established|ECONNREFUSED|connect|Name resolution/i.test(e.message)) {
    return new FabricError(ErrorCode.UNAVAILABLE, `cannot reach the line-state service at ${address} (is \`gpio-fabric serve\` running? set --server or $GPIOFABRIC_SERVER)`, { cause: e });
  }
  return e;
}

/** CHIP:LINE (offset or name) as a proto LineRef; bad syntax is a usage error. */
export function lineRefArg(s: string): LineRef {
  let r: ReturnType<typeof parseLineRef>;
  try {
    r = parseLineRef(s);
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
  return { chip: r.chip, line: r.line.kind === 'offset' ? { $case: 'offset', value: r.line.offset } : { $case: 'name', value: r.line.name } };
}

export const lineRefText = (r: LineRef): string => `${r.chip}:${r.line === undefined ? '?' : String(r.line.value)}`;

export const directionText = (d: number): string => ({ 0: 'none', 1: 'out', 2: 'in' } as Record<number, string>)[d] ?? String(d);
export const irqText = (v: number): string =>
  ({ 0: 'none', 1: 'edge-rising', 2: 'edge-falling', 3: 'edge-both', 4: 'level-high', 8: 'level-low' } as Record<number, string>)[v] ?? String(v);
export const pullText = (p: number): string => ({ 0: 'none', 1: 'up', 2: 'down' } as Record<number, string>)[p] ?? String(p);
export const modeText = (m: number): string => ({ 0: 'push-pull', 1: 'open-drain' } as Record<number, string>)[m] ?? String(m);
export const driveText = (v: number): string => ({ 0: 'release', 1: 'low', 2: 'high' } as Record<number, string>)[v] ?? String(v);
export const edgeText = (e: number): string => ({ 0: 'none', 1: 'rising', 2: 'falling' } as Record<number, string>)[e] ?? String(e);

/** Pull names accepted on the command line. */
export function pullArg(s: string, what: string): 0 | 1 | 2 {
  const v = ({ none: 0, up: 1, down: 2 } as Record<string, 0 | 1 | 2>)[s];
  if (v === undefined) throw new UsageError(`${what} must be up, down or none, not "${s}"`);
  return v;
}

/** A plain-text table with a header row; columns padded to their widest cell. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (r: readonly string[]): string => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ').trimEnd();
  return [fmt(header), ...rows.map(fmt)].join('\n');
}

import type { Chip, LineState, Net } from '../../common/src/gen/gpiofabric/v1/linestate.ts';

/** JSON shapes of --json output: enums as lowercase words, uint64 as decimal strings. */
export const chipJson = (c: Chip) => ({
  id: c.id, ngpio: c.ngpio, names: c.names, owner: c.owner, online: c.online, leaseExpiresAtMs: c.leaseExpiresAtMs, lastSeq: c.lastSeq,
});
export const lineJson = (l: LineState) => ({
  chip: l.chip, offset: l.offset, name: l.name, direction: directionText(l.direction), outputValue: l.outputValue,
  irqType: irqText(l.irqType), bias: pullText(l.bias), level: l.level, net: l.net, externalDrive: driveText(l.externalDrive),
});
export const netJson = (n: Net) => ({
  name: n.name, members: n.members.map(lineRefText), pull: pullText(n.pull), driveMode: modeText(n.driveMode), level: n.level,
  externalDrive: driveText(n.externalDrive), contention: n.contention, contentionCount: n.contentionCount,
});
