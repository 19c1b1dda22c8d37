/**
 * RedisStore: the production line store, shared by every line-state replica. Every state
 * change is one Lua script (atomic, one round trip, EVALSHA through ioredis
 * defineCommand); events go to a per-chip stream (durable, resumable) and are pushed to
 * live subscribers over one pub/sub channel per chip, which a replica subscribes to while
 * it has a listener of the chip. Layout: keys.ts and lua/lib.lua.
 */
import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import type { RedisOptions } from 'ioredis';
import { ErrorCode, FabricError, invalidArgument, unavailable } from '../../../common/src/errors.ts';
import type { Direction, DriveMode, DriveValue, Edge, IrqType, Level, Pull } from '../../../common/src/line-model.ts';
import type {
  ApplyResult, BatchLineOp, ChipInfo, DriveTarget, EventSubscription, LineAddress, LineEventRecord, LineInfo, LineOpInput, LineOpOutcome,
  LineStore, NetInfo, RegisterChipInput, RegisterChipResult, Topology, WireInput,
} from './store.ts';
import { fabricKeys } from './keys.ts';
import { EventListeners } from './listeners.ts';
import type { FabricKeys } from './keys.ts';
import {
  DEFAULT_EVENT_RETENTION, LEASE_TTL_MS, MAX_NET_MEMBERS, MAX_OP_BATCH, changeText, checkAfterSeq, checkChipId, checkDriveMode, checkDriveValue,
  checkLineAddress, checkNames, checkNetName, checkNgpio, checkOpBatch, checkOwner, checkPull, checkReadLimit, checkTopologyShape,
  opShapeError, resolveLeaseTtl,
} from './validate.ts';
import type { TopologyChange } from './validate.ts';

export interface RedisStoreOptions {
  /** redis:// or rediss:// URL. */
  readonly url: string;
  /** Fabric name (hash tag of every key); default "default". */
  readonly fabric?: string;
  /** Lease TTL used when a registration asks for 0 (default 10000 ms). */
  readonly defaultLeaseTtlMs?: number;
  /** Per-chip stream MAXLEN (approximate, `~`), default 10000. */
  readonly eventRetention?: number;
  /** A command that gets no answer within this time fails with UNAVAILABLE (default 2000 ms). */
  readonly commandTimeoutMs?: number;
  /** Connection attempt timeout (default 2000 ms); createRedisStore fails after it. */
  readonly connectTimeoutMs?: number;
  /** Extra ioredis options (e.g. sentinels); the fail-fast options above win. */
  readonly redisOptions?: RedisOptions;
  /**
   * How often a replica with listeners checks whether a replica from before per-chip
   * channels subscribes to the fabric's channel, and then listens there too (default
   * 5000 ms; also checked when the subscriber connects).
   */
  readonly legacyChannelCheckMs?: number;
}

const SCRIPTS = ['register', 'renew', 'lineop', 'lineops', 'wire', 'unwire', 'drive', 'setbias', 'topology', 'read'] as const;
type ScriptName = (typeof SCRIPTS)[number];

function loadScript(name: string): string {
  return readFileSync(new URL(`./lua/${name}.lua`, import.meta.url), 'utf8');
}
let scriptSources: Map<ScriptName, string> | undefined;
function sources(): Map<ScriptName, string> {
  if (scriptSources === undefined) {
    const lib = loadScript('lib');
    scriptSources = new Map(SCRIPTS.map((s) => [s, `${lib}\n-- ---- ${s}.lua\n${loadScript(s)}`]));
  }
  return scriptSources;
}

const CODES = new Set<string>(Object.values(ErrorCode));
/** Bound of the set of locally delivered messages awaiting their pub/sub copy. */
const LOCAL_DONE_MAX = 4096;
/** Key of the every-chip subscription in RedisStore.channels. */
const EVERY_CHIP = '*';
const TRANSIENT_REPLY = /^(LOADING|READONLY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|BUSY|NOREPLICAS|MISCONF)\b/;

