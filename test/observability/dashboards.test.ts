/**
 * The committed Grafana dashboards are what deploy/grafana/dashboards.ts builds (run
 * `npm run dashboards` after changing it), the Helm chart carries identical copies, and
 * every panel queries series that exist in the metric catalogue (docs/metrics.md).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { DASHBOARD_DIRS, DashboardUid, buildDashboards, renderDashboards } from '../../deploy/grafana/dashboards.ts';
import { ROOT, catalogueMetrics, knownMetric, metricNames, panelQueries, panelsOf } from './support.ts';

const rendered = renderDashboards();

test('the committed dashboard JSON is what `npm run dashboards` generates, in both folders', () => {
  assert.deepEqual([...rendered.keys()].sort(), ['chip.json', 'overview.json']);
  for (const dir of DASHBOARD_DIRS) {
    const present = readdirSync(join(ROOT, dir)).filter((f) => f.endsWith('.json')).sort();
    assert.deepEqual(present, [...rendered.keys()].sort(), `${dir} holds exactly the generated dashboards`);
    for (const [name, text] of rendered) {
      const committed = readFileSync(join(ROOT, dir, name), 'utf8');
      assert.ok(committed === text, `${dir}/${name} is stale: run \`npm run dashboards\` and commit the result`);
    }
  }
  for (const name of rendered.keys()) {
    const [a, b] = DASHBOARD_DIRS.map((d) => readFileSync(join(ROOT, d, name), 'utf8'));
    assert.equal(a, b, `${name}: the Grafana and Helm copies differ`);
  }
});

test('dashboards have their uids, titles, variables and unique panel ids', () => {
  const d = buildDashboards();
  assert.equal(d['overview.json'].uid, DashboardUid.overview);
  assert.equal(d['overview.json'].title, 'GPIO fabric / Overview');
  assert.equal(d['chip.json'].uid, DashboardUid.chip);
  assert.equal(d['chip.json'].title, 'GPIO fabric / Chip');
  const vars = (x: { templating?: { list?: { name: string; type: string; query?: unknown }[] } }): Map<string, { type: string; query?: unknown }> =>
    new Map((x.templating?.list ?? []).map((v) => [v.name, v]));
  const chipVars = vars(d['chip.json']);
  assert.equal(chipVars.get('datasource')?.type, 'datasource');
  assert.equal(chipVars.get('chip')?.type, 'query');
  assert.match(JSON.stringify(chipVars.get('chip')?.query), /label_values\(gpiofabric_agent_requests_total, chip\)/);
  assert.equal(vars(d['overview.json']).get('datasource')?.type, 'datasource');
  for (const dash of Object.values(d)) {
    const ids = (dash.panels ?? []).map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, `${dash.title}: panel ids are unique`);
    for (const p of panelsOf(dash)) {
      const ds = (p as { datasource?: { uid?: string } }).datasource;
      assert.equal(ds?.uid, '${datasource}', `${dash.title} / ${String(p.title)} uses the $datasource variable`);
    }
  }
});

test('every panel has a query, and the chip dashboard filters every agent query by $chip', () => {
  for (const [name, text] of rendered) {
    const dash = JSON.parse(text) as { title: string; panels: unknown[] };
    const panels = panelsOf(dash);
    assert.ok(panels.length >= 10, `${name} has its panels`);
    for (const p of panels) {
      const qs = panelQueries({ title: dash.title, panels: [p] });
      assert.ok(qs.some((q) => q.expr.trim() !== ''), `${name} / ${String(p.title)} has at least one target with an expr`);
      for (const q of qs) assert.notEqual(q.expr.trim(), '', `${name} / ${q.panel} / ${q.refId}: empty expr`);
    }
    if (name === 'chip.json') {
      for (const q of panelQueries(dash)) {
        if (q.expr.includes('gpiofabric_agent_')) assert.match(q.expr, /chip="\$chip"/, `${q.panel}: ${q.expr}`);
      }
    }
  }
});

test('every metric a panel queries is in docs/metrics.md (or standard, like up)', () => {
  const catalogue = catalogueMetrics();
  assert.ok(catalogue.size >= 15, 'the catalogue parses');
  const used = new Set<string>();
  for (const [name, text] of rendered) {
    for (const q of panelQueries(JSON.parse(text) as { title: string; panels: unknown[] })) {
      const names = metricNames(q.expr);
      assert.ok(names.length > 0, `${name} / ${q.panel}: no metric in ${q.expr}`);
      for (const m of names) {
        assert.ok(knownMetric(m, catalogue), `${name} / ${q.panel}: ${m} is not in docs/metrics.md (${q.expr})`);
        used.add(m.replace(/_(bucket|sum|count)$/, ''));
      }
    }
  }
  // Every catalogue series is on some panel (the dashboards show the whole catalogue).
  const unused = [...catalogue.keys()].filter((m) => !used.has(m));
  assert.deepEqual(unused, [], 'catalogue series no panel shows');
});

test('the metric name scan sees through PromQL syntax', () => {
  assert.deepEqual(
    metricNames('histogram_quantile(0.99, sum by (le, chip) (rate(gpiofabric_agent_irq_propagation_seconds_bucket{chip="$chip", x=~"a|b"}[$__rate_interval])))'),
    ['gpiofabric_agent_irq_propagation_seconds_bucket'],
  );
  assert.deepEqual(metricNames('sum(up{job=~".*agent.*"}) / count(up) or vector(0)'), ['up']);
  assert.deepEqual(metricNames('a_total / on (chip) group_left (x) b offset 5m'), ['a_total', 'b']);
  const cat = new Map([['gpiofabric_x_seconds', 'histogram'], ['gpiofabric_y_total', 'counter']]);
  assert.equal(knownMetric('gpiofabric_x_seconds_bucket', cat), true);
  assert.equal(knownMetric('gpiofabric_y_total_bucket', cat), false);
  assert.equal(knownMetric('gpiofabric_z', cat), false);
  assert.equal(knownMetric('up', cat), true);
});

test('the Grafana provisioning files point at the dashboards and a Prometheus data source', () => {
  const dash = readFileSync(join(ROOT, 'deploy/grafana/provisioning/dashboards/gpio-fabric.yml'), 'utf8');
  assert.match(dash, /path: \/var\/lib\/grafana\/dashboards\/gpio-fabric/);
  const ds = readFileSync(join(ROOT, 'deploy/grafana/provisioning/datasources/prometheus.yml'), 'utf8');
  assert.match(ds, /type: prometheus/);
  assert.ok(existsSync(join(ROOT, 'deploy/grafana/dashboards/overview.json')));
});
