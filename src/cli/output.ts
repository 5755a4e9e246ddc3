/** Output helpers shared by the pgwal commands: JSON, aligned tables, exit codes, one-line errors. */
import { FormatError } from '../formats/errors.js';

export const EXIT_OK = 0;
/** a negative answer: invalid LSN, failed verification */
export const EXIT_NEGATIVE = 1;
/** an error: bad input, unreadable file, bad arguments */
export const EXIT_ERROR = 2;

export class UsageError extends Error {}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2) + '\n');
}

/** Left-aligned columns; numbers right-aligned. */
export function table(rows: Array<Array<string | number>>, header?: string[]): string {
  const all = header ? [header, ...rows] : rows;
  const widths: number[] = [];
  for (const row of all) row.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, String(c).length)));
  const fmt = (row: Array<string | number>) =>
    row.map((c, i) => (typeof c === 'number' ? String(c).padStart(widths[i]) : String(c).padEnd(widths[i]))).join('  ').trimEnd();
  const lines = all.map(fmt);
  if (header) lines.splice(1, 0, widths.map((w) => '-'.repeat(w)).join('  '));
  return lines.join('\n') + '\n';
}

/** key: value lines */
export function keyValues(obj: Record<string, unknown>): string {
  const keys = Object.keys(obj);
  const w = Math.max(...keys.map((k) => k.length));
  return keys.map((k) => `${(k + ':').padEnd(w + 1)} ${fmtValue(obj[k])}`).join('\n') + '\n';
}

function fmtValue(v: unknown): string {
  if (v === null || v === undefined) return '-';
  if (Array.isArray(v)) return v.join(', ');
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** The single line printed for an error (never a stack trace unless PGHA_DEBUG is set). */
export function describeError(e: unknown): string {
  if (e instanceof FormatError) return e.describe();
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err === 'object' && typeof err.code === 'string' && 'path' in err) {
    const what: Record<string, string> = {
      ENOENT: 'no such file or directory',
      EACCES: 'permission denied',
      EISDIR: 'is a directory',
      ENOTDIR: 'not a directory',
    };
    return `${(err as { path: string }).path}: ${what[err.code] ?? err.message}`;
  }
  return err instanceof Error ? err.message : String(e);
}
