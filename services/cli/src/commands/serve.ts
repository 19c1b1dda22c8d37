import { readFile } from 'node:fs/promises';
import { UsageError, type Command } from '../command.ts';
import { parse } from '../operator.ts';
import type { LineStore } from '../../../linestate/src/store/store.ts';
import { startLineStateServer } from '../../../linestate/src/server.ts';
import { parseTopology } from '../../../linestate/src/topology.ts';
import { DEFAULT_METRICS_ADDRESS, createMetricsRegistry, metricsFlag, startCommandMetrics } from '../../../common/src/metrics.ts';
import { lineStateMetrics, storeHealth } from '../../../linestate/src/metrics.ts';
import { isLoopbackListen, TLS_SERVER_HELP, tlsFilesFrom, tlsOptions } from '../../../common/src/tls.ts';
import { redisConnectError, redisTlsOptions } from '../redis-options.ts';

/** `gpio-fabric serve`: run the line-state service. */
export const command: Command = {
  summary: 'run the line-state gRPC service (in-memory, or on Redis with --redis)',
  help: `Usage: gpio-fabric serve [--redis URL [--redis-sentinels H:P,... --redis-sentinel-name NAME]]
                         [--redis-tls-ca FILE [--redis-tls-cert FILE --redis-tls-key FILE]]
                         [--fabric NAME] [--listen ADDR] [--topology FILE] [--lease-ttl MS]
                         [--metrics ADDR|off] [--tls-cert FILE --tls-key FILE [--tls-ca FILE]]

Runs the line-state service. Without --redis the state lives in this process (one
machine, lost on exit). With --redis every replica started on the same Redis and fabric
name serves the same fabric, and the state survives restarts. Prints the address it
listens on; SIGINT/SIGTERM stop it cleanly.

Options:
  --redis URL       Redis URL, e.g. redis://127.0.0.1:6379 (default $GPIOFABRIC_REDIS; none = in-memory);
                    AUTH: redis://:PASSWORD@host:6379 or redis://USER:PASSWORD@host:6379 (ACL);
                    TLS: rediss://host:6379. The password is never printed
  --redis-tls-ca FILE
                    CA certificate of the Redis server's TLS certificate (needs rediss://;
                    default $GPIOFABRIC_REDIS_TLS_CA; without it the system CAs)
  --redis-tls-cert FILE, --redis-tls-key FILE
                    client certificate and key for Redis (tls-auth-clients; default
                    $GPIOFABRIC_REDIS_TLS_CERT, $GPIOFABRIC_REDIS_TLS_KEY)
  --redis-sentinels LIST
                    find the Redis primary through these Sentinels (host:port,...; default
                    $GPIOFABRIC_REDIS_SENTINELS); the URL's host is then ignored, its user,
                    password and database still apply
  --redis-sentinel-name NAME
                    the primary's name in Sentinel (default $GPIOFABRIC_REDIS_SENTINEL_NAME)
  --fabric NAME     fabric name: the Redis key namespace (default "default")
  --listen ADDR     host:port to listen on (default $GPIOFABRIC_LISTEN or 127.0.0.1:7070; port 0 = any free port)
  --topology FILE   apply this topology document at start (see docs/topology.md)
  --lease-ttl MS    lease TTL for agents that do not ask for one (default 10000)
  --metrics ADDR    serve Prometheus metrics (GET /metrics) and a health check (GET
                    /healthz: 200 after a store round trip, else 503) on host:port
                    (default ${DEFAULT_METRICS_ADDRESS}, skipped with a warning when that
                    is taken; port 0 = any free port; off = none). See docs/metrics.md
${TLS_SERVER_HELP}
Without --tls-* the service speaks plaintext gRPC and authorizes nothing (fine on
127.0.0.1; a warning is logged when it listens on another address).`,
  async run(argv) {
    const { values } = parse(argv, {
      redis: { type: 'string' }, fabric: { type: 'string' }, listen: { type: 'string' }, topology: { type: 'string' }, 'lease-ttl': { type: 'string' },
      metrics: { type: 'string' }, 'redis-sentinels': { type: 'string' }, 'redis-sentinel-name': { type: 'string' },
      'redis-tls-ca': { type: 'string' }, 'redis-tls-cert': { type: 'string' }, 'redis-tls-key': { type: 'string' }, ...tlsOptions,
    }, { min: 0, max: 0, what: 'no positional arguments' });
    const redis = values.redis ?? (process.env['GPIOFABRIC_REDIS'] || undefined);
    const listen = values.listen ?? (process.env['GPIOFABRIC_LISTEN'] || '127.0.0.1:7070');
    if (!/^.+:[0-9]{1,5}$/.test(listen) || Number(listen.slice(listen.lastIndexOf(':') + 1)) > 65535) throw new UsageError(`--listen must be HOST:PORT, not "${listen}"`);
    let leaseTtlMs: number | undefined;
    if (values['lease-ttl'] !== undefined) {
      if (!/^[0-9]+$/.test(values['lease-ttl']) || Number(values['lease-ttl']) < 500 || Number(values['lease-ttl']) > 600_000) {
        throw new UsageError(`--lease-ttl must be a number of milliseconds from 500 to 600000, not "${values['lease-ttl']}"`);
      }
      leaseTtlMs = Number(values['lease-ttl']);
    }
    const sentinel = sentinelOptions(values['redis-sentinels'] ?? (process.env['GPIOFABRIC_REDIS_SENTINELS'] || undefined), values['redis-sentinel-name'] ?? (process.env['GPIOFABRIC_REDIS_SENTINEL_NAME'] || undefined));
    if (sentinel !== undefined && redis === undefined) throw new UsageError('--redis-sentinels needs --redis URL too (for the password and database)');
    const fabric = values.fabric ?? 'default';
    if (values.fabric !== undefined && redis === undefined) throw new UsageError('--fabric names a fabric on Redis: give --redis URL too');
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(fabric)) throw new UsageError(`--fabric must be 1-64 characters of A-Z a-z 0-9 . _ -, not "${fabric}"`);
    const metricsAt = metricsFlag(values.metrics, DEFAULT_METRICS_ADDRESS);
    const tls = tlsFilesFrom(values);
    if (tls !== undefined && tls.cert === undefined) throw new UsageError('serving TLS needs --tls-cert and --tls-key (--tls-ca alone is a client option)');
    const redisTls = redisTlsOptions(values, redis);
    let document: string | undefined;
    if (values.topology !== undefined) {
      try {
        document = await readFile(values.topology, 'utf8');
      } catch (e) {
        throw new UsageError(`cannot read ${values.topology}: ${e instanceof Error ? e.message : String(e)}`);
      }
      parseTopology(document); // fail before opening anything
    }

    let store: LineStore;
    if (redis !== undefined) {
      const { createRedisStore } = await import('../../../linestate/src/store/redis-store.ts');
      const redisOptions = { ...sentinel, ...redisTls };
      try {
        store = await createRedisStore({ url: redis, fabric, ...(Object.keys(redisOptions).length > 0 ? { redisOptions } : {}) });
      } catch (e) {
        throw redisConnectError(e, redis);
      }
    } else {
      const { createMemoryStore } = await import('../../../linestate/src/store/memory-store.ts');
      store = createMemoryStore();
    }
    const log = (msg: string): void => console.error(`${new Date().toISOString()} ${msg}`);
    try {
      if (document !== undefined) {
        const r = await store.applyTopology(parseTopology(document), false);
        log(`applied topology ${values.topology}: ${r.changes.length} change(s), ${r.chips} chip(s), ${r.nets} net(s)`);
      }
      const registry = createMetricsRegistry();
      const metrics = lineStateMetrics({ registry, store, storeKind: redis !== undefined ? 'redis' : 'memory', log });
      const server = await startLineStateServer({ store, listen, log, metrics, ...(leaseTtlMs !== undefined ? { leaseTtlMs } : {}), ...(tls !== undefined ? { tls } : {}) });
      if (tls === undefined && !isLoopbackListen(server.address)) {
        log(`WARNING: listening on ${server.address} without TLS: anyone who reaches this port can drive every line (use --tls-cert/--tls-key/--tls-ca, docs/security.md)`);
      } else if (tls !== undefined && !server.authorizing) {
        log('WARNING: TLS without --tls-ca: traffic is encrypted but clients are not authenticated, every client may call every RPC (docs/security.md)');
      }
      let metricsServer;
      try {
        metricsServer = await startCommandMetrics(metricsAt, { registry, health: () => storeHealth(store), log });
      } catch (e) {
        await server.close();
        throw e;
      }
      const security = tls === undefined ? '' : server.authorizing ? ', mTLS: clients authorized by role' : ', TLS without client certificates';
      console.log(`gpio-fabric line-state service listening on ${server.address} (store: ${redis !== undefined ? `redis, fabric ${fabric}` : 'memory'})${security}`);
      if (metricsServer !== undefined) console.log(`metrics on http://${metricsServer.address}/metrics`);
      await new Promise<void>((resolve) => {
        const onSignal = (sig: string): void => {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
          log(`${sig}: shutting down`);
          resolve();
        };
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
      });
      await metricsServer?.close();
      await server.close();
    } finally {
      await store.close();
    }
    return 0;
  },
};

/** Sentinel discovery options for ioredis, or undefined when no Sentinel is configured. */
export function sentinelOptions(list: string | undefined, name: string | undefined): { sentinels: { host: string; port: number }[]; name: string } | undefined {
  if (list === undefined && name === undefined) return undefined;
  if (list === undefined || name === undefined) throw new UsageError('--redis-sentinels and --redis-sentinel-name go together');
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(name)) throw new UsageError(`--redis-sentinel-name must be 1-64 characters of A-Z a-z 0-9 . _ -, not "${name}"`);
  const sentinels = list.split(',').map((a) => {
    const i = a.lastIndexOf(':');
    const port = Number(a.slice(i + 1));
    if (i <= 0 || !/^[0-9]{1,5}$/.test(a.slice(i + 1)) || port < 1 || port > 65535) throw new UsageError(`--redis-sentinels: "${a}" is not HOST:PORT`);
    return { host: a.slice(0, i), port };
  });
  return { sentinels, name };
}
