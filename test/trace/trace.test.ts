/**
 * `gpio-fabric trace` end to end: an in-process line-state service on the memory store,
 * a chip registered through the client, scripted drive patterns while the command runs
 * as its own process, and the written VCD read back.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { DriveValue, Pull } from '../../services/common/src/gen/gpiofabric/v1/linestate.ts';
import { createLineStateClient, type LineStateClient } from '../../services/linestate/src/client.ts';
import { startLineStateServer, type LineStateServer } from '../../services/linestate/src/server.ts';
import { createMemoryStore } from '../../services/linestate/src/store/memory-store.ts';
import { parseVcd, type ParsedVcd } from './vcd-parse.ts';

interface Result { code: number; stdout: string; stderr: string }
const cli = (...args: string[]): Promise<Result> =>
  new Promise((resolve) => {
    execFile(process.execPath, ['bin/gpio-fabric.mjs', ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr });
    });
  });

/** Wait until `file` holds a complete VCD header (the trace has taken its snapshot). */
async function headerWritten(file: string, proc: { exitCode: number | null }): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (existsSync(file) && readFileSync(file, 'utf8').includes('$dumpvars')) return;
    assert.equal(proc.exitCode, null, 'trace exited before writing its header');
    await sleep(25);
  }
  assert.fail(`no VCD header in ${file} after 15 s`);
}

/** The file parsed, read again while a write is half done (the text does not end in a newline). */
async function readWhole(file: string): Promise<ParsedVcd> {
  for (let i = 0; ; i++) {
    const text = readFileSync(file, 'utf8');
    if (text.endsWith('\n') || i >= 40) return parseVcd(text);
    await sleep(25);
  }
}

const values = (p: ParsedVcd, ref: string): string[] => (p.changes.get(ref) ?? []).map((c) => c.value);
const timesOf = (p: ParsedVcd, ref: string): bigint[] => (p.changes.get(ref) ?? []).map((c) => c.time);

