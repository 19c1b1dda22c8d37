import { UsageError, type Command } from '../command.ts';
import {
  chipJson, directionText, driveText, irqText, lineJson, lineRefText, modeText, netJson, parse, pullText, SERVER_HELP, serverOption, table, withClient,
} from '../operator.ts';
import type { Chip, LineState, Net } from '../../../common/src/gen/gpiofabric/v1/linestate.ts';

const chipTable = (cs: readonly Chip[]): string =>
  table(['CHIP', 'LINES', 'ONLINE', 'OWNER', 'LAST-SEQ'], cs.map((c) => [c.id, String(c.ngpio), c.online ? 'yes' : 'no', c.owner === '' ? '-' : c.owner, c.lastSeq]));

const lineTable = (ls: readonly LineState[]): string =>
  table(['LINE', 'NAME', 'LEVEL', 'DIR', 'OUT', 'IRQ', 'BIAS', 'NET', 'DRIVE'], ls.map((l) => [
    `${l.chip}:${l.offset}`, l.name === '' ? '-' : l.name, String(l.level), directionText(l.direction), String(l.outputValue),
    irqText(l.irqType), pullText(l.bias), l.net === '' ? '-' : l.net, driveText(l.externalDrive),
  ]));

const netTable = (ns: readonly Net[]): string =>
  table(['NET', 'LEVEL', 'PULL', 'MODE', 'DRIVE', 'CONTENTION', 'MEMBERS'], ns.map((n) => [
    n.name, String(n.level), pullText(n.pull), modeText(n.driveMode), driveText(n.externalDrive),
    n.contention ? `yes (${n.contentionCount})` : n.contentionCount === '0' ? 'no' : `no (${n.contentionCount})`, n.members.map(lineRefText).join(' '),
  ]));

/** `gpio-fabric ls`: list chips, lines or nets. */
export const command: Command = {
  summary: 'list chips, lines or nets',
  help: `Usage: gpio-fabric ls [chips|lines|nets] [--chip ID] [--json]

Without a kind, lists chips and nets. "lines" lists every line of every chip (or of
--chip ID). --chip also narrows chips to that chip and nets to those with a member on it.

Options:
  --chip ID         only this chip
  --json            print JSON (a list; without a kind an object {"chips": [...], "nets": [...]})
${SERVER_HELP}`,
  async run(argv) {
    const { values, positionals } = parse(argv, { ...serverOption, chip: { type: 'string' }, json: { type: 'boolean' } }, { min: 0, max: 1, what: 'chips, lines or nets' });
    const kind = positionals[0] ?? 'all';
    if (!['all', 'chips', 'lines', 'nets'].includes(kind)) throw new UsageError(`unknown kind "${kind}" (use chips, lines or nets)`);
    const chip = values.chip;
    const json = values.json === true;
    const out = await withClient(values, async (c) => {
      const chips = kind === 'chips' || kind === 'all' ? (await c.listChips()).filter((x) => chip === undefined || x.id === chip) : [];
      const nets = kind === 'nets' || kind === 'all' ? (await c.listNets()).filter((n) => chip === undefined || n.members.some((m) => m.chip === chip)) : [];
      const lines = kind === 'lines' ? await c.listLines({ chip: chip ?? '' }) : [];
      return { chips, nets, lines };
    });
    if (json) {
      const v = kind === 'chips' ? out.chips.map(chipJson) : kind === 'nets' ? out.nets.map(netJson) : kind === 'lines' ? out.lines.map(lineJson)
        : { chips: out.chips.map(chipJson), nets: out.nets.map(netJson) };
      console.log(JSON.stringify(v, null, 2));
      return 0;
    }
    if (kind === 'chips') console.log(chipTable(out.chips));
    else if (kind === 'nets') console.log(netTable(out.nets));
    else if (kind === 'lines') console.log(lineTable(out.lines));
    else console.log(`${chipTable(out.chips)}\n\n${out.nets.length === 0 ? 'no nets' : netTable(out.nets)}`);
    return 0;
  },
};
