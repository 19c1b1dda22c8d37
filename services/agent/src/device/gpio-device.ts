/**
 * The virtio-gpio device model: config space, the requestq (line operations forwarded to
 * a LineBackend) and the eventq (the interrupt state machine). Driven by the transport
 * through the VirtioDevice seam (../virtio/types.ts); see docs/device-model.md.
 *
 * Guarantees:
 *  - every well-formed request is answered exactly once, within requestDeadlineMs plus one
 *    event-loop turn, with the exact used length the Linux driver checks (2, or
 *    1 + gpio_names_size for GET_LINE_NAMES); backend failures and timeouts answer ERR;
 *  - same-line requests are answered in arrival order; different lines run in parallel;
 *  - nothing the guest sends makes a method throw: a malformed ring (pop() throwing
 *    VirtqueueError) marks the device broken and stops processing that queue.
 */
import { IrqType, Edge } from '../../../common/src/line-model.ts';
import type { Direction, Level } from '../../../common/src/line-model.ts';
import type { DescriptorChain, Virtqueue, VirtioDevice } from '../virtio/types.ts';
import type { LineBackend, LineEvent } from '../backend/line-backend.ts';
import {
  EventStatus,
  FeatureBit,
  QueueIndex,
  RequestType,
  Size,
  Status,
  checkRequest,
  encodeConfig,
  encodeEventResponse,
  encodeNamesBlock,
  encodeNamesResponse,
  encodeResponse,
  featureMask,
  isEdgeIrqType,
  isLevelIrqType,
  isRequestType,
  parseEventRequest,
  parseRequest,
  requestTypeName,
} from './virtio-gpio-protocol.ts';
import type { GpioRequest } from './virtio-gpio-protocol.ts';

/** Structured logger: message plus optional fields. */
export interface DeviceLogger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

/** A logger that drops everything. */
export const silentLogger: DeviceLogger = { debug() {}, info() {}, warn() {}, error() {} };

/**
 * How a requestq request ended: ok / err (answered ERR: bad input or backend failure) /
 * timeout (answered ERR after requestDeadlineMs) / dropped (no answer possible: the
 * writable part cannot hold a status byte, or the queue stopped meanwhile).
 */
export type RequestOutcome = 'ok' | 'err' | 'timeout' | 'dropped';

/**
 * Interrupt activity: valid (an eventq buffer completed VALID = a guest interrupt),
 * invalid (a buffer returned INVALID), latched (an edge stored while the line was masked).
 */
export type InterruptKind = 'valid' | 'invalid' | 'latched';

/** Optional metric callbacks. Exceptions thrown by hooks are swallowed. */
export interface GpioDeviceHooks {
  /** type = requestTypeName() ("GET_VALUE", ..., "UNKNOWN"); seconds from pop to answer. */
  onRequest?(type: string, outcome: RequestOutcome, seconds: number): void;
  onInterrupt?(kind: InterruptKind): void;
  /** A queue was marked broken (malformed ring); the device needs a reset. */
  onBroken?(queueIndex: number, reason: string): void;
  /**
   * A guest request got ERR because its backend call failed: `timedOut` when the
   * device's deadline expired first, else `error` is what the backend rejected with.
   */
  onBackendError?(type: string, error: unknown, timedOut: boolean): void;
  /**
   * A VALID eventq completion was caused by a line event whose (wall-clock) timestamp is
   * `eventTimestampNs`; for an edge latched while masked and reported on unmask, the
   * timestamp of the latched edge. Not called for level interrupts re-fired on unmask.
   */
  onEventInterrupt?(eventTimestampNs: bigint): void;
}

export interface GpioDeviceOptions {
  /** The chip's line state. Its ngpio and names are read once, at construction. */
  readonly backend: LineBackend;
  /** Upper bound for every backend call; on expiry the guest gets ERR. Default 2000. */
  readonly requestDeadlineMs?: number;
  readonly log?: DeviceLogger;
  readonly hooks?: GpioDeviceHooks;
}

/** Default requestDeadlineMs. */
export const DEFAULT_REQUEST_DEADLINE_MS = 2000;

/** A backend call did not settle within requestDeadlineMs. */
export class RequestDeadlineError extends Error {
  override readonly name = 'RequestDeadlineError';
}

