/**
 * Fault 2: the line-state replica an agent streams events from is killed (SIGKILL)
 * while line changes keep coming through the other replica.
 *
 * Two `gpio-fabric serve` processes on one Redis fabric. The agent (in this process, so
 * its backend's events can be observed; a real vhost-user socket with the frontend
 * driver as the guest) is given both replicas as one gRPC target,
 * `ipv4:ADDR1,ADDR2`: grpc-js connects to the first address that answers (pick_first)
 * and moves to the next when that connection dies. Each replica sits behind a counting
 * TCP proxy, so the test can show which replica the agent uses.
 *
 * An operator on the other replica toggles an input line of the agent's chip: sequential
 * arm/drive/interrupt rounds, then a burst during which the agent's replica is killed, then more
 * rounds after the failover. (The killed replica is the one the agent's channel is
 * connected to: normally the first address.) Checked: the backend's events have strictly consecutive
 * seq numbers (none lost, none repeated) and their number equals the number of level
 * changes made; each guest round gets exactly its interrupt; the burst's edges, made
 * without an eventq buffer, latch into exactly one interrupt.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startAgent } from '../../services/agent/src/agent.ts';
import type { LineEvent } from '../../services/agent/src/backend/line-backend.ts';
import { createLogger } from '../../services/common/src/log.ts';
import { createLineStateClient } from '../../services/linestate/src/client.ts';
import { Frontend, Gpio } from '../support/frontend.ts';
import { startRedis } from '../support/redis.ts';
import { startTcpProxy } from '../support/tcp-proxy.ts';
import { Cleanup, report, requestOk, sleep, startServe, timed, until } from './support.ts';

const CHIP = 'rk';
const ROUNDS = 10;
const BURST = 20;
const KILL_AFTER = 8;
const VALID = 1;

test('a replica killed under a streaming agent: the agent fails over to the other replica and resumes from its cursor, no event lost or repeated', async (t) => {
  const cleanup = new Cleanup();
  try {
    const dir = cleanup.tempDir('gf-fault-replica-');
    const redis = await startRedis();
    cleanup.defer('stop redis', () => redis.stop());
    const fabric = `fault-replica-${process.pid}`;
    const [r1, r2] = await Promise.all([startServe('replica 1', { redis: redis.url, fabric }), startServe('replica 2', { redis: redis.url, fabric })]);
    cleanup.defer('stop replica 2', () => r2.stop());
    cleanup.defer('stop replica 1', () => r1.stop());
    const p1 = await startTcpProxy({ targetPort: Number(r1.address.split(':')[1]) });
    const p2 = await startTcpProxy({ targetPort: Number(r2.address.split(':')[1]) });
    cleanup.defer('close proxy 2', () => p2.close());
    cleanup.defer('close proxy 1', () => p1.close());

    const logLines: string[] = [];
    const agent = await startAgent({
      socketPath: join(dir, `${CHIP}.sock`), chip: CHIP, ngpio: 4, requestDeadlineMs: 1000,
      backend: { kind: 'remote', server: `ipv4:${p1.address},${p2.address}`, leaseTtlMs: 5000 },
      log: createLogger(`agent[${CHIP}]`, (l) => logLines.push(l)),
    });
    cleanup.defer('close agent', () => agent.close());
    const events: LineEvent[] = [];
    agent.backend.onEvent((e) => events.push(e));
    const fe = await Frontend.connect(agent.socketPath);
    cleanup.defer('close frontend', () => fe.close());
    await fe.start();
    await requestOk(fe, Gpio.SET_DIRECTION, 0, 2);
    await requestOk(fe, Gpio.SET_IRQ_TYPE, 0, 3);
    // pick_first normally keeps the first address; under load it may race both and keep
    // either. The victim is the replica the agent's channel is connected to.
    const on = await until('the agent is connected to exactly one replica', () => {
      const a = p1.stats().open;
      const b = p2.stats().open;
      return a > 0 && b === 0 ? 1 : b > 0 && a === 0 ? 2 : undefined;
    });
    const [victim, victimProxy, survivor, survivorProxy] = on === 1 ? [r1, p1, r2, p2] : [r2, p2, r1, p1];

    const op = createLineStateClient(survivor.address, { deadlineMs: 5000 });
    cleanup.defer('close operator client', () => op.close());
    let level = 0;
    let changes = 0;
    const toggle = async (): Promise<void> => {
      level ^= 1;
      await op.drive({ target: { $case: 'line', value: { chip: CHIP, line: { $case: 'offset', value: 0 } } }, value: level === 1 ? 2 : 1 });
      changes++;
    };
    const firstSeq = BigInt((await op.listChips()).find((c) => c.id === CHIP)?.lastSeq ?? '0') + 1n;
    const completions: number[] = [];
    const round = async (): Promise<void> => {
      const irq = fe.armIrq(0);
      await toggle();
      completions.push((await irq).status);
    };

    for (let i = 0; i < ROUNDS; i++) await round();
    await until('events before the kill seen by the agent', () => events.length === changes);
    // Burst without eventq buffers; replica 1 dies in the middle of it.
    let killMs = 0;
    for (let i = 0; i < BURST; i++) {
      if (i === KILL_AFTER) {
        await victim.kill();
        await victimProxy.close(); // the address now refuses connections, like a dead pod's
        killMs = performance.now();
      }
      await toggle();
    }
    const resumed = await timed(() => until('the agent caught up through the surviving replica', () => events.length >= changes, 30_000));
    const failoverMs = performance.now() - killMs;
    completions.push((await fe.armIrq(0)).status); // the burst's latched edge
    for (let i = 0; i < ROUNDS; i++) await round();
    await until('every event seen by the agent', () => events.length >= changes, 30_000);
    // A late duplicate would arrive after the last one; give the stream a moment to show it.
    await sleep(300);

    const seqs = events.map((e) => e.seq);
    const gaps = seqs.filter((s, i) => i > 0 && s !== seqs[i - 1]! + 1n).length;
    assert.equal(seqs[0], firstSeq, 'the first event is the first change');
    assert.equal(gaps, 0, `backend event seqs are strictly consecutive: ${seqs.join(',')}`);
    assert.equal(events.length, changes, 'one event per level change: none lost, none repeated');
    assert.deepEqual(events.map((e) => e.level), events.map((_, i) => (i % 2 === 0 ? 1 : 0)), 'levels alternate as driven');
    assert.deepEqual(completions, new Array(2 * ROUNDS + 1).fill(VALID), 'each round got its interrupt, the burst exactly one latched interrupt');
    assert.ok(survivorProxy.stats().open > 0, 'the agent moved to the surviving replica');
    assert.equal((await requestOk(fe, Gpio.GET_VALUE, 0)).value, level, 'the guest reads the final level');
    assert.match(logLines.join('\n'), /event stream failed .*resuming from seq \d+/, 'the agent logged the resume');

    report(t, {
      fault: 'replica-kill',
      outcome: 'agent failed over to the other replica and resumed from its cursor; seqs consecutive; interrupts match',
      figures: {
        killedReplica: on,
        levelChanges: changes, backendEvents: events.length, eventsLost: changes - events.length, seqGaps: gaps,
        duplicates: seqs.length - new Set(seqs).size, guestInterrupts: completions.length,
        catchUpMsAfterKill: Math.round(failoverMs), untilCaughtUpMs: Math.round(resumed.ms),
      },
    });
  } finally {
    await cleanup.run();
  }
});
