import { tlsFilesFrom } from '../../../common/src/tls.ts';
import { closeSync, openSync, writeSync } from 'node:fs';
import { UsageError, type Command } from '../command.ts';
import { clientFor, parse, reachable, SERVER_HELP, serverAddress, serverOption } from '../operator.ts';
import { ErrorCode, FabricError, invalidArgument, notFound } from '../../../common/src/errors.ts';
import { parseLineRef } from '../../../common/src/line-model.ts';
import type { LineState } from '../../../common/src/gen/gpiofabric/v1/linestate.ts';
import type { LineStateClient, WatchHandle } from '../../../linestate/src/client.ts';
import { TraceRecorder, VcdEncoder, vcdHeaderText, type TraceLine } from '../../../linestate/src/vcd.ts';

/** How long an event is held before it is written, so the streams of several chips merge in time order. */
export const TRACE_HOLD_MS = 250;
/** How often held events are written to the file. */
export const TRACE_FLUSH_MS = 100;
/** Longest wait for the events a chip had between the start and the snapshot. */
const CATCH_UP_MS = 10_000;

/** Wall clock in ns since the epoch, with µs resolution. */
const nowNs = (): bigint => BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n;

/** Parse --duration: seconds, > 0, decimals allowed. */
function durationArg(s: string | undefined): number | undefined {
  if (s === undefined) return undefined;
  const v = /^[0-9]+(\.[0-9]+)?$|^\.[0-9]+$/.test(s) ? Number(s) : NaN;
  if (!Number.isFinite(v) || v <= 0 || v > 31 * 24 * 3600) throw new UsageError(`--duration must be a number of seconds greater than 0 (at most 31 days), not "${s}"`);
  return v;
}

/** A target on the command line: a whole chip, or one line of it. */
type Target = { chip: string; line?: { kind: 'offset'; offset: number } | { kind: 'name'; name: string } };

function targetArg(s: string): Target {
  if (!s.includes(':')) {
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(s)) throw new UsageError(`"${s}" is not a chip id (1-64 characters of A-Z a-z 0-9 . _ -) nor CHIP:LINE`);
    return { chip: s };
  }
  try {
    const r = parseLineRef(s);
    return { chip: r.chip, line: r.line };
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
}

/** The traced lines of `targets` (none = every line of `chips`), in order, each once. */
function selectLines(targets: readonly Target[], chips: readonly string[], lines: ReadonlyMap<string, readonly LineState[]>): TraceLine[] {
  const out: TraceLine[] = [];
  const seen = new Set<string>();
  const add = (l: LineState): void => {
    const k = `${l.chip}\n${l.offset}`;
    if (seen.has(k)) return;
    seen.add(k);
    out.push({ chip: l.chip, offset: l.offset, name: l.name });
  };
  const all = targets.length === 0 ? chips.map((chip) => ({ chip }) as Target) : targets;
  for (const t of all) {
    const ls = lines.get(t.chip) ?? [];
    if (t.line === undefined) ls.forEach(add);
    else if (t.line.kind === 'offset') {
      const off = t.line.offset;
      const l = ls[off];
      if (l === undefined) throw invalidArgument(`offset ${off} is out of range: chip "${t.chip}" has lines 0..${ls.length - 1}`);
      add(l);
    } else {
      const name = t.line.name;
      const l = ls.find((x) => x.name === name);
      if (l === undefined) throw notFound(`chip "${t.chip}" has no line named "${name}"`);
      add(l);
    }
  }
  return out;
}

