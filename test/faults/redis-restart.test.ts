/**
 * Fault 1: Redis is killed (SIGKILL) and started again on the same port and AOF file
 * (appendfsync always) under a running `gpio-fabric serve --redis` and two running
 * `gpio-fabric agent --deadline 500` processes with guests (the frontend test driver)
 * attached.
 *
 *  - before: acknowledged changes of every kind (guest SET_VALUE / SET_DIRECTION /
 *    SET_IRQ_TYPE, two wires, line and net drives, a bias);
 *  - while Redis is down: every guest request is answered ERR within the deadline +
 *    margin (nothing hangs) and operator calls fail with UNAVAILABLE;
 *  - after: without restarting the agents or the service, guests are answered again,
 *    every acknowledged change is still there (the whole listing compares equal), and a
 *    change made by one guest raises the other guest's interrupt over the resumed event
 *    streams.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createLineStateClient, type LineStateClient } from '../../services/linestate/src/client.ts';
import { ErrorCode, isFabricError } from '../../services/common/src/errors.ts';
import { Frontend, Gpio } from '../support/frontend.ts';
import { Cleanup, report, requestOk, startAgentProc, startRedisAof, startServe, timed, until } from './support.ts';

const DEADLINE_MS = 500;
/** Slack for process scheduling on a loaded 2-core machine; the bound checked is deadline + margin. */
const MARGIN_MS = 1000;
const OK = 0;
const ERR = 1;

const off = (chip: string, offset: number) => ({ chip, line: { $case: 'offset' as const, value: offset } });

/** Everything the fabric keeps about lines and nets, plus each chip's durable fields. */
async function durableState(c: LineStateClient): Promise<string> {
  const chips = (await c.listChips()).map((ch) => ({ id: ch.id, ngpio: ch.ngpio, names: ch.names, owner: ch.owner, lastSeq: ch.lastSeq }));
  return JSON.stringify({ chips, lines: await c.listLines(), nets: await c.listNets() });
}