/** A requestq chain handed to a line's sequence and not answered yet. */
interface InFlight {
  readonly chain: DescriptorChain;
  /** requestq generation the chain was popped in. */
  readonly generation: number;
  readonly typeName: string;
  readonly t0: number;
  done: boolean;
}

interface PendingBuffer {
  readonly chain: DescriptorChain;
  /** eventq generation the chain was popped in. */
  readonly generation: number;
}

interface IrqLine {
  type: IrqType;
  /** The queued eventq buffer (the line is unmasked while set). At most one. */
  pending: PendingBuffer | null;
  /** An edge arrived while enabled and masked. */
  latched: boolean;
  /** Timestamp (ns) of the latched edge, for onEventInterrupt. */
  latchedAtNs: bigint;
}

const EMPTY = new Uint8Array(0);

export class GpioDevice implements VirtioDevice {
  readonly deviceFeatures: bigint =
    featureMask(FeatureBit.VERSION_1) | featureMask(FeatureBit.GPIO_F_IRQ) | featureMask(FeatureBit.RING_INDIRECT_DESC) | featureMask(FeatureBit.RING_EVENT_IDX);
  readonly numQueues = 2;

  private readonly backend: LineBackend;
  private readonly ngpio: number;
  private readonly namesBlock: Uint8Array;
  private readonly configBytes: Uint8Array;
  private readonly deadlineMs: number;
  private readonly log: DeviceLogger;
  private readonly hooks: GpioDeviceHooks;

  private irqNegotiated = false;
  private readonly queues: [Virtqueue | undefined, Virtqueue | undefined] = [undefined, undefined];
  /** Bumped whenever a queue stops: completions of older generations are dropped. */
  private readonly generation: [number, number] = [0, 0];
  private readonly brokenReason: [string | null, string | null] = [null, null];
  private readonly continuation: [NodeJS.Immediate | undefined, NodeJS.Immediate | undefined] = [undefined, undefined];
  /** Per-line tail of the same-line request chain. */
  private readonly lineTail: Promise<void>[];
  private readonly irq: IrqLine[];
  private readonly inFlight = new Set<InFlight>();
  private readonly unsubscribe: () => void;
  private closed = false;

  constructor(options: GpioDeviceOptions) {
    this.backend = options.backend;
    this.ngpio = this.backend.ngpio;
    this.namesBlock = encodeNamesBlock(this.ngpio, this.backend.names);
    this.configBytes = encodeConfig({ ngpio: this.ngpio, gpioNamesSize: this.namesBlock.length });
    const deadline = options.requestDeadlineMs ?? DEFAULT_REQUEST_DEADLINE_MS;
    if (!Number.isFinite(deadline) || deadline <= 0) throw new RangeError(`requestDeadlineMs ${deadline} must be a positive number`);
    this.deadlineMs = deadline;
    this.log = options.log ?? silentLogger;
    this.hooks = options.hooks ?? {};
    this.lineTail = Array.from({ length: this.ngpio }, () => Promise.resolve());
    this.irq = Array.from({ length: this.ngpio }, () => ({ type: IrqType.NONE, pending: null, latched: false, latchedAtNs: 0n }));
    this.unsubscribe = this.backend.onEvent((e) => this.onLineEvent(e));
  }

  // ---- VirtioDevice ----

  config(): Uint8Array {
    return this.configBytes.slice();
  }

  setFeatures(features: bigint): void {
    this.irqNegotiated = (features & featureMask(FeatureBit.GPIO_F_IRQ)) !== 0n;
    this.log.debug('features set', { chip: this.backend.chip, features: `0x${features.toString(16)}`, irq: this.irqNegotiated });
  }

  startQueue(queue: Virtqueue): void {
    const i = queue.index;
    if (i !== QueueIndex.REQUESTQ && i !== QueueIndex.EVENTQ) {
      this.log.warn('ignoring a queue the device does not have', { chip: this.backend.chip, queue: i });
      return;
    }
    if (this.closed) return;
    if (this.queues[i] !== queue) {
      if (this.queues[i] !== undefined) this.dropQueue(i);
      this.queues[i] = queue;
      this.brokenReason[i] = null;
    }
    this.drain(i);
  }

  kick(index: number): void {
    if (index !== QueueIndex.REQUESTQ && index !== QueueIndex.EVENTQ) {
      this.log.warn('kick for a queue the device does not have', { chip: this.backend.chip, queue: index });
      return;
    }
    this.drain(index);
  }

