/**
 * Redis connection security for `serve` and `up` (docs/security.md): TLS options for
 * ioredis from --redis-tls-* / env, and start-up errors that never carry the URL's
 * password.
 */
import { readFileSync } from 'node:fs';
import { ErrorCode, FabricError, isFabricError } from '../../common/src/errors.ts';
import { redactUrl } from '../../common/src/tls.ts';
import { UsageError } from './command.ts';

/** Env fallbacks of the --redis-tls-* flags. */
export const REDIS_TLS_ENV = {
  ca: 'GPIOFABRIC_REDIS_TLS_CA',
  cert: 'GPIOFABRIC_REDIS_TLS_CERT',
  key: 'GPIOFABRIC_REDIS_TLS_KEY',
} as const;

type Flags = { readonly 'redis-tls-ca'?: string | undefined; readonly 'redis-tls-cert'?: string | undefined; readonly 'redis-tls-key'?: string | undefined };

function read(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new UsageError(`cannot read the Redis TLS ${what} ${path}: ${(e as Error).message}`);
  }
}

/**
 * ioredis `tls` options from the flags (env fallback), or {} when none is set. They need a
 * rediss:// URL (a redis:// URL with them is a usage error, so TLS is never half-configured).
 */
export function redisTlsOptions(values: Flags, url: string | undefined, env: NodeJS.ProcessEnv = process.env): { tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer } } {
  const pick = (flag: string | undefined, name: string): string | undefined => {
    const v = flag ?? env[name];
    return v === undefined || v === '' ? undefined : v;
  };
  const ca = pick(values['redis-tls-ca'], REDIS_TLS_ENV.ca);
  const cert = pick(values['redis-tls-cert'], REDIS_TLS_ENV.cert);
  const key = pick(values['redis-tls-key'], REDIS_TLS_ENV.key);
  if (ca === undefined && cert === undefined && key === undefined) return {};
  if (url === undefined) throw new UsageError('--redis-tls-* need --redis rediss://HOST:PORT');
  if (!/^rediss:\/\//i.test(url)) throw new UsageError(`--redis-tls-* need a rediss:// URL (TLS), not ${redactUrl(url).replace(/^([a-z]+:\/\/).*$/i, '$1...')}`);
  if ((cert === undefined) !== (key === undefined)) throw new UsageError('--redis-tls-cert and --redis-tls-key go together');
  return {
    tls: {
      ...(ca !== undefined ? { ca: read(ca, 'CA certificate') } : {}),
      ...(cert !== undefined ? { cert: read(cert, 'certificate') } : {}),
      ...(key !== undefined ? { key: read(key, 'key') } : {}),
    },
  };
}

/** The password (decoded and raw) of a URL, or undefined. */
function passwordOf(url: string): string[] {
  try {
    const u = new URL(url);
    const out = [u.password, decodeURIComponent(u.password), u.username, decodeURIComponent(u.username)].filter((x) => x.length >= 1);
    // a user name alone (redis://secret@host) is how some clients send a password
    return u.password === '' ? out : out.slice(0, 2);
  } catch {
    return [];
  }
}

/** `text` with every occurrence of the URL's password replaced by ***. */
export function redactPassword(text: string, url: string): string {
  let out = text.split(url).join(redactUrl(url));
  for (const p of passwordOf(url).sort((a, b) => b.length - a.length)) out = out.split(p).join('***');
  return out;
}

/**
 * A Redis start-up failure as a FabricError naming the (redacted) URL; the password never
 * appears. The original error is deliberately not kept as `cause`: an ioredis ReplyError
 * of AUTH carries the command's arguments, i.e. the password.
 */
export function redisConnectError(e: unknown, url: string): FabricError {
  const msg = e instanceof Error ? e.message : String(e);
  const code = /WRONGPASS|NOAUTH|NOPERM/i.test(msg) ? ErrorCode.PERMISSION_DENIED : isFabricError(e) ? e.code : ErrorCode.UNAVAILABLE;
  let hint = '';
  if (/WRONGPASS|invalid password|invalid username-password/i.test(msg)) hint = ' (wrong user name or password in the URL)';
  else if (/NOAUTH/i.test(msg)) hint = ' (the server requires a password: redis://:PASSWORD@host or redis://USER:PASSWORD@host)';
  else if (/self[- ]signed|unable to (get|verify)|certificate/i.test(msg)) hint = ' (check --redis-tls-ca)';
  return new FabricError(code, `cannot use Redis at ${redactUrl(url)}: ${redactPassword(msg, url)}${hint}`);
}
