/**
 * Benchmark child processes with a pid (for CPU accounting), and CPU time of any process
 * from /proc/<pid>/stat. Children follow bench/lib/child.ts' convention: they print
 * "READY <value>" once serving and exit when their stdin closes.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

export interface BenchProc {
  readonly ready: string;
  readonly pid: number;
  stop(): Promise<void>;
}

/** Spawn `node --import tsx modulePath ...args` (extra node flags first) and wait for READY. */
export async function startProc(modulePath: string, args: readonly string[], nodeFlags: readonly string[] = []): Promise<BenchProc> {
  const child: ChildProcess = spawn(process.execPath, [...nodeFlags, '--import', 'tsx', modulePath, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  const ready = await new Promise<string>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /^READY (.*)$/m.exec(out);
      if (m?.[1] !== undefined) resolve(m[1]);
    });
    child.once('exit', (code) => reject(new Error(`${modulePath} ${args.join(' ')} exited with ${code} before it was ready`)));
  });
  child.stdout?.resume();
  return {
    ready,
    pid: child.pid ?? 0,
    stop: () => new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) { resolve(); return; }
      const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
      child.once('exit', () => { clearTimeout(kill); resolve(); });
      child.stdin?.end();
    }),
  };
}

let clkTck: number | undefined;
/** Clock ticks per second of /proc times (getconf CLK_TCK, usually 100). */
export function clockTicks(): number {
  if (clkTck === undefined) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/** utime + stime of a process in seconds (whole process, all threads). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // the command name may contain spaces: fields start after the closing parenthesis
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state); utime is field 14, stime field 15
  return (Number(f[11]) + Number(f[12])) / clockTicks();
}

/** CPU seconds used by each pid between two calls: `const m = cpuMeter(pids); ...; m.read()`. */
export function cpuMeter(pids: Readonly<Record<string, number>>): { read(): Record<string, number> } {
  const start = Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, cpuSeconds(p)]));
  return {
    read: () => Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, Math.round((cpuSeconds(p) - (start[k] ?? 0)) * 1000) / 1000])),
  };
}

/** Run and empty a benchmark's cleanup list, in order, each step best effort. */
export async function runCleanup(steps: (() => Promise<void> | void)[]): Promise<void> {
  for (const f of steps.splice(0)) {
    try {
      await f();
    } catch {
      // best effort
    }
  }
}
