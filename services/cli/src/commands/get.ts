import type { Command } from '../command.ts';
import { directionText, driveText, irqText, lineJson, lineRefArg, parse, pullText, SERVER_HELP, serverOption, withClient } from '../operator.ts';

/** `gpio-fabric get`: one line's state. */
export const command: Command = {
  summary: 'show the state of one line',
  help: `Usage: gpio-fabric get CHIP:LINE [--json]

Prints the line's observed level, direction, stored output value, irq type, bias, net
and external drive. LINE is an offset or a line name (vm-a:3, vm-a:led0).

Options:
  --json            print one JSON object
${SERVER_HELP}`,
  async run(argv) {
    const { values, positionals } = parse(argv, { ...serverOption, json: { type: 'boolean' } }, { min: 1, max: 1, what: 'CHIP:LINE' });
    const line = lineRefArg(positionals[0] ?? '');
    const l = await withClient(values, (c) => c.getLine({ line }));
    if (values.json === true) {
      console.log(JSON.stringify(lineJson(l)));
      return 0;
    }
    const rows: [string, string][] = [
      ['line', `${l.chip}:${l.offset}${l.name !== '' ? ` (${l.name})` : ''}`],
      ['level', String(l.level)],
      ['direction', directionText(l.direction)],
      ['output value', String(l.outputValue)],
      ['irq type', irqText(l.irqType)],
      ['bias', pullText(l.bias)],
      ['net', l.net === '' ? '-' : l.net],
      ['external drive', driveText(l.externalDrive)],
    ];
    console.log(rows.map(([k, v]) => `${k.padEnd(15)}${v}`).join('\n'));
    return 0;
  },
};
