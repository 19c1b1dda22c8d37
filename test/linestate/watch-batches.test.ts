/**
 * WatchEventBatches over real gRPC (ephemeral ports) on the memory store and on the Redis
 * store (a real redis-server): the same stream as WatchEvents, with the events that were
 * ready in one turn of the service's event loop in one LineEventBatch (at most
 * MAX_EVENT_BATCH each). Compared event by event with WatchEvents watching the same chip:
 * one store operation that changes several lines (a driven net, an OpStream batch) is one
 * message; a resumed backlog is delivered exactly once in capped messages; errors and the
 * offset filter are those of WatchEvents. Then the device agent's RemoteBackend, through
 * a gRPC proxy: it uses WatchEventBatches, and falls back to WatchEvents when the service
 * answers UNIMPLEMENTED.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  Client, Server, ServerCredentials, credentials, status as GrpcStatus,
  type MethodDefinition, type ServerDuplexStream, type ServerUnaryCall, type ServerWritableStream, type ServiceError, type StatusObject,
  type sendUnaryData, type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { Edge, LineOpType, LineStateServiceService, type LineEvent } from '../../services/common/src/gen/gpiofabric/v1/linestate.ts';
import type { FabricError } from '../../services/common/src/errors.ts';
import { createLineStateClient, type LineStateClient, type WatchRequest } from '../../services/linestate/src/client.ts';
import { MAX_EVENT_BATCH, WATCH_BACKLOG_PAGE } from '../../services/linestate/src/server.ts';
import { LineOp } from '../../services/linestate/src/store/store.ts';
import { createMemoryStore } from '../../services/linestate/src/store/memory-store.ts';
import { RemoteBackend } from '../../services/agent/src/backend/remote-backend.ts';
import type { LineEvent as BackendEvent } from '../../services/agent/src/backend/line-backend.ts';
import { collect, fabricOf, startFabric, startRedis, type Collector, type Fabric, type StoreKind } from './harness.ts';
import type { RedisHandle } from '../support/redis.ts';

const off = (chip: string, offset: number) => ({ chip, line: { $case: 'offset' as const, value: offset } });
const HIGH = 2;
const LOW = 1;
const RELEASE = 0;
const PULL_DOWN = 2;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Resolves when `cond` holds (checked every 10 ms), rejects with `what` after timeoutMs. */
async function until(cond: () => boolean, what: () => string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out: ${what()}`);
    await sleep(10);
  }
}

/** A collecting WatchEventBatches stream: each message as one array. */
interface BatchCollector {
  readonly batches: LineEvent[][];
  /** Every event so far, in arrival order. */
  events(): LineEvent[];
  waitFor(n: number, timeoutMs?: number): Promise<LineEvent[]>;
  /** The stream's failure and its `unimplemented` flag. */
  readonly error: Promise<{ e: FabricError; unimplemented: boolean }>;
  cancel(): void;
}

function collectBatches(c: LineStateClient, req: WatchRequest): BatchCollector {
  const batches: LineEvent[][] = [];
  let failure: FabricError | undefined;
  let settle: (v: { e: FabricError; unimplemented: boolean }) => void = () => {};
  const error = new Promise<{ e: FabricError; unimplemented: boolean }>((resolve) => { settle = resolve; });
  const h = c.watchEventBatches(req, (es) => { batches.push(es); }, (e, unimplemented) => { failure = e; settle({ e, unimplemented }); });
  const events = (): LineEvent[] => batches.flat();
  return {
    batches,
    events,
    error,
    cancel: () => h.cancel(),
    waitFor: async (n, timeoutMs = 10_000) => {
      await until(() => events().length >= n || failure !== undefined, () => `only ${events().length} of ${n} events arrived`, timeoutMs);
      if (events().length < n && failure !== undefined) throw failure;
      return events();
    },
  };
}

const seqs = (es: readonly LineEvent[]): bigint[] => es.map((e) => BigInt(e.seq));
const range = (first: bigint, n: number): bigint[] => Array.from({ length: n }, (_, i) => first + BigInt(i));

for (const kind of ['memory', 'redis'] as const satisfies readonly StoreKind[]) {
  describe(`WatchEventBatches on the ${kind} store`, () => {
    let redis: RedisHandle | undefined;
    let f: Fabric;
    let tokA = '';
    let tokB = '';
    const lastSeq = async (chip: string): Promise<bigint> => BigInt((await f.client.listChips()).find((c) => c.id === chip)!.lastSeq);
    /** Wait until both streams have delivered `seq`: everything up to it is out, nothing is in flight. */
    const caughtUp = (plain: Collector, batched: BatchCollector, seq: bigint): Promise<void> =>
      until(() => plain.events.some((e) => BigInt(e.seq) === seq) && batched.events().some((e) => BigInt(e.seq) === seq), () => `seq ${seq} on both streams`);

    before(async () => {
      if (kind === 'redis') redis = await startRedis();
      f = await fabricOf(kind, redis);
      tokA = (await f.client.registerChip({ chip: 'vm-a', ngpio: 8, names: [], owner: 'agent-a', leaseTtlMs: 60_000 })).leaseToken;
      tokB = (await f.client.registerChip({ chip: 'vm-b', ngpio: 4, names: [], owner: 'agent-b', leaseTtlMs: 60_000 })).leaseToken;
      // vm-a:0..2 on one net: driving it changes three lines of vm-a in one store operation
      await f.client.wire({ name: 'n3', members: [off('vm-a', 0), off('vm-a', 1), off('vm-a', 2)], pull: PULL_DOWN, driveMode: 0 });
    });
    after(async () => {
      await f?.stop();
      await redis?.stop();
    });

    it('live (watcher) streams: a net drive changing 3 lines is ONE batch; WatchEvents has the same events as 3 messages', async () => {
      const plain = collect(f.client, { chips: ['vm-a'] });
      const batched = collectBatches(f.client, { chips: ['vm-a'] });
      try {
        // poke vm-a:7 until both live-only streams have seen an event (both are subscribed)
        let v = 0;
        for (let i = 0; i < 200 && (plain.events.length === 0 || batched.events().length === 0); i++) {
          await f.client.drive({ target: { $case: 'line', value: off('vm-a', 7) }, value: v++ % 2 === 0 ? HIGH : LOW });
          await sleep(25);
        }
        assert.ok(plain.events.length > 0 && batched.events().length > 0, 'both streams went live');
        await f.client.drive({ target: { $case: 'line', value: off('vm-a', 7) }, value: v++ % 2 === 0 ? HIGH : LOW });
        const base = await lastSeq('vm-a');
        await caughtUp(plain, batched, base);
        const p0 = plain.events.length;
        const b0 = batched.batches.length;

        for (const [value, level, edge] of [[HIGH, 1, Edge.EDGE_RISING], [RELEASE, 0, Edge.EDGE_FALLING]] as const) {
          const first = (await lastSeq('vm-a')) + 1n;
          const pStart = plain.events.length;
          const bStart = batched.batches.length;
          const eStart = batched.events().length;
          assert.equal((await f.client.drive({ target: { $case: 'net', value: 'n3' }, value })).level, level);
          const got = (await batched.waitFor(eStart + 3)).slice(eStart);
          await plain.waitFor(pStart + 3);
          const msgs = batched.batches.slice(bStart);
          assert.equal(msgs.length, 1, `one message for one drive, got sizes ${JSON.stringify(msgs.map((m) => m.length))}`);
          assert.equal(msgs[0]!.length, 3);
          assert.deepEqual(seqs(msgs[0]!), range(first, 3), 'seq order, consecutive');
          assert.deepEqual(msgs[0]!.map((e) => e.offset).sort(), [0, 1, 2]);
          for (const e of msgs[0]!) {
            assert.equal(e.chip, 'vm-a');
            assert.equal(e.level, level);
            assert.equal(e.edge, edge);
          }
          // WatchEvents: the same events (seq, offset, level, edge, timestamp), same order, one per message
          assert.deepEqual(plain.events.slice(pStart, pStart + 3), got);
        }
        // over the whole run: both streams delivered exactly the same events in the same order
        assert.deepEqual(plain.events.slice(p0), batched.batches.slice(b0).flat());
      } finally {
        plain.cancel();
        batched.cancel();
      }
    });

    it('resumed (agent) streams: an OpStream batch of 4 SET_VALUEs is ONE batch, in seq order; WatchEvents has the same', async () => {
      // outputs low on vm-a:3..6 first (no level change: they read low already)
      const prep = await f.store.lineOps('vm-a', BigInt(tokA), [3, 4, 5, 6].flatMap((o) => [
        { op: LineOp.SET_DIRECTION, offset: o, value: 1 }, { op: LineOp.SET_VALUE, offset: o, value: 0 },
      ]));
      assert.ok(prep.every((r) => r.ok), prep.map((r) => (r.ok ? 'ok' : r.error.message)).join(', '));
      // resume one before the newest event: once both streams delivered it, both are live
      const newest = await lastSeq('vm-a');
      const plain = collect(f.client, { chips: ['vm-a'], fromSeq: String(newest - 1n) });
      const batched = collectBatches(f.client, { chips: ['vm-a'], fromSeq: String(newest - 1n) });
      const results: { id: number; code: number }[] = [];
      let opFailure: FabricError | undefined;
      const ops = f.client.opStream((b) => results.push(...b.results), (e) => { opFailure = e; }, () => {});
      try {
        await caughtUp(plain, batched, newest);
        assert.deepEqual(seqs(batched.events()), [newest], 'the resumed stream starts after from_seq');
        const bStart = batched.batches.length;
        ops.write({
          chip: 'vm-a', leaseToken: tokA,
          ops: [6, 3, 5, 4].map((offset, i) => ({ id: i + 1, op: LineOpType.LINE_OP_TYPE_SET_VALUE, offset, value: 1 })),
        });
        await until(() => results.length === 4 || opFailure !== undefined, () => `${results.length} of 4 op results`);
        assert.equal(opFailure, undefined);
        assert.deepEqual(results.map((r) => [r.id, r.code]), [[1, 0], [2, 0], [3, 0], [4, 0]]);
        await batched.waitFor(1 + 4);
        await plain.waitFor(1 + 4);
        const msgs = batched.batches.slice(bStart);
        assert.equal(msgs.length, 1, `one message for one OpStream batch, got sizes ${JSON.stringify(msgs.map((m) => m.length))}`);
        assert.deepEqual(seqs(msgs[0]!), range(newest + 1n, 4));
        assert.deepEqual(msgs[0]!.map((e) => [e.offset, e.level, e.edge]), [6, 3, 5, 4].map((o) => [o, 1, Edge.EDGE_RISING]), 'in the order of the ops');
        assert.deepEqual(plain.events, batched.events());
      } finally {
        ops.cancel();
        plain.cancel();
        batched.cancel();
      }
    });

    it('omit_echoes: an agent\'s own echoes are left out and counted in echoes_before; other streams get every event', async () => {
      const tok = (await f.client.registerChip({ chip: 'vm-e', ngpio: 4, names: [], owner: 'agent-e', leaseTtlMs: 60_000 })).leaseToken;
      // line 0: output, no interrupt; line 1: output with EDGE_BOTH armed; line 2: input the operator drives
      const prep = await f.store.lineOps('vm-e', BigInt(tok), [
        { op: LineOp.SET_DIRECTION, offset: 0, value: 1 }, { op: LineOp.SET_DIRECTION, offset: 1, value: 1 }, { op: LineOp.SET_IRQ_TYPE, offset: 1, value: 3 },
        { op: LineOp.SET_DIRECTION, offset: 2, value: 2 },
      ]);
      assert.ok(prep.every((r) => r.ok), prep.map((r) => (r.ok ? 'ok' : r.error.message)).join(', '));
      const n = await lastSeq('vm-e');
      const omitting = collectBatches(f.client, { chips: ['vm-e'], fromSeq: String(n), omitEchoes: true });
      const omittingPlain = collect(f.client, { chips: ['vm-e'], fromSeq: String(n), omitEchoes: true });
      const every = collectBatches(f.client, { chips: ['vm-e'], fromSeq: String(n) });
      const results: { id: number; code: number; level: number; seq: bigint }[] = [];
      const ops = f.client.opStream((b) => results.push(...b.results.map((r) => ({ ...r, seq: BigInt(b.seq) }))), () => {}, () => {});
      const set = (id: number, offset: number, value: number) => ({ id, op: LineOpType.LINE_OP_TYPE_SET_VALUE, offset, value });
      const brief = (es: readonly LineEvent[]): [bigint, number, number][] => es.map((e) => [BigInt(e.seq), e.offset, e.echoesBefore]);
      let resumed: BatchCollector | undefined;
      try {
        ops.write({ chip: 'vm-e', leaseToken: tok, ops: [set(1, 0, 1), set(2, 0, 0), set(3, 1, 1)] }); // n+1, n+2 echoes; n+3 has an irq armed
        await until(() => results.length === 3, () => `${results.length} of 3 op results`);
        assert.deepEqual(results.map((r) => [r.id, r.code, r.seq, r.level]), [[1, 0, n + 3n, 0], [2, 0, n + 3n, 0], [3, 0, n + 3n, 1]],
          "each result: its line's level as of the chip's seq at the end of the batch");
        await f.client.drive({ target: { $case: 'line', value: off('vm-e', 2) }, value: HIGH }); // n+4: the operator's
        ops.write({ chip: 'vm-e', leaseToken: tok, ops: [set(4, 0, 1)] }); // n+5: an echo with nothing after it yet
        await until(() => results.length === 4, () => 'the 4th op result');
        await every.waitFor(5);
        assert.deepEqual(brief(every.events()), [[n + 1n, 0, 0], [n + 2n, 0, 0], [n + 3n, 1, 0], [n + 4n, 2, 0], [n + 5n, 0, 0]], 'without omit_echoes: every event');
        const want: [bigint, number, number][] = [[n + 3n, 1, 2], [n + 4n, 2, 0]];
        assert.deepEqual(brief(await omitting.waitFor(2)), want);
        assert.deepEqual(brief(await omittingPlain.waitFor(2)), want, 'WatchEvents omits the same');
        // a stream resumed from before them reads them from the store and leaves out the same
        resumed = collectBatches(f.client, { chips: ['vm-e'], fromSeq: String(n), omitEchoes: true });
        assert.deepEqual(brief(await resumed.waitFor(2)), want);
        // the next event counts the trailing echo (n+5)
        await f.client.drive({ target: { $case: 'line', value: off('vm-e', 2) }, value: LOW }); // n+6
        for (const c of [omitting, resumed]) assert.deepEqual(brief(await c.waitFor(3)).at(-1), [n + 6n, 2, 1]);
        assert.deepEqual(brief(await omittingPlain.waitFor(3)).at(-1), [n + 6n, 2, 1]);
        await sleep(50);
        assert.equal(omitting.events().length, 3, 'no echo arrived late');
      } finally {
        ops.cancel();
        omitting.cancel();
        omittingPlain.cancel();
        every.cancel();
        resumed?.cancel();
      }
    });

    it(`resume with a backlog of 2500 events: each exactly once, in order, in messages of at most ${MAX_EVENT_BATCH}, then live events`, async () => {
      const token = BigInt(tokB);
      const out = await f.store.lineOps('vm-b', token, [{ op: LineOp.SET_DIRECTION, offset: 0, value: 1 }, { op: LineOp.SET_VALUE, offset: 0, value: 0 }]);
      assert.ok(out.every((r) => r.ok));
      const start = await lastSeq('vm-b');
      const n = 2500;
      // toggles of vm-b:0, each one event, written in store batches of 1000 operations
      for (let done = 0; done < n; done += 1000) {
        const k = Math.min(1000, n - done);
        const r = await f.store.lineOps('vm-b', token, Array.from({ length: k }, (_, i) => ({ op: LineOp.SET_VALUE, offset: 0, value: (done + i) % 2 === 0 ? 1 : 0 })));
        assert.ok(r.every((x) => x.ok));
      }
      assert.equal(await lastSeq('vm-b'), start + BigInt(n));

      const batched = collectBatches(f.client, { chips: ['vm-b'], fromSeq: String(start) });
      const plain = collect(f.client, { chips: ['vm-b'], fromSeq: String(start) });
      try {
        await batched.waitFor(n);
        const backlog = batched.batches.length;
        assert.deepEqual(seqs(batched.events()), range(start + 1n, n), 'the backlog: every event once, in order');
        const sizes = batched.batches.map((b) => b.length);
        const shown = `${sizes.length} messages, sizes ${JSON.stringify(sizes.slice(0, 12))}${sizes.length > 12 ? '...' : ''}`;
        assert.ok(sizes.every((s) => s >= 1 && s <= MAX_EVENT_BATCH), shown);
        assert.ok(backlog >= Math.ceil(n / MAX_EVENT_BATCH), shown);
        // batched for real: a page read of the backlog goes out in as few messages as the cap allows
        assert.ok(backlog <= Math.ceil(n / Math.min(WATCH_BACKLOG_PAGE, MAX_EVENT_BATCH)) + 1, shown);
        if (WATCH_BACKLOG_PAGE >= MAX_EVENT_BATCH) assert.ok(sizes.includes(MAX_EVENT_BATCH), `a full message of ${MAX_EVENT_BATCH}: ${shown}`);

        // live: the next change follows the backlog
        const r = await f.store.lineOps('vm-b', token, [{ op: LineOp.SET_VALUE, offset: 0, value: 1 }, { op: LineOp.SET_VALUE, offset: 0, value: 0 }]);
        assert.ok(r.every((x) => x.ok));
        const all = await batched.waitFor(n + 2);
        assert.deepEqual(seqs(all), range(start + 1n, n + 2), 'backlog then live, no duplicates, no gap');
        assert.deepEqual(all.slice(n).map((e) => e.level), [1, 0]);
        assert.deepEqual(batched.batches.slice(backlog).map((b) => b.length), [2], 'the two live events of one store call: one message');
        // WatchEvents from the same cursor: the same events
        await plain.waitFor(n + 2);
        assert.deepEqual(plain.events, all);
      } finally {
        batched.cancel();
        plain.cancel();
      }
    });

    it('errors are those of WatchEvents (code and message), never "unimplemented"', async () => {
      const newest = await lastSeq('vm-a');
      const cases: [string, WatchRequest, string, RegExp][] = [
        ['from_seq beyond the newest event', { chips: ['vm-a'], fromSeq: String(newest + 1n) }, 'OUT_OF_RANGE', new RegExp(`from_seq ${newest + 1n} is beyond`)],
        ['unknown chip', { chips: ['vm-nope'] }, 'NOT_FOUND', /vm-nope/],
        ['resume of an unknown chip', { chips: ['vm-nope'], fromSeq: '0' }, 'NOT_FOUND', /vm-nope/],
        ['known chips and one unknown', { chips: ['vm-a', 'vm-b', 'vm-gone'] }, 'NOT_FOUND', /vm-gone/],
        ['resume without exactly one chip', { chips: ['vm-a', 'vm-b'], fromSeq: '0' }, 'INVALID_ARGUMENT', /exactly one chip/],
        ['offset beyond ngpio', { chips: ['vm-b'], offset: 4 }, 'INVALID_ARGUMENT', /offset 4/],
      ];
      for (const [what, req, code, msg] of cases) {
        const b = collectBatches(f.client, req);
        const p = collect(f.client, req);
        const [be, pe] = await Promise.all([b.error, p.error]);
        assert.equal(be.e.code, code, what);
        assert.match(be.e.message, msg, what);
        assert.equal(be.unimplemented, false, what);
        assert.equal(be.e.message, pe.message, `${what}: same message as WatchEvents`);
        assert.equal(pe.code, code, what);
        assert.equal(b.events().length, 0, what);
      }
    });

    it('offset filter: only the line asked for, as WatchEvents', async () => {
      const from = await lastSeq('vm-a');
      // vm-a:7 flipped and back (each one event), the net n3 (released, low) up, down, up
      const up7 = (await f.client.getLine({ line: off('vm-a', 7) })).level === 0;
      const drives: [string | number, 0 | 1 | 2][] = [['n3', HIGH], [7, up7 ? HIGH : LOW], ['n3', RELEASE], [7, up7 ? LOW : HIGH], ['n3', HIGH]];
      for (const [target, value] of drives) {
        await f.client.drive({ target: typeof target === 'string' ? { $case: 'net', value: target } : { $case: 'line', value: off('vm-a', target) }, value });
      }
      const total = Number((await lastSeq('vm-a')) - from);
      assert.equal(total, 3 + 1 + 3 + 1 + 3);
      const all = collectBatches(f.client, { chips: ['vm-a'], fromSeq: String(from) });
      const one = collectBatches(f.client, { chips: ['vm-a'], fromSeq: String(from), offset: 1 });
      const plainOne = collect(f.client, { chips: ['vm-a'], fromSeq: String(from), offset: 1 });
      try {
        const every = await all.waitFor(total);
        const want = every.filter((e) => e.offset === 1);
        assert.equal(want.length, 3);
        await one.waitFor(3);
        await plainOne.waitFor(3);
        // a later change of vm-a:1 (live) marks the end: nothing else came before it
        await f.client.drive({ target: { $case: 'net', value: 'n3' }, value: RELEASE });
        const got = await one.waitFor(4);
        await plainOne.waitFor(4);
        assert.deepEqual(got.slice(0, 3), want);
        assert.ok(got.every((e) => e.offset === 1 && e.chip === 'vm-a'), JSON.stringify(got));
        assert.equal(got[3]!.level, 0);
        assert.deepEqual(plainOne.events, got, 'WatchEvents with the same filter: the same events');
        assert.deepEqual(one.batches.slice(-1).map((b) => b.length), [1], 'the live net drive: its one offset-1 event alone');
      } finally {
        all.cancel();
        one.cancel();
        plainOne.cancel();
      }
    });
  });
}

// ------------------------------------------------------------------ RemoteBackend through a proxy

const identity = (b: Buffer): Buffer => b;
type Method = (typeof LineStateServiceService)[keyof typeof LineStateServiceService];

/**
 * A gRPC server forwarding the raw bytes of every LineStateService method except
 * `omit` to `upstream` (so a service without WatchEventBatches, as an older one is);
 * `calls` records the method names it forwarded.
 */
async function startProxy(upstream: string, omit: string | undefined): Promise<{ address: string; calls: string[]; stop(): void }> {
  const client = new Client(upstream, credentials.createInsecure());
  const calls: string[] = [];
  const definition: Record<string, MethodDefinition<Buffer, Buffer>> = {};
  const impl: UntypedServiceImplementation = {};
  const relayStatus = (call: { end(): void; emit(ev: 'error', s: Partial<StatusObject>): boolean }) => (s: StatusObject): void => {
    if (s.code === GrpcStatus.OK) call.end();
    else call.emit('error', { code: s.code, details: s.details });
  };
  for (const [name, m] of Object.entries(LineStateServiceService) as [string, Method][]) {
    if (name === omit) continue;
    definition[name] = {
      path: m.path, requestStream: m.requestStream, responseStream: m.responseStream,
      requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity,
    };
    const method = m.path.slice(m.path.lastIndexOf('/') + 1);
    if (!m.requestStream && !m.responseStream) {
      impl[name] = (call: ServerUnaryCall<Buffer, Buffer>, cb: sendUnaryData<Buffer>) => {
        calls.push(method);
        client.makeUnaryRequest(m.path, identity, identity, call.request, (err: ServiceError | null, res?: Buffer) => cb(err, res));
      };
    } else if (!m.requestStream) {
      impl[name] = (call: ServerWritableStream<Buffer, Buffer>) => {
        calls.push(method);
        const up = client.makeServerStreamRequest(m.path, identity, identity, call.request);
        up.on('data', (d: Buffer) => call.write(d));
        up.on('error', () => {}); // relayed by 'status'
        up.on('status', relayStatus(call));
        call.on('cancelled', () => up.cancel());
      };
    } else if (m.responseStream) {
      impl[name] = (call: ServerDuplexStream<Buffer, Buffer>) => {
        calls.push(method);
        const up = client.makeBidiStreamRequest(m.path, identity, identity);
        call.on('data', (d: Buffer) => up.write(d));
        call.on('end', () => up.end());
        up.on('data', (d: Buffer) => call.write(d));
        up.on('error', () => {});
        up.on('status', relayStatus(call));
        call.on('cancelled', () => up.cancel());
      };
    } else {
      throw new Error(`proxy: client-streaming ${name} is not relayed`);
    }
  }
  const server = new Server();
  server.addService(definition, impl);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  return {
    address: `127.0.0.1:${port}`,
    calls,
    stop: () => {
      server.forceShutdown();
      client.close();
    },
  };
}

describe('RemoteBackend event stream (memory store, through a gRPC proxy)', () => {
  let f: Fabric;
  before(async () => {
    f = await startFabric(createMemoryStore());
  });
  after(async () => {
    await f?.stop();
  });

  /**
   * A RemoteBackend for `chip` through a proxy omitting `omit`: wait until its stream is
   * live (operator drives of line 3 until an event arrives), then drive a net of lines
   * 0..2 HIGH and return what the backend delivered, its log and the proxy's calls.
   */
  const run = async (chip: string, omit: string | undefined) => {
    const proxy = await startProxy(f.server.address, omit);
    const client = createLineStateClient(proxy.address);
    const logs: string[] = [];
    const reconnects: string[] = [];
    const backend = new RemoteBackend({
      client, chip, ngpio: 4, owner: 'test', leaseTtlMs: 60_000,
      log: { info: (m) => logs.push(m), warn: (m) => logs.push(`WARN ${m}`) }, onReconnect: (w) => reconnects.push(w),
    });
    const got: BackendEvent[] = [];
    backend.onEvent((e) => got.push(e));
    try {
      await backend.start();
      assert.notEqual(backend.leaseToken, undefined, 'registered through the proxy');
      let v = 0;
      for (let i = 0; i < 200 && got.length === 0; i++) {
        await f.client.drive({ target: { $case: 'line', value: off(chip, 3) }, value: v++ % 2 === 0 ? HIGH : LOW });
        await sleep(25);
      }
      assert.ok(got.length > 0, `no event reached the backend; log: ${logs.join(' | ')}`);
      // the pokes so far all arrived (the stream resumes from the registration's cursor)
      const before = await f.client.listChips().then((cs) => BigInt(cs.find((c) => c.id === chip)!.lastSeq));
      await until(() => backend.cursor === before, () => `backend cursor ${backend.cursor}, want ${before}`);
      const n0 = got.length;
      assert.deepEqual(got.map((e) => e.seq), range(1n, n0), 'every poke once, in order');
      await f.client.wire({ name: `net-${chip}`, members: [off(chip, 0), off(chip, 1), off(chip, 2)], pull: PULL_DOWN, driveMode: 0 });
      await f.client.drive({ target: { $case: 'net', value: `net-${chip}` }, value: HIGH });
      await until(() => got.length >= n0 + 3, () => `${got.length - n0} of 3 net events`);
      const net = got.slice(n0);
      assert.deepEqual(net.map((e) => e.seq), range(before + 1n, 3));
      assert.deepEqual(net.map((e) => e.offset).sort(), [0, 1, 2]);
      for (const e of net) {
        assert.equal(e.level, 1);
        assert.equal(e.edge, Edge.EDGE_RISING);
      }
      assert.deepEqual([...backend.levels()].slice(0, 3), [1, 1, 1]);
      return { logs, reconnects, calls: [...proxy.calls] };
    } finally {
      await backend.close();
      client.close();
      proxy.stop();
    }
  };

  it('a service with WatchEventBatches: the backend watches with it (no WatchEvents, no fallback)', async () => {
    const r = await run('vm-r1', undefined);
    assert.ok(r.calls.includes('WatchEventBatches'), r.calls.join(','));
    assert.ok(!r.calls.includes('WatchEvents'), r.calls.join(','));
    assert.ok(!r.logs.some((m) => /no WatchEventBatches/.test(m)), r.logs.join(' | '));
    assert.ok(!r.reconnects.includes('stream'), r.reconnects.join(','));
  });

  it('a service WITHOUT WatchEventBatches (UNIMPLEMENTED): the backend falls back to WatchEvents and still gets every event', async () => {
    const r = await run('vm-r2', 'watchEventBatches');
    assert.ok(r.calls.includes('WatchEvents'), r.calls.join(','));
    assert.ok(!r.calls.includes('WatchEventBatches'), 'the proxy has no such method');
    assert.ok(r.logs.some((m) => /vm-r2: the line-state service has no WatchEventBatches; using WatchEvents/.test(m)), r.logs.join(' | '));
    assert.ok(!r.logs.some((m) => /^WARN .*event stream failed/.test(m)), `the fallback is no stream failure: ${r.logs.join(' | ')}`);
    assert.ok(!r.reconnects.includes('stream'), r.reconnects.join(','));
    // one fallback: the stream was opened on WatchEvents once, not re-tried on WatchEventBatches
    assert.equal(r.calls.filter((c) => c === 'WatchEvents').length, 1, r.calls.join(','));
  });
});
