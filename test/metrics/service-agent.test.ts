/**
 * A line-state service on real Redis and a remote device agent in one process sharing one
 * registry and one /metrics endpoint (as `gpio-fabric up` runs them). A scripted guest
 * workload (the frontend test driver) and operator calls (the line-state client) move
 * every counter by a known amount; the scraped text passes `promtool check metrics`;
 * /healthz is 200 with Redis reachable and 503 without it.
 */
import assert from 'node:assert/strict';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { startAgent, type RunningAgent } from '../../services/agent/src/agent.ts';
import { RemoteBackend } from '../../services/agent/src/backend/remote-backend.ts';
import { agentMetrics } from '../../services/agent/src/metrics.ts';
import { DriveValue, Direction, IrqType } from '../../services/common/src/line-model.ts';
import { LineOpType, type LineOpBatch, type LineOpResultBatch } from '../../services/common/src/gen/gpiofabric/v1/linestate.ts';
import { createMetricsRegistry, startMetricsServer, type MetricsServer } from '../../services/common/src/metrics.ts';
import { createLineStateClient, type LineStateClient } from '../../services/linestate/src/client.ts';
import { lineStateMetrics, storeHealth } from '../../services/linestate/src/metrics.ts';
import { startLineStateServer, type LineStateServer } from '../../services/linestate/src/server.ts';
import { createRedisStore } from '../../services/linestate/src/store/redis-store.ts';
import type { LineStore } from '../../services/linestate/src/store/store.ts';
import { driveRemote, quietLog, tempDir, uniqueId, waitFor } from '../agent/fixtures.ts';
import { Frontend, Gpio } from '../support/frontend.ts';
import { startRedis, type RedisHandle } from '../support/redis.ts';
import { httpGet, parseExposition, promtoolCheck, readCatalogue, withoutFlaggedDefaults, type Exposition } from './exposition.ts';

/** A TCP relay in front of Redis whose `down()` cuts every connection and refuses new ones. */
interface Relay {
  readonly port: number;
  down(): void;
  up(): void;
  close(): Promise<void>;
}

async function startRelay(targetPort: number): Promise<Relay> {
  let isDown = false;
  const pairs = new Set<Socket>();
  const server: Server = createServer((client) => {
    if (isDown) {
      client.destroy();
      return;
    }
    const upstream = connect(targetPort, '127.0.0.1');
    pairs.add(client).add(upstream);
    const drop = (): void => {
      client.destroy();
      upstream.destroy();
      pairs.delete(client);
      pairs.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    down: () => {
      isDown = true;
      for (const s of pairs) s.destroy();
      pairs.clear();
    },
    up: () => {
      isDown = false;
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of pairs) s.destroy();
        server.close(() => r());
      }),
  };
}

const CHIP = 'vm-m';
let redis: RedisHandle;
let relay: Relay;
let store: LineStore;
let server: LineStateServer;
let metricsServer: MetricsServer;
let client: LineStateClient;
let agent: RunningAgent;
let fe: Frontend;
const dir = tempDir();

const scrape = async (): Promise<Exposition> => {
  const r = await httpGet(metricsServer.address, '/metrics');
  assert.equal(r.status, 200);
  return parseExposition(r.body);
};

