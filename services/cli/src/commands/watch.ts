import { tlsFilesFrom } from '../../../common/src/tls.ts';
import type { WatchRequest } from '../../../linestate/src/client.ts';
import { UsageError, type Command } from '../command.ts';
import { clientFor, edgeText, parse, reachable, SERVER_HELP, serverAddress, serverOption } from '../operator.ts';
import { parseLineRef } from '../../../common/src/line-model.ts';
import type { LineEvent } from '../../../common/src/gen/gpiofabric/v1/linestate.ts';

/** Timestamp in ns since the epoch as ISO 8601 with microseconds. */
function isoTime(ns: string): string {
  const t = BigInt(ns);
  const ms = Number(t / 1_000_000n);
  const us = Number((t / 1000n) % 1000n);
  const iso = new Date(ms).toISOString();
  return `${iso.slice(0, -1)}${String(us).padStart(3, '0')}Z`;
}

const eventText = (e: LineEvent): string => `${isoTime(e.timestampNs)}  ${e.chip}:${e.offset}  ${edgeText(e.edge).padEnd(7)}  level ${e.level}  seq ${e.seq}`;
const eventJson = (e: LineEvent) => ({ chip: e.chip, offset: e.offset, level: e.level, edge: edgeText(e.edge), seq: e.seq, timestampNs: e.timestampNs });

/** `gpio-fabric watch`: stream line events. */
export const command: Command = {
  summary: 'print line events as they happen (all chips, one chip or one line)',
  help: `Usage: gpio-fabric watch [CHIP[:LINE]] [--json] [--from SEQ] [--count N]

Prints one line per event: time, line, edge, new level and the chip's sequence number:
  2026-11-24T13:05:04.123456Z  vm-a:3  rising   level 1  seq 42
Without an argument, every chip's live events. --from resumes one chip's stream after
sequence number SEQ (the events since then, then live ones; 0 = from the oldest kept).
Runs until interrupted (Ctrl-C), or until N events with --count.

Options:
  --json            one JSON object per line: {chip, offset, level, edge, seq, timestampNs}
  --from SEQ        resume after SEQ (needs a CHIP)
  --count N         exit after N events
${SERVER_HELP}`,
  async run(argv) {
    const { values, positionals } = parse(argv, { ...serverOption, json: { type: 'boolean' }, from: { type: 'string' }, count: { type: 'string' } }, { min: 0, max: 1, what: 'at most one CHIP or CHIP:LINE' });
    const target = positionals[0];
    let count: number | undefined;
    if (values.count !== undefined) {
      if (!/^[0-9]+$/.test(values.count) || Number(values.count) < 1) throw new UsageError(`--count must be a positive whole number, not "${values.count}"`);
      count = Number(values.count);
    }
    if (values.from !== undefined && !/^[0-9]{1,20}$/.test(values.from)) throw new UsageError(`--from must be a sequence number (0 or more), not "${values.from}"`);
    if (values.from !== undefined && target === undefined) throw new UsageError('--from needs a CHIP to resume (sequence numbers are per chip)');
    const address = serverAddress(values.server);
    const client = clientFor(values);
    try {
      const req: WatchRequest = { chips: [] };
      if (target !== undefined) {
        if (target.includes(':')) {
          let ref: ReturnType<typeof parseLineRef>;
          try {
            ref = parseLineRef(target);
          } catch (e) {
            throw new UsageError(e instanceof Error ? e.message : String(e));
          }
          req.chips = [ref.chip];
          if (ref.line.kind === 'offset') req.offset = ref.line.offset;
          else {
            const name = ref.line.name;
            const { names } = await client.getNames({ chip: ref.chip });
            const i = names.indexOf(name);
            if (i < 0) throw new UsageError(`chip ${ref.chip} has no line named "${name}"`);
            req.offset = i;
          }
        } else req.chips = [target];
      }
      if (values.from !== undefined) req.fromSeq = values.from;
      const json = values.json === true;
      return await new Promise<number>((resolve, reject) => {
        let seen = 0;
        const stop = (code: number): void => {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
          handle.cancel();
          resolve(code);
        };
        const onSignal = (): void => stop(0);
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
        const handle = client.watchEvents(
          req,
          (e) => {
            console.log(json ? JSON.stringify(eventJson(e)) : eventText(e));
            seen++;
            if (count !== undefined && seen >= count) stop(0);
          },
          (err) => {
            process.off('SIGINT', onSignal);
            process.off('SIGTERM', onSignal);
            reject(err);
          },
          () => {
            process.off('SIGINT', onSignal);
            process.off('SIGTERM', onSignal);
            console.error('gpio-fabric watch: the service ended the stream');
            resolve(1);
          },
        );
      });
    } catch (e) {
      throw reachable(e, address, tlsFilesFrom(values) !== undefined);
    } finally {
      client.close();
    }
  },
};
