/**
 * A small, strict VCD reader for the trace tests: enough of IEEE 1364 §18 to read back
 * what `gpio-fabric trace` writes (scalar wires, $scope/$upscope, $dumpvars, #time and
 * scalar value changes) and to reject anything malformed.
 */
import assert from 'node:assert/strict';

export interface ParsedSignal { readonly id: string; readonly scope: string; readonly ref: string }
export interface ParsedVcd {
  readonly date: string;
  readonly version: string;
  readonly timescale: string;
  readonly signals: readonly ParsedSignal[];
  /** Signal reference → initial value ('0' | '1' | 'x'). */
  readonly initial: ReadonlyMap<string, string>;
  /** Every `#time` in file order. */
  readonly times: readonly bigint[];
  /** Signal reference → its changes after the $dumpvars, in file order. */
  readonly changes: ReadonlyMap<string, readonly { time: bigint; value: string }[]>;
}

/** Parse `text`; throws (assert) on anything this reader does not understand. */
export function parseVcd(text: string): ParsedVcd {
  const tokens = text.split(/\s+/).filter((t) => t !== '');
  let i = 0;
  const next = (): string => {
    const t = tokens[i++];
    assert.ok(t !== undefined, 'unexpected end of file');
    return t;
  };
  const until = (): string[] => {
    const out: string[] = [];
    for (let t = next(); t !== '$end'; t = next()) out.push(t);
    return out;
  };
  let date = '';
  let version = '';
  let timescale = '';
  const scopes: string[] = [];
  const signals: ParsedSignal[] = [];
  const byId = new Map<string, ParsedSignal>();
  for (;;) {
    const t = next();
    if (t === '$enddefinitions') { assert.deepEqual(until(), []); break; }
    if (t === '$date') date = until().join(' ');
    else if (t === '$version') version = until().join(' ');
    else if (t === '$timescale') timescale = until().join(' ');
    else if (t === '$comment') until();
    else if (t === '$scope') {
      const [kind, name, ...rest] = until();
      assert.equal(kind, 'module');
      assert.ok(name !== undefined && rest.length === 0, 'one scope name');
      scopes.push(name);
    } else if (t === '$upscope') { assert.deepEqual(until(), []); assert.ok(scopes.pop() !== undefined, 'upscope without scope'); }
    else if (t === '$var') {
      const v = until();
      assert.equal(v.length, 4, `$var has type, size, id, reference: ${v.join(' ')}`);
      const [type, size, id, ref] = v as [string, string, string, string];
      assert.equal(type, 'wire');
      assert.equal(size, '1');
      assert.match(id, /^[\x21-\x7e]+$/);
      assert.ok(!byId.has(id), `identifier ${id} used twice`);
      const scope = scopes.at(-1);
      assert.ok(scope !== undefined, '$var outside a scope');
      const s = { id, scope, ref };
      byId.set(id, s);
      signals.push(s);
    } else assert.fail(`unexpected header token ${t}`);
  }
  assert.equal(scopes.length, 0, 'unclosed scope');
  const initial = new Map<string, string>();
  const times: bigint[] = [];
  const changes = new Map<string, { time: bigint; value: string }[]>(signals.map((s) => [s.ref, []]));
  let time: bigint | undefined;
  let inDump = false;
  while (i < tokens.length) {
    const t = next();
    if (t.startsWith('#')) {
      assert.match(t, /^#[0-9]+$/);
      time = BigInt(t.slice(1));
      times.push(time);
    } else if (t === '$dumpvars') {
      assert.equal(time, 0n, '$dumpvars at time 0');
      inDump = true;
    } else if (t === '$end') {
      assert.ok(inDump, '$end outside $dumpvars');
      inDump = false;
    } else {
      const m = /^([01xXzZ])([\x21-\x7e]+)$/.exec(t);
      assert.ok(m !== null, `bad value change ${t}`);
      const s = byId.get(m[2] ?? '');
      assert.ok(s !== undefined, `unknown identifier in ${t}`);
      assert.ok(time !== undefined, 'value change before any #time');
      if (inDump) initial.set(s.ref, m[1] ?? '');
      else changes.get(s.ref)?.push({ time, value: m[1] ?? '' });
    }
  }
  assert.ok(!inDump, 'unterminated $dumpvars');
  return { date, version, timescale, signals, initial, times, changes };
}
