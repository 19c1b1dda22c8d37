/**
 * The device agent's Prometheus series (docs/metrics.md, "Device agent"). One
 * AgentMetrics per registry (agentMetrics(registry) returns the same object for the same
 * registry), shared by every agent of the process; `forChip(chip)` precreates the
 * labelled children of one chip so the hot paths only call inc()/observe().
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { ErrorCode, isFabricError } from '../../common/src/errors.ts';
import { DURATION_BUCKETS, secondsSince, secondsSinceEpochNs } from '../../common/src/metrics.ts';
import type { Direction, IrqType, Level } from '../../common/src/line-model.ts';
import type { LineBackend } from './backend/line-backend.ts';
import type { GpioDeviceHooks, InterruptKind, RequestOutcome } from './device/gpio-device.ts';

/** Request type label values (requestTypeName() results). */
export const REQUEST_TYPES = ['GET_LINE_NAMES', 'GET_DIRECTION', 'SET_DIRECTION', 'GET_VALUE', 'SET_VALUE', 'SET_IRQ_TYPE', 'UNKNOWN'] as const;
/** Request outcome label values. */
export const REQUEST_OUTCOMES = ['ok', 'err', 'timeout', 'dropped'] as const satisfies readonly RequestOutcome[];
/** Interrupt outcome label values. */
export const INTERRUPT_OUTCOMES = ['delivered', 'latched', 'invalid'] as const;
/** Backend operation label values. */
export const BACKEND_OPS = ['GET_DIRECTION', 'SET_DIRECTION', 'GET_VALUE', 'SET_VALUE', 'SET_IRQ_TYPE'] as const;
/** Reconnect label values. */
export const RECONNECT_WHAT = ['register', 'stream', 'ops'] as const;
export type ReconnectWhat = (typeof RECONNECT_WHAT)[number];
/** Error cause label values. */
export const AGENT_ERROR_CAUSES = ['device_broken', 'backend', 'deadline', 'protocol'] as const;

type BackendOp = (typeof BACKEND_OPS)[number];
type ErrorCause = (typeof AGENT_ERROR_CAUSES)[number];

interface Inc {
  inc(value?: number): void;
}
interface Observe {
  observe(value: number): void;
}

/** The metric callbacks of one chip. */
export interface ChipMetrics {
  readonly chip: string;
  /** Hooks for the chip's GpioDevice. */
  readonly deviceHooks: GpioDeviceHooks;
  /** RemoteBackend onReconnect. */
  onReconnect(what: ReconnectWhat): void;
  /** RemoteBackend onEventReceived: event stream lag. */
  onEventReceived(timestampNs: bigint): void;
  /** vhost-user front-end connected / gone. */
  setFrontendConnected(connected: boolean): void;
  /** The vhost-user connection failed (framing or socket error). */
  onProtocolError(): void;
  /** A LineBackend that times every operation into backend_duration_seconds. */
  instrumentBackend(backend: LineBackend): LineBackend;
  /** Drop this chip's series (the agent stopped). */
  remove(): void;
}

/** Every device-agent series of one registry. */
export class AgentMetrics {
  readonly requests: Counter<'chip' | 'type' | 'outcome'>;
  readonly requestDuration: Histogram<'chip' | 'type'>;
  readonly interrupts: Counter<'chip' | 'outcome'>;
  readonly irqPropagation: Histogram<'chip'>;
  readonly eventLag: Histogram<'chip'>;
  readonly backendDuration: Histogram<'chip' | 'op'>;
  readonly reconnects: Counter<'chip' | 'what'>;
  readonly frontendConnected: Gauge<'chip'>;
  readonly errors: Counter<'chip' | 'cause'>;
  readonly #chips = new Map<string, number>();