describe('gpio-fabric trace', () => {
  let server: LineStateServer;
  let client: LineStateClient;
  let dir: string;
  const line = (offset: number) => ({ chip: 'vm-a', line: { $case: 'offset' as const, value: offset } });
  const drive = async (offset: number, high: boolean): Promise<void> => {
    await client.drive({ target: { $case: 'line', value: line(offset) }, value: high ? DriveValue.DRIVE_VALUE_HIGH : DriveValue.DRIVE_VALUE_LOW });
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gf-trace-'));
    server = await startLineStateServer({ store: createMemoryStore(), listen: '127.0.0.1:0', log: () => {} });
    client = createLineStateClient(server.address);
    await client.registerChip({ chip: 'vm-a', ngpio: 4, names: ['clk', 'pulse', '', 'reset n'], owner: 'trace-test', leaseTtlMs: 0 });
    await client.registerChip({ chip: 'vm-b', ngpio: 2, names: [], owner: 'trace-test', leaseTtlMs: 0 });
    // vm-a:2 reads 1 from its pull-up: an initial value that is not 0.
    await client.setBias({ line: line(2), bias: Pull.PULL_UP });
  });
  after(async () => {
    client.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('records a square wave and a pulse with their initial values, names and gaps', async () => {
    const file = join(dir, 'wave.vcd');
    const proc = spawn(process.execPath, ['bin/gpio-fabric.mjs', 'trace', '--vcd', file, '--duration', '2', '--server', server.address, 'vm-a'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    proc.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const exited = once(proc, 'exit');
    try {
      await headerWritten(file, proc);
      // Square wave on clk: 1 0 1 0, 200 ms apart; then one 200 ms pulse on "pulse".
      for (const v of [true, false, true, false]) {
        await drive(0, v);
        await sleep(200);
      }
      await drive(1, true);
      await sleep(200);
      await drive(1, false);
    } finally {
      const [code] = await exited;
      assert.equal(code, 0, `trace failed: ${stderr}`);
    }
    assert.match(stdout, new RegExp(`^traced 4 signals on 1 chip for [0-9.]+ s: 6 changes -> ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
    const p = parseVcd(readFileSync(file, 'utf8'));
    assert.equal(p.timescale, '1 us');
    assert.equal(p.version, 'gpio-fabric trace');
    assert.deepEqual(p.signals.map((s) => `${s.scope}/${s.ref}`), ['vm-a/vm-a.clk', 'vm-a/vm-a.pulse', 'vm-a/vm-a.2', 'vm-a/vm-a.reset_n']);
    assert.deepEqual(Object.fromEntries(p.initial), { 'vm-a.clk': '0', 'vm-a.pulse': '0', 'vm-a.2': '1', 'vm-a.reset_n': '0' });
    assert.deepEqual(values(p, 'vm-a.clk'), ['1', '0', '1', '0']);
    assert.deepEqual(values(p, 'vm-a.pulse'), ['1', '0']);
    assert.deepEqual(values(p, 'vm-a.2'), []);
    assert.deepEqual(values(p, 'vm-a.reset_n'), []);
    // #times strictly increase; the last one is the end of the trace (about 2 s).
    for (let i = 1; i < p.times.length; i++) assert.ok((p.times[i] ?? 0n) > (p.times[i - 1] ?? 0n), `#${p.times[i]} after #${p.times[i - 1]}`);
    const end = p.times.at(-1) ?? 0n;
    assert.ok(end >= 1_900_000n && end < 10_000_000n, `end of trace at ${end} us`);
    // Gaps of 200 ms show as more than 100 ms; the pulse comes after the last clk edge.
    const clk = timesOf(p, 'vm-a.clk');
    for (let i = 1; i < clk.length; i++) assert.ok((clk[i] ?? 0n) - (clk[i - 1] ?? 0n) > 100_000n, `clk gap ${i}: ${clk.join(' ')}`);
    const [rise, fall] = timesOf(p, 'vm-a.pulse');
    assert.ok(rise !== undefined && fall !== undefined && fall - rise > 100_000n, `pulse ${rise}..${fall}`);
    assert.ok(rise > (clk.at(-1) ?? 0n) + 100_000n, 'the pulse starts 200 ms after the last clk edge');
    assert.ok((clk[0] ?? 0n) > 0n);
  });

  it('traces chosen lines by name and offset until SIGINT, writing changes as they happen', async () => {
    await drive(3, true); // reset n starts high
    const file = join(dir, 'lines.vcd');
    const proc = spawn(process.execPath, ['bin/gpio-fabric.mjs', 'trace', '--vcd', file, '--server', server.address, 'vm-a:reset n', 'vm-a:1', 'vm-b:0', 'vm-a:1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    proc.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    proc.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const exited = once(proc, 'exit');
    try {
      await headerWritten(file, proc);
      await drive(3, false);
      await drive(0, true); // not traced
      await client.drive({ target: { $case: 'line', value: { chip: 'vm-b', line: { $case: 'offset', value: 0 } } }, value: DriveValue.DRIVE_VALUE_HIGH });
      // The changes reach the file while the trace still runs.
      let partial = await readWhole(file);
      for (let i = 0; i < 400 && values(partial, 'vm-b.0').length === 0; i++) {
        await sleep(25);
        partial = await readWhole(file);
      }
      assert.deepEqual(values(partial, 'vm-a.reset_n'), ['0']);
      assert.deepEqual(values(partial, 'vm-b.0'), ['1']);
      assert.equal(proc.exitCode, null, 'still running');
    } finally {
      proc.kill('SIGINT');
      const [code] = await exited;
      assert.equal(code, 0, `trace failed: ${stderr}`);
    }
    assert.match(stdout, /^traced 3 signals on 2 chips for [0-9.]+ s: 2 changes -> /m);
    const p = parseVcd(readFileSync(file, 'utf8'));
    assert.deepEqual(p.signals.map((s) => `${s.scope}/${s.ref}`), ['vm-a/vm-a.reset_n', 'vm-a/vm-a.pulse', 'vm-b/vm-b.0']);
    assert.deepEqual(Object.fromEntries(p.initial), { 'vm-a.reset_n': '1', 'vm-a.pulse': '0', 'vm-b.0': '0' });
    assert.deepEqual(values(p, 'vm-a.pulse'), []);
    const last = p.times.at(-1) ?? 0n;
    assert.ok(last > (timesOf(p, 'vm-b.0')[0] ?? 0n), 'an end time after the last change');
  });

  it('a service that goes away mid-trace leaves a complete file up to then and exit 1', async () => {
    const other = await startLineStateServer({ store: createMemoryStore(), listen: '127.0.0.1:0', log: () => {} });
    const c = createLineStateClient(other.address);
    const file = join(dir, 'cut.vcd');
    try {
      await c.registerChip({ chip: 'vm-c', ngpio: 1, names: [], owner: 'trace-test', leaseTtlMs: 0 });
      const proc = spawn(process.execPath, ['bin/gpio-fabric.mjs', 'trace', '--vcd', file, '--server', other.address], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      proc.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
      const exited = once(proc, 'exit');
      await headerWritten(file, proc);
      await c.drive({ target: { $case: 'line', value: { chip: 'vm-c', line: { $case: 'offset', value: 0 } } }, value: DriveValue.DRIVE_VALUE_HIGH });
      let partial = await readWhole(file);
      for (let i = 0; i < 400 && values(partial, 'vm-c.0').length === 0; i++) {
        await sleep(25);
        partial = await readWhole(file);
      }
      c.close();
      await other.close(); // ends the open watch streams
      const [code] = await exited;
      assert.equal(code, 1);
      assert.match(stderr, /stopped early/);
      // Normally a clean end of the stream; a dropped connection is reported with its status.
      assert.match(stderr, /gpio-fabric trace: (UNAVAILABLE: the service ended the event stream of chip vm-c|[A-Z_]+: )/);
      const p = parseVcd(readFileSync(file, 'utf8'));
      assert.deepEqual(values(p, 'vm-c.0'), ['1']);
      assert.ok((p.times.at(-1) ?? 0n) > (timesOf(p, 'vm-c.0')[0] ?? 0n), 'completed with an end time');
    } finally {
      c.close();
      await other.close();
    }
  });

  it('usage errors exit 2, refused targets exit 1, --help is complete', async () => {
    const file = join(dir, 'never.vcd');
    const [noVcd, badDuration, badTarget, unknownChip, unknownLine, help] = await Promise.all([
      cli('trace', '--server', server.address, 'vm-a'),
      cli('trace', '--vcd', file, '--duration', 'soon', '--server', server.address),
      cli('trace', '--vcd', file, '--server', server.address, 'vm a'),
      cli('trace', '--vcd', file, '--server', server.address, 'vm-q'),
      cli('trace', '--vcd', file, '--server', server.address, 'vm-a:nope'),
      cli('trace', '--help'),
    ]);
    assert.equal(noVcd.code, 2);
    assert.match(noVcd.stderr, /--vcd FILE is required/);
    assert.equal(badDuration.code, 2);
    assert.match(badDuration.stderr, /--duration must be a number of seconds/);
    assert.equal(badTarget.code, 2);
    assert.equal(unknownChip.code, 1);
    assert.match(unknownChip.stderr, /NOT_FOUND: chip "vm-q" is not registered/);
    assert.equal(unknownLine.code, 1);
    assert.match(unknownLine.stderr, /NOT_FOUND: chip "vm-a" has no line named "nope"/);
    assert.equal(existsSync(file), false, 'no file written for a refused trace');
    assert.equal(help.code, 0);
    for (const s of ['--vcd FILE', '--duration S', '--server ADDR', 'CHIP:LINE', 'gtkwave', 'pulseview -I vcd']) assert.ok(help.stdout.includes(s), `help mentions ${s}`);
  });
});
