/**
 * MemoryStore: the embedded line store (one process, no Redis). Same semantics as the
 * RedisStore (both pass test/contract/store.contract.ts); see docs/line-model.md.
 *
 * Atomicity: every method validates everything it needs before it changes anything, so
 * a thrown FabricError leaves the state exactly as it was.
 */
import { alreadyExists, failedPrecondition, invalidArgument, isFabricError, notFound, outOfRange, type FabricError } from '../../../common/src/errors.ts';
import { Direction, DriveMode, DriveValue, Pull, edgeOf, isDirection, isIrqType, resolveNet, IrqType } from '../../../common/src/line-model.ts';
import type { Level } from '../../../common/src/line-model.ts';
import { LineOp } from './store.ts';
import type {
  ApplyResult, BatchLineOp, ChipInfo, DriveTarget, EventSubscription, LineAddress, LineEventRecord, LineInfo, LineOpInput, LineOpOutcome,
  LineStore, NetInfo, RegisterChipInput, RegisterChipResult, Topology, WireInput,
} from './store.ts';
import {
  DEFAULT_EVENT_RETENTION, LEASE_TTL_MS, MAX_NET_MEMBERS, changeText, checkAfterSeq, checkChipId, checkDriveMode, checkDriveValue,
  checkLineAddress, checkNames, checkNetName, checkNgpio, checkOpBatch, checkOwner, checkPull, checkReadLimit, checkTopologyShape,
  lineRefText, opShapeError, resolveLeaseTtl,
} from './validate.ts';
import type { TopologyChange } from './validate.ts';
import { EventListeners } from './listeners.ts';

export interface MemoryStoreOptions {
  /** Lease TTL used when a registration asks for 0 (default 10000 ms). */
  readonly defaultLeaseTtlMs?: number;
  /** Events kept per chip for readEvents (default 10000). */
  readonly eventRetention?: number;
  /** Wall clock in ms since the epoch (tests inject one). */
  readonly now?: () => number;
}

interface MLine {
  direction: Direction;
  out: Level;
  irq: IrqType;
  bias: Pull;
  ext: DriveValue;
  net: string;
  level: Level;
}

interface MChip {
  readonly id: string;
  readonly ngpio: number;
  names: string[];
  owner: string;
  /** Current lease token, 0 when released or never leased. */
  token: bigint;
  /** Fencing counter: the last token ever handed out. */
  fence: bigint;
  expiresAt: number;
  /** TTL the current lease was granted with (renewals extend by it). */
  ttl: number;
  seq: bigint;
  lastTs: bigint;
  events: LineEventRecord[];
  readonly lines: MLine[];
}

interface MNet {
  readonly name: string;
  members: { chip: string; offset: number }[];
  pull: Pull;
  mode: DriveMode;
  ext: DriveValue;
  level: Level;
  contention: boolean;
  contentionCount: bigint;
}

const driveLevel = (v: DriveValue): Level | undefined => (v === DriveValue.HIGH ? 1 : v === DriveValue.LOW ? 0 : undefined);

const newLine = (): MLine => ({ direction: Direction.NONE, out: 0, irq: IrqType.NONE, bias: Pull.NONE, ext: DriveValue.RELEASE, net: '', level: 0 });

/** Create the embedded store. */
export function createMemoryStore(opts: MemoryStoreOptions = {}): LineStore {
  return new MemoryStore(opts);
}

class MemoryStore implements LineStore {
  private readonly chips = new Map<string, MChip>();
  private readonly nets = new Map<string, MNet>();
  private readonly listeners = new EventListeners();
  private netCounter = 0;
  private closed = false;
  private readonly defaultTtl: number;
  private readonly retention: number;
  private readonly now: () => number;
  private readonly clockNs: () => bigint;
  /** Events produced by the mutation in progress. */
  private pending: LineEventRecord[] = [];
  /** The line of the lineOps operation being applied: its own changes are echoes (store.ts). */
  private echoOf: { readonly chip: string; readonly offset: number } | undefined;

