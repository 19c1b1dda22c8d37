/**
 * Fixtures of the agent integration tests: an agent (standalone, or remote against a real
 * line-state service) with a connected frontend (test/support/frontend.ts), a way to
 * change a line from the fabric side, and a recording Platform that notes every call
 * signal the agent makes with both rings' used.idx at that instant (so tests can see the
 * order in which the agent pushed used entries across the two rings).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startAgent, type AgentConfig, type RunningAgent } from '../../services/agent/src/agent.ts';
import { StandaloneBackend } from '../../services/agent/src/backend/standalone-backend.ts';
import { silentLogger } from '../../services/agent/src/device/gpio-device.ts';
import { createNativePlatform } from '../../services/agent/src/os/native-platform.ts';
import type { Platform } from '../../services/agent/src/os/platform.ts';
import type { DriveValue, Level } from '../../services/common/src/line-model.ts';
import type { Logger } from '../../services/common/src/log.ts';
import { createLineStateClient, type LineStateClient } from '../../services/linestate/src/client.ts';
import { startLineStateServer, type LineStateServer } from '../../services/linestate/src/server.ts';
import type { LineStore } from '../../services/linestate/src/store/store.ts';
import { Frontend, type FrontendOptions } from '../support/frontend.ts';
import { startRedis, type RedisHandle } from '../support/redis.ts';

/** A logger that keeps nothing (the agent logs every hostile input). */
export const quietLog: Logger = silentLogger;

/** Poll `cond` every few ms until true; fails after `timeoutMs` with `what`. */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = 8000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 3));
  }
}

/** A Platform that records each eventfd write (the agent's call signals) through `onWrite`. */
export function recordingPlatform(base: Platform, onWrite: (fd: number) => void): Platform {
  return {
    listenUnix: (p, cb) => base.listenUnix(p, cb),
    connectUnix: (p) => base.connectUnix(p),
    mmap: (fd, len, off) => base.mmap(fd, len, off),
    memfd: (name, size) => base.memfd(name, size),
    eventfd: () => base.eventfd(),
    eventfdRead: (fd) => base.eventfdRead(fd),
    eventfdWrite: (fd, v) => {
      onWrite(fd);
      base.eventfdWrite(fd, v);
    },
    watchReadable: (fd, cb) => base.watchReadable(fd, cb),
    fence: () => base.fence(),
    close: (fd) => base.close(fd),
  };
}

