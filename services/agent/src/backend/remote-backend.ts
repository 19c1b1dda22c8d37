/**
 * The remote line backend: the chip's lines live in the line-state service (and so in
 * Redis). The backend
 *  - registers the chip under a lease and renews it (ttl/3); on a lost registration
 *    (service restarted on the memory store, lease taken over after expiry, stale token)
 *    it re-registers in the background;
 *  - forwards line operations on one OpStream (OpStreamClient: the operations of one
 *    event-loop turn go out as one batch carrying the fencing token; unary LineOp when
 *    the service has no OpStream), each with the client's deadline;
 *  - consumes the chip's event stream (WatchEventBatches; WatchEvents from a service
 *    without it) from a cursor (the newest seq it has seen) and,
 *    after any stream failure, reconnects with backoff and resumes from that cursor, so
 *    no interrupt is missed and none is delivered twice (events with seq <= cursor are
 *    dropped);
 *  - asks the stream to leave out echoes (the changes its own operations make to lines
 *    with no interrupt armed; docs/line-model.md): every operation's result carries its
 *    line's level as of a chip seq, and levels() takes, per line, whichever of result and
 *    event is newer. The stream counts the echoes it left out, so seqs still show a gap.
 *
 * While the service is unreachable, operations fail fast (UNAVAILABLE or the deadline)
 * and the device answers the guest ERR; nothing waits forever.
 */
import { ErrorCode, FabricError, isFabricError } from '../../../common/src/errors.ts';
import { Edge, type Direction, type IrqType, type Level } from '../../../common/src/line-model.ts';
import type { LineEvent as ProtoLineEvent, LineState, RegisterChipResponse } from '../../../common/src/gen/gpiofabric/v1/linestate.ts';
import type { LineStateClient, WatchHandle } from '../../../linestate/src/client.ts';
import { OpStreamClient } from '../../../linestate/src/op-stream.ts';
import { BackendClosedError, BackendError, toBackendError, type LineBackend, type LineEvent, type LineEventListener } from './line-backend.ts';

/** LineOpType numbers (equal to virtio-gpio request types). */
const Op = { GET_DIRECTION: 2, SET_DIRECTION: 3, GET_VALUE: 4, SET_VALUE: 5, SET_IRQ_TYPE: 6 } as const;
type Op = (typeof Op)[keyof typeof Op];

export interface RemoteBackendLog {
  info(msg: string): void;
  warn(msg: string): void;
}

export interface RemoteBackendOptions {
  readonly client: LineStateClient;
  readonly chip: string;
  readonly ngpio: number;
  readonly names?: readonly string[];
  /** Shown in listings as the lease owner (e.g. "host/pid"). */
  readonly owner: string;
  /** Lease time to live requested from the service (0 = service default). */
  readonly leaseTtlMs?: number;
  /** How long start() waits for the first registration before serving ERR meanwhile. */
  readonly startTimeoutMs?: number;
  readonly log?: RemoteBackendLog;
  /** Hooks for metrics. */
  readonly onReconnect?: (what: 'register' | 'stream' | 'ops') => void;
  /** Hook for metrics: a new event (not a duplicate) arrived on the stream; its timestamp. */
  readonly onEventReceived?: (timestampNs: bigint) => void;
}

const quiet: RemoteBackendLog = { info: () => {}, warn: () => {} };

/** Exponential backoff bounded at 2 s. */
const backoff = (attempt: number): number => Math.min(2000, 50 * 2 ** Math.min(attempt, 6));

export class RemoteBackend implements LineBackend {
  readonly chip: string;
  readonly ngpio: number;
  readonly names: readonly string[];

  readonly #client: LineStateClient;
  readonly #owner: string;
  readonly #ttlRequested: number;
  readonly #startTimeoutMs: number;
  readonly #log: RemoteBackendLog;
  readonly #onReconnect: ((what: 'register' | 'stream' | 'ops') => void) | undefined;
  readonly #ops: OpStreamClient;
  readonly #onEventReceived: ((timestampNs: bigint) => void) | undefined;
  readonly #levels: Level[];
  /** Per line: the chip seq its entry in #levels is as of (an event's, or an operation result's). */
  readonly #levelSeq: bigint[];
  readonly #listeners = new Set<LineEventListener>();

  #token: bigint | undefined;
  #cursor = 0n;
  #echoesSkipped = 0n;
  #closed = false;
  #started = false;
  #registering: Promise<void> | undefined;
  #renewTimer: NodeJS.Timeout | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #watch: WatchHandle | undefined;
  /** The service has no WatchEventBatches (UNIMPLEMENTED once): use WatchEvents. */
  #plainEvents = false;
  #streamAttempt = 0;
  /** The cursor at which a seq jump was last re-read (one replay attempt per gap). */
  #gapAt = -1n;