  constructor(opts: MemoryStoreOptions) {
    this.defaultTtl = resolveLeaseTtl(opts.defaultLeaseTtlMs ?? LEASE_TTL_MS.DEFAULT, LEASE_TTL_MS.DEFAULT);
    const r = opts.eventRetention ?? DEFAULT_EVENT_RETENTION;
    if (!Number.isInteger(r) || r < 1) throw invalidArgument(`eventRetention ${r} must be a positive integer`);
    this.retention = r;
    const now = opts.now;
    this.now = now ?? Date.now;
    this.clockNs = now !== undefined
      ? () => BigInt(Math.floor(now())) * 1_000_000n
      : () => BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
  }

  // ---------------------------------------------------------------- agents

  async registerChip(input: RegisterChipInput): Promise<RegisterChipResult> {
    this.open();
    checkChipId(input.chip);
    checkNgpio(input.ngpio);
    checkNames(input.names, input.ngpio, input.chip);
    checkOwner(input.owner);
    const ttl = resolveLeaseTtl(input.leaseTtlMs, this.defaultTtl);
    const now = this.now();
    let chip = this.chips.get(input.chip);
    const restored = chip !== undefined;
    if (chip !== undefined) {
      if (chip.ngpio !== input.ngpio) {
        throw failedPrecondition(`chip ${chip.id} exists with ngpio ${chip.ngpio}, registration asked for ngpio ${input.ngpio}`);
      }
      if (chip.token !== 0n && chip.expiresAt > now) {
        throw failedPrecondition(
          `chip ${chip.id} is leased by ${chip.owner} until ${new Date(chip.expiresAt).toISOString()} (expires in ${chip.expiresAt - now} ms)`,
        );
      }
    }
    if (chip === undefined) {
      chip = this.newChip(input.chip, input.ngpio);
      this.chips.set(chip.id, chip);
    }
    const tookOver = restored && chip.token !== 0n && chip.owner !== input.owner;
    if (input.names.some((n) => n !== '')) chip.names = [...input.names]; // no (or all-empty) names keep the stored ones
    chip.fence += 1n;
    chip.token = chip.fence;
    chip.owner = input.owner;
    chip.expiresAt = now + ttl;
    chip.ttl = ttl;
    return { leaseToken: chip.token, chip: this.chipInfo(chip, now), lines: this.lineInfos(chip), restored, tookOver };
  }

  async renewLease(chipId: string, token: bigint): Promise<{ leaseExpiresAtMs: number }> {
    this.open();
    const chip = this.chip(chipId);
    this.checkToken(chip, token);
    const now = this.now();
    chip.expiresAt = now + chip.ttl;
    return { leaseExpiresAtMs: chip.expiresAt };
  }

  async releaseChip(chipId: string, token: bigint): Promise<void> {
    this.open();
    const chip = this.chip(chipId);
    this.checkToken(chip, token);
    chip.token = 0n;
    chip.expiresAt = 0;
  }

  async lineOp(input: LineOpInput): Promise<number> {
    return this.lineOpNow(input);
  }

  async lineOps(chip: string, leaseToken: bigint, ops: readonly BatchLineOp[]): Promise<readonly LineOpOutcome[]> {
    checkOpBatch(ops);
    this.open();
    this.checkToken(this.chip(chip), leaseToken);
    // synchronous: nothing interleaves with the batch (atomic, like the Redis script)
    const done = ops.map((o): number | FabricError => {
      const bad = opShapeError(o);
      if (bad !== undefined) return bad;
      this.echoOf = { chip, offset: o.offset };
      try {
        return this.lineOpNow({ chip, leaseToken, op: o.op, offset: o.offset, value: o.value });
      } catch (e) {
        if (isFabricError(e)) return e;
        throw e;
      } finally {
        this.echoOf = undefined;
      }
    });
    // each line's level after the whole batch, as of the chip's seq then
    const c = this.chip(chip);
    return done.map((v, i): LineOpOutcome => (typeof v === 'number'
      ? { ok: true, value: v, seq: c.seq, level: c.lines[ops[i]!.offset]!.level }
      : { ok: false, error: v }));
  }