  constructor(registry: Registry) {
    const registers = [registry];
    const buckets = [...DURATION_BUCKETS];
    this.requests = new Counter({ name: 'gpiofabric_agent_requests_total', help: 'Guest requestq messages by virtio-gpio type and outcome.', labelNames: ['chip', 'type', 'outcome'], registers });
    this.requestDuration = new Histogram({ name: 'gpiofabric_agent_request_duration_seconds', help: 'Guest request: popped from the requestq to response on the used ring.', labelNames: ['chip', 'type'], buckets, registers });
    this.interrupts = new Counter({ name: 'gpiofabric_agent_interrupts_total', help: 'eventq activity: delivered (VALID), latched (edge while masked), invalid (buffer returned INVALID).', labelNames: ['chip', 'outcome'], registers });
    this.irqPropagation = new Histogram({ name: 'gpiofabric_agent_irq_propagation_seconds', help: 'Event timestamp (level change in the fabric) to VALID eventq completion on this agent.', labelNames: ['chip'], buckets, registers });
    this.eventLag = new Histogram({ name: 'gpiofabric_agent_event_lag_seconds', help: 'Event timestamp to event received by the agent (event stream lag).', labelNames: ['chip'], buckets, registers });
    this.backendDuration = new Histogram({ name: 'gpiofabric_agent_backend_duration_seconds', help: 'One line backend call (remote: the gRPC round trip).', labelNames: ['chip', 'op'], buckets, registers });
    this.reconnects = new Counter({ name: 'gpiofabric_agent_reconnects_total', help: 'Registration retries (register), event stream resumptions (stream) and operation stream reopens (ops).', labelNames: ['chip', 'what'], registers });
    this.frontendConnected = new Gauge({ name: 'gpiofabric_agent_frontend_connected', help: '1 while a vhost-user front-end (QEMU) is connected.', labelNames: ['chip'], registers });
    this.errors = new Counter({ name: 'gpiofabric_agent_errors_total', help: 'Agent errors by cause: device_broken, backend, deadline, protocol.', labelNames: ['chip', 'cause'], registers });
  }

