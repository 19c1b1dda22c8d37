/**
 * Offline Helm renderer for the gpio-fabric chart (`npm run helm:render`).
 *
 * No `helm` binary is available on the machines this project is developed on, and no
 * pure-JS renderer of Helm's Go templates exists, so this module implements the subset of
 * Go text/template + Sprig + Helm that helm/gpio-fabric uses, with Helm's semantics where
 * they matter (whitespace trim markers, variable scoping, range over maps in key order,
 * float64 values vs int literals in comparisons and printf, "nil pointer evaluating" on a
 * field of a missing map, go-yaml's toYaml layout, values merging, values.schema.json).
 * Anything outside the subset is an error, never a silent guess. Keep the chart inside it.
 *
 * CLI: `tsx scripts/helm-render.ts [CHART_DIR] [-f values.yaml]... [--set a.b=c]...
 *       [--set-string a=b] [--release NAME] [--namespace NS] [--kube-version v1.30.0]
 *       [--api-versions monitoring.coreos.com/v1] [--show-only templates/x.yaml] [--notes]`
 */
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync, existsSync } from 'node:fs';
import { join, relative, basename, posix } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parse as parseYaml } from 'yaml';

// ---------------------------------------------------------------------------------------
// Values of the template language
// ---------------------------------------------------------------------------------------

/** A Go `int` (template integer literals, `int`, `len`, range indexes, --set integers). Plain JS numbers are Go float64 (YAML values). */
export class GoInt {
  constructor(readonly v: number) {}
}
/** A Go method value bound to an object (e.g. `.Capabilities.APIVersions.Has`). */
type GoFunc = (...args: unknown[]) => unknown;

/** An error raised while parsing or executing a template; message in Helm's shape. */
export class TemplateError extends Error {
  override readonly name = 'TemplateError';
}
/** Values failed values.schema.json. */
export class SchemaError extends Error {
  override readonly name = 'SchemaError';
}

const isMap = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof GoInt) && !(v instanceof FilesObj) && Object.getPrototypeOf(v) === Object.prototype;

/** Go's fmt %v of a float64: strconv 'g' with shortest digits, exponent form when exp < -4 || exp >= 6 (Helm prints 1000000 from values as 1e+06). */
export function formatFloat(f: number): string {
  if (Number.isNaN(f)) return 'NaN';
  if (!Number.isFinite(f)) return f > 0 ? '+Inf' : '-Inf';
  if (f === 0) return Object.is(f, -0) ? '-0' : '0';
  const [mant, ex] = f.toExponential().split('e') as [string, string];
  const e = Number(ex);
  if (e < -4 || e >= 6) return `${mant}e${e < 0 ? '-' : '+'}${String(Math.abs(e)).padStart(2, '0')}`;
  // plain notation with the shortest digits
  return e < 0 ? f.toFixed(Math.max(0, mant.replace(/^-?[0-9]\.?/, '').length - e)) : String(f);
}

function goTypeName(v: unknown): string {
  if (v === null || v === undefined) return '<nil>';
  if (v instanceof GoInt) return 'int';
  if (typeof v === 'number') return 'float64';
  if (typeof v === 'string') return 'string';
  if (typeof v === 'boolean') return 'bool';
  if (Array.isArray(v)) return '[]interface {}';
  if (typeof v === 'function') return 'func';
  return 'map[string]interface {}';
}

/** fmt %v. */
export function printValue(v: unknown, top = true): string {
  if (v === null || v === undefined) return top ? '' : '<nil>'; // Helm replaces "<no value>" with ""
  if (v instanceof GoInt) return String(v.v);
  if (typeof v === 'number') return formatFloat(v);
  if (typeof v === 'string') return v;
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (Array.isArray(v)) return `[${v.map((x) => printValue(x, false)).join(' ')}]`;
  if (v instanceof FilesObj) return '{}';
  if (isMap(v)) return `map[${Object.keys(v).sort().map((k) => `${k}:${printValue(v[k], false)}`).join(' ')}]`;
  return String(v);
}

/** Go template truth. */
export function truth(v: unknown): boolean {
  if (v === null || v === undefined) return false;
  if (typeof v === 'boolean') return v;
  if (typeof v === 'number') return v !== 0;
  if (v instanceof GoInt) return v.v !== 0;
  if (typeof v === 'string') return v.length > 0;
  if (Array.isArray(v)) return v.length > 0;
  if (isMap(v)) return Object.keys(v).length > 0;
  if (v instanceof FilesObj) return v.files.size > 0; // Helm's Files is a map
  return true;
}
/** Sprig's `empty`. */
const empty = (v: unknown): boolean => !truth(v);

// ---------------------------------------------------------------------------------------
// go-yaml (v2, through sigs.k8s.io/yaml) emitter: what Helm's toYaml prints
// ---------------------------------------------------------------------------------------

const YAML11_SPECIAL = /^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF|null|Null|NULL|~|\.inf|\.Inf|\.INF|-\.inf|-\.Inf|-\.INF|\.nan|\.NaN|\.NAN)$/;
const NUMBERISH = /^[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?$|^[-+]?0x[0-9a-fA-F_]+$|^[-+]?0o?[0-7_]+$|^[-+]?0b[01_]+$|^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$|^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}/;

function scalarNeedsDoubleQuotes(s: string): boolean {
  return s === '' || YAML11_SPECIAL.test(s) || NUMBERISH.test(s);
}
function plainAllowed(s: string): boolean {
  if (s.length === 0) return false;
  if (/^\s|\s$/.test(s)) return false;
  if (/^[-?:](\s|$)/.test(s)) return false;
  if (/^[,[\]{}#&*!|>'"%@`]/.test(s)) return false;
  if (/: |:$| #|[\t\n\r]/.test(s)) return false;
  if (/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/.test(s)) return false;
  if (s.startsWith('---') || s.startsWith('...')) return false;
  return true;
}
function doubleQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\r') out += '\\r';
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, '0').toUpperCase()}`;
    else out += ch;
  }
  return `${out}"`;
}
function yamlScalarString(s: string, indent: number): string {
  if (s.includes('\n') && !/^[ \t]/.test(s) && !/[ \t]\n/.test(s) && !/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\r]/.test(s)) {
    const m = /\n*$/.exec(s)![0].length;
    const chomp = m === 0 ? '-' : m === 1 ? '' : '+';
    const body = m === 0 ? s : s.slice(0, s.length - (chomp === '+' ? 0 : 1));
    const pad = ' '.repeat(indent);
    const lines = body.split('\n');
    if (chomp === '+') lines.pop();
    return `|${chomp}\n${lines.map((l) => (l === '' ? '' : pad + l)).join('\n')}`;
  }
  if (scalarNeedsDoubleQuotes(s)) return doubleQuote(s);
  if (plainAllowed(s)) return s;
  if (!/[\n\r\t\x00-\x1f\x7f]/.test(s)) return `'${s.replace(/'/g, "''")}'`;
  return doubleQuote(s);
}
function jsonNumber(n: number): string {
  // sigs.k8s.io/yaml goes through JSON: integral float64 values come back as ints
  if (Number.isInteger(n) && Math.abs(n) < 1e21) return String(n);
  return String(n);
}
function toJsonable(v: unknown): unknown {
  if (v instanceof GoInt) return v.v;
  if (Array.isArray(v)) return v.map(toJsonable);
  if (v instanceof FilesObj) return {};
  if (isMap(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toJsonable(x)]));
  if (v === undefined) return null;
  return v;
}