/** Map anything ioredis throws onto a FabricError (keeping the cause). */
export function mapRedisError(e: unknown): FabricError {
  if (e instanceof FabricError) return e;
  if (e instanceof Error && e.name === 'ReplyError') {
    const m = /GF:([A-Z_]+):([\s\S]*)$/.exec(e.message);
    if (m !== null && CODES.has(m[1]!)) {
      // Redis may append " script: ..." context after our message
      const msg = m[2]!.replace(/ script: [0-9a-f]{40}, on @user_script:\d+\.?$/, '');
      return new FabricError(m[1] as ErrorCode, msg, { cause: e });
    }
    if (TRANSIENT_REPLY.test(e.message)) return unavailable(`redis is not available: ${e.message}`, e);
    return new FabricError(ErrorCode.INTERNAL, `redis error: ${e.message}`, { cause: e });
  }
  const msg = e instanceof Error ? e.message : String(e);
  return unavailable(`redis is not reachable: ${msg}`, e);
}

type ScriptFn = (key: string, ...args: (string | number)[]) => Promise<unknown>;

/** Connect to Redis and return a store for one fabric. Fails with UNAVAILABLE when Redis cannot be reached. */
export async function createRedisStore(opts: RedisStoreOptions): Promise<LineStore> {
  const fabric = opts.fabric ?? 'default';
  const keys = fabricKeys(fabric);
  const retention = opts.eventRetention ?? DEFAULT_EVENT_RETENTION;
  if (!Number.isInteger(retention) || retention < 1) throw invalidArgument(`eventRetention ${retention} must be a positive integer`);
  const defaultTtl = resolveLeaseTtl(opts.defaultLeaseTtlMs ?? LEASE_TTL_MS.DEFAULT, LEASE_TTL_MS.DEFAULT);
  // (cast: ioredis' option types do not accept exactOptionalPropertyTypes' undefined)
  const redis = new Redis(opts.url, connectionOptions(opts) as never);
  redis.on('error', () => {}); // reported through failing commands; ioredis reconnects by itself
  try {
    await waitReady(redis, opts.connectTimeoutMs ?? 2000);
  } catch (e) {
    redis.disconnect();
    throw mapRedisError(e);
  }
  for (const [name, lua] of sources()) redis.defineCommand(`gf_${name}`, { numberOfKeys: 1, lua });
  return new RedisStore(redis, keys, retention, defaultTtl, opts);
}

function connectionOptions(opts: RedisStoreOptions): RedisOptions {
  return {
    ...opts.redisOptions,
    lazyConnect: false,
    enableOfflineQueue: false, // fail fast while disconnected instead of queueing
    maxRetriesPerRequest: 0,
    commandTimeout: opts.commandTimeoutMs ?? 2000,
    connectTimeout: opts.connectTimeoutMs ?? 2000,
    retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 5), 1000),
    // Off: ioredis' auto-pipelining costs about 50 µs per command at low load (measured:
    // gRPC handler + EVALSHA p50 167 -> 115 µs); batching is explicit instead (lineOps).
    enableAutoPipelining: false,
  };
}

function waitReady(r: Redis, timeoutMs: number): Promise<void> {
  if (r.status === 'ready') return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    let lastError: unknown;
    const onReady = (): void => {
      cleanup();
      resolve();
    };
    const onError = (e: unknown): void => {
      lastError = e;
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(lastError instanceof Error ? lastError : new Error(`no connection to redis within ${timeoutMs} ms`));
    }, timeoutMs);
    const cleanup = (): void => {
      clearTimeout(timer);
      r.off('ready', onReady);
      r.off('error', onError);
    };
    r.on('ready', onReady);
    r.on('error', onError);
  });
}

type Dump = readonly unknown[];

/**
 * lineops scripts one store sends before it holds further batches back to send them
 * together (queueBatch). Measured (docs/performance.md): 8 keeps the pipelining of 8
 * agents with several operations each as it was, and under 64 agents with one
 * operation each gave 11-12.5k ops/s against 7-10k with no limit; 1 or 2 lost
 * throughput to the lost overlap between the service and Redis.
 */
export const LINEOPS_IN_FLIGHT = 8;

/** One batch's part of a lineops reply: results (value or [code, message]), the chip's seq after it, levels. */
type BatchReply = [(number | [string, string])[], number, string];

interface QueuedBatch {
  /** chip, token, n, then n x (op, offset, value). */
  readonly args: (string | number)[];
  readonly ops: number;
  readonly resolve: (r: BatchReply) => void;
  readonly reject: (e: unknown) => void;
}