  private lineOpNow(input: LineOpInput): number {
    this.open();
    const chip = this.chip(input.chip);
    this.checkToken(chip, input.leaseToken);
    const line = this.lineAt(chip, input.offset);
    const v = input.value;
    switch (input.op) {
      case LineOp.GET_DIRECTION:
        return line.direction;
      case LineOp.GET_VALUE:
        return line.level;
      case LineOp.SET_DIRECTION:
        if (typeof v !== 'number' || !isDirection(v)) throw invalidArgument(`direction ${v} is not one of 0 (none), 1 (out), 2 (in)`);
        line.direction = v;
        if (v === Direction.NONE) {
          line.out = 0;
          line.irq = IrqType.NONE;
        }
        return this.commit([[chip, input.offset]], () => 0);
      case LineOp.SET_VALUE:
        if (v !== 0 && v !== 1) throw invalidArgument(`value ${v} is not 0 or 1`);
        line.out = v;
        return this.commit([[chip, input.offset]], () => 0);
      case LineOp.SET_IRQ_TYPE:
        if (typeof v !== 'number' || !isIrqType(v)) throw invalidArgument(`irq type ${v} is not one of 0, 1, 2, 3, 4, 8`);
        line.irq = v;
        return 0;
      default:
        throw invalidArgument(`unknown line operation ${String(input.op)}`);
    }
  }

  async getNames(chipId: string): Promise<readonly string[]> {
    this.open();
    const chip = this.chip(chipId);
    return chip.names.length === 0 ? Array.from({ length: chip.ngpio }, () => '') : [...chip.names];
  }

  // ---------------------------------------------------------------- operators

  async wire(input: WireInput): Promise<NetInfo> {
    this.open();
    if (typeof input.name !== 'string') throw invalidArgument('net name must be a string');
    if (input.name !== '') checkNetName(input.name);
    checkPull(input.pull, 'pull');
    checkDriveMode(input.driveMode);
    if (!Array.isArray(input.members) || input.members.length < 2) throw invalidArgument('a net needs at least 2 members');
    if (input.members.length > MAX_NET_MEMBERS) throw invalidArgument(`a net has at most ${MAX_NET_MEMBERS} members`);
    const members = input.members.map((m) => this.resolve(m));
    const seen = new Set<string>();
    for (const [chip, offset] of members) {
      const key = `${chip.id}:${offset}`;
      if (seen.has(key)) throw invalidArgument(`line ${key} is listed twice`);
      seen.add(key);
      const cur = chip.lines[offset]!.net;
      if (cur !== '') throw alreadyExists(`line ${key} is already in net ${cur}`);
    }
    let name = input.name;
    if (name !== '' && this.nets.has(name)) throw alreadyExists(`net ${name} already exists`);
    if (name === '') name = this.generateNetName();
    const net: MNet = {
      name, members: members.map(([c, o]) => ({ chip: c.id, offset: o })), pull: input.pull, mode: input.driveMode,
      ext: DriveValue.RELEASE, level: 0, contention: false, contentionCount: 0n,
    };
    this.nets.set(name, net);
    for (const [c, o] of members) c.lines[o]!.net = name;
    return this.commit(members, () => this.netInfo(net));
  }

  async unwire(name: string): Promise<void> {
    this.open();
    const net = this.nets.get(name);
    if (net === undefined) throw notFound(`net ${name} does not exist`);
    this.nets.delete(name);
    const refs = net.members.map((m): [MChip, number] => [this.chips.get(m.chip)!, m.offset]);
    for (const [c, o] of refs) c.lines[o]!.net = '';
    this.commit(refs, () => undefined);
  }

  async listChips(): Promise<readonly ChipInfo[]> {
    this.open();
    const now = this.now();
    return [...this.chips.values()].sort(byId).map((c) => this.chipInfo(c, now));
  }

  async getChips(ids: readonly string[]): Promise<readonly (ChipInfo | undefined)[]> {
    this.open();
    if (!Array.isArray(ids)) throw invalidArgument('chip ids must be an array');
    const now = this.now();
    return ids.map((id) => {
      if (typeof id !== 'string') throw invalidArgument('chip id must be a string');
      const c = this.chips.get(id);
      return c === undefined ? undefined : this.chipInfo(c, now);
    });
  }

