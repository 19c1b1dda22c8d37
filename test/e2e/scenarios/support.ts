/**
 * Shared plumbing of the real-guest scenarios (test/e2e/scenarios/*.test.ts) and the demo:
 * `gpio-fabric` processes started as a user starts them, the operator CLI run
 * asynchronously (the guest console keeps being read while it runs), gpiomon output
 * parsing and bounded polling. Everything started here is registered in a {@link Stack}
 * whose `close()` stops it in reverse order, even after a failure.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Guest } from '../qemu.ts';

/** Repository root. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
/** The CLI entry point. */
export const BIN = join(ROOT, 'bin', 'gpio-fabric.mjs');

/** A long-running `gpio-fabric` process (serve or agent). */
export interface FabricProc {
  readonly name: string;
  readonly proc: ChildProcess;
  /** What matched the readiness pattern. */
  readonly match: RegExpMatchArray;
  /** Everything it printed so far (stdout then stderr), for failure messages. */
  output(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code (or signal name). */
  stop(graceMs?: number): Promise<number | string | null>;
  /** SIGKILL at once (a crash as far as the peers can tell). */
  kill(): Promise<void>;
}

/** Raised when a process does not become ready; carries its output. */
export class ProcStartError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'ProcStartError';
  }
}

const liveProcs = new Set<ChildProcess>();
let hook = false;

/** Starts `gpio-fabric ARGS...`, resolving once stdout matches `ready` (bounded by `timeoutMs`). */
export async function startFabricProc(name: string, args: readonly string[], ready: RegExp, timeoutMs = 30_000): Promise<FabricProc> {
  if (!hook) {
    hook = true;
    process.once('exit', () => {
      for (const p of liveProcs) p.kill('SIGKILL');
    });
  }
  const proc = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  liveProcs.add(proc);
  let out = '';
  let err = '';
  const cap = (s: string): string => (s.length > 200_000 ? s.slice(-100_000) : s);
  proc.stdout?.on('data', (d: Buffer) => { out = cap(out + d.toString()); });
  proc.stderr?.on('data', (d: Buffer) => { err = cap(err + d.toString()); });
  const exited = new Promise<number | string | null>((res) => {
    proc.once('exit', (code, signal) => {
      liveProcs.delete(proc);
      res(code ?? signal);
    });
    proc.once('error', () => { liveProcs.delete(proc); res(null); });
  });
  const output = (): string => `${out}${err === '' ? '' : `\n[stderr]\n${err}`}`;
  const stop = async (graceMs = 10_000): Promise<number | string | null> => {
    if (proc.exitCode !== null || proc.signalCode !== null) return exited;
    proc.kill('SIGTERM');
    const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
    const code = await exited;
    clearTimeout(t);
    return code;
  };
  const kill = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await exited;
  };
  let match: RegExpMatchArray;
  try {
    match = await new Promise<RegExpMatchArray>((res, rej) => {
      const timer = setTimeout(() => rej(new ProcStartError(`${name} not ready within ${timeoutMs} ms:\n${output()}`)), timeoutMs);
      const check = (): void => {
        const m = out.match(ready);
        if (m !== null) {
          clearTimeout(timer);
          res(m);
        }
      };
      proc.stdout?.on('data', check);
      void exited.then((code) => {
        clearTimeout(timer);
        rej(new ProcStartError(`${name} exited (${String(code)}) before it was ready:\n${output()}`));
      });
    });
  } catch (e) {
    await kill();
    throw e;
  }
  return { name, proc, match, output, stop, kill };
}

/** Starts `gpio-fabric serve` on `listen` (default a free port); `address` is where it listens. */
export async function startServe(name: string, opts: { redis?: string; fabric?: string; listen?: string } = {}): Promise<FabricProc & { address: string }> {
  const args = ['serve', '--listen', opts.listen ?? '127.0.0.1:0'];
  if (opts.redis !== undefined) args.push('--redis', opts.redis);
  if (opts.fabric !== undefined) args.push('--fabric', opts.fabric);
  const p = await startFabricProc(name, args, /listening on (\S+:\d+)/);
  return Object.assign(p, { address: p.match[1] as string });
}