class RedisStore implements LineStore {
  private sub: Redis | undefined;
  private subReady: Promise<void> | undefined;
  /** SUBSCRIBE (PSUBSCRIBE for every chip: key EVERY_CHIP) of each chip a listener here takes, until confirmed. */
  private readonly channels = new Map<string, Promise<void>>();
  /** Whether this replica listens on the fabric's channel (a replica from before per-chip channels runs). */
  private legacy = false;
  private legacyTimer: NodeJS.Timeout | undefined;
  private readonly listeners = new EventListeners({
    first: (chip) => this.listen(chip),
    last: (chip) => this.unlisten(chip),
  });
  /** Published messages delivered in full locally whose pub/sub copy has not come yet (bounded, oldest dropped). */
  private readonly localDone = new Set<string>();
  /** Newest seq delivered per chip (detects gaps after a subscriber reconnect). */
  private readonly delivered = new Map<string, bigint>();
  private chain: Promise<void> = Promise.resolve();
  private closed = false;
  /** lineOps batches waiting for a script (queueBatch). */
  private batchQueue: QueuedBatch[] = [];
  private scriptsInFlight = 0;

  constructor(
    private readonly redis: Redis,
    private readonly keys: FabricKeys,
    private readonly retention: number,
    private readonly defaultTtl: number,
    private readonly opts: RedisStoreOptions,
  ) {}

  private async run(name: ScriptName, ...args: (string | number)[]): Promise<unknown> {
    if (this.closed) throw new FabricError(ErrorCode.FAILED_PRECONDITION, 'the store is closed');
    const fn = (this.redis as unknown as Record<string, ScriptFn>)[`gf_${name}`]!;
    try {
      return await fn.call(this.redis, this.keys.chips, this.keys.prefix, this.retention, ...args);
    } catch (e) {
      throw mapRedisError(e);
    }
  }

  // ---------------------------------------------------------------- agents

  async registerChip(input: RegisterChipInput): Promise<RegisterChipResult> {
    checkChipId(input.chip);
    checkNgpio(input.ngpio);
    checkNames(input.names, input.ngpio, input.chip);
    checkOwner(input.owner);
    const ttl = resolveLeaseTtl(input.leaseTtlMs, this.defaultTtl);
    const names = input.names.every((n) => n === '') ? [] : input.names;
    const r = (await this.run('register', input.chip, input.ngpio, input.owner, ttl, names.length, ...names)) as [string, number, number, Dump];
    const [chip, lines] = decodeChipLines(r[3]);
    return { leaseToken: BigInt(r[0]), chip, lines, restored: r[1] === 1, tookOver: r[2] === 1 };
  }

  async renewLease(chip: string, token: bigint): Promise<{ leaseExpiresAtMs: number }> {
    checkChipArg(chip);
    const e = (await this.run('renew', chip, tokenArg(token), 'renew')) as number;
    return { leaseExpiresAtMs: Number(e) };
  }

  async releaseChip(chip: string, token: bigint): Promise<void> {
    checkChipArg(chip);
    await this.run('renew', chip, tokenArg(token), 'release');
  }

  async lineOp(input: LineOpInput): Promise<number> {
    checkChipArg(input.chip);
    const bad = opShapeError(input);
    if (bad !== undefined) throw bad;
    const r = (await this.run('lineop', input.chip, tokenArg(input.leaseToken), input.op, input.offset, valueArg(input.value))) as [number, string];
    this.deliverLocal(r[1]);
    return Number(r[0]);
  }

  async lineOps(chip: string, leaseToken: bigint, ops: readonly BatchLineOp[]): Promise<readonly LineOpOutcome[]> {
    checkChipArg(chip);
    checkOpBatch(ops);
    const token = tokenArg(leaseToken);
    const outcomes: (LineOpOutcome | undefined)[] = new Array<LineOpOutcome | undefined>(ops.length);
    const args: (string | number)[] = [];
    const sent: number[] = [];
    ops.forEach((o, i) => {
      const bad = opShapeError(o);
      if (bad !== undefined) {
        outcomes[i] = { ok: false, error: bad };
        return;
      }
      sent.push(i);
      args.push(o.op, o.offset, valueArg(o.value));
    });
    // run even with nothing to apply: the chip and the lease are checked for every batch
    const [results, seqNumber, levels] = await this.queueBatch([chip, token, sent.length, ...args], sent.length);
    const seq = BigInt(seqNumber);
    sent.forEach((i, k) => {
      const v = results[k];
      outcomes[i] = Array.isArray(v)
        ? { ok: false, error: scriptError(v[0], v[1]) }
        : { ok: true, value: Number(v), seq, level: levels.charCodeAt(k) === 49 ? 1 : 0 };
    });
    return outcomes as LineOpOutcome[];
  }