/** go-yaml v2 layout: keys sorted, sequences not indented under their key, multi-line strings as literal blocks. */
export function goYaml(value: unknown): string {
  const v = toJsonable(value);
  const lines: string[] = [];
  const scalar = (x: unknown, indent: number): string | undefined => {
    if (x === null) return 'null';
    if (typeof x === 'boolean') return x ? 'true' : 'false';
    if (typeof x === 'number') return jsonNumber(x);
    if (typeof x === 'string') return yamlScalarString(x, indent);
    if (Array.isArray(x) && x.length === 0) return '[]';
    if (isMap(x) && Object.keys(x).length === 0) return '{}';
    return undefined;
  };
  const emit = (x: unknown, indent: number, prefix: string): void => {
    // prefix: text already on the current line ("" for a fresh line)
    const pad = ' '.repeat(indent);
    if (Array.isArray(x)) {
      x.forEach((item, i) => {
        const head = i === 0 && prefix !== '' ? prefix : pad;
        const s = scalar(item, indent + 2);
        if (s !== undefined) lines.push(`${head}- ${s}`);
        else emit(item, indent + 2, `${head}- `);
      });
      return;
    }
    if (isMap(x)) {
      Object.keys(x).sort().forEach((k, i) => {
        const head = i === 0 && prefix !== '' ? prefix : pad;
        const key = yamlScalarString(k, indent);
        const val = x[k];
        const s = scalar(val, indent + 2);
        if (s !== undefined) lines.push(`${head}${key}: ${s}`);
        else if (Array.isArray(val)) {
          lines.push(`${head}${key}:`);
          emit(val, indent, '');
        } else {
          lines.push(`${head}${key}:`);
          emit(val, indent + 2, '');
        }
      });
      return;
    }
    lines.push(prefix + scalar(x, indent)!);
  };
  const top = scalar(v, 0);
  if (top !== undefined) return `${top}\n`;
  emit(v, 0, '');
  return `${lines.join('\n')}\n`;
}

// ---------------------------------------------------------------------------------------
// Lexer and parser (text/template)
// ---------------------------------------------------------------------------------------

type Tok =
  | { k: 'field'; name: string; sp: boolean }
  | { k: 'dot'; sp: boolean }
  | { k: 'var'; name: string; sp: boolean }
  | { k: 'ident'; name: string; sp: boolean }
  | { k: 'str'; v: string; sp: boolean }
  | { k: 'num'; v: number; int: boolean; sp: boolean }
  | { k: 'bool'; v: boolean; sp: boolean }
  | { k: 'nil'; sp: boolean }
  | { k: 'op'; v: '(' | ')' | '|' | ':=' | '=' | ','; sp: boolean };

interface Pos { readonly line: number; readonly col: number }

type Operand =
  | { t: 'dot' }
  | { t: 'field'; chain: string[] } // .A.B from dot
  | { t: 'var'; name: string; chain: string[] }
  | { t: 'ident'; name: string }
  | { t: 'lit'; v: unknown }
  | { t: 'pipe'; pipe: Pipe; chain: string[] };
interface Cmd { args: Operand[] }
interface Pipe { decl: string[]; assign: boolean; cmds: Cmd[]; pos: Pos }

type Node =
  | { n: 'text'; s: string }
  | { n: 'action'; pipe: Pipe }
  | { n: 'if' | 'with'; pipe: Pipe; list: Node[]; elseList: Node[] | undefined }
  | { n: 'range'; pipe: Pipe; list: Node[]; elseList: Node[] | undefined }
  | { n: 'template'; name: string; pipe: Pipe | undefined; pos: Pos }
  | { n: 'break' | 'continue' };

interface RawAction { body: string; pos: Pos }
type Piece = { kind: 'text'; s: string } | { kind: 'action'; a: RawAction };

function posAt(src: string, i: number): Pos {
  let line = 1;
  let last = -1;
  for (let j = 0; j < i; j++) if (src.charCodeAt(j) === 10) { line++; last = j; }
  return { line, col: i - last };
}

/** Split a template into text and action pieces, applying trim markers. */
function scan(src: string, name: string): Piece[] {
  const pieces: Piece[] = [];
  let i = 0;
  let trimNext = false;
  while (i < src.length) {
    const open = src.indexOf('{{', i);
    let text = open < 0 ? src.slice(i) : src.slice(i, open);
    if (trimNext) text = text.replace(/^\s+/, '');
    if (open < 0) {
      if (text !== '') pieces.push({ kind: 'text', s: text });
      break;
    }
    let j = open + 2;
    let trimLeft = false;
    if (src[j] === '-' && /\s/.test(src[j + 1] ?? '')) { trimLeft = true; j += 2; }
    if (trimLeft) text = text.replace(/\s+$/, '');
    if (text !== '') pieces.push({ kind: 'text', s: text });
    const pos = posAt(src, open);
    // find the closing delimiter, skipping string literals and comments
    let k = j;
    let body = '';
    let trimRight = false;
    const rest = src.slice(j).replace(/^\s*/, '');
    if (rest.startsWith('/*')) {
      const c = src.indexOf('*/', j);
      if (c < 0) throw new TemplateError(`template: ${name}:${pos.line}: unclosed comment`);
      k = c + 2;
      const m = /^(\s*-)?}}/.exec(src.slice(k).replace(/^\s+(?=-}})/, (s) => s));
      const after = src.slice(k);
      const mm = /^(\s+-)?}}/.exec(after);
      void m;
      if (mm === null) throw new TemplateError(`template: ${name}:${pos.line}: comment ends before closing delimiter`);
      trimRight = mm[1] !== undefined;
      i = k + mm[0].length;
      trimNext = trimRight;
      continue;
    }
    for (;;) {
      if (k >= src.length) throw new TemplateError(`template: ${name}:${pos.line}: unclosed action`);
      const ch = src[k]!;
      if (ch === '"' || ch === '`' || ch === "'") {
        const q = ch;
        k++;
        while (k < src.length && src[k] !== q) { if (q !== '`' && src[k] === '\\') k++; k++; }
        k++;
        continue;
      }
      if (/\s/.test(ch) && src[k + 1] === '-' && src.startsWith('}}', k + 2)) {
        body = src.slice(j, k);
        trimRight = true;
        k += 4;
        break;
      }
      if (src.startsWith('}}', k)) {
        body = src.slice(j, k);
        k += 2;
        break;
      }
      k++;
    }
    pieces.push({ kind: 'action', a: { body, pos } });
    trimNext = trimRight;
    i = k;
  }
  return pieces;
}

function lex(body: string, where: string): Tok[] {
  const toks: Tok[] = [];
  let i = 0;
  let sp = true;
  while (i < body.length) {
    const ch = body[i]!;
    if (/\s/.test(ch)) { i++; sp = true; continue; }
    const push = (t: Tok): void => { toks.push(t); sp = false; };
    if (ch === '"') {
      let j = i + 1;
      let s = '';
      while (j < body.length && body[j] !== '"') {
        if (body[j] === '\\') {
          const e = body[j + 1]!;
          const map: Record<string, string> = { n: '\n', t: '\t', r: '\r', '\\': '\\', '"': '"', "'": "'", a: '\x07', b: '\b', f: '\f', v: '\v', '0': '\0' };
          if (e === 'x') { s += String.fromCharCode(parseInt(body.slice(j + 2, j + 4), 16)); j += 4; continue; }
          if (e === 'u') { s += String.fromCharCode(parseInt(body.slice(j + 2, j + 6), 16)); j += 6; continue; }
          if (map[e] === undefined) throw new TemplateError(`${where}: unknown escape sequence \\${e}`);
          s += map[e];
          j += 2;
          continue;
        }
        s += body[j];
        j++;
      }
      if (j >= body.length) throw new TemplateError(`${where}: unterminated quoted string`);
      push({ k: 'str', v: s, sp });
      i = j + 1;
      continue;
    }
    if (ch === '`') {
      const j = body.indexOf('`', i + 1);
      if (j < 0) throw new TemplateError(`${where}: unterminated raw quoted string`);
      push({ k: 'str', v: body.slice(i + 1, j), sp });
      i = j + 1;
      continue;
    }
    if (ch === "'") {
      const j = body.indexOf("'", i + 1);
      push({ k: 'num', v: body.codePointAt(i + 1)!, int: true, sp });
      i = j + 1;
      continue;
    }
    if (body.startsWith(':=', i)) { push({ k: 'op', v: ':=', sp }); i += 2; continue; }
    if ('()|=,'.includes(ch)) { push({ k: 'op', v: ch as '(' | ')' | '|' | '=' | ',', sp }); i++; continue; }
    if (ch === '.') {
      const m = /^\.[A-Za-z_][A-Za-z0-9_]*/.exec(body.slice(i));
      if (m !== null) { push({ k: 'field', name: m[0].slice(1), sp }); i += m[0].length; continue; }
      if (/^\.[0-9]/.test(body.slice(i))) {
        // number like .5
      } else { push({ k: 'dot', sp }); i++; continue; }
    }
    if (ch === '$') {
      const m = /^\$[A-Za-z0-9_]*/.exec(body.slice(i))!;
      push({ k: 'var', name: m[0], sp });
      i += m[0].length;
      continue;
    }
    const num = /^[-+]?(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|(?:[0-9][0-9_]*)?\.?[0-9_]+(?:[eE][-+]?[0-9]+)?)/.exec(body.slice(i));
    if (num !== null && /[0-9]/.test(num[0])) {
      const t = num[0].replace(/_/g, '');
      const isInt = !/[.eE]/.test(t) || /^[-+]?0[xX]/.test(t);
      push({ k: 'num', v: Number(t.replace(/^([-+]?)0[oO]/, '$10o')), int: isInt, sp });
      i += num[0].length;
      continue;
    }
    const id = /^[A-Za-z_][A-Za-z0-9_]*/.exec(body.slice(i));
    if (id !== null) {
      const w = id[0];
      if (w === 'true' || w === 'false') push({ k: 'bool', v: w === 'true', sp });
      else if (w === 'nil') push({ k: 'nil', sp });
      else push({ k: 'ident', name: w, sp });
      i += w.length;
      continue;
    }
    throw new TemplateError(`${where}: unexpected "${ch}" in command`);
  }
  return toks;
}

