/**
 * `npm run demo`: two real Linux guests whose GPIO lines are wired together through the
 * fabric. Starts `gpio-fabric serve` (the embedded in-memory store: one machine, nothing
 * else to install), one `gpio-fabric agent` per VM, wires vm-a:0 to vm-b:0, boots both
 * guests under QEMU, runs `gpiomon` in guest B, toggles the line from guest A with
 * `gpioset`, and streams what guest B's gpiomon prints. Ends by itself; Ctrl-C stops
 * everything it started.
 */
import { join } from 'node:path';
import { bootGuest, type BackgroundHandle, type Guest } from './qemu.ts';
import { Stack, cliOk, deferGuest, parseGpiomon, sleep, startAgentProc, startServe } from './scenarios/support.ts';

const TOGGLES = 20;
const PERIOD_MS = 300;

const out = (s: string): void => { process.stdout.write(`${s}\n`); };
const step = (s: string): void => out(`\x1b[2m==> ${s}\x1b[0m`);

async function main(stack: Stack): Promise<void> {
  const dir = stack.tempDir('gf-demo-');
  step('starting the line-state service (gpio-fabric serve, in-memory store)');
  const serve = await startServe('serve');
  stack.defer('stop serve', () => serve.stop());
  const server = serve.address;

  step('starting one device agent per VM (gpio-fabric agent --chip vm-a / vm-b)');
  for (const id of ['vm-a', 'vm-b'] as const) {
    const a = await startAgentProc(`agent ${id}`, { socket: join(dir, `${id}.sock`), chip: id, lines: 4, names: [id === 'vm-a' ? 'out' : 'in'], server });
    stack.defer(`stop agent ${id}`, () => a.stop());
  }
  step('wiring vm-a:0 <-> vm-b:0 (gpio-fabric wire)');
  out(`    ${(await cliOk(['wire', 'vm-a:0', 'vm-b:0', '--name', 'demo', '--pull', 'down', '--server', server])).trim()}`);

  step('booting both guests under QEMU (Linux 6.12, gpio-virtio driver, libgpiod v2 tools)');
  const booted = await Promise.allSettled(['vm-a', 'vm-b'].map((id) => bootGuest({ name: id, sockets: [join(dir, `${id}.sock`)], log: join(dir, `${id}.console.log`) })));
  const guests: Guest[] = [];
  for (const b of booted) if (b.status === 'fulfilled') { guests.push(b.value); deferGuest(stack, b.value); }
  for (const b of booted) if (b.status === 'rejected') throw b.reason;
  const [ga, gb] = guests as [Guest, Guest];
  out(`    guest A: ${(await ga.check('gpiodetect')).trim()}    guest B: ${(await gb.check('gpiodetect')).trim()}`);

  const mon: BackgroundHandle = await gb.background('exec gpiomon -c gpiochip0 -e both in');
  await sleep(1000);
  out('');
  out('\x1b[1mWhat you see:\x1b[0m guest A runs `gpioset -t ' + PERIOD_MS + ',... out=0`, toggling its line 0 every');
  out(`${PERIOD_MS} ms, ${TOGGLES} times up and down. Its agent sends each change to the line-state service,`);
  out("which resolves the wire and pushes an event to guest B's agent, which raises a virtio-gpio");
  out("interrupt in guest B. Below is guest B's own `gpiomon -e both in`: a timestamp (seconds");
  out('since B booted), the edge, and the line. Expect rising and falling, alternating.');
  out('');

  let printed = 0;
  const pump = async (): Promise<number> => {
    const text = await mon.read();
    const { events } = parseGpiomon(text);
    const lines = text.split('\n').filter((l) => /\b(rising|falling)\b/.test(l));
    for (; printed < lines.length; printed++) out(`  guest B  #${String(printed + 1).padStart(2)}  ${lines[printed]!.replace(/\t/g, '  ')}`);
    return events.length;
  };
  const periods = [...Array<number>(2 * TOGGLES).fill(PERIOD_MS), 0].join(',');
  // in the background, so that Ctrl-C (guest shutdown) need not wait for it
  const set = await ga.background(`gpioset -c gpiochip0 -t ${periods} out=0; echo "gpioset status $?"`);
  const setDeadline = Date.now() + 4 * TOGGLES * PERIOD_MS + 30_000;
  while (await set.running()) {
    if (Date.now() > setDeadline) throw new Error(`gpioset in guest A did not finish: ${await set.read()}`);
    await pump();
    await sleep(250);
  }
  const status = await set.read();
  if (!/gpioset status 0/.test(status)) throw new Error(`gpioset in guest A failed: ${status}`);
  const deadline = Date.now() + 10_000;
  while ((await pump()) < 2 * TOGGLES && Date.now() < deadline) await sleep(250);
  await mon.kill();
  const { events } = parseGpiomon(await mon.read());
  const rising = events.filter((e) => e.edge === 'rising').length;
  out('');
  out(`guest B saw ${events.length} edges (${rising} rising, ${events.length - rising} falling) for ${2 * TOGGLES} toggles in guest A.`);
}

const stack = new Stack();
let closing: Promise<void> | undefined;
let exitCode: number | undefined;
/** Stops everything once; later calls (e.g. main failing because Ctrl-C killed a guest) wait for the same cleanup. */
const shutdown = async (code: number): Promise<never> => {
  exitCode ??= code;
  closing ??= (async () => {
    step('shutting down (guests, agents, service)');
    try {
      await stack.close();
    } catch (e) {
      process.stderr.write(`cleanup: ${(e as Error).message}\n`);
    }
  })();
  await closing;
  process.exit(exitCode);
};
process.once('SIGINT', () => { void shutdown(130); });
process.once('SIGTERM', () => { void shutdown(143); });
try {
  await main(stack);
  await shutdown(0);
} catch (e) {
  if (closing === undefined) process.stderr.write(`demo failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  await shutdown(1);
}
