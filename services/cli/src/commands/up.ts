import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../../common/src/log.ts';
import { startAgent, MAX_AGENT_NGPIO, type RunningAgent } from '../../../agent/src/agent.ts';
import { startLineStateServer } from '../../../linestate/src/server.ts';
import type { LineStore } from '../../../linestate/src/store/store.ts';
import { UsageError, type Command } from '../command.ts';
import { parse } from '../operator.ts';
import { intArg, qemuArgs, QEMU_NOTE } from '../agent-options.ts';
import { waitForSignal } from '../signals.ts';
import { DEFAULT_METRICS_ADDRESS, createMetricsRegistry, metricsFlag, startCommandMetrics, type MetricsServer } from '../../../common/src/metrics.ts';
import { agentMetrics } from '../../../agent/src/metrics.ts';
import { lineStateMetrics, storeHealth } from '../../../linestate/src/metrics.ts';
import { redactUrl, tlsFilesFrom, tlsOptions, type TlsFiles } from '../../../common/src/tls.ts';
import { redisConnectError, redisTlsOptions } from '../redis-options.ts';

function defaultDir(): string {
  const run = process.env['XDG_RUNTIME_DIR'];
  return run !== undefined && run !== '' ? join(run, 'gpio-fabric') : join(tmpdir(), `gpio-fabric-${process.getuid?.() ?? 'user'}`);
}