  /** Precreate one chip's series (all at 0) and return its callbacks. */
  forChip(chip: string): ChipMetrics {
    this.#chips.set(chip, (this.#chips.get(chip) ?? 0) + 1);
    /** type → outcome → counter child (no string building per request). */
    const reqCounters = new Map<string, Map<string, Inc>>();
    const reqDurations = new Map<string, Observe>();
    for (const type of REQUEST_TYPES) {
      const byOutcome = new Map<string, Inc>();
      for (const outcome of REQUEST_OUTCOMES) {
        const c = this.requests.labels({ chip, type, outcome });
        c.inc(0);
        byOutcome.set(outcome, c);
      }
      reqCounters.set(type, byOutcome);
      this.requestDuration.zero({ chip, type });
      reqDurations.set(type, this.requestDuration.labels({ chip, type }));
    }
    const interrupt = (outcome: (typeof INTERRUPT_OUTCOMES)[number]): Inc => {
      const c = this.interrupts.labels({ chip, outcome });
      c.inc(0);
      return c;
    };
    const delivered = interrupt('delivered');
    const latched = interrupt('latched');
    const invalid = interrupt('invalid');
    this.irqPropagation.zero({ chip });
    const propagation = this.irqPropagation.labels({ chip });
    this.eventLag.zero({ chip });
    const lag = this.eventLag.labels({ chip });
    const backendOps = new Map<BackendOp, Observe>();
    for (const op of BACKEND_OPS) {
      this.backendDuration.zero({ chip, op });
      backendOps.set(op, this.backendDuration.labels({ chip, op }));
    }
    const reconnect = new Map<string, Inc>();
    for (const what of RECONNECT_WHAT) {
      const c = this.reconnects.labels({ chip, what });
      c.inc(0);
      reconnect.set(what, c);
    }
    const connected = this.frontendConnected.labels({ chip });
    connected.set(0);
    const errors = new Map<ErrorCause, Inc>();
    for (const cause of AGENT_ERROR_CAUSES) {
      const c = this.errors.labels({ chip, cause });
      c.inc(0);
      errors.set(cause, c);
    }
    const error = (cause: ErrorCause): void => errors.get(cause)?.inc();
    const kinds: Record<InterruptKind, Inc> = { valid: delivered, latched, invalid };

    const deviceHooks: GpioDeviceHooks = {
      onRequest: (type, outcome, seconds) => {
        reqCounters.get(type)?.get(outcome)?.inc();
        reqDurations.get(type)?.observe(seconds);
        if (outcome === 'timeout') error('deadline');
      },
      onInterrupt: (kind) => kinds[kind].inc(),
      onBroken: () => error('device_broken'),
      onBackendError: (_type, e, timedOut) => {
        // A device timeout is counted through onRequest ('timeout'); a deadline the gRPC
        // client enforced first is a deadline too.
        if (!timedOut) error(isFabricError(e) && e.code === ErrorCode.DEADLINE_EXCEEDED ? 'deadline' : 'backend');
      },
      onEventInterrupt: (ts) => propagation.observe(secondsSinceEpochNs(ts)),
    };
    const timed = <T>(op: BackendOp, p: () => Promise<T>): Promise<T> => {
      const h = backendOps.get(op);
      const t0 = performance.now();
      const done = (): void => h?.observe(secondsSince(t0));
      return p().finally(done);
    };
    const removed = { done: false };
    return {
      chip,
      deviceHooks,
      onReconnect: (what) => reconnect.get(what)?.inc(),
      onEventReceived: (ts) => lag.observe(secondsSinceEpochNs(ts)),
      setFrontendConnected: (c) => connected.set(c ? 1 : 0),
      onProtocolError: () => error('protocol'),
      instrumentBackend: (b) => instrumentBackend(b, timed),
      remove: () => {
        if (removed.done) return;
        removed.done = true;
        const n = (this.#chips.get(chip) ?? 1) - 1;
        if (n > 0) {
          this.#chips.set(chip, n);
          return;
        }
        this.#chips.delete(chip);
        for (const type of REQUEST_TYPES) {
          for (const outcome of REQUEST_OUTCOMES) this.requests.remove({ chip, type, outcome });
          this.requestDuration.remove({ chip, type });
        }
        for (const outcome of INTERRUPT_OUTCOMES) this.interrupts.remove({ chip, outcome });
        this.irqPropagation.remove({ chip });
        this.eventLag.remove({ chip });
        for (const op of BACKEND_OPS) this.backendDuration.remove({ chip, op });
        for (const what of RECONNECT_WHAT) this.reconnects.remove({ chip, what });
        this.frontendConnected.remove({ chip });
        for (const cause of AGENT_ERROR_CAUSES) this.errors.remove({ chip, cause });
      },
    };
  }
}

const perRegistry = new WeakMap<Registry, AgentMetrics>();

/** The AgentMetrics of `registry` (created and registered on first use). */
export function agentMetrics(registry: Registry): AgentMetrics {
  let m = perRegistry.get(registry);
  if (m === undefined) {
    m = new AgentMetrics(registry);
    perRegistry.set(registry, m);
  }
  return m;
}

/** A LineBackend forwarding to `b`, timing each line operation. */
function instrumentBackend(b: LineBackend, timed: <T>(op: BackendOp, p: () => Promise<T>) => Promise<T>): LineBackend {
  return {
    get chip() {
      return b.chip;
    },
    get ngpio() {
      return b.ngpio;
    },
    get names() {
      return b.names;
    },
    start: () => b.start(),
    getDirection: (offset: number): Promise<Direction> => timed('GET_DIRECTION', () => b.getDirection(offset)),
    setDirection: (offset: number, d: Direction): Promise<void> => timed('SET_DIRECTION', () => b.setDirection(offset, d)),
    getValue: (offset: number): Promise<Level> => timed('GET_VALUE', () => b.getValue(offset)),
    setValue: (offset: number, v: Level): Promise<void> => timed('SET_VALUE', () => b.setValue(offset, v)),
    setIrqType: (offset: number, t: IrqType): Promise<void> => timed('SET_IRQ_TYPE', () => b.setIrqType(offset, t)),
    levels: () => b.levels(),
    onEvent: (l) => b.onEvent(l),
    close: () => b.close(),
  };
}
