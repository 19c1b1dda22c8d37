/**
 * Mutual TLS and role-based authorization of the line-state service, with certificates
 * from `gpio-fabric certs` (real openssl) and a real gRPC server on an ephemeral port:
 * handshakes, refused connections, and the allowed/denied matrix of every RPC for every
 * role (state unchanged after each refusal, every refusal counted in the metrics).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { execFile } from 'node:child_process';
import { createMemoryStore } from '../../services/linestate/src/store/memory-store.ts';
import { startLineStateServer, type LineStateServer } from '../../services/linestate/src/server.ts';
import { createLineStateClient, type LineStateClient } from '../../services/linestate/src/client.ts';
import { lineStateMetrics } from '../../services/linestate/src/metrics.ts';
import { createMetricsRegistry } from '../../services/common/src/metrics.ts';
import { FabricError } from '../../services/common/src/errors.ts';
import type { LineStore } from '../../services/linestate/src/store/store.ts';
import type { Registry } from 'prom-client';
import type { TlsFiles } from '../../services/common/src/tls.ts';
import { BIN, clientFiles, makeCerts, sample, serverFiles, tlsArgs } from './support.ts';

let dir = '';
let otherDir = '';
let store: LineStore;
let server: LineStateServer;
let registry: Registry;
const clients: LineStateClient[] = [];
const client = (tls: TlsFiles | undefined): LineStateClient => {
  const c = createLineStateClient(server.address, { deadlineMs: 5000, ...(tls !== undefined ? { tls } : {}) });
  clients.push(c);
  return c;
};
const codeOf = async (p: Promise<unknown>): Promise<string> => {
  try {
    await p;
    return 'OK';
  } catch (e) {
    if (e instanceof FabricError) return e.code;
    throw e;
  }
};

before(async () => {
  dir = await makeCerts(['--agent', 'vm-a', '--agent', 'vm-b', '--operator', 'alice', '--watcher', 'bob']);
  otherDir = await makeCerts(['--operator', 'mallory']);
  store = createMemoryStore();
  registry = createMetricsRegistry();
  const metrics = lineStateMetrics({ registry, store, storeKind: 'memory' });
  server = await startLineStateServer({ store, listen: '127.0.0.1:0', metrics, log: () => {}, tls: serverFiles(dir) });
});
after(async () => {
  for (const c of clients) c.close();
  await server.close();
  await store.close();
});

describe('mTLS handshake', () => {
  it('a client with a certificate from the CA connects; the server says it authorizes', async () => {
    assert.equal(server.authorizing, true);
    assert.deepEqual(await client(clientFiles(dir, 'operator-alice')).listChips(), []);
  });
  it('no client certificate, a certificate of another CA, a server CA mismatch and plaintext are refused (UNAVAILABLE)', async () => {
    assert.equal(await codeOf(client({ ca: `${dir}/ca.crt` }).listChips()), 'UNAVAILABLE');
    assert.equal(await codeOf(client(clientFiles(otherDir, 'operator-mallory', dir)).listChips()), 'UNAVAILABLE');
    assert.equal(await codeOf(client(clientFiles(dir, 'operator-alice', otherDir)).listChips()), 'UNAVAILABLE');
    assert.equal(await codeOf(client(undefined).listChips()), 'UNAVAILABLE');
    // nothing of theirs reached the service
    assert.equal(sample(await registry.metrics(), 'gpiofabric_linestate_rpcs_total', { method: 'ListChips', code: 'OK' }), 1);
  });
  it('the CLI explains each refusal', async () => {
    // (async: the service runs in this process)
    const cli = (args: string[]): Promise<{ code: number; stderr: string }> => new Promise((resolve) => {
      execFile(process.execPath, [BIN, 'ls', '--server', server.address, ...args], { timeout: 30_000 }, (err, _out, stderr) => {
        resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stderr });
      });
    });
    const ls = async (args: string[]): Promise<string> => {
      const r = await cli(args);
      assert.equal(r.code, 1, r.stderr);
      return r.stderr;
    };
    assert.match(await ls(['--tls-ca', `${dir}/ca.crt`]), /TLS handshake .* failed: the service (requires a client certificate|closed the connection)/);
    assert.match(await ls(tlsArgs(clientFiles(otherDir, 'operator-mallory', dir))), /TLS handshake .* failed: the service closed the connection \(is the client certificate signed by the service's CA/);
    assert.match(await ls(tlsArgs(clientFiles(dir, 'operator-alice', otherDir))), /TLS handshake .* failed: the service's certificate is not signed by the CA given with --tls-ca/);
    assert.match(await ls([]), /cannot reach the line-state service .* if it requires TLS, give --tls-ca/);
    const bad = await cli(['--tls-cert', `${dir}/operator-alice.crt`]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--tls-cert and --tls-key go together/);
  });
});

describe('authorization matrix', () => {
  type Role = 'agent-vm-a' | 'watcher-bob' | 'operator-alice';
  let tokenA = '';
  let tokenB = '';
  const as = new Map<Role, LineStateClient>();
  const snapshot = async (): Promise<string> => {
    const op = as.get('operator-alice')!;
    const [chips, lines, nets] = await Promise.all([op.listChips(), op.listLines({ chip: '' }), op.listNets()]);
    return JSON.stringify({ chips: chips.map((c) => ({ ...c, leaseExpiresAtMs: '' })), lines, nets });
  };

  before(async () => {
    for (const r of ['agent-vm-a', 'watcher-bob', 'operator-alice'] as const) as.set(r, client(clientFiles(dir, r)));
    tokenA = (await as.get('agent-vm-a')!.registerChip({ chip: 'vm-a', ngpio: 4, names: ['a0', '', '', ''], owner: 't', leaseTtlMs: 60_000 })).leaseToken;
    tokenB = (await client(clientFiles(dir, 'agent-vm-b')).registerChip({ chip: 'vm-b', ngpio: 4, names: [], owner: 't', leaseTtlMs: 60_000 })).leaseToken;
    await as.get('operator-alice')!.wire({ name: 'link', members: [{ chip: 'vm-a', line: { $case: 'offset', value: 1 } }, { chip: 'vm-b', line: { $case: 'offset', value: 1 } }], pull: 1, driveMode: 0 });
    await as.get('operator-alice')!.drive({ target: { $case: 'line', value: { chip: 'vm-b', line: { $case: 'offset', value: 0 } } }, value: 2 });
  });

  const line = (chip: string, offset = 0) => ({ chip, line: { $case: 'offset' as const, value: offset } });
  /** Each RPC against chip vm-b (not the agent's) or vm-a (its own); `write` = changes state when allowed. */
  const calls = (chip: 'vm-a' | 'vm-b') => {
    const tok = chip === 'vm-a' ? tokenA : tokenB;
    return {
      RegisterChip: (c: LineStateClient) => c.registerChip({ chip, ngpio: 4, names: [], owner: 'other', leaseTtlMs: 60_000 }),
      RenewLease: (c: LineStateClient) => c.renewLease({ chip, leaseToken: tok }),
      LineOp: (c: LineStateClient) => c.lineOp({ chip, leaseToken: tok, op: 3, offset: 2, value: 1 }),
      GetNames: (c: LineStateClient) => c.getNames({ chip }),
      GetLine: (c: LineStateClient) => c.getLine({ line: line(chip) }),
      ListLines: (c: LineStateClient) => c.listLines({ chip }),
      Drive: (c: LineStateClient) => c.drive({ target: { $case: 'line', value: line(chip, 3) }, value: 2 }),
      SetBias: (c: LineStateClient) => c.setBias({ line: line(chip, 3), bias: 1 }),
      Wire: (c: LineStateClient) => c.wire({ name: `w-${chip}`, members: [line(chip, 2), line(chip, 3)], pull: 0, driveMode: 0 }),
    };
  };
  const global = {
    ListChips: (c: LineStateClient) => c.listChips(),
    ListNets: (c: LineStateClient) => c.listNets(),
    ListAllLines: (c: LineStateClient) => c.listLines({ chip: '' }),
    Unwire: (c: LineStateClient) => c.unwire('nonexistent'),
    ApplyTopology: (c: LineStateClient) => c.applyTopology({ document: 'chips: {}\n', dryRun: true }),
  };
  const READ = new Set(['GetNames', 'GetLine', 'ListLines', 'ListChips', 'ListNets', 'ListAllLines']);
  const AGENT = new Set(['RegisterChip', 'RenewLease', 'LineOp', 'ReleaseChip']);

  it('every unary RPC class with every role: refused ones are PERMISSION_DENIED with a message naming identity and RPC, the state unchanged, each counted', async () => {
    let refused = 0;
    const before0 = await registry.metrics();
    const denied0 = sample(before0, 'gpiofabric_linestate_errors_total', { cause: 'PERMISSION_DENIED' });
    const check = async (role: Role, rpc: string, fn: (c: LineStateClient) => Promise<unknown>, allowed: boolean): Promise<void> => {
      const c = as.get(role)!;
      const s0 = await snapshot();
      let err: unknown;
      try {
        await fn(c);
      } catch (e) {
        err = e;
      }
      const denied = err instanceof FabricError && err.code === 'PERMISSION_DENIED';
      assert.equal(denied, !allowed, `${role} ${rpc}: ${err instanceof Error ? err.message : 'OK'}`);
      if (denied) {
        refused++;
        const who = role === 'agent-vm-a' ? 'agent "vm-a"' : role === 'watcher-bob' ? 'watcher "bob"' : 'operator "alice"';
        assert.ok((err as Error).message.startsWith(`${who} may not`), (err as Error).message);
        assert.equal(await snapshot(), s0, `${role} ${rpc}: state changed by a refused call`);
      }
    };
    for (const role of ['agent-vm-a', 'watcher-bob', 'operator-alice'] as const) {
      for (const chip of ['vm-b', 'vm-a'] as const) {
        for (const [rpc, fn] of Object.entries(calls(chip))) {
          const allowed = role === 'operator-alice' || (role === 'watcher-bob' && READ.has(rpc)) || (role === 'agent-vm-a' && chip === 'vm-a' && (AGENT.has(rpc) || READ.has(rpc)));
          await check(role, `${rpc}(${chip})`, fn, allowed);
        }
      }
      for (const [rpc, fn] of Object.entries(global)) {
        const allowed = role === 'operator-alice' || (role === 'watcher-bob' && READ.has(rpc));
        await check(role, rpc, fn, allowed);
      }
    }
    // ReleaseChip last: the agent may release its own chip, not the other one
    await check('agent-vm-a', 'ReleaseChip(vm-b)', (c) => c.releaseChip({ chip: 'vm-b', leaseToken: tokenB }), false);
    await check('watcher-bob', 'ReleaseChip(vm-a)', (c) => c.releaseChip({ chip: 'vm-a', leaseToken: tokenA }), false);
    const m = await registry.metrics();
    assert.ok(refused >= 30, `refused ${refused}`);
    assert.equal(sample(m, 'gpiofabric_linestate_errors_total', { cause: 'PERMISSION_DENIED' }) - denied0, refused);
    assert.equal(sample(m, 'gpiofabric_linestate_rpcs_total', { method: 'Drive', code: 'PERMISSION_DENIED' }), 4); // agent x2, watcher x2
    assert.equal(sample(m, 'gpiofabric_linestate_rpcs_total', { method: 'ReleaseChip', code: 'PERMISSION_DENIED' }), 2);
    assert.equal(await codeOf(as.get('agent-vm-a')!.releaseChip({ chip: 'vm-a', leaseToken: tokenA })), 'OK');
  });

  it('WatchEvents: an agent watches its own chip only; watchers and operators watch any or all', async () => {
    const watch = (role: Role, chips: string[], fromSeq?: string): Promise<string> => new Promise((resolve) => {
      const h = as.get(role)!.watchEvents({ chips, ...(fromSeq !== undefined ? { fromSeq } : {}) }, () => { h.cancel(); resolve('EVENT'); }, (e) => resolve(e.code), () => resolve('END'));
    });
    const denied0 = sample(await registry.metrics(), 'gpiofabric_linestate_rpcs_total', { method: 'WatchEvents', code: 'PERMISSION_DENIED' });
    // vm-b has history (the drive in before()): a resumed stream replays it at once
    assert.equal(await watch('agent-vm-a', ['vm-b'], '0'), 'PERMISSION_DENIED');
    assert.equal(await watch('agent-vm-a', []), 'PERMISSION_DENIED');
    assert.equal(await watch('agent-vm-a', ['vm-a', 'vm-b']), 'PERMISSION_DENIED');
    assert.equal(await watch('watcher-bob', ['vm-b'], '0'), 'EVENT');
    assert.equal(await watch('operator-alice', ['vm-b'], '0'), 'EVENT');
    // vm-a's own history: the agent may replay it
    await as.get('operator-alice')!.drive({ target: { $case: 'line', value: line('vm-a', 0) }, value: 2 });
    assert.equal(await watch('agent-vm-a', ['vm-a'], '0'), 'EVENT');
    // all chips, live: a watcher gets the next event
    const live = watch('watcher-bob', []);
    await new Promise((r) => setTimeout(r, 200)); // let the stream subscribe
    for (let i = 0; i < 50; i++) {
      await as.get('operator-alice')!.drive({ target: { $case: 'line', value: line('vm-b', 0) }, value: i % 2 === 0 ? 1 : 2 });
      const r = await Promise.race([live, new Promise((res) => setTimeout(() => res(undefined), 100))]);
      if (r !== undefined) break;
    }
    assert.equal(await live, 'EVENT');
    const m = await registry.metrics();
    assert.equal(sample(m, 'gpiofabric_linestate_rpcs_total', { method: 'WatchEvents', code: 'PERMISSION_DENIED' }) - denied0, 3);
  });
});
