/**
 * Floors measured beside the fabric in the same run, as reusable pieces:
 *  - raw gRPC (grpc-js, no protobuf): unary echo, one message's round trip on a bidi
 *    stream echo (OpStream's transport), one-way server-stream delivery (the
 *    server stamps each message with its CLOCK_MONOTONIC time; process.hrtime is
 *    system-wide on Linux, so the client subtracts it directly), and bidi stream echo
 *    throughput;
 *  - kick -> call between two processes on the agent's native Platform (the backend is
 *    bench/kick-call.ts --backend), one round trip per call so it interleaves with the
 *    other paths;
 *  - Redis: EVALSHA of HSET + PUBLISH, and PUBLISH -> subscriber wake-up, and pipelined
 *    EVALSHA throughput.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  credentials, makeGenericClientConstructor, Server, ServerCredentials,
  type ServerDuplexStream, type ServerUnaryCall, type ServiceDefinition, type ServiceError, type sendUnaryData, type ClientDuplexStream,
} from '@grpc/grpc-js';
import { Redis } from 'ioredis';
import { createNativePlatform } from '../../services/agent/src/os/native-platform.ts';
import { exitWithParent } from './child.ts';

const identity = (b: Buffer): Buffer => b;
const def = (path: string, requestStream: boolean, responseStream: boolean) => ({
  path, requestStream, responseStream, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity,
});
/** The floor service: raw bytes, no protobuf. */
export const FloorService = {
  echo: def('/bench.Floor/Echo', false, false),
  stamp: def('/bench.Floor/Stamp', true, true),
  pipe: def('/bench.Floor/Pipe', true, true),
} satisfies ServiceDefinition;

/** Replacements of the floor service's echo and pipe handlers (e.g. the chained floor's, which call Redis first). */
export interface FloorHandlers {
  readonly echo?: (call: ServerUnaryCall<Buffer, Buffer>, cb: sendUnaryData<Buffer>) => void;
  readonly pipe?: (call: ServerDuplexStream<Buffer, Buffer>) => void;
}

/** In a benchmark child: serve FloorService (with `handlers`), print "READY <address>", stop with the parent. */
export async function floorChild(handlers: FloorHandlers = {}, onStop?: () => void): Promise<void> {
  const f = await serveFloor(handlers);
  exitWithParent(async () => {
    await f.stop();
    onStop?.();
  });
  console.log(`READY ${f.address}`);
}

/** Serve FloorService on 127.0.0.1:0; resolves with the address and a stop function. */
export async function serveFloor(handlers: FloorHandlers = {}): Promise<{ address: string; stop(): Promise<void> }> {
  const server = new Server();
  server.addService(FloorService, {
    echo: handlers.echo ?? ((call: ServerUnaryCall<Buffer, Buffer>, cb: sendUnaryData<Buffer>) => cb(null, call.request)),
    // every client message is answered by one message carrying the server's hrtime (ns, u64 LE)
    stamp: (call: ServerDuplexStream<Buffer, Buffer>) => {
      call.on('data', () => {
        const b = Buffer.allocUnsafe(8);
        b.writeBigUInt64LE(process.hrtime.bigint());
        call.write(b);
      });
      call.on('end', () => call.end());
    },
    pipe: handlers.pipe ?? ((call: ServerDuplexStream<Buffer, Buffer>) => {
      call.on('data', (b: Buffer) => call.write(b));
      call.on('end', () => call.end());
    }),
  });
  const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  return { address: `127.0.0.1:${port}`, stop: () => new Promise((r) => server.tryShutdown(() => r())) };
}

const FloorClient = makeGenericClientConstructor(FloorService, 'Floor');
interface RawFloorClient {
  echo(b: Buffer, cb: (e: ServiceError | null, r: Buffer) => void): void;
  stamp(): ClientDuplexStream<Buffer, Buffer>;
  pipe(): ClientDuplexStream<Buffer, Buffer>;
  close(): void;
}

/** Client side of the gRPC floors. */
export interface GrpcFloor {
  /** One unary echo round trip (24-byte payload). */
  echo(): Promise<void>;
  /** One server->client stream delivery: ns from the server's write to this process' receipt. */
  streamDelivery(): Promise<bigint>;
  /** One message's round trip on a bidi stream echo (the transport of OpStream). */
  streamRoundTrip(): Promise<void>;
  /** Bidi stream echo: messages/s with `window` messages outstanding for `seconds`. */
  streamThroughput(window: number, seconds: number, payloadBytes?: number): Promise<number>;
  close(): void;
}