class PipeParser {
  private i = 0;
  constructor(private readonly toks: Tok[], private readonly where: string, private readonly pos: Pos) {}
  done(): boolean { return this.i >= this.toks.length; }
  peek(): Tok | undefined { return this.toks[this.i]; }
  next(): Tok | undefined { return this.toks[this.i++]; }

  pipeline(allowDecl: boolean, stopAt?: ')'): Pipe {
    const decl: string[] = [];
    let assign = false;
    if (allowDecl) {
      // $x := | $x = | $i, $v :=
      const save = this.i;
      const names: string[] = [];
      for (;;) {
        const t = this.peek();
        if (t?.k !== 'var') break;
        this.i++;
        names.push(t.name);
        const n = this.peek();
        if (n?.k === 'op' && n.v === ',') { this.i++; continue; }
        if (n?.k === 'op' && (n.v === ':=' || n.v === '=')) { this.i++; assign = n.v === '='; decl.push(...names); break; }
        names.length = 0;
        break;
      }
      if (decl.length === 0) this.i = save;
    }
    const cmds: Cmd[] = [];
    for (;;) {
      const args: Operand[] = [];
      for (;;) {
        const t = this.peek();
        if (t === undefined) break;
        if (t.k === 'op' && (t.v === '|' || t.v === ')')) break;
        args.push(this.operand());
      }
      if (args.length === 0) throw new TemplateError(`${this.where}: missing value for command`);
      cmds.push({ args });
      const t = this.peek();
      if (t?.k === 'op' && t.v === '|') { this.i++; continue; }
      if (t?.k === 'op' && t.v === ')' && stopAt === ')') break;
      if (t === undefined) break;
      throw new TemplateError(`${this.where}: unexpected ${JSON.stringify(t)} in operand`);
    }
    return { decl, assign, cmds, pos: this.pos };
  }

  private chain(): string[] {
    const out: string[] = [];
    for (;;) {
      const t = this.peek();
      if (t?.k === 'field' && !t.sp) { out.push(t.name); this.i++; } else break;
    }
    return out;
  }

  private operand(): Operand {
    const t = this.next()!;
    switch (t.k) {
      case 'dot': return { t: 'dot' };
      case 'field': return { t: 'field', chain: [t.name, ...this.chain()] };
      case 'var': return { t: 'var', name: t.name, chain: this.chain() };
      case 'ident': return { t: 'ident', name: t.name };
      case 'str': return { t: 'lit', v: t.v };
      case 'num': return { t: 'lit', v: t.int ? new GoInt(t.v) : t.v };
      case 'bool': return { t: 'lit', v: t.v };
      case 'nil': return { t: 'lit', v: null };
      case 'op':
        if (t.v === '(') {
          const p = this.pipeline(true, ')');
          const c = this.next();
          if (c?.k !== 'op' || c.v !== ')') throw new TemplateError(`${this.where}: unclosed left paren`);
          return { t: 'pipe', pipe: p, chain: this.chain() };
        }
    }
    throw new TemplateError(`${this.where}: unexpected "${String((t as { v?: unknown }).v ?? ')')}" in operand`);
  }
}

/** A parsed template file: its body and the templates it defines. */
export interface ParsedFile { readonly name: string; readonly root: Node[]; readonly defines: Map<string, Node[]> }

/** Parse one template file (Go text/template syntax). */
export function parseTemplate(name: string, src: string): ParsedFile {
  const pieces = scan(src, name);
  const defines = new Map<string, Node[]>();
  let idx = 0;
  type Stop = { word: 'end' | 'else'; elseRest?: Tok[]; elsePos?: Pos };
  const where = (p: Pos): string => `template: ${name}:${p.line}:${p.col}`;
  const parseList = (inside: string | undefined): { list: Node[]; stop: Stop | undefined } => {
    const list: Node[] = [];
    while (idx < pieces.length) {
      const p = pieces[idx++]!;
      if (p.kind === 'text') { list.push({ n: 'text', s: p.s }); continue; }
      const w = where(p.a.pos);
      const toks = lex(p.a.body, w);
      const first = toks[0];
      if (first === undefined) throw new TemplateError(`${w}: missing value for command`);
      if (first.k === 'ident') {
        const kw = first.name;
        const rest = toks.slice(1);
        if (kw === 'end') {
          if (inside === undefined) throw new TemplateError(`${w}: unexpected {{end}}`);
          return { list, stop: { word: 'end' } };
        }
        if (kw === 'else') {
          if (inside === undefined || inside === 'define') throw new TemplateError(`${w}: unexpected {{else}}`);
          return { list, stop: { word: 'else', elseRest: rest, elsePos: p.a.pos } };
        }
        if (kw === 'if' || kw === 'with' || kw === 'range') {
          list.push(parseControl(kw, rest, p.a.pos));
          continue;
        }
        if (kw === 'define' || kw === 'block') {
          const nameTok = rest[0];
          if (nameTok?.k !== 'str') throw new TemplateError(`${w}: ${kw} needs a quoted name`);
          const body = parseList('define');
          if (body.stop?.word !== 'end') throw new TemplateError(`${w}: unexpected EOF in ${kw}`);
          defines.set(nameTok.v, body.list);
          if (kw === 'block') {
            const pp = new PipeParser(rest.slice(1), w, p.a.pos);
            list.push({ n: 'template', name: nameTok.v, pipe: pp.pipeline(false), pos: p.a.pos });
          }
          continue;
        }
        if (kw === 'template') {
          const nameTok = rest[0];
          if (nameTok?.k !== 'str') throw new TemplateError(`${w}: template needs a quoted name`);
          const pipe = rest.length > 1 ? new PipeParser(rest.slice(1), w, p.a.pos).pipeline(false) : undefined;
          list.push({ n: 'template', name: nameTok.v, pipe, pos: p.a.pos });
          continue;
        }
        if (kw === 'break' || kw === 'continue') { list.push({ n: kw }); continue; }
      }
      list.push({ n: 'action', pipe: new PipeParser(toks, w, p.a.pos).pipeline(true) });
    }
    if (inside !== undefined) throw new TemplateError(`template: ${name}: unexpected EOF`);
    return { list, stop: undefined };
  };
  const parseControl = (kw: 'if' | 'with' | 'range', rest: Tok[], pos: Pos): Node => {
    const w = where(pos);
    const pipe = new PipeParser(rest, w, pos).pipeline(true);
    if (pipe.cmds.length === 0) throw new TemplateError(`${w}: missing value for ${kw}`);
    const body = parseList(kw);
    let elseList: Node[] | undefined;
    if (body.stop?.word === 'else') {
      const er = body.stop.elseRest ?? [];
      const e0 = er[0];
      if (e0?.k === 'ident' && (e0.name === 'if' || e0.name === 'with') && kw !== 'range') {
        // else if / else with: a nested control that shares our {{end}}
        elseList = [parseControl(e0.name, er.slice(1), body.stop.elsePos!)];
      } else {
        const eb = parseList(kw);
        if (eb.stop?.word !== 'end') throw new TemplateError(`${w}: expected end; found else`);
        elseList = eb.list;
      }
    } else if (body.stop?.word !== 'end') throw new TemplateError(`${w}: unexpected EOF`);
    if (kw === 'range') return { n: 'range', pipe, list: body.list, elseList };
    return { n: kw, pipe, list: body.list, elseList };
  };
  const { list } = parseList(undefined);
  return { name, root: list, defines };
}

