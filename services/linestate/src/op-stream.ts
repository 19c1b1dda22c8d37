/**
 * The batching client of OpStream (the agents' line-operation path; docs/performance.md).
 *
 *  - Every operation issued in one turn of the event loop (the device model answers a
 *    whole kick's worth of requests in one turn) goes out in one LineOpBatch, flushed on
 *    process.nextTick, so a lone operation waits for nothing.
 *  - One long-lived stream per client, opened on the first operation and reopened after
 *    a failure. Results come back by id.
 *  - Operations in flight on a stream that had been answering when it broke are sent
 *    once more on a new stream once the channel is connected again (waiting at most
 *    RECONNECT_WAIT_MS; every line operation is idempotent: it sets or reads a value),
 *    then fail with the stream's error. A stream that fails before any answer
 *    (service unreachable) fails everything pending at once, as a unary call would; the
 *    next operation tries a new stream. Nothing waits forever.
 *  - Each operation has a deadline (the client's deadlineMs, checked every
 *    DEADLINE_TICK_MS); a late one fails with DEADLINE_EXCEEDED and its result, should it
 *    still come, is dropped.
 *  - A service without OpStream (UNIMPLEMENTED) is served with unary LineOp calls from
 *    then on.
 *  - Each successful result's line level as of the batch's seq (LineOpResult.level,
 *    LineOpResultBatch.seq; an agent that watches without echoes keeps its levels from
 *    them; docs/line-model.md) goes to onLevel before the operation settles, also when
 *    the result comes after the operation's deadline.
 */
import { ErrorCode, FabricError } from '../../common/src/errors.ts';
import type { LineOpItem, LineOpResultBatch } from '../../common/src/gen/gpiofabric/v1/linestate.ts';
import { DEADLINE_TICK_MS, type LineStateClient, type OpStreamHandle } from './client.ts';
import { fromStatusCode } from './grpc/status.ts';
import { MAX_OP_BATCH } from './store/validate.ts';

/** How long operations resent after a stream broke wait for the channel to reconnect. */
export const RECONNECT_WAIT_MS = 2000;

export interface OpStreamClientOptions {
  readonly client: LineStateClient;
  readonly chip: string;
  /** Per-operation deadline (default: the client's deadlineMs). */
  readonly deadlineMs?: number;
  /** Largest batch sent (default and at most MAX_OP_BATCH). */
  readonly maxBatch?: number;
  /** A stream failed and is reopened (metrics hook). */
  readonly onReconnect?: () => void;
  /** An operation on line `offset` succeeded: the line's level was `level` as of the chip's event `seq`. */
  readonly onLevel?: (offset: number, seq: bigint, level: 0 | 1) => void;
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

export class OpStreamClient {
  readonly #client: LineStateClient;
  readonly #chip: string;
  readonly #deadlineMs: number;
  readonly #maxBatch: number;
  readonly #onReconnect: (() => void) | undefined;
  readonly #onLevel: ((offset: number, seq: bigint, level: 0 | 1) => void) | undefined;
  readonly #log: (msg: string) => void;
  /** Offsets of sent operations whose deadline passed (their level may still come), by id. */
  readonly #late = new Map<number, number>();
  /** Not sent yet, in issue order. */
  #queue: PendingOp[] = [];
  /** Sent on the current stream, by id. */
  readonly #sent = new Map<number, PendingOp>();
  #stream: OpStreamHandle | undefined;
  #flushScheduled = false;
  #ticker: NodeJS.Timeout | undefined;
  /** Waiting for the channel after a working stream broke (flush waits too). */
  #reconnecting = false;
  /** The current stream has delivered results (it worked before it broke). */
  #answered = false;
  #nextId = 1;
  #unary = false;
  #closed = false;