  async listLines(chipId: string): Promise<readonly LineInfo[]> {
    this.open();
    if (chipId === '') return [...this.chips.values()].sort(byId).flatMap((c) => this.lineInfos(c));
    return this.lineInfos(this.chip(chipId));
  }

  async listNets(): Promise<readonly NetInfo[]> {
    this.open();
    return [...this.nets.values()].sort((a, b) => cmp(a.name, b.name)).map((n) => this.netInfo(n));
  }

  async getLine(addr: LineAddress): Promise<LineInfo> {
    this.open();
    const [chip, offset] = this.resolve(addr);
    return this.lineInfo(chip, offset);
  }

  async drive(target: DriveTarget, value: DriveValue): Promise<Level> {
    this.open();
    checkDriveValue(value);
    if (target?.kind === 'net') {
      const net = this.nets.get(target.net);
      if (net === undefined) throw notFound(`net ${target.net} does not exist`);
      net.ext = value;
      const refs = net.members.map((m): [MChip, number] => [this.chips.get(m.chip)!, m.offset]);
      return this.commit(refs, () => net.level);
    }
    if (target?.kind !== 'line') throw invalidArgument('drive target is neither a line nor a net');
    const [chip, offset] = this.resolve(target.line);
    const line = chip.lines[offset]!;
    line.ext = value;
    return this.commit([[chip, offset]], () => line.level);
  }

  async setBias(addr: LineAddress, bias: Pull): Promise<LineInfo> {
    this.open();
    checkPull(bias, 'bias');
    const [chip, offset] = this.resolve(addr);
    chip.lines[offset]!.bias = bias;
    return this.commit([[chip, offset]], () => this.lineInfo(chip, offset));
  }

