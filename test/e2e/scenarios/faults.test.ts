/**
 * Faults with a real guest running: a fabric agent (`gpio-fabric agent --server
 * --deadline 500`) and `gpio-fabric serve --redis` as separate processes.
 *
 * 1. The line-state service stops answering (frozen with SIGSTOP: connections stay open,
 *    nothing answers; then killed: connections refused) while the guest keeps issuing
 *    gpioget: every guest command returns, with an error, within a bound; a service
 *    restarted on the same port and Redis serves the guest again and the agent carries on
 *    by itself.
 * 2. The agent is killed and started again on the same socket while QEMU (chardev
 *    `reconnect-ms`) waits to reconnect. What QEMU 10.0.2 does then is pinned here:
 *    guest GPIO requests block during the gap (the backend owns the queues), and on
 *    reconnect QEMU's vhost-user-gpio aborts (`vhost_dev_start: Assertion
 *    'hdev->vhost_ops' failed`: its disconnect path runs vhost_dev_cleanup() and the
 *    connect path never runs vhost_dev_init() again). The restarted agent itself is
 *    healthy: a new QEMU attached to it gets the chip and its state back from the fabric.
 *    If a QEMU upgrade fixes the reconnect, this test fails and the expectation (and
 *    docs/e2e-scenarios.md) must change to "the same guest works again".
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { bootGuest, type Guest } from '../qemu.ts';
import { freePort, startRedis, type RedisHandle } from '../../support/redis.ts';
import {
  Stack, cliOk, context, deferGuest, getLine, reconnectingGpio, sleep, startAgentProc, startServe, until,
  type FabricProc,
} from './support.ts';

const CHIP = 'vm-f';
/**
 * The agent's request deadline. Small, so a dead service costs the guest little; 500 ms
 * was too tight for the checks after recovery on a 2-core machine at load 17 (a request
 * to the just-restarted service sometimes took longer and was answered ERR, as designed).
 */
const DEADLINE_MS = 1000;

