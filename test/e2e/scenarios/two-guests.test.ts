/**
 * Real guests wired through the line-state service on a real Redis: `gpio-fabric serve
 * --redis` replicas and one `gpio-fabric agent` per VM, each its own process, as a user
 * runs them. Guest A toggles its line with one libgpiod v2 `gpioset --toggle` process;
 * the wired guest's `gpiomon` must print exactly N rising and N falling edges,
 * alternating, in order. First with both agents on one replica, then with the two agents
 * on two replicas of the same fabric (same Redis, same --fabric).
 *
 * Three guests are booted once: vm-a and vm-b on replica 1, vm-c on replica 2.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { bootGuest, type Guest } from '../qemu.ts';
import { startRedis } from '../../support/redis.ts';
import { Stack, cliOk, context, deferGuest, getLine, parseGpiomon, sleep, startAgentProc, startServe, until, type FabricProc } from './support.ts';

/** Full toggle cycles per run (N rising + N falling edges). */
const N = 50;
/**
 * gpioset's toggle period. Every edge travels guest A -> agent A -> service -> Redis ->
 * service -> agent B -> guest B's eventq, and guest B must have re-queued its eventq
 * buffer before the next edge: virtio-gpio keeps one pending interrupt per line, so two
 * edges that arrive while the guest has no buffer queued are delivered as one. For `-e
 * both` the guest kernel also names each edge by reading the line from its irq thread
 * (one more GET_VALUE round trip), so a late read sees the next level. Measured under TCG
 * on 2 cores: at 30 ms that read often saw the next level; at 100-120 ms every run was
 * exact while the machine was otherwise quiet, but with other jobs pushing the load to
 * 20 a guest vCPU stalled for ~0.5 s and one edge was merged or misnamed. 250 ms gives
 * that margin; the test is about exactness, not speed (the benchmarks measure speed).
 */
const PERIOD_MS = 250;

describe('two real guests wired through the line-state service on Redis', () => {
  const stack = new Stack();
  const guests: Record<'a' | 'b' | 'c', Guest> = {} as Record<'a' | 'b' | 'c', Guest>;
  const agents: FabricProc[] = [];
  let r1: FabricProc & { address: string };
  let r2: FabricProc & { address: string };

  before(async () => {
    const dir = stack.tempDir('gf-e2e-two-');
    const redis = await startRedis();
    stack.defer('stop redis', () => redis.stop());
    const fabric = `e2e-two-${process.pid}`;
    r1 = await startServe('serve replica 1', { redis: redis.url, fabric });
    stack.defer('stop replica 1', () => r1.stop());
    r2 = await startServe('serve replica 2', { redis: redis.url, fabric });
    stack.defer('stop replica 2', () => r2.stop());
    const plan = [['a', r1], ['b', r1], ['c', r2]] as const;
    for (const [id, replica] of plan) {
      const a = await startAgentProc(`agent vm-${id}`, { socket: join(dir, `vm-${id}.sock`), chip: `vm-${id}`, lines: 4, names: ['sig', 'sig2', '', ''], server: replica.address });
      stack.defer(`stop agent vm-${id}`, () => a.stop());
      agents.push(a);
    }
    const booted = await Promise.allSettled(plan.map(([id]) => bootGuest({ name: `vm-${id}`, sockets: [join(dir, `vm-${id}.sock`)], log: join(dir, `vm-${id}.console.log`) })));
    booted.forEach((b, i) => {
      if (b.status === 'fulfilled') {
        guests[plan[i]![0]] = b.value;
        deferGuest(stack, b.value);
      }
    });
    for (const b of booted) if (b.status === 'rejected') throw b.reason;
  });

  after(() => stack.close());

  const ctx = (...g: Guest[]): string => context(undefined, r1, r2, ...agents) + '\n' + g.map((x) => context(x)).join('\n');

  /**
   * Wires `from:line` to `to:line`, starts gpiomon on `to`, toggles the line N times in
   * `from` with one gpioset process and checks gpiomon's output.
   */
  async function toggleRun(server: string, from: 'a' | 'b' | 'c', to: 'a' | 'b' | 'c', line: string): Promise<void> {
    const ga = guests[from];
    const gb = guests[to];
    const net = `${from}${to}-${line}`;
    const wired = await cliOk(['wire', `vm-${from}:${line}`, `vm-${to}:${line}`, '--name', net, '--pull', 'down', '--server', server]);
    assert.match(wired, new RegExp(`wired net ${net}: vm-${from}:\\d vm-${to}:\\d \\(pull down, push-pull, level 0\\)`));
    const mon = await gb.background(`exec gpiomon -c gpiochip0 -e both ${line}`);
    try {
      await until(`vm-${to} gpiomon to arm ${line}`, () => getLine(server, `vm-${to}:${line}`), (l) => l.irqType === 'edge-both');
      // 2N toggles starting from 0: N rising and N falling edges, ending at 0; the last
      // period 0 makes gpioset exit after the last toggle
      const periods = [...Array<number>(2 * N).fill(PERIOD_MS), 0].join(',');
      const set = await ga.run(`gpioset -c gpiochip0 -t ${periods} ${line}=0; echo "gpioset status $?"`, { timeoutMs: 4 * N * PERIOD_MS + 30_000 });
      assert.match(set.output, /gpioset status 0/, `gpioset in vm-${from}: ${set.output}\n${ctx(ga)}`);
      const seen = await until(`vm-${to} gpiomon to print ${2 * N} events`, async () => parseGpiomon(await mon.read()).events.length, (n) => n >= 2 * N, 20_000, 200)
        .catch(async (e: unknown) => { throw new Error(`${(e as Error).message}\ngpiomon:\n${await mon.read()}\n${ctx(ga, gb)}`); });
      assert.equal(seen, 2 * N);
      await sleep(500); // nothing more arrives
      const text = await mon.read();
      const { events, other } = parseGpiomon(text);
      assert.deepEqual(other, [], 'gpiomon printed only events');
      const want = Array.from({ length: 2 * N }, (_, i) => (i % 2 === 0 ? 'rising' : 'falling'));
      assert.deepEqual(events.map((e) => e.edge), want, `edges in vm-${to}, in order; gpiomon printed:\n${text}`);
      assert.ok(events.every((e) => e.chip === 'gpiochip0' && e.offset === events[0]!.offset));
      const lines = await getLine(server, `vm-${from}:${line}`);
      assert.equal(lines.direction, 'none', 'gpioset released the line when it exited');
      assert.equal(lines.level, 0);
    } finally {
      await mon.kill();
      await cliOk(['unwire', net, '--server', server]);
    }
  }

  it(`guest A toggles its line ${N} times, guest B (same replica) sees exactly ${N} rising and ${N} falling edges in order`, async () => {
    await toggleRun(r1.address, 'a', 'b', 'sig');
  });

  it(`the same with the agents on two service replicas: A (replica 1) toggles, C (replica 2) sees every edge in order`, async () => {
    // wired through replica 2, observed by the agent of replica 2 and driven through replica 1
    await toggleRun(r2.address, 'a', 'c', 'sig2');
    const chips = JSON.parse(await cliOk(['ls', 'chips', '--json', '--server', r1.address])) as { id: string; online: boolean }[];
    assert.deepEqual(chips.map((c) => [c.id, c.online]).sort(), [['vm-a', true], ['vm-b', true], ['vm-c', true]]);
  });
});
