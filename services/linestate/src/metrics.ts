/**
 * The line-state service's Prometheus series (docs/metrics.md, "Line-state service"):
 * RPC counters and durations (recorded by server.ts), store operation durations (an
 * instrumenting LineStore decorator), event stream gauges and counters, and gauges of
 * chips / nets / contention sampled from the store at scrape time (cached SAMPLE_CACHE_MS
 * so frequent scrapes of a big fabric stay cheap).
 */
import { status as GrpcStatus } from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { ErrorCode, isFabricError } from '../../common/src/errors.ts';
import { DURATION_BUCKETS, SAMPLE_CACHE_MS, secondsSince, secondsSinceEpochNs } from '../../common/src/metrics.ts';
import type { LineStore } from './store/store.ts';

/** RPC method label values (LineStateService). */
export const RPC_METHODS = [
  'RegisterChip', 'RenewLease', 'ReleaseChip', 'LineOp', 'OpStream', 'GetNames', 'WatchEvents', 'WatchEventBatches', 'Wire', 'Unwire',
  'ListChips', 'ListLines', 'ListNets', 'GetLine', 'Drive', 'SetBias', 'ApplyTopology',
] as const;
export type RpcMethod = (typeof RPC_METHODS)[number];
/** The streaming RPCs: counted once when the stream ends, no duration series. */
const STREAMING_RPCS: ReadonlySet<RpcMethod> = new Set(['OpStream', 'WatchEvents', 'WatchEventBatches']);

/** Store operation label values (LineStore method names). */
export const STORE_OPS = [
  'registerChip', 'renewLease', 'releaseChip', 'lineOp', 'lineOps', 'getNames', 'wire', 'unwire', 'listChips', 'getChips', 'listLines',
  'listNets', 'getLine', 'drive', 'setBias', 'applyTopology', 'readEvents', 'subscribe',
] as const;
type StoreOp = (typeof STORE_OPS)[number];

/** Event stream kinds: `agent` (one chip resumed from a cursor) or `watcher`. */
export type StreamKind = 'agent' | 'watcher';

/** The gRPC status code name of `code` ("OK", "NOT_FOUND", ...). */
export function grpcCodeName(code: number): string {
  const n = (GrpcStatus as unknown as Record<number, string | undefined>)[code];
  return n ?? 'UNKNOWN';
}

/** A chip id no agent uses: the health probe reads its names (NOT_FOUND = the store answered). */
const HEALTH_PROBE_CHIP = '__gpiofabric_healthz__';

/**
 * One store round trip for `/healthz`: true when the store answered (a NOT_FOUND for the
 * probe chip is an answer), else the reason. Never rejects.
 */
export async function storeHealth(store: LineStore): Promise<true | string> {
  try {
    await store.getNames(HEALTH_PROBE_CHIP);
    return true;
  } catch (e) {
    if (isFabricError(e) && e.code === ErrorCode.NOT_FOUND) return true;
    return `store: ${e instanceof Error ? e.message : String(e)}`;
  }
}

export interface LineStateMetricsOptions {
  readonly registry: Registry;
  /** The store sampled at scrape time (chips, nets, contention). */
  readonly store: LineStore;
  /** `store` label of store_duration_seconds. */
  readonly storeKind: 'redis' | 'memory';
  /** Reuse a store sample this long (default SAMPLE_CACHE_MS). */
  readonly sampleCacheMs?: number;
  /** Bound of one sampling round trip (default 1000 ms; on failure the last values stay). */
  readonly sampleTimeoutMs?: number;
  readonly log?: (msg: string) => void;
}

interface Sample {
  readonly online: number;
  readonly offline: number;
  readonly nets: number;
  readonly contention: number;
}

interface Inc {
  inc(value?: number): void;
}
interface Observe {
  observe(value: number): void;
}

