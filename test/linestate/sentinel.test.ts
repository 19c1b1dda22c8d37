/**
 * `gpio-fabric serve` finding its Redis primary through a real Redis Sentinel (the
 * Helm chart's external Redis with Sentinel passes --redis-sentinels/--redis-sentinel-name
 * as GPIOFABRIC_REDIS_SENTINELS / GPIOFABRIC_REDIS_SENTINEL_NAME).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLineStateClient } from '../../services/linestate/src/client.ts';
import { freePort, startRedis } from '../support/redis.ts';
import { Cleanup, startProc, until } from '../faults/support.ts';

test('serve reaches Redis through Sentinel (flags and environment)', async () => {
  const c = new Cleanup();
  try {
    const primary = await startRedis({ appendonly: false });
    c.defer('redis', () => primary.stop());
    if (primary.kind !== 'spawned') throw new Error('this test needs a spawned redis-server (unset REDIS_URL)');
    const dir = c.tempDir('gf-sentinel-');
    const sport = await freePort();
    const conf = join(dir, 'sentinel.conf');
    writeFileSync(conf, [`port ${sport}`, 'bind 127.0.0.1', `dir ${dir}`, `sentinel monitor gfprimary 127.0.0.1 ${primary.port} 1`, 'sentinel down-after-milliseconds gfprimary 5000', ''].join('\n'));
    // redis-server runs as a Sentinel with --sentinel (Debian's redis-sentinel is that binary).
    const sentinel = spawn('redis-server', [conf, '--sentinel'], { stdio: 'ignore' });
    c.defer('sentinel', () => new Promise<void>((r) => { if (sentinel.exitCode !== null) r(); else { sentinel.once('exit', () => r()); sentinel.kill('SIGKILL'); } }));
    await until('sentinel knows the primary', () => {
      const r = spawnSync('redis-cli', ['-p', String(sport), 'SENTINEL', 'get-master-addr-by-name', 'gfprimary'], { encoding: 'utf8' });
      return r.status === 0 && r.stdout.includes(String(primary.port));
    }, 15_000, 100);

    // The URL's host:port is deliberately wrong: only Sentinel can lead to the primary.
    const viaFlags = await startProc('serve-flags', ['serve', '--redis', 'redis://127.0.0.1:1/0', '--redis-sentinels', `127.0.0.1:${sport}`, '--redis-sentinel-name', 'gfprimary', '--fabric', 'sent', '--listen', '127.0.0.1:0', '--metrics', 'off'], /listening on (\S+)/);
    c.defer('serve-flags', () => viaFlags.stop());
    const viaEnv = await startProc('serve-env', ['serve', '--fabric', 'sent', '--listen', '127.0.0.1:0', '--metrics', 'off'], /listening on (\S+)/, {
      GPIOFABRIC_REDIS: 'redis://127.0.0.1:1/0', GPIOFABRIC_REDIS_SENTINELS: `127.0.0.1:${sport}`, GPIOFABRIC_REDIS_SENTINEL_NAME: 'gfprimary',
    });
    c.defer('serve-env', () => viaEnv.stop());
    const a = createLineStateClient(viaFlags.match[1] as string);
    const b = createLineStateClient(viaEnv.match[1] as string);
    c.defer('clients', () => { a.close(); b.close(); });
    const reg = await a.registerChip({ chip: 'vm-s', ngpio: 4, names: [], owner: 'test', leaseTtlMs: 0 });
    await a.lineOp({ chip: 'vm-s', leaseToken: reg.leaseToken, op: 5, offset: 1, value: 1 });
    await a.lineOp({ chip: 'vm-s', leaseToken: reg.leaseToken, op: 3, offset: 1, value: 1 });
    // The other replica (configured by environment) sees the same fabric in the same Redis.
    const line = await b.getLine({ line: { chip: 'vm-s', line: { $case: 'offset', value: 1 } } });
    assert.equal(line.level, 1);
    const keys = spawnSync('redis-cli', ['-p', String(primary.port), '--scan', '--pattern', 'gf:{sent}:*'], { encoding: 'utf8' });
    assert.ok(keys.stdout.trim().length > 0, 'the fabric lives in the primary Sentinel named');
  } finally {
    await c.run();
  }
});

test('serve: Sentinel flags are checked before anything starts', () => {
  const run = (...args: string[]) => spawnSync(process.execPath, ['bin/gpio-fabric.mjs', 'serve', ...args], { encoding: 'utf8', timeout: 30_000 });
  const cases: [string[], RegExp][] = [
    [['--redis-sentinels', '127.0.0.1:26379', '--redis-sentinel-name', 'm'], /needs --redis URL/],
    [['--redis', 'redis://x:1', '--redis-sentinels', '127.0.0.1:26379'], /go together/],
    [['--redis', 'redis://x:1', '--redis-sentinels', 'nohost', '--redis-sentinel-name', 'm'], /"nohost" is not HOST:PORT/],
    [['--redis', 'redis://x:1', '--redis-sentinels', 'h:1', '--redis-sentinel-name', 'bad name'], /--redis-sentinel-name must be/],
  ];
  for (const [args, re] of cases) {
    const r = run(...args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re);
  }
});
