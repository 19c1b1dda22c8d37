/**
 * `gpio-fabric agent` and `gpio-fabric up` as a user runs them: real processes, a real
 * frontend (the test driver playing QEMU) on their sockets, the operator CLI beside.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Frontend, Gpio } from '../support/frontend.ts';
import { startProc as startFabricProc, type FabricProc } from '../faults/support.ts';

const BIN = 'bin/gpio-fabric.mjs';

function cli(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Start a long-running gpio-fabric command; resolves once stdout matches `ready`. */
const startProc = (args: string[], ready: RegExp): Promise<FabricProc> => startFabricProc(args[0] ?? 'gpio-fabric', args, ready);

test('gpio-fabric up: agents answer a guest and the operator CLI sees and drives its lines', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gf-up-'));
  const p = await startProc(['up', '--listen', '127.0.0.1:0', '--dir', dir, '--lines', '4'], /line-state service on (127\.0\.0\.1:\d+)/);
  const server = p.match[1] as string;
  const fe = await Frontend.connect(join(dir, 'vm-a.sock'));
  try {
    assert.match(p.output(), /-device vhost-user-gpio-pci,chardev=gpio-vm-a/);
    assert.match(p.output(), /memory-backend-memfd,id=mem,size=1G,share=on/);
    await fe.start();
    assert.equal((await fe.request(Gpio.SET_VALUE, 2, 1)).status, 0);
    assert.equal((await fe.request(Gpio.SET_DIRECTION, 2, 1)).status, 0);
    const got = cli('get', 'vm-a:2', '--json', '--server', server);
    assert.equal(got.code, 0, got.stderr);
    const line = JSON.parse(got.stdout) as { level: number; direction: string | number };
    assert.equal(line.level, 1);
    // Wire vm-a:3 to vm-b:3 and drive the net from outside: the guest reads it.
    assert.equal(cli('wire', 'vm-a:3', 'vm-b:3', '--name', 'n1', '--server', server).code, 0);
    assert.equal(cli('drive', 'n1', '1', '--server', server).code, 0);
    assert.equal((await fe.request(Gpio.SET_DIRECTION, 3, 2)).status, 0);
    assert.deepEqual([(await fe.request(Gpio.GET_VALUE, 3)).value], [1]);
    assert.equal(cli('drive', 'n1', '0', '--server', server).code, 0);
    assert.deepEqual([(await fe.request(Gpio.GET_VALUE, 3)).value], [0]);
  } finally {
    fe.close();
    const code = await p.stop();
    rmSync(dir, { recursive: true, force: true });
    assert.equal(code, 0, p.output());
  }
});

test('gpio-fabric agent --standalone --listen: a lone VM whose lines an operator reads and drives', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gf-agent-cli-'));
  const sock = join(dir, 'vm-x.sock');
  const p = await startProc(['agent', '--standalone', '--listen', '127.0.0.1:0', '--socket', sock, '--chip', 'vm-x', '--lines', '3', '--names', 'led,btn', '--pull', 'up', '--print-qemu'], /line-state API for vm-x on (127\.0\.0\.1:\d+)/);
  const server = p.match[1] as string;
  const fe = await Frontend.connect(sock);
  try {
    await fe.start();
    // Inputs read their pull.
    await fe.request(Gpio.SET_DIRECTION, 1, 2);
    assert.equal((await fe.request(Gpio.GET_VALUE, 1)).value, 1);
    // An external drive, addressed by line name, is read by the guest.
    const d = cli('drive', 'vm-x:btn', '0', '--server', server);
    assert.equal(d.code, 0, d.stderr);
    assert.equal((await fe.request(Gpio.GET_VALUE, 1)).value, 0);
    // A value the guest drives is visible from the fabric side.
    await fe.request(Gpio.SET_VALUE, 0, 0);
    await fe.request(Gpio.SET_DIRECTION, 0, 1);
    const got = cli('get', 'vm-x:led', '--json', '--server', server);
    assert.equal((JSON.parse(got.stdout) as { level: number }).level, 0);
    assert.match(p.output(), /vhost-user-gpio-pci/);
  } finally {
    fe.close();
    const code = await p.stop();
    rmSync(dir, { recursive: true, force: true });
    assert.equal(code, 0, p.output());
  }
});

test('gpio-fabric agent: bad usage is refused with a clear message and exit code 2', () => {
  const cases: [string[], RegExp][] = [
    [['agent', '--chip', 'a', '--lines', '4'], /--socket PATH is required/],
    [['agent', '--socket', '/tmp/x.sock', '--chip', 'a', '--lines', '0'], /--lines must be an integer from 1 to 1024/],
    [['agent', '--socket', '/tmp/x.sock', '--chip', 'a', '--lines', '2', '--names', 'a,b,c'], /3 names for 2 lines/],
    [['agent', '--socket', '/tmp/x.sock', '--chip', 'a', '--lines', '2', '--standalone', '--server', 'x:1'], /exclude each other/],
    [['agent', '--socket', '/tmp/x.sock', '--chip', 'a', '--lines', '2', '--pull', 'up'], /only goes with --standalone/],
    [['agent', '--bogus'], /Unknown option '--bogus'/],
    [['up', '--vms', 'a,a'], /lists a chip twice/],
  ];
  for (const [args, re] of cases) {
    const r = cli(...args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
  }
  const bad = cli('agent', '--socket', `/tmp/${'x'.repeat(120)}.sock`, '--chip', 'a', '--lines', '2', '--standalone');
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /must be 1-107 bytes/);
  const badName = cli('agent', '--socket', '/tmp/gf-x.sock', '--chip', 'bad chip', '--lines', '2', '--standalone');
  assert.match(badName.stderr, /chip id "bad chip"/);
  const help = cli('agent', '--help');
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--socket PATH/);
});
