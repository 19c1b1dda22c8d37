import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { UsageError, type Command } from '../command.ts';
import { parse } from '../operator.ts';
import { IDENTITY_SCHEME, Role } from '../../../common/src/tls.ts';

const run = promisify(execFile);

/** Names of identities: chip ids / operator names (a trailing * in agent chips = prefix). */
const IDENT = /^[A-Za-z0-9._-]{1,64}$/;
const AGENT_CHIP = /^(?:[A-Za-z0-9._-]{1,63}\*?|[A-Za-z0-9._-]{64}|\*)$/;
const HOST = /^[A-Za-z0-9.:*-]{1,253}$/;

/** One certificate to issue. */
export interface CertSpec {
  /** File stem in the output directory ("server", "agent-vm-a", ...). */
  readonly file: string;
  readonly cn: string;
  /** subjectAltName entries, e.g. "DNS:localhost", "URI:gpiofabric:agent:vm-a". */
  readonly san: readonly string[];
  readonly usage: 'serverAuth' | 'clientAuth';
}

/** The certificates `certs` issues for these arguments (pure; tested without openssl). */
export function certPlan(o: { hosts: readonly string[]; agents: readonly string[]; operators: readonly string[]; watchers: readonly string[] }): CertSpec[] {
  const hosts = o.hosts.length > 0 ? o.hosts : ['localhost', '127.0.0.1'];
  const plan: CertSpec[] = [{
    file: 'server', cn: hosts[0] ?? 'localhost', usage: 'serverAuth',
    san: hosts.map((h) => (isIP(h) !== 0 ? `IP:${h}` : `DNS:${h}`)),
  }];
  const stem = (s: string): string => s.replace(/\*/g, 'all');
  for (const c of o.agents) plan.push({ file: `agent-${stem(c)}`, cn: `agent ${c}`, usage: 'clientAuth', san: [`URI:${IDENTITY_SCHEME}:${Role.AGENT}:${c}`] });
  for (const n of o.operators) plan.push({ file: `operator-${n}`, cn: `operator ${n}`, usage: 'clientAuth', san: [`URI:${IDENTITY_SCHEME}:${Role.OPERATOR}:${n}`] });
  for (const n of o.watchers) plan.push({ file: `watcher-${n}`, cn: `watcher ${n}`, usage: 'clientAuth', san: [`URI:${IDENTITY_SCHEME}:${Role.WATCHER}:${n}`] });
  const seen = new Set<string>();
  for (const p of plan) {
    if (seen.has(p.file)) throw new UsageError(`two certificates would be written to ${p.file}.crt (a name given twice?)`);
    seen.add(p.file);
  }
  return plan;
}

async function openssl(args: readonly string[]): Promise<void> {
  try {
    await run('openssl', [...args], { maxBuffer: 1 << 20 });
  } catch (e) {
    const err = e as { code?: unknown; stderr?: string; message: string };
    if (err.code === 'ENOENT') throw new Error('the openssl program is not installed (Debian: apt-get install openssl)', { cause: e });
    throw new Error(`openssl ${args[0] ?? ''} failed: ${(err.stderr ?? err.message).trim()}`, { cause: e });
  }
}

