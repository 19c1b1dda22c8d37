/**
 * Typed promise client of the line-state service: one channel for the client's life,
 * a per-call deadline on every unary RPC, errors as FabricError (code from the gRPC
 * status, message from its details, cause = the ServiceError). Used by the CLI and by
 * the device agent's remote line backend.
 */
import { status as GrpcStatus, type ClientDuplexStream, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import { ErrorCode, FabricError } from '../../common/src/errors.ts';
import {
  LineStateServiceClient,
  type ApplyTopologyRequest, type ApplyTopologyResponse, type Chip, type DriveRequest, type DriveResponse, type GetLineRequest,
  type GetNamesRequest, type GetNamesResponse, type LeaseRequest, type LineEvent, type LineOpBatch, type LineOpRequest, type LineOpResponse,
  type LineEventBatch, type LineOpResultBatch,
  type LineState, type ListLinesRequest, type Net, type RegisterChipRequest, type RegisterChipResponse,
  type RenewLeaseResponse, type SetBiasRequest, type WatchEventsRequest, type WireRequest,
} from '../../common/src/gen/gpiofabric/v1/linestate.ts';
import { fromServiceError } from './grpc/status.ts';
import { channelCredentials, type TlsFiles } from '../../common/src/tls.ts';

export const DEFAULT_DEADLINE_MS = 5000;

/** A WatchEventsRequest whose omit_echoes may be left out (false). */
export type WatchRequest = Omit<WatchEventsRequest, 'omitEchoes'> & { readonly omitEchoes?: boolean };

const watchRequest = (req: WatchRequest): WatchEventsRequest => ({ ...req, omitEchoes: req.omitEchoes ?? false });

export interface LineStateClientOptions {
  /** Deadline of each unary call (default 5000 ms; enforced to within DEADLINE_TICK_MS). */
  readonly deadlineMs?: number;
  /** TLS / mutual TLS (docs/security.md); files are read here, once. Absent = plaintext. */
  readonly tls?: TlsFiles;
}

/** A live WatchEvents stream. */
export interface WatchHandle {
  /** Stop the stream; no callback fires afterwards. */
  cancel(): void;
}

/** A raw OpStream (op-stream.ts batches operations onto it). */
export interface OpStreamHandle {
  write(batch: LineOpBatch): void;
  /** Half-close: the service answers what it has, then ends the stream. */
  end(): void;
  /** Stop the stream; no callback fires afterwards. */
  cancel(): void;
}

export interface LineStateClient {
  readonly address: string;
  /** Deadline of each call (ms). */
  readonly deadlineMs: number;
  registerChip(req: RegisterChipRequest): Promise<RegisterChipResponse>;
  renewLease(req: LeaseRequest): Promise<RenewLeaseResponse>;
  releaseChip(req: LeaseRequest): Promise<void>;
  lineOp(req: LineOpRequest): Promise<LineOpResponse>;
  getNames(req: GetNamesRequest): Promise<GetNamesResponse>;
  wire(req: WireRequest): Promise<Net>;
  unwire(name: string): Promise<void>;
  listChips(): Promise<Chip[]>;
  listLines(req?: ListLinesRequest): Promise<LineState[]>;
  listNets(): Promise<Net[]>;
  getLine(req: GetLineRequest): Promise<LineState>;
  drive(req: DriveRequest): Promise<DriveResponse>;
  setBias(req: SetBiasRequest): Promise<LineState>;
  applyTopology(req: ApplyTopologyRequest): Promise<ApplyTopologyResponse>;
  /**
   * Open an event stream. `onError` receives the stream's failure (as FabricError) and
   * `onEnd` a clean end by the server; neither fires after `cancel()`.
   */
  watchEvents(req: WatchRequest, onEvent: (e: LineEvent) => void, onError: (e: FabricError) => void, onEnd?: () => void): WatchHandle;
  /**
   * The same stream with the events that were ready together delivered as one array
   * (WatchEventBatches). `onError`'s `unimplemented`: the service has no
   * WatchEventBatches, so use watchEvents.
   */
  watchEventBatches(
    req: WatchRequest, onEvents: (es: LineEvent[]) => void, onError: (e: FabricError, unimplemented: boolean) => void, onEnd?: () => void,
  ): WatchHandle;
  /**
   * Open an OpStream. `onError` gets its failure (`unimplemented`: the service has no
   * OpStream, so use LineOp) and `onEnd` a clean end by the service; neither fires after
   * `cancel()`.
   */
  opStream(onResults: (b: LineOpResultBatch) => void, onError: (e: FabricError, unimplemented: boolean) => void, onEnd: () => void): OpStreamHandle;
  /** Resolves once the channel is connected (or rejects after `timeoutMs`). */
  waitForReady(timeoutMs?: number): Promise<void>;
  close(): void;
}

type Callback<Res> = (err: ServiceError | null, res: Res) => void;
type RawUnary<Req, Res> = (req: Req, cb: Callback<Res>) => unknown;
interface Pending { readonly deadline: number; expired: boolean; cancel(): void }

/**
 * The messages of a stream from the service as callbacks: `onError` (as FabricError;
 * `unimplemented` = the method is unknown) or `onEnd` fires once, and nothing fires after
 * cancel(). `over` is true from then on (a duplex stream writes nothing more).
 */
function streamCallbacks<T>(
  stream: ClientReadableStream<T> | ClientDuplexStream<unknown, T>, onData: (m: T) => void,
  onError: (e: FabricError, unimplemented: boolean) => void, onEnd?: () => void,
): WatchHandle & { readonly over: boolean } {
  let over = false;
  stream.on('data', (m: T) => { if (!over) onData(m); });
  stream.on('error', (e: ServiceError) => {
    if (over) return;
    over = true;
    onError(fromServiceError(e), e.code === GrpcStatus.UNIMPLEMENTED);
  });
  stream.on('end', () => {
    if (over) return;
    over = true;
    onEnd?.();
  });
  return {
    get over() {
      return over;
    },
    cancel: () => {
      if (over) return;
      over = true;
      stream.cancel();
    },
  };
}

/** Granularity of unary-call deadlines. */
export const DEADLINE_TICK_MS = 50;

/** Create a client of the service at `address` ("host:port"). No I/O until the first call. */
export function createLineStateClient(address: string, opts: LineStateClientOptions = {}): LineStateClient {
  const deadlineMs = opts.deadlineMs ?? DEFAULT_DEADLINE_MS;
  const channel = channelCredentials(opts.tls, address);
  const raw = new LineStateServiceClient(address, channel.credentials, {
    ...channel.options,
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
    'grpc.max_send_message_length': 8 * 1024 * 1024,
  });
  // Deadlines are enforced here with one coarse timer for all calls rather than grpc-js
  // per-call deadlines: those arm a timer on both sides (and a grpc-timeout header) for
  // every call, which the benchmark showed on the LineOp hot path. A call still pending
  // at its deadline (checked every DEADLINE_TICK_MS) is cancelled and fails with
  // DEADLINE_EXCEEDED.
  const pending = new Set<Pending>();
  let ticker: NodeJS.Timeout | undefined;
  const tick = (): void => {
    const now = Date.now();
    for (const p of pending) {
      if (p.deadline <= now) {
        pending.delete(p);
        p.expired = true;
        p.cancel();
      }
    }
    if (pending.size === 0 && ticker !== undefined) {
      clearInterval(ticker);
      ticker = undefined;
    }
  };
  const call = <Req, Res>(fn: RawUnary<Req, Res>, req: Req): Promise<Res> =>
    new Promise<Res>((resolve, reject) => {
      const p: Pending = { deadline: Date.now() + deadlineMs, expired: false, cancel: () => {} };
      const c = fn.call(raw, req, (err, res) => {
        pending.delete(p);
        if (err === null) resolve(res);
        else if (p.expired) reject(new FabricError(ErrorCode.DEADLINE_EXCEEDED, `no answer from the line-state service at ${address} within ${deadlineMs} ms`, { cause: err }));
        else reject(fromServiceError(err));
      }) as { cancel(): void };
      p.cancel = () => c.cancel();
      pending.add(p);
      if (ticker === undefined) {
        ticker = setInterval(tick, Math.min(DEADLINE_TICK_MS, deadlineMs));
        ticker.unref();
      }
    });
  const r = raw as unknown as Record<string, RawUnary<unknown, unknown>>;
  const m = <Req, Res>(name: string): RawUnary<Req, Res> => r[name] as RawUnary<Req, Res>;
  const fns = {
    registerChip: m<RegisterChipRequest, RegisterChipResponse>('registerChip'),
    renewLease: m<LeaseRequest, RenewLeaseResponse>('renewLease'),
    releaseChip: m<LeaseRequest, unknown>('releaseChip'),
    lineOp: m<LineOpRequest, LineOpResponse>('lineOp'),
    getNames: m<GetNamesRequest, GetNamesResponse>('getNames'),
    wire: m<WireRequest, Net>('wire'),
    unwire: m<{ name: string }, unknown>('unwire'),
    listChips: m<object, { chips: Chip[] }>('listChips'),
    listLines: m<ListLinesRequest, { lines: LineState[] }>('listLines'),
    listNets: m<object, { nets: Net[] }>('listNets'),
    getLine: m<GetLineRequest, LineState>('getLine'),
    drive: m<DriveRequest, DriveResponse>('drive'),
    setBias: m<SetBiasRequest, LineState>('setBias'),
    applyTopology: m<ApplyTopologyRequest, ApplyTopologyResponse>('applyTopology'),
  };
  return {
    address,
    deadlineMs,
    registerChip: (req) => call(fns.registerChip, req),
    renewLease: (req) => call(fns.renewLease, req),
    releaseChip: async (req) => { await call(fns.releaseChip, req); },
    lineOp: (req) => call(fns.lineOp, req),
    getNames: (req) => call(fns.getNames, req),
    wire: (req) => call(fns.wire, req),
    unwire: async (name) => { await call(fns.unwire, { name }); },
    listChips: async () => (await call(fns.listChips, {})).chips,
    listLines: async (req = { chip: '' }) => (await call(fns.listLines, req)).lines,
    listNets: async () => (await call(fns.listNets, {})).nets,
    getLine: (req) => call(fns.getLine, req),
    drive: (req) => call(fns.drive, req),
    setBias: (req) => call(fns.setBias, req),
    applyTopology: (req) => call(fns.applyTopology, req),
    watchEvents: (req, onEvent, onError, onEnd) => streamCallbacks(raw.watchEvents(watchRequest(req)), onEvent, (e) => onError(e), onEnd),
    watchEventBatches: (req, onEvents, onError, onEnd) =>
      streamCallbacks(raw.watchEventBatches(watchRequest(req)), (b: LineEventBatch) => onEvents(b.events), onError, onEnd),
    opStream: (onResults, onError, onEnd) => {
      const stream: ClientDuplexStream<LineOpBatch, LineOpResultBatch> = raw.opStream();
      const h = streamCallbacks(stream, onResults, onError, onEnd);
      return {
        write: (b) => { if (!h.over) stream.write(b); },
        end: () => { if (!h.over) stream.end(); },
        cancel: () => h.cancel(),
      };
    },
    waitForReady: (timeoutMs = deadlineMs) =>
      new Promise<void>((resolve, reject) => {
        raw.waitForReady(Date.now() + timeoutMs, (err) => (err === undefined || err === null ? resolve() : reject(fromServiceError(Object.assign(err, { code: GrpcStatus.UNAVAILABLE, details: `cannot reach the line-state service at ${address}: ${err.message}` })))));
      }),
    close: () => {
      if (ticker !== undefined) clearInterval(ticker);
      ticker = undefined;
      raw.close();
    },
  };
}
