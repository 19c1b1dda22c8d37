/**
 * TLS / mutual TLS of the fabric's gRPC connections (docs/security.md): the shared
 * command-line options and environment variables, grpc-js credentials built from PEM
 * files, and the fabric identity carried by a client certificate.
 *
 * Files are read once, when a process starts (a renewed certificate takes effect on
 * restart). Without any TLS option every connection is plaintext, as before.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import { ChannelCredentials, ServerCredentials, type ChannelOptions } from '@grpc/grpc-js';
import { ConfigError } from './errors.ts';

/** Environment variables read when the matching flag is absent (how Kubernetes mounts secrets). */
export const TLS_ENV = {
  cert: 'GPIOFABRIC_TLS_CERT',
  key: 'GPIOFABRIC_TLS_KEY',
  ca: 'GPIOFABRIC_TLS_CA',
} as const;

/** node:util parseArgs options every gRPC-speaking command takes. */
export const tlsOptions = {
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-ca': { type: 'string' },
} as const;

/** --help text of the client side options. */
export const TLS_CLIENT_HELP = `  --tls-cert FILE   client certificate (PEM) for mutual TLS (default $${TLS_ENV.cert})
  --tls-key FILE    its private key (default $${TLS_ENV.key})
  --tls-ca FILE     CA certificate that signed the service's certificate; any TLS option
                    turns TLS on (default $${TLS_ENV.ca}; none of the three = plaintext)`;

/** --help text of the server side options. */
export const TLS_SERVER_HELP = `  --tls-cert FILE   serve TLS with this certificate (PEM; default $${TLS_ENV.cert})
  --tls-key FILE    its private key (default $${TLS_ENV.key})
  --tls-ca FILE     CA certificate of the clients: with it every client must present a
                    certificate signed by it, and RPCs are authorized by the identity in
                    that certificate (default $${TLS_ENV.ca}). See docs/security.md`;

/** Paths of the PEM files; all absent = plaintext. */
export interface TlsFiles {
  readonly cert?: string;
  readonly key?: string;
  readonly ca?: string;
}

/** A TLS option or file that cannot be used (a usage error for the CLI). */
export class TlsConfigError extends ConfigError {
  override readonly name = 'TlsConfigError';
}

type TlsFlagValues = { readonly 'tls-cert'?: string | undefined; readonly 'tls-key'?: string | undefined; readonly 'tls-ca'?: string | undefined };

/**
 * The TLS files from flags, falling back to the environment per file; undefined when
 * none is set. cert and key go together.
 */
export function tlsFilesFrom(values: TlsFlagValues, env: NodeJS.ProcessEnv = process.env): TlsFiles | undefined {
  const pick = (flag: string | undefined, name: string): string | undefined => {
    const v = flag ?? env[name];
    return v === undefined || v === '' ? undefined : v;
  };
  const cert = pick(values['tls-cert'], TLS_ENV.cert);
  const key = pick(values['tls-key'], TLS_ENV.key);
  const ca = pick(values['tls-ca'], TLS_ENV.ca);
  if (cert === undefined && key === undefined && ca === undefined) return undefined;
  if ((cert === undefined) !== (key === undefined)) {
    throw new TlsConfigError(`--tls-cert and --tls-key go together (${cert === undefined ? `key ${key ?? ''} without a certificate` : `certificate ${cert} without a key`})`);
  }
  return { ...(cert !== undefined ? { cert } : {}), ...(key !== undefined ? { key } : {}), ...(ca !== undefined ? { ca } : {}) };
}

function readPem(path: string, what: string): Buffer {
  let b: Buffer;
  try {
    b = readFileSync(path);
  } catch (e) {
    throw new TlsConfigError(`cannot read the TLS ${what} ${path}: ${(e as Error).message}`, { cause: e });
  }
  if (!b.includes('-----BEGIN ')) throw new TlsConfigError(`the TLS ${what} ${path} is not PEM (no -----BEGIN line)`);
  return b;
}

/** Server credentials: TLS with cert+key; with ca, client certificates signed by it are required. */
export function serverCredentials(files: TlsFiles | undefined): ServerCredentials {
  if (files === undefined) return ServerCredentials.createInsecure();
  if (files.cert === undefined || files.key === undefined) throw new TlsConfigError('serving TLS needs --tls-cert and --tls-key (and --tls-ca to require client certificates)');
  const pair = { cert_chain: readPem(files.cert, 'certificate'), private_key: readPem(files.key, 'key') };
  const ca = files.ca !== undefined ? readPem(files.ca, 'CA certificate') : null;
  try {
    return ServerCredentials.createSsl(ca, [pair], ca !== null);
  } catch (e) {
    throw new TlsConfigError(`TLS files ${files.cert} / ${files.key} are not usable: ${(e as Error).message}`, { cause: e });
  }
}

/** The host part of a gRPC target ("h:p", "[v6]:p", "dns:///h:p"). */
export function targetHost(address: string): string {
  const a = address.replace(/^dns:\/{0,3}/, '');
  if (a.startsWith('[')) return a.slice(1, Math.max(1, a.indexOf(']')));
  const i = a.lastIndexOf(':');
  return i < 0 ? a : a.slice(0, i);
}