const KEY_ARGS = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** `gpio-fabric certs`: a development CA and certificates for the fabric's mTLS. */
export const command: Command = {
  summary: 'create a development CA, a server certificate and client certificates (needs openssl)',
  help: `Usage: gpio-fabric certs --out DIR [--server-host H]... [--agent CHIP]... [--operator NAME]...
                         [--watcher NAME]... [--days N]

Creates, with the openssl program, what mutual TLS between agents, operators and the
line-state service needs (docs/security.md):
  DIR/ca.crt, ca.key              a CA (reused when DIR already has one, so more client
                                  certificates can be added later)
  DIR/server.crt, server.key      the service's certificate (SANs: the --server-host names)
  DIR/agent-CHIP.crt, .key        identity gpiofabric:agent:CHIP (may serve that chip)
  DIR/operator-NAME.crt, .key     identity gpiofabric:operator:NAME (everything)
  DIR/watcher-NAME.crt, .key      identity gpiofabric:watcher:NAME (read-only)
Keys are EC P-256, mode 0600. For development and tests: keep ca.key out of reach, or
use your own PKI (any CA works if the client certificates carry the URI SANs).

Options:
  --out DIR          output directory (created, mode 0700)
  --server-host H    a DNS name or IP address clients use to reach the service (repeat;
                     default localhost and 127.0.0.1)
  --agent CHIP       an agent certificate for chip CHIP (repeat; CHIP may end in * to
                     cover every chip id with that prefix, e.g. 'node1-*', or be '*')
  --operator NAME    an operator certificate (repeat)
  --watcher NAME     a watcher certificate (repeat)
  --days N           validity in days (default 365)`,
  async run(argv) {
    const { values } = parse(argv, {
      out: { type: 'string' }, 'server-host': { type: 'string', multiple: true }, agent: { type: 'string', multiple: true },
      operator: { type: 'string', multiple: true }, watcher: { type: 'string', multiple: true }, days: { type: 'string' },
    }, { min: 0, max: 0, what: 'no positional arguments' });
    if (values.out === undefined || values.out === '') throw new UsageError('--out DIR is required');
    const days = values.days ?? '365';
    if (!/^[0-9]{1,5}$/.test(days) || Number(days) < 1 || Number(days) > 36500) throw new UsageError(`--days must be a whole number from 1 to 36500, not "${days}"`);
    const hosts = values['server-host'] ?? [];
    for (const h of hosts) if (!HOST.test(h)) throw new UsageError(`--server-host "${h}" is not a DNS name or IP address`);
    const agents = values.agent ?? [];
    for (const c of agents) if (!AGENT_CHIP.test(c)) throw new UsageError(`--agent "${c}" must be a chip id (1-64 of A-Z a-z 0-9 . _ -), optionally ending in *`);
    const operators = values.operator ?? [];
    const watchers = values.watcher ?? [];
    for (const n of [...operators, ...watchers]) if (!IDENT.test(n)) throw new UsageError(`"${n}" must be 1-64 characters of A-Z a-z 0-9 . _ -`);
    const plan = certPlan({ hosts, agents, operators, watchers });

    const dir = resolve(values.out);
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
    } catch (e) {
      throw new UsageError(`cannot create ${dir}: ${(e as Error).message}`);
    }
    const f = (name: string): string => join(dir, name);
    const made: string[] = [];
    const caReused = existsSync(f('ca.crt')) && existsSync(f('ca.key'));
    if (!caReused) {
      await openssl(['req', '-x509', ...KEY_ARGS, '-keyout', f('ca.key'), '-out', f('ca.crt'), '-days', days, '-subj', '/CN=gpio-fabric development CA',
        '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
      chmodSync(f('ca.key'), 0o600);
      made.push(`${f('ca.crt')}  CA certificate (give it to everyone as --tls-ca)`, `${f('ca.key')}  CA key (keep private)`);
    } else {
      made.push(`${f('ca.crt')}  existing CA reused`);
    }
    for (const p of plan) {
      const ext = f(`${p.file}.ext`);
      const csr = f(`${p.file}.csr`);
      writeFileSync(ext, [
        'basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', `extendedKeyUsage=${p.usage}`,
        `subjectAltName=${p.san.join(',')}`, '',
      ].join('\n'));
      try {
        await openssl(['req', '-new', ...KEY_ARGS, '-keyout', f(`${p.file}.key`), '-out', csr, '-subj', `/CN=${p.cn.replace(/[/\\]/g, '_')}`]);
        chmodSync(f(`${p.file}.key`), 0o600);
        await openssl(['x509', '-req', '-in', csr, '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-set_serial', `0x${randomSerial()}`,
          '-days', days, '-extfile', ext, '-out', f(`${p.file}.crt`)]);
      } finally {
        rmSync(ext, { force: true });
        rmSync(csr, { force: true });
      }
      made.push(`${f(`${p.file}.crt`)}, .key  ${p.usage === 'serverAuth' ? 'server' : 'client'} certificate: ${p.san.join(', ')}`);
    }
    const out = [`Wrote (valid ${days} days):`, ...made.map((m) => `  ${m}`), '', 'Use:'];
    out.push(`  gpio-fabric serve --tls-cert ${f('server.crt')} --tls-key ${f('server.key')} --tls-ca ${f('ca.crt')} ...`);
    for (const p of plan.filter((x) => x.usage === 'clientAuth')) {
      const what = p.file.startsWith('agent-') ? 'gpio-fabric agent --chip CHIP' : p.file.startsWith('operator-') ? 'gpio-fabric ls' : 'gpio-fabric watch';
      out.push(`  ${what} --tls-cert ${f(`${p.file}.crt`)} --tls-key ${f(`${p.file}.key`)} --tls-ca ${f('ca.crt')} ...`);
    }
    out.push(`  (or set GPIOFABRIC_TLS_CERT, GPIOFABRIC_TLS_KEY and GPIOFABRIC_TLS_CA). See docs/security.md.`);
    console.log(out.join('\n'));
    return 0;
  },
};

function randomSerial(): string {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  b[0] = (b[0] ?? 0) & 0x7f; // positive
  return Buffer.from(b).toString('hex');
}
