/**
 * The topology document (docs/topology.md): chips, nets and external drives, in YAML or
 * JSON. `parseTopology` is pure: it validates the whole document and returns a
 * `Topology` for `LineStore.applyTopology`, or throws a TopologyError listing every
 * problem with its path ("nets[2].members[1]: \"vm-c:9\": ..."). Nothing is applied
 * unless the whole document is valid.
 */
import { parseDocument } from 'yaml';
import { ErrorCode, FabricError } from '../../common/src/errors.ts';
import { DriveMode, DriveValue, Pull, parseLineRef } from '../../common/src/line-model.ts';
import type { DriveTarget, LineAddress, Topology } from './store/store.ts';
import { MAX_DOCUMENT_BYTES, MAX_NGPIO, idProblem, lineNameProblem } from './names.ts';

/** The apiVersion this parser reads. */
export const TOPOLOGY_API_VERSION = 'gpiofabric/v1';

/** An invalid topology document; `problems` holds one "path: problem" entry each. */
export class TopologyError extends FabricError {
  override readonly name = 'TopologyError';
  readonly problems: readonly string[];
  constructor(problems: readonly string[], options?: ErrorOptions) {
    const head = problems.length === 1 ? `invalid topology: ${problems[0]}` : `invalid topology (${problems.length} problems):\n  ${problems.join('\n  ')}`;
    super(ErrorCode.INVALID_ARGUMENT, head, options);
    this.problems = problems;
  }
}

const PULLS: Readonly<Record<string, Pull>> = { up: Pull.UP, down: Pull.DOWN, none: Pull.NONE };
const DRIVE_MODES: Readonly<Record<string, DriveMode>> = { 'push-pull': DriveMode.PUSH_PULL, 'open-drain': DriveMode.OPEN_DRAIN };
const DRIVE_VALUES: Readonly<Record<string, DriveValue>> = {
  '0': DriveValue.LOW, '1': DriveValue.HIGH, low: DriveValue.LOW, high: DriveValue.HIGH, release: DriveValue.RELEASE,
};
const MAX_PROBLEMS = 50;
/**
 * Structure limits checked before the yaml parser runs. The parser recurses per nesting
 * level and recovers from a stack overflow only slowly, and compact block nesting on one
 * line ("a: a: a: …", "- - - …") costs it super-linear time: a 2 MB document of '[' kept
 * the service's event loop busy for over a minute, 300 kB of "a: " for 17 s. A topology
 * needs 3 levels and a few indicators per line.
 */
export const MAX_NESTING_DEPTH = 64;
/** Most block indicators (": ", "- ", "? " outside flow collections) on one line. */
export const MAX_BLOCK_INDICATORS_PER_LINE = 64;

/**
 * A linear pre-scan: the deepest [ / { nesting and the most block indicators on one line,
 * outside quoted strings and comments. Returns a problem or undefined.
 */
function structureProblem(text: string): string | undefined {
  let depth = 0;
  let quote = '';
  let comment = false;
  let line = 1;
  let indicators = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\n') {
      comment = false;
      line++;
      indicators = 0;
      continue;
    }
    if (comment) continue;
    if (quote !== '') {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) quote = '';
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '#' && (i === 0 || /\s/.test(text[i - 1] as string))) comment = true;
    else if (c === '[' || c === '{') {
      if (++depth > MAX_NESTING_DEPTH) return `lists or mappings are nested deeper than ${MAX_NESTING_DEPTH} levels (line ${line})`;
    } else if ((c === ']' || c === '}') && depth > 0) depth--;
    else if (depth === 0 && (c === ':' || c === '-' || c === '?')) {
      const next = text[i + 1];
      if ((next === ' ' || next === '\t' || next === '\n' || next === undefined) && ++indicators > MAX_BLOCK_INDICATORS_PER_LINE) {
        return `line ${line} nests more than ${MAX_BLOCK_INDICATORS_PER_LINE} block entries`;
      }
    }
  }
  return undefined;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const typeName = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'a list' : typeof v === 'object' ? 'a mapping' : `a ${typeof v}`);

interface DeclaredChip { readonly ngpio: number; readonly names: readonly string[] }

