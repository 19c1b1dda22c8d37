import type { Command } from '../command.ts';
import { parse, SERVER_HELP, serverOption, withClient } from '../operator.ts';

/** `gpio-fabric unwire`: remove a net. */
export const command: Command = {
  summary: 'remove a net; its lines become unwired',
  help: `Usage: gpio-fabric unwire NET

Removes the net. Each former member line then reads its own drive or its bias, and
watchers see an event for every line whose level changes.

Options:
${SERVER_HELP}`,
  async run(argv) {
    const { values, positionals } = parse(argv, serverOption, { min: 1, max: 1, what: 'NET (a net name)' });
    const name = positionals[0] ?? '';
    await withClient(values, (c) => c.unwire(name));
    console.log(`removed net ${name}`);
    return 0;
  },
};