/** A temporary directory for sockets; `rm()` removes it. */
export function tempDir(): { readonly dir: string; path(name: string): string; rm(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'gf-agent-'));
  return { dir, path: (n) => join(dir, n), rm: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A line-state service (gRPC, real port) over a store, plus a client of it. */
export interface Service {
  readonly server: LineStateServer;
  readonly client: LineStateClient;
  readonly address: string;
  stop(): Promise<void>;
}

export async function startService(store: LineStore, listen = '127.0.0.1:0'): Promise<Service> {
  const server = await startLineStateServer({ store, listen, log: () => {} });
  const client = createLineStateClient(server.address);
  return {
    server,
    client,
    address: server.address,
    stop: async () => {
      client.close();
      await server.close();
    },
  };
}

export async function redisStore(url: string, fabric: string): Promise<LineStore> {
  const { createRedisStore } = await import('../../services/linestate/src/store/redis-store.ts');
  return createRedisStore({ url, fabric });
}

export const uniqueId = (prefix: string): string => `${prefix}-${randomBytes(4).toString('hex')}`;

/** Drive a line from the fabric side through the service (the operator's Drive RPC). */
export async function driveRemote(client: LineStateClient, chip: string, offset: number, value: DriveValue): Promise<void> {
  await client.drive({ target: { $case: 'line', value: { chip, line: { $case: 'offset', value: offset } } }, value });
}

/** One agent + its connected, started frontend, as the shared suite sees it. */
export interface AgentEnv {
  readonly kind: 'standalone' | 'remote';
  readonly agent: RunningAgent;
  readonly fe: Frontend;
  /** Every call signal the agent made: both rings' used.idx right after the push it signals. */
  readonly signals: { used: readonly number[] }[];
  /** Change a line's external drive from the fabric side. */
  drive(offset: number, value: DriveValue): Promise<void>;
  /** Wait until the agent's backend has seen `level` on `offset` (events are delivered in order). */
  waitLevel(offset: number, level: Level): Promise<void>;
  close(): Promise<void>;
}

export interface EnvOptions {
  readonly ngpio?: number;
  readonly names?: readonly string[];
  readonly frontend?: FrontendOptions;
  readonly requestDeadlineMs?: number;
}

/** Makes an AgentEnv per test; `teardown()` releases what the factory shares between tests. */
export interface EnvFactory {
  readonly kind: 'standalone' | 'remote';
  setup(): Promise<void>;
  make(opts?: EnvOptions): Promise<AgentEnv>;
  teardown(): Promise<void>;
}

async function assemble(
  kind: 'standalone' | 'remote',
  cfg: Omit<AgentConfig, 'socketPath' | 'platform' | 'log'>,
  opts: EnvOptions,
  drive: (agent: RunningAgent, offset: number, value: DriveValue) => Promise<void>,
): Promise<AgentEnv> {
  const dir = tempDir();
  const signals: { used: number[] }[] = [];
  let fe: Frontend | undefined;
  const platform = recordingPlatform(createNativePlatform(), () => {
    if (fe !== undefined) signals.push({ used: fe.rings.map((r) => r.usedIdx) });
  });
  const agent = await startAgent({ ...cfg, socketPath: dir.path('vhost.sock'), platform, log: quietLog });
  try {
    fe = await Frontend.connect(agent.socketPath, opts.frontend ?? {});
    await fe.start();
  } catch (e) {
    fe?.close();
    await agent.close();
    dir.rm();
    throw e;
  }
  const f = fe;
  return {
    kind,
    agent,
    fe: f,
    signals,
    drive: (offset, value) => drive(agent, offset, value),
    waitLevel: (offset, level) => waitFor(() => agent.backend.levels()[offset] === level, `level ${level} on line ${offset}`),
    close: async () => {
      f.close();
      await agent.close();
      dir.rm();
    },
  };
}

export const DEFAULT_NAMES = ['reset', 'irq', '', 'led0', '', '', '', 'last'] as const;

export function standaloneFactory(): EnvFactory {
  return {
    kind: 'standalone',
    setup: async () => {},
    teardown: async () => {},
    make: (opts = {}) =>
      assemble(
        'standalone',
        {
          chip: uniqueId('vm'),
          ngpio: opts.ngpio ?? 8,
          names: opts.names ?? DEFAULT_NAMES,
          backend: { kind: 'standalone' },
          ...(opts.requestDeadlineMs !== undefined ? { requestDeadlineMs: opts.requestDeadlineMs } : {}),
        },
        opts,
        async (agent, offset, value) => {
          assert.ok(agent.backend instanceof StandaloneBackend);
          agent.backend.drive(offset, value);
        },
      ),
  };
}

/** Remote backend against one line-state service on a spawned Redis, shared by the suite's tests (each test its own chip). */
export function remoteFactory(): EnvFactory & { redis(): RedisHandle; service(): Service } {
  let redis: RedisHandle | undefined;
  let store: LineStore | undefined;
  let service: Service | undefined;
  return {
    kind: 'remote',
    redis: () => {
      assert.ok(redis !== undefined);
      return redis;
    },
    service: () => {
      assert.ok(service !== undefined);
      return service;
    },
    setup: async () => {
      redis = await startRedis();
      store = await redisStore(redis.url, uniqueId('fab'));
      service = await startService(store);
    },
    teardown: async () => {
      await service?.stop();
      await store?.close();
      await redis?.stop();
    },
    make: (opts = {}) => {
      const svc = service;
      assert.ok(svc !== undefined, 'setup() first');
      return assemble(
        'remote',
        {
          chip: uniqueId('vm'),
          ngpio: opts.ngpio ?? 8,
          names: opts.names ?? DEFAULT_NAMES,
          backend: { kind: 'remote', server: svc.address },
          ...(opts.requestDeadlineMs !== undefined ? { requestDeadlineMs: opts.requestDeadlineMs } : {}),
        },
        opts,
        (agent, offset, value) => driveRemote(svc.client, agent.chip, offset, value),
      );
    },
  };
}