  stopQueue(index: number): void {
    if (index !== QueueIndex.REQUESTQ && index !== QueueIndex.EVENTQ) return;
    this.dropQueue(index);
  }

  reset(): void {
    this.dropQueue(QueueIndex.REQUESTQ);
    this.dropQueue(QueueIndex.EVENTQ);
    this.irqNegotiated = false;
    this.brokenReason[0] = null;
    this.brokenReason[1] = null;
    for (const l of this.irq) {
      l.type = IrqType.NONE;
      l.latched = false;
      l.pending = null;
    }
  }

  // ---- extra surface ----

  /** Why the device is broken (first queue marked broken), or null. Cleared by reset(). */
  get broken(): string | null {
    return this.brokenReason[0] ?? this.brokenReason[1];
  }

  /** Whether F_IRQ was negotiated (the eventq exists). */
  get irqEnabled(): boolean {
    return this.irqNegotiated;
  }

  /** Interrupt state of a line, for listings and tests. */
  irqState(offset: number): { readonly type: IrqType; readonly unmasked: boolean; readonly latched: boolean } | undefined {
    const l = this.irq[offset];
    return l === undefined ? undefined : { type: l.type, unmasked: l.pending !== null, latched: l.latched };
  }

  /**
   * Give back everything popped from a queue and not yet completed, now: in-flight
   * requests are answered ERR (their backend results are then ignored), pending eventq
   * buffers are returned INVALID (latched edges are kept). For the transport to call while
   * the ring is still attached, before a stop after which the guest lives on (GET_VRING_BASE
   * for a VM pause or a device reset), because the reported ring base counts these chains
   * as consumed: without this the guest would wait for them forever. The Linux driver
   * re-queues an INVALID buffer of an enabled line, so no interrupt is lost.
   */
  flushQueue(index: number): void {
    try {
      if (index === QueueIndex.REQUESTQ) {
        for (const rec of [...this.inFlight]) this.answer(rec, Status.ERR, 0, 'err');
      } else if (index === QueueIndex.EVENTQ) {
        for (const l of this.irq) this.finishPending(l, EventStatus.INVALID);
      }
    } catch (e) {
      this.log.error('unexpected error flushing a queue', { chip: this.backend.chip, queue: index, error: String(e) });
    }
  }

  /** Detach from the backend and drop all queues (the backend itself stays open). */
  close(): void {
    if (this.closed) return;
    this.reset();
    this.closed = true;
    this.unsubscribe();
  }

  // ---- queues ----

  private dropQueue(i: 0 | 1): void {
    this.generation[i]++;
    this.queues[i] = undefined;
    const c = this.continuation[i];
    if (c !== undefined) clearImmediate(c);
    this.continuation[i] = undefined;
    if (i === QueueIndex.EVENTQ) for (const l of this.irq) l.pending = null;
    else {
      for (const rec of this.inFlight) {
        rec.done = true;
        this.recordRequest(rec.typeName, 'dropped', rec.t0);
      }
      this.inFlight.clear();
    }
  }

  private markBroken(i: 0 | 1, e: unknown): void {
    const reason = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    if (this.brokenReason[i] !== null) return;
    this.brokenReason[i] = reason;
    this.log.error('virtqueue is malformed; device marked broken (needs reset)', { chip: this.backend.chip, queue: i, reason });
    this.hook(() => this.hooks.onBroken?.(i, reason));
  }

  /** Pop and handle every available chain, at most one ring's worth per event-loop turn. */
  private drain(i: 0 | 1): void {
    try {
      const q = this.queues[i];
      if (q === undefined || this.brokenReason[i] !== null || this.closed) return;
      const budget = Math.max(1, q.size);
      for (let n = 0; ; n++) {
        if (n >= budget) {
          if (this.continuation[i] === undefined) {
            this.continuation[i] = setImmediate(() => {
              this.continuation[i] = undefined;
              if (this.queues[i] === q) this.drain(i);
            });
          }
          return;
        }
        let chain: DescriptorChain | null;
        try {
          chain = q.pop();
        } catch (e) {
          this.markBroken(i, e);
          return;
        }
        if (chain === null) return;
        if (i === QueueIndex.REQUESTQ) this.onRequestChain(chain);
        else this.onEventChain(chain);
        if (this.queues[i] !== q || this.brokenReason[i] !== null) return;
      }
    } catch (e) {
      // Defensive: nothing above should throw, but a kick must never crash the agent.
      this.log.error('unexpected error while processing a queue', { chip: this.backend.chip, queue: i, error: String(e) });
    }
  }

