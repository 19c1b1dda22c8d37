/** The typed client against misbehaving or vanishing servers. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Server, ServerCredentials, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { ErrorCode, FabricError } from '../../services/common/src/errors.ts';
import { LineStateServiceService } from '../../services/common/src/gen/gpiofabric/v1/linestate.ts';
import { createLineStateClient } from '../../services/linestate/src/client.ts';
import { createMemoryStore } from '../../services/linestate/src/store/memory-store.ts';
import { startLineStateServer } from '../../services/linestate/src/server.ts';
import { collect } from './harness.ts';

describe('line-state client', () => {
  it('a call the server never answers fails with DEADLINE_EXCEEDED at the deadline', async () => {
    const server = new Server();
    const silent: UntypedServiceImplementation = {};
    for (const k of Object.keys(LineStateServiceService)) silent[k] = () => {}; // never answers
    server.addService(LineStateServiceService, silent);
    const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
    const c = createLineStateClient(`127.0.0.1:${port}`, { deadlineMs: 200 });
    try {
      await assert.rejects(c.lineOp({ chip: 'a', leaseToken: '1', op: 4, offset: 0, value: 0 }), (e: unknown) => {
        assert.ok(e instanceof FabricError);
        assert.equal(e.code, ErrorCode.DEADLINE_EXCEEDED);
        assert.match(e.message, /within 200 ms/);
        return true;
      });
    } finally {
      c.close();
      server.forceShutdown();
    }
  });

  it('no server: UNAVAILABLE', async () => {
    const c = createLineStateClient('127.0.0.1:1');
    try {
      await assert.rejects(c.listChips(), (e: unknown) => e instanceof FabricError && e.code === ErrorCode.UNAVAILABLE);
    } finally {
      c.close();
    }
  });

  it('a watch stream ends cleanly when the server closes, and cancel() silences it', async () => {
    const store = createMemoryStore();
    const server = await startLineStateServer({ store, listen: '127.0.0.1:0', log: () => {} });
    const c = createLineStateClient(server.address);
    try {
      await c.registerChip({ chip: 'vm-a', ngpio: 1, names: [], owner: 'o', leaseTtlMs: 0 });
      const cancelled = collect(c, { chips: ['vm-a'], fromSeq: '0' });
      cancelled.cancel();
      const ended = new Promise<void>((resolve, reject) => {
        c.watchEvents({ chips: ['vm-a'], fromSeq: '0' }, () => {}, reject, resolve);
      });
      await c.drive({ target: { $case: 'line', value: { chip: 'vm-a', line: { $case: 'offset', value: 0 } } }, value: 2 });
      await new Promise((r) => setTimeout(r, 100));
      await server.close();
      await ended;
      assert.equal(cancelled.events.length, 0);
    } finally {
      c.close();
      await server.close();
      await store.close();
    }
  });
});

describe('line-state server, unexpected errors', () => {
  it('a store failure that is not a FabricError is INTERNAL with a short message, logged, without the stack', async () => {
    const store = createMemoryStore();
    const broken = new Proxy(store, {
      get: (t, k, r) => (k === 'listNets' ? () => Promise.reject(new TypeError('secret detail of the store')) : Reflect.get(t, k, r) as unknown),
    });
    const logs: string[] = [];
    const server = await startLineStateServer({ store: broken, listen: '127.0.0.1:0', log: (m) => logs.push(m) });
    const c = createLineStateClient(server.address);
    try {
      await assert.rejects(c.listNets(), (e: unknown) => {
        assert.ok(e instanceof FabricError);
        assert.equal(e.code, ErrorCode.INTERNAL);
        assert.doesNotMatch(e.message, /secret|TypeError|at /);
        return true;
      });
      assert.equal(logs.length, 1);
      assert.match(logs[0] ?? '', /ListNets: internal error: TypeError: secret detail/);
      assert.deepEqual(await c.listChips(), [], 'the service keeps serving');
    } finally {
      c.close();
      await server.close();
      await store.close();
    }
  });
});
