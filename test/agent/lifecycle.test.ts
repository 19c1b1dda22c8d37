/**
 * Connection lifecycle over a real socket: the QEMU 7.2 sequence (no F_IRQ, 256-entry
 * ring, ENABLE of the never-configured eventq), pause/resume (GET_VRING_BASE with
 * requests in flight at a slow service, then SET_VRING_BASE + re-enable), and a
 * disconnect with requests in flight followed by a reconnect.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startAgent, type RunningAgent } from '../../services/agent/src/agent.ts';
import { DriveValue, IrqType } from '../../services/common/src/line-model.ts';
import { createMemoryStore } from '../../services/linestate/src/store/memory-store.ts';
import type { LineStore } from '../../services/linestate/src/store/store.ts';
import { Frontend, Gpio } from '../support/frontend.ts';
import { driveRemote, quietLog, startService, tempDir, waitFor, type Service } from './fixtures.ts';

const OK = 0;
const ERR = 1;

/**
 * A store whose line operations (lineOp calls and lineOps batches) wait while the gate is
 * held (a slow service). `waiting` / `finished` count operations, not calls.
 */
function gatedStore(inner: LineStore): { store: LineStore; hold(): void; release(): void; readonly waiting: number; readonly finished: number } {
  let gate: Promise<void> | null = null;
  let open: () => void = () => {};
  let waiting = 0;
  let finished = 0;
  const store = new Proxy(inner, {
    get(target, key, receiver) {
      if (key === 'lineOp') {
        return async (input: Parameters<LineStore['lineOp']>[0]) => {
          if (gate !== null) {
            waiting++;
            await gate;
            waiting--;
            try {
              return await target.lineOp(input);
            } finally {
              finished++;
            }
          }
          return target.lineOp(input);
        };
      }
      if (key === 'lineOps') {
        return async (...args: Parameters<LineStore['lineOps']>) => {
          const n = args[2].length;
          if (gate !== null) {
            waiting += n;
            await gate;
            waiting -= n;
            try {
              return await target.lineOps(...args);
            } finally {
              finished += n;
            }
          }
          return target.lineOps(...args);
        };
      }
      const v: unknown = Reflect.get(target, key, receiver);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return {
    store,
    hold: () => {
      gate = new Promise<void>((r) => { open = r; });
    },
    release: () => {
      gate = null;
      open();
    },
    get waiting() {
      return waiting;
    },
    get finished() {
      return finished;
    },
  };
}

describe('agent connection lifecycle', () => {
  const dir = tempDir();
  after(() => dir.rm());

  it('QEMU 7.2 sequence: 256-entry ring, no F_IRQ, ENABLE of the unconfigured eventq; requests work, SET_IRQ_TYPE answers ERR', async () => {
    const agent = await startAgent({ socketPath: dir.path('q72.sock'), chip: 'q72', ngpio: 4, names: ['a', '', 'c', ''], backend: { kind: 'standalone' }, log: quietLog });
    const fe = await Frontend.connect(agent.socketPath, { sequence: 'qemu72' });
    try {
      await fe.start();
      assert.equal(fe.rings.length, 1);
      assert.equal(fe.rings[0]?.size, 256);
      assert.equal(fe.features & 1n, 0n, 'F_IRQ not negotiated');
      assert.equal(agent.device.irqEnabled, false);
      const names = await fe.request(Gpio.GET_NAMES, 0, 0, 1 + 6);
      assert.deepEqual([names.usedLen, ...names.bytes], [7, OK, 0x61, 0, 0, 0x63, 0, 0]);
      assert.deepEqual((await fe.request(Gpio.SET_VALUE, 2, 1)).status, OK);
      assert.deepEqual((await fe.request(Gpio.SET_DIRECTION, 2, 1)).status, OK);
      const v = await fe.request(Gpio.GET_VALUE, 2);
      assert.deepEqual([v.status, v.value, v.usedLen], [OK, 1, 2]);
      const irq = await fe.request(Gpio.SET_IRQ_TYPE, 2, IrqType.EDGE_RISING);
      assert.deepEqual([irq.status, irq.value, irq.usedLen], [ERR, 0, 2]);
      // 200 requests through the 256-entry ring (wraps the free-running indexes past the ring size)
      const all = await Promise.all(Array.from({ length: 100 }, (_, i) => fe.request(Gpio.GET_DIRECTION, i % 4)));
      assert.ok(all.every((r) => r.status === OK && r.usedLen === 2));
      const again = await Promise.all(Array.from({ length: 100 }, (_, i) => fe.request(Gpio.GET_VALUE, i % 4)));
      assert.ok(again.every((r) => r.status === OK && r.usedLen === 2));
    } finally {
      fe.close();
      await agent.close();
    }
  });

  describe('remote backend with a slow service', () => {
    const gated = gatedStore(createMemoryStore());
    let service: Service;
    let agent: RunningAgent;
    before(async () => {
      service = await startService(gated.store);
      agent = await startAgent({ socketPath: dir.path('slow.sock'), chip: 'slow', ngpio: 4, backend: { kind: 'remote', server: service.address }, requestDeadlineMs: 10_000, log: quietLog });
    });
    after(async () => {
      gated.release();
      await agent.close();
      await service.stop();
    });

    it('pause: GET_VRING_BASE answers in-flight requests ERR and returns eventq buffers INVALID; resume continues', async () => {
      const fe = await Frontend.connect(agent.socketPath);
      try {
        await fe.start();
        assert.equal((await fe.request(Gpio.SET_IRQ_TYPE, 1, IrqType.EDGE_RISING)).status, OK);
        const ev = fe.armIrq(1);
        await waitFor(() => agent.device.irqState(1)?.unmasked === true, 'line 1 unmasked');
        gated.hold();
        const inflight = [fe.request(Gpio.GET_VALUE, 2), fe.request(Gpio.SET_VALUE, 3, 1), fe.request(Gpio.GET_VALUE, 3)];
        await waitFor(() => gated.waiting === 2, 'two requests at the service (the third waits behind its line)');
        const [r0, r1] = fe.rings;
        assert.ok(r0 !== undefined && r1 !== undefined);

        const base0 = await fe.getVringBase(0);
        assert.equal(base0, r0.availIdx, 'the next avail index: every published chain counted as consumed');
        for (const r of await Promise.all(inflight)) assert.deepEqual([r.status, r.usedLen], [ERR, 2], 'in-flight requests answered ERR');
        const base1 = await fe.getVringBase(1);
        assert.equal(base1, r1.availIdx);
        assert.deepEqual(await ev, { status: 0, usedLen: 1 }, 'the pending eventq buffer came back INVALID');

        const used0 = r0.usedIdx;
        gated.release();
        await waitFor(() => gated.finished >= 2, 'the late backend results');
        await new Promise((r) => setTimeout(r, 20));
        assert.equal(r0.usedIdx, used0, 'late results do not touch the stopped ring');

        await fe.resumeRing(0, base0);
        await fe.resumeRing(1, base1);
        const after = await fe.request(Gpio.GET_VALUE, 3);
        assert.deepEqual([after.status, after.usedLen], [OK, 2], 'requests work after resume');
        assert.equal(agent.device.irqState(1)?.type, IrqType.EDGE_RISING, 'irq type kept across the pause');
        const ev2 = fe.armIrq(1);
        await waitFor(() => agent.device.irqState(1)?.unmasked === true, 'line 1 unmasked again');
        await driveRemote(service.client, 'slow', 1, DriveValue.HIGH);
        assert.deepEqual(await ev2, { status: 1, usedLen: 1 }, 'interrupts delivered after resume');
      } finally {
        gated.release();
        fe.close();
      }
      await waitFor(() => !agent.server.connected, 'disconnect');
    });

    it('disconnect with requests in flight, then a new front-end works', async () => {
      const fe = await Frontend.connect(agent.socketPath);
      await fe.start();
      gated.hold();
      const inflight = [fe.request(Gpio.GET_VALUE, 0), fe.request(Gpio.GET_VALUE, 1), fe.request(Gpio.SET_VALUE, 2, 1)].map((p) => p.then(() => 'answered', () => 'aborted'));
      await waitFor(() => gated.waiting === 3, 'three requests at the service');
      fe.close();
      assert.deepEqual(await Promise.all(inflight), ['aborted', 'aborted', 'aborted']);
      await waitFor(() => !agent.server.connected, 'the agent to see the disconnect');
      gated.release();
      await waitFor(() => gated.finished >= 5, 'the late results');
      const fe2 = await Frontend.connect(agent.socketPath);
      try {
        await fe2.start();
        const r = await fe2.request(Gpio.GET_VALUE, 1);
        assert.deepEqual([r.status, r.usedLen], [OK, 2]);
        assert.equal(agent.device.irqState(1)?.type, IrqType.NONE, 'interrupt state reset for the new front-end');
      } finally {
        fe2.close();
      }
    });
  });
});
