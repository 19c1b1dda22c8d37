import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

test('committed generated gRPC code matches proto/ (run `npm run generate` when this fails)', () => {
  const out = mkdtempSync(join(tmpdir(), 'gf-gen-'));
  try {
    const r = spawnSync(process.execPath, ['scripts/generate-proto.mjs', '--out', out], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const dir = 'services/common/src/gen/gpiofabric/v1';
    const fresh = readdirSync(join(out, dir)).sort();
    assert.deepEqual(readdirSync(dir).sort(), fresh);
    for (const f of fresh) {
      assert.equal(readFileSync(join(dir, f), 'utf8'), readFileSync(join(out, dir, f), 'utf8'), `${f} is stale`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