  /**
   * Group commit of lineOps batches: a batch goes to Redis at once as its own lineops
   * script while fewer than LINEOPS_IN_FLIGHT scripts are running; beyond that, batches
   * wait and go out together, as one script (at most MAX_OP_BATCH operations each), as
   * soon as a running script answers. One script instead of several saves Redis its
   * per-script cost (about 17 µs measured: the call, the prelude, the chip read, the
   * publish), the service a command and a socket write each, and every replica one
   * pub/sub message each; at low load nothing waits. Batches keep their order. Rejects
   * with the batch's own failure (stale lease, unknown chip) or the script's.
   */
  private queueBatch(args: (string | number)[], ops: number): Promise<BatchReply> {
    return new Promise<BatchReply>((resolve, reject) => {
      this.batchQueue.push({ args, ops, resolve, reject });
      if (this.scriptsInFlight < LINEOPS_IN_FLIGHT) this.flushBatches();
    });
  }

  /** Send what is queued: one script per MAX_OP_BATCH operations, while fewer than LINEOPS_IN_FLIGHT run. */
  private flushBatches(): void {
    while (this.batchQueue.length > 0 && this.scriptsInFlight < LINEOPS_IN_FLIGHT) {
      let n = 1;
      let ops = this.batchQueue[0]!.ops;
      while (n < this.batchQueue.length && ops + this.batchQueue[n]!.ops <= MAX_OP_BATCH) ops += this.batchQueue[n++]!.ops;
      void this.runBatches(this.batchQueue.splice(0, n));
    }
  }

  private async runBatches(group: readonly QueuedBatch[]): Promise<void> {
    let r: [(BatchReply | [string, string])[], string];
    this.scriptsInFlight++;
    try {
      r = (await this.run('lineops', group.length, ...group.flatMap((b) => b.args))) as typeof r;
    } catch (e) {
      for (const b of group) b.reject(e);
      return;
    } finally {
      this.scriptsInFlight--;
      this.flushBatches();
    }
    this.deliverLocal(r[1]);
    group.forEach((b, k) => {
      const v = r[0][k];
      if (v === undefined) b.reject(new FabricError(ErrorCode.INTERNAL, 'the lineops script returned fewer batches than it was given'));
      else if (typeof v[0] === 'string') b.reject(scriptError(v[0], String(v[1])));
      else b.resolve(v as BatchReply);
    });
  }

  async getNames(chip: string): Promise<readonly string[]> {
    checkChipArg(chip);
    const d = (await this.run('read', 'names', chip)) as Dump;
    return decodeChip(d).names;
  }

  // ---------------------------------------------------------------- operators

  async wire(input: WireInput): Promise<NetInfo> {
    if (typeof input.name !== 'string') throw invalidArgument('net name must be a string');
    if (input.name !== '') checkNetName(input.name);
    checkPull(input.pull, 'pull');
    checkDriveMode(input.driveMode);
    if (!Array.isArray(input.members) || input.members.length < 2) throw invalidArgument('a net needs at least 2 members');
    if (input.members.length > MAX_NET_MEMBERS) throw invalidArgument(`a net has at most ${MAX_NET_MEMBERS} members`);
    const args: (string | number)[] = [];
    for (const m of input.members) args.push(...selectorArgs(m));
    const d = (await this.run('wire', input.name, input.pull, input.driveMode, input.members.length, ...args)) as Dump;
    return decodeNet(d);
  }

  async unwire(name: string): Promise<void> {
    if (typeof name !== 'string' || name === '') throw invalidArgument('net name is empty');
    await this.run('unwire', name);
  }

