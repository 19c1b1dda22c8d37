import { readFile } from 'node:fs/promises';
import { UsageError, type Command } from '../command.ts';
import { parse, SERVER_HELP, serverOption, withClient } from '../operator.ts';

/** `gpio-fabric apply`: apply a topology document. */
export const command: Command = {
  summary: 'apply a topology file (chips, nets, drives)',
  help: `Usage: gpio-fabric apply -f FILE [--dry-run]

Sends a topology document (YAML or JSON, see docs/topology.md) to the service, which
validates all of it and then applies it at once: declared chips are created (or their
names and bias updated), the fabric's nets become exactly the document's nets, and the
listed drives are set. An invalid document changes nothing; every problem is reported
with its path. Prints the changes made.

Options:
  -f, --file FILE   the document ("-" reads standard input)
  --dry-run         validate and print the changes without applying them
${SERVER_HELP}`,
  async run(argv) {
    const { values } = parse(argv, { ...serverOption, file: { type: 'string', short: 'f' }, 'dry-run': { type: 'boolean' } }, { min: 0, max: 0, what: 'no arguments besides -f FILE' });
    const file = values.file;
    if (file === undefined) throw new UsageError('missing -f FILE (the topology document)');
    let document: string;
    try {
      document = file === '-' ? await readStdin() : await readFile(file, 'utf8');
    } catch (e) {
      throw new UsageError(`cannot read ${file}: ${e instanceof Error ? e.message : String(e)}`);
    }
    const dryRun = values['dry-run'] === true;
    const r = await withClient(values, (c) => c.applyTopology({ document, dryRun }));
    for (const ch of r.changes) console.log(`${dryRun ? 'would ' : ''}${ch}`);
    console.log(`${dryRun ? 'dry run: ' : ''}${r.changes.length === 0 ? 'no changes' : `${r.changes.length} change(s)`}; topology has ${r.chips} chip(s), ${r.nets} net(s)`);
    return 0;
  },
};

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
