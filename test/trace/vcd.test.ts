/**
 * The VCD writer and the trace recorder (pure, no I/O): exact text of a small dump,
 * identifiers, name sanitizing, and how events from per-chip streams become changes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  TraceRecorder, VcdEncoder, VcdOrderError, vcdHeaderText, vcdIdentifier, vcdName, vcdReferences, writeVcd,
  type TraceEvent, type TraceLine,
} from '../../services/linestate/src/vcd.ts';
import { parseVcd } from './vcd-parse.ts';

describe('VCD writer', () => {
  it('writes the exact text of a small dump', () => {
    const text = writeVcd(
      {
        date: '2026-01-02T03:04:05.000Z', version: 'gpio-fabric trace', comment: 'time 0 = start\nsecond line',
        signals: [{ scope: 'vm-a', name: 'vm-a.led0' }, { scope: 'vm-b', name: 'vm-b.reset n' }, { scope: 'vm-a', name: 'vm-a.3' }],
      },
      [0, 1, 'x'],
      [{ time: 5n, signal: 0, value: 1 }, { time: 5n, signal: 2, value: 0 }, { time: 1500n, signal: 1, value: 0 }],
      2000n,
    );
    assert.equal(text, [
      '$date', '\t2026-01-02T03:04:05.000Z', '$end',
      '$version', '\tgpio-fabric trace', '$end',
      '$comment', '\ttime 0 = start', '\tsecond line', '$end',
      '$timescale', '\t1 us', '$end',
      '$scope module vm-a $end',
      '$var wire 1 ! vm-a.led0 $end',
      '$var wire 1 # vm-a.3 $end',
      '$upscope $end',
      '$scope module vm-b $end',
      '$var wire 1 " vm-b.reset_n $end',
      '$upscope $end',
      '$enddefinitions $end',
      '#0', '$dumpvars', '0!', '1"', 'x#', '$end',
      '#5', '1!', '0#',
      '#1500', '0"',
      '#2000', '',
    ].join('\n'));
    const p = parseVcd(text);
    assert.equal(p.timescale, '1 us');
    assert.deepEqual(p.signals.map((s) => `${s.scope}/${s.ref}`), ['vm-a/vm-a.led0', 'vm-a/vm-a.3', 'vm-b/vm-b.reset_n']);
    assert.deepEqual([...p.initial], [['vm-a.led0', '0'], ['vm-b.reset_n', '1'], ['vm-a.3', 'x']]);
    assert.deepEqual(p.times, [0n, 5n, 1500n, 2000n]);
  });

  it('gives unique printable identifiers to many more than 94 signals', () => {
    assert.equal(vcdIdentifier(0), '!');
    assert.equal(vcdIdentifier(93), '~');
    assert.equal(vcdIdentifier(94), '!!');
    assert.equal(vcdIdentifier(95), '!"');
    assert.equal(vcdIdentifier(94 + 94 * 94 - 1), '~~');
    assert.equal(vcdIdentifier(94 + 94 * 94), '!!!');
    const n = 94 * 94 + 500;
    const ids = Array.from({ length: n }, (_, i) => vcdIdentifier(i));
    assert.equal(new Set(ids).size, n);
    for (const id of ids) assert.match(id, /^[\x21-\x7e]+$/);
    assert.throws(() => vcdIdentifier(-1), RangeError);
    // And a whole header with 300 signals reads back with 300 distinct identifiers.
    const signals = Array.from({ length: 300 }, (_, i) => ({ scope: `vm-${i % 3}`, name: `vm-${i % 3}.${i}` }));
    const p = parseVcd(vcdHeaderText({ date: 'd', version: 'v', signals }, signals.map((_, i) => (i % 2 === 0 ? 0 : 1))));
    assert.equal(p.signals.length, 300);
    assert.equal(new Set(p.signals.map((s) => s.id)).size, 300);
    assert.equal(p.initial.get('vm-1.7'), '1');
  });

  it('sanitizes names: no spaces or non-printable characters, unique within a scope', () => {
    assert.equal(vcdName('reset n'), 'reset_n');
    assert.equal(vcdName('a\tb\u00e9c'), 'a_b_c');
    assert.equal(vcdName(''), '_');
    assert.equal(vcdName('data[0]'), 'data[0]');
    const refs = vcdReferences([
      { scope: 'vm-a', name: 'vm-a.a b' }, { scope: 'vm-a', name: 'vm-a.a_b' }, { scope: 'vm-b', name: 'vm-a.a_b' }, { scope: 'vm-a', name: 'vm-a.a b' },
    ]);
    assert.deepEqual(refs, ['vm-a.a_b', 'vm-a.a_b~2', 'vm-a.a_b', 'vm-a.a_b~3']);
    const text = vcdHeaderText({ date: 'a $end b', version: 'v', signals: [{ scope: 'my chip', name: 'my chip.line one' }] }, [1]);
    assert.match(text, /^\$scope module my_chip \$end$/m);
    assert.match(text, /^\$var wire 1 ! my_chip\.line_one \$end$/m);
    const p = parseVcd(text);
    assert.equal(p.date, 'a $ end b', 'a $end in free text is defused');
    assert.deepEqual(p.signals, [{ id: '!', scope: 'my_chip', ref: 'my_chip.line_one' }]);
  });

  it('refuses times that go back and unknown signals', () => {
    const enc = new VcdEncoder(2);
    assert.equal(enc.changes([{ time: 10n, signal: 1, value: 1 }]), '#10\n1"\n');
    assert.equal(enc.changes([{ time: 10n, signal: 0, value: 0 }]), '0!\n', 'same time: no new #time line');
    assert.throws(() => enc.changes([{ time: 9n, signal: 0, value: 1 }]), VcdOrderError);
    assert.throws(() => enc.changes([{ time: 11n, signal: 2, value: 1 }]), VcdOrderError);
    assert.equal(enc.end(10n), '');
    assert.equal(enc.end(12n), '#12\n');
    assert.throws(() => vcdHeaderText({ date: '', version: '', signals: [{ scope: 'a', name: 'a.0' }] }, []), RangeError);
  });
});

const ORIGIN = 1_700_000_000_000_000_000n;
const ev = (chip: string, offset: number, level: number, seq: number, usAfterOrigin: number): TraceEvent =>
  ({ chip, offset, level, seq: BigInt(seq), timestampNs: ORIGIN + BigInt(usAfterOrigin) * 1000n });

describe('trace recorder', () => {
  const lines: TraceLine[] = [{ chip: 'vm-a', offset: 0, name: 'clk' }, { chip: 'vm-a', offset: 3, name: '' }, { chip: 'vm-b', offset: 1, name: 'irq' }];

  it('names signals CHIP.NAME or CHIP.OFFSET, one scope per chip', () => {
    const r = new TraceRecorder({ lines, originNs: ORIGIN, cursors: new Map(), holdMs: 0 });
    assert.deepEqual(r.signals, [{ scope: 'vm-a', name: 'vm-a.clk' }, { scope: 'vm-a', name: 'vm-a.3' }, { scope: 'vm-b', name: 'vm-b.irq' }]);
  });

  it('initial values: the snapshot, except lines with an event up to the cutoff start at its opposite', () => {
    const r = new TraceRecorder({ lines, originNs: ORIGIN, cursors: new Map([['vm-a', 10n], ['vm-b', 0n]]), holdMs: 0 });
    // vm-a:0 rose and fell between the cursor and the snapshot (the snapshot says 0), vm-b:1 rose.
    r.push(ev('vm-a', 0, 1, 11, 100), 0);
    r.push(ev('vm-a', 0, 0, 12, 200), 0);
    r.push(ev('vm-b', 1, 1, 1, 150), 0);
    r.push(ev('vm-b', 1, 0, 2, 900), 0); // after the cutoff: a change in the trace, not initial
    const initial = r.begin((i) => [0, 1, 1][i] ?? 0, new Map([['vm-a', 12n], ['vm-b', 1n]]));
    assert.deepEqual(initial, [0, 1, 0]);
    assert.deepEqual(r.drain(), [
      { time: 100n, signal: 0, value: 1 },
      { time: 150n, signal: 2, value: 1 },
      { time: 200n, signal: 0, value: 0 },
      { time: 900n, signal: 2, value: 0 },
    ]);
    assert.equal(r.stats.changes, 4);
  });

  it('drops repeated sequence numbers, counts gaps, ignores untraced lines and non-changes', () => {
    const r = new TraceRecorder({ lines, originNs: ORIGIN, cursors: new Map([['vm-a', 0n]]), holdMs: 0 });
    r.push(ev('vm-a', 0, 1, 1, 10), 0);
    r.push(ev('vm-a', 0, 1, 1, 10), 0); // repeated
    r.push(ev('vm-a', 5, 1, 2, 20), 0); // line not traced
    r.push(ev('vm-a', 3, 1, 5, 30), 0); // 3 and 4 missing
    r.push(ev('vm-a', 3, 1, 6, 40), 0); // same level again: no change
    assert.equal(r.seqOf('vm-a'), 6n);
    r.begin(() => 0, new Map([['vm-a', 0n]]));
    assert.deepEqual(r.drain(), [{ time: 10n, signal: 0, value: 1 }, { time: 30n, signal: 1, value: 1 }]);
    assert.deepEqual(r.stats, { changes: 2, duplicates: 1, lost: 2, shifted: 0 });
  });

  it('holds events so streams of several chips merge in time order; late ones never go back', () => {
    const r = new TraceRecorder({ lines, originNs: ORIGIN, cursors: new Map([['vm-a', 0n], ['vm-b', 0n]]), holdMs: 100 });
    r.begin(() => 0, new Map());
    r.push(ev('vm-a', 0, 1, 1, 500), 1000);
    r.push(ev('vm-b', 1, 1, 1, 300), 1050); // earlier timestamp, arrived later
    assert.deepEqual(r.drain(1099), [], 'nothing held long enough');
    assert.deepEqual(r.drain(1100), [], 'the earliest (vm-b) is still held, so vm-a waits behind it');
    assert.deepEqual(r.drain(1150), [{ time: 300n, signal: 2, value: 1 }, { time: 500n, signal: 0, value: 1 }]);
    r.push(ev('vm-b', 1, 0, 2, 400), 1200); // stamped before a change already written
    assert.deepEqual(r.drain(), [{ time: 500n, signal: 2, value: 0 }]);
    assert.equal(r.stats.shifted, 1);
    assert.equal(r.waiting, 0);
  });

  it('keeps pulses visible: a line changes at most once per time unit, never at time 0 or before', () => {
    const r = new TraceRecorder({ lines, originNs: ORIGIN, cursors: new Map([['vm-a', 0n]]), holdMs: 0 });
    r.begin(() => 0, new Map());
    r.push({ chip: 'vm-a', offset: 0, level: 1, seq: 1n, timestampNs: ORIGIN - 5000n }, 0); // before time 0
    r.push({ chip: 'vm-a', offset: 0, level: 0, seq: 2n, timestampNs: ORIGIN + 1200n }, 0); // same µs
    r.push({ chip: 'vm-a', offset: 3, level: 1, seq: 3n, timestampNs: ORIGIN + 1300n }, 0);
    assert.deepEqual(r.drain(), [
      { time: 1n, signal: 0, value: 1 },
      { time: 2n, signal: 0, value: 0 },
      { time: 2n, signal: 1, value: 1 },
    ]);
    assert.equal(r.stats.shifted, 3);
  });

  it('must begin before draining, and only once', () => {
    const r = new TraceRecorder({ lines, originNs: ORIGIN, cursors: new Map(), holdMs: 0 });
    assert.throws(() => r.drain());
    r.begin(() => 0, new Map());
    assert.throws(() => r.begin(() => 0, new Map()));
  });
});