  async listChips(): Promise<readonly ChipInfo[]> {
    const r = (await this.run('read', 'chips')) as Dump[];
    return r.map(decodeChip);
  }

  async getChips(ids: readonly string[]): Promise<readonly (ChipInfo | undefined)[]> {
    if (!Array.isArray(ids)) throw invalidArgument('chip ids must be an array');
    for (const id of ids) if (typeof id !== 'string') throw invalidArgument('chip id must be a string');
    if (ids.length === 0) return [];
    const r = (await this.run('read', 'some', ...ids)) as (Dump | null)[];
    return ids.map((_, i) => {
      const d = r[i];
      return d === null || d === undefined ? undefined : decodeChip(d);
    });
  }

  async listLines(chip: string): Promise<readonly LineInfo[]> {
    if (typeof chip !== 'string') throw invalidArgument('chip id must be a string');
    const r = (await this.run('read', 'lines', chip)) as Dump[];
    return r.flatMap((d) => decodeChipLines(d)[1]);
  }

  async listNets(): Promise<readonly NetInfo[]> {
    const r = (await this.run('read', 'nets')) as Dump[];
    return r.map(decodeNet);
  }

  async getLine(line: LineAddress): Promise<LineInfo> {
    const r = (await this.run('read', 'line', ...selectorArgs(line))) as [Dump, string];
    return decodeLine(r[0], r[1]);
  }

  async drive(target: DriveTarget, value: DriveValue): Promise<Level> {
    checkDriveValue(value);
    let r: unknown;
    if (target?.kind === 'net') {
      if (typeof target.net !== 'string' || target.net === '') throw invalidArgument('net name is empty');
      r = await this.run('drive', 'net', target.net, value);
    } else if (target?.kind === 'line') {
      r = await this.run('drive', 'line', ...selectorArgs(target.line), value);
    } else throw invalidArgument('drive target is neither a line nor a net');
    return Number(r) === 1 ? 1 : 0;
  }

  async setBias(line: LineAddress, bias: Pull): Promise<LineInfo> {
    checkPull(bias, 'bias');
    const r = (await this.run('setbias', ...selectorArgs(line), bias)) as [Dump, string];
    return decodeLine(r[0], r[1]);
  }

  async applyTopology(t: Topology, dryRun: boolean): Promise<ApplyResult> {
    checkTopologyShape(t);
    const ref = (a: LineAddress): [string, string, string | number] =>
      a.line.kind === 'offset' ? [a.chip, 'o', a.line.offset] : [a.chip, 'n', a.line.name];
    const doc = {
      chips: t.chips.map((c) => ({ id: c.id, ngpio: c.ngpio, names: [...c.names], bias: c.bias.map((b) => [b.offset, b.pull]) })),
      nets: t.nets.map((n) => ({ name: n.name, members: n.members.map(ref), pull: n.pull, mode: n.driveMode })),
      drives: t.drives.map((d) => (d.target.kind === 'line' ? { line: ref(d.target.line), v: d.value } : { net: d.target.net, v: d.value })),
    };
    const r = (await this.run('topology', dryRun ? '1' : '0', JSON.stringify(doc))) as unknown[][];
    return { changes: r.map(decodeChange).map(changeText), chips: t.chips.length, nets: t.nets.length };
  }

  // ---------------------------------------------------------------- events

  async readEvents(chip: string, afterSeq: bigint, limit: number): Promise<readonly LineEventRecord[]> {
    checkChipArg(chip);
    checkAfterSeq(afterSeq);
    const n = checkReadLimit(limit);
    const r = (await this.run('read', 'events', chip, afterSeq.toString(), n)) as [string, [string, string[]][]];
    return r[1].map((entry) => decodeStreamEntry(chip, entry));
  }

  async subscribe(chips: readonly string[], listener: (e: LineEventRecord) => void): Promise<EventSubscription> {
    if (this.closed) throw new FabricError(ErrorCode.FAILED_PRECONDITION, 'the store is closed');
    await this.ensureSubscriber();
    const sub = this.listeners.add(chips, listener);
    // live once Redis confirmed the chips' channels: a caller that reads the stream after
    // this misses nothing in between
    try {
      await Promise.all((chips.length === 0 ? [EVERY_CHIP] : chips).map((c) => this.channels.get(c)));
    } catch (e) {
      sub.close();
      throw mapRedisError(e);
    }
    return sub;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.listeners.clear();
    clearInterval(this.legacyTimer);
    const conns = [this.redis, this.sub].filter((c): c is Redis => c !== undefined);
    await Promise.all(conns.map(async (c) => {
      try {
        if (c.status === 'ready') await Promise.race([c.quit(), new Promise((r) => setTimeout(r, 500).unref())]);
      } catch {
        // closing anyway
      }
      c.disconnect();
    }));
  }

