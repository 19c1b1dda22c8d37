/**
 * The offline Helm renderer (scripts/helm-render.ts) against small templates whose Helm
 * output is known: trim markers, nindent, toYaml layout, default on empty values, range
 * over maps in key order, variable scope, float64-vs-int comparisons, errors.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  FilesObj, GoInt, SchemaError, TemplateError, builtinFuncs, executeTemplate, goYaml, mergeValues, parseSet, parseTemplate, renderChart,
  semverCompare, validateSchema,
} from '../../scripts/helm-render.ts';
import type { Engine } from '../../scripts/helm-render.ts';

function render(src: string, data: unknown, extra: Record<string, string> = {}): string {
  const engine: Engine = { templates: new Map(), funcs: builtinFuncs() };
  for (const [name, s] of Object.entries({ ...extra, t: src })) {
    const p = parseTemplate(name, s);
    for (const [k, v] of p.defines) engine.templates.set(k, v);
    engine.templates.set(name, p.root);
  }
  return executeTemplate(engine, 't', data);
}

describe('text/template semantics', () => {
  it('trim markers remove all adjacent whitespace, newlines included', () => {
    assert.equal(render('a\n  {{- "x" }}\nb', {}), 'ax\nb');
    assert.equal(render('a {{ "x" -}}\n\n  b', {}), 'a xb');
    assert.equal(render('a\n{{- /* comment */ -}}\nb', {}), 'ab');
    assert.equal(render('a{{/* c */}}b', {}), 'ab');
    assert.equal(render('x: {{ 3 }}\n{{- if false }}\nno\n{{- end }}\ny', {}), 'x: 3\ny');
    // "-" must be followed by a space to be a trim marker: {{-3}} is the number -3
    assert.equal(render('a {{-3}} b', {}), 'a -3 b');
  });
  it('if / else if / else, with / else, and truthiness of empty values', () => {
    const t = '{{ if .a }}A{{ else if .b }}B{{ else }}C{{ end }}';
    assert.equal(render(t, { a: 1, b: 1 }), 'A');
    assert.equal(render(t, { a: 0, b: 'x' }), 'B');
    assert.equal(render(t, { a: '', b: [] }), 'C');
    assert.equal(render(t, { a: {}, b: false }), 'C');
    assert.equal(render('{{ with .x }}<{{ . }}>{{ else }}none{{ end }}', { x: 'v' }), '<v>');
    assert.equal(render('{{ with .x }}<{{ . }}>{{ else }}none{{ end }}', {}), 'none');
  });
  it('range over lists with index, over maps in sorted key order, else on empty', () => {
    assert.equal(render('{{ range $i, $v := .l }}{{ $i }}={{ $v }};{{ end }}', { l: ['a', 'b'] }), '0=a;1=b;');
    assert.equal(render('{{ range $k, $v := .m }}{{ $k }}={{ $v }};{{ end }}', { m: { b: 2, c: 3, a: 1, B: 0 } }), 'B=0;a=1;b=2;c=3;');
    assert.equal(render('{{ range .m }}{{ . }}{{ end }}', { m: { z: 1, y: 2 } }), '21');
    assert.equal(render('{{ range .l }}x{{ else }}empty{{ end }}', { l: [] }), 'empty');
    assert.equal(render('{{ range .l }}{{ $.top }}{{ . }}{{ end }}', { l: [1, 2], top: 'T' }), 'T1T2');
  });
  it('variables: := declares in the current scope, = assigns the outer one', () => {
    assert.equal(render('{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}', {}), '2');
    assert.equal(render('{{ $x := 1 }}{{ if true }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x }}', {}), '21');
    assert.throws(() => render('{{ if true }}{{ $y := 3 }}{{ end }}{{ $y }}', {}), /undefined variable: \$y/);
  });
  it('values are float64: eq/lt with an int literal fail like Helm, int converts; printf %d of a float64', () => {
    assert.throws(() => render('{{ eq .n 1 }}', { n: 1 }), /incompatible types for comparison/);
    assert.throws(() => render('{{ gt .n 1 }}', { n: 2 }), /incompatible types for comparison/);
    assert.equal(render('{{ eq (int .n) 1 }} {{ gt (int .n) 1 }} {{ eq .s "a" "b" }}', { n: 1, s: 'b' }), 'true false true');
    assert.equal(render('{{ printf "%d" .n }}|{{ printf "%d" (int .n) }}|{{ printf "%s-%v" "a" .n }}', { n: 8 }), '%!d(float64=8)|8|a-8');
    assert.equal(render('{{ .a }} {{ .b }} {{ .c }} {{ .d }}', { a: 1000000, b: 100000, c: 0.5, d: 1234567 }), '1e+06 100000 0.5 1.234567e+06');
    assert.equal(render('{{ 1000000 }}', {}), '1000000');
  });
  it('missing keys print nothing; a field of a missing map is a nil pointer error', () => {
    assert.equal(render('[{{ .a }}]', {}), '[]');
    assert.throws(() => render('{{ .a.b }}', {}), /nil pointer evaluating interface \{\}\.b/);
  });
  it('and/or return an operand and short-circuit', () => {
    assert.equal(render('{{ or "" "b" }} {{ and 1 0 }} {{ and 1 "x" }} {{ or 0 "" }}', {}), 'b 0 x ');
    assert.equal(render('{{ or true .missing.x }}', {}), 'true');
    assert.equal(render('{{ and false .missing.x }}', {}), 'false');
  });
  it('define / include / template, with pipes into nindent', () => {
    const helpers = '{{- define "lbl" -}}\na: {{ .x }}\nb: 2\n{{- end -}}';
    assert.equal(render('m:{{ include "lbl" . | nindent 2 }}\n{{ template "lbl" . }}', { x: 1 }, { h: helpers }), 'm:\n  a: 1\n  b: 2\na: 1\nb: 2');
    assert.throws(() => render('{{ include "nope" . }}', {}), /no template "nope"/);
  });
});