/**
 * Channel credentials (and channel options) of a client of `address`: plaintext without
 * files, else TLS verifying the server against `ca` (system CAs without it), presenting a
 * client certificate when cert+key are given. For an IP-literal address the server
 * certificate must carry that IP as a SAN; the TLS SNI then carries a placeholder name
 * (Node deprecates IP addresses as SNI) and the identity check still uses the IP.
 */
export function channelCredentials(files: TlsFiles | undefined, address = ''): { credentials: ChannelCredentials; options: ChannelOptions } {
  if (files === undefined) return { credentials: ChannelCredentials.createInsecure(), options: {} };
  const ca = files.ca !== undefined ? readPem(files.ca, 'CA certificate') : null;
  const key = files.key !== undefined ? readPem(files.key, 'key') : null;
  const cert = files.cert !== undefined ? readPem(files.cert, 'certificate') : null;
  const host = targetHost(address);
  const ip = isIP(host) !== 0;
  try {
    const credentials = ChannelCredentials.createSsl(ca, key, cert, ip ? { checkServerIdentity: (_h, c) => checkServerIdentity(host, c) } : {});
    return { credentials, options: ip ? { 'grpc.ssl_target_name_override': 'ip-address.gpiofabric.invalid' } : {} };
  } catch (e) {
    throw new TlsConfigError(`TLS files are not usable: ${(e as Error).message}`, { cause: e });
  }
}

/** True when a listen address is only reachable from this machine. */
export function isLoopbackListen(listen: string): boolean {
  const host = listen.slice(0, listen.lastIndexOf(':')).replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\./.test(host) || host.startsWith('unix:');
}

// ---- identities -------------------------------------------------------------------

/** URI SAN scheme of fabric identities: gpiofabric:<role>:<name>. */
export const IDENTITY_SCHEME = 'gpiofabric';
export const Role = { AGENT: 'agent', OPERATOR: 'operator', WATCHER: 'watcher' } as const;
export type Role = (typeof Role)[keyof typeof Role];

/**
 * The fabric identity of a client certificate. An agent identity names the chips it may
 * serve (a trailing `*` matches any chip id with that prefix; `*` alone, every chip).
 */
export interface Principal {
  /** Short description for messages and logs, e.g. `agent "vm-a"` or `operator "alice"`. */
  readonly display: string;
  readonly agentChips: readonly string[];
  readonly operators: readonly string[];
  readonly watchers: readonly string[];
}

const NAME = /^[A-Za-z0-9._*-]{1,64}$/;

/** URIs of a certificate's subjectAltName string ("URI:a, DNS:b, ..."). */
export function sanUris(subjectaltname: string | undefined): string[] {
  if (subjectaltname === undefined || subjectaltname === '') return [];
  // node's format: comma-space separated "TYPE:value"; values with commas are quoted JSON.
  const out: string[] = [];
  const re = /(?:^|, )URI:("(?:[^"\\]|\\.)*"|[^,]*)/g;
  for (let m = re.exec(subjectaltname); m !== null; m = re.exec(subjectaltname)) {
    const v = m[1] ?? '';
    out.push(v.startsWith('"') ? (JSON.parse(v) as string) : v);
  }
  return out;
}

/** The principal of a peer certificate, from its `gpiofabric:<role>:<name>` URI SANs (others ignored). */
export function principalOf(cert: Pick<PeerCertificate, 'subjectaltname' | 'subject'> | undefined): Principal {
  const agentChips: string[] = [];
  const operators: string[] = [];
  const watchers: string[] = [];
  for (const uri of sanUris(cert?.subjectaltname)) {
    const parts = uri.split(':');
    if (parts.length !== 3 || parts[0] !== IDENTITY_SCHEME) continue;
    const name = parts[2] ?? '';
    if (!NAME.test(name)) continue;
    if (parts[1] === Role.AGENT) agentChips.push(name);
    else if (parts[1] === Role.OPERATOR) operators.push(name);
    else if (parts[1] === Role.WATCHER) watchers.push(name);
  }
  const parts: string[] = [];
  if (operators.length > 0) parts.push(`operator "${operators.join(',')}"`);
  if (agentChips.length > 0) parts.push(`agent "${agentChips.join(',')}"`);
  if (watchers.length > 0) parts.push(`watcher "${watchers.join(',')}"`);
  const cn = cert?.subject?.CN;
  const display = parts.length > 0 ? parts.join(' + ') : `certificate "${Array.isArray(cn) ? cn.join(',') : (cn ?? '?')}" (no gpiofabric identity)`;
  return { display, agentChips, operators, watchers };
}

/** True when an agent identity covers `chip`. */
export function agentMayServe(p: Principal, chip: string): boolean {
  return p.agentChips.some((c) => (c.endsWith('*') ? chip.startsWith(c.slice(0, -1)) : c === chip));
}

/** Hide the password of a URL (redis://user:secret@host -> redis://user:***@host); other text unchanged. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)([^@/]*)@/i, (_m, scheme: string, auth: string) => {
    const i = auth.indexOf(':');
    return i < 0 ? `${scheme}***@` : `${scheme}${auth.slice(0, i)}:***@`;
  });
}
