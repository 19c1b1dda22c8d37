/**
 * Replicas and restarts on one Redis: two service instances (one in this process, one
 * a separate `gpio-fabric serve` process) act as one fabric, and the state survives a
 * service restart (new server, new store, same Redis fabric).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { createLineStateClient } from '../../services/linestate/src/client.ts';
import { collect, redisStore, snapshot, startFabric, startRedis, uniqueFabric, type Fabric } from './harness.ts';
import type { RedisHandle } from '../support/redis.ts';

const off = (chip: string, offset: number) => ({ chip, line: { $case: 'offset' as const, value: offset } });

/** Start `gpio-fabric serve` on Redis in a child process; resolves with its address. */
async function serveProcess(url: string, fabric: string): Promise<{ child: ChildProcess; address: string }> {
  const child = spawn(process.execPath, ['bin/gpio-fabric.mjs', 'serve', '--redis', url, '--fabric', fabric, '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr?.on('data', (d: Buffer) => { err += d.toString(); });
  const address = await new Promise<string>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (\S+)/.exec(out);
      if (m?.[1] !== undefined) resolve(m[1]);
    });
    child.once('exit', (code) => reject(new Error(`serve exited with ${code}: ${err}`)));
  });
  return { child, address };
}

describe('replicas on one Redis', () => {
  let redis: RedisHandle;
  const fabric = uniqueFabric();
  let r1: Fabric;
  let r2: { child: ChildProcess; address: string };
  before(async () => {
    redis = await startRedis();
    r1 = await startFabric(await redisStore(redis.url, fabric));
    r2 = await serveProcess(redis.url, fabric);
  });
  after(async () => {
    if (r2?.child.exitCode === null) {
      r2.child.kill('SIGTERM');
      const [code] = await once(r2.child, 'exit');
      assert.equal(code, 0, 'serve exits cleanly on SIGTERM');
    }
    await r1?.stop();
    await redis?.stop();
  });

  it('an operation through replica 1 reaches a watch stream on replica 2', async () => {
    const c2 = createLineStateClient(r2.address);
    try {
      const reg = await r1.client.registerChip({ chip: 'vm-a', ngpio: 2, names: [], owner: 'a', leaseTtlMs: 0 });
      await r1.client.registerChip({ chip: 'vm-b', ngpio: 2, names: [], owner: 'b', leaseTtlMs: 0 });
      assert.equal(await snapshot(c2), await snapshot(r1.client), 'both replicas see one state');
      const lastSeq = (await c2.listChips()).find((c) => c.id === 'vm-b')!.lastSeq;
      const w = collect(c2, { chips: ['vm-b'], fromSeq: lastSeq });
      await r1.client.wire({ name: 'ab', members: [off('vm-a', 0), off('vm-b', 1)], pull: 0, driveMode: 0 });
      await r1.client.lineOp({ chip: 'vm-a', leaseToken: reg.leaseToken, op: 3, offset: 0, value: 1 });
      await r1.client.lineOp({ chip: 'vm-a', leaseToken: reg.leaseToken, op: 5, offset: 0, value: 1 });
      const [e] = await w.waitFor(1);
      w.cancel();
      assert.deepEqual([e?.chip, e?.offset, e?.level, e?.edge], ['vm-b', 1, 1, 1]);
      // and the other way round: a live-only stream on replica 1, changes through replica 2
      const live = collect(r1.client, { chips: ['vm-a'] });
      let v = 0;
      for (let i = 0; i < 200 && live.events.length === 0; i++) {
        await c2.drive({ target: { $case: 'line', value: off('vm-a', 1) }, value: v++ % 2 === 0 ? 1 : 2 });
        await new Promise((r) => setTimeout(r, 25));
      }
      live.cancel();
      assert.ok(live.events.length > 0);
      assert.equal(live.events[0]?.offset, 1);
    } finally {
      c2.close();
    }
  });
});

describe('state survives a service restart', () => {
  it('new server and store on the same Redis fabric restore chips, lines, nets and events', async () => {
    const redis = await startRedis();
    const fabric = uniqueFabric();
    try {
      const a = await startFabric(await redisStore(redis.url, fabric));
      const reg = await a.client.registerChip({ chip: 'vm-r', ngpio: 3, names: ['x', 'y', 'z'], owner: 'agent', leaseTtlMs: 0 });
      await a.client.registerChip({ chip: 'vm-s', ngpio: 3, names: [], owner: 'agent-s', leaseTtlMs: 0 });
      await a.client.lineOp({ chip: 'vm-r', leaseToken: reg.leaseToken, op: 3, offset: 2, value: 1 });
      await a.client.lineOp({ chip: 'vm-r', leaseToken: reg.leaseToken, op: 5, offset: 2, value: 1 });
      await a.client.wire({ name: 'rs', members: [off('vm-r', 2), off('vm-s', 0)], pull: 1, driveMode: 1 });
      await a.client.setBias({ line: off('vm-s', 2), bias: 2 });
      await a.client.releaseChip({ chip: 'vm-r', leaseToken: reg.leaseToken });
      const before = await snapshot(a.client);
      const seq = (await a.client.listChips()).find((c) => c.id === 'vm-r')!.lastSeq;
      await a.stop();

      const b = await startFabric(await redisStore(redis.url, fabric));
      try {
        assert.equal(await snapshot(b.client), before);
        const again = await b.client.registerChip({ chip: 'vm-r', ngpio: 3, names: ['x', 'y', 'z'], owner: 'agent', leaseTtlMs: 0 });
        assert.equal(again.restored, true);
        assert.ok(BigInt(again.leaseToken) > BigInt(reg.leaseToken), 'fencing tokens keep increasing across restarts');
        assert.deepEqual(again.lines.map((l) => [l.direction, l.outputValue, l.net]), [[0, 0, ''], [0, 0, ''], [1, 1, 'rs']]);
        const w = collect(b.client, { chips: ['vm-r'], fromSeq: '0' });
        const events = await w.waitFor(Number(seq));
        w.cancel();
        assert.equal(events[events.length - 1]?.seq, seq, 'the event history is kept');
      } finally {
        await b.stop();
      }
    } finally {
      await redis.stop();
    }
  });
});