describe('Sprig and Helm functions', () => {
  it('default treats nil, "", 0, false and empty collections as empty', () => {
    assert.equal(render('{{ default "d" .missing }}|{{ default "d" "" }}|{{ default 5 0 }}|{{ default "d" false }}|{{ default "d" .l }}|{{ .x | default "d" }}', { l: [], x: 'v' }), 'd|d|5|d|d|v');
  });
  it('quote, squote, string functions, encodings', () => {
    assert.equal(render('{{ quote .n }} {{ .s | quote }} {{ squote "x" }}', { n: 8, s: 'a"b' }), '"8" "a\\"b" \'x\'');
    assert.equal(render('{{ "abcdef" | trunc 3 }} {{ "name-" | trimSuffix "-" }} {{ "a.b.c" | replace "." "-" }} {{ "AbC" | lower }} {{ "abc" | upper }}', {}), 'abc name a-b-c abc ABC');
    assert.equal(render('{{ b64enc "hello" }} {{ sha256sum "hello" }}', {}), 'aGVsbG8= 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824');
    assert.equal(render('{{ printf "%s-%s" "rel" "chart" | trunc 63 | trimSuffix "-" }}', {}), 'rel-chart');
    assert.equal(render('{{ join "," .l }} {{ ternary "y" "n" true }} {{ hasPrefix "re" "redis" }} {{ contains "@" "a@b" }}', { l: ['a', 'b'] }), 'a,b y true true');
  });
  it('toYaml: go-yaml layout (sorted keys, unindented sequences, quoting, literal blocks) and nindent', () => {
    assert.equal(render('spec:{{ toYaml .r | nindent 2 }}', { r: { limits: { memory: '128Mi', cpu: '100m' } } }), 'spec:\n  limits:\n    cpu: 100m\n    memory: 128Mi');
    assert.equal(goYaml({ b: [1, { w: 2, x: 's' }], a: [] }), 'a: []\nb:\n- 1\n- w: 2\n  x: s\n');
    assert.equal(goYaml({ t: 'true', n: '8080', e: '', c: 'a: b', m: 'l1\nl2\n', k: 'l1\nl2', y: 'yes', z: null, f: 1.5, i: 3 }),
      'c: \'a: b\'\ne: ""\nf: 1.5\ni: 3\nk: |-\n  l1\n  l2\nm: |\n  l1\n  l2\n"n": "8080"\nt: "true"\n"y": "yes"\nz: null\n');
    assert.equal(goYaml([[1, 2], { a: {} }]), '- - 1\n  - 2\n- a: {}\n');
    assert.equal(render('{{ toYaml .l | indent 4 }}', { l: [{ key: 'k', operator: 'Exists' }] }), '    - key: k\n      operator: Exists');
  });
  it('required and fail stop the render with the message and the position', () => {
    assert.throws(() => render('x: {{ required "need .x" .x }}', {}), (e: unknown) => e instanceof TemplateError && e.message === 'execution error at (t:1:4): need .x');
    assert.equal(render('{{ required "need" .x }}', { x: 'ok' }), 'ok');
    assert.throws(() => render('\n {{ fail "bad value" }}', {}), /execution error at \(t:2:2\): bad value/);
  });
  it('dict/list/set/append/hasKey, len and index', () => {
    assert.equal(render('{{ $d := dict "a" 1 }}{{ $_ := set $d "b" 2 }}{{ hasKey $d "b" }} {{ len $d }} {{ index $d "a" }} {{ $l := list 1 }}{{ $l = append $l 2 }}{{ len $l }}', {}), 'true 2 1 2');
  });
  it('semverCompare for the constraints the chart uses', () => {
    assert.equal(semverCompare('>=1.24-0', 'v1.30.0'), true);
    assert.equal(semverCompare('>=1.24-0', 'v1.23.4'), false);
    assert.equal(semverCompare('>=1.24-0', 'v1.24.0'), true);
  });
  it('.Files.Glob(...).AsConfig: base names to contents, as a YAML map', () => {
    const f = new FilesObj(new Map([['dashboards/b.json', '{\n  "x": 1\n}\n'], ['dashboards/a.json', '{}'], ['other/c.json', '[]']]));
    const g = f.Glob('dashboards/*.json');
    assert.equal(g.files.size, 2);
    assert.equal(g.AsConfig(), "a.json: '{}'\nb.json: |\n  {\n    \"x\": 1\n  }");
    assert.equal(f.Get('other/c.json'), '[]');
  });
});

