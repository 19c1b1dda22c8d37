/**
 * Redis secrets with real servers: requirepass (right, wrong and missing passwords, an
 * ACL user), a TLS redis-server with certificates from `gpio-fabric certs`, and serve /
 * up output that never contains the password.
 */
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { freePort, startRedis, type RedisHandle } from '../support/redis.ts';
import { createLineStateClient } from '../../services/linestate/src/client.ts';
import { BIN, makeCerts, startProc, type FabricProc } from './support.ts';

const PASSWORD = 'Pw-9f3c2a7e-secret';
let dir = '';
const procs: FabricProc[] = [];
const tmp = mkdtempSync(join(tmpdir(), 'gf-sec-'));

/** Run the CLI to completion; exit code and both outputs. */
const runCli = (args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; out: string }> => new Promise((resolve) => {
  execFile(process.execPath, [BIN, ...args], { timeout: 30_000, env: { ...process.env, ...env } }, (err, stdout, stderr) => {
    resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, out: `${stdout}${stderr}` });
  });
});

before(async () => {
  dir = await makeCerts([]);
});
after(async () => {
  for (const p of procs.reverse()) await p.kill();
  rmSync(tmp, { recursive: true, force: true });
  rmSync(dir, { recursive: true, force: true });
});

describe('Redis secrets', () => {
  let redis: RedisHandle;
  before(async () => {
    redis = await startRedis({ password: PASSWORD });
  });
  after(async () => {
    await redis.stop();
  });
  it('the right password works; serve and up never print it', async () => {
    assert.ok(redis.url.includes(PASSWORD));
    const s = await startProc('serve-redis', ['serve', '--redis', redis.url, '--fabric', 'sec', '--listen', '127.0.0.1:0', '--metrics', '127.0.0.1:0'], /metrics on (\S+)/, { GPIOFABRIC_LOG: 'debug' });
    procs.push(s);
    const metricsUrl = s.match[1]!;
    const text = await (await fetch(metricsUrl)).text();
    assert.ok(!text.includes(PASSWORD));
    await s.stop();
    const u = await startProc('up-redis', ['up', '--vms', 'vm-p,vm-q', '--dir', join(tmp, 'up'), '--listen', '127.0.0.1:0', '--redis', redis.url, '--fabric', 'sec2', '--metrics', 'off'], /Ctrl-C stops the fabric/, { GPIOFABRIC_LOG: 'debug' });
    procs.push(u);
    await u.stop();
    for (const out of [s.output(), u.output()]) {
      assert.ok(!out.includes(PASSWORD), out);
      assert.ok(!out.includes(encodeURIComponent(PASSWORD)), out);
    }
    assert.match(u.output(), /Redis redis:\/\/:\*\*\*@127\.0\.0\.1:\d+/);
  });
  it('a wrong or missing password is a clear start-up error without the password', async () => {
    const wrong = redis.url.replace(encodeURIComponent(PASSWORD), 'Wrong-Pw-1234');
    const r = await runCli(['serve', '--redis', wrong, '--listen', '127.0.0.1:0', '--metrics', 'off']);
    assert.equal(r.code, 1);
    assert.match(r.out, /PERMISSION_DENIED: cannot use Redis at redis:\/\/:\*\*\*@127\.0\.0\.1:\d+: .*wrong user name or password/);
    assert.ok(!r.out.includes('Wrong-Pw-1234') && !r.out.includes(PASSWORD), r.out);
    const none = await runCli(['serve', '--redis', `redis://127.0.0.1:${redis.port}`, '--listen', '127.0.0.1:0', '--metrics', 'off']);
    assert.equal(none.code, 1);
    assert.match(none.out, /the server requires a password/);
    const acl = await runCli(['up', '--redis', redis.url.replace('redis://:', 'redis://nobody:'), '--listen', '127.0.0.1:0', '--dir', join(tmp, 'up2'), '--metrics', 'off']);
    assert.equal(acl.code, 1);
    assert.ok(!acl.out.includes(PASSWORD), acl.out);
    assert.match(acl.out, /redis:\/\/nobody:\*\*\*@/);
  });
});

describe('TLS Redis', () => {
  it('serve reaches a TLS redis-server with --redis-tls-ca (and a password); without the CA it fails clearly', async () => {
    const port = await freePort();
    const rdir = mkdtempSync(join(tmpdir(), 'gf-rtls-'));
    const proc = spawn('redis-server', [
      '--port', '0', '--tls-port', String(port), '--bind', '127.0.0.1', '--dir', rdir, '--save', '', '--appendonly', 'no',
      '--tls-cert-file', join(dir, 'server.crt'), '--tls-key-file', join(dir, 'server.key'), '--tls-ca-cert-file', join(dir, 'ca.crt'),
      '--tls-auth-clients', 'no', '--requirepass', PASSWORD, '--loglevel', 'warning',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    try {
      const url = `rediss://:${PASSWORD}@127.0.0.1:${port}`;
      let s: FabricProc | undefined;
      for (let i = 0; i < 50 && s === undefined; i++) {
        try {
          s = await startProc('serve-rtls', ['serve', '--redis', url, '--redis-tls-ca', join(dir, 'ca.crt'), '--fabric', 'tls', '--listen', '127.0.0.1:0', '--metrics', 'off'], /listening on (\S+) \(store: redis/);
        } catch (e) {
          if (i === 49 || !/ECONNREFUSED/.test(String(e))) throw e;
          await new Promise((r) => setTimeout(r, 100)); // redis-server still starting
        }
      }
      procs.push(s!);
      const c = createLineStateClient(s!.match[1]!);
      try {
        assert.deepEqual(await c.listChips(), []);
      } finally {
        c.close();
      }
      await s!.stop();
      assert.ok(!s!.output().includes(PASSWORD));
      const noCa = await runCli(['serve', '--redis', url, '--listen', '127.0.0.1:0', '--metrics', 'off']);
      assert.equal(noCa.code, 1);
      assert.match(noCa.out, /cannot use Redis at rediss:\/\/:\*\*\*@.*(self[- ]signed|unable to (get|verify)|certificate).*check --redis-tls-ca/);
      assert.ok(!noCa.out.includes(PASSWORD));
      const plainUrl = await runCli(['serve', '--redis', `redis://:${PASSWORD}@127.0.0.1:${port}`, '--redis-tls-ca', join(dir, 'ca.crt'), '--listen', '127.0.0.1:0', '--metrics', 'off']);
      assert.equal(plainUrl.code, 2);
      assert.ok(!plainUrl.out.includes(PASSWORD));
    } finally {
      proc.kill('SIGKILL');
      await exited;
      rmSync(rdir, { recursive: true, force: true });
    }
  });
});
