/**
 * The Prometheus rules and scrape config are valid (`promtool check`), the rule unit
 * tests pass (`promtool test rules`), every alert has a firing and a not-firing case in
 * them, and the rules only use catalogue series. promtool comes from Debian's prometheus
 * package (npm test installs it).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { ROOT, catalogueMetrics, findTool, knownMetric, metricNames } from './support.ts';

const PROM_DIR = join(ROOT, 'deploy/prometheus');
const RULES = join(PROM_DIR, 'rules/gpio-fabric.rules.yml');
const RULE_TESTS = join(PROM_DIR, 'rules/gpio-fabric.rules.test.yml');

interface Rule { readonly alert?: string; readonly record?: string; readonly expr: string; readonly labels?: Record<string, string>; readonly annotations?: Record<string, string> }
interface RuleFile { readonly groups: readonly { readonly name: string; readonly rules: readonly Rule[] }[] }
interface RuleTests {
  readonly rule_files: readonly string[];
  readonly tests: readonly { readonly name: string; readonly alert_rule_test?: readonly { alertname: string; exp_alerts?: readonly unknown[] }[] }[];
}

function promtool(args: readonly string[]): { status: number | null; out: string } {
  const r = spawnSync(findTool('promtool'), args, { encoding: 'utf8', cwd: PROM_DIR, timeout: 30_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

test('promtool check rules accepts the rule file', () => {
  const r = promtool(['check', 'rules', RULES]);
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /SUCCESS: \d+ rules found/);
});

test('promtool check config accepts the compose scrape config (and the rule file it loads)', () => {
  const r = promtool(['check', 'config', join(PROM_DIR, 'prometheus.yml')]);
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /SUCCESS: 1 rule files found/);
});

test('promtool test rules: every alert fires and stays silent where it should', () => {
  const r = promtool(['test', 'rules', RULE_TESTS]);
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /SUCCESS/);
});

test('the rule unit tests cover each alert firing and not firing', () => {
  const rules = parse(readFileSync(RULES, 'utf8')) as RuleFile;
  const tests = parse(readFileSync(RULE_TESTS, 'utf8')) as RuleTests;
  assert.deepEqual(tests.rule_files, ['gpio-fabric.rules.yml']);
  const alerts = rules.groups.flatMap((g) => g.rules).filter((r) => r.alert !== undefined).map((r) => r.alert as string);
  assert.ok(alerts.length >= 8, 'the alerts parse');
  const firing = new Set<string>();
  const silent = new Set<string>();
  for (const t of tests.tests) {
    for (const a of t.alert_rule_test ?? []) ((a.exp_alerts ?? []).length > 0 ? firing : silent).add(a.alertname);
  }
  for (const a of alerts) {
    assert.ok(firing.has(a), `${a} has no firing case in gpio-fabric.rules.test.yml`);
    assert.ok(silent.has(a), `${a} has no not-firing case in gpio-fabric.rules.test.yml`);
  }
});

test('alerts carry a severity, a summary and a description; rules use catalogue series only', () => {
  const rules = parse(readFileSync(RULES, 'utf8')) as RuleFile;
  const catalogue = catalogueMetrics();
  const recorded = new Set(rules.groups.flatMap((g) => g.rules).flatMap((r) => (r.record !== undefined ? [r.record] : [])));
  for (const r of rules.groups.flatMap((g) => g.rules)) {
    if (r.alert !== undefined) {
      assert.ok(['critical', 'warning', 'info'].includes(r.labels?.['severity'] ?? ''), `${r.alert}: severity`);
      assert.ok((r.annotations?.['summary'] ?? '') !== '', `${r.alert}: summary`);
      assert.ok((r.annotations?.['description'] ?? '') !== '', `${r.alert}: description`);
      assert.match(r.alert, /^GpioFabric[A-Z][A-Za-z]+$/);
    } else {
      assert.match(r.record ?? '', /^gpiofabric:[a-z0-9_]+:[a-z0-9_]+$/, 'recording rules follow level:metric:operations');
    }
    for (const m of metricNames(r.expr)) {
      assert.ok(knownMetric(m, catalogue) || recorded.has(m), `${r.alert ?? r.record}: ${m} is neither in docs/metrics.md nor recorded here`);
    }
  }
});
