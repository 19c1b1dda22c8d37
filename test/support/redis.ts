/**
 * A real Redis for tests.
 *
 * Order of preference: `REDIS_URL` (an existing server; tests isolate themselves by key
 * prefix), then testcontainers where a Docker engine answers, then a `redis-server`
 * spawned from the machine's PATH on a free loopback port. No mocked Redis, ever.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface RedisHandle {
  readonly url: string;
  readonly port: number;
  /** Where the handle came from: env, container or spawned. */
  readonly kind: 'env' | 'container' | 'spawned';
  /** Stop the server (spawned/container). No-op for env. */
  stop(): Promise<void>;
  /** Kill and start again on the same port and data directory (spawned only). */
  restart(downMs?: number): Promise<void>;
}

export interface StartRedisOptions {
  /** Enable AOF persistence (appendfsync always) so a restart keeps every write. */
  readonly appendonly?: boolean;
  readonly password?: string;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = connect(port, '127.0.0.1');
      c.once('connect', () => {
        c.write('PING\r\n');
      });
      c.once('data', (d) => {
        c.destroy();
        resolve(d.toString().startsWith('+PONG') || d.toString().startsWith('-NOAUTH'));
      });
      c.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`redis-server did not answer on port ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function tryContainer(opts: StartRedisOptions): Promise<RedisHandle | undefined> {
  if (opts.appendonly === true || opts.password !== undefined) return undefined;
  try {
    const mod = await import('@testcontainers/redis');
    const c = await new mod.RedisContainer('redis:7-alpine').start();
    const port = c.getPort();
    return {
      url: c.getConnectionUrl(),
      port,
      kind: 'container',
      stop: async () => {
        await c.stop();
      },
      restart: async () => {
        throw new Error('restart is only supported for a spawned redis-server');
      },
    };
  } catch {
    return undefined; // no container runtime: fall back to a spawned server
  }
}

export async function startRedis(opts: StartRedisOptions = {}): Promise<RedisHandle> {
  const env = process.env['REDIS_URL'];
  if (env !== undefined && env !== '' && opts.appendonly !== true && opts.password === undefined) {
    const port = Number(new URL(env).port || 6379);
    return { url: env, port, kind: 'env', stop: async () => {}, restart: async () => { throw new Error('cannot restart REDIS_URL'); } };
  }
  if (process.env['GPIOFABRIC_TEST_CONTAINERS'] !== '0') {
    const c = await tryContainer(opts);
    if (c !== undefined) return c;
  }
  const dir = mkdtempSync(join(tmpdir(), 'gf-redis-'));
  const port = await freePort();
  let child: ChildProcess | undefined;
  const args = [
    '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '',
    '--appendonly', opts.appendonly === true ? 'yes' : 'no', '--appendfsync', 'always',
    '--daemonize', 'no', '--loglevel', 'warning',
  ];
  if (opts.password !== undefined) args.push('--requirepass', opts.password);
  const launch = async (): Promise<void> => {
    const proc = spawn('redis-server', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    proc.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
    const failed = new Promise<never>((_, reject) => {
      proc.once('error', (e) => reject(new Error(`cannot start redis-server (is it installed? npm test installs it as root): ${e.message}`, { cause: e })));
      proc.once('exit', (code) => reject(new Error(`redis-server exited with ${code}: ${stderr}`)));
    });
    await Promise.race([waitForPort(port, 10_000), failed]);
    failed.catch(() => {});
    child = proc;
  };
  await launch();
  const kill = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (c === undefined || c.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve());
      c.kill('SIGKILL');
    });
  };
  const auth = opts.password !== undefined ? `:${encodeURIComponent(opts.password)}@` : '';
  return {
    url: `redis://${auth}127.0.0.1:${port}`,
    port,
    kind: 'spawned',
    stop: async () => {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
    restart: async (downMs = 0) => {
      await kill();
      if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
      await launch();
    },
  };
}
