/**
 * Target "topology": hostile topology documents into parseTopology (line-state service).
 *
 * Generated: random JSON-ish structures (as YAML or JSON text), the documented example
 * with random structural mutations (a subtree replaced by a random value, a key deleted,
 * a list entry duplicated, an unknown key added), the example's text with random
 * character edits or truncation, anchor/alias bombs (k levels of w aliases each), and
 * deep nesting (flow collections and compact block entries, around the 64-level limit).
 * Properties:
 *  - parseTopology returns a Topology or throws a TopologyError / FabricError whose code
 *    is INVALID_ARGUMENT; never anything else (no TypeError, RangeError, stack overflow);
 *  - an accepted Topology is self-consistent: chip ids unique, ngpio 1..1024, names empty
 *    or one per line, bias offsets inside the chip and once each, net names unique, every
 *    net with ≥ 2 members, no line in two nets, declared-chip offsets in range, drive
 *    values in the DriveValue domain, no target driven twice;
 *  - parsing an accepted document again gives the same Topology.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { ErrorCode, FabricError } from '../../../services/common/src/errors.ts';
import { isDriveValue } from '../../../services/common/src/line-model.ts';
import { MAX_NGPIO } from '../../../services/linestate/src/names.ts';
import { parseTopology } from '../../../services/linestate/src/topology.ts';
import type { Topology } from '../../../services/linestate/src/store/store.ts';
import type { FuzzTarget } from '../target.ts';

/** The documented example (docs/topology.md), as data. */
const EXAMPLE = {
  apiVersion: 'gpiofabric/v1',
  chips: [
    { id: 'vm-a', lines: 8, names: ['led0', 'btn0', 'reset', '', '', '', '', ''], bias: { btn0: 'up' } },
    { id: 'vm-b', lines: 4 },
  ],
  nets: [
    { name: 'reset-bus', members: ['vm-a:reset', 'vm-b:2'], pull: 'up', drive: 'open-drain' },
    { name: 'remote', members: ['vm-a:3', 'vm-c:led1'] },
  ],
  drives: [
    { line: 'vm-a:btn0', value: 0 },
    { net: 'remote', value: 'release' },
  ],
};
const EXAMPLE_TEXT = stringify(EXAMPLE);

const scalarArb = fc.oneof(
  fc.constantFrom('vm-a', 'vm-b', 'vm-c:led1', 'vm-a:3', 'vm-a:99', 'up', 'down', 'none', 'release', 'open-drain', 'push-pull', 'gpiofabric/v1', '', ':', 'a:b:c', 'vm-a:', '0', '-1'),
  fc.string({ maxLength: 12 }),
  fc.string({ unit: 'binary', maxLength: 8 }),
  fc.integer({ min: -2, max: 1030 }),
  fc.constantFrom(0, 1, 2, 1024, 1025, 65536, -0, 1.5, Number.MAX_SAFE_INTEGER, 1e300),
  fc.boolean(),
  fc.constant(null),
);
const valueArb = fc.letrec<{ v: unknown }>((tie) => ({
  v: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    scalarArb,
    fc.array(tie('v'), { maxLength: 4 }),
    fc.dictionary(fc.oneof(fc.constantFrom('id', 'lines', 'names', 'bias', 'name', 'members', 'pull', 'drive', 'line', 'net', 'value', 'chips', 'nets', 'drives', 'apiVersion', '__proto__', 'constructor'), fc.string({ maxLength: 6 })), tie('v'), { maxKeys: 4 }),
  ),
})).v;

type Path = (string | number)[];
function paths(v: unknown, at: Path = [], out: Path[] = []): Path[] {
  out.push(at);
  if (Array.isArray(v)) v.forEach((x, i) => paths(x, [...at, i], out));
  else if (typeof v === 'object' && v !== null) for (const k of Object.keys(v)) paths((v as Record<string, unknown>)[k], [...at, k], out);
  return out;
}

const mutationArb = fc.record({
  kind: fc.constantFrom('replace', 'delete', 'duplicate', 'addKey'),
  pick: fc.nat(),
  value: valueArb,
  key: fc.oneof(fc.constantFrom('id', 'lines', 'extra', 'value', 'members'), fc.string({ maxLength: 5 })),
});

function mutate(doc: unknown, muts: readonly (typeof mutationArb extends fc.Arbitrary<infer T> ? T : never)[]): unknown {
  let root: unknown = structuredClone(doc);
  for (const m of muts) {
    const all = paths(root);
    const p = all[m.pick % all.length] as Path;
    if (p.length === 0) {
      if (m.kind === 'replace') root = m.value;
      continue;
    }
    let parent: unknown = root;
    for (const k of p.slice(0, -1)) parent = (parent as Record<string | number, unknown>)[k];
    const last = p[p.length - 1] as string | number;
    const container = parent as Record<string | number, unknown> & unknown[];
    switch (m.kind) {
      case 'replace':
        container[last] = m.value;
        break;
      case 'delete':
        if (Array.isArray(container)) container.splice(last as number, 1);
        else delete container[last];
        break;
      case 'duplicate':
        if (Array.isArray(container)) container.splice(last as number, 0, structuredClone(container[last as number]));
        else container[`${String(last)}`] = structuredClone(container[last]);
        break;
      case 'addKey': {
        const target = container[last];
        if (typeof target === 'object' && target !== null && !Array.isArray(target)) Object.defineProperty(target, m.key, { value: m.value, enumerable: true, writable: true, configurable: true });
        break;
      }
    }
  }
  return root;
}

const render = (v: unknown, asJson: boolean): string => {
  try {
    return asJson ? (JSON.stringify(v) ?? 'null') : stringify(v);
  } catch {
    return String(v);
  }
};

