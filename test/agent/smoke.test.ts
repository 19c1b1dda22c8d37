import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent } from '../../services/agent/src/agent.ts';
import { Frontend, Gpio } from '../support/frontend.ts';

test('smoke: standalone agent answers a frontend over a real socket', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gf-agent-'));
  const agent = await startAgent({ socketPath: join(dir, 'a.sock'), chip: 'vm-a', ngpio: 4, names: ['a', 'b', '', 'd'], backend: { kind: 'standalone' } });
  const fe = await Frontend.connect(agent.socketPath);
  try {
    await fe.start();
    const r1 = await fe.request(Gpio.GET_DIRECTION, 1);
    assert.deepEqual([r1.status, r1.value, r1.usedLen], [0, 0, 2]);
    await fe.request(Gpio.SET_VALUE, 1, 1);
    await fe.request(Gpio.SET_DIRECTION, 1, 1);
    const r2 = await fe.request(Gpio.GET_VALUE, 1);
    assert.deepEqual([r2.status, r2.value], [0, 1]);
  } finally {
    fe.close();
    await agent.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
