import { UsageError, type Command } from '../command.ts';

/** `gpio-fabric trace`: placeholder until the VCD recorder lands. */
export const command: Command = {
  summary: 'record line levels into a Value Change Dump (VCD) file',
  help: 'Usage: gpio-fabric trace --vcd FILE [--duration S] [CHIP[:LINE]...]',
  async run() {
    throw new UsageError('trace is not implemented yet');
  },
};
