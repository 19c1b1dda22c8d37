/**
 * Fault 3: an agent process (`gpio-fabric agent --lease-ttl 1000`) is SIGKILLed: it
 * cannot release its lease. A new agent process for the same chip, started at once,
 * retries its registration until the lease has expired, takes the chip over (logged
 * "took over an expired lease"), gets the persisted line state back, and a guest
 * (frontend) connecting to it works: reads the old state, changes lines, gets
 * interrupts. The dead agent's fencing token is refused from then on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ErrorCode, isFabricError } from '../../services/common/src/errors.ts';
import { createLineStateClient } from '../../services/linestate/src/client.ts';
import { Frontend, Gpio } from '../support/frontend.ts';
import { startRedis } from '../support/redis.ts';
import { Cleanup, report, requestOk, startAgentProc, startServe, timed, until } from './support.ts';

const CHIP = 'ak';
const LEASE_TTL_MS = 1000;

test('an agent killed with SIGKILL: its lease expires, a restarted agent takes the chip over with its state and a reconnecting guest works', async (t) => {
  const cleanup = new Cleanup();
  try {
    const dir = cleanup.tempDir('gf-fault-agent-');
    const redis = await startRedis();
    cleanup.defer('stop redis', () => redis.stop());
    const serve = await startServe('serve', { redis: redis.url, fabric: `fault-agent-${process.pid}` });
    cleanup.defer('stop serve', () => serve.stop());
    const client = createLineStateClient(serve.address, { deadlineMs: 5000 });
    cleanup.defer('close client', () => client.close());
    const socket = join(dir, `${CHIP}.sock`);
    const opts = { socket, chip: CHIP, lines: 4, server: serve.address, deadlineMs: 500, leaseTtlMs: LEASE_TTL_MS };
    const line = (offset: number) => ({ chip: CHIP, line: { $case: 'offset' as const, value: offset } });

    const first = await startAgentProc('agent 1', opts);
    cleanup.defer('stop agent 1', () => first.stop());
    let fe = await Frontend.connect(socket);
    await fe.start();
    for (const [type, gpio, value] of [[Gpio.SET_VALUE, 2, 1], [Gpio.SET_DIRECTION, 2, 1], [Gpio.SET_DIRECTION, 1, 2], [Gpio.SET_IRQ_TYPE, 1, 3], [Gpio.SET_DIRECTION, 3, 2]] as const) {
      await requestOk(fe, type, gpio, value);
    }
    const before = JSON.stringify(await client.listLines({ chip: CHIP }));
    const owner1 = (await client.listChips()).find((c) => c.id === CHIP)?.owner;
    assert.match(owner1 ?? '', new RegExp(`/${first.proc.pid}$`), 'agent 1 owns the chip');
    const oldToken = /lease token (\d+)/.exec(first.output())?.[1];
    assert.ok(oldToken !== undefined, `agent 1 logged its lease token:\n${first.output()}`);

    // ---- kill -9: no release
    await first.kill();
    fe.close();
    const killedAt = performance.now();
    const second = await startAgentProc('agent 2', opts);
    cleanup.defer('stop agent 2', () => second.stop());
    const took = await timed(() => until('agent 2 took the chip over', () => /registered \(lease token (\d+), state restored, took over an expired lease\)/.exec(second.output()) ?? undefined, 20_000));
    const takeoverMs = performance.now() - killedAt;
    const newToken = took.value[1];
    assert.ok(BigInt(newToken ?? '0') > BigInt(oldToken), 'the new lease has a higher fencing token');
    const chip = (await client.listChips()).find((c) => c.id === CHIP);
    assert.match(chip?.owner ?? '', new RegExp(`/${second.proc.pid}$`), 'agent 2 owns the chip');
    assert.equal(chip?.online, true);
    assert.equal(JSON.stringify(await client.listLines({ chip: CHIP })), before, 'the chip state is as agent 1 left it');

    // The dead agent's token is fenced off.
    await assert.rejects(client.lineOp({ chip: CHIP, leaseToken: oldToken, op: 5, offset: 2, value: 0 }),
      (e: unknown) => isFabricError(e) && e.code === ErrorCode.FAILED_PRECONDITION && /stale lease token/.test(e.message));

    // ---- a guest reconnects to the new agent
    fe = await Frontend.connect(socket);
    cleanup.defer('close frontend', () => fe.close());
    await fe.start();
    assert.equal((await requestOk(fe, Gpio.GET_DIRECTION, 2)).value, 1, 'line 2 is still an output');
    assert.equal((await requestOk(fe, Gpio.GET_VALUE, 2)).value, 1, 'line 2 still drives 1');
    assert.equal((await requestOk(fe, Gpio.GET_DIRECTION, 1)).value, 2, 'line 1 is still an input');
    await requestOk(fe, Gpio.SET_IRQ_TYPE, 1, 3);
    const irq = fe.armIrq(1);
    await client.drive({ target: { $case: 'line', value: line(1) }, value: 2 });
    assert.equal((await irq).status, 1, 'an interrupt reaches the reconnected guest');
    await requestOk(fe, Gpio.SET_VALUE, 2, 0);
    assert.equal((await client.getLine({ line: line(2) })).level, 0, 'the new agent changes lines');

    report(t, {
      fault: 'agent-kill',
      outcome: 'lease expired, restarted agent took the chip over (tookOver logged) with state intact; old token fenced; new guest works',
      figures: { leaseTtlMs: LEASE_TTL_MS, killToTakeoverMs: Math.round(takeoverMs), stateDiffs: 0, oldToken: oldToken, newToken: newToken ?? '' },
    });
  } finally {
    await cleanup.run();
  }
});
