/**
 * The agent's guest-visible behaviour over a real vhost-user socket, as one suite run
 * against each line backend (device-standalone.test.ts, device-remote.test.ts): config
 * space, every requestq message with its exact used length, bad input, and every
 * interrupt rule through the eventq with edges made on the fabric side.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DriveValue, IrqType } from '../../services/common/src/line-model.ts';
import { Gpio, type EventCompletion } from '../support/frontend.ts';
import { DEFAULT_NAMES, waitFor, type AgentEnv, type EnvFactory, type EnvOptions } from './fixtures.ts';

const OK = 0;
const ERR = 1;
const VALID = 1;
const INVALID = 0;
const Dir = { NONE: 0, OUT: 1, IN: 2 } as const;

/** The names block of DEFAULT_NAMES: one NUL-terminated string per line. */
const NAMES_BLOCK = Buffer.from(DEFAULT_NAMES.map((n) => `${n}\0`).join(''), 'latin1');

export function deviceSuite(factory: EnvFactory): void {
  describe(`agent over a real socket, ${factory.kind} backend`, () => {
    before(() => factory.setup());
    after(() => factory.teardown());

    const withEnv = async (fn: (env: AgentEnv) => Promise<void>, opts: EnvOptions = {}): Promise<void> => {
      const env = await factory.make(opts);
      try {
        await fn(env);
      } finally {
        await env.close();
      }
    };
    const ok = async (env: AgentEnv, type: number, gpio: number, value = 0): Promise<number> => {
      const r = await env.fe.request(type, gpio, value);
      assert.deepEqual([r.status, r.usedLen], [OK, 2], `type ${type} gpio ${gpio} value ${value}`);
      return r.value;
    };
    const setIrq = async (env: AgentEnv, gpio: number, type: number): Promise<void> => {
      const r = await env.fe.request(Gpio.SET_IRQ_TYPE, gpio, type);
      assert.deepEqual([r.status, r.value, r.usedLen], [OK, 0, 2], `SET_IRQ_TYPE ${gpio} ${type}`);
    };
    /**
     * Arm and wait until the device holds the buffer (line unmasked). The completion promise
     * comes back in a box: returned bare from an async function it would be awaited.
     */
    const armPending = async (env: AgentEnv, gpio: number): Promise<{ readonly done: Promise<EventCompletion> }> => {
      const done = env.fe.armIrq(gpio);
      await waitFor(() => env.agent.device.irqState(gpio)?.unmasked === true, `line ${gpio} unmasked`);
      return { done };
    };
    /** A pending buffer is given back INVALID by SET_IRQ_TYPE NONE: proves it did not fire. */
    const expectStillPending = async (env: AgentEnv, gpio: number, p: Promise<EventCompletion>): Promise<void> => {
      assert.equal(env.agent.device.irqState(gpio)?.unmasked, true, `line ${gpio} still unmasked`);
      await setIrq(env, gpio, IrqType.NONE);
      assert.deepEqual(await p, { status: INVALID, usedLen: 1 });
    };

    it('config space through GET_CONFIG at every offset and size', () =>
      withEnv(async ({ fe }) => {
        const size = NAMES_BLOCK.length;
        assert.deepEqual([...(await fe.getConfig(0, 8))], [8, 0, 0, 0, size, 0, 0, 0]);
        assert.deepEqual([...(await fe.getConfig(0, 2))], [8, 0], 'ngpio le16');
        assert.deepEqual([...(await fe.getConfig(2, 2))], [0, 0], 'padding');
        assert.deepEqual([...(await fe.getConfig(4, 4))], [size, 0, 0, 0], 'gpio_names_size le32');
        for (let off = 0; off < 8; off++) {
          assert.deepEqual([...(await fe.getConfig(off, 1))], [[8, 0, 0, 0, size, 0, 0, 0][off]], `byte ${off}`);
        }
      }));

    it('GET_NAMES: status then the exact names block, used length 1 + gpio_names_size', () =>
      withEnv(async ({ fe }) => {
        const exact = await fe.request(Gpio.GET_NAMES, 0, 0, 1 + NAMES_BLOCK.length);
        assert.equal(exact.usedLen, 1 + NAMES_BLOCK.length);
        assert.deepEqual([...exact.bytes], [OK, ...NAMES_BLOCK]);
        const roomy = await fe.request(Gpio.GET_NAMES, 5, 77, 1 + NAMES_BLOCK.length + 16);
        assert.equal(roomy.usedLen, 1 + NAMES_BLOCK.length, 'used length is not the buffer size; gpio and value ignored');
        assert.deepEqual([...roomy.bytes.subarray(0, roomy.usedLen)], [OK, ...NAMES_BLOCK]);
        const short = await fe.request(Gpio.GET_NAMES, 0, 0, NAMES_BLOCK.length);
        assert.deepEqual([short.status, short.usedLen], [ERR, 2], 'a buffer that cannot hold the block is answered ERR');
      }));

    it('GET_NAMES without names: [OK], used length 1; config says 0', () =>
      withEnv(
        async ({ fe }) => {
          assert.deepEqual([...(await fe.getConfig(0, 8))], [3, 0, 0, 0, 0, 0, 0, 0]);
          const r = await fe.request(Gpio.GET_NAMES, 0, 0, 1);
          assert.deepEqual([r.status, r.usedLen], [OK, 1]);
        },
        { ngpio: 3, names: [] },
      ));

    it('GET/SET_DIRECTION and GET/SET_VALUE with exact used lengths; values of GET_* ignored', () =>
      withEnv(async (env) => {
        for (let g = 0; g < 8; g++) assert.equal(await ok(env, Gpio.GET_DIRECTION, g), Dir.NONE);
        assert.equal(await ok(env, Gpio.SET_DIRECTION, 0, Dir.IN), 0);
        assert.equal(await ok(env, Gpio.GET_DIRECTION, 0, 123), Dir.IN);
        assert.equal(await ok(env, Gpio.GET_VALUE, 0, 9), 0, 'an input with no driver and no pull reads 0');
        assert.equal(await ok(env, Gpio.SET_DIRECTION, 1, Dir.OUT), 0);
        assert.equal(await ok(env, Gpio.SET_VALUE, 1, 1), 0);
        assert.equal(await ok(env, Gpio.GET_DIRECTION, 1), Dir.OUT);
        assert.equal(await ok(env, Gpio.GET_VALUE, 1), 1);
        assert.equal(await ok(env, Gpio.SET_VALUE, 1, 0), 0);
        assert.equal(await ok(env, Gpio.GET_VALUE, 1), 0);
        assert.equal(await ok(env, Gpio.SET_IRQ_TYPE, 2, IrqType.EDGE_BOTH), 0);
        assert.equal(await ok(env, Gpio.SET_IRQ_TYPE, 2, IrqType.NONE), 0);
        // a 2-byte response in a bigger buffer: used length still 2
        const big = await env.fe.request(Gpio.GET_DIRECTION, 1, 0, 16);
        assert.deepEqual([big.status, big.value, big.usedLen], [OK, Dir.OUT, 2]);
      }));

    it('SET_VALUE before OUT is stored and applies when the line becomes OUT', () =>
      withEnv(async (env) => {
        await ok(env, Gpio.SET_DIRECTION, 3, Dir.IN);
        await ok(env, Gpio.SET_VALUE, 3, 1);
        assert.equal(await ok(env, Gpio.GET_VALUE, 3), 0, 'an input is not driven by its stored value');
        await ok(env, Gpio.SET_DIRECTION, 3, Dir.OUT);
        assert.equal(await ok(env, Gpio.GET_VALUE, 3), 1, 'the stored value drives once OUT');
        await ok(env, Gpio.SET_VALUE, 4, 1);
        await ok(env, Gpio.SET_DIRECTION, 4, Dir.OUT);
        assert.equal(await ok(env, Gpio.GET_VALUE, 4), 1, 'also from direction NONE');
      }));

    it('SET_DIRECTION NONE discards the line state', () =>
      withEnv(async (env) => {
        await ok(env, Gpio.SET_VALUE, 5, 1);
        await ok(env, Gpio.SET_DIRECTION, 5, Dir.OUT);
        assert.equal(await ok(env, Gpio.GET_VALUE, 5), 1);
        await ok(env, Gpio.SET_DIRECTION, 5, Dir.NONE);
        assert.equal(await ok(env, Gpio.GET_DIRECTION, 5), Dir.NONE);
        assert.equal(await ok(env, Gpio.GET_VALUE, 5), 0, 'no longer driven');
        await ok(env, Gpio.SET_DIRECTION, 5, Dir.OUT);
        assert.equal(await ok(env, Gpio.GET_VALUE, 5), 0, 'the stored value was discarded');
      }));

    it('bad requests are answered ERR with used length 2 and change nothing', () =>
      withEnv(async (env) => {
        await ok(env, Gpio.SET_DIRECTION, 1, Dir.OUT);
        await ok(env, Gpio.SET_VALUE, 1, 1);
        const bad: [string, number, number, number][] = [
          ['type 0', 0, 1, 0],
          ['type 7', 7, 1, 0],
          ['type 0xffff', 0xffff, 1, 0],
          ['gpio = ngpio', Gpio.GET_VALUE, 8, 0],
          ['gpio 0xffff', Gpio.SET_DIRECTION, 0xffff, 1],
          ['SET_VALUE 2', Gpio.SET_VALUE, 1, 2],
          ['SET_VALUE 0xffffffff', Gpio.SET_VALUE, 1, 0xffffffff],
          ['SET_DIRECTION 3', Gpio.SET_DIRECTION, 1, 3],
          ['SET_IRQ_TYPE 5', Gpio.SET_IRQ_TYPE, 1, 5],
          ['SET_IRQ_TYPE 7', Gpio.SET_IRQ_TYPE, 1, 7],
          ['SET_IRQ_TYPE 9', Gpio.SET_IRQ_TYPE, 1, 9],
          ['SET_IRQ_TYPE 16', Gpio.SET_IRQ_TYPE, 1, 16],
        ];
        for (const [what, type, gpio, value] of bad) {
          const r = await env.fe.request(type, gpio, value);
          assert.deepEqual([r.status, r.value, r.usedLen], [ERR, 0, 2], what);
        }
        assert.equal(await ok(env, Gpio.GET_DIRECTION, 1), Dir.OUT);
        assert.equal(await ok(env, Gpio.GET_VALUE, 1), 1);
        assert.equal(env.agent.device.irqState(1)?.type, IrqType.NONE);
      }));

    it('interrupt: enable + unmask, then an edge from the fabric side completes the buffer VALID (used length 1)', () =>
      withEnv(async (env) => {
        await ok(env, Gpio.SET_DIRECTION, 1, Dir.IN);
        await setIrq(env, 1, IrqType.EDGE_RISING);
        const p = (await armPending(env, 1)).done;
        await env.drive(1, DriveValue.HIGH);
        assert.deepEqual(await p, { status: VALID, usedLen: 1 });
        assert.equal(await ok(env, Gpio.GET_VALUE, 1), 1, 'the guest reads the driven level');
        assert.equal(env.agent.device.irqState(1)?.unmasked, false, 'firing masks the line');
      }));

    it('interrupt: an edge while masked is latched (once) and delivered on unmask', () =>
      withEnv(async (env) => {
        await setIrq(env, 2, IrqType.EDGE_RISING);
        await env.drive(2, DriveValue.HIGH);
        await env.drive(2, DriveValue.LOW);
        await env.drive(2, DriveValue.HIGH);
        await env.waitLevel(2, 1);
        assert.equal(env.agent.device.irqState(2)?.latched, true);
        assert.deepEqual(await env.fe.armIrq(2), { status: VALID, usedLen: 1 }, 'the latched edge fires on unmask');
        const p = (await armPending(env, 2)).done;
        await expectStillPending(env, 2, p); // several edges while masked are one interrupt
      }));

    it('interrupt: no latch while disabled', () =>
      withEnv(async (env) => {
        await env.drive(6, DriveValue.HIGH);
        await env.waitLevel(6, 1);
        await setIrq(env, 6, IrqType.EDGE_BOTH);
        const p = (await armPending(env, 6)).done;
        await expectStillPending(env, 6, p);
      }));

    for (const [name, type, rising, falling] of [
      ['rising', IrqType.EDGE_RISING, true, false],
      ['falling', IrqType.EDGE_FALLING, false, true],
      ['both', IrqType.EDGE_BOTH, true, true],
    ] as const) {
      it(`interrupt: edge filtering, ${name}`, () =>
        withEnv(async (env) => {
          const g = 3;
          await setIrq(env, g, type);
          // rising edge 0 -> 1
          let p = (await armPending(env, g)).done;
          await env.drive(g, DriveValue.HIGH);
          await env.waitLevel(g, 1);
          if (rising) assert.deepEqual(await p, { status: VALID, usedLen: 1 }, 'rising fires');
          else {
            assert.equal(env.agent.device.irqState(g)?.unmasked, true, 'rising ignored');
            assert.equal(env.agent.device.irqState(g)?.latched, false);
          }
          // falling edge 1 -> 0
          if (rising) p = (await armPending(env, g)).done;
          await env.drive(g, DriveValue.LOW);
          await env.waitLevel(g, 0);
          if (falling) assert.deepEqual(await p, { status: VALID, usedLen: 1 }, 'falling fires');
          else await expectStillPending(env, g, p);
        }));
    }

    for (const [name, type, active] of [
      ['high', IrqType.LEVEL_HIGH, DriveValue.HIGH],
      ['low', IrqType.LEVEL_LOW, DriveValue.LOW],
    ] as const) {
      it(`interrupt: level-${name} fires on unmask while active, again after re-arm, not while inactive`, () =>
        withEnv(async (env) => {
          const g = 4;
          const inactive = active === DriveValue.HIGH ? DriveValue.LOW : DriveValue.HIGH;
          const lv = (d: DriveValue): 0 | 1 => (d === DriveValue.HIGH ? 1 : 0);
          await env.drive(g, inactive);
          await env.waitLevel(g, lv(inactive));
          await setIrq(env, g, type);
          const p = (await armPending(env, g)).done;
          await env.drive(g, active);
          assert.deepEqual(await p, { status: VALID, usedLen: 1 }, 'becoming active while unmasked fires');
          assert.deepEqual(await env.fe.armIrq(g), { status: VALID, usedLen: 1 }, 'still active: re-arming fires at once');
          assert.deepEqual(await env.fe.armIrq(g), { status: VALID, usedLen: 1 });
          await env.drive(g, inactive);
          await env.waitLevel(g, lv(inactive));
          const q = (await armPending(env, g)).done;
          await expectStillPending(env, g, q);
        }));
    }

    it('SET_IRQ_TYPE NONE: the pending buffer is pushed INVALID before the request is answered', () =>
      withEnv(
        async (env) => {
          const { fe } = env;
          await setIrq(env, 2, IrqType.EDGE_BOTH);
          const p = (await armPending(env, 2)).done;
          const [r0, r1] = fe.rings;
          assert.ok(r0 !== undefined && r1 !== undefined);
          const before = [r0.usedIdx, r1.usedIdx] as const;
          env.signals.length = 0;
          const order: string[] = [];
          const resp = fe.request(Gpio.SET_IRQ_TYPE, 2, IrqType.NONE).then((r) => {
            order.push('response');
            return r;
          });
          const ev = p.then((e) => {
            order.push('event');
            return e;
          });
          const [r, e] = await Promise.all([resp, ev]);
          assert.deepEqual([r.status, r.usedLen], [OK, 2]);
          assert.deepEqual(e, { status: INVALID, usedLen: 1 });
          // At the signal of the response's push, the eventq's INVALID entry was already on the used ring.
          const first = env.signals.find((s) => (s.used[0] ?? 0) !== before[0]);
          assert.ok(first !== undefined, 'the response was signalled');
          assert.equal(first.used[1], (before[1] + 1) & 0xffff, 'eventq entry pushed before the requestq response');
          assert.equal(first.used[0], (before[0] + 1) & 0xffff);
          assert.ok(order.includes('event') && order.includes('response'));
        },
        { frontend: { eventIdx: false } },
      ));

    it('a buffer queued on a disabled line comes back INVALID; a second buffer for one line too', () =>
      withEnv(async (env) => {
        assert.deepEqual(await env.fe.armIrq(0), { status: INVALID, usedLen: 1 });
        await setIrq(env, 0, IrqType.EDGE_RISING);
        const p = (await armPending(env, 0)).done;
        assert.deepEqual(await env.fe.armIrq(0), { status: INVALID, usedLen: 1 }, 'second buffer for the same line');
        await env.drive(0, DriveValue.HIGH);
        assert.deepEqual(await p, { status: VALID, usedLen: 1 }, 'the first one is still armed');
        assert.deepEqual(await env.fe.armIrq(8), { status: INVALID, usedLen: 1 }, 'gpio >= ngpio');
      }));

    it('many requests in flight: same line answered in order, different lines all answered', () =>
      withEnv(async (env) => {
        const { fe } = env;
        const lines = [4, 5, 6];
        for (const g of lines) await ok(env, Gpio.SET_DIRECTION, g, Dir.OUT);
        const done: string[] = [];
        const pending: Promise<void>[] = [];
        // 3 lines x 5 (SET_VALUE, GET_VALUE) pairs = 30 chains of 2 descriptors: almost the whole 64-entry ring, one kick each
        for (let k = 0; k < 5; k++) {
          for (const g of lines) {
            const v = (k + g) & 1;
            pending.push(fe.request(Gpio.SET_VALUE, g, v).then((r) => {
              assert.deepEqual([r.status, r.usedLen], [OK, 2]);
              done.push(`${g}:set${k}`);
            }));
            pending.push(fe.request(Gpio.GET_VALUE, g).then((r) => {
              assert.deepEqual([r.status, r.value, r.usedLen], [OK, v, 2], `line ${g} read ${k} sees write ${k}`);
              done.push(`${g}:get${k}`);
            }));
          }
        }
        await Promise.all(pending);
        for (const g of lines) {
          const mine = done.filter((d) => d.startsWith(`${g}:`));
          assert.deepEqual(mine, Array.from({ length: 5 }, (_, k) => [`${g}:set${k}`, `${g}:get${k}`]).flat(), `line ${g} in arrival order`);
        }
      }));
  });
}