  /**
   * Write `data` into the chain, put it on the used ring with used length data.length and
   * notify. Dropped (false) when the queue stopped since the chain was popped.
   */
  private complete(i: 0 | 1, generation: number, chain: DescriptorChain, data: Uint8Array): boolean {
    const q = this.queues[i];
    if (this.generation[i] !== generation || q === undefined || this.brokenReason[i] !== null) return false;
    try {
      if (data.length > 0) chain.write(data);
      q.push(chain, data.length);
      q.notify();
      return true;
    } catch (e) {
      this.markBroken(i, e);
      return false;
    }
  }

  // ---- requestq ----

  private onRequestChain(chain: DescriptorChain): void {
    const generation = this.generation[0];
    const t0 = performance.now();
    const req = parseRequest(chain.readable);
    const typeName = req === null ? 'UNKNOWN' : requestTypeName(req.type);
    if (chain.writableLength === 0) {
      this.log.warn('request has no writable buffer; returned unanswered', { chip: this.backend.chip, head: chain.head, readable: chain.readable.length });
      this.complete(0, generation, chain, EMPTY);
      this.recordRequest(typeName, 'dropped', t0);
      return;
    }
    if (req === null) {
      this.log.warn('malformed request (readable part is not 8 bytes)', { chip: this.backend.chip, head: chain.head, readable: chain.readable.length });
      this.respond(generation, chain, typeName, Status.ERR, 0, 'err', t0);
      return;
    }
    if (req.type === RequestType.GET_LINE_NAMES) {
      this.answerNames(generation, chain, t0);
      return;
    }
    if (chain.writableLength < Size.RESPONSE) {
      // respond() writes the ERR status byte alone; the backend is not asked.
      this.respond(generation, chain, typeName, Status.ERR, 0, 'err', t0);
      return;
    }
    const problem = checkRequest(req, this.ngpio);
    if (problem !== null && (!isRequestType(req.type) || req.gpio >= this.ngpio)) {
      this.log.warn('bad request answered ERR', { chip: this.backend.chip, problem });
      this.respond(generation, chain, typeName, Status.ERR, 0, 'err', t0);
      return;
    }
    // Same line: sequential, in arrival order. Different lines: independent chains.
    const offset = req.gpio;
    const prev = this.lineTail[offset] ?? Promise.resolve();
    const rec: InFlight = { chain, generation, typeName, t0, done: false };
    this.inFlight.add(rec);
    this.lineTail[offset] = prev.then(() => this.execute(req, problem, rec));
  }

  private answerNames(generation: number, chain: DescriptorChain, t0: number): void {
    const need = 1 + this.namesBlock.length;
    if (chain.writableLength < need) {
      this.log.warn('GET_LINE_NAMES response buffer too small; answered ERR', { chip: this.backend.chip, writable: chain.writableLength, need });
      this.respond(generation, chain, 'GET_LINE_NAMES', Status.ERR, 0, 'err', t0);
      return;
    }
    const ok = this.complete(0, generation, chain, encodeNamesResponse(Status.OK, this.namesBlock));
    this.recordRequest('GET_LINE_NAMES', ok ? 'ok' : 'dropped', t0);
  }

  /** Answer with the 2-byte response (truncated to a 1-byte status if that is all there is). */
  private respond(generation: number, chain: DescriptorChain, typeName: string, status: Status, value: number, outcome: RequestOutcome, t0: number): void {
    let data = encodeResponse(status, value);
    if (chain.writableLength < Size.RESPONSE) {
      this.log.warn('response buffer shorter than 2 bytes; writing the status only', { chip: this.backend.chip, head: chain.head, writable: chain.writableLength });
      data = data.subarray(0, chain.writableLength);
    }
    const ok = this.complete(0, generation, chain, data);
    this.recordRequest(typeName, ok ? outcome : 'dropped', t0);
  }

  /** Run one validated-gpio request; never rejects. */
  /** Answer an in-flight request once (a later answer for it is ignored). */
  private answer(rec: InFlight, status: Status, value: number, outcome: RequestOutcome): void {
    if (rec.done) return;
    rec.done = true;
    this.inFlight.delete(rec);
    this.respond(rec.generation, rec.chain, rec.typeName, status, value, outcome, rec.t0);
  }