// ---------------------------------------------------------------------------------------
// Execution
// ---------------------------------------------------------------------------------------

class BreakSignal { constructor(readonly kind: 'break' | 'continue') {} }

/** Helm's .Files (the chart's non-template files). */
export class FilesObj {
  constructor(readonly files: ReadonlyMap<string, string>) {}
  Get = (name: unknown): string => this.files.get(String(name)) ?? '';
  Glob = (pattern: unknown): FilesObj => {
    const re = globToRegex(String(pattern));
    return new FilesObj(new Map([...this.files].filter(([k]) => re.test(k))));
  };
  AsConfig = (): string => {
    if (this.files.size === 0) return '';
    const m: Record<string, string> = {};
    for (const [k, v] of this.files) m[posix.basename(k)] = v;
    return goYaml(m).replace(/\n$/, '');
  };
  AsSecrets = (): string => {
    if (this.files.size === 0) return '';
    const m: Record<string, string> = {};
    for (const [k, v] of this.files) m[posix.basename(k)] = Buffer.from(v).toString('base64');
    return goYaml(m).replace(/\n$/, '');
  };
  Lines = (name: unknown): string[] => (this.files.get(String(name)) ?? '').split('\n');
}
function globToRegex(g: string): RegExp {
  let re = '';
  for (let i = 0; i < g.length; i++) {
    const c = g[i]!;
    if (c === '*' && g[i + 1] === '*') { re += '.*'; i++; } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

interface Frame { name: string; value: unknown }

/** Everything one render shares: the defined templates and the top-level context. */
export interface Engine {
  readonly templates: Map<string, Node[]>;
  /** Sprig/Helm functions by name. */
  readonly funcs: Record<string, (ctx: ExecCtx, ...args: unknown[]) => unknown>;
}
interface ExecCtx { readonly engine: Engine; readonly tplName: string; readonly pos: Pos; readonly depth: number }

function fieldOf(v: unknown, name: string, ctx: ExecCtx, chainSoFar: string): unknown {
  if (v === null || v === undefined) throw new TemplateError(`template: ${ctx.tplName}:${ctx.pos.line}:${ctx.pos.col}: executing "${ctx.tplName}" at <${chainSoFar}>: nil pointer evaluating interface {}.${name}`);
  if (isMap(v)) return Object.prototype.hasOwnProperty.call(v, name) ? v[name] : undefined;
  if (typeof v === 'object' && name in (v as object)) return (v as Record<string, unknown>)[name];
  throw new TemplateError(`template: ${ctx.tplName}:${ctx.pos.line}:${ctx.pos.col}: executing "${ctx.tplName}" at <${chainSoFar}>: can't evaluate field ${name} in type ${goTypeName(v)}`);
}

class Exec {
  private vars: Frame[];
  private out = '';
  constructor(private readonly engine: Engine, private readonly tplName: string, root: unknown, private readonly depth: number) {
    this.vars = [{ name: '$', value: root }];
    if (depth > 100) throw new TemplateError(`template: ${tplName}: exceeded max template depth (recursion?)`);
  }
  run(list: Node[], dot: unknown): string {
    this.walk(list, dot);
    return this.out;
  }
  private ctx(pos: Pos): ExecCtx { return { engine: this.engine, tplName: this.tplName, pos, depth: this.depth }; }
  private lookup(name: string, pos: Pos): unknown {
    for (let i = this.vars.length - 1; i >= 0; i--) if (this.vars[i]!.name === name) return this.vars[i]!.value;
    throw new TemplateError(`template: ${this.tplName}:${pos.line}: undefined variable: ${name}`);
  }
  private walk(list: Node[], dot: unknown): void {
    for (const node of list) {
      switch (node.n) {
        case 'text': this.out += node.s; break;
        case 'action': {
          const v = this.pipe(node.pipe, dot);
          if (node.pipe.decl.length === 0) this.out += printValue(v);
          break;
        }
        case 'if':
        case 'with': {
          const mark = this.vars.length;
          const v = this.pipe(node.pipe, dot);
          if (truth(v)) this.walk(node.list, node.n === 'with' ? v : dot);
          else if (node.elseList !== undefined) this.walk(node.elseList, dot);
          this.vars.length = mark;
          break;
        }
        case 'range': this.range(node, dot); break;
        case 'template': {
          const body = this.engine.templates.get(node.name);
          if (body === undefined) throw new TemplateError(`template: ${this.tplName}:${node.pos.line}:${node.pos.col}: no such template "${node.name}"`);
          const data = node.pipe === undefined ? null : this.pipe(node.pipe, dot);
          this.out += new Exec(this.engine, node.name, data, this.depth + 1).run(body, data);
          break;
        }
        case 'break':
        case 'continue': throw new BreakSignal(node.n);
      }
    }
  }
  private range(node: Extract<Node, { n: 'range' }>, dot: unknown): void {
    const mark = this.vars.length;
    const decl = node.pipe.decl;
    const v = this.pipe({ ...node.pipe, decl: [] }, dot);
    let items: [unknown, unknown][];
    if (v === null || v === undefined) items = [];
    else if (Array.isArray(v)) items = v.map((x, i) => [new GoInt(i), x]);
    else if (isMap(v)) items = Object.keys(v).sort().map((k) => [k, v[k]]);
    else if (v instanceof GoInt) items = Array.from({ length: Math.max(0, v.v) }, (_, i) => [new GoInt(i), new GoInt(i)]);
    else throw new TemplateError(`template: ${this.tplName}:${node.pipe.pos.line}: range can't iterate over ${printValue(v)}`);
    if (items.length === 0) {
      if (node.elseList !== undefined) this.walk(node.elseList, dot);
      this.vars.length = mark;
      return;
    }
    for (const [k, x] of items) {
      const inner = this.vars.length;
      if (decl.length === 1) this.vars.push({ name: decl[0]!, value: x });
      else if (decl.length === 2) this.vars.push({ name: decl[0]!, value: k }, { name: decl[1]!, value: x });
      try {
        this.walk(node.list, x);
      } catch (e) {
        if (!(e instanceof BreakSignal)) throw e;
        if (e.kind === 'break') { this.vars.length = inner; break; }
      }
      this.vars.length = inner;
    }
    this.vars.length = mark;
  }
  private pipe(p: Pipe, dot: unknown): unknown {
    let v: unknown;
    let have = false;
    for (const cmd of p.cmds) {
      v = this.command(cmd, dot, have ? [v] : [], p.pos);
      have = true;
    }
    if (p.decl.length > 0) {
      if (p.assign) {
        const name = p.decl[0]!;
        let found = false;
        for (let i = this.vars.length - 1; i >= 0; i--) {
          if (this.vars[i]!.name === name) { this.vars[i]!.value = v; found = true; break; }
        }
        if (!found) throw new TemplateError(`template: ${this.tplName}:${p.pos.line}: undefined variable: ${name}`);
      } else {
        this.vars.push({ name: p.decl[p.decl.length - 1]!, value: v });
      }
    }
    return v;
  }
  private evalArg(a: Operand, dot: unknown, pos: Pos): unknown {
    switch (a.t) {
      case 'dot': return dot;
      case 'lit': return a.v;
      case 'field': return this.chain(dot, a.chain, pos, '');
      case 'var': return this.chain(this.lookup(a.name, pos), a.chain, pos, a.name);
      case 'pipe': {
        const mark = this.vars.length;
        const v = this.pipe(a.pipe, dot);
        this.vars.length = mark;
        return this.chain(v, a.chain, pos, '(...)');
      }
      case 'ident': {
        const f = this.engine.funcs[a.name];
        if (f === undefined) throw new TemplateError(`template: ${this.tplName}:${pos.line}: function "${a.name}" not defined`);
        return f(this.ctx(pos));
      }
    }
  }
  private chain(v: unknown, chain: string[], pos: Pos, label: string): unknown {
    let cur = v;
    let so = label;
    for (const f of chain) {
      cur = fieldOf(cur, f, this.ctx(pos), so);
      so += `.${f}`;
    }
    return cur;
  }
  private command(cmd: Cmd, dot: unknown, piped: unknown[], pos: Pos): unknown {
    const [head, ...rest] = cmd.args;
    if (head === undefined) throw new TemplateError(`template: ${this.tplName}:${pos.line}: empty command`);
    if (head.t === 'ident') {
      const name = head.name;
      const f = this.engine.funcs[name];
      if (f === undefined) throw new TemplateError(`template: ${this.tplName}:${pos.line}: function "${name}" not defined`);
      if (name === 'and' || name === 'or') {
        // short-circuit (Go >= 1.18); the piped value is the last argument
        const thunks: (() => unknown)[] = [...rest.map((a) => () => this.evalArg(a, dot, pos)), ...piped.map((x) => () => x)];
        if (thunks.length === 0) throw new TemplateError(`template: ${this.tplName}:${pos.line}: wrong number of args for ${name}: want at least 1 got 0`);
        let last: unknown;
        for (const t of thunks) {
          last = t();
          if (name === 'and' ? !truth(last) : truth(last)) return last;
        }
        return last;
      }
      const args = [...rest.map((a) => this.evalArg(a, dot, pos)), ...piped];
      return f(this.ctx(pos), ...args);
    }
    // a field/variable chain ending in a method takes arguments
    const v = this.evalArg(head, dot, pos);
    if (typeof v === 'function') return (v as GoFunc)(...rest.map((a) => this.evalArg(a, dot, pos)), ...piped);
    if (rest.length > 0 || piped.length > 0) {
      throw new TemplateError(`template: ${this.tplName}:${pos.line}:${pos.col}: can't give argument to non-function ${printValue(v)}`);
    }
    return v;
  }
}

/** Execute a named (defined or file) template with data; returns its output. */
export function executeTemplate(engine: Engine, name: string, data: unknown, depth = 0): string {
  const body = engine.templates.get(name);
  if (body === undefined) throw new TemplateError(`template: no template "${name}" associated with template "gotpl"`);
  return new Exec(engine, name, data, depth).run(body, data);
}

// ---------------------------------------------------------------------------------------
// Functions (Go builtins, the Sprig subset, Helm's include/required/fail/toYaml/...)
// ---------------------------------------------------------------------------------------

function numKind(v: unknown): 'int' | 'float' | 'string' | 'bool' | 'nil' | 'other' {
  if (v instanceof GoInt) return 'int';
  if (typeof v === 'number') return 'float';
  if (typeof v === 'string') return 'string';
  if (typeof v === 'boolean') return 'bool';
  if (v === null || v === undefined) return 'nil';
  return 'other';
}
function basicEq(a: unknown, b: unknown, ctx: ExecCtx, fn: string): boolean {
  const ka = numKind(a);
  const kb = numKind(b);
  if (ka === 'nil' || kb === 'nil') return ka === kb;
  if (ka === 'other' || kb === 'other') throw new TemplateError(`template: ${ctx.tplName}:${ctx.pos.line}:${ctx.pos.col}: error calling ${fn}: non-comparable type`);
  if (ka !== kb) throw new TemplateError(`template: ${ctx.tplName}:${ctx.pos.line}:${ctx.pos.col}: error calling ${fn}: incompatible types for comparison`);
  const x = a instanceof GoInt ? a.v : a;
  const y = b instanceof GoInt ? b.v : b;
  return x === y;
}
function basicLt(a: unknown, b: unknown, ctx: ExecCtx, fn: string): boolean {
  const ka = numKind(a);
  const kb = numKind(b);
  if (ka !== kb || ka === 'bool' || ka === 'nil' || ka === 'other') {
    throw new TemplateError(`template: ${ctx.tplName}:${ctx.pos.line}:${ctx.pos.col}: error calling ${fn}: ${ka !== kb ? 'incompatible types for comparison' : 'invalid type for comparison'}`);
  }
  const x = a instanceof GoInt ? a.v : (a as number | string);
  const y = b instanceof GoInt ? b.v : (b as number | string);
  return x < y;
}
function toNumber(v: unknown): number {
  if (v instanceof GoInt) return v.v;
  if (typeof v === 'number') return v;
  if (typeof v === 'string') { const n = Number(v); return Number.isFinite(n) ? n : 0; }
  if (typeof v === 'boolean') return v ? 1 : 0;
  return 0;
}
/** Go's fmt.Sprintf for the verbs charts use (%s %d %v %q %x %%); wrong types print Go's %!verb(type=value). */
export function sprintf(format: string, args: unknown[]): string {
  let ai = 0;
  let out = '';
  for (let i = 0; i < format.length; i++) {
    const c = format[i]!;
    if (c !== '%') { out += c; continue; }
    let j = i + 1;
    let flags = '';
    while (j < format.length && '-+# 0'.includes(format[j]!)) flags += format[j++];
    let width = '';
    while (j < format.length && /[0-9]/.test(format[j]!)) width += format[j++];
    const verb = format[j];
    i = j;
    if (verb === '%') { out += '%'; continue; }
    if (verb === undefined) { out += '%!(NOVERB)'; break; }
    if (ai >= args.length) { out += `%!${verb}(MISSING)`; continue; }
    const a = args[ai++];
    let s: string;
    switch (verb) {
      case 'v': s = printValue(a, false); break;
      case 's': s = typeof a === 'string' ? a : numKind(a) === 'other' ? printValue(a, false) : `%!s(${goTypeName(a)}=${printValue(a, false)})`; break;
      case 'd': s = a instanceof GoInt ? String(a.v) : `%!d(${goTypeName(a)}=${printValue(a, false)})`; break;
      case 'q': s = typeof a === 'string' ? JSON.stringify(a) : a instanceof GoInt ? `'${String.fromCodePoint(a.v)}'` : `%!q(${goTypeName(a)}=${printValue(a, false)})`; break;
      case 'x': s = a instanceof GoInt ? a.v.toString(16) : typeof a === 'string' ? Buffer.from(a).toString('hex') : `%!x(${goTypeName(a)}=${printValue(a, false)})`; break;
      case 't': s = typeof a === 'boolean' ? String(a) : `%!t(${goTypeName(a)}=${printValue(a, false)})`; break;
      case 'f': s = typeof a === 'number' ? a.toFixed(6) : `%!f(${goTypeName(a)}=${printValue(a, false)})`; break;
      default: throw new TemplateError(`printf: verb %${verb} is outside the supported subset`);
    }
    if (width !== '') s = flags.includes('-') ? s.padEnd(Number(width)) : s.padStart(Number(width), flags.includes('0') ? '0' : ' ');
    out += s;
  }
  if (ai < args.length) out += `%!(EXTRA ${args.slice(ai).map((a) => `${goTypeName(a)}=${printValue(a, false)}`).join(', ')})`;
  return out;
}
/** Sprig's strval / toString. */
const strval = (v: unknown): string => (typeof v === 'string' ? v : printValue(v, false));

function semverParse(v: string): [number, number, number] | undefined {
  const m = /^v?([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?/.exec(v.trim());
  if (m === null) return undefined;
  return [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0)];
}
function semverCmp(a: [number, number, number], b: [number, number, number]): number {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}
/** Sprig's semverCompare for the simple constraints charts use (">=1.24-0", "<1.19", "~..." is not supported). */
export function semverCompare(constraint: string, version: string): boolean {
  const ver = semverParse(version);
  if (ver === undefined) throw new TemplateError(`semverCompare: invalid semantic version ${version}`);
  return constraint.split(',').every((part) => {
    const m = /^\s*(>=|<=|>|<|=|!=)?\s*v?([0-9][0-9.]*)(?:-[0-9A-Za-z.-]+)?\s*$/.exec(part);
    if (m === null) throw new TemplateError(`semverCompare: constraint "${part}" is outside the supported subset`);
    const c = semverCmp(ver, semverParse(m[2]!)!);
    switch (m[1] ?? '=') {
      case '>=': return c >= 0;
      case '<=': return c <= 0;
      case '>': return c > 0;
      case '<': return c < 0;
      case '!=': return c !== 0;
      default: return c === 0;
    }
  });
}

function fnErr(ctx: ExecCtx, msg: string): TemplateError {
  return new TemplateError(`execution error at (${ctx.tplName}:${ctx.pos.line}:${ctx.pos.col}): ${msg}`);
}

/** The function table. */
export function builtinFuncs(): Engine['funcs'] {
  const indent = (n: unknown, s: unknown): string => {
    const pad = ' '.repeat(toNumber(n));
    return pad + strval(s).replace(/\n/g, `\n${pad}`);
  };
  return {
    // Go builtins
    and: () => undefined, or: () => undefined, // handled in Exec (short-circuit)
    not: (_c, v) => !truth(v),
    eq: (c, a, ...bs) => {
      if (bs.length === 0) throw fnErr(c, 'wrong number of args for eq: want at least 2 got 1');
      return bs.some((b) => basicEq(a, b, c, 'eq'));
    },
    ne: (c, a, b) => !basicEq(a, b, c, 'ne'),
    lt: (c, a, b) => basicLt(a, b, c, 'lt'),
    le: (c, a, b) => basicLt(a, b, c, 'le') || basicEq(a, b, c, 'le'),
    gt: (c, a, b) => !basicLt(a, b, c, 'gt') && !basicEq(a, b, c, 'gt'),
    ge: (c, a, b) => !basicLt(a, b, c, 'ge'),
    len: (c, v) => {
      if (typeof v === 'string' || Array.isArray(v)) return new GoInt(v.length);
      if (isMap(v)) return new GoInt(Object.keys(v).length);
      throw fnErr(c, `error calling len: len of type ${goTypeName(v)}`);
    },
    index: (c, v, ...keys) => {
      let cur = v;
      for (const k of keys) {
        if (Array.isArray(cur)) {
          const i = toNumber(k);
          if (i < 0 || i >= cur.length) throw fnErr(c, `error calling index: index out of range: ${i}`);
          cur = cur[i];
        } else if (isMap(cur)) cur = cur[strval(k)];
        else if (cur === null || cur === undefined) return undefined;
        else throw fnErr(c, `error calling index: cannot index slice/array with type ${goTypeName(cur)}`);
      }
      return cur;
    },
    print: (_c, ...a) => a.map((x) => printValue(x, false)).join(''),
    println: (_c, ...a) => `${a.map((x) => printValue(x, false)).join(' ')}\n`,
    printf: (_c, f, ...a) => sprintf(strval(f), a),
    // Sprig
    default: (_c, d, ...given) => (given.length === 0 || empty(given[0]) ? d : given[0]),
    empty: (_c, v) => empty(v),
    coalesce: (_c, ...a) => a.find((x) => !empty(x)),
    ternary: (_c, a, b, cond) => (truth(cond) ? a : b),
    quote: (_c, ...a) => a.filter((x) => x !== null && x !== undefined).map((x) => JSON.stringify(strval(x))).join(' '),
    squote: (_c, ...a) => a.filter((x) => x !== null && x !== undefined).map((x) => `'${strval(x)}'`).join(' '),
    ['toString']: (_c: ExecCtx, v: unknown) => strval(v),
    int: (_c, v) => new GoInt(Math.trunc(toNumber(v))),
    int64: (_c, v) => new GoInt(Math.trunc(toNumber(v))),
    float64: (_c, v) => toNumber(v),
    add: (_c, ...a) => new GoInt(a.reduce<number>((s, x) => s + Math.trunc(toNumber(x)), 0)),
    sub: (_c, a, b) => new GoInt(Math.trunc(toNumber(a)) - Math.trunc(toNumber(b))),
    mul: (_c, ...a) => new GoInt(a.reduce<number>((s, x) => s * Math.trunc(toNumber(x)), 1)),
    trunc: (_c, n, s) => {
      const str = strval(s);
      const k = toNumber(n);
      return k >= 0 ? str.slice(0, k) : str.slice(Math.max(0, str.length + k));
    },
    trimSuffix: (_c, suf, s) => { const str = strval(s); const x = strval(suf); return x !== '' && str.endsWith(x) ? str.slice(0, -x.length) : str; },
    trimPrefix: (_c, pre, s) => { const str = strval(s); const x = strval(pre); return str.startsWith(x) ? str.slice(x.length) : str; },
    trim: (_c, s) => strval(s).trim(),
    replace: (_c, from, to, s) => strval(s).split(strval(from)).join(strval(to)),
    lower: (_c, s) => strval(s).toLowerCase(),
    upper: (_c, s) => strval(s).toUpperCase(),
    contains: (_c, sub, s) => strval(s).includes(strval(sub)),
    hasPrefix: (_c, p, s) => strval(s).startsWith(strval(p)),
    hasSuffix: (_c, p, s) => strval(s).endsWith(strval(p)),
    join: (_c, sep, l) => (Array.isArray(l) ? l.map(strval).join(strval(sep)) : strval(l)),
    b64enc: (_c, s) => Buffer.from(strval(s)).toString('base64'),
    sha256sum: (_c, s) => createHash('sha256').update(strval(s)).digest('hex'),
    list: (_c, ...a) => a,
    dict: (_c, ...a) => { const m: Record<string, unknown> = {}; for (let i = 0; i < a.length; i += 2) m[strval(a[i])] = a[i + 1]; return m; },
    set: (c, m, k, v) => {
      if (!isMap(m)) throw fnErr(c, `error calling set: not a dict: ${goTypeName(m)}`);
      m[strval(k)] = v;
      return m;
    },
    append: (c, l, v) => {
      if (l !== null && l !== undefined && !Array.isArray(l)) throw fnErr(c, `Cannot push on type ${goTypeName(l)}`);
      return [...((l as unknown[] | null | undefined) ?? []), v];
    },
    hasKey: (_c, m, k) => isMap(m) && Object.prototype.hasOwnProperty.call(m, strval(k)),
    keys: (_c, ...ms) => ms.flatMap((m) => (isMap(m) ? Object.keys(m) : [])),
    sortAlpha: (_c, l) => (Array.isArray(l) ? l.map(strval).sort() : [strval(l)]),
    base: (_c, s) => posix.basename(strval(s)),
    semverCompare: (_c, c, v) => semverCompare(strval(c), strval(v)),
    toJson: (_c, v) => JSON.stringify(toJsonable(v)),
    // Helm
    toYaml: (_c, v) => (v === undefined || v === null ? 'null' : goYaml(v).replace(/\n$/, '')),
    nindent: (_c, n, s) => `\n${indent(n, s)}`,
    indent: (_c, n, s) => indent(n, s),
    required: (c, msg, v) => {
      if (v === null || v === undefined || v === '') throw fnErr(c, strval(msg));
      return v;
    },
    fail: (c, msg) => { throw fnErr(c, strval(msg)); },
    include: (c, name, data) => executeTemplate(c.engine, strval(name), data, c.depth + 1),
  };
}

// ---------------------------------------------------------------------------------------
// Values: merge, --set, JSON Schema (draft-07 subset)
// ---------------------------------------------------------------------------------------

/** Helm's coalescing: `over` wins, maps merge deeply, `null` in `over` deletes the key. */
export function mergeValues(base: unknown, over: unknown): unknown {
  if (!isMap(base) || !isMap(over)) return over === undefined ? base : over;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v === null) delete out[k];
    else if (isMap(v) && isMap(out[k])) out[k] = mergeValues(out[k], v);
    else out[k] = v;
  }
  return out;
}

/** Parse one `--set` argument (`a.b=c,d[0].e=f`) into a values map; `asString` for --set-string. */
export function parseSet(expr: string, asString = false): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < expr.length; i++) {
    const ch = expr[i]!;
    if (ch === '\\' && i + 1 < expr.length) { cur += ch + expr[i + 1]; i++; continue; }
    if (ch === ',') { parts.push(cur); cur = ''; continue; }
    cur += ch;
  }
  parts.push(cur);
  for (const part of parts) {
    const eq = part.search(/(?<!\\)=/);
    if (eq < 0) throw new Error(`--set ${part}: key "${part}" has no value`);
    const path = part.slice(0, eq);
    const raw = part.slice(eq + 1).replace(/\\(.)/g, '$1');
    let value: unknown = raw;
    if (!asString) {
      if (raw === 'true' || raw === 'false') value = raw === 'true';
      else if (raw === 'null') value = null;
      else if (/^-?(0|[1-9][0-9]*)$/.test(raw)) value = new GoInt(Number(raw));
    }
    const keys: (string | number)[] = [];
    for (const seg of path.split(/(?<!\\)\./)) {
      const m = /^([^[]*)((?:\[[0-9]+\])*)$/.exec(seg.replace(/\\\./g, '.'));
      if (m === null) throw new Error(`--set ${part}: bad key ${seg}`);
      if (m[1] !== '') keys.push(m[1]!);
      for (const ix of m[2]!.matchAll(/\[([0-9]+)\]/g)) keys.push(Number(ix[1]));
    }
    let node: Record<string, unknown> | unknown[] = out;
    keys.forEach((k, i) => {
      const last = i === keys.length - 1;
      const nextIsIndex = typeof keys[i + 1] === 'number';
      const container = node as Record<string | number, unknown>;
      if (Array.isArray(node) && typeof k === 'number') while (node.length < k) node.push(null);
      if (last) { container[k] = value; return; }
      if (container[k] === undefined || typeof container[k] !== 'object' || container[k] === null) container[k] = nextIsIndex ? [] : {};
      node = container[k] as Record<string, unknown> | unknown[];
    });
  }
  return out;
}

