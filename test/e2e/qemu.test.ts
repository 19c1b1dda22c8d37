// Pure parts of the QEMU guest harness: request framing, result parsing, argument lists.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  E2eNotProvisionedError,
  MAX_REQUEST_LINE,
  encodeRequest,
  loadManifest,
  manifestPath,
  parseResult,
  qemuArgs,
  shellQuote,
  vhostUserGpioArgs,
  type E2eManifest,
} from './qemu.ts';

const manifest: E2eManifest = {
  schema: 1,
  key: 'k',
  qemu: '/usr/bin/qemu-system-x86_64',
  qemuVersion: '10.0.2',
  kernel: '/c/vmlinuz',
  kernelRelease: '6.12.117+deb12-amd64',
  initramfs: '/c/initramfs.cpio.gz',
  modules: { gpioVirtio: '/c/gpio-virtio.ko', levelirq: '/c/levelirq.ko' },
  guestTools: ['gpiodetect'],
  readyMarker: 'GPIOFABRIC-READY',
  serveMarker: 'GPIOFABRIC-SERVE-READY',
  packages: {},
};

test('encodeRequest frames one line: id, space, base64 of the script', () => {
  const cmd = `echo "it's"; printf '%s\\n' $((1+2))\nfalse`;
  const line = encodeRequest(7, cmd);
  assert.ok(line.endsWith('\n'));
  assert.equal(line.split('\n').length, 2);
  const [id, b64] = line.trimEnd().split(' ');
  assert.equal(id, '7');
  assert.equal(Buffer.from(b64 ?? '', 'base64').toString('utf8'), cmd);
});

test('encodeRequest refuses scripts the guest tty could not take in one line', () => {
  assert.throws(() => encodeRequest(1, 'x'.repeat(MAX_REQUEST_LINE)), RangeError);
});

test('parseResult extracts output and status between the markers of its own id', () => {
  const text =
    'noise 42 ZWNobyBoaQ==\r\n__GF_BEGIN_3__\r\nold\r\n__GF_END_3__ 0\r\n' +
    '[   12.3] kernel says hi\r\n__GF_BEGIN_4__\r\nline 1\r\nline 2\r\n\r\n__GF_END_4__ 17\r\n';
  assert.deepEqual(parseResult(text, 4), { output: 'line 1\nline 2\n', code: 17 });
  assert.deepEqual(parseResult(text, 3), { output: 'old', code: 0 });
});

test('parseResult waits for a complete end marker and ignores other ids', () => {
  assert.equal(parseResult('__GF_BEGIN_5__\r\nabc\r\n__GF_END_5__ 1', 5), undefined);
  assert.equal(parseResult('__GF_BEGIN_5__\r\nabc\r\n__GF_END_51__ 0\r\n', 5), undefined);
  assert.equal(parseResult('__GF_BEGIN_5__\r\n\r\n__GF_END_5__ 0\r\n', 6), undefined);
  assert.deepEqual(parseResult('__GF_BEGIN_5__\r\n\r\n__GF_END_5__ 0\r\n', 5), { output: '', code: 0 });
});

test('parseResult only looks after the given offset', () => {
  const text = '__GF_BEGIN_1__\nA\n__GF_END_1__ 0\n';
  assert.equal(parseResult(text, 1, 3), undefined);
});

test('qemuArgs shares guest RAM through a memfd and adds one vhost-user-gpio device per socket', () => {
  const args = qemuArgs(manifest, { name: 'a', sockets: ['/run/a.sock', '/run/b.sock'], memoryMb: 512 });
  const joined = args.join(' ');
  assert.match(joined, /-object memory-backend-memfd,id=mem,size=512M,share=on/);
  assert.match(joined, /-machine pc,memory-backend=mem/);
  assert.match(joined, /-m 512M/);
  assert.match(joined, /-accel tcg/);
  assert.match(joined, /-chardev socket,id=gpio0,path=\/run\/a\.sock -device vhost-user-gpio-pci,chardev=gpio0,id=gpio0/);
  assert.match(joined, /-chardev socket,id=gpio1,path=\/run\/b\.sock -device vhost-user-gpio-pci,chardev=gpio1,id=gpio1/);
  const append = args[args.indexOf('-append') + 1] ?? '';
  assert.match(append, /console=ttyS0/);
  assert.match(append, /gpiofabric\.serve=1/);
  assert.equal(args[args.indexOf('-kernel') + 1], manifest.kernel);
  assert.equal(args[args.indexOf('-initrd') + 1], manifest.initramfs);
  assert.ok(qemuArgs(manifest, { name: 'k' }, true).includes('kvm'));
});

test('qemuArgs rejects unusable memory sizes and socket paths QEMU would misparse', () => {
  assert.throws(() => qemuArgs(manifest, { name: 'a', memoryMb: 16 }), RangeError);
  assert.throws(() => qemuArgs(manifest, { name: 'a', memoryMb: 100.5 }), RangeError);
  assert.throws(() => vhostUserGpioArgs('/tmp/a,b.sock', 0), RangeError);
});

test('shellQuote survives a real POSIX shell', () => {
  for (const s of ["it's", '$(reboot) `x` "y" \\ ; & |', '', "''", 'a\nb']) {
    const out = execFileSync('/bin/sh', ['-c', `printf '%s' ${shellQuote(s)}`], { encoding: 'utf8' });
    assert.equal(out, s);
  }
});

test('manifestPath follows GPIOFABRIC_E2E_MANIFEST, then GPIOFABRIC_CACHE', () => {
  assert.equal(manifestPath({ GPIOFABRIC_E2E_MANIFEST: '/x/m.json' }), '/x/m.json');
  assert.equal(manifestPath({ GPIOFABRIC_CACHE: '/c' }), '/c/e2e/manifest.json');
  assert.match(manifestPath({}), /\.cache\/gpio-fabric\/e2e\/manifest\.json$/);
});

test('loadManifest says provisioning is missing for an absent, broken or stale manifest', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gf-e2e-manifest-'));
  try {
    assert.throws(() => loadManifest(join(dir, 'nope.json')), E2eNotProvisionedError);
    writeFileSync(join(dir, 'bad.json'), '{');
    assert.throws(() => loadManifest(join(dir, 'bad.json')), E2eNotProvisionedError);
    writeFileSync(join(dir, 'stale.json'), JSON.stringify({ ...manifest, qemu: process.execPath, kernel: join(dir, 'gone') }));
    assert.throws(() => loadManifest(join(dir, 'stale.json')), /kernel/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
