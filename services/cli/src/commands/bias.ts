import type { Command } from '../command.ts';
import { lineRefArg, parse, pullArg, pullText, SERVER_HELP, serverOption, withClient } from '../operator.ts';

/** `gpio-fabric bias`: set a line's pull. */
export const command: Command = {
  summary: 'set the bias (pull-up / pull-down / none) of a line',
  help: `Usage: gpio-fabric bias CHIP:LINE up|down|none

virtio-gpio has no bias request, so bias is set here (or in a topology file). An
unwired, undriven line reads its bias level (none reads 0).

Options:
${SERVER_HELP}`,
  async run(argv) {
    const { values, positionals } = parse(argv, serverOption, { min: 2, max: 2, what: 'CHIP:LINE and a bias (up, down or none)' });
    const line = lineRefArg(positionals[0] ?? '');
    const bias = pullArg(positionals[1] ?? '', 'bias');
    const l = await withClient(values, (c) => c.setBias({ line, bias }));
    console.log(`${l.chip}:${l.offset}: bias ${pullText(l.bias)}, level ${l.level}`);
    return 0;
  },
};