  constructor(opts: RemoteBackendOptions) {
    this.#client = opts.client;
    this.chip = opts.chip;
    this.ngpio = opts.ngpio;
    this.names = opts.names ?? [];
    this.#owner = opts.owner;
    this.#ttlRequested = opts.leaseTtlMs ?? 0;
    this.#startTimeoutMs = opts.startTimeoutMs ?? 5000;
    this.#log = opts.log ?? quiet;
    this.#onReconnect = opts.onReconnect;
    this.#onEventReceived = opts.onEventReceived;
    this.#levels = new Array<Level>(opts.ngpio).fill(0);
    this.#levelSeq = new Array<bigint>(opts.ngpio).fill(0n);
    this.#ops = new OpStreamClient({
      client: opts.client, chip: opts.chip, onReconnect: () => this.#onReconnect?.('ops'), log: (m) => this.#log.warn(m),
      onLevel: (offset, seq, level) => this.#setLevel(offset, seq, level),
    });
  }

  /** The fencing token of the current lease (undefined while unregistered). */
  get leaseToken(): bigint | undefined {
    return this.#token;
  }

  /** The newest event seq seen (the resume cursor). */
  get cursor(): bigint {
    return this.#cursor;
  }

  /**
   * How many echoes (docs/line-model.md) the event stream has reported as left out so far:
   * with the events delivered, they account for every seq up to the cursor.
   */
  get echoesSkipped(): bigint {
    return this.#echoesSkipped;
  }

  async start(): Promise<void> {
    if (this.#started) throw new BackendError(`backend for ${this.chip} already started`);
    this.#started = true;
    const first = this.#ensureRegistered();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.#startTimeoutMs);
    });
    try {
      const r = await Promise.race([first.then(() => 'ok' as const), timeout]);
      if (r === 'timeout') {
        this.#log.warn(`chip ${this.chip}: not registered with the line-state service at ${this.#client.address} after ${this.#startTimeoutMs} ms; serving ERR until it is`);
      }
    } finally {
      clearTimeout(timer);
    }
  }

  levels(): readonly Level[] {
    return this.#levels;
  }

  onEvent(listener: LineEventListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async getDirection(offset: number): Promise<Direction> {
    return (await this.#op(Op.GET_DIRECTION, offset, 0)) as Direction;
  }

  async setDirection(offset: number, direction: Direction): Promise<void> {
    await this.#op(Op.SET_DIRECTION, offset, direction);
  }

  async getValue(offset: number): Promise<Level> {
    return (await this.#op(Op.GET_VALUE, offset, 0)) === 1 ? 1 : 0;
  }

  async setValue(offset: number, value: Level): Promise<void> {
    await this.#op(Op.SET_VALUE, offset, value);
  }

  async setIrqType(offset: number, type: IrqType): Promise<void> {
    await this.#op(Op.SET_IRQ_TYPE, offset, type);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#renewTimer);
    clearTimeout(this.#retryTimer);
    this.#watch?.cancel();
    this.#watch = undefined;
    this.#listeners.clear();
    this.#ops.close();
    const token = this.#token;
    this.#token = undefined;
    if (token !== undefined) {
      // Release the lease so a restarted agent gets the chip back at once.
      try {
        await this.#client.releaseChip({ chip: this.chip, leaseToken: token.toString() });
      } catch (e) {
        this.#log.warn(`chip ${this.chip}: could not release the lease: ${(e as Error).message}`);
      }
    }
  }

  async #op(op: Op, offset: number, value: number): Promise<number> {
    if (this.#closed) throw new BackendClosedError(`backend for ${this.chip} is closed`);
    const token = this.#token;
    if (token === undefined) {
      void this.#ensureRegistered().catch(() => {});
      throw new BackendError(`chip ${this.chip} is not registered with the line-state service (yet)`);
    }
    try {
      return await this.#ops.call(token, op, offset, value);
    } catch (e) {
      if (isFabricError(e) && (e.code === ErrorCode.NOT_FOUND || e.code === ErrorCode.FAILED_PRECONDITION) && /chip|lease/i.test(e.message)) {
        // The service lost our chip (memory store restarted) or our lease (taken over):
        // register again in the background; this request fails.
        if (this.#token === token) this.#token = undefined;
        void this.#ensureRegistered().catch(() => {});
      }
      throw toBackendError(e, `${this.chip}: line op ${op} on line ${offset}`);
    }
  }

  /** Single-flight registration loop: resolves once registered (or closed). */
  #ensureRegistered(): Promise<void> {
    if (this.#token !== undefined) return Promise.resolve();
    if (this.#registering !== undefined) return this.#registering;
    this.#registering = (async () => {
      for (let attempt = 0; !this.#closed; attempt++) {
        try {
          const res = await this.#client.registerChip({
            chip: this.chip,
            ngpio: this.ngpio,
            names: [...this.names],
            owner: this.#owner,
            leaseTtlMs: this.#ttlRequested,
          });
          if (this.#closed) {
            await this.#client.releaseChip({ chip: this.chip, leaseToken: res.leaseToken }).catch(() => {});
            return;
          }
          this.#registered(res);
          return;
        } catch (e) {
          if (attempt > 0) this.#onReconnect?.('register');
          const msg = e instanceof Error ? e.message : String(e);
          if (attempt === 0 || attempt % 20 === 0) this.#log.warn(`chip ${this.chip}: registration failed (${msg}); retrying`);
          if (isFabricError(e) && (e.code === ErrorCode.INVALID_ARGUMENT || e.code === ErrorCode.PERMISSION_DENIED)) {
            // A configuration error (bad names, ngpio out of range, a client certificate
            // whose identity does not cover this chip): retrying cannot help.
            throw new FabricError(e.code, `chip ${this.chip}: ${e.message}`, { cause: e });
          }
          await new Promise<void>((resolve) => {
            this.#retryTimer = setTimeout(resolve, backoff(attempt));
          });
        }
      }
    })().finally(() => {
      this.#registering = undefined;
    });
    return this.#registering;
  }

  #registered(res: RegisterChipResponse): void {
    this.#token = BigInt(res.leaseToken);
    const ttl = res.leaseTtlMs > 0 ? res.leaseTtlMs : 10_000;
    this.#log.info(`chip ${this.chip}: registered (lease token ${res.leaseToken}${res.restored ? ', state restored' : ''}${res.tookOver ? ', took over an expired lease' : ''})`);
    // Levels of the persisted state. Changes between this snapshot and the stream's
    // start are covered by resuming the stream from the chip's last seq.
    this.#applySnapshot(res.lines, BigInt(res.chip?.lastSeq ?? '0'));
    this.#scheduleRenew(ttl);
    this.#openStream();
  }

  #applySnapshot(lines: readonly LineState[], lastSeq: bigint): void {
    const first = this.#cursor === 0n;
    if (!first && lastSeq >= this.#cursor) {
      // A re-registration with the history intact: the stream resumes from our cursor
      // and replays every change we missed, so the snapshot is not needed.
      return;
    }
    // First registration (levels = persisted state), or the service's history restarted
    // (memory store lost): take the snapshot and resume from the service's newest event.
    // After a restart, level changes we could not see are reported as one event per
    // changed line so edge interrupts are not silently lost.
    const changed: LineEvent[] = [];
    this.#levelSeq.fill(lastSeq);
    for (const l of lines) {
      if (l.offset >= this.ngpio) continue;
      const level: Level = l.level === 1 ? 1 : 0;
      if (this.#levels[l.offset] === level) continue;
      this.#levels[l.offset] = level;
      if (!first) changed.push({ offset: l.offset, level, edge: level === 1 ? Edge.RISING : Edge.FALLING, seq: lastSeq, timestampNs: BigInt(Date.now()) * 1_000_000n });
    }
    this.#cursor = lastSeq;
    for (const e of changed) this.#emit(e);
  }

  #scheduleRenew(ttlMs: number): void {
    clearTimeout(this.#renewTimer);
    if (this.#closed) return;
    this.#renewTimer = setTimeout(() => {
      const token = this.#token;
      if (token === undefined || this.#closed) return;
      this.#client.renewLease({ chip: this.chip, leaseToken: token.toString() }).then(
        () => this.#scheduleRenew(ttlMs),
        (e: unknown) => {
          const msg = e instanceof Error ? e.message : String(e);
          if (isFabricError(e) && (e.code === ErrorCode.FAILED_PRECONDITION || e.code === ErrorCode.NOT_FOUND)) {
            this.#log.warn(`chip ${this.chip}: lease lost (${msg}); registering again`);
            if (this.#token === token) this.#token = undefined;
            void this.#ensureRegistered().catch(() => {});
          } else {
            // Service unreachable: keep the token (nobody else can take it before expiry)
            // and try again soon.
            this.#scheduleRenew(Math.max(600, ttlMs / 3));
          }
        },
      );
    }, Math.max(100, Math.floor(ttlMs / 3)));
  }

  #openStream(): void {
    this.#watch?.cancel();
    this.#watch = undefined;
    if (this.#closed) return;
    const req = { chips: [this.chip], fromSeq: this.#cursor.toString(), omitEchoes: true };
    const ended = (): void => this.#streamFailed(handle, new FabricError(ErrorCode.UNAVAILABLE, 'event stream ended by the service'));
    const handle: WatchHandle = this.#plainEvents
      ? this.#client.watchEvents(req, (e) => this.#onStreamEvents([e]), (err) => this.#streamFailed(handle, err), ended)
      : this.#client.watchEventBatches(req, (es) => this.#onStreamEvents(es), (err, unimplemented) => {
        if (unimplemented && this.#watch === handle) {
          // an older service: one message per event then
          this.#log.info(`chip ${this.chip}: the line-state service has no WatchEventBatches; using WatchEvents`);
          this.#plainEvents = true;
          this.#watch = undefined;
          this.#openStream();
          return;
        }
        this.#streamFailed(handle, err);
      }, ended);
    this.#watch = handle;
  }

  #streamFailed(handle: WatchHandle, err: FabricError): void {
    if (this.#closed || this.#watch !== handle) return;
    this.#watch = undefined;
    this.#onReconnect?.('stream');
    const attempt = this.#streamAttempt++;
    if (attempt === 0 || attempt % 20 === 0) this.#log.warn(`chip ${this.chip}: event stream failed (${err.message}); resuming from seq ${this.#cursor}`);
    if (err.code === ErrorCode.OUT_OF_RANGE || err.code === ErrorCode.NOT_FOUND) {
      // Our cursor is ahead of the service's history (memory store restarted) or the
      // chip is gone: register again, which resets the cursor from the service.
      this.#token = undefined;
      void this.#ensureRegistered().catch(() => {});
      return;
    }
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.#openStream(), backoff(attempt));
  }

  #onStreamEvents(es: readonly ProtoLineEvent[]): void {
    this.#streamAttempt = 0;
    for (const e of es) {
      // a re-read reopened the stream: the rest of this batch is replayed by the new one
      const watch = this.#watch;
      this.#onStreamEvent(e);
      if (this.#watch !== watch) return;
    }
  }

  #onStreamEvent(e: ProtoLineEvent): void {
    const seq = BigInt(e.seq);
    if (seq <= this.#cursor) return; // already delivered
    // the echoes the stream left out just before this event follow on from the cursor
    const first = seq - BigInt(e.echoesBefore);
    if (first > this.#cursor + 1n && this.#cursor > 0n && this.#gapAt !== this.#cursor) {
      // Per-chip seqs are consecutive: a jump means the live path skipped events (e.g. a
      // replica's Redis subscriber reconnected and could not read what it missed). Resume
      // from our cursor once, so the service replays them from the chip's stream. If the
      // replay still starts past the cursor, the events are gone (retention): accept it.
      this.#gapAt = this.#cursor;
      this.#log.warn(`chip ${this.chip}: event seq jumped from ${this.#cursor} to ${seq}; re-reading from the cursor`);
      this.#onReconnect?.('stream');
      this.#openStream();
      return;
    }
    if (first > this.#cursor + 1n && this.#cursor > 0n) {
      this.#log.warn(`chip ${this.chip}: events ${this.#cursor + 1n}..${first - 1n} are no longer kept by the service; continuing from ${seq}`);
    }
    this.#echoesSkipped += seq - (first > this.#cursor ? first : this.#cursor + 1n);
    this.#cursor = seq;
    if (this.#onEventReceived !== undefined) {
      try {
        this.#onEventReceived(BigInt(e.timestampNs));
      } catch {
        // a metrics hook never affects delivery
      }
    }
    if (e.offset >= this.ngpio) return;
    const level: Level = e.level === 1 ? 1 : 0;
    this.#setLevel(e.offset, seq, level);
    const edge = e.edge === Edge.RISING || e.edge === Edge.FALLING ? e.edge : Edge.NONE;
    this.#emit({ offset: e.offset, level, edge, seq, timestampNs: BigInt(e.timestampNs) });
  }

  /** The level of line `offset` as of chip seq `seq`, unless it is known as of a newer one. */
  #setLevel(offset: number, seq: bigint, level: Level): void {
    const known = this.#levelSeq[offset];
    if (known === undefined || seq < known) return;
    this.#levelSeq[offset] = seq;
    this.#levels[offset] = level;
  }

  #emit(e: LineEvent): void {
    for (const l of this.#listeners) {
      try {
        l(e);
      } catch (err) {
        this.#log.warn(`chip ${this.chip}: event listener failed: ${(err as Error).message}`);
      }
    }
  }
}