/** Options of {@link startAgentProc}. */
export interface AgentProcOptions {
  readonly socket: string;
  readonly chip: string;
  readonly lines: number;
  readonly names?: readonly string[];
  /** Service address (fabric agent); omit with `standalone`. */
  readonly server?: string;
  /** Standalone with an embedded line-state API on a free port. */
  readonly standalone?: { readonly pull?: 'up' | 'down' | 'none' };
  readonly deadlineMs?: number;
  readonly leaseTtlMs?: number;
}

/** Starts `gpio-fabric agent ...`; with `standalone`, `address` is its embedded line-state API. */
export async function startAgentProc(name: string, o: AgentProcOptions): Promise<FabricProc & { address: string | undefined }> {
  const args = ['agent', '--socket', o.socket, '--chip', o.chip, '--lines', String(o.lines)];
  if (o.names !== undefined) args.push('--names', o.names.join(','));
  if (o.standalone !== undefined) {
    args.push('--standalone', '--listen', '127.0.0.1:0');
    if (o.standalone.pull !== undefined) args.push('--pull', o.standalone.pull);
  } else if (o.server !== undefined) {
    args.push('--server', o.server);
  }
  if (o.deadlineMs !== undefined) args.push('--deadline', String(o.deadlineMs));
  if (o.leaseTtlMs !== undefined) args.push('--lease-ttl', String(o.leaseTtlMs));
  const p = await startFabricProc(name, args, /agent \S+: \d+ lines on /);
  const m = p.output().match(/line-state API for \S+ on (\S+:\d+)/);
  return Object.assign(p, { address: m?.[1] });
}

/** Result of one operator command. */
export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs an operator command (`gpio-fabric ARGS...`) without blocking the event loop, bounded. */
export function cli(args: readonly string[], timeoutMs = 30_000): Promise<CliResult> {
  return new Promise((res) => {
    const p = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout?.on('data', (d: Buffer) => { stdout += d.toString(); });
    p.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.once('close', (code, signal) => {
      clearTimeout(t);
      res({ code, stdout, stderr: signal === null ? stderr : `${stderr}\n(killed by ${signal} after ${timeoutMs} ms)` });
    });
  });
}

/** Runs an operator command and throws (with its output) unless it exits 0. */
export async function cliOk(args: readonly string[]): Promise<string> {
  const r = await cli(args);
  if (r.code !== 0) throw new Error(`gpio-fabric ${args.join(' ')} exited ${String(r.code)}:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** What `gpio-fabric get CHIP:LINE --json` prints. */
export interface LineJson {
  readonly chip: string;
  readonly offset: number;
  readonly name: string;
  readonly direction: string;
  readonly outputValue: number;
  readonly irqType: string;
  readonly bias: string;
  readonly level: number;
  readonly net: string;
  readonly externalDrive: string;
}

/** `gpio-fabric get LINE --json --server ADDR`, parsed. */
export async function getLine(server: string, line: string): Promise<LineJson> {
  return JSON.parse(await cliOk(['get', line, '--json', '--server', server])) as LineJson;
}

/** `gpio-fabric drive TARGET VALUE --server ADDR`. */
export async function drive(server: string, target: string, value: '0' | '1' | 'release'): Promise<void> {
  await cliOk(['drive', target, value, '--server', server]);
}

/** Sleeps `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Polls `probe` until it returns a value accepted by `ok`, at most `timeoutMs`; throws with
 * `what` and the last value otherwise.
 */
export async function until<T>(what: string, probe: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 20_000, everyMs = 150): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  for (;;) {
    last = await probe();
    if (ok(last)) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last value: ${JSON.stringify(last)}`);
    await sleep(everyMs);
  }
}

/** One line of `gpiomon` (libgpiod v2, default format): `<ts>\t<rising|falling>\t<chip> <offset>`. */
export interface MonEvent {
  readonly edge: 'rising' | 'falling';
  readonly chip: string;
  readonly offset: number;
}

/** Parses gpiomon's default output; lines that are not events are returned in `other`. */
export function parseGpiomon(text: string): { events: MonEvent[]; other: string[] } {
  const events: MonEvent[] = [];
  const other: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const m = /^\d+\.\d+\s+(rising|falling)\s+(\S+)\s+(\d+)(?:\s|$)/.exec(line);
    if (m === null) other.push(line);
    else events.push({ edge: m[1] as 'rising' | 'falling', chip: m[2] as string, offset: Number(m[3]) });
  }
  return { events, other };
}

/** Things to undo at the end of a test, run in reverse order; every step's error is collected. */
export class Stack {
  private readonly steps: { what: string; fn: () => Promise<unknown> }[] = [];
  /** Registers an undo step. */
  defer(what: string, fn: () => Promise<unknown>): void {
    this.steps.push({ what, fn });
  }
  /** A temporary directory removed at close. */
  tempDir(prefix: string): string {
    const d = mkdtempSync(join(tmpdir(), prefix));
    this.defer(`remove ${d}`, async () => rmSync(d, { recursive: true, force: true }));
    return d;
  }
  /** Runs every step (last first); throws an AggregateError if any failed. */
  async close(): Promise<void> {
    const errors: Error[] = [];
    while (this.steps.length > 0) {
      const s = this.steps.pop();
      if (s === undefined) break;
      try {
        await s.fn();
      } catch (e) {
        errors.push(new Error(`cleanup "${s.what}" failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e }));
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, errors.map((e) => e.message).join('\n'));
  }
}