  constructor(opts: OpStreamClientOptions) {
    this.#client = opts.client;
    this.#chip = opts.chip;
    this.#deadlineMs = opts.deadlineMs ?? opts.client.deadlineMs;
    this.#maxBatch = Math.max(1, Math.min(opts.maxBatch ?? MAX_OP_BATCH, MAX_OP_BATCH));
    this.#onReconnect = opts.onReconnect;
    this.#onLevel = opts.onLevel;
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
    clearInterval(this.#ticker);
    this.#ticker = undefined;
    const err = new FabricError(ErrorCode.UNAVAILABLE, `the operation stream of chip ${this.#chip} was closed`);
    const idle = this.#sent.size === 0;
    for (const p of [...this.#queue, ...this.#sent.values()]) this.#settle(p, err);
    this.#queue = [];
    this.#sent.clear();
    // nothing in flight: a half-close (the service ends the stream OK); else cancel it
    if (idle) this.#stream?.end();
    else this.#stream?.cancel();
    this.#stream = undefined;
  }

  #takeId(): number {
    for (;;) {
      const id = this.#nextId;
      this.#nextId = id >= 0xffff_ffff ? 1 : id + 1;
      if (this.#sent.has(id)) continue;
      this.#late.delete(id);
      return id;
    }
  }

  #flush(): void {
    this.#flushScheduled = false;
    if (this.#closed || this.#queue.length === 0 || this.#reconnecting) return;
    if (this.#unary) {
      this.#flushUnary();
      return;
    }
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
    this.#answered = true;
    const seq = this.#onLevel !== undefined && b.seq !== '0' && b.seq !== '' ? BigInt(b.seq) : 0n;
    for (const r of b.results) {
      const p = this.#sent.get(r.id);
      if (p === undefined) {
        // late (its deadline passed) or unknown: only the line's level still counts
        const offset = this.#late.get(r.id);
        this.#late.delete(r.id);
        if (offset !== undefined && r.code === 0) this.#level(offset, seq, r.level);
        continue;
      }
      this.#sent.delete(r.id);
      if (r.code === 0) this.#level(p.offset, seq, r.level);
      this.#settle(p, r.code === 0 ? r.value : fromStatusCode(r.code, r.message));
    }
  }

  /**
   * The stream failed. If it had answered before (a working stream that broke), what was
   * in flight on it is sent once more on a new stream at once; what was already resent
   * fails. If it never answered (the service is unreachable), everything pending fails
   * now with the stream's error, as a unary call would, and the next operation opens a
   * new stream.
   */
  #broken(handle: OpStreamHandle, err: FabricError, unimplemented: boolean): void {
    if (this.#stream !== handle || this.#closed) return;
    this.#stream = undefined;
    const answered = this.#answered;
    this.#answered = false;
    const inFlight = [...this.#sent.values()].sort((a, b) => a.id - b.id);
    this.#sent.clear();
    this.#late.clear();
    if (unimplemented) {
      // nothing was applied: the service does not know the method
      if (!this.#unary) this.#log(`chip ${this.#chip}: the line-state service at ${this.#client.address} has no OpStream; using unary LineOp`);
      this.#unary = true;
      this.#queue = [...inFlight, ...this.#queue];
      this.#flushUnary();
      return;
    }
    this.#onReconnect?.();
    if (!answered) {
      for (const p of [...inFlight, ...this.#queue]) this.#settle(p, err);
      this.#queue = [];
      return;
    }
    const again: PendingOp[] = [];
    for (const p of inFlight) {
      if (p.resent) this.#settle(p, err);
      else {
        p.resent = true;
        again.push(p);
      }
    }
    this.#queue = [...again, ...this.#queue];
    // Wait (boundedly) for the channel to connect again before the resend: right after a
    // reset grpc-js fails new calls at once while it backs off.
    this.#reconnecting = true;
    this.#client.waitForReady(RECONNECT_WAIT_MS).then(
      () => {
        this.#reconnecting = false;
        this.#flush();
      },
      () => {
        this.#reconnecting = false;
        for (const p of this.#queue) this.#settle(p, err);
        this.#queue = [];
      },
    );
  }

  #level(offset: number, seq: bigint, level: number): void {
    if (this.#onLevel === undefined || seq === 0n) return;
    try {
      this.#onLevel(offset, seq, level === 1 ? 1 : 0);
    } catch (e) {
      this.#log(`chip ${this.#chip}: level handler failed: ${(e as Error).message}`);
    }
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
    for (const [id, p] of this.#sent) {
      if (!late(p)) continue;
      this.#sent.delete(id);
      if (this.#late.size >= MAX_OP_BATCH) this.#late.clear(); // a service that stopped answering
      this.#late.set(id, p.offset);
    }
    if (this.#queue.length === 0 && this.#sent.size === 0) {
      clearInterval(this.#ticker);
      this.#ticker = undefined;
    }
  }
}