/** Poll the endpoint until `cond` holds (events and stream bookkeeping are asynchronous). */
async function scrapeUntil(cond: (e: Exposition) => boolean, what: string): Promise<Exposition> {
  const deadline = Date.now() + 8000;
  for (;;) {
    const e = await scrape();
    if (cond(e)) return e;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

before(async () => {
  redis = await startRedis();
  relay = await startRelay(redis.port);
  store = await createRedisStore({ url: `redis://127.0.0.1:${relay.port}`, fabric: uniqueId('metrics') });
  const registry = createMetricsRegistry();
  const metrics = lineStateMetrics({ registry, store, storeKind: 'redis', sampleCacheMs: 0 });
  server = await startLineStateServer({ store, listen: '127.0.0.1:0', log: () => {}, metrics });
  metricsServer = await startMetricsServer({ listen: '127.0.0.1:0', registry, health: () => storeHealth(store) });
  client = createLineStateClient(server.address);
  agent = await startAgent({ socketPath: dir.path('vm-m.sock'), chip: CHIP, ngpio: 4, backend: { kind: 'remote', server: server.address }, log: quietLog, metrics: agentMetrics(registry) });
  fe = await Frontend.connect(agent.socketPath);
  await fe.start();
});

after(async () => {
  relay?.up();
  fe?.close();
  await agent?.close();
  client?.close();
  await server?.close();
  await metricsServer?.close();
  await store?.close();
  await relay?.close();
  await redis?.stop();
  dir.rm();
});

const c = { chip: CHIP };

test('at start: every catalogue series, the frontend connected, the chip online, the agent stream open', async () => {
  const e = await scrapeUntil((x) => x.value('gpiofabric_linestate_event_streams', { kind: 'agent' }) === 1, 'the agent event stream');
  for (const row of readCatalogue()) assert.equal(e.types.get(row.name), row.type, row.name);
  assert.equal(e.value('gpiofabric_agent_frontend_connected', c), 1);
  assert.equal(e.value('gpiofabric_linestate_chips', { state: 'online' }), 1);
  assert.equal(e.value('gpiofabric_linestate_chips', { state: 'offline' }), 0);
  assert.equal(e.value('gpiofabric_linestate_rpcs_total', { method: 'RegisterChip', code: 'OK' }), 1);
  assert.equal(e.value('gpiofabric_linestate_store_duration_seconds_count', { op: 'registerChip', store: 'redis' }), 1);
});

test('10 SET_VALUE: request, backend, OpStream operation, store and echo series move by exactly 10', async () => {
  assert.equal((await fe.request(Gpio.SET_DIRECTION, 1, Direction.OUT)).status, 0);
  const b = await scrape();
  for (let i = 0; i < 10; i++) assert.equal((await fe.request(Gpio.SET_VALUE, 1, (i + 1) % 2)).status, 0);
  // every SET_VALUE changes the level: 10 events, each an echo (no interrupt armed on
  // line 1), which the agent's stream leaves out (the agent knows them from the results)
  const a = await scrapeUntil((x) => x.value('gpiofabric_linestate_echoes_omitted_total') - b.value('gpiofabric_linestate_echoes_omitted_total') >= 10, '10 echoes');
  const d = (name: string, labels: Record<string, string> = {}): number => a.value(name, labels) - b.value(name, labels);
  assert.equal(d('gpiofabric_agent_requests_total', { chip: CHIP, type: 'SET_VALUE', outcome: 'ok' }), 10);
  assert.equal(d('gpiofabric_agent_requests_total', { chip: CHIP, type: 'SET_VALUE', outcome: 'err' }), 0);
  assert.equal(d('gpiofabric_agent_request_duration_seconds_count', { chip: CHIP, type: 'SET_VALUE' }), 10);
  assert.equal(d('gpiofabric_agent_backend_duration_seconds_count', { chip: CHIP, op: 'SET_VALUE' }), 10);
  // the agent sends its operations on its OpStream: one batch per request here (each is
  // awaited before the next), counted per operation; the open stream is not in rpcs_total yet
  assert.equal(d('gpiofabric_linestate_stream_ops_total', { code: 'OK' }), 10);
  assert.equal(d('gpiofabric_linestate_store_duration_seconds_count', { op: 'lineOps', store: 'redis' }), 10);
  assert.equal(d('gpiofabric_linestate_rpcs_total', { method: 'LineOp', code: 'OK' }), 0);
  assert.equal(d('gpiofabric_linestate_rpc_duration_seconds_count', { method: 'LineOp' }), 0);
  assert.equal(d('gpiofabric_linestate_store_duration_seconds_count', { op: 'lineOp', store: 'redis' }), 0);
  assert.equal(d('gpiofabric_linestate_rpcs_total', { method: 'OpStream', code: 'OK' }), 0);
  await new Promise((r) => setTimeout(r, 100));
  const settled = await scrape();
  const e = (name: string, labels: Record<string, string> = {}): number => settled.value(name, labels) - b.value(name, labels);
  assert.equal(e('gpiofabric_linestate_echoes_omitted_total'), 10);
  assert.equal(e('gpiofabric_agent_event_lag_seconds_count', c), 0, 'no echo reached the agent');
  assert.equal(e('gpiofabric_linestate_events_sent_total'), 0);
  assert.equal(e('gpiofabric_linestate_stream_lag_seconds_count'), 0);
  assert.ok(d('gpiofabric_agent_request_duration_seconds_sum', { chip: CHIP, type: 'SET_VALUE' }) > 0);
  assert.equal(d('gpiofabric_agent_interrupts_total', { chip: CHIP, outcome: 'delivered' }), 0, 'no irq enabled on line 1');
});

test('interrupts: a driven edge is delivered (+1, one propagation sample); an edge while masked latches and is delivered on unmask', async () => {
  assert.equal((await fe.request(Gpio.SET_DIRECTION, 2, Direction.IN)).status, 0);
  assert.equal((await fe.request(Gpio.SET_IRQ_TYPE, 2, IrqType.EDGE_RISING)).status, 0);
  const b = await scrape();
  const irq = fe.armIrq(2);
  await driveRemote(client, CHIP, 2, DriveValue.HIGH);
  assert.equal((await irq).status, 1, 'VALID');
  const a = await scrape();
  const d = (x: Exposition, name: string, labels: Record<string, string>): number => x.value(name, labels) - b.value(name, labels);
  assert.equal(d(a, 'gpiofabric_agent_interrupts_total', { chip: CHIP, outcome: 'delivered' }), 1);
  assert.equal(d(a, 'gpiofabric_agent_irq_propagation_seconds_count', c), 1);
  assert.equal(d(a, 'gpiofabric_agent_interrupts_total', { chip: CHIP, outcome: 'latched' }), 0);

  // masked (no buffer queued): falling (not wanted), rising (latched)
  await driveRemote(client, CHIP, 2, DriveValue.LOW);
  await waitFor(() => agent.backend.levels()[2] === 0, 'level 0');
  await driveRemote(client, CHIP, 2, DriveValue.HIGH);
  await waitFor(() => agent.backend.levels()[2] === 1, 'level 1');
  const l = await scrapeUntil((x) => d(x, 'gpiofabric_agent_interrupts_total', { chip: CHIP, outcome: 'latched' }) === 1, 'latched');
  assert.equal(d(l, 'gpiofabric_agent_interrupts_total', { chip: CHIP, outcome: 'delivered' }), 1);
  assert.equal((await fe.armIrq(2)).status, 1, 'the latched edge is delivered on unmask');
  const u = await scrape();
  assert.equal(d(u, 'gpiofabric_agent_interrupts_total', { chip: CHIP, outcome: 'delivered' }), 2);
  assert.equal(d(u, 'gpiofabric_agent_irq_propagation_seconds_count', c), 2);

  // NONE with a buffer queued returns it INVALID
  const pending = fe.armIrq(2);
  assert.equal((await fe.request(Gpio.SET_IRQ_TYPE, 2, IrqType.NONE)).status, 0);
  assert.equal((await pending).status, 0, 'INVALID');
  const n = await scrape();
  assert.equal(d(n, 'gpiofabric_agent_interrupts_total', { chip: CHIP, outcome: 'invalid' }), 1);
  assert.equal(d(n, 'gpiofabric_agent_irq_propagation_seconds_count', c), 2);
});

test('bad guest requests count as err (UNKNOWN for an unknown type); a failed RPC counts by code and in errors_total', async () => {
  const b = await scrape();
  assert.equal((await fe.request(Gpio.GET_VALUE, 99)).status, 1);
  assert.equal((await fe.request(77, 0)).status, 1);
  await assert.rejects(client.getLine({ line: { chip: 'no-such-chip', line: { $case: 'offset', value: 0 } } }), (e: { code?: string }) => e.code === 'NOT_FOUND');
  const a = await scrape();
  const d = (name: string, labels: Record<string, string>): number => a.value(name, labels) - b.value(name, labels);
  assert.equal(d('gpiofabric_agent_requests_total', { chip: CHIP, type: 'GET_VALUE', outcome: 'err' }), 1);
  assert.equal(d('gpiofabric_agent_requests_total', { chip: CHIP, type: 'UNKNOWN', outcome: 'err' }), 1);
  assert.equal(d('gpiofabric_agent_backend_duration_seconds_count', { chip: CHIP, op: 'GET_VALUE' }), 0, 'the backend is not asked');
  assert.equal(d('gpiofabric_agent_errors_total', { chip: CHIP, cause: 'backend' }), 0, 'bad input is not a backend error');
  assert.equal(d('gpiofabric_linestate_rpcs_total', { method: 'GetLine', code: 'NOT_FOUND' }), 1);
  assert.equal(d('gpiofabric_linestate_errors_total', { cause: 'NOT_FOUND' }), 1);
});

/** One raw OpStream of the test's client: batches written, result batches collected, how it ended. */
function rawOpStream(): { write: (b: LineOpBatch) => void; results: LineOpResultBatch[]; ended: Promise<'end' | string>; end: () => void; cancel: () => void } {
  const results: LineOpResultBatch[] = [];
  let settle: (how: 'end' | string) => void = () => {};
  const ended = new Promise<'end' | string>((r) => { settle = r; });
  const h = client.opStream((b) => results.push(b), (e) => settle(`error ${e.code}: ${e.message}`), () => settle('end'));
  return { write: (b) => h.write(b), results, ended, end: () => h.end(), cancel: () => h.cancel() };
}

test('OpStream: each operation counts by its code (failures in errors_total too); the stream counts once, OK, when the service ends it', async () => {
  const token = agent.backend instanceof RemoteBackend ? agent.backend.leaseToken : undefined;
  assert.ok(token !== undefined, 'the agent holds the lease');
  const b = await scrape();
  const s = rawOpStream();
  // 2 operations under a stale token: the batch is refused as a whole (one store call)
  s.write({ chip: CHIP, leaseToken: String(token + 1000n), ops: [{ id: 1, op: LineOpType.LINE_OP_TYPE_GET_VALUE, offset: 0, value: 0 }, { id: 2, op: LineOpType.LINE_OP_TYPE_GET_DIRECTION, offset: 0, value: 0 }] });
  // under the agent's token: one good read and one invalid value (refused before the store call) ...
  s.write({
    chip: CHIP, leaseToken: String(token), ops: [
      { id: 3, op: LineOpType.LINE_OP_TYPE_GET_VALUE, offset: 1, value: 0 },
      { id: 4, op: LineOpType.LINE_OP_TYPE_SET_VALUE, offset: 1, value: 7 },
    ],
  });
  // ... and an offset out of range (refused by the store)
  s.write({ chip: CHIP, leaseToken: String(token), ops: [{ id: 5, op: LineOpType.LINE_OP_TYPE_GET_VALUE, offset: 99, value: 0 }] });
  await waitFor(() => s.results.length === 3, 'the three result batches');
  const codes = new Map(s.results.flatMap((r) => r.results).map((r) => [r.id, r.code]));
  assert.deepEqual([...codes.entries()].sort((x, y) => x[0] - y[0]), [
    [1, GrpcStatus.FAILED_PRECONDITION], [2, GrpcStatus.FAILED_PRECONDITION], [3, GrpcStatus.OK], [4, GrpcStatus.INVALID_ARGUMENT], [5, GrpcStatus.INVALID_ARGUMENT],
  ]);
  const mid = await scrape();
  const d = (x: Exposition, name: string, labels: Record<string, string> = {}): number => x.value(name, labels) - b.value(name, labels);
  assert.equal(d(mid, 'gpiofabric_linestate_stream_ops_total', { code: 'OK' }), 1);
  assert.equal(d(mid, 'gpiofabric_linestate_stream_ops_total', { code: 'FAILED_PRECONDITION' }), 2);
  assert.equal(d(mid, 'gpiofabric_linestate_stream_ops_total', { code: 'INVALID_ARGUMENT' }), 2);
  assert.equal(d(mid, 'gpiofabric_linestate_errors_total', { cause: 'FAILED_PRECONDITION' }), 2);
  assert.equal(d(mid, 'gpiofabric_linestate_errors_total', { cause: 'INVALID_ARGUMENT' }), 2);
  assert.equal(d(mid, 'gpiofabric_linestate_store_duration_seconds_count', { op: 'lineOps', store: 'redis' }), 3, 'one store call per batch');
  assert.equal(d(mid, 'gpiofabric_linestate_rpcs_total', { method: 'OpStream', code: 'OK' }), 0, 'an open stream is not counted');
  assert.equal(d(mid, 'gpiofabric_linestate_rpcs_total', { method: 'LineOp', code: 'OK' }), 0);

  // the client half-closes: the service answers what it has and ends the stream, OK
  s.end();
  assert.equal(await s.ended, 'end');
  const e = await scrapeUntil((x) => d(x, 'gpiofabric_linestate_rpcs_total', { method: 'OpStream', code: 'OK' }) === 1, 'the ended stream counted');
  assert.equal(d(e, 'gpiofabric_linestate_rpcs_total', { method: 'OpStream', code: 'CANCELLED' }), 0);
  assert.equal(d(e, 'gpiofabric_linestate_errors_total', { cause: 'CANCELLED' }), 0);
  assert.equal(e.has('gpiofabric_linestate_rpc_duration_seconds_count', { method: 'OpStream' }), false, 'no duration series for OpStream');
});

// grpc-js emits 'end' on a cancelled call first (call.cancelled still false); the service
// counts at 'close' so this is CANCELLED, not OK.
test('OpStream: a stream whose client goes away counts once as CANCELLED (and in errors_total)', async () => {
  const token = agent.backend instanceof RemoteBackend ? agent.backend.leaseToken : undefined;
  assert.ok(token !== undefined, 'the agent holds the lease');
  const b = await scrape();
  const d = (x: Exposition, name: string, labels: Record<string, string> = {}): number => x.value(name, labels) - b.value(name, labels);
  const s = rawOpStream();
  s.write({ chip: CHIP, leaseToken: String(token), ops: [{ id: 1, op: LineOpType.LINE_OP_TYPE_GET_VALUE, offset: 1, value: 0 }] });
  await waitFor(() => s.results.length === 1, 'the result batch');
  s.cancel();
  const g = await scrapeUntil((x) => d(x, 'gpiofabric_linestate_rpcs_total', { method: 'OpStream', code: 'CANCELLED' }) + d(x, 'gpiofabric_linestate_rpcs_total', { method: 'OpStream', code: 'OK' }) === 1, 'the cancelled stream counted');
  assert.equal(d(g, 'gpiofabric_linestate_rpcs_total', { method: 'OpStream', code: 'CANCELLED' }), 1);
  assert.equal(d(g, 'gpiofabric_linestate_rpcs_total', { method: 'OpStream', code: 'OK' }), 0);
  assert.equal(d(g, 'gpiofabric_linestate_errors_total', { cause: 'CANCELLED' }), 1);
  assert.equal(d(g, 'gpiofabric_linestate_stream_ops_total', { code: 'OK' }), 1);
});

test('a RegisterChip takeover, chips and nets gauges, contention, a watcher stream', async () => {
  const b = await scrape();
  await client.registerChip({ chip: 'vm-t', ngpio: 2, names: [], owner: 'first', leaseTtlMs: 500 });
  await new Promise((r) => setTimeout(r, 700));
  const mid = await scrape();
  assert.equal(mid.value('gpiofabric_linestate_chips', { state: 'offline' }), 1, 'the expired lease is offline');
  const r = await client.registerChip({ chip: 'vm-t', ngpio: 2, names: [], owner: 'second', leaseTtlMs: 5000 });
  assert.equal(r.tookOver, true);
  await client.wire({ name: 'm-net', members: [{ chip: CHIP, line: { $case: 'offset', value: 3 } }, { chip: 'vm-t', line: { $case: 'offset', value: 0 } }], pull: 0, driveMode: 0 });
  // contention: the guest drives 1, the operator drives the other end 0
  assert.equal((await fe.request(Gpio.SET_DIRECTION, 3, Direction.OUT)).status, 0);
  assert.equal((await fe.request(Gpio.SET_VALUE, 3, 1)).status, 0);
  await driveRemote(client, 'vm-t', 0, DriveValue.LOW);
  const events: unknown[] = [];
  const w = client.watchEvents({ chips: [] }, (e) => events.push(e), () => {});
  try {
    const a = await scrapeUntil((x) => x.value('gpiofabric_linestate_event_streams', { kind: 'watcher' }) === 1, 'the watcher stream');
    assert.equal(a.value('gpiofabric_linestate_lease_takeovers_total') - b.value('gpiofabric_linestate_lease_takeovers_total'), 1);
    assert.equal(a.value('gpiofabric_linestate_chips', { state: 'online' }), 2);
    assert.equal(a.value('gpiofabric_linestate_chips', { state: 'offline' }), 0);
    assert.equal(a.value('gpiofabric_linestate_nets'), 1);
    assert.equal(a.value('gpiofabric_linestate_contention_total'), 1);
    assert.equal(a.value('gpiofabric_linestate_event_streams', { kind: 'agent' }), 1);
  } finally {
    w.cancel();
  }
  const e = await scrapeUntil((x) => x.value('gpiofabric_linestate_event_streams', { kind: 'watcher' }) === 0, 'the watcher stream to close');
  assert.equal(e.value('gpiofabric_linestate_rpcs_total', { method: 'WatchEvents', code: 'CANCELLED' }) - b.value('gpiofabric_linestate_rpcs_total', { method: 'WatchEvents', code: 'CANCELLED' }), 1);
});

test('promtool check metrics: no problems in the scraped gpiofabric_ series', async () => {
  const r = await httpGet(metricsServer.address, '/metrics');
  const lint = promtoolCheck(withoutFlaggedDefaults(r.body));
  assert.equal(lint.error, undefined, `promtool could not run (Debian package prometheus): ${String(lint.error)}`);
  assert.equal(lint.output, '', 'promtool check metrics');
  assert.equal(lint.status, 0);
});

test('a framing error counts as a protocol error; disconnects clear frontend_connected', async () => {
  const b = await scrape();
  fe.close();
  await scrapeUntil((x) => x.value('gpiofabric_agent_frontend_connected', c) === 0, 'the disconnect');
  fe = await Frontend.connect(agent.socketPath);
  await scrapeUntil((x) => x.value('gpiofabric_agent_frontend_connected', c) === 1, 'the connect');
  const bad = new Uint8Array(12);
  new DataView(bad.buffer).setUint32(8, 0xffff_fff0, true); // payload size far beyond any message
  fe.sendRaw(bad);
  const a = await scrapeUntil((x) => x.value('gpiofabric_agent_frontend_connected', c) === 0, 'the agent to drop the connection');
  assert.equal(a.value('gpiofabric_agent_errors_total', { chip: CHIP, cause: 'protocol' }) - b.value('gpiofabric_agent_errors_total', { chip: CHIP, cause: 'protocol' }), 1);
});

test('/healthz: 200 with Redis reachable, 503 without it (and /metrics still answers)', async () => {
  assert.deepEqual(await httpGet(metricsServer.address, '/healthz').then((r) => [r.status, r.body]), [200, 'ok\n']);
  relay.down();
  try {
    const h = await httpGet(metricsServer.address, '/healthz');
    assert.equal(h.status, 503);
    assert.match(h.body, /^unhealthy: store: /);
    const m = await scrape();
    assert.equal(m.value('gpiofabric_linestate_nets'), 1, 'sampled gauges keep their last values');
  } finally {
    relay.up();
  }
  const deadline = Date.now() + 8000;
  while ((await httpGet(metricsServer.address, '/healthz')).status !== 200) {
    assert.ok(Date.now() < deadline, 'healthy again after Redis is back');
    await new Promise((r) => setTimeout(r, 50));
  }
});
