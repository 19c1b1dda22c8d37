/**
 * A TCP proxy for fault injection: put it between two processes (agent → service,
 * service → Redis) and make the network slow, dead or re-pointed while they run.
 *
 *   const p = await startTcpProxy({ targetPort: redis.port });
 *   // connect the client to 127.0.0.1:p.port
 *   p.setDelay(800);      // every chunk, both directions, arrives 800 ms late (order kept)
 *   p.setDelay(0);        // back to normal (chunks already queued still keep their order)
 *   p.setBlackhole(true); // bytes vanish, connections stay open (a silent partition)
 *   p.setBlackhole(false);// connections that lost bytes are reset; new ones work
 *   p.setTarget(otherPort); p.resetAll(); // re-point: new connections go elsewhere
 *   await p.close();
 *
 * Loopback only. Every socket and timer it makes is released by close().
 */
import { createServer, connect, type Server, type Socket } from 'node:net';

export interface TcpProxyOptions {
  readonly targetPort: number;
  readonly targetHost?: string;
  /** Port to listen on (default 0 = a free port). */
  readonly listenPort?: number;
  /** Initial one-way delay in ms (default 0). */
  readonly delayMs?: number;
}

export interface TcpProxyStats {
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Connections currently open. */
  readonly open: number;
  /** Bytes dropped by the blackhole. */
  readonly droppedBytes: number;
}

export interface TcpProxy {
  readonly port: number;
  /** "127.0.0.1:port" */
  readonly address: string;
  /** One-way delay applied to every chunk in both directions from now on. */
  setDelay(ms: number): void;
  /** Drop every byte in both directions while on; turning it off resets the connections that lost bytes. */
  setBlackhole(on: boolean): void;
  /** Where new connections go. */
  setTarget(port: number, host?: string): void;
  /** Destroy every open connection (both sides see a reset/close). */
  resetAll(): void;
  stats(): TcpProxyStats;
  close(): Promise<void>;
}

interface Pipe {
  readonly client: Socket;
  readonly upstream: Socket;
  lostBytes: boolean;
  timers: Set<NodeJS.Timeout>;
}

/** Start a proxy on 127.0.0.1; resolves once it listens. */
export async function startTcpProxy(opts: TcpProxyOptions): Promise<TcpProxy> {
  let delayMs = opts.delayMs ?? 0;
  let blackhole = false;
  let target = { port: opts.targetPort, host: opts.targetHost ?? '127.0.0.1' };
  let accepted = 0;
  let droppedBytes = 0;
  const pipes = new Set<Pipe>();

  const destroy = (p: Pipe): void => {
    for (const t of p.timers) clearTimeout(t);
    p.timers.clear();
    p.client.destroy();
    p.upstream.destroy();
    pipes.delete(p);
  };

  /** Forward src → dst through a FIFO queue whose chunks are released at arrival + delay. */
  const forward = (p: Pipe, src: Socket, dst: Socket): void => {
    const queue: { at: number; chunk: Buffer }[] = [];
    let timer: NodeJS.Timeout | undefined;
    const flush = (): void => {
      if (timer !== undefined) p.timers.delete(timer);
      timer = undefined;
      const now = Date.now();
      while (queue.length > 0 && queue[0]!.at <= now) {
        const { chunk } = queue.shift()!;
        if (!dst.destroyed) dst.write(chunk);
      }
      if (queue.length > 0) {
        timer = setTimeout(flush, Math.max(1, queue[0]!.at - now));
        p.timers.add(timer);
      }
    };
    src.on('data', (chunk: Buffer) => {
      if (blackhole) {
        droppedBytes += chunk.length;
        p.lostBytes = true;
        return;
      }
      if (delayMs <= 0 && queue.length === 0) {
        dst.write(chunk);
        return;
      }
      queue.push({ at: Date.now() + delayMs, chunk });
      if (timer === undefined) flush();
    });
    src.on('end', () => {
      // Half-close after the queued bytes have gone.
      const endLater = (): void => {
        if (queue.length === 0) dst.end();
        else {
          const t = setTimeout(endLater, 5);
          p.timers.add(t);
        }
      };
      endLater();
    });
  };

  const server: Server = createServer((client) => {
    accepted++;
    const upstream = connect(target.port, target.host);
    const p: Pipe = { client, upstream, lostBytes: false, timers: new Set() };
    pipes.add(p);
    const onError = (): void => destroy(p);
    client.on('error', onError);
    upstream.on('error', onError);
    client.on('close', () => destroy(p));
    upstream.on('close', () => destroy(p));
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    forward(p, client, upstream);
    forward(p, upstream, client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.listenPort ?? 0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;

  return {
    port,
    address: `127.0.0.1:${port}`,
    setDelay: (ms) => {
      if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`delay ${ms} ms must be >= 0`);
      delayMs = ms;
    },
    setBlackhole: (on) => {
      blackhole = on;
      if (!on) for (const p of [...pipes]) if (p.lostBytes) destroy(p);
    },
    setTarget: (port2, host = '127.0.0.1') => {
      target = { port: port2, host };
    },
    resetAll: () => {
      for (const p of [...pipes]) {
        p.client.resetAndDestroy();
        p.upstream.resetAndDestroy();
        destroy(p);
      }
    },
    stats: () => ({ accepted, open: pipes.size, droppedBytes }),
    close: async () => {
      for (const p of [...pipes]) destroy(p);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