const textEditArb = fc.record({ at: fc.nat(), del: fc.nat(4), ins: fc.oneof(fc.constantFrom(':', '-', ' ', '\n', '[', ']', '{', '}', '&a', '*a', '"', "'", '#', '!!binary', '\t', '\0', '? ', '<<: *a'), fc.string({ maxLength: 4 })) });

const docArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 2, arbitrary: fc.tuple(valueArb, fc.boolean()).map(([v, j]) => render(v, j)) },
  { weight: 5, arbitrary: fc.tuple(fc.array(mutationArb, { minLength: 1, maxLength: 4 }), fc.boolean()).map(([m, j]) => render(mutate(EXAMPLE, m), j)) },
  {
    weight: 2,
    arbitrary: fc.array(textEditArb, { minLength: 1, maxLength: 6 }).map((edits) => {
      let t = EXAMPLE_TEXT;
      for (const e of edits) {
        const at = e.at % (t.length + 1);
        t = t.slice(0, at) + e.ins + t.slice(at + e.del);
      }
      return t;
    }),
  },
  { weight: 1, arbitrary: fc.nat(EXAMPLE_TEXT.length).map((n) => EXAMPLE_TEXT.slice(0, n)) },
  // deep nesting: flow collections and compact block entries around the limits
  {
    weight: 1,
    arbitrary: fc.record({ n: fc.oneof(fc.integer({ min: 60, max: 70 }), fc.nat(300)), kind: fc.constantFrom('[', '{a: ', '- ', 'a: ', '? ', '[- ') }).map(({ n, kind }) => {
      const close = kind === '[' || kind === '[- ' ? ']'.repeat(n) : kind === '{a: ' ? '}'.repeat(n) : '';
      return `apiVersion: gpiofabric/v1\nchips: ${kind.repeat(n)}1${close}\n`;
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ levels: fc.integer({ min: 1, max: 12 }), width: fc.integer({ min: 1, max: 12 }), where: fc.constantFrom('chips', 'names', 'members', 'root') }).map(({ levels, width, where }) => {
      const lines = ['a0: &a0 [vm-a:0, vm-b:1]'];
      for (let i = 1; i <= levels; i++) lines.push(`a${i}: &a${i} [${Array.from({ length: width }, () => `*a${i - 1}`).join(', ')}]`);
      const top = `*a${levels}`;
      const body =
        where === 'chips' ? `chips: ${top}` : where === 'names' ? `chips:\n  - {id: vm-a, lines: 2, names: ${top}}` : where === 'members' ? `nets:\n  - {name: n, members: ${top}}` : `x: ${top}`;
      return `apiVersion: gpiofabric/v1\n${lines.map((l) => `# anchor\n${where === 'root' ? '' : ''}${l}`).join('\n')}\n${body}\n`;
    }),
  },
);

function checkTopology(t: Topology): void {
  const chipIds = new Set<string>();
  const declared = new Map<string, number>();
  for (const c of t.chips) {
    assert.ok(!chipIds.has(c.id), `chip ${c.id} twice`);
    chipIds.add(c.id);
    assert.ok(Number.isInteger(c.ngpio) && c.ngpio >= 1 && c.ngpio <= MAX_NGPIO, `ngpio ${c.ngpio}`);
    assert.ok(c.names.length === 0 || c.names.length === c.ngpio, 'names: none or one per line');
    const biased = new Set<number>();
    for (const b of c.bias) {
      assert.ok(b.offset >= 0 && b.offset < c.ngpio && !biased.has(b.offset), `bias offset ${b.offset}`);
      biased.add(b.offset);
    }
    declared.set(c.id, c.ngpio);
  }
  const netNames = new Set<string>();
  const wired = new Set<string>();
  for (const n of t.nets) {
    assert.ok(!netNames.has(n.name), `net ${n.name} twice`);
    netNames.add(n.name);
    assert.ok(n.members.length >= 2, `net ${n.name} has ${n.members.length} members`);
    for (const m of n.members) {
      const ngpio = declared.get(m.chip);
      if (ngpio !== undefined) {
        assert.equal(m.line.kind, 'offset', 'lines of declared chips are resolved to offsets');
        if (m.line.kind === 'offset') assert.ok(m.line.offset < ngpio);
      }
      const key = `${m.chip}:${m.line.kind === 'offset' ? m.line.offset : m.line.name}`;
      assert.ok(!wired.has(key), `line ${key} in two nets`);
      wired.add(key);
    }
  }
  const driven = new Set<string>();
  for (const d of t.drives) {
    assert.ok(isDriveValue(d.value), `drive value ${d.value}`);
    const key = d.target.kind === 'net' ? `net ${d.target.net}` : `line ${d.target.line.chip}:${JSON.stringify(d.target.line.line)}`;
    if (d.target.kind === 'net') assert.ok(netNames.has(d.target.net));
    assert.ok(!driven.has(key), `${key} driven twice`);
    driven.add(key);
  }
}

function outcome(text: string): { ok: Topology } | { err: string } {
  try {
    return { ok: parseTopology(text) };
  } catch (e) {
    assert.ok(e instanceof FabricError, `parseTopology threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    assert.equal(e.code, ErrorCode.INVALID_ARGUMENT, `parseTopology threw ${e.code}: ${e.message}`);
    return { err: e.message };
  }
}

export const topologyTarget: FuzzTarget = {
  name: 'topology',
  description: 'random / mutated / alias-bomb topology documents (YAML and JSON) -> parseTopology',
  weight: 5,
  testRuns: 2000,
  property: () =>
    fc.property(docArb, (text) => {
      const a = outcome(text);
      if ('ok' in a) {
        checkTopology(a.ok);
        assert.deepEqual(outcome(text), a, 'parsing is deterministic');
      }
    }),
};
