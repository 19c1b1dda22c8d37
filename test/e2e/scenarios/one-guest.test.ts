/**
 * Real guest, one VM: a Linux guest (gpio-virtio driver, libgpiod v2 tools, levelirq.ko)
 * served by `gpio-fabric agent --standalone --listen` run as its own process; the fabric
 * side reads and drives the VM's lines through that agent's line-state API with the
 * operator CLI (`gpio-fabric get/drive`) and, for quick drive sequences, the client.
 * One guest is booted for the whole file; every check asserts on what the guest's own
 * tools print.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { bootGuest, type BackgroundHandle, type Guest } from '../qemu.ts';
import {
  Stack, context, deferGuest, drive, fabricDriver, getLine, parseGpiomon, sleep, startAgentProc, until,
  type FabricDriver, type FabricProc, type MonEvent,
} from './support.ts';

const CHIP = 'vm-solo';
const NAMES = ['led0', 'btn0', 'sw0', 'rise0', 'fall0', 'both0', 'lvlhi', 'lvllo'] as const;
const L = Object.fromEntries(NAMES.map((n, i) => [n, i])) as Record<(typeof NAMES)[number], number>;

describe('one real guest on a standalone agent', () => {
  const stack = new Stack();
  let guest: Guest;
  let agent: FabricProc & { address: string | undefined };
  let api: string;
  let fab: FabricDriver;

  before(async () => {
    const dir = stack.tempDir('gf-e2e-solo-');
    agent = await startAgentProc('agent vm-solo', { socket: join(dir, 'vm-solo.sock'), chip: CHIP, lines: NAMES.length, names: NAMES, standalone: { pull: 'up' } });
    stack.defer('stop agent', async () => {
      const code = await agent.stop();
      assert.equal(code, 0, `agent exit code\n${agent.output()}`);
    });
    assert.ok(agent.address !== undefined, agent.output());
    api = agent.address;
    fab = await fabricDriver(api);
    stack.defer('close client', async () => fab.close());
    guest = await bootGuest({ name: 'solo', sockets: [join(dir, 'vm-solo.sock')], log: join(dir, 'console.log') });
    deferGuest(stack, guest);
  });

  after(() => stack.close());

  const ctx = (): string => context(guest, agent);

  it('gpiodetect finds the chip with its line count and gpioinfo shows the configured names', async () => {
    const detect = await guest.check('gpiodetect');
    assert.match(detect, /^gpiochip0 \[virtio0\] \(8 lines\)$/m, ctx());
    const info = await guest.check('gpioinfo -c gpiochip0');
    assert.match(info, /^gpiochip0 - 8 lines:$/m);
    NAMES.forEach((n, i) => assert.match(info, new RegExp(`^\\s+line\\s+${i}:\\s+"${n}"\\s+input`, 'm'), `${n}\n${info}`));
  });

  it('a line held by gpioset is driven as seen from the fabric, and released when gpioset exits', async () => {
    for (const value of [1, 0] as const) {
      const set = await guest.background(`exec gpioset -c gpiochip0 led0=${value}`);
      try {
        const held = await until(`vm-solo:led0 driven ${value} by gpioset`, () => getLine(api, `${CHIP}:led0`), (l) => l.direction === 'out' && l.level === value);
        assert.equal(held.outputValue, value);
        assert.ok(await set.running(), `gpioset exited while holding the line: ${await set.read()}`);
        assert.match(await guest.check('gpioinfo -c gpiochip0 led0'), /"led0"\s+output consumer="?gpioset"?/);
      } finally {
        await set.kill();
      }
      const released = await until('vm-solo:led0 released', () => getLine(api, `${CHIP}:led0`), (l) => l.direction === 'none');
      assert.equal(released.level, 1, 'a released line reads its pull (up)');
      assert.equal(await set.read(), '', 'gpioset printed nothing');
    }
  });

  it('an input driven from the fabric reads 0 and 1 in gpioget; undriven, it reads its pull', async () => {
    const get = async (line: string): Promise<string> => (await guest.check(`gpioget -c gpiochip0 --numeric ${line}`)).trim();
    // undriven inputs read the agent's --pull up
    assert.equal(await get('sw0'), '1', ctx());
    assert.equal(await get('btn0'), '1');
    await drive(api, `${CHIP}:btn0`, '0');
    assert.equal(await get('btn0'), '0', ctx());
    assert.match(await guest.check('gpioget -c gpiochip0 btn0'), /^"btn0"=inactive$/m);
    await drive(api, `${CHIP}:btn0`, '1');
    assert.equal(await get('btn0'), '1');
    assert.match(await guest.check('gpioget -c gpiochip0 btn0'), /^"btn0"=active$/m);
    await drive(api, `${CHIP}:btn0`, '0');
    assert.equal(await get('btn0'), '0');
    await drive(api, `${CHIP}:btn0`, 'release');
    assert.equal(await get('btn0'), '1', 'released, the input reads its pull again');
    const l = await getLine(api, `${CHIP}:btn0`);
    assert.equal(l.externalDrive, 'release');
    assert.equal(l.bias, 'up');
  });

  /** Starts gpiomon on `line` and waits until the guest has armed the interrupt (seen from the fabric). */
  async function startMon(line: (typeof NAMES)[number], edges: 'rising' | 'falling' | 'both', extra = ''): Promise<BackgroundHandle> {
    const mon = await guest.background(`exec gpiomon -c gpiochip0 -e ${edges} ${extra} ${line}`);
    const want = { rising: /rising/, falling: /falling/, both: /both/ }[edges];
    await until(`gpiomon to arm ${line} (${edges})`, () => getLine(api, `${CHIP}:${line}`), (l) => want.test(l.irqType));
    return mon;
  }

  async function events(mon: BackgroundHandle): Promise<MonEvent[]> {
    const { events: ev, other } = parseGpiomon(await mon.read());
    assert.deepEqual(other, [], 'gpiomon printed only events');
    return ev;
  }

  /**
   * Drives `line` through `levels` from the fabric; after each drive that must raise an
   * event, waits until gpiomon printed it, so every edge is seen before the next one.
   */
  async function driveAndSee(mon: BackgroundHandle, line: number, levels: readonly (0 | 1)[], counts: (ev: 'rising' | 'falling') => boolean): Promise<MonEvent[]> {
    let expected = 0;
    let level = -1;
    for (const v of levels) {
      const was = level;
      level = await fab.drive(CHIP, line, v === 1 ? '1' : '0');
      assert.equal(level, v);
      if (was !== -1 && was !== v && counts(v === 1 ? 'rising' : 'falling')) {
        expected++;
        await until(`gpiomon event ${expected}`, () => events(mon), (e) => e.length >= expected, 15_000, 100).catch(async (e: unknown) => {
          throw new Error(`${(e as Error).message}\ngpiomon log:\n${await mon.read()}\n${ctx()}`);
        });
      }
    }
    return events(mon);
  }

  const edgesOf = (ev: MonEvent[]): string[] => ev.map((e) => `${e.edge} ${e.offset}`);

  it('gpiomon sees rising edges only, exits after -n of them, and the line is released', async () => {
    await fab.drive(CHIP, L.rise0, '0');
    const mon = await startMon('rise0', 'rising', '-n 3');
    try {
      const ev = await driveAndSee(mon, L.rise0, [0, 1, 0, 1, 0, 1, 0], (e) => e === 'rising');
      assert.deepEqual(edgesOf(ev), Array(3).fill(`rising ${L.rise0}`), await mon.read());
      await until('gpiomon -n 3 to exit', () => mon.running(), (r) => !r, 10_000);
    } finally {
      await mon.kill();
    }
    const l = await until('rise0 released after gpiomon exited', () => getLine(api, `${CHIP}:rise0`), (x) => x.direction === 'none');
    assert.equal(l.irqType, 'none');
  });

  it('gpiomon sees falling edges only, exactly as many as driven', async () => {
    await fab.drive(CHIP, L.fall0, '1');
    const mon = await startMon('fall0', 'falling');
    try {
      const ev = await driveAndSee(mon, L.fall0, [1, 0, 1, 0, 1, 0, 1, 0, 1], (e) => e === 'falling');
      await sleep(500); // nothing more arrives
      assert.deepEqual(edgesOf(await events(mon)), Array(4).fill(`falling ${L.fall0}`));
      assert.equal(ev.length, 4);
    } finally {
      await mon.kill();
    }
    const l = await until('fall0 released after gpiomon was stopped', () => getLine(api, `${CHIP}:fall0`), (x) => x.direction === 'none');
    assert.equal(l.irqType, 'none');
  });

  it('gpiomon -e both sees rising and falling edges alternating, in order', async () => {
    await fab.drive(CHIP, L.both0, '0');
    const mon = await startMon('both0', 'both');
    const levels: (0 | 1)[] = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0];
    try {
      await driveAndSee(mon, L.both0, levels, () => true);
      await sleep(500);
      const want = levels.slice(1).map((v) => `${v === 1 ? 'rising' : 'falling'} ${L.both0}`);
      assert.deepEqual(edgesOf(await events(mon)), want, await mon.read());
    } finally {
      await mon.kill();
    }
    const l = await until('both0 released after gpiomon was stopped', () => getLine(api, `${CHIP}:both0`), (x) => x.direction === 'none');
    assert.equal(l.irqType, 'none');
  });

  const param = async (p: string): Promise<number> => Number((await guest.check(`cat /sys/module/levelirq/parameters/${p}`)).trim());

  for (const [trigger, line, active] of [['high', L.lvlhi, 1], ['low', L.lvllo, 0]] as const) {
    it(`levelirq trigger=${trigger}: the count grows while the fabric holds the active level and stops when it drops`, async () => {
      const inactive = active === 1 ? '0' : '1';
      const act = active === 1 ? '1' : '0';
      await fab.drive(CHIP, line, inactive);
      await guest.check('rmmod levelirq');
      try {
        await guest.check(`insmod /lib/modules/levelirq.ko chip_label=virtio0 line=${line} trigger=${trigger}`);
        const armed = await until(`level-${trigger} irq armed`, () => getLine(api, `${CHIP}:${line}`), (l) => l.irqType.includes(trigger));
        assert.equal(armed.direction, 'in');
        assert.ok((await param('irq')) > 0);
        await sleep(400);
        assert.equal(await param('count'), 0, `no interrupt while the level is inactive\n${await guest.dmesg()}`);

        await fab.drive(CHIP, line, act);
        const c1 = await until('the count to grow', () => param('count'), (c) => c >= 3, 15_000, 100);
        const c2 = await until('the count to keep growing', () => param('count'), (c) => c > c1 + 2, 15_000, 100);
        assert.ok(c2 > c1);
        assert.equal(await param('level'), active, 'the handler read the active level');

        await fab.drive(CHIP, line, inactive);
        await sleep(500); // a handler run already under way may still finish
        const s1 = await param('count');
        await sleep(1000);
        const s2 = await param('count');
        assert.equal(s2, s1, `the count stopped growing once the level dropped\n${ctx()}`);
      } finally {
        await guest.run('rmmod levelirq');
      }
      const l = await until('line released after rmmod', () => getLine(api, `${CHIP}:${line}`), (x) => x.direction === 'none');
      assert.equal(l.irqType, 'none');
      // the module is left as /init loaded it (idle), the guest keeps working
      await guest.check('insmod /lib/modules/levelirq.ko');
    });
  }
});