test('Redis killed and restarted (AOF): ERR within the deadline while down, every acknowledged change kept, no restart of agents or service', async (t) => {
  const cleanup = new Cleanup();
  try {
    const dir = cleanup.tempDir('gf-fault-redis-');
    const redis = await startRedisAof();
    cleanup.defer('stop redis', () => redis.stop());
    const fabric = `fault-redis-${process.pid}`;
    const serve = await startServe('serve', { redis: redis.url, fabric });
    cleanup.defer('stop serve', () => serve.stop());
    const agents = await Promise.all(['fa', 'fb'].map((chip) => startAgentProc(`agent ${chip}`, { socket: join(dir, `${chip}.sock`), chip, lines: 4, server: serve.address, deadlineMs: DEADLINE_MS })));
    for (const a of agents) cleanup.defer(`stop ${a.name}`, () => a.stop());
    const [feA, feB] = await Promise.all(['fa', 'fb'].map(async (chip) => {
      const fe = await Frontend.connect(join(dir, `${chip}.sock`));
      cleanup.defer(`close frontend ${chip}`, () => fe.close());
      await fe.start();
      return fe;
    })) as [Frontend, Frontend];
    const client = createLineStateClient(serve.address, { deadlineMs: 3000 });
    cleanup.defer('close client', () => client.close());

    // ---- acknowledged changes
    const acked = async (fe: Frontend, type: number, gpio: number, value: number): Promise<void> => {
      await requestOk(fe, type, gpio, value);
    };
    await acked(feA, Gpio.SET_VALUE, 0, 1);
    await acked(feA, Gpio.SET_DIRECTION, 0, 1); // fa:0 OUT 1
    await acked(feA, Gpio.SET_DIRECTION, 1, 2); // fa:1 IN
    await acked(feA, Gpio.SET_IRQ_TYPE, 1, 3); // both edges
    await acked(feB, Gpio.SET_DIRECTION, 2, 1);
    await acked(feB, Gpio.SET_VALUE, 2, 1); // fb:2 OUT 1
    await client.wire({ name: 'w1', members: [off('fa', 1), off('fb', 2)], pull: 0, driveMode: 0 });
    await client.wire({ name: 'w2', members: [off('fa', 3), off('fb', 3)], pull: 1, driveMode: 1 });
    await client.drive({ target: { $case: 'line', value: off('fb', 0) }, value: 2 });
    await client.drive({ target: { $case: 'net', value: 'w2' }, value: 1 });
    await client.setBias({ line: off('fa', 2), bias: 1 });
    assert.equal((await requestOk(feA, Gpio.GET_VALUE, 1)).value, 1, 'fa:1 reads the net driven by fb:2');
    const before = await durableState(client);

    // ---- Redis down
    await redis.kill();
    const times: number[] = [];
    const statuses: number[] = [];
    const ops: [Frontend, number, number, number][] = [
      [feA, Gpio.GET_VALUE, 1, 0], [feA, Gpio.SET_VALUE, 0, 0], [feA, Gpio.SET_DIRECTION, 2, 1], [feA, Gpio.GET_DIRECTION, 0, 0],
      [feB, Gpio.SET_VALUE, 2, 0], [feB, Gpio.GET_VALUE, 3, 0], [feB, Gpio.SET_IRQ_TYPE, 1, 1], [feB, Gpio.SET_DIRECTION, 2, 0],
    ];
    for (let round = 0; round < 2; round++) {
      // one after another, then all at once
      if (round === 0) {
        for (const [fe, type, gpio, value] of ops) {
          const { value: r, ms } = await timed(() => fe.request(type, gpio, value));
          times.push(ms);
          statuses.push(r.status);
        }
      } else {
        const rs = await Promise.all(ops.map(([fe, type, gpio, value]) => timed(() => fe.request(type, gpio, value))));
        for (const { value: r, ms } of rs) {
          times.push(ms);
          statuses.push(r.status);
        }
      }
    }
    assert.deepEqual(statuses, statuses.map(() => ERR), 'every guest request while Redis is down is answered ERR');
    const maxDown = Math.max(...times);
    assert.ok(maxDown <= DEADLINE_MS + MARGIN_MS, `slowest answer ${maxDown.toFixed(0)} ms exceeds ${DEADLINE_MS} + ${MARGIN_MS} ms`);
    await assert.rejects(client.getLine({ line: off('fa', 0) }), (e: unknown) => isFabricError(e) && e.code === ErrorCode.UNAVAILABLE, 'operator calls fail UNAVAILABLE');

    // ---- Redis back: same processes carry on
    await redis.start();
    const downToUp = await timed(() => until('guest answered OK again', async () => (await feA.request(Gpio.GET_DIRECTION, 0)).status === OK, 30_000, 100));
    await until('guest B answered OK again', async () => (await feB.request(Gpio.GET_DIRECTION, 2)).status === OK, 30_000, 100);
    const after = await durableState(client);
    assert.equal(after, before, 'every acknowledged change survived the Redis restart (and nothing answered ERR was applied)');
    assert.equal(agents.every((a) => a.proc.exitCode === null), true, 'agents kept running');
    assert.equal(serve.proc.exitCode, null, 'service kept running');

    // Events flow again: fb drives w1 low, fa's guest gets its falling-edge interrupt.
    const irq = feA.armIrq(1);
    await acked(feB, Gpio.SET_VALUE, 2, 0);
    assert.equal((await irq).status, 1, 'interrupt on fa:1 after the restart (VALID)');
    assert.equal((await requestOk(feA, Gpio.GET_VALUE, 1)).value, 0);
    // and state changes made after the restart are kept like any other
    await acked(feA, Gpio.SET_VALUE, 0, 0);
    assert.equal((await client.getLine({ line: off('fa', 0) })).outputValue, 0);

    report(t, {
      fault: 'redis-restart',
      outcome: 'all ERR within deadline while down; state equal after restart; interrupts resume; no process restarted',
      figures: {
        requestsWhileDown: statuses.length, errAnswers: statuses.filter((s) => s === ERR).length,
        maxAnswerMsWhileDown: Math.round(maxDown), deadlineMs: DEADLINE_MS,
        recoveryMsAfterRedisUp: Math.round(downToUp.ms), acknowledgedChangesLost: after === before ? 0 : -1,
      },
    });
  } finally {
    await cleanup.run();
  }
});
