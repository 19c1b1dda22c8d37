// Builds the agent's native addon (services/agent/native) with node-gyp, offline.
// node-gyp downloads Node headers unless told where they are: we point it at the
// headers of the running Node (e.g. /usr/include/node on Debian), found from
// process.execPath. Skips quietly when there is no addon source yet.
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const addonDir = join(root, 'services', 'agent', 'native');
const force = process.argv.includes('--force');

if (!existsSync(join(addonDir, 'binding.gyp'))) process.exit(0);
if (!force && existsSync(join(addonDir, 'build', 'Release', 'gpiofabric_native.node'))) process.exit(0);

const prefix = dirname(dirname(process.execPath));
const nodedir = [process.env.npm_config_nodedir, prefix, '/usr']
  .filter((d) => typeof d === 'string' && d.length > 0)
  .find((d) => existsSync(join(d, 'include', 'node', 'node_api.h')));
if (nodedir === undefined) {
  console.error('build-addon: cannot find Node headers (include/node/node_api.h) next to the running node; install them (Debian: nodejs headers) or set npm_config_nodedir');
  process.exit(1);
}

// node-gyp ships inside npm; resolve it from npm's own installation.
const candidates = [
  process.env.npm_config_node_gyp,
  join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  '/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
  '/usr/share/nodejs/node-gyp/bin/node-gyp.js',
].filter((p) => typeof p === 'string' && p.length > 0 && existsSync(p));
const gyp = candidates[0];
if (gyp === undefined) {
  console.error('build-addon: node-gyp not found (it ships with npm); install npm or node-gyp');
  process.exit(1);
}
const r = spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${nodedir}`], { cwd: addonDir, stdio: 'inherit' });
process.exit(r.status ?? 1);