  private async execute(req: GpioRequest, problem: string | null, rec: InFlight): Promise<void> {
    const typeName = rec.typeName;
    try {
      if (rec.done) return; // answered by flushQueue() while it waited for its turn
      if (problem !== null) {
        this.log.warn('bad request answered ERR', { chip: this.backend.chip, problem });
        this.answer(rec, Status.ERR, 0, 'err');
        return;
      }
      if (req.type === RequestType.SET_IRQ_TYPE && !this.irqNegotiated) {
        this.log.warn('SET_IRQ_TYPE without F_IRQ answered ERR', { chip: this.backend.chip, gpio: req.gpio });
        this.answer(rec, Status.ERR, 0, 'err');
        return;
      }
      let value = 0;
      try {
        // The deadline counts from the request's arrival, not from its turn on the line:
        // a request queued behind slow same-line requests gets only what is left of it.
        const left = this.deadlineMs - (performance.now() - rec.t0);
        if (left <= 0) throw new RequestDeadlineError(`${typeName} gpio ${req.gpio}: waited ${this.deadlineMs} ms behind earlier requests on the line`);
        value = await this.callBackend(req, left);
      } catch (e) {
        const timeout = e instanceof RequestDeadlineError;
        this.log.warn(timeout ? 'backend call timed out; answered ERR' : 'backend call failed; answered ERR', {
          chip: this.backend.chip,
          type: typeName,
          gpio: req.gpio,
          error: e instanceof Error ? `${e.name}: ${e.message}` : String(e),
        });
        this.hook(() => this.hooks.onBackendError?.(typeName, e, timeout));
        this.answer(rec, Status.ERR, 0, timeout ? 'timeout' : 'err');
        return;
      }
      if (rec.done) return; // answered by flushQueue() meanwhile: the result is ignored
      if (req.type === RequestType.SET_IRQ_TYPE) {
        // Pushes a pending buffer INVALID (on NONE) before the response below is pushed.
        this.applyIrqType(req.gpio, req.value as IrqType);
      }
      this.answer(rec, Status.OK, value, 'ok');
    } catch (e) {
      this.log.error('unexpected error handling a request', { chip: this.backend.chip, error: String(e) });
    }
  }

