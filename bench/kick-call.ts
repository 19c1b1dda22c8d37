/**
 * kick -> call floor as the agent sees it: two Node processes on the agent's native
 * Platform. The backend (child, like the agent) listens on a UNIX socket; the frontend
 * (parent, like QEMU) connects and passes two eventfds over it with SCM_RIGHTS. Per round
 * trip the frontend writes `kick`; the backend's watcher wakes, drains kick and writes
 * `call`; the frontend's watcher wakes and drains call. No virtqueue work in between: this
 * is the floor under every guest request.
 *
 *   npx tsx bench/kick-call.ts [--iterations N]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createNativePlatform } from '../services/agent/src/os/native-platform.ts';

export interface KickCallResult {
  kick_call_p50_us: number;
  kick_call_p99_us: number;
  kick_call_min_us: number;
}

const WARMUP = 2000;
const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');

/** Backend side (child process): watch kick, answer with call; exit when the socket closes. */
function runBackend(path: string): void {
  const p = createNativePlatform();
  const listener = p.listenUnix(path, (sock) => {
    listener.close(); // one frontend
    sock.onData((_data, fds) => {
      const [kick, call] = fds;
      if (kick === undefined || call === undefined) throw new Error('expected kick and call fds');
      const watch = p.watchReadable(kick, () => {
        p.eventfdRead(kick);
        p.eventfdWrite(call);
      });
      sock.onClose(() => {
        watch.stop();
        p.close(kick);
        p.close(call);
      });
    });
  });
  process.stdout.write('ready\n');
}

function percentile(sorted: readonly number[], q: number): number {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i] ?? Number.NaN;
}

/** Frontend side: spawn the backend, run the ping-pong, return latency percentiles (µs). */
export async function runKickCallBench(opts?: { iterations?: number }): Promise<KickCallResult> {
  const iterations = opts?.iterations ?? 20000;
  const p = createNativePlatform();
  const dir = mkdtempSync(join(tmpdir(), 'gpiofabric-kickcall-'));
  const path = join(dir, 'backend.sock');
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--backend', path], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  try {
    await new Promise<void>((ready, fail) => {
      child.once('error', fail);
      child.once('exit', (code) => fail(new Error(`backend exited early (${code})`)));
      child.stdout.on('data', (d: Buffer) => {
        if (d.toString().includes('ready')) ready();
      });
    });

    const sock = await p.connectUnix(path);
    const kick = p.eventfd();
    const call = p.eventfd();
    sock.send(new Uint8Array([1]), [kick, call]);

    const samples = new Float64Array(iterations);
    let n = -WARMUP;
    let t0 = 0n;
    const done = new Promise<void>((finish) => {
      const watch = p.watchReadable(call, () => {
        const t1 = process.hrtime.bigint();
        p.eventfdRead(call);
        if (n >= 0) samples[n] = Number(t1 - t0) / 1000;
        n++;
        if (n >= iterations) {
          watch.stop();
          finish();
          return;
        }
        t0 = process.hrtime.bigint();
        p.eventfdWrite(kick);
      });
    });
    t0 = process.hrtime.bigint();
    p.eventfdWrite(kick);
    await done;

    sock.close();
    p.close(kick);
    p.close(call);
    const code = await exited;
    if (code !== 0) throw new Error(`backend exited with ${code}`);

    const sorted = Array.from(samples).sort((a, b) => a - b);
    const round = (x: number): number => Math.round(x * 10) / 10;
    return {
      kick_call_min_us: round(sorted[0] ?? Number.NaN),
      kick_call_p50_us: round(percentile(sorted, 0.5)),
      kick_call_p99_us: round(percentile(sorted, 0.99)),
    };
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href;
if (isMain) {
  const backendAt = process.argv.indexOf('--backend');
  if (backendAt >= 0) {
    const path = process.argv[backendAt + 1];
    if (path === undefined) throw new Error('--backend needs a socket path');
    runBackend(path);
  } else {
    const itAt = process.argv.indexOf('--iterations');
    const iterations = itAt >= 0 ? Number(process.argv[itAt + 1]) : 20000;
    if (!Number.isSafeInteger(iterations) || iterations <= 0) throw new Error('--iterations must be a positive integer');
    const r = await runKickCallBench({ iterations });
    console.log(`kick -> call round trip, Node frontend <-> Node backend (native addon), ${iterations} iterations after ${WARMUP} warm-up`);
    console.table({ 'kick->call (µs)': { min: r.kick_call_min_us, p50: r.kick_call_p50_us, p99: r.kick_call_p99_us } });
  }
}
