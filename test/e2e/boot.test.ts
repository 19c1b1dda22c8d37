// Boots real guests from the provisioned cache (test/e2e/provision.sh runs first in npm test).
// Fails, never skips, when provisioning did not happen.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GuestExitedError, GuestTimeoutError, bootGuest, loadManifest, manifestPath } from './qemu.ts';

const here = dirname(fileURLToPath(import.meta.url));

test('provisioning left a manifest: QEMU >= 9, Debian 6.12 kernel, libgpiod v2, both modules', () => {
  const m = loadManifest();
  assert.ok(Number(m.qemuVersion.split('.')[0]) >= 9, `QEMU ${m.qemuVersion} cannot offer guest interrupts`);
  assert.match(m.kernelRelease, /^6\.12\./);
  assert.match(m.packages['gpiod'] ?? '', /^2\./);
  for (const t of ['gpiodetect', 'gpioinfo', 'gpioget', 'gpioset', 'gpiomon']) assert.ok(m.guestTools.includes(t), t);
  assert.match(m.modules.gpioVirtio, /gpio-virtio\.ko$/);
  assert.match(m.modules.levelirq, /levelirq\.ko$/);
});

test('a guest without gpio devices boots with gpio-virtio and levelirq loaded and the gpiod v2 tools working', async () => {
  const m = loadManifest();
  const g = await bootGuest({ name: 'boot-plain', manifest: m });
  try {
    assert.equal((await g.check('uname -r')).trim(), m.kernelRelease);
    const lsmod = await g.check('lsmod');
    assert.match(lsmod, /^gpio_virtio\s/m);
    assert.match(lsmod, /^levelirq\s/m);
    // the driver is registered on the virtio bus even with no device to bind
    await g.check('test -d /sys/bus/virtio/drivers/gpio_virtio');
    // no virtio-gpio device: no chips, and gpiodetect says so without failing
    const detect = await g.run('gpiodetect');
    assert.deepEqual(detect, { output: '', code: 0 });
    assert.match(await g.check('gpioset --version'), /libgpiod\) v2\.\d+/);
    // levelirq loaded idle at boot
    assert.equal((await g.check('cat /sys/module/levelirq/parameters/count')).trim(), '0');
    assert.equal((await g.check('cat /sys/module/levelirq/parameters/irq')).trim(), '-1');
    // asked for a chip that is not there, it refuses to load and says why
    await g.check('rmmod levelirq');
    const bad = await g.run('insmod /lib/modules/levelirq.ko chip_label=virtio9 line=0');
    assert.notEqual(bad.code, 0);
    assert.match(await g.dmesg(), /levelirq: no GPIO chip labelled 'virtio9'/);
    await g.check('insmod /lib/modules/levelirq.ko && lsmod | grep -q ^levelirq');
    assert.match(await g.check('gpioinfo; echo rc=$?'), /rc=0/);
  } finally {
    assert.equal(await g.shutdown(), 0);
  }
});

test('provisioning again reuses the cache, and a second guest boots from it', async () => {
  const before = loadManifest();
  const run = spawnSync('bash', [join(here, 'provision.sh')], { encoding: 'utf8', timeout: 120000 });
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stderr, new RegExp(`downloaded: none; build ${before.key} reused`), run.stderr);
  const after = loadManifest(manifestPath());
  assert.equal(after.key, before.key);
  assert.equal(after.initramfs, before.initramfs);

  const g = await bootGuest({ name: 'boot-again', manifest: after, memoryMb: 192 });
  try {
    // status and quoting travel intact
    assert.deepEqual(await g.run(`printf '%s|' "it's" 'a b'; exit 3`), { output: "it's|a b|", code: 3 });
    // background commands run in their own session and die with their whole group
    const bg = await g.background('while :; do echo tick; sleep 0.1; done | cat');
    assert.ok(await bg.running());
    await g.check(`i=0; while ! grep -q tick ${bg.logPath}; do i=$((i+1)); [ $i -lt 100 ] || exit 1; sleep 0.1; done`);
    await bg.kill();
    assert.equal(await bg.running(), false);
    assert.equal((await g.run(`ps | grep -v grep | grep -c 'sleep 0.1'`)).output.trim(), '0');
    // files larger than one request line arrive whole
    const blob = 'x'.repeat(9000) + "'\"$`\n";
    await g.writeFile('/tmp/blob', blob);
    assert.equal((await g.check('wc -c < /tmp/blob')).trim(), String(Buffer.byteLength(blob)));
    // a command over its bound is interrupted and the guest keeps answering
    await assert.rejects(g.run('sleep 600', { timeoutMs: 1000 }), GuestTimeoutError);
    assert.equal((await g.check('echo alive')).trim(), 'alive');
  } finally {
    assert.equal(await g.shutdown(), 0);
  }
});

test('QEMU refuses to start when nothing listens on the vhost-user-gpio socket', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gf-e2e-'));
  try {
    await assert.rejects(bootGuest({ name: 'no-backend', sockets: [join(dir, 'agent.sock')], timeoutMs: 60000 }), (e: unknown) => {
      assert.ok(e instanceof GuestExitedError);
      assert.match(e.message, /Failed to connect/);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
