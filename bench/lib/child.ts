/**
 * Benchmark child processes: run a module through tsx with arguments; the child prints
 * "READY <value>" on stdout once it serves, and exits when its stdin closes (so a
 * crashed benchmark leaves nothing behind).
 */
import { spawn, type ChildProcess } from 'node:child_process';

export interface BenchChild {
  readonly ready: string;
  stop(): Promise<void>;
}

export async function startChild(modulePath: string, args: readonly string[]): Promise<BenchChild> {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', modulePath, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  const ready = await new Promise<string>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /^READY (.*)$/m.exec(out);
      if (m?.[1] !== undefined) resolve(m[1]);
    });
    child.once('exit', (code) => reject(new Error(`${modulePath} exited with ${code} before it was ready`)));
  });
  return {
    ready,
    stop: () => new Promise<void>((resolve) => {
      if (child.exitCode !== null) { resolve(); return; }
      child.once('exit', () => resolve());
      child.stdin?.end();
      setTimeout(() => child.kill('SIGKILL'), 3000).unref();
    }),
  };
}

/** In a child: call `stop` when the parent closes stdin (or dies). */
export function exitWithParent(stop: () => Promise<void>): void {
  process.stdin.resume();
  process.stdin.on('end', () => { void stop().finally(() => process.exit(0)); });
}

/** In a child: a line-state service on the Redis store at `url`; prints "READY <address>". */
export async function redisServiceChild(url: string, fabric: string): Promise<void> {
  const { createRedisStore } = await import('../../services/linestate/src/store/redis-store.ts');
  const { startLineStateServer } = await import('../../services/linestate/src/server.ts');
  const store = await createRedisStore({ url, fabric });
  const server = await startLineStateServer({ store, listen: '127.0.0.1:0', log: (m) => console.error(m) });
  exitWithParent(async () => {
    await server.close();
    await store.close();
  });
  console.log(`READY ${server.address}`);
}
