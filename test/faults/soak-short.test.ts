/**
 * The soak (bench/soak.ts) in short: 30 s, 20 simulated agents x 64 lines with ring wires,
 * one service on a spawned redis-server. It must exit 0 (no event lost or repeated, no
 * op failed, memory within its bound) and write every figure of bench/results/soak.json.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup } from './support.ts';

test('soak, short: 20 agents x 64 lines for 30 s lose no event and stay within the memory bound', async (t) => {
  const cleanup = new Cleanup();
  try {
    const out = join(cleanup.tempDir('gf-soak-'), 'soak.json');
    const child = spawn(process.execPath, ['--import', 'tsx', 'bench/soak.ts', '--minutes', '0.5', '--agents', '20', '--lines', '64', '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stdout.on('data', (d: Buffer) => { log += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { log += d.toString(); });
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
      child.once('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    assert.equal(code, 0, log);
    const r = JSON.parse(readFileSync(out, 'utf8')) as Record<string, unknown>;
    for (const k of ['ops_per_s', 'p50_us', 'p99_us', 'events_lost', 'rss_start_mb', 'rss_end_mb']) assert.equal(typeof r[k], 'number', `${k} in soak.json`);
    assert.equal(r['events_lost'], 0);
    assert.equal(r['duplicates'], 0);
    assert.equal(r['op_failures'], 0);
    assert.equal(r['memory_ok'], true);
    assert.ok((r['ops'] as number) > 0 && (r['events_received'] as number) > 0, 'traffic flowed and produced events');
    // the agents' own output changes are echoes, which their streams count instead of sending
    assert.ok((r['echoes_omitted'] as number) > 0, 'echoes were left out and counted');
    assert.equal((r['events_received'] as number) + (r['echoes_omitted'] as number), r['events_expected']);
    t.diagnostic(`soak short: ${r['ops_per_s']} ops/s, p50 ${r['p50_us']} us, p99 ${r['p99_us']} us, ${r['events_received']} events + ${r['echoes_omitted']} echoes, RSS ${r['rss_start_mb']} -> ${r['rss_end_mb']} MB`);
  } finally {
    await cleanup.run();
  }
});