/** Parse and validate a topology document (YAML or JSON). Throws TopologyError. */
export function parseTopology(text: string): Topology {
  const problems: string[] = [];
  const bad = (path: string, msg: string): void => {
    if (problems.length < MAX_PROBLEMS) problems.push(path === '' ? msg : `${path}: ${msg}`);
  };
  if (Buffer.byteLength(text, 'utf8') > MAX_DOCUMENT_BYTES) {
    throw new TopologyError([`the document is larger than ${MAX_DOCUMENT_BYTES} bytes`]);
  }
  const structure = structureProblem(text);
  if (structure !== undefined) throw new TopologyError([`syntax: ${structure}`]);
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new TopologyError(doc.errors.slice(0, MAX_PROBLEMS).map((e) => `syntax: ${e.message.split('\n')[0] ?? e.message}`));
  }
  let root: unknown;
  try {
    root = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    throw new TopologyError([`syntax: ${e instanceof Error ? e.message : String(e)}`], { cause: e });
  }
  if (!isObj(root)) throw new TopologyError([`the document must be a mapping with apiVersion, chips, nets and drives, not ${typeName(root)}`]);

  checkKeys(root, '', ['apiVersion', 'chips', 'nets', 'drives'], bad);
  if (root['apiVersion'] === undefined) bad('apiVersion', `missing (write "apiVersion: ${TOPOLOGY_API_VERSION}")`);
  else if (root['apiVersion'] !== TOPOLOGY_API_VERSION) bad('apiVersion', `${JSON.stringify(root['apiVersion'])} is not supported (expected "${TOPOLOGY_API_VERSION}")`);

  const chips: { id: string; ngpio: number; names: string[]; bias: { offset: number; pull: Pull }[] }[] = [];
  const declared = new Map<string, DeclaredChip>();
  for (const [i, c] of list(root['chips'], 'chips', bad)) {
    const p = `chips[${i}]`;
    if (!isObj(c)) { bad(p, `must be a mapping with id and lines, not ${typeName(c)}`); continue; }
    checkKeys(c, p, ['id', 'lines', 'names', 'bias'], bad);
    const id = str(c['id'], `${p}.id`, bad, true);
    if (id !== undefined) {
      const ip = idProblem('chip id', id);
      if (ip !== undefined) bad(`${p}.id`, ip);
      else if (declared.has(id)) bad(`${p}.id`, `chip "${id}" is declared twice`);
    }
    const ngpio = c['lines'];
    let n: number | undefined;
    if (ngpio === undefined) bad(`${p}.lines`, 'missing (the number of GPIO lines of the chip)');
    else if (typeof ngpio !== 'number' || !Number.isInteger(ngpio) || ngpio < 1 || ngpio > MAX_NGPIO) bad(`${p}.lines`, `${JSON.stringify(ngpio)} is not a whole number from 1 to ${MAX_NGPIO}`);
    else n = ngpio;
    const names: string[] = [];
    if (c['names'] !== undefined) {
      if (!Array.isArray(c['names'])) bad(`${p}.names`, `must be a list of line names, not ${typeName(c['names'])}`);
      else {
        const seen = new Map<string, number>();
        c['names'].forEach((nm: unknown, j: number) => {
          if (typeof nm !== 'string') { bad(`${p}.names[${j}]`, `must be a string ("" for an unnamed line), not ${typeName(nm)}`); names.push(''); return; }
          const np = lineNameProblem(nm);
          if (np !== undefined) bad(`${p}.names[${j}]`, np);
          else if (nm !== '' && seen.has(nm)) bad(`${p}.names[${j}]`, `line name "${nm}" is already used by line ${seen.get(nm)}`);
          if (nm !== '') seen.set(nm, j);
          names.push(nm);
        });
        if (n !== undefined && names.length !== n) bad(`${p}.names`, `has ${names.length} entries but the chip has ${n} lines (give exactly ${n}; "" for an unnamed line)`);
      }
    }
    const bias: { offset: number; pull: Pull }[] = [];
    if (c['bias'] !== undefined) {
      if (!isObj(c['bias'])) bad(`${p}.bias`, `must be a mapping of line (name or offset) to up, down or none, not ${typeName(c['bias'])}`);
      else {
        for (const [key, v] of Object.entries(c['bias'])) {
          const bp = `${p}.bias.${key}`;
          const pull = typeof v === 'string' ? PULLS[v] : undefined;
          if (pull === undefined) bad(bp, `${JSON.stringify(v)} is not a bias (up, down or none)`);
          const off = n === undefined ? undefined : lineIndex(key, n, names, bp, bad);
          if (off !== undefined && pull !== undefined) {
            if (bias.some((b) => b.offset === off)) bad(bp, `line ${off} is given a bias twice`);
            else bias.push({ offset: off, pull });
          }
        }
      }
    }
    if (id !== undefined && n !== undefined && !declared.has(id)) {
      declared.set(id, { ngpio: n, names });
      chips.push({ id, ngpio: n, names, bias });
    }
  }

  const nets: { name: string; members: LineAddress[]; pull: Pull; driveMode: DriveMode }[] = [];
  const netNames = new Set<string>();
  const lineOwner = new Map<string, string>(); // line key -> path where it was wired
  for (const [i, net] of list(root['nets'], 'nets', bad)) {
    const p = `nets[${i}]`;
    if (!isObj(net)) { bad(p, `must be a mapping with name and members, not ${typeName(net)}`); continue; }
    checkKeys(net, p, ['name', 'members', 'pull', 'drive'], bad);
    const name = str(net['name'], `${p}.name`, bad, true);
    if (name !== undefined) {
      const np = idProblem('net name', name);
      if (np !== undefined) bad(`${p}.name`, np);
      else if (netNames.has(name)) bad(`${p}.name`, `net "${name}" is declared twice`);
      else netNames.add(name);
    }
    const members: LineAddress[] = [];
    const raw = net['members'];
    if (raw === undefined) bad(`${p}.members`, 'missing (a list of at least two CHIP:LINE endpoints)');
    else if (!Array.isArray(raw)) bad(`${p}.members`, `must be a list of CHIP:LINE endpoints, not ${typeName(raw)}`);
    else {
      if (raw.length < 2) bad(`${p}.members`, `a net needs at least two members, this one has ${raw.length}`);
      raw.forEach((m: unknown, j: number) => {
        const mp = `${p}.members[${j}]`;
        const r = lineRef(m, mp, declared, bad);
        if (r === undefined) return;
        const prev = lineOwner.get(r.key);
        if (prev !== undefined) bad(mp, `${JSON.stringify(m)}: the line is already wired at ${prev} (a line is in at most one net)`);
        else { lineOwner.set(r.key, mp); members.push(r.address); }
      });
    }
    const pull = enumField(net['pull'], `${p}.pull`, PULLS, 'up, down or none', Pull.NONE, bad);
    const driveMode = enumField(net['drive'], `${p}.drive`, DRIVE_MODES, 'push-pull or open-drain', DriveMode.PUSH_PULL, bad);
    if (name !== undefined && pull !== undefined && driveMode !== undefined) nets.push({ name, members, pull, driveMode });
  }

  const drives: { target: DriveTarget; value: DriveValue }[] = [];
  const driven = new Map<string, string>();
  for (const [i, d] of list(root['drives'], 'drives', bad)) {
    const p = `drives[${i}]`;
    if (!isObj(d)) { bad(p, `must be a mapping with line (or net) and value, not ${typeName(d)}`); continue; }
    checkKeys(d, p, ['line', 'net', 'value'], bad);
    let target: DriveTarget | undefined;
    let key: string | undefined;
    if ((d['line'] === undefined) === (d['net'] === undefined)) bad(p, 'give exactly one of line (CHIP:LINE) or net (a net name)');
    else if (d['line'] !== undefined) {
      const r = lineRef(d['line'], `${p}.line`, declared, bad);
      if (r !== undefined) { target = { kind: 'line', line: r.address }; key = `line ${r.key}`; }
    } else {
      const net = str(d['net'], `${p}.net`, bad, true);
      if (net !== undefined) {
        const np = idProblem('net name', net);
        if (np !== undefined) bad(`${p}.net`, np);
        else if (!netNames.has(net)) bad(`${p}.net`, `net "${net}" is not declared under nets in this document`);
        else { target = { kind: 'net', net }; key = `net ${net}`; }
      }
    }
    let value: DriveValue | undefined;
    const v = d['value'];
    if (v === undefined) bad(`${p}.value`, 'missing (0, 1 or release)');
    else {
      value = typeof v === 'number' || typeof v === 'string' ? DRIVE_VALUES[String(v)] : undefined;
      if (value === undefined) bad(`${p}.value`, `${JSON.stringify(v)} is not a drive value (0, 1 or release)`);
    }
    if (target !== undefined && key !== undefined && value !== undefined) {
      const prev = driven.get(key);
      if (prev !== undefined) bad(p, `${key} is already driven at ${prev}`);
      else { driven.set(key, p); drives.push({ target, value }); }
    }
  }

  if (problems.length > 0) throw new TopologyError(problems);
  return { chips, nets, drives };
}

