/**
 * A tiny PNG line chart (no plotting library): an RGB canvas, lines, a 5x7 bitmap font,
 * and a PNG encoder over node:zlib. Enough for benchmark plots in docs/.
 */
import { deflateSync } from 'node:zlib';

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of buf) c = (CRC_TABLE[(c ^ b) & 0xff] ?? 0) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'ascii');
  const body = Buffer.concat([head.subarray(4), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body), 0);
  return Buffer.concat([head.subarray(0, 4), body, crc]);
}

/** Encode an 8-bit RGB image (row-major, 3 bytes per pixel) as PNG. */
export function encodePng(width: number, height: number, rgb: Uint8Array): Buffer {
  if (rgb.length !== width * height * 3) throw new Error(`rgb has ${rgb.length} bytes, expected ${width * height * 3}`);
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    raw[y * (width * 3 + 1)] = 0; // filter: none
    Buffer.from(rgb.buffer, rgb.byteOffset + y * width * 3, width * 3).copy(raw, y * (width * 3 + 1) + 1);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type RGB
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw, { level: 9 })), chunk('IEND', new Uint8Array(0))]);
}

// 5x7 glyphs, one hex byte per row (bit 4 = leftmost column)
const GLYPHS: Record<string, string> = {
  '0': '0E1113151911 0E', '1': '040C0404040E0E', '2': '0E110102040 81F', '3': '1F020402011 10E', '4': '02060A121F0202',
  '5': '1F101E010111 0E', '6': '0608101E1111 0E', '7': '1F010204080808', '8': '0E11110E1111 0E', '9': '0E11110F01020C',
  A: '0E11111F111111', B: '1E11111E11111E', C: '0E11101010110E', D: '1C121111111 21C', E: '1F10101E10101F', F: '1F10101E101010',
  G: '0E111017111 10F', H: '1111111F111111', I: '0E04040404040E', J: '07020202021 20C', K: '11121418141211', L: '1010101010101F',
  M: '111B1515111111', N: '11111915131111', O: '0E11111111110E', P: '1E11111E101010', Q: '0E11111115120D', R: '1E11111E141211',
  S: '0F10100E01011E', T: '1F040404040404', U: '1111111111110E', V: '11111111110A04', W: '1111111515150A', X: '11110A040A1111',
  Y: '1111110A040404', Z: '1F01020408101F', ' ': '00000000000000', '.': '00000000000C0C', ',': '000000000C0408', '-': '0000001F000000',
  '/': '00010204081000', '(': '02040808080402', ')': '08040202020408', ':': '000C0C000C0C00', '%': '18190204081303', '=': '00001F001F0000',
  '+': '0004041F040400', '<': '02040810080402', '>': '08040201020408', '_': '0000000000001F',
};

function glyphRows(ch: string): number[] {
  const hex = (GLYPHS[ch] ?? GLYPHS[' '] ?? '').replace(/ /g, '');
  return Array.from({ length: 7 }, (_, i) => parseInt(hex.slice(i * 2, i * 2 + 2), 16) || 0);
}

export type Rgb = readonly [number, number, number];

/** An RGB canvas with a few drawing primitives. */
export class Canvas {
  readonly px: Uint8Array;
  constructor(readonly width: number, readonly height: number, bg: Rgb = [255, 255, 255]) {
    this.px = new Uint8Array(width * height * 3);
    for (let i = 0; i < width * height; i++) this.px.set(bg, i * 3);
  }

  set(x: number, y: number, c: Rgb): void {
    x = Math.round(x);
    y = Math.round(y);
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    this.px.set(c, (y * this.width + x) * 3);
  }

  /** A line `thick` pixels wide (Bresenham, squares at each step). */
  line(x0: number, y0: number, x1: number, y1: number, c: Rgb, thick = 1, dash = 0): void {
    x0 = Math.round(x0); y0 = Math.round(y0); x1 = Math.round(x1); y1 = Math.round(y1);
    const dx = Math.abs(x1 - x0), dy = -Math.abs(y1 - y0);
    const sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    let err = dx + dy;
    let step = 0;
    for (;;) {
      if (dash === 0 || Math.floor(step / dash) % 2 === 0) {
        for (let a = 0; a < thick; a++) for (let b = 0; b < thick; b++) this.set(x0 + a - Math.floor(thick / 2), y0 + b - Math.floor(thick / 2), c);
      }
      step++;
      if (x0 === x1 && y0 === y1) break;
      const e2 = 2 * err;
      if (e2 >= dy) { err += dy; x0 += sx; }
      if (e2 <= dx) { err += dx; y0 += sy; }
    }
  }