  async applyTopology(t: Topology, dryRun: boolean): Promise<ApplyResult> {
    this.open();
    checkTopologyShape(t);
    // --- validate against the state the document would produce
    const declared = new Map(t.chips.map((c) => [c.id, c]));
    for (const c of t.chips) {
      const cur = this.chips.get(c.id);
      if (cur !== undefined && cur.ngpio !== c.ngpio) {
        throw failedPrecondition(`chip ${c.id} exists with ngpio ${cur.ngpio}, the topology declares ngpio ${c.ngpio}`);
      }
    }
    const futureResolve = (a: LineAddress): { chip: string; offset: number } => {
      const d = declared.get(a.chip);
      const cur = this.chips.get(a.chip);
      if (d === undefined && cur === undefined) throw notFound(`chip ${a.chip} does not exist (line ${lineRefText(a)})`);
      const ngpio = d?.ngpio ?? cur!.ngpio;
      const names = d !== undefined && d.names.length > 0 ? d.names : (cur?.names ?? []);
      if (a.line.kind === 'offset') {
        if (a.line.offset >= ngpio) throw invalidArgument(`line ${lineRefText(a)}: offset out of range 0..${ngpio - 1}`);
        return { chip: a.chip, offset: a.line.offset };
      }
      const i = names.indexOf(a.line.name);
      if (i < 0) throw notFound(`chip ${a.chip} has no line named ${a.line.name}`);
      return { chip: a.chip, offset: i };
    };
    const netMembers = new Map<string, { chip: string; offset: number }[]>();
    const owner = new Map<string, string>();
    for (const n of t.nets) {
      const ms = n.members.map(futureResolve);
      for (const m of ms) {
        const key = `${m.chip}:${m.offset}`;
        const prev = owner.get(key);
        if (prev === n.name) throw invalidArgument(`net ${n.name} lists line ${key} twice`);
        if (prev !== undefined) throw invalidArgument(`line ${key} is in nets ${prev} and ${n.name}`);
        owner.set(key, n.name);
      }
      netMembers.set(n.name, ms);
    }
    const drives = t.drives.map((d) =>
      d.target.kind === 'line' ? { line: futureResolve(d.target.line), net: '', value: d.value } : { line: undefined, net: d.target.net, value: d.value },
    );

    // --- plan
    const changes: TopologyChange[] = [];
    for (const c of t.chips) {
      const cur = this.chips.get(c.id);
      if (cur === undefined) changes.push({ kind: 'create-chip', chip: c.id, ngpio: c.ngpio });
      const curNames = cur !== undefined && cur.names.length > 0 ? cur.names : Array.from({ length: c.ngpio }, () => '');
      if (c.names.length > 0 && !sameList(c.names, curNames)) changes.push({ kind: 'names', chip: c.id });
      for (const b of c.bias) {
        const curBias = cur?.lines[b.offset]?.bias ?? Pull.NONE;
        if (curBias !== b.pull) changes.push({ kind: 'bias', chip: c.id, offset: b.offset, pull: b.pull });
      }
    }
    for (const name of [...this.nets.keys()].sort(cmp)) {
      if (!netMembers.has(name)) changes.push({ kind: 'remove-net', net: name });
    }
    for (const n of t.nets) {
      const ms = netMembers.get(n.name)!;
      const cur = this.nets.get(n.name);
      const text = ms.map((m) => `${m.chip}:${m.offset}`);
      if (cur === undefined) changes.push({ kind: 'wire-net', net: n.name, members: text, pull: n.pull, mode: n.driveMode });
      else if (cur.pull !== n.pull || cur.mode !== n.driveMode || !sameList(cur.members.map((m) => `${m.chip}:${m.offset}`), text)) {
        changes.push({ kind: 'update-net', net: n.name, members: text, pull: n.pull, mode: n.driveMode });
      }
    }
    // Drives: compare against the value the line/net will have (last one in the document wins).
    const lineDrive = new Map<string, DriveValue>();
    const netDrive = new Map<string, DriveValue>();
    for (const d of drives) {
      if (d.line !== undefined) lineDrive.set(`${d.line.chip}:${d.line.offset}`, d.value);
      else netDrive.set(d.net, d.value);
    }
    for (const [key, value] of lineDrive) {
      const [chipId, off] = splitKey(key);
      const cur = this.chips.get(chipId)?.lines[off]?.ext ?? DriveValue.RELEASE;
      if (cur !== value) changes.push({ kind: 'drive-line', chip: chipId, offset: off, value });
    }
    for (const [net, value] of netDrive) {
      const cur = this.nets.get(net)?.ext ?? DriveValue.RELEASE;
      if (cur !== value) changes.push({ kind: 'drive-net', net, value });
    }
    const result: ApplyResult = { changes: changes.map(changeText), chips: t.chips.length, nets: t.nets.length };
    if (dryRun || changes.length === 0) return result;

    // --- apply (nothing below can fail)
    const touched: [MChip, number][] = [];
    for (const c of t.chips) {
      let chip = this.chips.get(c.id);
      if (chip === undefined) {
        chip = this.newChip(c.id, c.ngpio);
        this.chips.set(c.id, chip);
      }
      if (c.names.length > 0) chip.names = normNames(c.names);
      for (const b of c.bias) {
        chip.lines[b.offset]!.bias = b.pull;
        touched.push([chip, b.offset]);
      }
    }
    const oldContention = new Map<string, { contention: boolean; count: bigint; ext: DriveValue }>();
    for (const net of [...this.nets.values()]) {
      for (const m of net.members) {
        const chip = this.chips.get(m.chip)!;
        chip.lines[m.offset]!.net = '';
        touched.push([chip, m.offset]);
      }
      oldContention.set(net.name, { contention: net.contention, count: net.contentionCount, ext: net.ext });
      this.nets.delete(net.name);
    }
    for (const n of t.nets) {
      const ms = netMembers.get(n.name)!;
      const old = oldContention.get(n.name);
      const net: MNet = {
        name: n.name, members: ms, pull: n.pull, mode: n.driveMode, ext: old?.ext ?? DriveValue.RELEASE, level: 0,
        contention: old?.contention ?? false, contentionCount: old?.count ?? 0n,
      };
      this.nets.set(n.name, net);
      for (const m of ms) {
        const chip = this.chips.get(m.chip)!;
        chip.lines[m.offset]!.net = n.name;
        touched.push([chip, m.offset]);
      }
    }
    for (const [key, value] of lineDrive) {
      const [chipId, off] = splitKey(key);
      const chip = this.chips.get(chipId)!;
      chip.lines[off]!.ext = value;
      touched.push([chip, off]);
    }
    for (const [name, value] of netDrive) this.nets.get(name)!.ext = value;
    return this.commit(touched, () => result);
  }

