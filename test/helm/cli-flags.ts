/**
 * The flags `gpio-fabric COMMAND` accepts, read from the real `--help` output (so chart
 * and compose arguments are checked against the CLI as it is, not against a copy).
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** Repository root. */
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

const cache = new Map<string, ReadonlySet<string>>();

/** Every `--flag` mentioned in `gpio-fabric COMMAND --help`. */
export function cliFlags(command: string): ReadonlySet<string> {
  let flags = cache.get(command);
  if (flags === undefined) {
    const help = execFileSync(process.execPath, ['bin/gpio-fabric.mjs', command, '--help'], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
    flags = new Set([...help.matchAll(/--[a-z][a-z0-9-]*/g)].map((m) => m[0]));
    cache.set(command, flags);
  }
  return flags;
}

/** The `--flags` of an argument vector (values that start with "--" after a flag are not expected here). */
export function flagsIn(args: readonly string[]): string[] {
  return args.filter((a) => a.startsWith('--')).map((a) => a.split('=')[0]!);
}

/** Value following `flag` in an argument vector. */
export function flagValue(args: readonly string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i < 0 ? undefined : args[i + 1];
}
