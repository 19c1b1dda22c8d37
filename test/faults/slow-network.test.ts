/**
 * Fault 4: a slow or dead network, injected with the TCP proxy (test/support/tcp-proxy.ts)
 * on both hops:
 *
 *   agent process ──proxy S──▶ serve process ──proxy R──▶ redis-server
 *
 *  a. Redis slow: proxy R delays every chunk by 700 ms each way (round trip 1.4 s, above
 *     the agent's 500 ms deadline, below Redis' 2 s command timeout);
 *  b. service slow: proxy S delays by 700 ms each way;
 *  c. service unreachable without a reset: proxy S drops every byte (blackhole), then
 *     resets the connections.
 *
 * In each phase every guest request is answered ERR within the deadline + margin (never
 * hangs), the agent process stays up and keeps its chip; once the fault is removed,
 * requests succeed again and interrupts are delivered, with no restart of anything.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createLineStateClient } from '../../services/linestate/src/client.ts';
import { Frontend, Gpio } from '../support/frontend.ts';
import { startRedis } from '../support/redis.ts';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.ts';
import { Cleanup, report, requestOk, startAgentProc, startServe, timed, until, type ReliabilityRow } from './support.ts';

const CHIP = 'sn';
const DEADLINE_MS = 500;
const DELAY_MS = 700;
const MARGIN_MS = 1000;
const OK = 0;
const ERR = 1;

test('slow Redis, slow service, blackholed service: guests get ERR within the deadline, the agent stays healthy and recovers by itself', async (t) => {
  const cleanup = new Cleanup();
  let agentOutput = (): string => '';
  try {
    const dir = cleanup.tempDir('gf-fault-slow-');
    const redis = await startRedis();
    cleanup.defer('stop redis', () => redis.stop());
    const proxyR = await startTcpProxy({ targetPort: redis.port });
    cleanup.defer('close redis proxy', () => proxyR.close());
    const serve = await startServe('serve', { redis: `redis://127.0.0.1:${proxyR.port}`, fabric: `fault-slow-${process.pid}` });
    cleanup.defer('stop serve', () => serve.stop());
    const proxyS = await startTcpProxy({ targetPort: Number(serve.address.split(':')[1]) });
    cleanup.defer('close service proxy', () => proxyS.close());
    const socket = join(dir, `${CHIP}.sock`);
    const agent = await startAgentProc('agent', { socket, chip: CHIP, lines: 4, server: proxyS.address, deadlineMs: DEADLINE_MS });
    cleanup.defer('stop agent', () => agent.stop());
    agentOutput = agent.output;
    const fe = await Frontend.connect(socket);
    cleanup.defer('close frontend', () => fe.close());
    await fe.start();
    const op = createLineStateClient(serve.address, { deadlineMs: 10_000 });
    cleanup.defer('close operator client', () => op.close());
    await requestOk(fe, Gpio.SET_DIRECTION, 1, 2);
    await requestOk(fe, Gpio.SET_IRQ_TYPE, 1, 3);
    const owner = (await op.listChips()).find((c) => c.id === CHIP)?.owner;
    let driven = 0;

    const phase = async (name: string, inject: () => void, heal: () => void, proxy: TcpProxy): Promise<ReliabilityRow['figures']> => {
      inject();
      const ops: [number, number, number][] = [[Gpio.GET_VALUE, 1, 0], [Gpio.SET_VALUE, 0, 1], [Gpio.GET_DIRECTION, 2, 0], [Gpio.SET_DIRECTION, 3, 1], [Gpio.GET_VALUE, 0, 0], [Gpio.SET_VALUE, 0, 0]];
      const times: number[] = [];
      const statuses: number[] = [];
      for (const [type, gpio, value] of ops) {
        const { value: r, ms } = await timed(() => fe.request(type, gpio, value));
        times.push(ms);
        statuses.push(r.status);
      }
      const all = await Promise.all(ops.map(([type, gpio, value]) => timed(() => fe.request(type, gpio, value))));
      for (const { value: r, ms } of all) {
        times.push(ms);
        statuses.push(r.status);
      }
      t.diagnostic(`${name}: answer times (ms) ${times.map((x) => x.toFixed(0)).join(',')}; statuses ${statuses.join(',')}`);
      assert.deepEqual(statuses, statuses.map(() => ERR), `${name}: every guest request is answered ERR`);
      const maxMs = Math.max(...times);
      assert.ok(maxMs <= DEADLINE_MS + MARGIN_MS, `${name}: slowest answer ${maxMs.toFixed(0)} ms exceeds ${DEADLINE_MS} + ${MARGIN_MS} ms`);
      assert.equal(agent.proc.exitCode, null, `${name}: the agent is still running`);
      heal();
      const back = await timed(() => until(`${name}: guest answered OK again`, async () => (await fe.request(Gpio.GET_DIRECTION, 1)).status === OK, 30_000, 100));
      // Interrupts flow again over the (resumed) event stream.
      const irq = fe.armIrq(1);
      driven ^= 1;
      await op.drive({ target: { $case: 'line', value: { chip: CHIP, line: { $case: 'offset', value: 1 } } }, value: driven === 1 ? 2 : 1 });
      assert.equal((await irq).status, 1, `${name}: interrupt delivered after recovery`);
      assert.equal((await requestOk(fe, Gpio.GET_VALUE, 1)).value, driven, `${name}: the guest reads the driven level`);
      const chip = (await op.listChips()).find((c) => c.id === CHIP);
      assert.equal(chip?.owner, owner, `${name}: the agent kept its chip`);
      assert.equal(chip?.online, true, `${name}: the chip is online`);
      return { requests: statuses.length, errAnswers: statuses.filter((s) => s === ERR).length, maxAnswerMs: Math.round(maxMs), recoveryMs: Math.round(back.ms), connectionsSoFar: proxy.stats().accepted };
    };

    const slowRedis = await phase('slow Redis', () => proxyR.setDelay(DELAY_MS), () => proxyR.setDelay(0), proxyR);
    const slowService = await phase('slow service', () => proxyS.setDelay(DELAY_MS), () => proxyS.setDelay(0), proxyS);
    const blackhole = await phase('blackholed service', () => proxyS.setBlackhole(true), () => proxyS.setBlackhole(false), proxyS);
    assert.equal(agent.proc.exitCode, null);

    for (const [fault, figures] of [['slow-redis', slowRedis], ['slow-service', slowService], ['blackholed-service', blackhole]] as const) {
      report(t, { fault, outcome: 'all ERR within deadline; recovered by itself; chip kept; interrupts delivered after', figures: { ...figures, delayMs: fault === 'blackholed-service' ? 'inf' : DELAY_MS, deadlineMs: DEADLINE_MS } });
    }
  } catch (e) {
    t.diagnostic(`agent output:\n${agentOutput()}`);
    throw e;
  } finally {
    await cleanup.run();
  }
});