type Schema = Record<string, unknown> | boolean;

/** Validate `value` against a JSON Schema (draft-07 keywords: type, enum, const, properties, required, additionalProperties, patternProperties, items, minItems, maxItems, uniqueItems, minimum, maximum, exclusiveMinimum, exclusiveMaximum, minLength, maxLength, pattern, format (ignored), $ref to #/definitions, allOf, anyOf, oneOf, not, if/then/else). Returns errors as "path: message". */
export function validateSchema(schema: Schema, value: unknown, root: Schema = schema, path = ''): string[] {
  const at = path === '' ? '(root)' : path;
  if (schema === true) return [];
  if (schema === false) return [`${at}: no value is allowed here`];
  const errs: string[] = [];
  const s = schema;
  const v = toJsonable(value);
  const known = new Set(['$schema', '$id', 'title', 'description', 'default', 'examples', 'definitions', '$comment', 'type', 'enum', 'const', 'properties', 'required', 'additionalProperties', 'patternProperties', 'items', 'minItems', 'maxItems', 'uniqueItems', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'minLength', 'maxLength', 'pattern', 'format', '$ref', 'allOf', 'anyOf', 'oneOf', 'not', 'if', 'then', 'else', 'minProperties', 'maxProperties']);
  for (const k of Object.keys(s)) if (!known.has(k)) throw new SchemaError(`schema keyword "${k}" at ${at} is outside the validator's subset`);
  if (typeof s.$ref === 'string') {
    const m = /^#\/definitions\/(.+)$/.exec(s.$ref);
    const target = m === null || typeof root !== 'object' ? undefined : ((root.definitions ?? {}) as Record<string, Schema>)[m[1]!];
    if (target === undefined) throw new SchemaError(`unresolvable $ref ${s.$ref}`);
    errs.push(...validateSchema(target, v, root, path));
  }
  const typeOf = (x: unknown): string => (x === null ? 'null' : Array.isArray(x) ? 'array' : typeof x === 'number' ? (Number.isInteger(x) ? 'integer' : 'number') : typeof x === 'object' ? 'object' : typeof x);
  if (s.type !== undefined) {
    const types = Array.isArray(s.type) ? (s.type as string[]) : [s.type as string];
    const t = typeOf(v);
    if (!types.some((x) => x === t || (x === 'number' && t === 'integer'))) {
      errs.push(`${at}: Invalid type. Expected: ${types.join(' or ')}, given: ${t}`);
      return errs;
    }
  }
  if (Array.isArray(s.enum) && !s.enum.some((e) => JSON.stringify(e) === JSON.stringify(v))) errs.push(`${at}: must be one of the following: ${s.enum.map((e) => JSON.stringify(e)).join(', ')}`);
  if ('const' in s && JSON.stringify(s.const) !== JSON.stringify(v)) errs.push(`${at}: does not match: ${JSON.stringify(s.const)}`);
  if (typeof v === 'number') {
    if (typeof s.minimum === 'number' && v < s.minimum) errs.push(`${at}: Must be greater than or equal to ${s.minimum}`);
    if (typeof s.maximum === 'number' && v > s.maximum) errs.push(`${at}: Must be less than or equal to ${s.maximum}`);
    if (typeof s.exclusiveMinimum === 'number' && v <= s.exclusiveMinimum) errs.push(`${at}: Must be greater than ${s.exclusiveMinimum}`);
    if (typeof s.exclusiveMaximum === 'number' && v >= s.exclusiveMaximum) errs.push(`${at}: Must be less than ${s.exclusiveMaximum}`);
  }
  if (typeof v === 'string') {
    const len = [...v].length;
    if (typeof s.minLength === 'number' && len < s.minLength) errs.push(`${at}: String length must be greater than or equal to ${s.minLength}`);
    if (typeof s.maxLength === 'number' && len > s.maxLength) errs.push(`${at}: String length must be less than or equal to ${s.maxLength}`);
    if (typeof s.pattern === 'string' && !new RegExp(s.pattern, 'u').test(v)) errs.push(`${at}: Does not match pattern '${s.pattern}'`);
  }
  if (Array.isArray(v)) {
    if (typeof s.minItems === 'number' && v.length < s.minItems) errs.push(`${at}: Array must have at least ${s.minItems} items`);
    if (typeof s.maxItems === 'number' && v.length > s.maxItems) errs.push(`${at}: Array must have at most ${s.maxItems} items`);
    if (s.uniqueItems === true && new Set(v.map((x) => JSON.stringify(x))).size !== v.length) errs.push(`${at}: array items must be unique`);
    if (s.items !== undefined) {
      if (Array.isArray(s.items)) throw new SchemaError('tuple "items" is outside the validator subset');
      v.forEach((x, i) => errs.push(...validateSchema(s.items as Schema, x, root, `${path}[${i}]`)));
    }
  }
  if (isMap(v)) {
    const props = (s.properties ?? {}) as Record<string, Schema>;
    const pats = Object.entries((s.patternProperties ?? {}) as Record<string, Schema>);
    for (const r of (s.required ?? []) as string[]) if (!(r in v)) errs.push(`${path === '' ? '(root)' : path}: ${r} is required`);
    if (typeof s.minProperties === 'number' && Object.keys(v).length < s.minProperties) errs.push(`${at}: must have at least ${s.minProperties} properties`);
    for (const [k, x] of Object.entries(v)) {
      const p = path === '' ? k : `${path}.${k}`;
      let matched = false;
      if (props[k] !== undefined) { matched = true; errs.push(...validateSchema(props[k], x, root, p)); }
      for (const [re, ps] of pats) if (new RegExp(re, 'u').test(k)) { matched = true; errs.push(...validateSchema(ps, x, root, p)); }
      if (!matched && s.additionalProperties !== undefined) {
        if (s.additionalProperties === false) errs.push(`${at}: Additional property ${k} is not allowed`);
        else errs.push(...validateSchema(s.additionalProperties as Schema, x, root, p));
      }
    }
  }
  if (Array.isArray(s.allOf)) for (const sub of s.allOf as Schema[]) errs.push(...validateSchema(sub, v, root, path));
  if (Array.isArray(s.anyOf) && !(s.anyOf as Schema[]).some((sub) => validateSchema(sub, v, root, path).length === 0)) {
    errs.push(`${at}: Must validate at least one schema (anyOf): ${(s.anyOf as Schema[]).map((sub) => validateSchema(sub, v, root, path).join('; ')).join(' | ')}`);
  }
  if (Array.isArray(s.oneOf)) {
    const ok = (s.oneOf as Schema[]).filter((sub) => validateSchema(sub, v, root, path).length === 0).length;
    if (ok !== 1) errs.push(`${at}: Must validate one and only one schema (oneOf); ${ok} matched`);
  }
  if (s.not !== undefined && validateSchema(s.not as Schema, v, root, path).length === 0) errs.push(`${at}: Must not validate the schema (not)`);
  if (s.if !== undefined) {
    const cond = validateSchema(s.if as Schema, v, root, path).length === 0;
    const branch = cond ? s.then : s.else;
    if (branch !== undefined) errs.push(...validateSchema(branch as Schema, v, root, path));
  }
  return errs;
}

