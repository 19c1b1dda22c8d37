/**
 * The batching client of OpStream (the agents' line-operation path; docs/performance.md).
 *
 *  - Every operation issued in one turn of the event loop (the device model answers a
 *    whole kick's worth of requests in one turn) goes out in one LineOpBatch, flushed on
 *    process.nextTick, so a lone operation waits for nothing.
 *  - One long-lived stream per client, opened on the first operation and reopened after
 *    a failure. Results come back by id.
 *  - Operations that were sent on a stream that broke are sent once more on the next
 *    stream (every line operation is idempotent: it sets or reads a value), then fail
 *    with the stream's error; so while the service is unreachable operations fail fast
 *    and nothing waits forever.
 *  - Each operation has a deadline (the client's deadlineMs, checked every
 *    DEADLINE_TICK_MS); a late one fails with DEADLINE_EXCEEDED and its result, should it
 *    still come, is dropped.
 *  - A service without OpStream (UNIMPLEMENTED) is served with unary LineOp calls from
 *    then on.
 */
import { ErrorCode, FabricError } from '../../common/src/errors.ts';
import type { LineOpItem, LineOpResultBatch } from '../../common/src/gen/gpiofabric/v1/linestate.ts';
import { DEADLINE_TICK_MS, type LineStateClient, type OpStreamHandle } from './client.ts';
import { fromStatusCode } from './grpc/status.ts';
import { MAX_OP_BATCH } from './store/validate.ts';

export interface OpStreamClientOptions {
  readonly client: LineStateClient;
  readonly chip: string;
  /** Per-operation deadline (default: the client's deadlineMs). */
  readonly deadlineMs?: number;
  /** Largest batch sent (default and at most MAX_OP_BATCH). */
  readonly maxBatch?: number;
  /** A stream failed and is reopened (metrics hook). */
  readonly onReconnect?: () => void;
  readonly log?: (msg: string) => void;
}

interface PendingOp {
  readonly id: number;
  readonly token: string;
  readonly op: number;
  readonly offset: number;
  readonly value: number;
  readonly deadline: number;
  /** Sent once already on a stream that broke. */
  resent: boolean;
  settled: boolean;
  readonly resolve: (v: number) => void;
  readonly reject: (e: FabricError) => void;
}

/** Backoff between reopen attempts of a stream that keeps failing, bounded at 1 s. */
const reopenDelay = (failures: number): number => (failures <= 1 ? 0 : Math.min(1000, 25 * 2 ** Math.min(failures, 6)));

export class OpStreamClient {
  readonly #client: LineStateClient;
  readonly #chip: string;
  readonly #deadlineMs: number;
  readonly #maxBatch: number;
  readonly #onReconnect: (() => void) | undefined;
  readonly #log: (msg: string) => void;
  /** Not sent yet, in issue order. */
  #queue: PendingOp[] = [];
  /** Sent on the current stream, by id. */
  readonly #sent = new Map<number, PendingOp>();
  #stream: OpStreamHandle | undefined;
  #flushScheduled = false;
  #reopenTimer: NodeJS.Timeout | undefined;
  #ticker: NodeJS.Timeout | undefined;
  /** Consecutive stream failures without a result in between. */
  #failures = 0;
  #nextId = 1;
  #unary = false;
  #closed = false;

  constructor(opts: OpStreamClientOptions) {
    this.#client = opts.client;
    this.#chip = opts.chip;
    this.#deadlineMs = opts.deadlineMs ?? opts.client.deadlineMs;
    this.#maxBatch = Math.max(1, Math.min(opts.maxBatch ?? MAX_OP_BATCH, MAX_OP_BATCH));
    this.#onReconnect = opts.onReconnect;
    this.#log = opts.log ?? (() => {});
  }

  /** True once the service turned out to lack OpStream (unary LineOp is used instead). */
  get unary(): boolean {
    return this.#unary;
  }

  /** One line operation under lease `token`; resolves with the response value. */
  call(token: bigint, op: number, offset: number, value: number): Promise<number> {
    if (this.#closed) return Promise.reject(new FabricError(ErrorCode.UNAVAILABLE, `the operation stream of chip ${this.#chip} is closed`));
    return new Promise<number>((resolve, reject) => {
      this.#queue.push({
        id: this.#takeId(), token: token.toString(), op, offset, value, deadline: Date.now() + this.#deadlineMs,
        resent: false, settled: false, resolve, reject,
      });
      this.#armTicker();
      if (!this.#flushScheduled) {
        this.#flushScheduled = true;
        process.nextTick(() => this.#flush());
      }
    });
  }