/** `gpio-fabric up`: a whole local fabric in one process (what `npm start` runs). */
export const command: Command = {
  summary: 'run a local fabric: the line-state service (embedded store) plus one agent per VM',
  help: `Usage: gpio-fabric up [--vms vm-a,vm-b] [--lines N] [--dir DIR] [--listen ADDR]
                      [--redis URL [--fabric NAME] [--redis-tls-ca FILE]] [--wire] [--metrics ADDR|off]
                      [--tls-cert FILE --tls-key FILE [--tls-ca FILE --agent-tls-cert FILE --agent-tls-key FILE]]

Starts, in this process, the line-state service (on the embedded in-memory store unless
--redis is given) and one agent per VM, then prints for each VM the QEMU arguments that
attach it. Operators use the other commands against --listen (e.g. gpio-fabric ls).
Ctrl-C stops everything.

Options:
  --vms LIST      chip ids of the VMs (default vm-a,vm-b)
  --lines N       lines per VM (default 8)
  --dir DIR       directory for the vhost-user sockets (default $XDG_RUNTIME_DIR/gpio-fabric
                  or ${join(tmpdir(), 'gpio-fabric-<uid>')})
  --listen ADDR   line-state service address (default 127.0.0.1:7070; port 0 = any)
  --redis URL     keep the state in Redis instead of this process (redis://:PASSWORD@host,
                  rediss:// for TLS; the password is never printed)
  --redis-tls-ca FILE, --redis-tls-cert FILE, --redis-tls-key FILE
                  Redis TLS as for \`gpio-fabric serve\`
  --fabric NAME   fabric name on Redis (default "default")
  --wire          wire line 0 of every VM into one net named "demo" (pull down)
  --metrics ADDR  Prometheus metrics of the service and every agent (GET /metrics, the
                  chip label tells agents apart) and a health check (GET /healthz: 200
                  after a store round trip with every agent registered, else 503) on
                  host:port (default ${DEFAULT_METRICS_ADDRESS}, skipped with a warning
                  when that is taken; port 0 = any free port; off = none)
  --tls-cert FILE, --tls-key FILE
                  serve the line-state API over TLS with this server certificate (default
                  $GPIOFABRIC_TLS_CERT, $GPIOFABRIC_TLS_KEY)
  --tls-ca FILE   require client certificates signed by this CA and authorize by role
                  (default $GPIOFABRIC_TLS_CA); the agents then need --agent-tls-cert
  --agent-tls-cert FILE, --agent-tls-key FILE
                  the agents' client certificate: its identity must cover every VM
                  (gpio-fabric certs --agent vm-a --agent vm-b, or --agent 'vm-*'). The
                  agents verify the service with --tls-ca. See docs/security.md

${QEMU_NOTE}`,
  async run(argv) {
    const { values } = parse(argv, {
      vms: { type: 'string' }, lines: { type: 'string' }, dir: { type: 'string' }, listen: { type: 'string' },
      redis: { type: 'string' }, fabric: { type: 'string' }, wire: { type: 'boolean' },
      metrics: { type: 'string' }, 'redis-tls-ca': { type: 'string' }, 'redis-tls-cert': { type: 'string' }, 'redis-tls-key': { type: 'string' },
      'agent-tls-cert': { type: 'string' }, 'agent-tls-key': { type: 'string' }, ...tlsOptions,
    }, { min: 0, max: 0, what: 'no positional arguments' });
    const tls = tlsFilesFrom(values);
    if (tls !== undefined && tls.cert === undefined) throw new UsageError('TLS needs --tls-cert and --tls-key (the service\'s certificate)');
    const agentCert = values['agent-tls-cert'];
    const agentKey = values['agent-tls-key'];
    if ((agentCert === undefined) !== (agentKey === undefined)) throw new UsageError('--agent-tls-cert and --agent-tls-key go together');
    if (agentCert !== undefined && tls === undefined) throw new UsageError('--agent-tls-cert needs --tls-cert/--tls-key/--tls-ca (the service\'s TLS)');
    if (tls?.ca !== undefined && agentCert === undefined) throw new UsageError('with --tls-ca the service requires client certificates: give the agents one with --agent-tls-cert/--agent-tls-key');
    // The agents trust the CA given with --tls-ca (the one that signed the server certificate too).
    const agentTls: TlsFiles | undefined = tls === undefined ? undefined
      : { ...(tls.ca !== undefined ? { ca: tls.ca } : {}), ...(agentCert !== undefined && agentKey !== undefined ? { cert: agentCert, key: agentKey } : {}) };
    const redisTls = redisTlsOptions(values, values.redis);
    const vms = (values.vms ?? 'vm-a,vm-b').split(',').filter((v) => v !== '');
    if (vms.length === 0) throw new UsageError('--vms needs at least one chip id');
    if (new Set(vms).size !== vms.length) throw new UsageError('--vms lists a chip twice');
    const ngpio = intArg('lines', values.lines, 8, 1, MAX_AGENT_NGPIO);
    const dir = values.dir ?? defaultDir();
    const listen = values.listen ?? '127.0.0.1:7070';
    if (values.fabric !== undefined && values.redis === undefined) throw new UsageError('--fabric names a fabric on Redis: give --redis URL too');
    if (values.wire === true && vms.length < 2) throw new UsageError('--wire needs at least two VMs');
    const metricsAt = metricsFlag(values.metrics, DEFAULT_METRICS_ADDRESS);
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
    } catch (e) {
      throw new UsageError(`cannot create socket directory ${dir}: ${(e as Error).message}`);
    }
    const log = createLogger('up');

    let store: LineStore;
    if (values.redis !== undefined) {
      const { createRedisStore } = await import('../../../linestate/src/store/redis-store.ts');
      try {
        store = await createRedisStore({ url: values.redis, fabric: values.fabric ?? 'default', ...(redisTls.tls !== undefined ? { redisOptions: redisTls } : {}) });
      } catch (e) {
        throw redisConnectError(e, values.redis);
      }
    } else {
      const { createMemoryStore } = await import('../../../linestate/src/store/memory-store.ts');
      store = createMemoryStore();
    }
    const agents: RunningAgent[] = [];
    let server: Awaited<ReturnType<typeof startLineStateServer>> | undefined;
    let metricsServer: MetricsServer | undefined;
    const registry = createMetricsRegistry();
    const shutdown = async (): Promise<void> => {
      await metricsServer?.close();
      for (const a of agents.reverse()) await a.close();
      await server?.close();
      await store.close();
    };
    try {
      const lsMetrics = lineStateMetrics({ registry, store, storeKind: values.redis !== undefined ? 'redis' : 'memory', log: (m) => log.warn(m) });
      server = await startLineStateServer({ store, listen, log: (m) => log.info(m), metrics: lsMetrics, ...(tls !== undefined ? { tls } : {}) });
      const metrics = agentMetrics(registry);
      for (const chip of vms) {
        agents.push(await startAgent({ socketPath: join(dir, `${chip}.sock`), chip, ngpio, backend: { kind: 'remote', server: server.address, ...(agentTls !== undefined ? { tls: agentTls } : {}) }, log: createLogger(`agent[${chip}]`), metrics }));
      }
      const st = store;
      metricsServer = await startCommandMetrics(metricsAt, {
        registry,
        health: async () => {
          const s = await storeHealth(st);
          if (s !== true) return s;
          const waiting = agents.filter((a) => !a.ready()).map((a) => a.chip);
          return waiting.length === 0 ? true : `not registered: ${waiting.join(', ')}`;
        },
        log: (m) => log.warn(m),
      });
      if (values.wire === true) {
        await store.wire({ name: 'demo', members: vms.map((chip) => ({ chip, line: { kind: 'offset', offset: 0 } as const })), pull: 2, driveMode: 0 });
      }
    } catch (e) {
      await shutdown();
      throw e;
    }
    const out: string[] = [];
    out.push(`gpio-fabric is up: line-state service on ${server.address} (${values.redis !== undefined ? `Redis ${redactUrl(values.redis)}` : 'embedded in-memory store'}${tls === undefined ? '' : server.authorizing ? ', mTLS' : ', TLS'}), ${vms.length} agent(s) with ${ngpio} lines each.`, '');
    for (const a of agents) {
      out.push(`VM ${a.chip}: attach with`, `  qemu-system-x86_64 ... \\\n    ${qemuArgs(a.chip, a.socketPath)}`, '');
    }
    if (metricsServer !== undefined) out.push(`Metrics: http://${metricsServer.address}/metrics (health: /healthz)`, '');
    out.push(QEMU_NOTE, '');
    if (tls !== undefined) out.push(`Operator commands need TLS options too, e.g. --tls-ca ${tls.ca ?? 'CA'}${server.authorizing ? ' --tls-cert OPERATOR.crt --tls-key OPERATOR.key' : ''}`);
    out.push(`Try:  gpio-fabric ls lines --server ${server.address}`);
    out.push(`      gpio-fabric wire ${vms[0]}:1 ${vms[1] ?? vms[0]}:${vms.length > 1 ? 1 : 2} --name link --server ${server.address}`);
    out.push(`      gpio-fabric watch --server ${server.address}`);
    if (values.wire === true) out.push(`Net "demo" wires line 0 of ${vms.join(', ')}.`);
    out.push('Ctrl-C stops the fabric.');
    console.log(out.join('\n'));
    const sig = await waitForSignal();
    log.info(`${sig}: shutting down`);
    await shutdown();
    return 0;
  },
};