function checkKeys(o: Obj, path: string, allowed: readonly string[], bad: (p: string, m: string) => void): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) bad(path === '' ? k : `${path}.${k}`, `unknown key (allowed here: ${allowed.join(', ')})`);
  }
}

function* list(v: unknown, path: string, bad: (p: string, m: string) => void): Generator<[number, unknown]> {
  if (v === undefined || v === null) return;
  if (!Array.isArray(v)) { bad(path, `must be a list, not ${typeName(v)}`); return; }
  for (let i = 0; i < v.length; i++) yield [i, v[i]];
}

function str(v: unknown, path: string, bad: (p: string, m: string) => void, required: boolean): string | undefined {
  if (v === undefined) { if (required) bad(path, 'missing'); return undefined; }
  if (typeof v !== 'string') { bad(path, `must be a string, not ${typeName(v)}`); return undefined; }
  return v;
}

function enumField<T>(v: unknown, path: string, table: Readonly<Record<string, T>>, allowed: string, dflt: T, bad: (p: string, m: string) => void): T | undefined {
  if (v === undefined || v === null) return dflt;
  const r = typeof v === 'string' && Object.hasOwn(table, v) ? table[v] : undefined;
  if (r === undefined) bad(path, `${JSON.stringify(v)} is not one of ${allowed}`);
  return r;
}