  /** Fail every pending operation and end the stream. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#reopenTimer);
    clearInterval(this.#ticker);
    this.#ticker = undefined;
    const err = new FabricError(ErrorCode.UNAVAILABLE, `the operation stream of chip ${this.#chip} was closed`);
    for (const p of [...this.#queue, ...this.#sent.values()]) this.#settle(p, err);
    this.#queue = [];
    this.#sent.clear();
    this.#stream?.cancel();
    this.#stream = undefined;
  }

  #takeId(): number {
    for (;;) {
      const id = this.#nextId;
      this.#nextId = id >= 0xffff_ffff ? 1 : id + 1;
      if (!this.#sent.has(id)) return id;
    }
  }

  #flush(): void {
    this.#flushScheduled = false;
    if (this.#closed || this.#queue.length === 0) return;
    if (this.#unary) {
      this.#flushUnary();
      return;
    }
    if (this.#reopenTimer !== undefined) return; // waiting to reopen; the reopen flushes
    const stream = this.#stream ?? this.#open();
    const queue = this.#queue;
    this.#queue = [];
    let i = 0;
    while (i < queue.length) {
      const token = queue[i]!.token;
      const ops: LineOpItem[] = [];
      for (; i < queue.length && ops.length < this.#maxBatch && queue[i]!.token === token; i++) {
        const p = queue[i]!;
        if (p.settled) continue;
        this.#sent.set(p.id, p);
        ops.push({ id: p.id, op: p.op as LineOpItem['op'], offset: p.offset, value: p.value });
      }
      if (ops.length > 0) stream.write({ chip: this.#chip, leaseToken: token, ops });
    }
  }

  #flushUnary(): void {
    const queue = this.#queue;
    this.#queue = [];
    for (const p of queue) {
      if (p.settled) continue;
      this.#client.lineOp({ chip: this.#chip, leaseToken: p.token, op: p.op as LineOpItem['op'], offset: p.offset, value: p.value }).then(
        (r) => this.#settle(p, r.value),
        (e: unknown) => this.#settle(p, e instanceof FabricError ? e : new FabricError(ErrorCode.INTERNAL, String(e), { cause: e })),
      );
    }
  }

  #open(): OpStreamHandle {
    const handle: OpStreamHandle = this.#client.opStream(
      (b) => this.#onResults(b),
      (e, unimplemented) => this.#broken(handle, e, unimplemented),
      () => this.#broken(handle, new FabricError(ErrorCode.UNAVAILABLE, `the line-state service at ${this.#client.address} ended the operation stream`), false),
    );
    this.#stream = handle;
    return handle;
  }

  #onResults(b: LineOpResultBatch): void {
    this.#failures = 0;
    for (const r of b.results) {
      const p = this.#sent.get(r.id);
      if (p === undefined) continue; // late (its deadline passed) or unknown
      this.#sent.delete(r.id);
      this.#settle(p, r.code === 0 ? r.value : fromStatusCode(r.code, r.message));
    }
  }

  /** The stream failed: resend what was on it once, fail what was already resent, reopen when there is work. */
  #broken(handle: OpStreamHandle, err: FabricError, unimplemented: boolean): void {
    if (this.#stream !== handle || this.#closed) return;
    this.#stream = undefined;
    const inFlight = [...this.#sent.values()].sort((a, b) => a.id - b.id);
    this.#sent.clear();
    if (unimplemented) {
      // nothing was applied: the service does not know the method
      if (!this.#unary) this.#log(`chip ${this.#chip}: the line-state service at ${this.#client.address} has no OpStream; using unary LineOp`);
      this.#unary = true;
      this.#queue = [...inFlight, ...this.#queue];
      this.#flushUnary();
      return;
    }
    this.#failures++;
    this.#onReconnect?.();
    const again: PendingOp[] = [];
    for (const p of inFlight) {
      if (p.resent) this.#settle(p, err);
      else {
        p.resent = true;
        again.push(p);
      }
    }
    if (this.#failures > 1) {
      // the stream keeps failing (service unreachable): what waits fails fast too
      for (const p of this.#queue) this.#settle(p, err);
      this.#queue = [];
    }
    this.#queue = [...again, ...this.#queue];
    if (this.#queue.length === 0) return;
    clearTimeout(this.#reopenTimer);
    this.#reopenTimer = setTimeout(() => {
      this.#reopenTimer = undefined;
      this.#flush();
    }, reopenDelay(this.#failures));
  }

  #settle(p: PendingOp, r: number | FabricError): void {
    if (p.settled) return;
    p.settled = true;
    if (typeof r === 'number') p.resolve(r);
    else p.reject(r);
  }

  #armTicker(): void {
    if (this.#ticker !== undefined) return;
    this.#ticker = setInterval(() => this.#expire(), Math.min(DEADLINE_TICK_MS, this.#deadlineMs));
    this.#ticker.unref();
  }

  #expire(): void {
    const now = Date.now();
    const late = (p: PendingOp): boolean => {
      if (p.settled || p.deadline > now) return p.settled;
      this.#settle(p, new FabricError(ErrorCode.DEADLINE_EXCEEDED, `no answer from the line-state service at ${this.#client.address} within ${this.#deadlineMs} ms`));
      return true;
    };
    this.#queue = this.#queue.filter((p) => !late(p));
    for (const [id, p] of this.#sent) if (late(p)) this.#sent.delete(id);
    if (this.#queue.length === 0 && this.#sent.size === 0) {
      clearInterval(this.#ticker);
      this.#ticker = undefined;
    }
  }
}
