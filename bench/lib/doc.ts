/** Regenerate a block of a Markdown file between `<!-- NAME:begin -->` and `<!-- NAME:end -->`. */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

export function replaceBlock(file: string, name: string, content: string): void {
  const begin = `<!-- ${name}:begin -->`, end = `<!-- ${name}:end -->`;
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const block = `${begin}\n${content.trimEnd()}\n${end}`;
  const i = text.indexOf(begin), j = text.indexOf(end);
  const next = i >= 0 && j > i ? text.slice(0, i) + block + text.slice(j + end.length) : `${text}${text.endsWith('\n') || text === '' ? '' : '\n'}\n${block}\n`;
  writeFileSync(file, next);
}

/** A Markdown table. */
export function mdTable(header: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  return [`| ${header.join(' | ')} |`, `|${header.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}
