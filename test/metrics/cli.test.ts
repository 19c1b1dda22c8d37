/**
 * The --metrics flag of `serve`, `agent` and `up` as a user runs them: real processes,
 * their printed metrics address scraped over HTTP, /healthz in both states, bad values
 * refused as usage errors.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { freePort } from '../support/redis.ts';
import { httpGet, parseExposition } from './exposition.ts';
import { startProc as startFabricProc, type FabricProc } from '../faults/support.ts';

const BIN = 'bin/gpio-fabric.mjs';
const METRICS_LINE = /metrics on http:\/\/(127\.0\.0\.1:\d+)\/metrics/;

function cli(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Start a long-running gpio-fabric command; resolves once stdout matches `ready`. */
const startProc = (args: string[], ready: RegExp): Promise<FabricProc> => startFabricProc(args[0] ?? 'gpio-fabric', args, ready);
const stop = (p: FabricProc): Promise<number | null> => p.stop();

test('invalid --metrics values are usage errors (exit 2)', () => {
  for (const args of [
    ['serve', '--metrics', 'nope'],
    ['serve', '--metrics', '127.0.0.1:70000'],
    ['up', '--metrics', ':9464'],
    ['agent', '--socket', '/tmp/gf-m.sock', '--chip', 'a', '--lines', '2', '--standalone', '--metrics', 'localhost'],
  ]) {
    const r = cli(...args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /--metrics must be HOST:PORT/);
  }
  for (const cmd of ['serve', 'agent', 'up']) assert.match(cli(cmd, '--help').stdout, /--metrics ADDR/, `${cmd} --help`);
});

test('serve --metrics: the line-state series and /healthz on the printed address; SIGTERM exits 0', async () => {
  const served = await startProc(['serve', '--listen', '127.0.0.1:0', '--metrics', '127.0.0.1:0'], METRICS_LINE);
  try {
    const addr = served.match[1]!;
    const m = await httpGet(addr, '/metrics');
    assert.equal(m.status, 200);
    const e = parseExposition(m.body);
    assert.equal(e.types.get('gpiofabric_linestate_rpcs_total'), 'counter');
    assert.ok(e.has('gpiofabric_linestate_store_duration_seconds_bucket', { op: 'lineOp', store: 'memory' }));
    assert.equal(e.types.get('gpiofabric_agent_requests_total'), undefined, 'no agent in this process');
    assert.deepEqual(await httpGet(addr, '/healthz').then((r) => [r.status, r.body]), [200, 'ok\n']);
  } finally {
    assert.equal(await stop(served), 0);
  }
});

test('agent --metrics: standalone is healthy; a remote agent without a service is 503 until registered', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gf-metrics-'));
  try {
    const solo = await startProc(['agent', '--standalone', '--socket', join(dir, 'a.sock'), '--chip', 'vm-c', '--lines', '2', '--metrics', '127.0.0.1:0'], METRICS_LINE);
    try {
      const addr = solo.match[1]!;
      const e = parseExposition((await httpGet(addr, '/metrics')).body);
      assert.equal(e.value('gpiofabric_agent_requests_total', { chip: 'vm-c', type: 'SET_VALUE', outcome: 'ok' }), 0);
      assert.equal(e.value('gpiofabric_agent_frontend_connected', { chip: 'vm-c' }), 0);
      assert.equal((await httpGet(addr, '/healthz')).status, 200);
    } finally {
      assert.equal(await stop(solo), 0);
    }
    // nothing listens on this port: registration keeps failing
    const dead = `127.0.0.1:${await freePort()}`;
    const remote = await startProc(['agent', '--socket', join(dir, 'b.sock'), '--chip', 'vm-d', '--lines', '2', '--server', dead, '--metrics', '127.0.0.1:0'], METRICS_LINE);
    try {
      const addr = remote.match[1]!;
      const h = await httpGet(addr, '/healthz');
      assert.equal(h.status, 503);
      assert.match(h.body, /vm-d is not registered/);
      const e = parseExposition((await httpGet(addr, '/metrics')).body);
      assert.ok(e.value('gpiofabric_agent_reconnects_total', { chip: 'vm-d', what: 'register' }) >= 1, 'registration retries are counted');
    } finally {
      assert.equal(await stop(remote), 0);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('up --metrics: the service and every agent on one endpoint, told apart by chip', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gf-metrics-up-'));
  const served = await startProc(['up', '--listen', '127.0.0.1:0', '--metrics', '127.0.0.1:0', '--dir', dir, '--vms', 'vm-a,vm-b', '--lines', '2'], /Metrics: http:\/\/(127\.0\.0\.1:\d+)\/metrics/);
  try {
    const addr = served.match[1]!;
    const e = parseExposition((await httpGet(addr, '/metrics')).body);
    for (const chip of ['vm-a', 'vm-b']) assert.ok(e.has('gpiofabric_agent_requests_total', { chip, type: 'GET_VALUE', outcome: 'ok' }), chip);
    assert.equal(e.value('gpiofabric_linestate_chips', { state: 'online' }), 2);
    assert.equal(e.value('gpiofabric_linestate_rpcs_total', { method: 'RegisterChip', code: 'OK' }), 2);
    assert.equal((await httpGet(addr, '/healthz')).status, 200);
  } finally {
    assert.equal(await stop(served), 0);
    rmSync(dir, { recursive: true, force: true });
  }
});
