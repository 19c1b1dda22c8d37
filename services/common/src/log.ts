/**
 * Minimal structured logging to stderr: `2026-11-24T12:00:00.000Z INFO agent[vm-a] message key=value`.
 * Levels below the threshold (env GPIOFABRIC_LOG = debug|info|warn|error, default info) are dropped.
 */
export const LogLevel = { debug: 10, info: 20, warn: 30, error: 40 } as const;
export type LogLevel = keyof typeof LogLevel;

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

function threshold(): number {
  const v = process.env['GPIOFABRIC_LOG'];
  return v !== undefined && v in LogLevel ? LogLevel[v as LogLevel] : LogLevel.info;
}

function fmt(fields: Record<string, unknown> | undefined): string {
  if (fields === undefined) return '';
  let s = '';
  for (const [k, v] of Object.entries(fields)) {
    const t = typeof v === 'string' ? (/[\s"]/.test(v) ? JSON.stringify(v) : v) : typeof v === 'bigint' ? v.toString() : JSON.stringify(v);
    s += ` ${k}=${t}`;
  }
  return s;
}

/** A logger writing to stderr with a component tag. */
export function createLogger(component: string, write: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): Logger {
  const min = threshold();
  const at = (level: LogLevel) => (msg: string, fields?: Record<string, unknown>): void => {
    if (LogLevel[level] < min) return;
    write(`${new Date().toISOString()} ${level.toUpperCase()} ${component} ${msg}${fmt(fields)}`);
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}