  /**
   * One dedicated subscriber connection per store, subscribed to the channels of the chips
   * its listeners take (listen/unlisten; ioredis subscribes them again after a reconnect).
   */
  private ensureSubscriber(): Promise<void> {
    if (this.subReady === undefined) {
      const sub = this.redis.duplicate(connectionOptions(this.opts) as never);
      sub.on('error', () => {});
      this.sub = sub;
      sub.on('message', (_channel: string, msg: string) => this.onMessage(msg));
      sub.on('pmessage', (_pattern: string, _channel: string, msg: string) => this.onMessage(msg));
      this.subReady = (async () => {
        await waitReady(sub, this.opts.connectTimeoutMs ?? 2000);
        await this.checkLegacy();
        this.legacyTimer = setInterval(() => void this.checkLegacy().catch(() => {}), this.opts.legacyChannelCheckMs ?? 5000);
        this.legacyTimer.unref();
      })().catch((e: unknown) => {
        this.subReady = undefined;
        this.sub = undefined;
        sub.disconnect();
        throw mapRedisError(e);
      });
    }
    return this.subReady;
  }

  /** A chip (undefined: every chip) got its first listener: subscribe to its channel. */
  private listen(chip: string | undefined): void {
    const sub = this.sub;
    if (sub === undefined) return;
    const p = (chip === undefined ? sub.psubscribe(this.keys.everyChipPattern) : sub.subscribe(this.keys.chipChannel(chip))).then(() => {});
    p.catch(() => {}); // the subscribe() waiting for it reports the failure
    this.channels.set(chip ?? EVERY_CHIP, p);
  }

  /** A chip (undefined: every chip) lost its last listener. */
  private unlisten(chip: string | undefined): void {
    this.channels.delete(chip ?? EVERY_CHIP);
    // a chip nobody here listens to forgets its delivered seq (see takes): no message of it
    // comes now to make that happen
    for (const c of chip === undefined ? [...this.delivered.keys()] : [chip]) this.takes(c);
    const sub = this.sub;
    if (sub === undefined || this.closed) return;
    void (chip === undefined ? sub.punsubscribe(this.keys.everyChipPattern) : sub.unsubscribe(this.keys.chipChannel(chip))).catch(() => {});
  }

  /**
   * Rolling upgrade: a replica from before per-chip channels subscribes to the fabric's
   * channel, and its scripts publish there only. While one does, listen there too, as a
   * pattern (which PUBSUB NUMSUB, the scripts' test for such replicas, does not count).
   */
  private async checkLegacy(): Promise<void> {
    const sub = this.sub;
    if (sub === undefined || this.closed) return;
    const r = (await this.redis.pubsub('NUMSUB', this.keys.channel)) as [string, number];
    const want = Number(r[1]) > 0;
    if (want === this.legacy) return;
    if (want) await sub.psubscribe(this.keys.channel);
    else await sub.punsubscribe(this.keys.channel);
    this.legacy = want; // only once Redis answered: a failed (P)SUBSCRIBE is tried again next time
  }

  /**
   * Whether some listener here takes events of `chip`. A chip nobody listens to forgets
   * its delivered seq, so a listener that comes later starts live instead of being handed
   * the events skipped meanwhile as a "gap".
   */
  private takes(chip: string): boolean {
    if (this.listeners.wants(chip)) return true;
    this.delivered.delete(chip);
    return false;
  }

  private onMessage(msg: string): void {
    if (this.localDone.delete(msg)) return; // every event of it went out by same-replica delivery
    // parse only the rows of chips someone here listens to (a listener may have gone, and
    // the fabric's channel carries every chip)
    const events = parseEventMessage(msg, (chip) => this.takes(chip));
    this.chain = this.chain.then(() => this.deliverInOrder(events)).catch(() => {});
  }

