/**
 * The device agent: one vhost-user virtio-gpio backend for one VM. Assembles the layers:
 *
 *   native Platform (os/)  →  vhost-user server + session (vhost-user/)  →  split
 *   virtqueues (virtio/)  →  GpioDevice (device/)  →  LineBackend (backend/)
 *
 * The device and its backend live as long as the agent; QEMU may connect, disconnect
 * and reconnect (guest reboot, QEMU restart) any number of times.
 */
import { hostname } from 'node:os';
import { FabricError, invalidArgument } from '../../common/src/errors.ts';
import { Pull } from '../../common/src/line-model.ts';
import { createLogger, type Logger } from '../../common/src/log.ts';
import { createLineStateClient, type LineStateClient } from '../../linestate/src/client.ts';
import type { TlsFiles } from '../../common/src/tls.ts';
import type { LineBackend } from './backend/line-backend.ts';
import { RemoteBackend } from './backend/remote-backend.ts';
import { StandaloneBackend } from './backend/standalone-backend.ts';
import { GpioDevice, DEFAULT_REQUEST_DEADLINE_MS, type GpioDeviceHooks } from './device/gpio-device.ts';
import type { AgentMetrics, ChipMetrics } from './metrics.ts';
import { createNativePlatform } from './os/native-platform.ts';
import type { Platform } from './os/platform.ts';
import { serveVhostUser, type VhostUserServer } from './vhost-user/server.ts';

export type AgentBackendConfig =
  | { readonly kind: 'standalone'; readonly bias?: Pull | readonly Pull[] }
  | {
    readonly kind: 'remote'; readonly server: string; readonly leaseTtlMs?: number; readonly client?: LineStateClient;
    /** TLS / mutual TLS to the service (docs/security.md); read at start. Absent = plaintext. */
    readonly tls?: TlsFiles;
  };

export interface AgentConfig {
  /** vhost-user socket path QEMU connects to. */
  readonly socketPath: string;
  /** Chip id, e.g. "vm-a". */
  readonly chip: string;
  readonly ngpio: number;
  /** Empty, or one name per line ("" = unnamed). */
  readonly names?: readonly string[];
  readonly backend: AgentBackendConfig;
  /** Every guest request is answered within this bound (ERR when the backend is late). */
  readonly requestDeadlineMs?: number;
  readonly log?: Logger;
  readonly platform?: Platform;
  readonly hooks?: GpioDeviceHooks;
  /** Prometheus series of the process (docs/metrics.md); agents of one process share it. */
  readonly metrics?: AgentMetrics;
}

export interface RunningAgent {
  readonly chip: string;
  readonly socketPath: string;
  readonly backend: LineBackend;
  readonly device: GpioDevice;
  readonly server: VhostUserServer;
  /** Health: a remote backend holds its registration (a standalone one always does). */
  ready(): boolean;
  close(): Promise<void>;
}

/** Call both hook sets (either may be absent). */
function mergeHooks(a: GpioDeviceHooks | undefined, b: GpioDeviceHooks | undefined): GpioDeviceHooks | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return {
    onRequest: (t, o, s) => { a.onRequest?.(t, o, s); b.onRequest?.(t, o, s); },
    onInterrupt: (k) => { a.onInterrupt?.(k); b.onInterrupt?.(k); },
    onBroken: (q, r) => { a.onBroken?.(q, r); b.onBroken?.(q, r); },
    onBackendError: (t, e, to) => { a.onBackendError?.(t, e, to); b.onBackendError?.(t, e, to); },
    onEventInterrupt: (ts) => { a.onEventInterrupt?.(ts); b.onEventInterrupt?.(ts); },
  };
}

const CHIP_ID = /^[A-Za-z0-9._-]{1,64}$/;
/** sun_path holds 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH = 107;
export const MAX_AGENT_NGPIO = 1024;

/** Check an agent configuration; throws FabricError INVALID_ARGUMENT with a precise message. */
export function validateAgentConfig(cfg: AgentConfig): void {
  if (!CHIP_ID.test(cfg.chip)) throw invalidArgument(`chip id "${cfg.chip}" must be 1-64 characters of A-Z a-z 0-9 . _ -`);
  if (!Number.isInteger(cfg.ngpio) || cfg.ngpio < 1 || cfg.ngpio > MAX_AGENT_NGPIO) throw invalidArgument(`--lines ${cfg.ngpio} must be an integer from 1 to ${MAX_AGENT_NGPIO}`);
  const names = cfg.names ?? [];
  if (names.length !== 0 && names.length !== cfg.ngpio) throw invalidArgument(`${names.length} line names given for ${cfg.ngpio} lines: give none or exactly one per line ("" for unnamed)`);
  const seen = new Set<string>();
  for (const n of names) {
    if (n === '') continue;
    if (!/^[\x21-\x7e]{1,64}$/.test(n)) throw invalidArgument(`line name "${n}" must be 1-64 printable 7-bit ASCII characters without spaces`);
    if (seen.has(n)) throw invalidArgument(`line name "${n}" is used twice; names must be unique`);
    seen.add(n);
  }
  if (cfg.socketPath === '' || Buffer.byteLength(cfg.socketPath) > MAX_SOCKET_PATH) throw invalidArgument(`socket path "${cfg.socketPath}" must be 1-${MAX_SOCKET_PATH} bytes (a UNIX socket path limit)`);
  const d = cfg.requestDeadlineMs ?? DEFAULT_REQUEST_DEADLINE_MS;
  if (!Number.isFinite(d) || d < 10 || d > 60_000) throw invalidArgument(`request deadline ${d} ms must be between 10 and 60000`);
}

