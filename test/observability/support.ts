/**
 * Helpers of the observability tests: the panel queries of a dashboard JSON, the metric
 * catalogue of docs/metrics.md, the metric names a PromQL expression refers to, and
 * promtool/prometheus lookup.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** One query of one panel. */
export interface PanelQuery {
  readonly dashboard: string;
  readonly panel: string;
  readonly refId: string;
  readonly expr: string;
}

interface JsonPanel {
  readonly type?: unknown;
  readonly title?: unknown;
  readonly targets?: unknown;
  readonly panels?: unknown;
}

/** Every non-row panel of a dashboard JSON (rows' nested panels included). */
export function panelsOf(dash: { readonly panels?: unknown }): JsonPanel[] {
  const out: JsonPanel[] = [];
  const walk = (list: unknown): void => {
    if (!Array.isArray(list)) return;
    for (const p of list as JsonPanel[]) {
      if (p.type === 'row') walk(p.panels);
      else out.push(p);
    }
  };
  walk(dash.panels);
  return out;
}

/** Every target expression of every panel. */
export function panelQueries(dash: { readonly title?: unknown; readonly panels?: unknown }): PanelQuery[] {
  const out: PanelQuery[] = [];
  for (const p of panelsOf(dash)) {
    const targets = Array.isArray(p.targets) ? (p.targets as { expr?: unknown; refId?: unknown }[]) : [];
    for (const t of targets) {
      out.push({ dashboard: String(dash.title), panel: String(p.title), refId: String(t.refId), expr: typeof t.expr === 'string' ? t.expr : '' });
    }
  }
  return out;
}

/** The series names of docs/metrics.md's tables (first column, `gpiofabric_…`). */
export function catalogueMetrics(): Map<string, string> {
  const text = readFileSync(resolve(ROOT, 'docs/metrics.md'), 'utf8');
  const out = new Map<string, string>();
  for (const m of text.matchAll(/^\|\s*`(gpiofabric_[a-z0-9_]+)`\s*\|\s*([a-z]+)\s*\|/gm)) {
    out.set(m[1] as string, m[2] as string);
  }
  return out;
}

/** Metric names Prometheus itself provides for every target. */
export const STANDARD_METRICS: ReadonlySet<string> = new Set(['up', 'scrape_duration_seconds', 'scrape_samples_scraped', 'ALERTS', 'ALERTS_FOR_STATE']);

const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan', 'atan2']);

/**
 * The metric names an expression selects (a lexical scan good for the expressions we
 * write: strings, label matchers, grouping clauses, ranges and function names removed).
 */
export function metricNames(expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/(?<![A-Za-z0-9_:])[0-9][0-9.]*(?:[eE][+-]?[0-9]+)?[a-z]*/g, ' '); // numbers, durations
  const names = new Set<string>();
  for (const m of s.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const word = m[0];
    const after = s.slice((m.index ?? 0) + word.length).trimStart();
    if (after.startsWith('(')) continue; // a function
    if (KEYWORDS.has(word.toLowerCase())) continue;
    names.add(word);
  }
  return [...names];
}

/** Whether `name` is a catalogue series (histograms via _bucket/_sum/_count) or standard. */
export function knownMetric(name: string, catalogue: ReadonlyMap<string, string>): boolean {
  if (STANDARD_METRICS.has(name) || catalogue.has(name)) return true;
  const h = /^(.*)_(bucket|sum|count)$/.exec(name);
  return h !== null && catalogue.get(h[1] as string) === 'histogram';
}

/**
 * Path of a Prometheus tool (promtool, prometheus), or a clear failure message.
 * `npm test` installs Debian's prometheus package (which has both).
 */
export function findTool(name: 'promtool' | 'prometheus'): string {
  const r = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  const path = r.stdout.trim();
  if (r.status !== 0 || path === '') {
    throw new Error(`${name} not found on PATH: install Debian's prometheus package (apt-get install prometheus); npm test does this when run as root`);
  }
  return path;
}