  /** The backend call for a request, raced against the deadline. Resolves the response value. */
  private callBackend(req: GpioRequest, timeoutMs: number): Promise<number> {
    const b = this.backend;
    const offset = req.gpio;
    let op: Promise<number>;
    try {
      switch (req.type) {
        case RequestType.GET_DIRECTION:
          op = b.getDirection(offset).then((d) => d as number);
          break;
        case RequestType.SET_DIRECTION:
          op = b.setDirection(offset, req.value as Direction).then(() => 0);
          break;
        case RequestType.GET_VALUE:
          op = b.getValue(offset).then((v) => v as number);
          break;
        case RequestType.SET_VALUE:
          op = b.setValue(offset, req.value as Level).then(() => 0);
          break;
        case RequestType.SET_IRQ_TYPE:
          op = b.setIrqType(offset, req.value as IrqType).then(() => 0);
          break;
        default:
          return Promise.reject(new Error(`request type ${req.type} has no backend call`));
      }
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new RequestDeadlineError(`${requestTypeName(req.type)} gpio ${offset}: no backend answer within ${this.deadlineMs} ms`)), timeoutMs);
      op.then(
        (v) => {
          clearTimeout(timer);
          if (!Number.isInteger(v) || v < 0 || v > 0xff) reject(new Error(`backend returned ${String(v)} for ${requestTypeName(req.type)}`));
          else resolve(v);
        },
        (e: unknown) => {
          clearTimeout(timer);
          reject(e);
        },
      );
    });
  }

  private recordRequest(typeName: string, outcome: RequestOutcome, t0: number): void {
    const seconds = (performance.now() - t0) / 1000;
    this.hook(() => this.hooks.onRequest?.(typeName, outcome, seconds));
  }

  // ---- eventq and interrupts ----

  private onEventChain(chain: DescriptorChain): void {
    const generation = this.generation[1];
    if (chain.writableLength < Size.EVENT_RESPONSE) {
      this.log.warn('eventq buffer has no writable status byte; returned unanswered', { chip: this.backend.chip, head: chain.head });
      this.complete(1, generation, chain, EMPTY);
      return;
    }
    const gpio = parseEventRequest(chain.readable);
    if (gpio === null || gpio >= this.ngpio) {
      this.log.warn('malformed eventq buffer returned INVALID', { chip: this.backend.chip, readable: chain.readable.length, gpio });
      this.completeEvent(generation, chain, EventStatus.INVALID);
      return;
    }
    const line = this.irq[gpio];
    if (line === undefined) return;
    if (line.type === IrqType.NONE) {
      this.log.debug('eventq buffer for a disabled line returned INVALID', { chip: this.backend.chip, gpio });
      this.completeEvent(generation, chain, EventStatus.INVALID);
      return;
    }
    if (line.pending !== null) {
      this.log.warn('second eventq buffer for a line returned INVALID (driver queued two)', { chip: this.backend.chip, gpio });
      this.completeEvent(generation, chain, EventStatus.INVALID);
      return;
    }
    line.pending = { chain, generation };
    this.fireIfReady(gpio, line);
  }

  /** Complete an eventq chain; `causeNs` = timestamp of the line event behind a VALID one. */
  private completeEvent(generation: number, chain: DescriptorChain, status: EventStatus, causeNs?: bigint): void {
    if (this.complete(1, generation, chain, encodeEventResponse(status))) {
      this.hook(() => this.hooks.onInterrupt?.(status === EventStatus.VALID ? 'valid' : 'invalid'));
      if (causeNs !== undefined) this.hook(() => this.hooks.onEventInterrupt?.(causeNs));
    }
  }

  /** Complete the line's pending buffer with `status` (masking the line). */
  private finishPending(line: IrqLine, status: EventStatus, causeNs?: bigint): void {
    const p = line.pending;
    if (p === null) return;
    line.pending = null;
    this.completeEvent(p.generation, p.chain, status, causeNs);
  }

  /** On unmask / enable: report a latched edge, or an active level. */
  private fireIfReady(offset: number, line: IrqLine): void {
    if (line.pending === null || line.type === IrqType.NONE) return;
    if (isEdgeIrqType(line.type)) {
      if (line.latched) {
        line.latched = false;
        this.finishPending(line, EventStatus.VALID, line.latchedAtNs);
      }
    } else if (isLevelIrqType(line.type)) {
      const level = this.backend.levels()[offset];
      if (level !== undefined && levelActive(line.type, level)) this.finishPending(line, EventStatus.VALID);
    }
  }

  private applyIrqType(offset: number, type: IrqType): void {
    const line = this.irq[offset];
    if (line === undefined) return;
    if (type === IrqType.NONE) {
      line.latched = false;
      line.type = IrqType.NONE;
      this.finishPending(line, EventStatus.INVALID);
      return;
    }
    if (line.type === type) return;
    // Enable, or a type change without NONE in between (Linux does this): the latch
    // restarts at the new enable; a pending buffer stays queued.
    line.latched = false;
    line.type = type;
    this.fireIfReady(offset, line);
  }

  private onLineEvent(e: LineEvent): void {
    try {
      const line = this.irq[e.offset];
      if (line === undefined || line.type === IrqType.NONE) return;
      if (isEdgeIrqType(line.type)) {
        const wanted =
          (e.edge === Edge.RISING && (line.type & IrqType.EDGE_RISING) !== 0) || (e.edge === Edge.FALLING && (line.type & IrqType.EDGE_FALLING) !== 0);
        if (!wanted) return;
        if (line.pending !== null) this.finishPending(line, EventStatus.VALID, e.timestampNs);
        else if (!line.latched) {
          line.latched = true;
          line.latchedAtNs = e.timestampNs;
          this.hook(() => this.hooks.onInterrupt?.('latched'));
        }
      } else if (isLevelIrqType(line.type)) {
        if (line.pending !== null && levelActive(line.type, e.level)) this.finishPending(line, EventStatus.VALID, e.timestampNs);
      }
    } catch (err) {
      this.log.error('unexpected error delivering a line event', { chip: this.backend.chip, error: String(err) });
    }
  }

  private hook(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.log.warn('metrics hook threw', { chip: this.backend.chip, error: String(e) });
    }
  }
}

function levelActive(type: IrqType, level: Level): boolean {
  return type === IrqType.LEVEL_HIGH ? level === 1 : type === IrqType.LEVEL_LOW ? level === 0 : false;
}
