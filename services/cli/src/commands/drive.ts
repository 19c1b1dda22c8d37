import { UsageError, type Command } from '../command.ts';
import { lineRefArg, parse, SERVER_HELP, serverOption, withClient } from '../operator.ts';
import type { DriveRequest } from '../../../common/src/gen/gpiofabric/v1/linestate.ts';

const VALUES: Readonly<Record<string, 0 | 1 | 2>> = { release: 0, '0': 1, low: 1, '1': 2, high: 2 };

/** `gpio-fabric drive`: drive a line or a net from outside the VMs. */
export const command: Command = {
  summary: 'drive a line or a net to 0 or 1 from outside, or release it',
  help: `Usage: gpio-fabric drive CHIP:LINE|NET 0|1|release

An external drive acts like one more driver on the line (or on the net): the guests
see the level change and get their interrupts. "release" removes the drive. A target
containing ':' is a line (vm-a:3, vm-a:btn0), otherwise a net name. Prints the level
after the change (a wired line reports its net's level).

Options:
${SERVER_HELP}

Examples:
  gpio-fabric drive vm-a:btn0 0
  gpio-fabric drive reset-bus release`,
  async run(argv) {
    const { values, positionals } = parse(argv, serverOption, { min: 2, max: 2, what: 'a target (CHIP:LINE or NET) and a value (0, 1 or release)' });
    const [target = '', v = ''] = positionals;
    const value = VALUES[v];
    if (value === undefined) throw new UsageError(`value must be 0, 1 or release, not "${v}"`);
    const req: DriveRequest = target.includes(':') ? { target: { $case: 'line', value: lineRefArg(target) }, value } : { target: { $case: 'net', value: target }, value };
    const r = await withClient(values, (c) => c.drive(req));
    console.log(`${target}: ${value === 0 ? 'released' : `driven ${v === 'high' || v === '1' ? 1 : 0}`}, level ${r.level}`);
    return 0;
  },
};