/** Start an agent: backend first (registration), then the vhost-user socket. */
export async function startAgent(cfg: AgentConfig): Promise<RunningAgent> {
  validateAgentConfig(cfg);
  const log = cfg.log ?? createLogger(`agent[${cfg.chip}]`);
  const platform = cfg.platform ?? createNativePlatform();
  const deadline = cfg.requestDeadlineMs ?? DEFAULT_REQUEST_DEADLINE_MS;
  const names = cfg.names ?? [];
  const cm: ChipMetrics | undefined = cfg.metrics?.forChip(cfg.chip);
  let ownClient: LineStateClient | undefined;
  let backend: LineBackend;
  if (cfg.backend.kind === 'standalone') {
    backend = new StandaloneBackend({ chip: cfg.chip, ngpio: cfg.ngpio, names, ...(cfg.backend.bias !== undefined ? { bias: cfg.backend.bias } : {}) });
  } else {
    const client = cfg.backend.client ?? (ownClient = createLineStateClient(cfg.backend.server, { deadlineMs: deadline, ...(cfg.backend.tls !== undefined ? { tls: cfg.backend.tls } : {}) }));
    backend = new RemoteBackend({
      client,
      chip: cfg.chip,
      ngpio: cfg.ngpio,
      names,
      owner: `${hostname()}/${process.pid}`,
      ...(cfg.backend.leaseTtlMs !== undefined ? { leaseTtlMs: cfg.backend.leaseTtlMs } : {}),
      log: { info: (m) => log.info(m), warn: (m) => log.warn(m) },
      ...(cm !== undefined ? { onReconnect: (what: 'register' | 'stream' | 'ops') => cm.onReconnect(what), onEventReceived: (ts: bigint) => cm.onEventReceived(ts) } : {}),
    });
  }
  const remote = backend instanceof RemoteBackend ? backend : undefined;
  const ready = (): boolean => remote === undefined || remote.leaseToken !== undefined;
  try {
    await backend.start();
  } catch (e) {
    ownClient?.close();
    cm?.remove();
    if (e instanceof FabricError) throw e;
    throw new Error(`chip ${cfg.chip}: the line backend did not start: ${(e as Error).message}`, { cause: e });
  }
  const hooks = mergeHooks(cfg.hooks, cm?.deviceHooks);
  const deviceBackend = cm !== undefined ? cm.instrumentBackend(backend) : backend;
  const device = new GpioDevice({ backend: deviceBackend, requestDeadlineMs: deadline, log, ...(hooks !== undefined ? { hooks } : {}) });
  let server: VhostUserServer;
  try {
    server = serveVhostUser({
      platform,
      socketPath: cfg.socketPath,
      device,
      log: (m) => log.info(m),
      ...(cm !== undefined
        ? {
            onConnect: () => cm.setFrontendConnected(true),
            onDisconnect: (error?: Error) => {
              cm.setFrontendConnected(false);
              if (error !== undefined) cm.onProtocolError();
            },
          }
        : {}),
    });
  } catch (e) {
    device.close();
    await backend.close();
    ownClient?.close();
    cm?.remove();
    throw new Error(`cannot listen on ${cfg.socketPath}: ${(e as Error).message}`, { cause: e });
  }
  log.info('serving virtio-gpio', { socket: cfg.socketPath, lines: cfg.ngpio, backend: cfg.backend.kind === 'remote' ? cfg.backend.server : 'standalone', ...(cfg.backend.kind === 'remote' ? { tls: cfg.backend.tls === undefined ? 'off' : cfg.backend.tls.cert !== undefined ? 'mutual' : 'server-only' } : {}) });
  let closed = false;
  return {
    chip: cfg.chip,
    socketPath: cfg.socketPath,
    backend,
    device,
    server,
    ready,
    close: async () => {
      if (closed) return;
      closed = true;
      await server.close();
      device.close();
      await backend.close();
      ownClient?.close();
      cm?.remove();
    },
  };
}
