// Regenerates the TypeScript gRPC code from proto/ with buf + ts-proto (both from npm,
// offline). `--out DIR` writes under DIR instead of the repository (used by the test
// that fails when the committed code is stale).
import { spawnSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const i = process.argv.indexOf('--out');
const args = ['generate'];
if (i > 0 && process.argv[i + 1] !== undefined) args.push('-o', resolve(process.argv[i + 1]));
const buf = join(root, 'node_modules', '.bin', 'buf');
for (const step of [['lint'], args]) {
  const r = spawnSync(buf, step, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`generate-proto: buf ${step.join(' ')} failed`);
    process.exit(r.status ?? 1);
  }
}
