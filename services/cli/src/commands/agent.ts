import { createLogger } from '../../../common/src/log.ts';
import { startAgent, MAX_AGENT_NGPIO, type RunningAgent } from '../../../agent/src/agent.ts';
import { UsageError, type Command } from '../command.ts';
import { parse, serverAddress } from '../operator.ts';
import { TLS_CLIENT_HELP, tlsFilesFrom, tlsOptions } from '../../../common/src/tls.ts';
import { intArg, namesArg, pullArg, qemuArgs, QEMU_NOTE } from '../agent-options.ts';
import { waitForSignal } from '../signals.ts';
import { createMetricsRegistry, metricsFlag, startCommandMetrics, type MetricsServer } from '../../../common/src/metrics.ts';
import { agentMetrics } from '../../../agent/src/metrics.ts';

/** `gpio-fabric agent`: one vhost-user virtio-gpio backend for one VM. */
export const command: Command = {
  summary: 'serve one VM a virtio-gpio controller over vhost-user (QEMU connects to --socket)',
  help: `Usage: gpio-fabric agent --socket PATH --chip ID --lines N [--names a,b,...]
                         [--server ADDR | --standalone [--listen ADDR] [--pull up|down|none]]
                         [--deadline MS] [--lease-ttl MS] [--metrics ADDR] [--print-qemu]
                         [--tls-cert FILE --tls-key FILE --tls-ca FILE]

Listens on a UNIX socket for QEMU's vhost-user-gpio-pci device and serves the guest a
standard virtio-gpio controller (virtio 1.2 §5.18) with N lines. QEMU may disconnect
and reconnect (guest reboot, QEMU restart) any number of times.

Line state lives either in the line-state service (--server, the default: lines can be
wired to other VMs' lines, state survives agent restarts) or in this process
(--standalone: one VM, no service needed, like vhost-device-gpio's mock chip but with
real semantics: an input reads its pull or an external drive).

Options:
  --socket PATH     vhost-user socket to listen on (a stale socket file is replaced)
  --chip ID         chip id, unique in the fabric (1-64 of A-Z a-z 0-9 . _ -)
  --lines N         number of GPIO lines, 1-${MAX_AGENT_NGPIO}
  --names LIST      comma-separated line names in line order ("" or missing = unnamed)
  --server ADDR     line-state service (default $GPIOFABRIC_SERVER or 127.0.0.1:7070)
  --standalone      keep the lines in this process; no service
  --listen ADDR     with --standalone: also serve the line-state gRPC API on ADDR (an
                    embedded in-memory service) so \`gpio-fabric get/drive/watch --server
                    ADDR\` can read and drive this VM's lines
  --pull P          with --standalone: bias of every line (up, down, none; default none)
  --deadline MS     every guest request is answered within MS (ERR when the service is
                    late or unreachable; default 2000). The Linux driver waits forever.
  --lease-ttl MS    chip lease TTL asked of the service (default: the service's)
  --metrics ADDR    serve Prometheus metrics (GET /metrics) and a health check (GET
                    /healthz: 200 while the chip is registered with the service; always
                    with --standalone) on host:port (port 0 = any free port; default:
                    none). See docs/metrics.md
  --print-qemu      print the QEMU arguments that attach a VM to this agent
${TLS_CLIENT_HELP}
                    With mutual TLS the certificate's identity must name this chip
                    (gpiofabric:agent:CHIP, see gpio-fabric certs and docs/security.md)

Environment: GPIOFABRIC_LOG=debug|info|warn|error (default info).

Example:
  gpio-fabric agent --socket /run/gpio-fabric/vm-a.sock --chip vm-a --lines 8 --names led0,btn0
  qemu-system-x86_64 ... ${qemuArgs('vm-a', '/run/gpio-fabric/vm-a.sock').replace(/\\\n {4}/g, '')}
${QEMU_NOTE}`,
  async run(argv) {
    const { values } = parse(argv, {
      socket: { type: 'string' }, chip: { type: 'string' }, lines: { type: 'string' }, names: { type: 'string' },
      server: { type: 'string' }, standalone: { type: 'boolean' }, listen: { type: 'string' }, pull: { type: 'string' },
      deadline: { type: 'string' }, 'lease-ttl': { type: 'string' }, 'print-qemu': { type: 'boolean' },
      metrics: { type: 'string' }, ...tlsOptions,
    }, { min: 0, max: 0, what: 'no positional arguments' });
    const tlsFlagsGiven = values['tls-cert'] !== undefined || values['tls-key'] !== undefined || values['tls-ca'] !== undefined;
    if (values.standalone === true && tlsFlagsGiven) throw new UsageError('--tls-* secure the connection to the service: they do not go with --standalone');
    const tls = values.standalone === true ? undefined : tlsFilesFrom(values);
    if (values.socket === undefined) throw new UsageError('--socket PATH is required');
    if (values.chip === undefined) throw new UsageError('--chip ID is required');
    if (values.lines === undefined) throw new UsageError('--lines N is required');
    const ngpio = intArg('lines', values.lines, 0, 1, MAX_AGENT_NGPIO);
    const names = namesArg(values.names, ngpio);
    const standalone = values.standalone === true;
    if (standalone && values.server !== undefined) throw new UsageError('--standalone and --server exclude each other');
    if (!standalone && values.listen !== undefined) throw new UsageError('--listen only goes with --standalone (a fabric agent uses the service at --server)');
    if (!standalone && values.pull !== undefined) throw new UsageError('--pull only goes with --standalone (in a fabric, set bias with `gpio-fabric bias` or a topology)');
    const deadline = intArg('deadline', values.deadline, 2000, 10, 60_000);
    const leaseTtl = values['lease-ttl'] === undefined ? undefined : intArg('lease-ttl', values['lease-ttl'], 0, 500, 600_000);
    const metricsAt = metricsFlag(values.metrics, undefined);
    const log = createLogger(`agent[${values.chip}]`);
    const registry = metricsAt !== undefined ? createMetricsRegistry() : undefined;
    const metrics = registry !== undefined ? agentMetrics(registry) : undefined;

    const closers: (() => Promise<void>)[] = [];
    const withMetrics = metrics !== undefined ? { metrics } : {};
    let agent: RunningAgent;
    try {
      if (standalone && values.listen !== undefined) {
        // Embedded line-state service on the memory store, for operator access.
        const { createMemoryStore } = await import('../../../linestate/src/store/memory-store.ts');
        const { startLineStateServer } = await import('../../../linestate/src/server.ts');
        const store = createMemoryStore();
        let lsMetrics;
        if (registry !== undefined) {
          const { lineStateMetrics } = await import('../../../linestate/src/metrics.ts');
          lsMetrics = lineStateMetrics({ registry, store, storeKind: 'memory', log: (m) => log.warn(m) });
        }
        const server = await startLineStateServer({ store, listen: values.listen, log: (m) => log.info(m), ...(lsMetrics !== undefined ? { metrics: lsMetrics } : {}) });
        closers.push(async () => { await server.close(); await store.close(); });
        const bias = pullArg(values.pull);
        agent = await startAgent({ socketPath: values.socket, chip: values.chip, ngpio, names, requestDeadlineMs: deadline, log, backend: { kind: 'remote', server: server.address }, ...withMetrics });
        if (bias !== 0) {
          const { createLineStateClient } = await import('../../../linestate/src/client.ts');
          const c = createLineStateClient(server.address);
          try {
            for (let i = 0; i < ngpio; i++) await c.setBias({ line: { chip: values.chip, line: { $case: 'offset', value: i } }, bias });
          } finally {
            c.close();
          }
        }
        console.log(`line-state API for ${values.chip} on ${server.address} (e.g. gpio-fabric get ${values.chip}:0 --server ${server.address})`);
      } else if (standalone) {
        agent = await startAgent({ socketPath: values.socket, chip: values.chip, ngpio, names, requestDeadlineMs: deadline, log, backend: { kind: 'standalone', bias: pullArg(values.pull) }, ...withMetrics });
      } else {
        agent = await startAgent({
          socketPath: values.socket, chip: values.chip, ngpio, names, requestDeadlineMs: deadline, log,
          backend: { kind: 'remote', server: serverAddress(values.server), ...(leaseTtl !== undefined ? { leaseTtlMs: leaseTtl } : {}), ...(tls !== undefined ? { tls } : {}) },
          ...withMetrics,
        });
      }
      const running = agent;
      const ms: MetricsServer | undefined = registry === undefined ? undefined : await startCommandMetrics(metricsAt, {
        registry,
        health: () => Promise.resolve(running.ready() ? true : `chip ${running.chip} is not registered with the line-state service`),
        log: (m) => log.warn(m),
      }).catch(async (e: unknown) => {
        await running.close();
        throw e;
      });
      if (ms !== undefined) {
        closers.unshift(() => ms.close());
        console.log(`metrics on http://${ms.address}/metrics`);
      }
    } catch (e) {
      for (const c of closers.reverse()) await c();
      throw e;
    }
    console.log(`agent ${values.chip}: ${ngpio} lines on ${agent.socketPath}`);
    if (values['print-qemu'] === true) console.log(`QEMU arguments:\n    ${qemuArgs(values.chip, agent.socketPath)}\n${QEMU_NOTE}`);
    const sig = await waitForSignal();
    log.info(`${sig}: shutting down`);
    await agent.close();
    for (const c of closers.reverse()) await c();
    return 0;
  },
};
