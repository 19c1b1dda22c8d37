/**
 * Identifier rules shared by the service's request validation and the topology parser.
 * Each check returns a problem description (for an error message) or undefined.
 */

/** Longest chip id, net name or line name. */
export const MAX_NAME_LENGTH = 64;
/** Largest ngpio a chip may declare (the stores' limit; virtio-gpio itself allows 65535). */
export const MAX_NGPIO = 1024;
/** Largest topology document the service accepts (bytes of UTF-8). */
export const MAX_DOCUMENT_BYTES = 4 * 1024 * 1024;

const ID_RE = /^[A-Za-z0-9._-]+$/;

/** Chip ids and net names: 1-64 of [A-Za-z0-9._-] (the stores' rule). */
export function idProblem(kind: 'chip id' | 'net name', s: string): string | undefined {
  if (s.length === 0) return `${kind} is empty`;
  if (s.length > MAX_NAME_LENGTH) return `${kind} "${s.slice(0, 20)}…" is longer than ${MAX_NAME_LENGTH} characters`;
  if (!ID_RE.test(s)) return `${kind} ${JSON.stringify(s)} may only contain letters, digits, '.', '_' and '-'`;
  return undefined;
}

/**
 * Line names in a topology: "" (unnamed) or 1-64 printable 7-bit ASCII characters
 * without ':', not all digits (so `chip:NAME` and `chip:OFFSET` never collide).
 */
export function lineNameProblem(s: string): string | undefined {
  if (s === '') return undefined;
  if (s.length > MAX_NAME_LENGTH) return `line name "${s.slice(0, 20)}…" is longer than ${MAX_NAME_LENGTH} characters`;
  if (!/^[\x20-\x7e]+$/.test(s)) return `line name ${JSON.stringify(s)} must be printable 7-bit ASCII`;
  if (s.includes(':')) return `line name ${JSON.stringify(s)} must not contain ':'`;
  if (/^[0-9]+$/.test(s)) return `line name ${JSON.stringify(s)} must not be all digits (it would read as an offset)`;
  return undefined;
}

/** Problem with a list of ngpio line names (empty = unnamed chip), or undefined. */
export function namesProblem(names: readonly string[], ngpio: number): string | undefined {
  if (names.length === 0) return undefined;
  if (names.length !== ngpio) return `names has ${names.length} entries but the chip has ${ngpio} lines (give none or exactly ${ngpio}; "" for an unnamed line)`;
  const seen = new Map<string, number>();
  for (let i = 0; i < names.length; i++) {
    const n = names[i] ?? '';
    const p = lineNameProblem(n);
    if (p !== undefined) return `names[${i}]: ${p}`;
    if (n === '') continue;
    const prev = seen.get(n);
    if (prev !== undefined) return `names[${i}]: line name "${n}" is already used by line ${prev}`;
    seen.set(n, i);
  }
  return undefined;
}
