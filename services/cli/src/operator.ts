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
import { TLS_CLIENT_HELP, tlsFilesFrom, tlsOptions } from '../../common/src/tls.ts';

export const DEFAULT_SERVER = '127.0.0.1:7070';

/** The --server and TLS options every command that calls the service takes. */
export const serverOption = { server: { type: 'string' }, ...tlsOptions } as const;
export const SERVER_HELP = `  --server ADDR     line-state service address (default $GPIOFABRIC_SERVER or ${DEFAULT_SERVER})
${TLS_CLIENT_HELP}`;

/** Parsed values of serverOption. */
export interface ServerFlags {
  readonly server?: string | undefined;
  readonly 'tls-cert'?: string | undefined;
  readonly 'tls-key'?: string | undefined;
  readonly 'tls-ca'?: string | undefined;
}

/** A client of the service for these flags (address and TLS); bad TLS options and unreadable files are ConfigErrors (usage errors). */
export function clientFor(values: ServerFlags): LineStateClient {
  const address = serverAddress(values.server);
  const tls = tlsFilesFrom(values);
  return createLineStateClient(address, tls !== undefined ? { tls } : {});
}

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

/** Run `fn` with a client of the service (flags, or just --server's value); the client is closed afterwards. */
export async function withClient<T>(flags: ServerFlags | string | undefined, fn: (c: LineStateClient) => Promise<T>): Promise<T> {
  const values: ServerFlags = typeof flags === 'object' ? flags : { server: flags };
  const address = serverAddress(values.server);
  const client = clientFor(values);
  try {
    return await fn(client);
  } catch (e) {
    throw reachable(e, address, tlsFilesFrom(values) !== undefined);
  } finally {
    client.close();
  }
}

/** Reword "no connection" failures so the operator knows what to check. */
export function reachable(e: unknown, address: string, tlsUsed = false): unknown {
  const tlsHint = tlsFailure(e);
  if (tlsHint !== undefined) return new FabricError(ErrorCode.UNAVAILABLE, `TLS handshake with the line-state service at ${address} failed: ${tlsHint}`, { cause: e });
  if (isFabricError(e) && e.code === ErrorCode.UNAVAILABLE && /No connection established|ECONNREFUSED|connect|Name resolution/i.test(e.message)) {
    // A plaintext client of a TLS service sees only "Failed to connect": say so.
    if (tlsUsed && !/ECONNREFUSED|Name resolution|ENOTFOUND/i.test(e.message)) {
      // TLS 1.3: a client certificate the service rejects closes the connection after the handshake.
      return new FabricError(ErrorCode.UNAVAILABLE, `TLS handshake with the line-state service at ${address} failed: the service closed the connection (is the client certificate signed by the service's CA? does the service speak TLS?)`, { cause: e });
    }
    const tls = tlsUsed || /ECONNREFUSED|Name resolution|ENOTFOUND/i.test(e.message) ? '' : '; if it requires TLS, give --tls-ca (and --tls-cert/--tls-key) or $GPIOFABRIC_TLS_*';
    return new FabricError(ErrorCode.UNAVAILABLE, `cannot reach the line-state service at ${address} (is \`gpio-fabric serve\` running? set --server or $GPIOFABRIC_SERVER${tls})`, { cause: e });
  }
  return e;
}

/** A readable cause when `e` is a failed TLS handshake, else undefined. */
export function tlsFailure(e: unknown): string | undefined {
  if (!isFabricError(e) || e.code !== ErrorCode.UNAVAILABLE) return undefined;
  const m = e.message;
  if (/certificate required|CERTIFICATE_REQUIRED|peer did not return a certificate/i.test(m)) return 'the service requires a client certificate (give --tls-cert and --tls-key)';
  if (/unknown ca|UNKNOWN_CA|bad certificate|BAD_CERTIFICATE|certificate unknown/i.test(m)) return 'the service did not accept the client certificate (not signed by its CA?)';
  if (/self[- ]signed|unable to (get|verify)|UNABLE_TO_VERIFY|certificate verify failed/i.test(m)) return "the service's certificate is not signed by the CA given with --tls-ca";
  if (/Hostname\/IP does not match|altnames|ERR_TLS_CERT_ALTNAME/i.test(m)) return "the service's certificate does not name this address (see `gpio-fabric certs --server-host`)";
  if (/wrong version number|WRONG_VERSION_NUMBER|packet length too long|http\/1|first record does not look like/i.test(m)) return 'the service does not speak TLS on this port (drop the --tls-* options, or start it with them)';
  if (/ssl|tls|handshake/i.test(m)) return m;
  return undefined;
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
