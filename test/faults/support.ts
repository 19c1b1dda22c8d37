/**
 * Shared plumbing of the fault-injection tests: real `gpio-fabric` processes (serve,
 * agent), a redis-server that can be killed and started again on the same port and AOF
 * file, bounded polling, answer-time measurement, and the rows the tests report for
 * docs/reliability.md.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { freePort } from '../support/redis.ts';

export const BIN = 'bin/gpio-fabric.mjs';

/** A running `gpio-fabric ...` process. */
export interface FabricProc {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly match: RegExpMatchArray;
  /** stdout + stderr so far. */
  output(): string;
  /** SIGKILL, resolves once it is gone. */
  kill(): Promise<void>;
  /** SIGTERM (SIGKILL after 10 s); resolves with the exit code. */
  stop(): Promise<number | null>;
}

/** Start `gpio-fabric ARGS`; resolves once stdout matches `ready`. */
export async function startProc(name: string, args: readonly string[], ready: RegExp, env: NodeJS.ProcessEnv = {}): Promise<FabricProc> {
  const proc = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let out = '';
  proc.stderr?.on('data', (d: Buffer) => { out += d.toString(); });
  let stdout = '';
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const match = await new Promise<RegExpMatchArray>((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`${name}: not ready within 30 s:\n${out}`));
    }, 30_000);
    proc.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      stdout += d.toString();
      const m = stdout.match(ready);
      if (m !== null) {
        clearTimeout(timer);
        resolve(m);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${name}: exited with ${code} before it was ready:\n${out}`));
    });
  });
  return {
    name,
    proc,
    match,
    output: () => out,
    kill: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGKILL');
      await exited;
    },
    stop: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      proc.kill('SIGTERM');
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

/** `gpio-fabric serve --redis URL`; `address` is where it listens. */
export async function startServe(name: string, o: { redis: string; fabric: string; listen?: string }): Promise<FabricProc & { address: string }> {
  const p = await startProc(name, ['serve', '--redis', o.redis, '--fabric', o.fabric, '--listen', o.listen ?? '127.0.0.1:0', '--metrics', 'off'], /listening on (\S+)/);
  return Object.assign(p, { address: p.match[1] ?? '' });
}

export interface AgentProcOptions {
  readonly socket: string;
  readonly chip: string;
  readonly lines: number;
  readonly server: string;
  readonly deadlineMs: number;
  readonly leaseTtlMs?: number;
}

/** `gpio-fabric agent --server ...` as a process; ready once it serves its socket. */
export function startAgentProc(name: string, o: AgentProcOptions): Promise<FabricProc> {
  const args = ['agent', '--socket', o.socket, '--chip', o.chip, '--lines', String(o.lines), '--server', o.server, '--deadline', String(o.deadlineMs)];
  if (o.leaseTtlMs !== undefined) args.push('--lease-ttl', String(o.leaseTtlMs));
  return startProc(name, args, new RegExp(`agent ${o.chip}: \\d+ lines on`));
}

/** A redis-server with AOF (appendfsync always) that can be killed and started again on the same port and files. */
export interface RedisProc {
  readonly url: string;
  readonly port: number;
  /** SIGKILL (no shutdown save: only the AOF survives). */
  kill(): Promise<void>;
  /** Start again on the same port and data directory; resolves once it answers PING. */
  start(): Promise<void>;
  /** Kill and delete the data directory. */
  stop(): Promise<void>;
}

async function pingable(port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const c = connect(port, '127.0.0.1');
    const t = setTimeout(() => { c.destroy(); resolve(false); }, 1000);
    c.once('connect', () => c.write('PING\r\n'));
    c.once('data', (d) => { clearTimeout(t); c.destroy(); resolve(d.toString().startsWith('+PONG')); });
    c.once('error', () => { clearTimeout(t); resolve(false); });
  });
}

/** Spawn redis-server on a free loopback port with appendonly yes + appendfsync always. */
export async function startRedisAof(): Promise<RedisProc> {
  const dir = mkdtempSync(join(tmpdir(), 'gf-faults-redis-'));
  const port = await freePort();
  let child: ChildProcess | undefined;
  const start = async (): Promise<void> => {
    const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'always', '--loglevel', 'warning'], { stdio: 'ignore' });
    child = proc;
    const deadline = Date.now() + 15_000;
    while (!(await pingable(port))) {
      if (proc.exitCode !== null) throw new Error(`redis-server exited with ${proc.exitCode}`);
      if (Date.now() > deadline) throw new Error(`redis-server did not answer on ${port}`);
      await sleep(20);
    }
  };
  const kill = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve());
      c.kill('SIGKILL');
    });
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    kill,
    start,
    stop: async () => {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll `fn` until it returns a value other than undefined/false, or fail after `timeoutMs`. */
export async function until<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 20_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms${last !== undefined ? ` (last error: ${(last as Error).message})` : ''}`);
    await sleep(everyMs);
  }
}

/** Run `fn` and measure how long it took (ms, fractional). */
export async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const t0 = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - t0 };
}

/** Things to undo, run in reverse order; failures are collected, not thrown half-way. */
export class Cleanup {
  readonly #steps: { what: string; fn: () => Promise<unknown> | unknown }[] = [];
  defer(what: string, fn: () => Promise<unknown> | unknown): void {
    this.#steps.push({ what, fn });
  }
  tempDir(prefix: string): string {
    const d = mkdtempSync(join(tmpdir(), prefix));
    this.defer(`remove ${d}`, () => rmSync(d, { recursive: true, force: true }));
    return d;
  }
  async run(): Promise<void> {
    const errors: string[] = [];
    for (const s of this.#steps.reverse()) {
      try {
        await s.fn();
      } catch (e) {
        errors.push(`${s.what}: ${(e as Error).message}`);
      }
    }
    this.#steps.length = 0;
    if (errors.length > 0) throw new Error(`cleanup failed:\n${errors.join('\n')}`);
  }
}

/** One row of docs/reliability.md as measured by a fault test. */
export interface ReliabilityRow {
  readonly fault: string;
  readonly outcome: string;
  readonly figures: Record<string, number | string | boolean>;
}

/**
 * Report a row: as a test diagnostic, and appended as one JSON line to
 * $GPIOFABRIC_RELIABILITY_OUT when that is set (how docs/reliability.md's numbers are collected).
 */
export function report(t: TestContext, row: ReliabilityRow): void {
  t.diagnostic(`reliability ${JSON.stringify(row)}`);
  const out = process.env['GPIOFABRIC_RELIABILITY_OUT'];
  if (out !== undefined && out !== '') appendFileSync(out, `${JSON.stringify({ ...row, at: new Date().toISOString() })}\n`);
}

/** The part of the frontend driver the helpers below use. */
interface Requester {
  request(type: number, gpio: number, value?: number): Promise<{ status: number; value: number }>;
}

/**
 * A guest request that must succeed (set-up and recovery steps, not the fault window):
 * repeated while it is answered ERR, which on a loaded machine can be a plain deadline
 * miss. Every request the tests issue is idempotent. Fails after `attempts` ERR answers.
 */
export async function requestOk(fe: Requester, type: number, gpio: number, value = 0, attempts = 10): Promise<{ status: number; value: number }> {
  let last: { status: number; value: number } | undefined;
  for (let i = 0; i < attempts; i++) {
    last = await fe.request(type, gpio, value);
    if (last.status === 0) return last;
    await sleep(100);
  }
  throw new Error(`request ${type} line ${gpio} value ${value}: answered status ${last?.status} ${attempts} times`);
}
