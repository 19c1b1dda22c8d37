/**
 * Test harness for GpioDevice: a device on two FakeVirtqueues sharing one PushLog, with
 * helpers that post requests / eventq buffers the way the Linux driver does.
 */
import { FakeVirtqueue, PushLog } from './fake-virtqueue.ts';
import type { FakeChain, PushRecord } from './fake-virtqueue.ts';
import { GpioDevice } from './gpio-device.ts';
import type { DeviceLogger, GpioDeviceHooks, InterruptKind, RequestOutcome } from './gpio-device.ts';
import type { LineBackend } from '../backend/line-backend.ts';
import { FeatureBit, Size, encodeEventRequest, encodeRequest, featureMask } from './virtio-gpio-protocol.ts';

export interface HarnessOptions {
  readonly irq?: boolean;
  readonly requestDeadlineMs?: number;
  readonly queueSize?: number;
}

export interface LogEntry {
  readonly level: 'debug' | 'info' | 'warn' | 'error';
  readonly msg: string;
}

export function harness(backend: LineBackend, options: HarnessOptions = {}) {
  const pushLog = new PushLog();
  const rq = new FakeVirtqueue(0, options.queueSize ?? 256, pushLog);
  const eq = new FakeVirtqueue(1, options.queueSize ?? 256, pushLog);
  const logs: LogEntry[] = [];
  const log: DeviceLogger = {
    debug: (msg) => logs.push({ level: 'debug', msg }),
    info: (msg) => logs.push({ level: 'info', msg }),
    warn: (msg) => logs.push({ level: 'warn', msg }),
    error: (msg) => logs.push({ level: 'error', msg }),
  };
  const requests: { type: string; outcome: RequestOutcome }[] = [];
  const interrupts: InterruptKind[] = [];
  const broken: { queue: number; reason: string }[] = [];
  const hooks: GpioDeviceHooks = {
    onRequest: (type, outcome) => requests.push({ type, outcome }),
    onInterrupt: (kind) => interrupts.push(kind),
    onBroken: (queue, reason) => broken.push({ queue, reason }),
  };
  const dev = new GpioDevice({ backend, log, hooks, ...(options.requestDeadlineMs === undefined ? {} : { requestDeadlineMs: options.requestDeadlineMs }) });
  const irq = options.irq ?? true;
  dev.setFeatures(featureMask(FeatureBit.VERSION_1) | (irq ? featureMask(FeatureBit.GPIO_F_IRQ) : 0n));
  dev.startQueue(rq);
  if (irq) dev.startQueue(eq);

  return {
    dev,
    rq,
    eq,
    pushLog,
    logs,
    requests,
    interrupts,
    broken,
    /** Post one request and kick. */
    request(type: number, gpio: number, value = 0, writable: number = Size.RESPONSE): FakeChain {
      const c = rq.add(encodeRequest({ type, gpio, value }), writable);
      dev.kick(0);
      return c;
    },
    /** Post one eventq buffer (unmask) and kick. */
    unmask(gpio: number, writable: number = Size.EVENT_RESPONSE): FakeChain {
      const c = eq.add(encodeEventRequest(gpio), writable);
      dev.kick(1);
      return c;
    },
    /** The push of a chain, if it was pushed. */
    pushOf(c: FakeChain): PushRecord | undefined {
      return pushLog.entries.find((p) => p.chain === c);
    },
  };
}

/** Let pending promise continuations and immediates run. */
export async function flush(turns = 5): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise<void>((r) => setImmediate(r));
}

/** Poll until cond() holds (or give up after `limitMs` and throw). */
export async function waitUntil(cond: () => boolean, what: string, limitMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > limitMs) throw new Error(`gave up waiting for ${what}`);
    await new Promise<void>((r) => setTimeout(r, 2));
  }
}
