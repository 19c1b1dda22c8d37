/**
 * Helpers of the metrics tests: a parser of the Prometheus text exposition format (enough
 * for prom-client's output), the catalogue table of docs/metrics.md, an HTTP GET, and
 * `promtool check metrics`.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface Exposition {
  /** Metric family name → declared type. */
  readonly types: ReadonlyMap<string, string>;
  readonly samples: readonly Sample[];
  /** Value of the one sample with exactly these labels (among others: `labels` is a subset); 0 when absent. */
  value(name: string, labels?: Readonly<Record<string, string>>): number;
  /** Whether a sample with these labels exists. */
  has(name: string, labels?: Readonly<Record<string, string>>): boolean;
}

function parseLabels(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) out[m[1]!] = m[2]!.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
  return out;
}

export function parseExposition(text: string): Exposition {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const t = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (t !== null) {
      types.set(t[1]!, t[2]!);
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)/.exec(line);
    if (m === null) throw new Error(`unparsable exposition line: ${line}`);
    const v = m[3]!;
    samples.push({ name: m[1]!, labels: m[2] === undefined ? {} : parseLabels(m[2]), value: v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v) });
  }
  const matching = (name: string, labels: Readonly<Record<string, string>>): Sample[] =>
    samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  return {
    types,
    samples,
    value(name, labels = {}) {
      const found = matching(name, labels);
      if (found.length > 1) throw new Error(`${name}${JSON.stringify(labels)} matches ${found.length} samples`);
      return found[0]?.value ?? 0;
    },
    has: (name, labels = {}) => matching(name, labels).length > 0,
  };
}

export interface CatalogueRow {
  readonly name: string;
  readonly type: string;
  readonly labels: readonly string[];
}

/** The series tables of docs/metrics.md. */
export function readCatalogue(path = 'docs/metrics.md'): CatalogueRow[] {
  const rows: CatalogueRow[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const m = /^\|\s*`(gpiofabric_[a-z0-9_]+)`\s*\|\s*([a-z]+)\s*\|([^|]*)\|/.exec(line);
    if (m === null) continue;
    rows.push({ name: m[1]!, type: m[2]!, labels: m[3]!.split(',').map((l) => l.trim()).filter((l) => l !== '') });
  }
  return rows;
}

/** GET http://address/path → status and body. */
export function httpGet(address: string, path: string, method = 'GET'): Promise<{ status: number; body: string; contentType: string }> {
  const i = address.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const req = request({ host: address.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(address.slice(i + 1)), path, method, agent: false, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, contentType: String(res.headers['content-type'] ?? '') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer`)));
    req.on('error', reject);
    req.end();
  });
}

/** Drop the metric families promtool flags in prom-client's defaults (gauges named *_total). */
export function withoutFlaggedDefaults(text: string): string {
  return text
    .split('\n')
    .filter((l) => !/^(# (HELP|TYPE) )?gpiofabric_nodejs_active_(handles|requests|resources)_total\b/.test(l))
    .join('\n');
}

/** `promtool check metrics` on `text`: exit status and everything it printed. */
export function promtoolCheck(text: string): { status: number | null; output: string; error?: Error } {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, output: `${r.stdout ?? ''}${r.stderr ?? ''}`, ...(r.error !== undefined ? { error: r.error } : {}) };
}