// ---------------------------------------------------------------------------------------
// Chart rendering
// ---------------------------------------------------------------------------------------

/** Options of one render (like `helm template`). */
export interface RenderOptions {
  readonly chartDir: string;
  /** Values files, merged in order over the chart's values.yaml. */
  readonly valuesFiles?: readonly string[];
  /** Values maps merged after the files (tests). */
  readonly values?: readonly Record<string, unknown>[];
  /** `--set` / `--set-string` expressions, merged last. */
  readonly set?: readonly string[];
  readonly setString?: readonly string[];
  readonly releaseName?: string;
  readonly namespace?: string;
  /** Default v1.30.0. */
  readonly kubeVersion?: string;
  /** Extra API versions that .Capabilities.APIVersions.Has reports (e.g. monitoring.coreos.com/v1). */
  readonly apiVersions?: readonly string[];
}
/** One rendered manifest document. */
export interface RenderedDoc { readonly source: string; readonly text: string }
/** What a render produces. */
export interface RenderResult { readonly docs: readonly RenderedDoc[]; readonly notes: string; readonly values: Record<string, unknown> }

const BUILTIN_APIS = ['v1', 'apps/v1', 'batch/v1', 'policy/v1', 'networking.k8s.io/v1', 'rbac.authorization.k8s.io/v1', 'autoscaling/v2', 'storage.k8s.io/v1', 'apiextensions.k8s.io/v1'];

