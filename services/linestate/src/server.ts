/**
 * The line-state gRPC service: every RPC of gpiofabric.v1.LineStateService over a
 * LineStore, plus grpc.health.v1.Health. The server keeps no state of its own between
 * requests (any replica serves any client); it validates, converts and delegates.
 */
import {
  Server, status as GrpcStatus,
  type ServerDuplexStream, type ServerUnaryCall, type ServerWritableStream, type sendUnaryData, type StatusObject, type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { invalidArgument, notFound, outOfRange } from '../../common/src/errors.ts';
import {
  LineStateServiceService,
  type ApplyTopologyRequest, type ApplyTopologyResponse, type DriveRequest, type DriveResponse, type GetLineRequest,
  type GetNamesRequest, type GetNamesResponse, type LeaseRequest, type LineEvent, type LineOpBatch, type LineOpRequest, type LineOpResponse,
  type LineEventBatch, type LineOpResult, type LineOpResultBatch,
  type LineState, type ListChipsResponse, type ListLinesRequest, type ListLinesResponse, type ListNetsResponse, type Net,
  type RegisterChipRequest, type RegisterChipResponse, type ReleaseChipResponse, type RenewLeaseResponse, type SetBiasRequest,
  type UnwireRequest, type UnwireResponse, type WatchEventsRequest, type WireRequest,
} from '../../common/src/gen/gpiofabric/v1/linestate.ts';
import type { BatchLineOp, EventSubscription, LineEventRecord, LineStore } from './store/store.ts';
import { MAX_OP_BATCH } from './store/validate.ts';
import * as cv from './grpc/convert.ts';
import { toStatusObject } from './grpc/status.ts';
import { HealthService, healthImplementation } from './grpc/health.ts';
import { MAX_DOCUMENT_BYTES, MAX_NGPIO } from './names.ts';
import { parseTopology } from './topology.ts';
import type { LineStateMetrics, RpcMethod } from './metrics.ts';
import { authorize } from './authz.ts';

/** The part of a server call the authorization reads. */
type ServerSurfaceCall = Pick<ServerUnaryCall<unknown, unknown>, 'getAuthContext'>;
import { principalOf, serverCredentials, type Principal, type TlsFiles } from '../../common/src/tls.ts';

/** Lease TTL used when a RegisterChip asks for 0 and the server was given none. */
export const DEFAULT_LEASE_TTL_MS = 10_000;
/** Page size of the backlog read of a resumed WatchEvents. */
export const WATCH_BACKLOG_PAGE = 1000;
/** An OpStream stops reading while this many of its batches are being answered (resumes at half). */
export const OP_STREAM_MAX_PENDING_BATCHES = 64;
/** After an OpStream client's end, how long the service waits to tell a half-close from a cancel. */
export const OP_STREAM_END_GRACE_MS = 20;
/** Largest request the server accepts (a topology document of MAX_DOCUMENT_BYTES plus framing). */
export const MAX_REQUEST_BYTES = MAX_DOCUMENT_BYTES + 64 * 1024;

export interface LineStateServerOptions {
  readonly store: LineStore;
  /** "host:port"; default "127.0.0.1:7070"; port 0 picks a free port. */
  readonly listen?: string;
  readonly log?: (msg: string) => void;
  /** Lease TTL for RegisterChip requests that ask for 0 (default DEFAULT_LEASE_TTL_MS). */
  readonly leaseTtlMs?: number;
  /** Prometheus series (docs/metrics.md); the store is wrapped to time its operations. */
  readonly metrics?: LineStateMetrics;
  /**
   * TLS (docs/security.md): cert+key serve TLS; with ca, clients must present a
   * certificate signed by it and every RPC is authorized by the identity in it
   * (authz.ts). Files are read once, here. Absent = plaintext, no authorization.
   */
  readonly tls?: TlsFiles;
}

export interface LineStateServer {
  /** "host:port" actually bound. */
  readonly address: string;
  readonly port: number;
  /** True when clients must present certificates and RPCs are authorized by role. */
  readonly authorizing: boolean;
  /** Ends every open watch stream, stops accepting calls and waits for running ones (the store stays open). */
  close(): Promise<void>;
}

type Unary<Req, Res> = (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>) => void;

/** Start the service. Resolves once it listens. */
export async function startLineStateServer(opts: LineStateServerOptions): Promise<LineStateServer> {
  const metrics = opts.metrics;
  const store = metrics !== undefined ? metrics.instrumentStore(opts.store) : opts.store;
  const log = opts.log ?? ((msg: string) => console.error(msg));
  const leaseTtlDefault = opts.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
  const openStreams = new Set<{ end(): void }>();
  const credentials = serverCredentials(opts.tls); // throws TlsConfigError before anything listens
  const authorizing = opts.tls?.ca !== undefined;
  // Principals by certificate fingerprint (parsing the SANs once per client certificate).
  const principals = new Map<string, Principal>();
  const principal = (call: ServerSurfaceCall): Principal => {
    const cert = call.getAuthContext().sslPeerCertificate;
    const fp = cert?.fingerprint256 ?? '';
    let p = principals.get(fp);
    if (p === undefined) {
      p = principalOf(cert);
      if (principals.size >= 4096) principals.clear();
      principals.set(fp, p);
    }
    return p;
  };
  const check = (rpc: RpcMethod, call: ServerSurfaceCall & { request: unknown }): void => {
    if (authorizing) authorize(principal(call), rpc, call.request);
  };

  const fail = (rpc: string, e: unknown): Partial<StatusObject> => {
    const s = toStatusObject(e);
    if (s.unexpected) log(`line-state ${rpc}: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return { code: s.code, details: s.details };
  };
  // Every unary RPC: validate + call the store inside an async function, so a thrown
  // FabricError (sync or async) becomes its status and anything else becomes INTERNAL.
  const unary = <Req, Res>(rpc: RpcMethod, fn: (req: Req) => Promise<Res>): Unary<Req, Res> => (call, cb) => {
    const t0 = metrics !== undefined ? performance.now() : 0;
    const failed = (e: unknown): void => {
      const s = fail(rpc, e);
      metrics?.rpc(rpc, s.code ?? GrpcStatus.UNKNOWN, (performance.now() - t0) / 1000);
      cb(s);
    };
    let p: Promise<Res>;
    try {
      check(rpc, call);
      p = fn(call.request);
    } catch (e) {
      failed(e);
      return;
    }
    p.then((res) => {
      metrics?.rpc(rpc, GrpcStatus.OK, (performance.now() - t0) / 1000);
      cb(null, res);
    }, failed);
  };

  /** WatchEvents and WatchEventBatches: the same stream, `out` writes one event (at once or batched). */
  /** Counts a streaming RPC in rpcs_total, once, with the first code it is given. */
  const countOnce = (rpc: RpcMethod): ((code: number) => void) => {
    let counted = false;
    return (code) => {
      if (counted) return;
      counted = true;
      metrics?.rpc(rpc, code);
    };
  };

  const watchHandler = (rpc: 'WatchEvents' | 'WatchEventBatches', call: ServerWritableStream<WatchEventsRequest, unknown>, out: (e: LineEvent) => void): void => {
    const count = countOnce(rpc);
    if (metrics !== undefined) {
      call.on('cancelled', () => count(GrpcStatus.CANCELLED));
      call.on('finish', () => count(GrpcStatus.OK));
    }
    void (async () => {
      check(rpc, call);
      await watchEvents(store, call, out, openStreams, metrics);
    })().catch((e: unknown) => {
      const s = fail(rpc, e);
      count(s.code ?? GrpcStatus.UNKNOWN);
      if (!call.cancelled && !call.writableEnded) call.emit('error', s);
    });
  };

  const impl = {
    registerChip: unary<RegisterChipRequest, RegisterChipResponse>('RegisterChip', async (req) => {
      const chip = cv.chipId(req.chip);
      if (req.ngpio < 1 || req.ngpio > MAX_NGPIO) throw invalidArgument(`ngpio ${req.ngpio} is out of range 1..${MAX_NGPIO}`);
      if (req.names.length > MAX_NGPIO) throw invalidArgument(`names has ${req.names.length} entries, more than ngpio ${req.ngpio}`);
      const ttl = req.leaseTtlMs === 0 ? leaseTtlDefault : req.leaseTtlMs;
      const r = await store.registerChip({ chip, ngpio: req.ngpio, names: req.names, owner: req.owner, leaseTtlMs: ttl });
      return {
        leaseToken: r.leaseToken.toString(), chip: cv.chipToProto(r.chip), lines: r.lines.map(cv.lineToProto),
        restored: r.restored, tookOver: r.tookOver, leaseTtlMs: ttl,
      };
    }),
    renewLease: unary<LeaseRequest, RenewLeaseResponse>('RenewLease', async (req) => {
      const r = await store.renewLease(cv.chipId(req.chip), cv.u64(req.leaseToken, 'lease_token'));
      return { leaseExpiresAtMs: String(Math.trunc(r.leaseExpiresAtMs)) };
    }),
    releaseChip: unary<LeaseRequest, ReleaseChipResponse>('ReleaseChip', async (req) => {
      await store.releaseChip(cv.chipId(req.chip), cv.u64(req.leaseToken, 'lease_token'));
      return {};
    }),
    lineOp: unary<LineOpRequest, LineOpResponse>('LineOp', async (req) => {
      const { op, value } = cv.lineOp(req.op, req.value);
      const v = await store.lineOp({ chip: cv.chipId(req.chip), leaseToken: cv.u64(req.leaseToken, 'lease_token'), op, offset: req.offset, value });
      return { value: v };
    }),
    opStream: (call: ServerDuplexStream<LineOpBatch, LineOpResultBatch>) => {
      // Each batch is answered by one message, in the order its store call finishes
      // (a client keeps per-line order by not sending a line's next op before the last
      // one's result). The stream counts in rpcs_total once, when it ends.
      let pending = 0;
      let clientDone = false;
      let closed = false;
      const count = countOnce('OpStream');
      const h = { end: () => endStream() };
      const endStream = (): void => {
        if (closed) return;
        closed = true;
        openStreams.delete(h);
        if (!call.writableEnded) call.end();
      };
      openStreams.add(h);
      const gone = (): void => {
        closed = true;
        openStreams.delete(h);
        count(GrpcStatus.CANCELLED);
      };
      call.on('cancelled', gone);
      call.on('error', gone);
      // A client that cancels shows 'end' before 'cancelled' (call.cancelled still false,
      // and the RST can take longer than a turn of the loop): wait OP_STREAM_END_GRACE_MS
      // before treating the end as a half-close (answer, finish, OK) rather than a cancel.
      const finishLater = (): void => {
        setTimeout(() => {
          if (call.cancelled) gone();
          else endStream();
        }, OP_STREAM_END_GRACE_MS);
      };
      call.on('finish', () => count(call.cancelled ? GrpcStatus.CANCELLED : GrpcStatus.OK));
      call.on('end', () => {
        clientDone = true;
        if (pending === 0) finishLater();
      });
      call.on('data', (batch: LineOpBatch) => {
        pending++;
        if (pending >= OP_STREAM_MAX_PENDING_BATCHES) call.pause();
        void answerBatch(batch).then((answered) => {
          if (!closed && !call.writableEnded && !call.cancelled) call.write(answered);
        }).finally(() => {
          pending--;
          if (pending === OP_STREAM_MAX_PENDING_BATCHES >> 1) call.resume();
          if (clientDone && pending === 0) finishLater();
        });
      });
      /** Never rejects: every failure becomes the result of the operations it concerns. */
      const answerBatch = async (batch: LineOpBatch): Promise<LineOpResultBatch> => {
        const items = batch.ops;
        const results = new Array<LineOpResult>(items.length);
        let seq = 0n;
        const answer = (i: number, r: { value: number; seq: bigint; level: number } | { error: unknown }): void => {
          const id = items[i]?.id ?? 0;
          if ('value' in r) {
            results[i] = { id, code: GrpcStatus.OK, value: r.value, message: '', level: r.level };
            seq = r.seq;
          } else {
            const st = fail('OpStream', r.error);
            results[i] = { id, code: st.code ?? GrpcStatus.UNKNOWN, value: 0, message: st.details ?? '', level: 0 };
          }
          metrics?.streamOpsAnswered(results[i].code);
        };
        try {
          if (authorizing) authorize(principal(call), 'OpStream', batch);
          const chip = cv.chipId(batch.chip);
          const token = cv.u64(batch.leaseToken, 'lease_token');
          if (items.length > MAX_OP_BATCH) throw invalidArgument(`a batch has at most ${MAX_OP_BATCH} operations, got ${items.length}`);
          const valid: BatchLineOp[] = [];
          const at: number[] = [];
          items.forEach((o, i) => {
            try {
              const { op, value } = cv.lineOp(o.op, o.value);
              valid.push({ op, offset: o.offset, value });
              at.push(i);
            } catch (e) {
              answer(i, { error: e });
            }
          });
          const out = valid.length > 0 ? await store.lineOps(chip, token, valid) : [];
          out.forEach((o, k) => answer(at[k] ?? 0, o.ok ? o : { error: o.error }));
        } catch (e) {
          items.forEach((_, i) => { if (results[i] === undefined) answer(i, { error: e }); });
        }
        return { results, seq: seq.toString() };
      };
    },
    getNames: unary<GetNamesRequest, GetNamesResponse>('GetNames', async (req) => ({ names: [...(await store.getNames(cv.chipId(req.chip)))] })),
    watchEvents: (call: ServerWritableStream<WatchEventsRequest, LineEvent>) => watchHandler('WatchEvents', call, (e) => call.write(e)),
    watchEventBatches: (call: ServerWritableStream<WatchEventsRequest, LineEventBatch>) => watchHandler('WatchEventBatches', call, batchWriter(call)),
    wire: unary<WireRequest, Net>('Wire', async (req) => {
      const name = req.name === '' ? '' : cv.netName(req.name);
      if (req.members.length < 2) throw invalidArgument(`a net needs at least 2 members, got ${req.members.length}`);
      const members = req.members.map((m, i) => cv.lineRef(m, `members[${i}]`));
      return cv.netToProto(await store.wire({ name, members, pull: cv.pull(req.pull), driveMode: cv.driveMode(req.driveMode) }));
    }),
    unwire: unary<UnwireRequest, UnwireResponse>('Unwire', async (req) => {
      await store.unwire(cv.netName(req.name));
      return {};
    }),
    listChips: unary<unknown, ListChipsResponse>('ListChips', async () => ({ chips: (await store.listChips()).map(cv.chipToProto) })),
    listLines: unary<ListLinesRequest, ListLinesResponse>('ListLines', async (req) => {
      const chip = req.chip === '' ? '' : cv.chipId(req.chip);
      return { lines: (await store.listLines(chip)).map(cv.lineToProto) };
    }),
    listNets: unary<unknown, ListNetsResponse>('ListNets', async () => ({ nets: (await store.listNets()).map(cv.netToProto) })),
    getLine: unary<GetLineRequest, LineState>('GetLine', async (req) => cv.lineToProto(await store.getLine(cv.lineRef(req.line)))),
    drive: unary<DriveRequest, DriveResponse>('Drive', async (req) => {
      const t = req.target;
      if (t === undefined) throw invalidArgument('target is required: a line (chip and offset or name) or a net name');
      const value = cv.driveValue(req.value);
      const target = t.$case === 'line' ? { kind: 'line' as const, line: cv.lineRef(t.value) } : { kind: 'net' as const, net: cv.netName(t.value, 'net') };
      return { level: await store.drive(target, value) };
    }),
    setBias: unary<SetBiasRequest, LineState>('SetBias', async (req) => cv.lineToProto(await store.setBias(cv.lineRef(req.line), cv.pull(req.bias, 'bias')))),
    applyTopology: unary<ApplyTopologyRequest, ApplyTopologyResponse>('ApplyTopology', async (req) => {
      if (req.document.trim() === '') throw invalidArgument('document is empty (send a topology document, see docs/topology.md)');
      const topology = parseTopology(req.document);
      const r = await store.applyTopology(topology, req.dryRun);
      return { changes: [...r.changes], chips: r.chips, nets: r.nets };
    }),
  } satisfies Record<keyof typeof LineStateServiceService, unknown>;

  const server = new Server({
    'grpc.max_receive_message_length': MAX_REQUEST_BYTES,
    'grpc.max_send_message_length': 64 * 1024 * 1024,
    // Detect vanished watchers (agents on a dead host) within about a minute.
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 20_000,
  });
  server.addService(LineStateServiceService, impl as unknown as UntypedServiceImplementation);
  server.addService(HealthService, healthImplementation(['gpiofabric.v1.LineStateService'], (call) => {
    const h = { end: () => call.end() };
    openStreams.add(h);
    call.on('cancelled', () => openStreams.delete(h));
  }));

  const listen = opts.listen ?? '127.0.0.1:7070';
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(listen, credentials, (err, p) => (err !== null ? reject(new Error(`cannot listen on ${listen}: ${err.message}`, { cause: err })) : resolve(p)));
  });
  const host = listen.slice(0, listen.lastIndexOf(':'));
  const address = `${host}:${port}`;
  let closing: Promise<void> | undefined;
  return {
    address,
    port,
    authorizing,
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        for (const s of openStreams) s.end();
        openStreams.clear();
        const force = setTimeout(() => server.forceShutdown(), 2000);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      return closing;
    },
  };
}

/** Most events in one LineEventBatch. */
export const MAX_EVENT_BATCH = 1000;

/**
 * The writer of a WatchEventBatches stream: events written in one turn of the event loop
 * go out as one message (flushed on process.nextTick, so a lone event waits for nothing),
 * at most MAX_EVENT_BATCH per message.
 */
function batchWriter(call: ServerWritableStream<WatchEventsRequest, LineEventBatch>): (e: LineEvent) => void {
  let pending: LineEvent[] = [];
  const flush = (): void => {
    const events = pending;
    pending = [];
    if (events.length > 0 && !call.writableEnded && !call.cancelled) call.write({ events });
  };
  return (e) => {
    pending.push(e);
    if (pending.length === 1) process.nextTick(flush);
    else if (pending.length >= MAX_EVENT_BATCH) flush();
  };
}

/**
 * One WatchEvents / WatchEventBatches stream. With from_seq: subscribe first and buffer live events, read
 * the backlog (seq > from_seq) in pages, then flush the buffer dropping what was sent,
 * then go live. Per chip, nothing is sent twice or out of order (seq only increases).
 * With omit_echoes, echoes are not sent; the next event sent counts those directly
 * before it in echoes_before.
 */
async function watchEvents(
  store: LineStore, call: ServerWritableStream<WatchEventsRequest, unknown>, out: (e: LineEvent) => void, openStreams: Set<{ end(): void }>,
  metrics: LineStateMetrics | undefined,
): Promise<void> {
  const req = call.request;
  if (req.chips.length > 1024) throw invalidArgument(`chips has ${req.chips.length} entries (at most 1024)`);
  const chips = req.chips.map((c, i) => cv.chipId(c, `chips[${i}]`));
  if (new Set(chips).size !== chips.length) throw invalidArgument('chips lists a chip twice');
  const fromSeq = req.fromSeq === undefined ? undefined : cv.u64(req.fromSeq, 'from_seq');
  if (fromSeq !== undefined && chips.length !== 1) throw invalidArgument(`from_seq resumes one chip's stream: give exactly one chip (got ${chips.length})`);
  if (req.offset !== undefined && chips.length !== 1) throw invalidArgument(`offset filters one chip's lines: give exactly one chip (got ${chips.length})`);

  if (chips.length > 0) {
    // Read only the requested chips: opening a stream must not cost O(chips in the fabric)
    // (1,000 opens each listing 5,000 chips queued past the Redis command timeout, and
    // every stream failed UNAVAILABLE; docs/performance.md).
    const found = store.getChips !== undefined
      ? await store.getChips(chips)
      : await (async () => { const all = new Map((await store.listChips()).map((c) => [c.id, c])); return chips.map((c) => all.get(c)); })();
    chips.forEach((c, i) => { if (found[i] === undefined) throw notFound(`chip "${c}" is not registered`); });
    const only = found[0];
    if (req.offset !== undefined && only !== undefined && req.offset >= only.ngpio) {
      throw invalidArgument(`offset ${req.offset} is out of range: chip "${only.id}" has lines 0..${only.ngpio - 1}`);
    }
    if (fromSeq !== undefined && only !== undefined && fromSeq > only.lastSeq) {
      throw outOfRange(`from_seq ${fromSeq} is beyond the newest event of chip "${only.id}" (seq ${only.lastSeq})`);
    }
  }
  if (call.cancelled) return;

  const lastSent = new Map<string, bigint>();
  // omit_echoes: per chip, the echoes left out directly after lastSent's seq
  const omitEchoes = req.omitEchoes;
  const echoRun = new Map<string, number>();
  let done = false;
  let buffer: LineEventRecord[] | undefined = fromSeq !== undefined ? [] : undefined;
  let sub: EventSubscription | undefined;
  const stream = { end: () => finish(true) };
  const kind = fromSeq !== undefined ? 'agent' : 'watcher';
  const finish = (endCall: boolean): void => {
    if (done) return;
    done = true;
    metrics?.streamClosed(kind);
    openStreams.delete(stream);
    sub?.close();
    if (endCall && !call.writableEnded) call.end();
  };
  /** `live`: the event came through the subscription (its stream lag is measured). */
  const send = (e: LineEventRecord, live: boolean): void => {
    if (done) return;
    if (req.offset !== undefined && e.offset !== req.offset) return;
    const last = lastSent.get(e.chip);
    if (last !== undefined && e.seq <= last) return;
    lastSent.set(e.chip, e.seq);
    if (omitEchoes) {
      // a run of echoes counts only while it follows on without a gap (a gap stays visible)
      const run = last !== undefined && e.seq === last + 1n ? (echoRun.get(e.chip) ?? 0) : 0;
      if (e.echo === true) {
        echoRun.set(e.chip, run + 1);
        metrics?.echoOmitted();
        return;
      }
      echoRun.delete(e.chip);
      out(cv.eventToProto(e, run));
    } else {
      out(cv.eventToProto(e));
    }
    metrics?.eventSent(live ? e.timestampNs : undefined);
  };
  call.on('cancelled', () => finish(false));
  call.on('error', () => finish(false));
  openStreams.add(stream);
  metrics?.streamOpened(kind);

  sub = await store.subscribe(chips, (e) => {
    if (buffer !== undefined) buffer.push(e);
    else send(e, true);
  });
  if (done) {
    sub.close();
    return;
  }
  if (fromSeq !== undefined) {
    const chip = chips[0] ?? '';
    lastSent.set(chip, fromSeq);
    let cursor = fromSeq;
    for (;;) {
      const page = await store.readEvents(chip, cursor, WATCH_BACKLOG_PAGE);
      if (done) return;
      for (const e of page) send(e, false);
      const tail = page[page.length - 1];
      if (tail === undefined || page.length < WATCH_BACKLOG_PAGE) break;
      cursor = tail.seq;
    }
    const pending = buffer ?? [];
    buffer = undefined;
    for (const e of pending) send(e, true);
  }
}

