/**
 * Prometheus plumbing shared by every gpio-fabric process (catalogue: docs/metrics.md):
 * one prom-client Registry per process, the shared duration buckets, a `--metrics`
 * address parser and a tiny node:http server answering `GET /metrics` and `GET /healthz`.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { ConfigError } from './errors.ts';

/** Prefix of every series the fabric exports (prom-client's defaults included). */
export const METRIC_PREFIX = 'gpiofabric_';

/** Histogram buckets (seconds) of every `_seconds` histogram: 50 µs .. 2.5 s. */
export const DURATION_BUCKETS: readonly number[] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** Default metrics address of `serve` and `up`. */
export const DEFAULT_METRICS_ADDRESS = '127.0.0.1:9464';

/** How long collect() callbacks reuse a sample of the store (gauges sampled at scrape). */
export const SAMPLE_CACHE_MS = 1000;

/** A `--metrics` value that is not HOST:PORT. */
export class MetricsAddressError extends ConfigError {
  override readonly name = 'MetricsAddressError';
}

/** Parse `HOST:PORT` (`[::1]:9464` for IPv6; port 0 = any free port). Throws MetricsAddressError. */
export function parseMetricsAddress(value: string): { readonly host: string; readonly port: number } {
  const i = value.lastIndexOf(':');
  const host = i > 0 ? value.slice(0, i) : '';
  const portText = i > 0 ? value.slice(i + 1) : '';
  if (host === '' || !/^[0-9]{1,5}$/.test(portText) || Number(portText) > 65535 || /[\s/]/.test(host)) {
    throw new MetricsAddressError(`--metrics must be HOST:PORT (e.g. 127.0.0.1:9464; port 0 = any free port), not "${value}"`);
  }
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (bare === '') throw new MetricsAddressError(`--metrics must be HOST:PORT, not "${value}"`);
  return { host: bare, port: Number(portText) };
}

/**
 * A new registry. With `defaultMetrics` (default true) prom-client's process and Node.js
 * metrics are collected into it, prefixed `gpiofabric_`.
 */
export function createMetricsRegistry(opts: { readonly defaultMetrics?: boolean } = {}): Registry {
  const registry = new Registry();
  if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: METRIC_PREFIX });
  return registry;
}

/** Seconds elapsed since `t0` (a `performance.now()` reading). */
export function secondsSince(t0: number): number {
  return (performance.now() - t0) / 1000;
}

/** Wall clock now, in ms since the epoch with sub-ms resolution. */
export function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * Seconds from a wall-clock event timestamp (ns since the epoch) to now; negative values
 * (clock skew between hosts) are clamped to 0.
 */
export function secondsSinceEpochNs(timestampNs: bigint): number {
  const s = (wallClockMs() - Number(timestampNs / 1000n) / 1000) / 1000;
  return s > 0 ? s : 0;
}

/** Outcome of a health probe: healthy, or the reason it is not. */
export type HealthResult = true | string;

export interface MetricsServerOptions {
  /** HOST:PORT (see parseMetricsAddress). */
  readonly listen: string;
  readonly registry: Registry;
  /**
   * `GET /healthz`: 200 "ok" when this resolves true, else 503 with the reason (a false
   * result, a string, a rejection, or no answer within `healthTimeoutMs`). Default: always ok.
   */
  readonly health?: () => Promise<boolean | string>;
  /** Bound for one health probe (default 1000 ms). */
  readonly healthTimeoutMs?: number;
  readonly log?: (msg: string) => void;
}

export interface MetricsServer {
  /** "host:port" actually bound (port 0 resolved). */
  readonly address: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Run one health probe within `timeoutMs`. */
export async function probeHealth(health: (() => Promise<boolean | string>) | undefined, timeoutMs: number): Promise<HealthResult> {
  if (health === undefined) return true;
  let timer: NodeJS.Timeout | undefined;
  try {
    const r = await Promise.race([
      health(),
      new Promise<string>((resolve) => {
        timer = setTimeout(() => resolve(`no answer within ${timeoutMs} ms`), timeoutMs);
      }),
    ]);
    return r === true ? true : r === false ? 'unhealthy' : r;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  } finally {
    clearTimeout(timer);
  }
}

/** Serve `GET /metrics` and `GET /healthz`. Rejects when the address cannot be bound. */
export async function startMetricsServer(opts: MetricsServerOptions): Promise<MetricsServer> {
  const { host, port } = parseMetricsAddress(opts.listen);
  const healthTimeout = opts.healthTimeoutMs ?? 1000;
  const log = opts.log ?? (() => {});
  const reply = (res: ServerResponse, code: number, body: string, type = 'text/plain; charset=utf-8'): void => {
    res.writeHead(code, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
    res.end(body);
  };
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics' && path !== '/healthz') {
      reply(res, 404, 'not found: try /metrics or /healthz\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      reply(res, 405, 'method not allowed\n');
      return;
    }
    if (path === '/healthz') {
      const r = await probeHealth(opts.health, healthTimeout);
      reply(res, r === true ? 200 : 503, r === true ? 'ok\n' : `unhealthy: ${r}\n`);
      return;
    }
    try {
      reply(res, 200, await opts.registry.metrics(), opts.registry.contentType);
    } catch (e) {
      log(`metrics: collecting failed: ${e instanceof Error ? e.message : String(e)}`);
      reply(res, 500, 'collecting metrics failed\n');
    }
  };
  const server = createServer((req, res) => {
    req.resume(); // ignore any body
    handle(req, res).catch(() => {
      if (!res.headersSent) reply(res, 500, 'internal error\n');
      else res.destroy();
    });
  });
  server.keepAliveTimeout = 5000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    const onError = (e: Error): void => reject(new Error(`cannot serve metrics on ${opts.listen}: ${e.message}`, { cause: e }));
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', (e) => log(`metrics server: ${e.message}`));
  const a = server.address() as AddressInfo;
  const address = `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  let closing: Promise<void> | undefined;
  return {
    address,
    port: a.port,
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

/**
 * The `--metrics` flag of a command: `off` = no endpoint; absent = `dflt` (undefined = no
 * endpoint). Throws MetricsAddressError for anything else that is not HOST:PORT.
 */
export function metricsFlag(value: string | undefined, dflt: string | undefined): { readonly listen: string; readonly explicit: boolean } | undefined {
  if (value === 'off') return undefined;
  if (value === undefined) return dflt === undefined ? undefined : { listen: dflt, explicit: false };
  parseMetricsAddress(value);
  return { listen: value, explicit: true };
}

/**
 * Start the endpoint of a command. An explicitly given address must bind (else this
 * rejects); the default address may be taken (another gpio-fabric process on the host):
 * then the process runs without an endpoint, says so through `log`, and this resolves undefined.
 */
export async function startCommandMetrics(
  flag: { readonly listen: string; readonly explicit: boolean } | undefined,
  opts: Omit<MetricsServerOptions, 'listen'>,
): Promise<MetricsServer | undefined> {
  if (flag === undefined) return undefined;
  try {
    return await startMetricsServer({ ...opts, listen: flag.listen });
  } catch (e) {
    const code = ((e as Error).cause as NodeJS.ErrnoException | undefined)?.code;
    if (flag.explicit || code !== 'EADDRINUSE') throw e;
    (opts.log ?? (() => {}))(`metrics: the default address ${flag.listen} is in use; running without a metrics endpoint (give --metrics HOST:PORT, port 0 = any)`);
    return undefined;
  }
}
