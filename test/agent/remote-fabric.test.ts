/**
 * Remote backend only: agents as the fabric sees them, against a real line-state service
 * on a real Redis. Two chips wired together, the service going away and coming back on
 * the same port, and an agent restart getting the chip's persisted state back.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startAgent, type RunningAgent } from '../../services/agent/src/agent.ts';
import { DriveMode, DriveValue, IrqType, Pull } from '../../services/common/src/line-model.ts';
import type { LineStore } from '../../services/linestate/src/store/store.ts';
import { Frontend, Gpio, type FrontendOptions } from '../support/frontend.ts';
import { startRedis, type RedisHandle } from '../support/redis.ts';
import { driveRemote, quietLog, redisStore, startService, tempDir, uniqueId, waitFor, type Service } from './fixtures.ts';

const OK = 0;
const ERR = 1;
const VALID = 1;
const INVALID = 0;
const OUT = 1;
const IN = 2;

interface Vm {
  readonly agent: RunningAgent;
  readonly fe: Frontend;
  close(): Promise<void>;
}

describe('remote backend: agents wired through the line-state service (Redis store)', () => {
  let redis: RedisHandle;
  let fabric: string;
  let store: LineStore;
  let service: Service;
  const dir = tempDir();

  before(async () => {
    redis = await startRedis();
    fabric = uniqueId('fab');
    store = await redisStore(redis.url, fabric);
    service = await startService(store);
  });
  after(async () => {
    await service.stop();
    await store.close();
    await redis.stop();
    dir.rm();
  });

  const vm = async (chip: string, server: string, o: { requestDeadlineMs?: number; frontend?: FrontendOptions } = {}): Promise<Vm> => {
    const agent = await startAgent({
      socketPath: dir.path(`${chip}.sock`),
      chip,
      ngpio: 4,
      backend: { kind: 'remote', server },
      log: quietLog,
      ...(o.requestDeadlineMs !== undefined ? { requestDeadlineMs: o.requestDeadlineMs } : {}),
    });
    const fe = await Frontend.connect(agent.socketPath, o.frontend ?? {});
    try {
      await fe.start();
    } catch (e) {
      fe.close();
      await agent.close();
      throw e;
    }
    return {
      agent,
      fe,
      close: async () => {
        fe.close();
        await agent.close();
      },
    };
  };
  const ok = async (v: Vm, type: number, gpio: number, value = 0): Promise<number> => {
    const r = await v.fe.request(type, gpio, value);
    assert.deepEqual([r.status, r.usedLen], [OK, 2], `type ${type} gpio ${gpio} value ${value} on ${v.agent.chip}`);
    return r.value;
  };
  const ref = (chip: string, offset: number) => ({ chip, line: { $case: 'offset' as const, value: offset } });

  it('SET_VALUE + SET_DIRECTION OUT on chip A raises chip B\'s interrupt, with edge filtering; N toggles = N rising interrupts', async () => {
    const a = await vm(uniqueId('a'), service.address);
    const b = await vm(uniqueId('b'), service.address);
    try {
      await service.client.wire({ name: uniqueId('net'), members: [ref(a.agent.chip, 0), ref(b.agent.chip, 0)], pull: Pull.NONE, driveMode: DriveMode.PUSH_PULL });
      await ok(b, Gpio.SET_DIRECTION, 0, IN);
      await ok(b, Gpio.SET_IRQ_TYPE, 0, IrqType.EDGE_RISING);
      let armed = b.fe.armIrq(0);
      await ok(a, Gpio.SET_VALUE, 0, 1);
      assert.equal(await ok(b, Gpio.GET_VALUE, 0), 0, 'A is not an output yet: the net floats low');
      await ok(a, Gpio.SET_DIRECTION, 0, OUT);
      assert.deepEqual(await armed, { status: VALID, usedLen: 1 }, 'B interrupted by A becoming an output driving 1');
      assert.equal(await ok(b, Gpio.GET_VALUE, 0), 1, 'B reads the net');

      // falling edge: filtered out on a rising-only line
      armed = b.fe.armIrq(0);
      await waitFor(() => b.agent.device.irqState(0)?.unmasked === true, 'B armed');
      await ok(a, Gpio.SET_VALUE, 0, 0);
      await waitFor(() => b.agent.backend.levels()[0] === 0, 'B sees the falling edge');
      assert.deepEqual(b.agent.device.irqState(0), { type: IrqType.EDGE_RISING, unmasked: true, latched: false });

      // N toggles, re-armed each time: exactly N rising interrupts, in order
      const N = 15;
      const seen: number[] = [];
      for (let i = 0; i < N; i++) {
        if (i > 0) armed = b.fe.armIrq(0);
        await ok(a, Gpio.SET_VALUE, 0, 1);
        const e = await armed;
        assert.deepEqual(e, { status: VALID, usedLen: 1 }, `toggle ${i}`);
        seen.push(i);
        await ok(a, Gpio.SET_VALUE, 0, 0);
      }
      assert.deepEqual(seen, Array.from({ length: N }, (_, i) => i));
      await waitFor(() => b.agent.backend.levels()[0] === 0, 'B sees the last falling edge');
      armed = b.fe.armIrq(0);
      await waitFor(() => b.agent.device.irqState(0)?.unmasked === true, 'B armed');
      assert.equal(b.agent.device.irqState(0)?.latched, false, 'no extra rising edge latched');
      await ok(b, Gpio.SET_IRQ_TYPE, 0, IrqType.NONE);
      assert.deepEqual(await armed, { status: INVALID, usedLen: 1 }, 'no interrupt beyond the N');
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('service unreachable: requests answered ERR within the deadline, agent keeps serving; service back on the same port: requests and interrupts work again', async () => {
    const ownStore = await redisStore(redis.url, fabric);
    const own = await startService(ownStore);
    const port = own.server.port;
    let back: Service | undefined;
    let backStore: LineStore | undefined;
    const v = await vm(uniqueId('o'), own.address, { requestDeadlineMs: 300, frontend: { timeoutMs: 5000 } });
    try {
      await ok(v, Gpio.SET_DIRECTION, 1, OUT);
      await ok(v, Gpio.SET_VALUE, 1, 1);
      await ok(v, Gpio.SET_IRQ_TYPE, 2, IrqType.EDGE_RISING);
      await own.stop();

      for (const [type, gpio, value] of [[Gpio.GET_VALUE, 1, 0], [Gpio.SET_VALUE, 3, 1], [Gpio.GET_DIRECTION, 0, 0], [Gpio.SET_DIRECTION, 2, IN]] as const) {
        const r = await v.fe.request(type, gpio, value);
        assert.deepEqual([r.status, r.value, r.usedLen], [ERR, 0, 2], `type ${type} answered ERR while the service is down`);
      }
      const names = await v.fe.request(Gpio.GET_NAMES, 0, 0, 1);
      assert.deepEqual([names.status, names.usedLen], [OK, 1], 'local requests still answered');
      assert.deepEqual([...(await v.fe.getConfig(0, 2))], [4, 0]);
      assert.equal(v.fe.closed, false, 'the vhost-user connection survives');

      backStore = await redisStore(redis.url, fabric);
      back = await startService(backStore, `127.0.0.1:${port}`);
      const deadline = Date.now() + 20_000;
      for (;;) {
        const r = await v.fe.request(Gpio.GET_VALUE, 1);
        if (r.status === OK) {
          assert.equal(r.value, 1, 'state kept in Redis across the outage');
          break;
        }
        assert.ok(Date.now() < deadline, 'requests succeed again once the service is back');
        await new Promise((res) => setTimeout(res, 100));
      }
      assert.equal(await ok(v, Gpio.GET_DIRECTION, 1), OUT);
      // the event stream resumed: a fabric-side edge reaches the guest
      const armed = v.fe.armIrq(2);
      await waitFor(() => v.agent.device.irqState(2)?.unmasked === true, 'armed');
      await driveRemote(back.client, v.agent.chip, 2, DriveValue.HIGH);
      assert.deepEqual(await armed, { status: VALID, usedLen: 1 });
    } finally {
      await v.close();
      await own.stop();
      await ownStore.close();
      await back?.stop();
      await backStore?.close();
    }
  });

  it('an agent restarted on the same chip gets the persisted line state back', async () => {
    const chip = uniqueId('r');
    const first = await vm(chip, service.address);
    try {
      await ok(first, Gpio.SET_DIRECTION, 1, OUT);
      await ok(first, Gpio.SET_VALUE, 1, 1);
      await ok(first, Gpio.SET_DIRECTION, 2, IN);
      await ok(first, Gpio.SET_VALUE, 3, 1);
    } finally {
      await first.close();
    }
    const second = await vm(chip, service.address);
    try {
      assert.equal(await ok(second, Gpio.GET_DIRECTION, 1), OUT);
      assert.equal(await ok(second, Gpio.GET_VALUE, 1), 1);
      assert.equal(await ok(second, Gpio.GET_DIRECTION, 2), IN);
      assert.equal(await ok(second, Gpio.GET_DIRECTION, 3), 0);
      await ok(second, Gpio.SET_DIRECTION, 3, OUT);
      assert.equal(await ok(second, Gpio.GET_VALUE, 3), 1, 'a stored value set before the restart drives once OUT');
    } finally {
      await second.close();
    }
  });
});