/** Registers a guest for shutdown (bounded; a guest that does not power off is killed). */
export function deferGuest(stack: Stack, g: Guest): void {
  stack.defer(`shut down guest ${g.name}`, () => g.shutdown({ timeoutMs: 10_000 }));
}

/** Appends `what` (guest console tail and process outputs) to an assertion's message. */
export function context(g: Guest | undefined, ...procs: (FabricProc | undefined)[]): string {
  const parts: string[] = [];
  if (g !== undefined) parts.push(`--- guest ${g.name} console tail ---\n${g.console().replace(/\r/g, '').split('\n').slice(-30).join('\n')}`);
  for (const p of procs) if (p !== undefined) parts.push(`--- ${p.name} output (tail) ---\n${p.output().split('\n').slice(-20).join('\n')}`);
  return parts.join('\n');
}

/** A persistent line-state client for drives in quick succession (the CLI starts a process per call). */
export interface FabricDriver {
  /** Drives CHIP:OFFSET like `gpio-fabric drive`; resolves with the level afterwards. */
  drive(chip: string, offset: number, value: '0' | '1' | 'release'): Promise<number>;
  close(): void;
}

/** Opens a {@link FabricDriver} on the service (or standalone agent API) at `address`. */
export async function fabricDriver(address: string): Promise<FabricDriver> {
  const { createLineStateClient } = await import('../../../services/linestate/src/client.ts');
  const { DriveValue } = await import('../../../services/common/src/gen/gpiofabric/v1/linestate.ts');
  const c = createLineStateClient(address);
  const v = { '0': DriveValue.DRIVE_VALUE_LOW, '1': DriveValue.DRIVE_VALUE_HIGH, release: DriveValue.DRIVE_VALUE_RELEASE } as const;
  return {
    async drive(chip, offset, value) {
      const r = await c.drive({ target: { $case: 'line', value: { chip, line: { $case: 'offset', value: offset } } }, value: v[value] });
      return r.level;
    },
    close: () => c.close(),
  };
}

