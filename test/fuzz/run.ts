/**
 * `npm run fuzz -- [--runs N] [--seed S] [--target NAME[,NAME]] [--list]`
 *
 * Runs the fuzz targets of test/fuzz/targets/ with fast-check. N (default 10000) is the
 * total number of generated inputs, split over the selected targets by their weights.
 * Prints per-target counts, the seed and the time; on a failure prints the target, the
 * seed, the shrunk counterexample and the replay path, and exits 1.
 */
import fc from 'fast-check';
import { allTargets } from './targets/index.ts';
import type { FuzzTarget } from './target.ts';
import { splitRuns } from './split.ts';

interface Args {
  runs: number;
  seed: number;
  targets: FuzzTarget[];
  list: boolean;
}

function usage(msg: string): never {
  console.error(`fuzz: ${msg}\nusage: npm run fuzz -- [--runs N] [--seed S] [--target ${allTargets.map((t) => t.name).join('|')}[,...]] [--list]`);
  process.exit(2);
}

function parseArgs(argv: readonly string[]): Args {
  let runs = 10_000;
  let seed = Date.now() ^ (process.pid << 8);
  let targets = [...allTargets];
  let list = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined) usage(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--runs': {
        runs = Number(value());
        if (!Number.isSafeInteger(runs) || runs < 1) usage('--runs must be a positive integer');
        break;
      }
      case '--seed': {
        seed = Number(value());
        if (!Number.isSafeInteger(seed)) usage('--seed must be an integer');
        break;
      }
      case '--target': {
        const names = value().split(',');
        targets = names.map((n) => allTargets.find((t) => t.name === n) ?? usage(`unknown target "${n}"`));
        break;
      }
      case '--list':
        list = true;
        break;
      default:
        usage(`unknown argument "${a}"`);
    }
  }
  return { runs, seed: seed | 0, targets, list };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.list) {
    for (const t of allTargets) console.log(`${t.name.padEnd(12)} weight ${String(t.weight).padStart(3)}  ${t.description}`);
    return;
  }
  const counts = splitRuns(args.runs, args.targets);
  console.log(`fuzz: ${args.runs} inputs over ${args.targets.length} target(s), seed ${args.seed}`);
  const t0 = performance.now();
  let total = 0;
  for (const [i, t] of args.targets.entries()) {
    const numRuns = counts[i] as number;
    const seed = (args.seed + i * 7919) | 0;
    const s0 = performance.now();
    const details = await fc.check(t.property(), { numRuns, seed, endOnFailure: false });
    const secs = (performance.now() - s0) / 1000;
    if (details.failed) {
      console.log(`FAIL ${t.name}: after ${details.numRuns} runs (seed ${seed}, path "${details.counterexamplePath ?? ''}")`);
      console.log(fc.defaultReportMessage(details) ?? '');
      if (details.errorInstance !== null) console.log(`error: ${details.errorInstance instanceof Error ? (details.errorInstance.stack ?? details.errorInstance.message) : String(details.errorInstance)}`);
      console.log(`replay: npm run fuzz -- --target ${t.name} --seed ${args.seed} --runs ${args.targets.length === 1 ? args.runs : numRuns}`);
      process.exitCode = 1;
      return;
    }
    total += details.numRuns;
    console.log(`ok   ${t.name.padEnd(12)} ${String(details.numRuns).padStart(9)} inputs  seed ${String(seed).padStart(11)}  ${secs.toFixed(1).padStart(7)} s  (${Math.round(details.numRuns / Math.max(secs, 1e-9))}/s)`);
  }
  console.log(`fuzz: all ${total} inputs passed in ${((performance.now() - t0) / 1000).toFixed(1)} s (seed ${args.seed})`);
}

await main();