  rect(x: number, y: number, w: number, h: number, c: Rgb): void {
    for (let j = 0; j < h; j++) for (let i = 0; i < w; i++) this.set(x + i, y + j, c);
  }

  /** Text in the 5x7 font (upper case), `scale` pixels per font pixel; returns its width. */
  text(x: number, y: number, s: string, c: Rgb = [0, 0, 0], scale = 2): number {
    const t = s.toUpperCase();
    for (let k = 0; k < t.length; k++) {
      const rows = glyphRows(t[k] ?? ' ');
      for (let r = 0; r < 7; r++) for (let col = 0; col < 5; col++) {
        if (((rows[r] ?? 0) >> (4 - col)) & 1) this.rect(x + (k * 6 + col) * scale, y + r * scale, scale, scale, c);
      }
    }
    return t.length * 6 * scale;
  }

  png(): Buffer {
    return encodePng(this.width, this.height, this.px);
  }
}

export const textWidth = (s: string, scale = 2): number => s.length * 6 * scale;

export interface Series {
  readonly name: string;
  readonly color: Rgb;
  readonly points: readonly (readonly [number, number])[];
  readonly dashed?: boolean;
}

/** A line chart as PNG: log10 x axis when `logX`, linear y from 0. */
export function lineChart(o: { title: string; xLabel: string; yLabel: string; series: readonly Series[]; logX?: boolean; width?: number; height?: number }): Buffer {
  const W = o.width ?? 900, H = o.height ?? 540;
  const cv = new Canvas(W, H);
  const left = 90, right = 30, top = 60, bottom = 80;
  const pw = W - left - right, ph = H - top - bottom;
  const xs = o.series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = o.series.flatMap((s) => s.points.map((p) => p[1]));
  const fx = (x: number): number => (o.logX === true ? Math.log10(Math.max(x, 1e-9)) : x);
  const x0 = Math.min(...xs.map(fx)), x1 = Math.max(...xs.map(fx));
  const yMax = niceCeil(Math.max(...ys, 1));
  const X = (x: number): number => left + ((fx(x) - x0) / (x1 - x0 || 1)) * pw;
  const Y = (y: number): number => top + ph - (y / yMax) * ph;
  const grey: Rgb = [220, 220, 220], black: Rgb = [0, 0, 0];
  // grid + y ticks
  for (let i = 0; i <= 5; i++) {
    const v = (yMax / 5) * i;
    cv.line(left, Y(v), left + pw, Y(v), grey);
    const label = formatNum(v);
    cv.text(left - 8 - textWidth(label), Y(v) - 7, label);
  }
  // x ticks at the data's x values
  for (const x of [...new Set(xs)].sort((a, b) => a - b)) {
    cv.line(X(x), top, X(x), top + ph, grey);
    const label = formatNum(x);
    cv.text(X(x) - textWidth(label) / 2, top + ph + 10, label);
  }
  cv.line(left, top, left, top + ph, black, 2);
  cv.line(left, top + ph, left + pw, top + ph, black, 2);
  cv.text(left, 18, o.title, black, 2);
  cv.text(left + pw / 2 - textWidth(o.xLabel) / 2, H - 34, o.xLabel);
  cv.text(8, top - 26, o.yLabel);
  // series + legend
  let lx = left + 20;
  for (const s of o.series) {
    const pts = [...s.points].sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < pts.length; i++) {
      const a = pts[i - 1]!, b = pts[i]!;
      cv.line(X(a[0]), Y(a[1]), X(b[0]), Y(b[1]), s.color, 3, s.dashed === true ? 8 : 0);
    }
    for (const p of pts) cv.rect(X(p[0]) - 4, Y(p[1]) - 4, 9, 9, s.color);
    cv.rect(lx, top + 10, 24, 6, s.color);
    lx += 30 + cv.text(lx + 30, top + 6, s.name) + 24;
  }
  return cv.png();
}

function niceCeil(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function formatNum(v: number): string {
  if (v >= 10_000 && v % 1000 === 0) return `${v / 1000}K`;
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}