/** A minimal QMP client (QEMU's JSON monitor) on a UNIX socket. */
export interface Qmp {
  /** Runs one command; resolves with `return`, rejects with QEMU's `error.desc`. */
  execute(command: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<unknown>;
  close(): void;
}

/** Connects to QEMU's QMP socket (retrying until it exists, at most `timeoutMs`) and negotiates capabilities. */
export async function connectQmp(path: string, timeoutMs = 20_000): Promise<Qmp> {
  const { connect } = await import('node:net');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const sock = await new Promise<import('node:net').Socket | undefined>((res) => {
      const s = connect(path);
      s.once('connect', () => res(s));
      s.once('error', () => res(undefined));
    });
    if (sock !== undefined) {
      let buf = '';
      const waiting: { res: (v: unknown) => void; rej: (e: Error) => void; timer: NodeJS.Timeout }[] = [];
      let greeted: () => void = () => {};
      const greeting = new Promise<void>((r) => { greeted = r; });
      const failAll = (e: Error): void => { for (const w of waiting.splice(0)) { clearTimeout(w.timer); w.rej(e); } };
      sock.on('data', (d: Buffer) => {
        buf += d.toString();
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line === '') continue;
          const msg = JSON.parse(line) as { QMP?: unknown; return?: unknown; error?: { desc?: string }; event?: string };
          if (msg.QMP !== undefined) greeted();
          else if (msg.event !== undefined) continue;
          else {
            const w = waiting.shift();
            if (w === undefined) continue;
            clearTimeout(w.timer);
            if (msg.error !== undefined) w.rej(new Error(`QMP error: ${msg.error.desc ?? JSON.stringify(msg.error)}`));
            else w.res(msg.return);
          }
        }
      });
      sock.on('error', (e) => failAll(e));
      sock.on('close', () => failAll(new Error('QMP socket closed')));
      const execute = (command: string, args?: Record<string, unknown>, ms = 20_000): Promise<unknown> =>
        new Promise((res, rej) => {
          const timer = setTimeout(() => rej(new Error(`QMP ${command}: no answer within ${ms} ms`)), ms);
          waiting.push({ res, rej, timer });
          sock.write(`${JSON.stringify(args === undefined ? { execute: command } : { execute: command, arguments: args })}\n`);
        });
      await Promise.race([greeting, sleep(Math.max(1, deadline - Date.now())).then(() => { throw new Error('no QMP greeting'); })]);
      await execute('qmp_capabilities');
      return { execute, close: () => sock.destroy() };
    }
    if (Date.now() > deadline) throw new Error(`cannot connect to QMP at ${path} within ${timeoutMs} ms`);
    await sleep(50);
  }
}

/**
 * QEMU arguments and a starter for a guest whose vhost-user-gpio chardev reconnects
 * (`reconnect-ms`) after its agent goes away.
 *
 * QEMU 10's vhost-user-gpio-pci talks to its backend while the device is realized, but a
 * socket chardev with `reconnect-ms` connects asynchronously, so `-device` on the command
 * line fails ("Failed to set msg fds"). The guest is therefore started paused (`-S`)
 * with only the chardev and a QMP socket; once the chardev is connected the device is
 * added with `device_add` and the guest is started with `cont`, so it sees the device at
 * boot as if it were on the command line.
 */
export function reconnectingGpio(socketPath: string, qmpPath: string, reconnectMs = 500): { extraArgs: string[]; attach(timeoutMs?: number): Promise<void> } {
  if (socketPath.includes(',') || qmpPath.includes(',')) throw new RangeError('paths must not contain ","');
  return {
    extraArgs: ['-S', '-qmp', `unix:${qmpPath},server=on,wait=off`, '-chardev', `socket,id=gpio0,path=${socketPath},reconnect-ms=${reconnectMs}`],
    async attach(timeoutMs = 30_000) {
      const qmp = await connectQmp(qmpPath, timeoutMs);
      try {
        await until('the vhost-user chardev to connect', async () => {
          const list = (await qmp.execute('query-chardev')) as { label: string; filename: string }[];
          return list.find((c) => c.label === 'gpio0')?.filename ?? '(no chardev gpio0)';
        }, (f) => !f.startsWith('disconnected') && f.startsWith('unix:'), timeoutMs, 50);
        await qmp.execute('device_add', { driver: 'vhost-user-gpio-pci', chardev: 'gpio0', id: 'gpio0' });
        await qmp.execute('cont');
      } finally {
        qmp.close();
      }
    },
  };
}