describe('values', () => {
  it('merge: deep for maps, replace for lists and scalars, null deletes', () => {
    assert.deepEqual(mergeValues({ a: { b: 1, c: [1, 2], d: 'x' }, e: 1 }, { a: { b: 2, c: [3], d: null } }), { a: { b: 2, c: [3] }, e: 1 });
  });
  it('--set: dotted keys, list indexes, typed scalars, escaped commas', () => {
    const v = parseSet('a.b=1,a.c=true,l[1]=x,s=a\\,b,n=null,str=01x');
    assert.deepEqual(v.a, { b: new GoInt(1), c: true });
    assert.deepEqual(v.l, [null, 'x']); // Helm fills the gap with nil
    assert.equal(v.s, 'a,b');
    assert.equal(v.n, null);
    assert.equal(v.str, '01x');
    assert.deepEqual(parseSet('p=8', true), { p: '8' });
  });
  it('JSON Schema subset: types, bounds, enum, pattern, required, additionalProperties, $ref, if/then', () => {
    const schema = {
      type: 'object', additionalProperties: false, required: ['r'],
      definitions: { pos: { type: 'integer', minimum: 1 } },
      properties: {
        r: { $ref: '#/definitions/pos' },
        s: { type: 'string', enum: ['a', 'b'] },
        p: { type: 'string', pattern: '^/' },
        o: { type: 'object', properties: { on: { type: 'boolean' }, x: { type: 'string' } }, if: { properties: { on: { const: true } } }, then: { required: ['x'] } },
      },
    };
    assert.deepEqual(validateSchema(schema, { r: 2, s: 'a', p: '/x', o: { on: false } }), []);
    assert.deepEqual(validateSchema(schema, { r: 0 }), ['r: Must be greater than or equal to 1']);
    assert.deepEqual(validateSchema(schema, { r: 1.5 }), ['r: Invalid type. Expected: integer, given: number']);
    assert.deepEqual(validateSchema(schema, { r: 1, s: 'c' }), ['s: must be one of the following: "a", "b"']);
    assert.deepEqual(validateSchema(schema, { r: 1, p: 'rel' }), ["p: Does not match pattern '^/'"]);
    assert.deepEqual(validateSchema(schema, { r: 1, q: 1 }), ['(root): Additional property q is not allowed']);
    assert.deepEqual(validateSchema(schema, {}), ['(root): r is required']);
    assert.deepEqual(validateSchema(schema, { r: 1, o: { on: true } }), ['o: x is required']);
    assert.throws(() => validateSchema({ type: 'object', propertyNames: {} }, {}), SchemaError);
  });
});

describe('renderChart on a tiny chart', () => {
  it('splits documents, skips partials and empty files, validates values, reads .Files', () => {
    const dir = mkdtempSync(join(tmpdir(), 'gf-chart-'));
    try {
      mkdirSync(join(dir, 'templates'));
      mkdirSync(join(dir, 'files'));
      writeFileSync(join(dir, 'Chart.yaml'), 'apiVersion: v2\nname: tiny\nversion: 1.2.3\nappVersion: "9"\n');
      writeFileSync(join(dir, 'values.yaml'), 'n: 2\nname: x\n');
      writeFileSync(join(dir, 'values.schema.json'), JSON.stringify({ type: 'object', properties: { n: { type: 'integer', minimum: 1 } } }));
      writeFileSync(join(dir, 'files', 'a.txt'), 'hello');
      writeFileSync(join(dir, 'templates', '_h.tpl'), '{{ define "nm" }}{{ .Release.Name }}-{{ .Chart.Name }}{{ end }}');
      writeFileSync(join(dir, 'templates', 'a.yaml'), 'a: {{ include "nm" . }}\nv: {{ .Chart.Version }}/{{ .Chart.AppVersion }}\n---\nb: {{ .Values.n }}\nf: {{ .Files.Get "files/a.txt" }}\nns: {{ .Release.Namespace }}\n');
      writeFileSync(join(dir, 'templates', 'empty.yaml'), '{{- if false }}\nx: 1\n{{- end }}\n');
      writeFileSync(join(dir, 'templates', 'NOTES.txt'), 'hi {{ .Values.name }}');
      const r = renderChart({ chartDir: dir, set: ['name=y'], releaseName: 'rel', namespace: 'ns1' });
      assert.deepEqual(r.docs.map((d) => [d.source, d.text]), [
        ['tiny/templates/a.yaml', 'a: rel-tiny\nv: 1.2.3/9'],
        ['tiny/templates/a.yaml', 'b: 2\nf: hello\nns: ns1'],
      ]);
      assert.equal(r.notes, 'hi y');
      assert.throws(() => renderChart({ chartDir: dir, set: ['n=0'] }), (e: unknown) => e instanceof SchemaError && e.message.includes('- n: Must be greater than or equal to 1'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