function listFiles(dir: string, base = dir): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir).sort()) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...listFiles(p, base));
    else out.push(relative(base, p).split('\\').join('/'));
  }
  return out;
}
function ignoredBy(patterns: string[], file: string): boolean {
  return patterns.some((p) => {
    const pat = p.replace(/\/$/, '');
    const re = globToRegex(pat.includes('/') ? pat : `**${pat}`);
    return re.test(file) || re.test(posix.basename(file)) || file.startsWith(`${pat}/`);
  });
}
const capitalize = (o: Record<string, unknown>): Record<string, unknown> =>
  Object.fromEntries(Object.entries(o).map(([k, v]) => [k.charAt(0).toUpperCase() + k.slice(1), v]));

/** Render a chart like `helm template`: merge and validate values, execute every template, split into documents. */
export function renderChart(opts: RenderOptions): RenderResult {
  const dir = opts.chartDir;
  const chartMeta = parseYaml(readFileSync(join(dir, 'Chart.yaml'), 'utf8')) as Record<string, unknown>;
  const chartName = String(chartMeta.name);
  let values = (parseYaml(readFileSync(join(dir, 'values.yaml'), 'utf8')) ?? {}) as Record<string, unknown>;
  for (const f of opts.valuesFiles ?? []) values = mergeValues(values, parseYaml(readFileSync(f, 'utf8')) ?? {}) as Record<string, unknown>;
  for (const m of opts.values ?? []) values = mergeValues(values, m) as Record<string, unknown>;
  for (const s of opts.set ?? []) values = mergeValues(values, parseSet(s)) as Record<string, unknown>;
  for (const s of opts.setString ?? []) values = mergeValues(values, parseSet(s, true)) as Record<string, unknown>;
  const schemaPath = join(dir, 'values.schema.json');
  if (existsSync(schemaPath)) {
    const schema = JSON.parse(readFileSync(schemaPath, 'utf8')) as Schema;
    const errs = validateSchema(schema, values);
    if (errs.length > 0) throw new SchemaError(`values don't meet the specifications of the schema(s) in the following chart(s):\n${chartName}:\n${errs.map((e) => `- ${e}`).join('\n')}`);
  }
  const ignore = existsSync(join(dir, '.helmignore'))
    ? readFileSync(join(dir, '.helmignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'))
    : [];
  const all = listFiles(dir).filter((f) => !ignoredBy(ignore, f));
  const files = new Map<string, string>();
  for (const f of all) {
    if (f.startsWith('templates/') || f === 'Chart.yaml' || f === 'values.yaml' || f === 'values.schema.json' || f.startsWith('charts/')) continue;
    files.set(f, readFileSync(join(dir, f), 'utf8'));
  }
  const kube = opts.kubeVersion ?? 'v1.30.0';
  const kv = semverParse(kube);
  if (kv === undefined) throw new Error(`--kube-version ${kube} is not a version`);
  const apis = new Set([...BUILTIN_APIS, ...(opts.apiVersions ?? [])]);
  const top = {
    Values: values,
    Release: { Name: opts.releaseName ?? 'release-name', Namespace: opts.namespace ?? 'default', Service: 'Helm', IsInstall: true, IsUpgrade: false, Revision: new GoInt(1) },
    Chart: capitalize(chartMeta),
    Capabilities: {
      KubeVersion: { Version: `v${kv.join('.')}`, GitVersion: `v${kv.join('.')}`, Major: String(kv[0]), Minor: String(kv[1]) },
      APIVersions: { Has: (v: unknown): boolean => apis.has(strval(v)) },
      HelmVersion: { Version: 'v3.16.0' },
    },
    Files: new FilesObj(files),
  };
  const engine: Engine = { templates: new Map(), funcs: builtinFuncs() };
  const tplFiles = all.filter((f) => f.startsWith('templates/') && !f.startsWith('templates/tests/'));
  // partials first, so defines from every file are known before execution (Helm parses all templates together)
  for (const f of tplFiles) {
    const name = `${chartName}/${f}`;
    const parsed = parseTemplate(name, readFileSync(join(dir, f), 'utf8'));
    for (const [k, v] of parsed.defines) engine.templates.set(k, v);
    engine.templates.set(name, parsed.root);
  }
  const docs: RenderedDoc[] = [];
  let notes = '';
  for (const f of tplFiles) {
    const name = `${chartName}/${f}`;
    const b = basename(f);
    if (b.startsWith('_')) continue;
    const data = { ...top, Template: { Name: name, BasePath: `${chartName}/templates` } };
    const out = executeTemplate(engine, name, data);
    if (b === 'NOTES.txt') { notes = out; continue; }
    if (!/\.(ya?ml|tpl|json)$/.test(b)) continue;
    for (const part of out.split(/^---[ \t]*$/m)) {
      if (part.trim() === '') continue;
      docs.push({ source: name, text: part.replace(/^\n+/, '').replace(/\s+$/, '') });
    }
  }
  return { docs, notes, values };
}

