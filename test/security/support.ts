/**
 * Shared set-up of the security tests: certificates made by `gpio-fabric certs` (the real
 * openssl), CLI processes, and /metrics scraping.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Registry } from 'prom-client';
import { command as certs } from '../../services/cli/src/commands/certs.ts';
import { createMetricsRegistry } from '../../services/common/src/metrics.ts';
import type { TlsFiles } from '../../services/common/src/tls.ts';
import { createLineStateClient, type LineStateClient } from '../../services/linestate/src/client.ts';
import { lineStateMetrics } from '../../services/linestate/src/metrics.ts';
import { startLineStateServer, type LineStateServer } from '../../services/linestate/src/server.ts';
import { createMemoryStore } from '../../services/linestate/src/store/memory-store.ts';
import type { LineStore } from '../../services/linestate/src/store/store.ts';

export { BIN, startProc, type FabricProc } from '../faults/support.ts';

/** Run `gpio-fabric certs` in-process (its stdout is swallowed) and return the directory. */
export async function makeCerts(args: readonly string[], dir = mkdtempSync(join(tmpdir(), 'gf-certs-'))): Promise<string> {
  const log = console.log;
  console.log = () => {};
  try {
    const rc = await certs.run(['--out', dir, ...args]);
    if (rc !== 0) throw new Error(`certs exited ${rc}`);
  } finally {
    console.log = log;
  }
  return dir;
}

/** The client TLS files of a certificate made by makeCerts (file stem e.g. "operator-alice"). */
export const clientFiles = (dir: string, stem: string, caDir = dir): TlsFiles => ({ cert: join(dir, `${stem}.crt`), key: join(dir, `${stem}.key`), ca: join(caDir, 'ca.crt') });
export const serverFiles = (dir: string): TlsFiles => ({ cert: join(dir, 'server.crt'), key: join(dir, 'server.key'), ca: join(dir, 'ca.crt') });

/** CLI flags of TLS files. */
export const tlsArgs = (f: TlsFiles): string[] => [
  ...(f.cert !== undefined ? ['--tls-cert', f.cert] : []), ...(f.key !== undefined ? ['--tls-key', f.key] : []), ...(f.ca !== undefined ? ['--tls-ca', f.ca] : []),
];

/** subjectAltName of a certificate as openssl prints it. */
export function opensslSan(file: string): string {
  return execFileSync('openssl', ['x509', '-noout', '-ext', 'subjectAltName', '-in', file], { encoding: 'utf8' });
}

/** The value of one sample in a Prometheus text exposition (0 when absent). */
export function sample(text: string, name: string, labels: Record<string, string>): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const body = line.slice(name.length + 1, line.indexOf('}'));
    const got = Object.fromEntries([...body.matchAll(/([a-z_]+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return 0;
}

/** The identities of startMtlsFabric's clients. */
export type Role = 'agent-vm-a' | 'agent-vm-b' | 'watcher-bob' | 'operator-alice';

/** A service requiring client certificates, with one client per Role and the agents' chips registered. */
export interface MtlsFabric {
  readonly store: LineStore;
  readonly registry: Registry;
  readonly server: LineStateServer;
  readonly as: ReadonlyMap<Role, LineStateClient>;
  /** Lease tokens of vm-a and vm-b (4 lines each), registered by their agents. */
  readonly tokens: { readonly a: string; readonly b: string };
  close(): Promise<void>;
}

/** A memory-store service with metrics and mutual TLS on an ephemeral port, and a client per Role. */
export async function startMtlsFabric(): Promise<MtlsFabric> {
  const dir = await makeCerts(['--agent', 'vm-a', '--agent', 'vm-b', '--operator', 'alice', '--watcher', 'bob']);
  const store = createMemoryStore();
  const registry = createMetricsRegistry();
  const metrics = lineStateMetrics({ registry, store, storeKind: 'memory' });
  const server = await startLineStateServer({ store, listen: '127.0.0.1:0', metrics, log: () => {}, tls: serverFiles(dir) });
  if (!server.authorizing) throw new Error('the server does not require client certificates');
  const as = new Map<Role, LineStateClient>();
  for (const r of ['agent-vm-a', 'agent-vm-b', 'watcher-bob', 'operator-alice'] as const) {
    as.set(r, createLineStateClient(server.address, { deadlineMs: 5000, tls: clientFiles(dir, r) }));
  }
  const reg = (role: Role, chip: string): Promise<string> =>
    as.get(role)!.registerChip({ chip, ngpio: 4, names: [], owner: 't', leaseTtlMs: 60_000 }).then((r) => r.leaseToken);
  const tokens = { a: await reg('agent-vm-a', 'vm-a'), b: await reg('agent-vm-b', 'vm-b') };
  return {
    store, registry, server, as, tokens,
    close: async () => {
      for (const c of as.values()) c.close();
      await server.close();
      await store.close();
    },
  };
}