  // ---------------------------------------------------------------- events

  async readEvents(chipId: string, afterSeq: bigint, limit: number): Promise<readonly LineEventRecord[]> {
    this.open();
    checkAfterSeq(afterSeq);
    const n = checkReadLimit(limit);
    const chip = this.chip(chipId);
    if (afterSeq > chip.seq) throw outOfRange(`cursor ${afterSeq} is ahead of the newest event ${chip.seq} of chip ${chipId}`);
    const out: LineEventRecord[] = [];
    // events are ordered by seq; find the first one after the cursor
    let lo = 0;
    let hi = chip.events.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (chip.events[mid]!.seq <= afterSeq) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < chip.events.length && out.length < n; i++) out.push(chip.events[i]!);
    return out;
  }

  async subscribe(chips: readonly string[], listener: (e: LineEventRecord) => void): Promise<EventSubscription> {
    this.open();
    return this.listeners.add(chips, listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.listeners.clear();
  }

  // ---------------------------------------------------------------- internals

  private open(): void {
    if (this.closed) throw failedPrecondition('the store is closed');
  }

  private newChip(id: string, ngpio: number): MChip {
    return {
      id, ngpio, names: [], owner: '', token: 0n, fence: 0n, expiresAt: 0, ttl: this.defaultTtl, seq: 0n, lastTs: 0n, events: [],
      lines: Array.from({ length: ngpio }, newLine),
    };
  }

  private chip(id: string): MChip {
    if (typeof id !== 'string') throw invalidArgument('chip id must be a string');
    const c = this.chips.get(id);
    if (c === undefined) throw notFound(`chip ${id} does not exist`);
    return c;
  }

  private lineAt(chip: MChip, offset: number): MLine {
    if (!Number.isInteger(offset) || offset < 0 || offset >= chip.ngpio) {
      throw invalidArgument(`offset ${offset} is out of range for chip ${chip.id} (0..${chip.ngpio - 1})`);
    }
    return chip.lines[offset]!;
  }

  private resolve(addr: LineAddress): [MChip, number] {
    checkLineAddress(addr);
    const chip = this.chip(addr.chip);
    if (addr.line.kind === 'offset') {
      this.lineAt(chip, addr.line.offset);
      return [chip, addr.line.offset];
    }
    const i = chip.names.indexOf(addr.line.name);
    if (i < 0) throw notFound(`chip ${chip.id} has no line named ${addr.line.name}`);
    return [chip, i];
  }

  private checkToken(chip: MChip, token: bigint): void {
    if (typeof token !== 'bigint' || token !== chip.token || chip.token === 0n) {
      const cur = chip.token === 0n ? `chip ${chip.id} has no lease` : `current ${chip.token}`;
      throw failedPrecondition(`stale lease token ${String(token)}, ${cur}`);
    }
  }

  private generateNetName(): string {
    for (;;) {
      this.netCounter++;
      const n = `net-${this.netCounter}`;
      if (!this.nets.has(n)) return n;
    }
  }

  /**
   * Re-resolve the levels of the given lines (and of every line sharing a net with
   * them), emit one event per line whose observed level changed, then deliver.
   */
  private commit<T>(refs: readonly (readonly [MChip, number])[], result: () => T): T {
    const nets = new Set<string>();
    const singles: [MChip, number][] = [];
    const seen = new Set<string>();
    for (const [chip, offset] of refs) {
      const line = chip.lines[offset]!;
      if (line.net !== '') nets.add(line.net);
      else {
        const key = `${chip.id}:${offset}`;
        if (!seen.has(key)) {
          seen.add(key);
          singles.push([chip, offset]);
        }
      }
    }
    for (const name of [...nets].sort(cmp)) {
      const net = this.nets.get(name)!;
      const drivers: Level[] = [];
      const nd = driveLevel(net.ext);
      if (nd !== undefined) drivers.push(nd);
      for (const m of net.members) {
        const l = this.chips.get(m.chip)!.lines[m.offset]!;
        if (l.direction === Direction.OUT) drivers.push(l.out);
        const ld = driveLevel(l.ext);
        if (ld !== undefined) drivers.push(ld);
      }
      const r = resolveNet(drivers, net.pull, net.mode);
      if (r.contention && !net.contention) net.contentionCount++;
      net.contention = r.contention;
      net.level = r.level;
      for (const m of net.members) this.setLevel(this.chips.get(m.chip)!, m.offset, r.level);
    }
    for (const [chip, offset] of singles) {
      const l = chip.lines[offset]!;
      const drivers: Level[] = [];
      if (l.direction === Direction.OUT) drivers.push(l.out);
      const ld = driveLevel(l.ext);
      if (ld !== undefined) drivers.push(ld);
      this.setLevel(chip, offset, resolveNet(drivers, l.bias, DriveMode.PUSH_PULL).level);
    }
    const events = this.pending;
    this.pending = [];
    if (events.length > 0) this.deliver(events);
    return result();
  }

  private setLevel(chip: MChip, offset: number, level: Level): void {
    const line = chip.lines[offset]!;
    if (line.level === level) return;
    const edge = edgeOf(line.level, level);
    line.level = level;
    chip.seq++;
    let ts = this.clockNs();
    if (ts < chip.lastTs) ts = chip.lastTs;
    chip.lastTs = ts;
    const echo = this.echoOf !== undefined && this.echoOf.chip === chip.id && this.echoOf.offset === offset && line.irq === IrqType.NONE;
    const e: LineEventRecord = echo
      ? { chip: chip.id, offset, level, edge, seq: chip.seq, timestampNs: ts, echo: true }
      : { chip: chip.id, offset, level, edge, seq: chip.seq, timestampNs: ts };
    chip.events.push(e);
    if (chip.events.length > this.retention) chip.events.splice(0, chip.events.length - this.retention);
    this.pending.push(e);
  }

  private deliver(events: readonly LineEventRecord[]): void {
    const targets = this.listeners.current();
    if (targets.length === 0) return;
    queueMicrotask(() => {
      for (const e of events) this.listeners.emit(e, targets);
    });
  }

  private chipInfo(c: MChip, now: number): ChipInfo {
    return {
      id: c.id, ngpio: c.ngpio, names: c.names.length === 0 ? Array.from({ length: c.ngpio }, () => '') : [...c.names],
      owner: c.owner, online: c.token !== 0n && c.expiresAt > now, leaseExpiresAtMs: c.expiresAt, lastSeq: c.seq,
    };
  }

  private lineInfo(c: MChip, offset: number): LineInfo {
    const l = c.lines[offset]!;
    return {
      chip: c.id, offset, name: c.names[offset] ?? '', direction: l.direction, outputValue: l.out, irqType: l.irq, bias: l.bias,
      level: l.level, net: l.net, externalDrive: l.ext,
    };
  }

  private lineInfos(c: MChip): LineInfo[] {
    return c.lines.map((_, i) => this.lineInfo(c, i));
  }

  private netInfo(n: MNet): NetInfo {
    return {
      name: n.name, members: n.members.map((m) => ({ chip: m.chip, offset: m.offset })), pull: n.pull, driveMode: n.mode,
      level: n.level, externalDrive: n.ext, contention: n.contention, contentionCount: n.contentionCount,
    };
  }
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
const byId = (a: { id: string }, b: { id: string }): number => cmp(a.id, b.id);

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** All-empty names are stored as "no names". */
function normNames(names: readonly string[]): string[] {
  return names.every((n) => n === '') ? [] : [...names];
}

function splitKey(key: string): [string, number] {
  const i = key.lastIndexOf(':');
  return [key.slice(0, i), Number(key.slice(i + 1))];
}
