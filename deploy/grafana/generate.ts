/**
 * `npm run dashboards`: writes the dashboards built in dashboards.ts as JSON to
 * deploy/grafana/dashboards/ (Grafana provisioning, import by hand) and the identical
 * files to helm/gpio-fabric/dashboards/ (the chart's grafana_dashboard ConfigMap).
 * test/observability/dashboards.test.ts fails when the committed files are stale.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DASHBOARD_DIRS, renderDashboards } from './dashboards.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const files = renderDashboards();
for (const dir of DASHBOARD_DIRS) {
  mkdirSync(join(root, dir), { recursive: true });
  for (const [name, text] of files) {
    writeFileSync(join(root, dir, name), text);
    console.log(`wrote ${join(dir, name)}`);
  }
}
