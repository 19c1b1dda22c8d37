/**
 * Shared set-up of the security tests: certificates made by `gpio-fabric certs` (the real
 * openssl), CLI processes, and /metrics scraping.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { command as certs } from '../../services/cli/src/commands/certs.ts';
import type { TlsFiles } from '../../services/common/src/tls.ts';

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