async function trace(client: LineStateClient, file: string, targets: readonly Target[], durationS: number | undefined, address: string): Promise<number> {
  // Stop requests (signals, --duration) may come during the set-up; remember them.
  let stopRequested = false;
  let wake: (() => void) | undefined;
  const requestStop = (): void => {
    stopRequested = true;
    wake?.();
  };
  process.on('SIGINT', requestStop);
  process.on('SIGTERM', requestStop);
  const handles: WatchHandle[] = [];
  let timer: NodeJS.Timeout | undefined;
  let flusher: NodeJS.Timeout | undefined;
  let fd: number | undefined;
  try {
    // 1. Time 0 and each chip's cursor.
    const originNs = nowNs();
    const startMs = performance.now();
    if (durationS !== undefined) timer = setTimeout(requestStop, durationS * 1000);
    const known = await client.listChips();
    const knownIds = new Set(known.map((c) => c.id));
    for (const t of targets) if (!knownIds.has(t.chip)) throw notFound(`chip "${t.chip}" is not registered`);
    const chips = targets.length === 0 ? known.map((c) => c.id) : [...new Set(targets.map((t) => t.chip))];
    if (chips.length === 0) throw new FabricError(ErrorCode.FAILED_PRECONDITION, 'no chips are registered: nothing to trace');
    const cursors = new Map(known.filter((c) => chips.includes(c.id)).map((c) => [c.id, BigInt(c.lastSeq)] as const));

    // 2. One stream per chip, resumed from its cursor: no event after time 0 is missed.
    let failure: Error | undefined;
    const fail = (e: Error): void => {
      failure ??= e;
      wake?.();
    };
    let recorder: TraceRecorder | undefined;
    const early: { e: Parameters<TraceRecorder['push']>[0]; at: number }[] = [];
    for (const chip of chips) {
      handles.push(client.watchEvents(
        { chips: [chip], fromSeq: String(cursors.get(chip) ?? 0n) },
        (e) => {
          const ev = { chip: e.chip, offset: e.offset, level: e.level, seq: BigInt(e.seq), timestampNs: BigInt(e.timestampNs) };
          if (recorder === undefined) early.push({ e: ev, at: performance.now() });
          else recorder.push(ev, performance.now());
          wake?.();
        },
        (err) => fail(err),
        () => fail(new FabricError(ErrorCode.UNAVAILABLE, `the service ended the event stream of chip ${chip}`)),
      ));
    }

    // 3. The snapshot (levels and names), then the cursors again: events between the two
    //    cursor reads may or may not be in the snapshot; the recorder sorts that out.
    const lineLists = new Map<string, LineState[]>();
    if (targets.length === 0) {
      for (const l of await client.listLines({ chip: '' })) {
        const list = lineLists.get(l.chip);
        if (list === undefined) lineLists.set(l.chip, [l]);
        else list.push(l);
      }
    } else {
      for (const chip of chips) lineLists.set(chip, await client.listLines({ chip }));
    }
    const lines = selectLines(targets, chips, lineLists);
    const after = new Map((await client.listChips()).map((c) => [c.id, BigInt(c.lastSeq)] as const));
    const cutoff = new Map(chips.map((c) => [c, after.get(c) ?? cursors.get(c) ?? 0n] as const));
    recorder = new TraceRecorder({ lines, originNs, cursors, holdMs: TRACE_HOLD_MS });
    for (const x of early) recorder.push(x.e, x.at);
    early.length = 0;

    // 4. Wait until every stream delivered its events up to the cutoff.
    const rec = recorder;
    const caughtUp = (): boolean => chips.every((c) => (rec.seqOf(c) ?? 0n) >= (cutoff.get(c) ?? 0n));
    const deadline = performance.now() + CATCH_UP_MS;
    while (!caughtUp() && failure === undefined && performance.now() < deadline) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 50);
      });
      wake = undefined;
    }
    if (failure !== undefined) throw failure;
    if (!caughtUp()) throw new FabricError(ErrorCode.DEADLINE_EXCEEDED, `the event streams did not deliver the events since the start within ${CATCH_UP_MS / 1000} s`);
    const levels = new Map<string, number>();
    for (const list of lineLists.values()) for (const l of list) levels.set(`${l.chip}\n${l.offset}`, l.level);
    const initial = rec.begin((i) => {
      const l = lines[i];
      return l === undefined ? 0 : (levels.get(`${l.chip}\n${l.offset}`) ?? 0);
    }, cutoff);

    // 5. The file: header now, changes as they become ready (a crash leaves a readable prefix).
    fd = openSync(file, 'w');
    const out = fd;
    const startIso = new Date(Number(originNs / 1_000_000n)).toISOString();
    writeSync(out, vcdHeaderText({
      date: startIso,
      version: 'gpio-fabric trace',
      comment: [
        `time 0 = ${startIso} (${originNs} ns since the epoch, clock of the tracing host);`,
        `event times from the line-state service at ${address}; chips: ${chips.join(' ')}`,
      ].join('\n'),
      signals: rec.signals,
    }, initial));
    const enc = new VcdEncoder(rec.signals.length);
    const flush = (nowMs?: number): void => {
      const text = enc.changes(rec.drain(nowMs));
      if (text !== '') writeSync(out, text);
    };
    flusher = setInterval(() => flush(performance.now()), TRACE_FLUSH_MS);

    // 6. Record until --duration, a signal, or a stream failure.
    while (!stopRequested && failure === undefined) {
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
      wake = undefined;
    }
    const endNs = nowNs();
    for (const h of handles) h.cancel();
    clearInterval(flusher);
    flush();
    const endTick = (endNs - originNs) / 1000n;
    writeSync(out, enc.end(endTick));
    closeSync(out);
    fd = undefined;

    const s = rec.stats;
    const seconds = ((performance.now() - startMs) / 1000).toFixed(2);
    const nChips = new Set(lines.map((l) => l.chip)).size;
    console.log(`traced ${lines.length} signal${lines.length === 1 ? '' : 's'} on ${nChips} chip${nChips === 1 ? '' : 's'} for ${seconds} s: ${s.changes} change${s.changes === 1 ? '' : 's'} -> ${file}`);
    if (s.lost > 0) console.error(`gpio-fabric trace: warning: ${s.lost} event(s) were missing from the streams (older than the service keeps); levels may be wrong around them`);
    if (s.shifted > 0) console.error(`gpio-fabric trace: note: ${s.shifted} change(s) were written later than stamped (events arriving out of order, or pulses under 1 us widened to 1 us)`);
    if (failure !== undefined) {
      console.error(`gpio-fabric trace: stopped early, the file holds the trace up to the failure`);
      throw failure;
    }
    return 0;
  } finally {
    for (const h of handles) h.cancel();
    if (timer !== undefined) clearTimeout(timer);
    if (flusher !== undefined) clearInterval(flusher);
    if (fd !== undefined) closeSync(fd);
    process.off('SIGINT', requestStop);
    process.off('SIGTERM', requestStop);
  }
}