  /**
   * Same-replica delivery: a script's reply carries the messages it published on the
   * chips' channels (separated by an empty line), so this replica's watchers get them
   * without waiting for the pub/sub round trip. Only an event that directly follows the
   * newest one delivered for its chip goes this way; anything else (first event of a chip
   * seen here, a gap) is left to the subscriber, whose messages arrive in Redis' order and
   * fill gaps from the stream. A message delivered here in full is remembered, and its
   * pub/sub copy is then dropped unparsed; a copy of a message delivered in part is
   * dropped by the per-chip seq check of deliverInOrder.
   */
  private deliverLocal(reply: string): void {
    if (reply === '' || !this.listeners.any()) return;
    const parsed = reply.split('\n\n').map((msg) => [msg, parseEventMessage(msg, (chip) => this.takes(chip))] as const);
    this.chain = this.chain.then(() => {
      for (const [msg, events] of parsed) {
        if (events.length === 0) continue; // no listener here: no pub/sub copy comes either
        let all = true;
        for (const e of events) {
          if (!this.takes(e.chip)) continue; // its listener went away meanwhile
          const last = this.delivered.get(e.chip);
          if (last !== undefined && e.seq === last + 1n) this.emit(e);
          else all = false;
        }
        if (all) {
          this.localDone.add(msg);
          if (this.localDone.size > LOCAL_DONE_MAX) this.localDone.delete(this.localDone.values().next().value as string);
        }
      }
    }).catch(() => {});
  }

  /** Deliver events, filling a gap (missed while the subscriber was reconnecting) from the stream first. */
  private async deliverInOrder(events: readonly LineEventRecord[]): Promise<void> {
    for (const e of events) {
      const last = this.delivered.get(e.chip);
      if (last !== undefined && e.seq <= last) continue;
      if (last !== undefined && e.seq > last + 1n) {
        try {
          const missed = await this.readEvents(e.chip, last, Number(e.seq - last - 1n));
          for (const m of missed) if (m.seq < e.seq) this.emit(m);
        } catch {
          // the gap cannot be filled now; consumers resume from their cursor with readEvents
        }
      }
      this.emit(e);
    }
  }

  private emit(e: LineEventRecord): void {
    this.delivered.set(e.chip, e.seq);
    this.listeners.emit(e);
  }
}

// ------------------------------------------------------------------ arguments

/**
 * The events of one published message: rows "chip offset level edge seq ts", with " e"
 * appended to an echo (only the `wanted` chips').
 */
function parseEventMessage(msg: string, wanted?: (chip: string) => boolean): LineEventRecord[] {
  const events: LineEventRecord[] = [];
  for (const row of msg.split('\n')) {
    if (wanted !== undefined && !wanted(row.slice(0, row.indexOf(' ')))) continue;
    const f = row.split(' ');
    if (f.length !== 6 && f.length !== 7) continue;
    const chip = f[0]!, offset = Number(f[1]), level = f[2] === '1' ? 1 : 0, edge = Number(f[3]) as Edge, seq = BigInt(f[4]!);
    const timestampNs = BigInt(f[5]!);
    events.push(f[6] === 'e' ? { chip, offset, level, edge, seq, timestampNs, echo: true } : { chip, offset, level, edge, seq, timestampNs });
  }
  return events;
}

/** A per-operation error of the lineops script ({ code, message }) as a FabricError. */
function scriptError(code: string, msg: string): FabricError {
  return new FabricError(CODES.has(code) ? (code as ErrorCode) : ErrorCode.INTERNAL, String(msg));
}

function checkChipArg(chip: string): void {
  if (typeof chip !== 'string') throw invalidArgument('chip id must be a string');
}

/** An operation's value as a script argument (-1, which no check accepts, when it is not a number). */
function valueArg(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : -1;
}

function tokenArg(token: bigint): string {
  if (typeof token !== 'bigint' || token < 0n) throw invalidArgument(`lease token ${String(token)} is not a non-negative integer`);
  return token.toString();
}

function selectorArgs(a: LineAddress): [string, string, string | number] {
  checkLineAddress(a);
  return a.line.kind === 'offset' ? [a.chip, 'o', a.line.offset] : [a.chip, 'n', a.line.name];
}