/** Offset of `key` (an offset or a line name) on a chip with `n` lines and `names`. */
function lineIndex(key: string, n: number, names: readonly string[], path: string, bad: (p: string, m: string) => void): number | undefined {
  if (/^[0-9]+$/.test(key)) {
    const off = Number(key);
    if (off >= n) { bad(path, `offset ${off} is out of range (the chip has lines 0..${n - 1})`); return undefined; }
    return off;
  }
  const i = names.indexOf(key);
  if (i < 0) { bad(path, `the chip has no line named "${key}"`); return undefined; }
  return i;
}

/** A CHIP:LINE endpoint; resolved to an offset and range-checked when the chip is declared in the document. */
function lineRef(v: unknown, path: string, declared: ReadonlyMap<string, DeclaredChip>, bad: (p: string, m: string) => void): { address: LineAddress; key: string } | undefined {
  if (typeof v !== 'string') { bad(path, `must be a CHIP:LINE string (e.g. vm-a:3 or vm-a:led0), not ${typeName(v)}`); return undefined; }
  let ref: ReturnType<typeof parseLineRef>;
  try {
    ref = parseLineRef(v);
  } catch (e) {
    bad(path, e instanceof Error ? e.message : String(e));
    return undefined;
  }
  const q = JSON.stringify(v);
  const ip = idProblem('chip id', ref.chip);
  if (ip !== undefined) { bad(path, `${q}: ${ip}`); return undefined; }
  if (ref.line.kind === 'name') {
    const np = lineNameProblem(ref.line.name);
    if (np !== undefined) { bad(path, `${q}: ${np}`); return undefined; }
  }
  const chip = declared.get(ref.chip);
  if (chip === undefined) {
    // A chip registered by an agent rather than declared here: the store checks the line.
    const sel = ref.line.kind === 'offset' ? String(ref.line.offset) : ref.line.name;
    return { address: { chip: ref.chip, line: ref.line }, key: `${ref.chip}:${sel}` };
  }
  const sub: string[] = [];
  const off = lineIndex(ref.line.kind === 'offset' ? String(ref.line.offset) : ref.line.name, chip.ngpio, chip.names, '', (_p, m) => sub.push(m));
  if (off === undefined) { bad(path, `${q}: ${sub.join('; ')}`); return undefined; }
  return { address: { chip: ref.chip, line: { kind: 'offset', offset: off } }, key: `${ref.chip}:${off}` };
}