export function grpcFloor(address: string, channels = 1): GrpcFloor {
  const clients = Array.from({ length: channels }, (_, i) => new FloorClient(address, credentials.createInsecure(), { 'grpc.bench_channel': i }) as unknown as RawFloorClient);
  let rr = 0;
  const payload = Buffer.alloc(24, 7);
  const first = clients[0] as RawFloorClient;
  const stamp = first.stamp();
  const waiters: ((t: bigint) => void)[] = [];
  stamp.on('data', (b: Buffer) => {
    const now = process.hrtime.bigint();
    waiters.shift()?.(now - b.readBigUInt64LE(0));
  });
  stamp.on('error', () => {});
  const rt = first.pipe();
  const rtWaiters: (() => void)[] = [];
  rt.on('data', () => rtWaiters.shift()?.());
  rt.on('error', () => {});
  return {
    streamRoundTrip: () => new Promise<void>((res) => {
      rtWaiters.push(res);
      rt.write(payload);
    }),
    echo: () => new Promise<void>((res, rej) => {
      const c = clients[rr++ % clients.length] as RawFloorClient;
      c.echo(payload, (e) => (e ? rej(e) : res()));
    }),
    streamDelivery: () => new Promise<bigint>((res) => {
      waiters.push(res);
      stamp.write(payload);
    }),
    streamThroughput: (window, seconds, payloadBytes = 24) => new Promise<number>((res, rej) => {
      const s = first.pipe();
      const msg = Buffer.alloc(payloadBytes, 3);
      let received = 0;
      const t0 = process.hrtime.bigint();
      const end = t0 + BigInt(Math.round(seconds * 1e9));
      s.on('data', () => {
        received++;
        if (process.hrtime.bigint() < end) s.write(msg);
        else if (received >= 0) {
          const dt = Number(process.hrtime.bigint() - t0) / 1e9;
          s.removeAllListeners('data');
          s.on('data', () => {});
          s.end();
          res(Math.round(received / dt));
        }
      });
      s.on('error', rej);
      for (let i = 0; i < window; i++) s.write(msg);
    }),
    close: () => {
      stamp.end();
      rt.end();
      for (const c of clients) c.close();
    },
  };
}

/** kick -> call round trips against a bench/kick-call.ts backend child, one at a time. */
export interface KickCallFloor {
  /** One kick -> call round trip, ns. */
  once(): Promise<bigint>;
  readonly pid: number;
  close(): Promise<void>;
}

export async function kickCallFloor(): Promise<KickCallFloor> {
  const p = createNativePlatform();
  const dir = mkdtempSync(join(tmpdir(), 'gf-bench-kc-'));
  const path = join(dir, 'kc.sock');
  const script = join(dirname(fileURLToPath(import.meta.url)), '..', 'kick-call.ts');
  const child = spawn(process.execPath, ['--import', 'tsx', script, '--backend', path], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((ready, fail) => {
    child.once('exit', (code) => fail(new Error(`kick-call backend exited early (${code})`)));
    child.stdout.on('data', (d: Buffer) => { if (d.toString().includes('ready')) ready(); });
  });
  const sock = await p.connectUnix(path);
  const kick = p.eventfd();
  const call = p.eventfd();
  sock.send(new Uint8Array([1]), [kick, call]);
  let t0 = 0n;
  let waiter: ((ns: bigint) => void) | undefined;
  const watch = p.watchReadable(call, () => {
    const t1 = process.hrtime.bigint();
    p.eventfdRead(call);
    const w = waiter;
    waiter = undefined;
    w?.(t1 - t0);
  });
  return {
    pid: child.pid ?? 0,
    once: () => new Promise<bigint>((res) => {
      waiter = res;
      t0 = process.hrtime.bigint();
      p.eventfdWrite(kick);
    }),
    close: async () => {
      watch.stop();
      sock.close();
      p.close(kick);
      p.close(call);
      if (child.exitCode === null) {
        const kill = setTimeout(() => child.kill('SIGKILL'), 3000);
        await new Promise<void>((r) => child.once('exit', () => r()));
        clearTimeout(kill);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The Redis floor script: what one state change costs Redis at least. */
export const HSET_PUBLISH = "redis.call('HSET', KEYS[1], 'v', ARGV[1]); redis.call('PUBLISH', KEYS[2], ARGV[1]); return 1";

export interface RedisFloor {
  /** One EVALSHA HSET+PUBLISH round trip. */
  evalsha(i: number): Promise<unknown>;
  /** PUBLISH on one connection -> 'message' on a subscriber connection: ns from the call to the wake-up. */
  pubsub(): Promise<bigint>;
  /** EVALSHA/s sent in pipelines of `batch` for `seconds` (one connection). */
  pipelinedEvalsha(batch: number, seconds: number): Promise<number>;
  close(): void;
}

export async function redisFloor(url: string): Promise<RedisFloor> {
  const r = new Redis(url);
  const sub = new Redis(url);
  const sha = (await r.script('LOAD', HSET_PUBLISH)) as string;
  const channel = `bench:floor:${process.pid}`;
  await sub.subscribe(channel);
  let waiter: ((ns: bigint) => void) | undefined;
  let t0 = 0n;
  sub.on('message', () => {
    const t1 = process.hrtime.bigint();
    const w = waiter;
    waiter = undefined;
    w?.(t1 - t0);
  });
  return {
    evalsha: (i) => r.evalsha(sha, 2, 'bench:floor:line', 'bench:floor:events', String(i & 1)),
    pubsub: () => new Promise<bigint>((res) => {
      waiter = res;
      t0 = process.hrtime.bigint();
      void r.publish(channel, '1');
    }),
    pipelinedEvalsha: async (batch, seconds) => {
      let n = 0;
      const t = process.hrtime.bigint();
      const end = t + BigInt(Math.round(seconds * 1e9));
      while (process.hrtime.bigint() < end) {
        const p = r.pipeline();
        for (let i = 0; i < batch; i++) p.evalsha(sha, 2, `bench:floor:line:${i}`, 'bench:floor:tp', String(i & 1));
        await p.exec();
        n += batch;
      }
      return Math.round(n / (Number(process.hrtime.bigint() - t) / 1e9));
    },
    close: () => {
      r.disconnect();
      sub.disconnect();
    },
  };
}