describe('faults with a real guest running', () => {
  const stack = new Stack();
  let dir: string;
  let redis: RedisHandle;
  let fabric: string;
  let listen: string;
  let serve: FabricProc & { address: string };
  let agent: FabricProc;
  let guest: Guest;
  let consoleLog: string;

  const startAgent = (): ReturnType<typeof startAgentProc> =>
    startAgentProc(`agent ${CHIP}`, { socket: join(dir, `${CHIP}.sock`), chip: CHIP, lines: 4, names: ['out0', 'in0', 'in1', ''], server: listen, deadlineMs: DEADLINE_MS, leaseTtlMs: 2000 });

  before(async () => {
    dir = stack.tempDir('gf-e2e-faults-');
    redis = await startRedis();
    stack.defer('stop redis', () => redis.stop());
    fabric = `e2e-faults-${process.pid}`;
    listen = `127.0.0.1:${await freePort()}`;
    serve = await startServe('serve', { redis: redis.url, fabric, listen });
    stack.defer('stop serve', () => serve.stop());
    agent = await startAgent();
    stack.defer('stop agent', () => agent.stop());
    const rc = reconnectingGpio(join(dir, `${CHIP}.sock`), join(dir, 'qmp.sock'));
    consoleLog = join(dir, 'console.log');
    const [g] = await Promise.all([bootGuest({ name: 'faults', log: consoleLog, extraArgs: rc.extraArgs }), rc.attach()]);
    guest = g;
    deferGuest(stack, guest);
    await cliOk(['bias', `${CHIP}:in0`, 'up', '--server', listen]);
  });

  after(() => stack.close());

  const ctx = (): string => context(guest, serve, agent);

  /** Runs `n` gpiogets of in0 in the guest, each bounded by `timeout 10`, and returns their statuses and output. */
  async function gpiogets(n: number): Promise<{ codes: number[]; output: string; ms: number }> {
    const t0 = Date.now();
    const r = await guest.run(`for i in $(seq ${n}); do timeout 10 gpioget -c gpiochip0 --numeric in0; echo "status=$?"; done`, { timeoutMs: n * 12_000 });
    const codes = [...r.output.matchAll(/status=(\d+)/g)].map((m) => Number(m[1]));
    assert.equal(codes.length, n, r.output);
    return { codes, output: r.output, ms: Date.now() - t0 };
  }

  it('before any fault the guest reads the pull the fabric set', async () => {
    assert.match(await guest.check('gpiodetect'), /^gpiochip0 \[virtio0\] \(4 lines\)$/m, ctx());
    assert.equal((await guest.check('gpioget -c gpiochip0 --numeric in0')).trim(), '1');
  });

  it('a frozen service: every guest request fails within the agent deadline and works again when it thaws', async (t) => {
    const pid = serve.proc.pid;
    assert.ok(pid !== undefined);
    process.kill(pid, 'SIGSTOP');
    try {
      const { codes, output, ms } = await gpiogets(4);
      t.diagnostic(`4 gpiogets against the frozen service returned in ${ms} ms`);
      // gpioget exits 1 with the driver's error; 124/143 would mean `timeout` had to kill it
      assert.deepEqual(codes, [1, 1, 1, 1], `${output}\n${ctx()}`);
      assert.match(output, /gpioget: unable to request lines: Invalid argument/);
      assert.match(agent.output(), /answered ERR/);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await until('gpioget to work again after SIGCONT', () => guest.run('gpioget -c gpiochip0 --numeric in0'), (r) => r.code === 0, 20_000, 300);
    assert.equal((await guest.check('gpioget -c gpiochip0 --numeric in0')).trim(), '1');
  });

  it('a stopped service: requests fail fast and never hang; restarted on the same port and Redis it serves the guest again', async (t) => {
    assert.equal(await serve.stop(), 0, serve.output());
    const { codes, output, ms } = await gpiogets(4);
    t.diagnostic(`4 gpiogets against the stopped service returned in ${ms} ms`);
    assert.deepEqual(codes, [1, 1, 1, 1], `${output}\n${ctx()}`);
    assert.match(output, /gpioget: unable to request lines: Invalid argument/);
    // outputs and interrupts are refused too
    const set = await guest.run('timeout 10 gpioset -c gpiochip0 -t0 out0=1; echo "status=$?"');
    assert.match(set.output, /status=1/, set.output);
    const mon = await guest.run('timeout 10 gpiomon -c gpiochip0 -n 1 in1; echo "status=$?"');
    assert.match(mon.output, /unable to request lines.*\n.*status=1/, mon.output);
    await sleep(2000); // a few seconds of outage while the agent retries in the background

    serve = await startServe('serve (restarted)', { redis: redis.url, fabric, listen });
    // recovered = three gpiogets in a row succeed (a request the restarting service is
    // slow to answer may still be ERR at the agent's deadline, as designed)
    const after = await until('three gpiogets in a row to work again', () => gpiogets(3), (r) => r.codes.every((c) => c === 0), 30_000, 300);
    assert.deepEqual(after.output.split('\n').filter((l) => /^[01]$/.test(l)), ['1', '1', '1'], 'the pull survived in Redis');
    // the agent is registered again and the guest drives a line the fabric sees
    let lastTry = '';
    await until('a gpioset in the guest to hold out0 as seen by the fabric', async () => {
      const held = await guest.background('exec gpioset -c gpiochip0 out0=1');
      try {
        return await until('out0 driven', () => getLine(listen, `${CHIP}:out0`), (l) => l.direction === 'out' && l.level === 1, 5000, 200).then(() => true, (e: unknown) => {
          lastTry = (e as Error).message;
          return false;
        });
      } finally {
        lastTry += `\ngpioset printed: ${await held.read()}`;
        await held.kill();
      }
    }, (ok) => ok, 40_000, 0).catch((e: unknown) => { throw new Error(`${(e as Error).message}\n${lastTry}\n${ctx()}`); });
    const chips = JSON.parse(await cliOk(['ls', 'chips', '--json', '--server', listen])) as { id: string; online: boolean }[];
    assert.deepEqual(chips.map((c) => [c.id, c.online]), [[CHIP, true]]);
  });

  it('an agent restart: guest requests block during the gap; QEMU 10.0.2 aborts on reconnect; a new QEMU on the restarted agent works', async () => {
    await agent.kill(); // a crash: no lease release, the socket just closes
    const blocked = await guest.background('gpioget -c gpiochip0 --numeric in0; echo "status=$?"');
    await sleep(2500);
    assert.equal(await blocked.running(), true, 'during the gap the request waits for the device');
    assert.equal(await blocked.read(), '');
    await until(`${CHIP} offline after its lease ran out`, async () => JSON.parse(await cliOk(['ls', 'chips', '--json', '--server', listen])) as { id: string; online: boolean }[], (c) => c[0]?.online === false, 15_000, 500);

    agent = await startAgent();
    // QEMU reconnects within reconnect-ms and aborts in vhost_dev_start
    await until('QEMU to react to the reconnect', async () => guest.exited, (x) => x, 30_000, 200).catch((e: unknown) => {
      throw new Error(`QEMU survived the reconnect: update this test and docs/e2e-scenarios.md (${(e as Error).message})\n${ctx()}`);
    });
    const log = readFileSync(consoleLog, 'utf8');
    assert.match(log, /vhost_dev_start: Assertion `hdev->vhost_ops' failed/, log.slice(-2000));

    // the restarted agent is fine: a new VM on the same socket sees the chip and its state
    const g2 = await bootGuest({ name: 'faults-2', sockets: [join(dir, `${CHIP}.sock`)], log: join(dir, 'console-2.log') });
    deferGuest(stack, g2);
    assert.match(await g2.check('gpioinfo -c gpiochip0'), /line\s+1:\s+"in0"/);
    assert.equal((await g2.check('gpioget -c gpiochip0 --numeric in0')).trim(), '1', context(g2, agent));
    const chips = JSON.parse(await cliOk(['ls', 'chips', '--json', '--server', listen])) as { id: string; online: boolean }[];
    assert.deepEqual(chips.map((c) => [c.id, c.online]), [[CHIP, true]]);
  });
});
