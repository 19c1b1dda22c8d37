/**
 * The operator CLI end to end: `gpio-fabric serve` (in-memory, with a topology file) in
 * a child process, and every operator command spawned against it.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

interface Result { code: number; stdout: string; stderr: string }

let server = '';
function cli(...args: string[]): Promise<Result> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['bin/gpio-fabric.mjs', ...args], { env: { ...process.env, GPIOFABRIC_SERVER: server }, timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}
async function ok(...args: string[]): Promise<string> {
  const r = await cli(...args);
  assert.equal(r.code, 0, `gpio-fabric ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}
const json = async (...args: string[]): Promise<unknown> => JSON.parse(await ok(...args));

const TOPOLOGY = `apiVersion: gpiofabric/v1
chips:
  - id: vm-a
    lines: 8
    names: [led0, btn0, reset, "", "", "", "", ""]
    bias: { btn0: up }
  - id: vm-b
    lines: 4
nets:
  - name: reset-bus
    members: [vm-a:reset, vm-b:2]
    pull: up
    drive: open-drain
`;

describe('gpio-fabric CLI', () => {
  let child: ChildProcess;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gf-cli-'));
    writeFileSync(join(dir, 'boot.yaml'), TOPOLOGY);
    child = spawn(process.execPath, ['bin/gpio-fabric.mjs', 'serve', '--listen', '127.0.0.1:0', '--topology', join(dir, 'boot.yaml')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stderr?.on('data', (d: Buffer) => { err += d.toString(); });
    server = await new Promise<string>((resolve, reject) => {
      child.stdout?.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /listening on (\S+) \(store: memory\)/.exec(out);
        if (m?.[1] !== undefined) resolve(m[1]);
      });
      child.once('exit', (code) => reject(new Error(`serve exited with ${code}: ${err}`)));
    });
  });
  after(async () => {
    if (child?.exitCode === null) {
      child.kill('SIGINT');
      const [code] = await once(child, 'exit');
      assert.equal(code, 0, 'serve exits 0 on SIGINT');
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('serve applied its --topology; ls shows chips and nets', async () => {
    const out = await ok('ls');
    assert.match(out, /^CHIP\s+LINES\s+ONLINE/m);
    assert.match(out, /^vm-a\s+8\s+no/m);
    assert.match(out, /^reset-bus\s+1\s+up\s+open-drain\s+release\s+no\s+vm-a:2 vm-b:2$/m);
    const chips = (await json('ls', 'chips', '--json')) as { id: string; ngpio: number }[];
    assert.deepEqual(chips.map((c) => [c.id, c.ngpio]), [['vm-a', 8], ['vm-b', 4]]);
    const lines = (await json('ls', 'lines', '--chip', 'vm-a', '--json')) as { offset: number; name: string; bias: string }[];
    assert.equal(lines.length, 8);
    assert.deepEqual(lines[1], { ...lines[1], name: 'btn0', bias: 'up' });
  });

  it('apply -f: dry run, then apply, then nothing left to change', async () => {
    const file = join(dir, 'topo.yaml');
    writeFileSync(file, `${TOPOLOGY}drives:\n  - line: vm-a:btn0\n    value: 0\n`);
    const dry = await ok('apply', '-f', file, '--dry-run');
    assert.match(dry, /^would drive vm-a:1 low$/m);
    assert.equal(((await json('get', 'vm-a:btn0', '--json')) as { level: number }).level, 1, 'dry run changed nothing');
    assert.match(await ok('apply', '-f', file), /^drive vm-a:1 low$/m);
    assert.match(await ok('apply', '--file', file), /no changes/);
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'apiVersion: gpiofabric/v1\nnets:\n  - {name: n, members: [vm-a:0, vm-c:9]}\n  - {name: m, members: [vm-a:0, vm-b:1]}\n');
    const r = await cli('apply', '-f', bad);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /INVALID_ARGUMENT: invalid topology: nets\[1\]\.members\[0\]: "vm-a:0": the line is already wired at nets\[0\]\.members\[0\]/);
  });

  it('get by name and offset, human and --json', async () => {
    const byName = (await json('get', 'vm-a:led0', '--json')) as Record<string, unknown>;
    assert.deepEqual(byName, { chip: 'vm-a', offset: 0, name: 'led0', direction: 'none', outputValue: 0, irqType: 'none', bias: 'none', level: 0, net: '', externalDrive: 'release' });
    assert.match(await ok('get', 'vm-a:2'), /^net\s+reset-bus$/m);
  });

  it('wire, drive, bias, unwire', async () => {
    assert.match(await ok('wire', 'vm-a:led0', 'vm-b:0', '--name', 'w', '--pull', 'up', '--open-drain'), /^wired net w: vm-a:0 vm-b:0 \(pull up, open-drain, level 1\)$/m);
    const nets = (await json('ls', 'nets', '--json')) as { name: string; members: string[]; driveMode: string }[];
    assert.deepEqual(nets.find((n) => n.name === 'w'), { ...nets.find((n) => n.name === 'w'), members: ['vm-a:0', 'vm-b:0'], driveMode: 'open-drain' });
    assert.match(await ok('drive', 'w', '0'), /level 0/);
    assert.equal(((await json('get', 'vm-b:0', '--json')) as { level: number }).level, 0);
    assert.match(await ok('drive', 'w', 'release'), /released, level 1/);
    assert.match(await ok('drive', 'vm-b:3', '1'), /level 1/);
    assert.match(await ok('bias', 'vm-a:3', 'up'), /^vm-a:3: bias up, level 1$/m);
    assert.match(await ok('unwire', 'w'), /removed net w/);
    assert.equal(((await json('get', 'vm-b:0', '--json')) as { net: string }).net, '');
  });

  it('watch --from --count prints the events and exits', async () => {
    const seq = ((await json('ls', 'chips', '--json')) as { id: string; lastSeq: string }[]).find((c) => c.id === 'vm-b')!.lastSeq;
    await ok('drive', 'vm-b:1', '1');
    await ok('drive', 'vm-b:1', '0');
    const out = await ok('watch', 'vm-b', '--from', seq, '--count', '2', '--json');
    const events = out.trim().split('\n').map((l) => JSON.parse(l) as { chip: string; offset: number; level: number; edge: string; seq: string });
    assert.deepEqual(events.map((e) => [e.chip, e.offset, e.level, e.edge, BigInt(e.seq) - BigInt(seq)]), [['vm-b', 1, 1, 'rising', 1n], ['vm-b', 1, 0, 'falling', 2n]]);
    const human = await ok('watch', 'vm-b:1', '--from', seq, '--count', '1');
    assert.match(human, /^\d{4}-\d\d-\d\dT[0-9:.]+Z {2}vm-b:1 {2}rising {3}level 1 {2}seq \d+$/m);
  });

  it('bad usage exits 2 with a message; service errors exit 1', async () => {
    const usage: [string[], RegExp][] = [
      [['wire', 'vm-a:0'], /missing at least two CHIP:LINE/],
      [['drive', 'vm-a:0', 'maybe'], /value must be 0, 1 or release/],
      [['ls', '--bogus'], /Unknown option '--bogus'/],
      [['ls', 'wires'], /unknown kind "wires"/],
      [['get', 'nocolon'], /is not CHIP:LINE/],
      [['bias', 'vm-a:0', 'sideways'], /bias must be up, down or none/],
      [['watch', '--from', '3'], /--from needs a CHIP/],
      [['watch', 'vm-a', '--count', '0'], /--count must be a positive whole number/],
      [['apply'], /missing -f FILE/],
      [['serve', '--lease-ttl', 'soon'], /--lease-ttl must be/],
    ];
    const results = await Promise.all(usage.map(([args]) => cli(...args)));
    results.forEach((r, i) => {
      const [args, re] = usage[i]!;
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.match(r.stderr, /--help/);
    });
    const [unknown, far, unreachable] = await Promise.all([cli('get', 'vm-q:0'), cli('watch', 'vm-a', '--from', '999999'), cli('ls', '--server', '127.0.0.1:1')]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /NOT_FOUND: .*vm-q/);
    assert.equal(far.code, 1);
    assert.match(far.stderr, /OUT_OF_RANGE/);
    assert.equal(unreachable.code, 1);
    assert.match(unreachable.stderr, /cannot reach the line-state service at 127\.0\.0\.1:1/);
  });

  it('--help of every command', async () => {
    const cmds = ['serve', 'wire', 'unwire', 'ls', 'get', 'drive', 'bias', 'watch', 'apply'];
    const rs = await Promise.all(cmds.map((c) => cli(c, '--help')));
    rs.forEach((r, i) => {
      assert.equal(r.code, 0);
      assert.match(r.stdout, new RegExp(`^Usage: gpio-fabric ${cmds[i]}`));
    });
  });
});