/** The labelled child cached under `key`, made (and cached) by `make` the first time. */
function childOf(cache: Map<string, Inc>, key: string, make: () => Inc): Inc {
  let c = cache.get(key);
  if (c === undefined) {
    c = make();
    cache.set(key, c);
  }
  return c;
}

/** Every line-state series of one registry. */
export class LineStateMetrics {
  readonly rpcs: Counter<'method' | 'code'>;
  readonly rpcDuration: Histogram<'method'>;
  readonly streamOps: Counter<'code'>;
  readonly storeDuration: Histogram<'op' | 'store'>;
  readonly eventStreams: Gauge<'kind'>;
  readonly eventsSent: Counter;
  readonly echoesOmitted: Counter;
  readonly streamLag: Histogram;
  readonly chips: Gauge<'state'>;
  readonly nets: Gauge;
  readonly contention: Counter;
  readonly leaseTakeovers: Counter;
  readonly errors: Counter<'cause'>;

  readonly #rpcCounters = new Map<string, Inc>();
  readonly #rpcDurations = new Map<string, Observe>();
  readonly #errorCounters = new Map<string, Inc>();
  readonly #streamOpCounters = new Map<string, Inc>();
  readonly #storeOps = new Map<StoreOp, Observe>();
  readonly #store: LineStore;
  readonly #cacheMs: number;
  readonly #timeoutMs: number;
  readonly #log: (msg: string) => void;
  #sample: { readonly at: number; readonly p: Promise<Sample | undefined> } | undefined;
  #last: Sample | undefined;
  #sampleFailing = false;

  constructor(opts: LineStateMetricsOptions) {
    const registers = [opts.registry];
    const buckets = [...DURATION_BUCKETS];
    this.#store = opts.store;
    this.#cacheMs = opts.sampleCacheMs ?? SAMPLE_CACHE_MS;
    this.#timeoutMs = opts.sampleTimeoutMs ?? 1000;
    this.#log = opts.log ?? (() => {});
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    this.rpcs = new Counter({ name: 'gpiofabric_linestate_rpcs_total', help: 'RPCs by method and gRPC status code name.', labelNames: ['method', 'code'], registers });
    this.rpcDuration = new Histogram({ name: 'gpiofabric_linestate_rpc_duration_seconds', help: 'Handler time of unary RPCs.', labelNames: ['method'], buckets, registers });
    this.streamOps = new Counter({ name: 'gpiofabric_linestate_stream_ops_total', help: 'Line operations answered on OpStream streams, by gRPC status code name.', labelNames: ['code'], registers });
    this.storeDuration = new Histogram({ name: 'gpiofabric_linestate_store_duration_seconds', help: 'One store operation (Redis: one script round trip).', labelNames: ['op', 'store'], buckets, registers });
    this.eventStreams = new Gauge({ name: 'gpiofabric_linestate_event_streams', help: 'Open WatchEvents / WatchEventBatches streams: agent (one chip resumed from a cursor) or watcher.', labelNames: ['kind'], registers });
    this.eventsSent = new Counter({ name: 'gpiofabric_linestate_events_sent_total', help: 'Events written to WatchEvents / WatchEventBatches streams (one per event).', registers });
    this.echoesOmitted = new Counter({
      name: 'gpiofabric_linestate_echoes_omitted_total',
      help: 'Echoes (an agent\'s own changes of lines with no interrupt armed) left out of streams that asked for omit_echoes.', registers,
    });
    this.streamLag = new Histogram({ name: 'gpiofabric_linestate_stream_lag_seconds', help: 'Event timestamp to written to a stream (store push and fan-out; backlog replays excluded).', buckets, registers });
    this.chips = new Gauge({
      name: 'gpiofabric_linestate_chips', help: 'Registered chips: online (live lease) or offline; sampled at scrape.', labelNames: ['state'], registers,
      async collect() {
        const s = await self.#sampled();
        if (s === undefined) return;
        this.set({ state: 'online' }, s.online);
        this.set({ state: 'offline' }, s.offline);
      },
    });
    this.nets = new Gauge({
      name: 'gpiofabric_linestate_nets', help: 'Nets (wires); sampled at scrape.', registers,
      async collect() {
        const s = await self.#sampled();
        if (s !== undefined) this.set(s.nets);
      },
    });
    this.contention = new Counter({
      name: 'gpiofabric_linestate_contention_total', help: 'Times a net entered contention, summed over existing nets; sampled at scrape.', registers,
      async collect() {
        const s = await self.#sampled();
        if (s === undefined) return;
        this.reset();
        this.inc(s.contention);
      },
    });
    this.leaseTakeovers = new Counter({ name: 'gpiofabric_linestate_lease_takeovers_total', help: 'Registrations that took over an expired lease.', registers });
    this.errors = new Counter({ name: 'gpiofabric_linestate_errors_total', help: 'Failed RPCs by cause (gRPC status code name).', labelNames: ['cause'], registers });

    for (const method of RPC_METHODS) {
      this.#rpcChild(method, 'OK').inc(0);
      if (!STREAMING_RPCS.has(method)) {
        this.rpcDuration.zero({ method });
        this.#rpcDurations.set(method, this.rpcDuration.labels({ method }));
      }
    }
    this.streamOpsAnswered(GrpcStatus.OK, 0);
    for (const op of STORE_OPS) {
      this.storeDuration.zero({ op, store: opts.storeKind });
      this.#storeOps.set(op, this.storeDuration.labels({ op, store: opts.storeKind }));
    }
    // Every cause the service's own errors map to starts at 0 (others appear when they happen).
    for (const cause of Object.values(ErrorCode)) this.#error(cause, 0);
    for (const kind of ['agent', 'watcher'] as const) this.eventStreams.set({ kind }, 0);
    this.chips.set({ state: 'online' }, 0);
    this.chips.set({ state: 'offline' }, 0);
  }