/** Print docs the way `helm template` does. */
export function formatDocs(docs: readonly RenderedDoc[]): string {
  return docs.map((d) => `---\n# Source: ${d.source}\n${d.text}\n`).join('');
}

function cli(argv: string[]): number {
  const here = fileURLToPath(new URL('.', import.meta.url));
  let chartDir = join(here, '..', 'helm', 'gpio-fabric');
  const valuesFiles: string[] = [];
  const set: string[] = [];
  const setString: string[] = [];
  const apiVersions: string[] = [];
  const showOnly: string[] = [];
  let releaseName: string | undefined;
  let namespace: string | undefined;
  let kubeVersion: string | undefined;
  let notes = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '-f' || a === '--values') valuesFiles.push(val());
    else if (a === '--set') set.push(val());
    else if (a === '--set-string') setString.push(val());
    else if (a === '--release' || a === '--name') releaseName = val();
    else if (a === '-n' || a === '--namespace') namespace = val();
    else if (a === '--kube-version') kubeVersion = val();
    else if (a === '--api-versions' || a === '-a') apiVersions.push(val());
    else if (a === '-s' || a === '--show-only') showOnly.push(val());
    else if (a === '--notes') notes = true;
    else if (a === '-h' || a === '--help') {
      console.log('Usage: npm run helm:render -- [CHART_DIR] [-f values.yaml]... [--set a.b=c]... [--set-string a=b]... [--release NAME] [-n NAMESPACE] [--kube-version v1.30.0] [--api-versions GROUP/VERSION]... [-s templates/x.yaml]... [--notes]');
      return 0;
    } else if (!a.startsWith('-')) chartDir = a;
    else throw new Error(`unknown option ${a} (see --help)`);
  }
  const r = renderChart({
    chartDir, valuesFiles, set, setString, apiVersions,
    ...(releaseName !== undefined ? { releaseName } : {}),
    ...(namespace !== undefined ? { namespace } : {}),
    ...(kubeVersion !== undefined ? { kubeVersion } : {}),
  });
  const docs = showOnly.length === 0 ? r.docs : r.docs.filter((d) => showOnly.some((s) => d.source.endsWith(`/${s}`)));
  if (showOnly.length > 0 && docs.length === 0) throw new Error(`could not find template(s) ${showOnly.join(', ')} in chart`);
  process.stdout.write(formatDocs(docs));
  if (notes && r.notes !== '') process.stdout.write(`\nNOTES:\n${r.notes}\n`);
  return 0;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    process.exitCode = cli(process.argv.slice(2));
  } catch (e) {
    console.error(`Error: ${e instanceof Error ? e.message : String(e)}`);
    process.exitCode = 1;
  }
}
