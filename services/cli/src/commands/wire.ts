import type { Command } from '../command.ts';
import { lineRefArg, lineRefText, modeText, parse, pullArg, pullText, SERVER_HELP, serverOption, withClient } from '../operator.ts';

/** `gpio-fabric wire`: connect two or more lines into a net. */
export const command: Command = {
  summary: 'wire lines of one or more chips into a net',
  help: `Usage: gpio-fabric wire CHIP:LINE CHIP:LINE... [--name NET] [--pull up|down|none] [--open-drain]

Connects the lines into one net (a wire). A line is in at most one net. LINE is an
offset or a line name (vm-a:3, vm-a:led0). The net's level follows its drivers: output
lines and external drives; with no driver it settles to the pull.

Options:
  --name NET        net name (default: generated, printed)
  --pull P          level of the undriven net: up, down or none (default none = reads 0)
  --open-drain      drivers pull low or release (wired-AND); default push-pull
${SERVER_HELP}

Example:
  gpio-fabric wire vm-a:reset vm-b:2 --name reset-bus --pull up --open-drain`,
  async run(argv) {
    const { values, positionals } = parse(argv, { ...serverOption, name: { type: 'string' }, pull: { type: 'string' }, 'open-drain': { type: 'boolean' } }, { min: 2, max: 4096, what: 'at least two CHIP:LINE endpoints' });
    const members = positionals.map(lineRefArg);
    const pull = values.pull === undefined ? 0 : pullArg(values.pull, '--pull');
    const net = await withClient(values, (c) => c.wire({ name: values.name ?? '', members, pull, driveMode: values['open-drain'] === true ? 1 : 0 }));
    console.log(`wired net ${net.name}: ${net.members.map(lineRefText).join(' ')} (pull ${pullText(net.pull)}, ${modeText(net.driveMode)}, level ${net.level})`);
    return 0;
  },
};