/** `gpio-fabric trace`: record line levels into a Value Change Dump file. */
export const command: Command = {
  summary: 'record line levels into a Value Change Dump (VCD) file for GTKWave or PulseView',
  help: `Usage: gpio-fabric trace --vcd FILE [--duration S] [--server ADDR] [CHIP[:LINE]...]

Records the levels of lines into FILE, a Value Change Dump (IEEE 1364) that GTKWave
(\`gtkwave FILE\`) and PulseView (\`pulseview -I vcd FILE\`) open. Time 0 is the start;
the initial values are the levels at the start, then every change the line-state
service reports, stamped with the event's time (resolution 1 us).

Targets:
  (none)            every line of every chip registered at the start
  CHIP              every line of that chip
  CHIP:LINE         one line, by offset or by name (vm-a:3, vm-a:led0)
Lines of chips registered after the start are not traced.

Signals are named CHIP.NAME (CHIP.OFFSET for unnamed lines) inside one scope per chip.
Runs until S seconds have passed, or until interrupted (Ctrl-C, SIGTERM); the file is
written as it goes and completed at the end. Prints the number of signals and changes.

Options:
  --vcd FILE        the file to write (replaced if it exists)
  --duration S      stop after S seconds (decimals allowed, e.g. 0.5)
${SERVER_HELP}

See docs/trace.md for the file format and its limits.`,
  async run(argv) {
    const { values, positionals } = parse(argv, { ...serverOption, vcd: { type: 'string' }, duration: { type: 'string' } }, { min: 0, max: Number.MAX_SAFE_INTEGER, what: 'CHIP or CHIP:LINE targets' });
    if (values.vcd === undefined || values.vcd === '') throw new UsageError('--vcd FILE is required (the file to write)');
    const durationS = durationArg(values.duration);
    const targets = positionals.map(targetArg);
    const address = serverAddress(values.server);
    const client = clientFor(values);
    try {
      return await trace(client, values.vcd, targets, durationS, address);
    } catch (e) {
      throw reachable(e, address, tlsFilesFrom(values) !== undefined);
    } finally {
      client.close();
    }
  },
};