  /** One finished RPC: its status code and (unary) handler seconds. */
  rpc(method: string, code: number, seconds?: number): void {
    const name = grpcCodeName(code);
    this.#rpcChild(method, name).inc();
    if (seconds !== undefined) this.#rpcDurations.get(method)?.observe(seconds);
    if (code !== GrpcStatus.OK) this.#error(name, 1);
  }

  #error(cause: string, n: number): void {
    childOf(this.#errorCounters, cause, () => this.errors.labels({ cause })).inc(n);
  }

  /** `n` line operations of an OpStream batch answered with `code` (failures also count in errors_total). */
  streamOpsAnswered(code: number, n = 1): void {
    const name = grpcCodeName(code);
    childOf(this.#streamOpCounters, name, () => this.streamOps.labels({ code: name })).inc(n);
    if (code !== GrpcStatus.OK) this.#error(name, n);
  }

  streamOpened(kind: StreamKind): void {
    this.eventStreams.inc({ kind });
  }

  streamClosed(kind: StreamKind): void {
    this.eventStreams.dec({ kind });
  }

  /** An event was written to a stream; `timestampNs` when it came live from the store (lag). */
  eventSent(timestampNs?: bigint): void {
    this.eventsSent.inc();
    if (timestampNs !== undefined) this.streamLag.observe(secondsSinceEpochNs(timestampNs));
  }

  /** An echo was left out of a stream (omit_echoes). */
  echoOmitted(): void {
    this.echoesOmitted.inc();
  }

  /** A LineStore forwarding to `store` that times every operation and counts lease takeovers. */
  instrumentStore(store: LineStore): LineStore {
    const ops = this.#storeOps;
    const takeovers = this.leaseTakeovers;
    const timed = <T>(op: StoreOp, fn: () => Promise<T>): Promise<T> => {
      const h = ops.get(op);
      const t0 = performance.now();
      let p: Promise<T>;
      try {
        p = fn();
      } catch (e) {
        h?.observe(secondsSince(t0));
        throw e;
      }
      return p.finally(() => h?.observe(secondsSince(t0)));
    };
    return {
      registerChip: async (input) => {
        const r = await timed('registerChip', () => store.registerChip(input));
        if (r.tookOver) takeovers.inc();
        return r;
      },
      renewLease: (chip, token) => timed('renewLease', () => store.renewLease(chip, token)),
      releaseChip: (chip, token) => timed('releaseChip', () => store.releaseChip(chip, token)),
      lineOp: (input) => timed('lineOp', () => store.lineOp(input)),
      lineOps: (chip, token, ops) => timed('lineOps', () => store.lineOps(chip, token, ops)),
      getNames: (chip) => timed('getNames', () => store.getNames(chip)),
      wire: (input) => timed('wire', () => store.wire(input)),
      unwire: (name) => timed('unwire', () => store.unwire(name)),
      listChips: () => timed('listChips', () => store.listChips()),
      ...(store.getChips !== undefined ? { getChips: (ids: readonly string[]) => timed('getChips', () => store.getChips!(ids)) } : {}),
      listLines: (chip) => timed('listLines', () => store.listLines(chip)),
      listNets: () => timed('listNets', () => store.listNets()),
      getLine: (line) => timed('getLine', () => store.getLine(line)),
      drive: (target, value) => timed('drive', () => store.drive(target, value)),
      setBias: (line, bias) => timed('setBias', () => store.setBias(line, bias)),
      applyTopology: (t, dryRun) => timed('applyTopology', () => store.applyTopology(t, dryRun)),
      readEvents: (chip, after, limit) => timed('readEvents', () => store.readEvents(chip, after, limit)),
      subscribe: (chips, listener) => timed('subscribe', () => store.subscribe(chips, listener)),
      close: () => store.close(),
    };
  }

  #rpcChild(method: string, code: string): Inc {
    return childOf(this.#rpcCounters, `${method}/${code}`, () => this.rpcs.labels({ method, code }));
  }

  /** The store sample, reused for #cacheMs; undefined when sampling fails (last values stay). */
  #sampled(): Promise<Sample | undefined> {
    const now = performance.now();
    if (this.#sample !== undefined && now - this.#sample.at < this.#cacheMs) return this.#sample.p;
    const p = this.#takeSample();
    this.#sample = { at: now, p };
    return p;
  }

  async #takeSample(): Promise<Sample | undefined> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const sample = (async (): Promise<Sample> => {
        const [chips, nets] = await Promise.all([this.#store.listChips(), this.#store.listNets()]);
        let online = 0;
        for (const c of chips) if (c.online) online++;
        let contention = 0;
        for (const n of nets) contention += Number(n.contentionCount);
        return { online, offline: chips.length - online, nets: nets.length, contention };
      })();
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${this.#timeoutMs} ms`)), this.#timeoutMs);
      });
      sample.catch(() => {});
      const s = await Promise.race([sample, timeout]);
      this.#last = s;
      if (this.#sampleFailing) this.#log('metrics: sampling the store works again');
      this.#sampleFailing = false;
      return s;
    } catch (e) {
      if (!this.#sampleFailing) this.#log(`metrics: cannot sample the store (chips/nets gauges keep their last values): ${e instanceof Error ? e.message : String(e)}`);
      this.#sampleFailing = true;
      return this.#last;
    } finally {
      clearTimeout(timer);
    }
  }
}

const perRegistry = new WeakMap<Registry, LineStateMetrics>();

/** The LineStateMetrics of `opts.registry` (created on first use; later options are ignored). */
export function lineStateMetrics(opts: LineStateMetricsOptions): LineStateMetrics {
  let m = perRegistry.get(opts.registry);
  if (m === undefined) {
    m = new LineStateMetrics(opts);
    perRegistry.set(opts.registry, m);
  }
  return m;
}
