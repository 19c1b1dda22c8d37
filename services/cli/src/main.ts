/**
 * gpio-fabric command dispatcher. Each subcommand lives in ./commands/<name>.ts and is
 * loaded only when used, so `gpio-fabric agent` does not load the operator tooling.
 */
import { ConfigError, isFabricError } from '../../common/src/errors.ts';
import { UsageError, type Command } from './command.ts';

const commands: Record<string, () => Promise<{ command: Command }>> = {
  up: () => import('./commands/up.ts'),
  serve: () => import('./commands/serve.ts'),
  agent: () => import('./commands/agent.ts'),
  wire: () => import('./commands/wire.ts'),
  unwire: () => import('./commands/unwire.ts'),
  ls: () => import('./commands/ls.ts'),
  get: () => import('./commands/get.ts'),
  drive: () => import('./commands/drive.ts'),
  bias: () => import('./commands/bias.ts'),
  watch: () => import('./commands/watch.ts'),
  apply: () => import('./commands/apply.ts'),
  trace: () => import('./commands/trace.ts'),
  certs: () => import('./commands/certs.ts'),
};

async function usage(): Promise<string> {
  const lines = ['Usage: gpio-fabric <command> [options]', '', 'Commands:'];
  for (const [name, load] of Object.entries(commands)) {
    try {
      const { command } = await load();
      lines.push(`  ${name.padEnd(8)} ${command.summary}`);
    } catch {
      // a command whose module is missing is not listed
    }
  }
  lines.push('', 'Run `gpio-fabric <command> --help` for the options of a command.');
  lines.push('Operator commands reach the service at --server ADDR or $GPIOFABRIC_SERVER (default 127.0.0.1:7070).');
  return lines.join('\n');
}

export async function main(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    console.log(await usage());
    return name === undefined ? 2 : 0;
  }
  const load = commands[name];
  if (load === undefined) {
    console.error(`gpio-fabric: unknown command "${name}"\n\n${await usage()}`);
    return 2;
  }
  const { command } = await load();
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(command.help);
    return 0;
  }
  try {
    return await command.run(rest);
  } catch (e) {
    if (e instanceof UsageError || e instanceof ConfigError) {
      console.error(`gpio-fabric ${name}: ${e.message}\nRun \`gpio-fabric ${name} --help\` for usage.`);
      return 2;
    }
    if (isFabricError(e)) {
      console.error(`gpio-fabric ${name}: ${e.code}: ${e.message}`);
      return 1;
    }
    const err = e as { code?: unknown; details?: unknown; message?: unknown };
    if (typeof err.details === 'string' && typeof err.code === 'number') {
      console.error(`gpio-fabric ${name}: ${err.details}`);
      return 1;
    }
    console.error(`gpio-fabric ${name}: ${String(err.message ?? e)}`);
    return 1;
  }
}