// ------------------------------------------------------------------ decoding

function namesFrom(flat: readonly string[], ngpio: number): string[] {
  const names = Array.from({ length: ngpio }, () => '');
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const off = Number(flat[i + 1]);
    if (off >= 0 && off < ngpio) names[off] = flat[i]!;
  }
  return names;
}

function decodeChip(d: Dump): ChipInfo {
  const ngpio = Number(d[1]);
  return {
    id: String(d[0]), ngpio, names: namesFrom(d[7] as string[], ngpio), owner: String(d[2]), online: Number(d[3]) === 1,
    leaseExpiresAtMs: Number(d[4]), lastSeq: BigInt(String(d[5])),
  };
}

function unpackLine(chip: string, offset: number, name: string, p: string, net: string): LineInfo {
  return {
    chip, offset, name, direction: Number(p[0]) as Direction, outputValue: p[1] === '1' ? 1 : 0, irqType: Number(p[2]) as IrqType,
    bias: Number(p[3]) as Pull, externalDrive: Number(p[4]) as DriveValue, level: p[5] === '1' ? 1 : 0, net,
  };
}

function decodeChipLines(d: Dump): [ChipInfo, LineInfo[]] {
  const chip = decodeChip(d);
  const packed = String(d[8]);
  const nets = d[9] as string[];
  const lines: LineInfo[] = [];
  for (let i = 0; i < chip.ngpio; i++) {
    lines.push(unpackLine(chip.id, i, chip.names[i] ?? '', packed.slice(i * 6, i * 6 + 6), nets[i] ?? ''));
  }
  return [chip, lines];
}

function decodeLine(d: Dump, name: string): LineInfo {
  return unpackLine(String(d[0]), Number(d[1]), name, String(d[2]), String(d[3]));
}

function decodeNet(d: Dump): NetInfo {
  const members = String(d[1]).split(' ').filter((s) => s !== '').map((s) => {
    const i = s.lastIndexOf(':');
    return { chip: s.slice(0, i), offset: Number(s.slice(i + 1)) };
  });
  return {
    name: String(d[0]), members, pull: Number(d[2]) as Pull, driveMode: Number(d[3]) as DriveMode, level: Number(d[4]) === 1 ? 1 : 0,
    externalDrive: Number(d[5]) as DriveValue, contention: Number(d[6]) === 1, contentionCount: BigInt(String(d[7])),
  };
}

function decodeStreamEntry(chip: string, entry: [string, string[]]): LineEventRecord {
  const [id, fields] = entry;
  const f = new Map<string, string>();
  for (let i = 0; i + 1 < fields.length; i += 2) f.set(fields[i]!, fields[i + 1]!);
  const offset = Number(f.get('offset')), level = f.get('level') === '1' ? 1 : 0, edge = Number(f.get('edge')) as Edge;
  const seq = BigInt(id.slice(id.indexOf('-') + 1)), timestampNs = BigInt(f.get('ts') ?? '0');
  return f.get('echo') === '1' ? { chip, offset, level, edge, seq, timestampNs, echo: true } : { chip, offset, level, edge, seq, timestampNs };
}

function decodeChange(c: unknown[]): TopologyChange {
  const s = (i: number): string => String(c[i]);
  const n = (i: number): number => Number(c[i]);
  switch (s(0)) {
    case 'create-chip':
      return { kind: 'create-chip', chip: s(1), ngpio: n(2) };
    case 'names':
      return { kind: 'names', chip: s(1) };
    case 'bias':
      return { kind: 'bias', chip: s(1), offset: n(2), pull: n(3) as Pull };
    case 'remove-net':
      return { kind: 'remove-net', net: s(1) };
    case 'wire-net':
    case 'update-net':
      return { kind: s(0) as 'wire-net', net: s(1), members: s(2).split(' '), pull: n(3) as Pull, mode: n(4) as DriveMode };
    case 'drive-line':
      return { kind: 'drive-line', chip: s(1), offset: n(2), value: n(3) as DriveValue };
    case 'drive-net':
      return { kind: 'drive-net', net: s(1), value: n(2) as DriveValue };
    default:
      throw new FabricError(ErrorCode.INTERNAL, `unknown topology change ${s(0)}`);
  }
}
