import { spawn, spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const PGWAL = join(ROOT, 'dist', 'src', 'cli', 'pgwal.js');

export interface CliResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Run the built `pgwal` (npm test builds it first) and capture everything. */
export function pgwal(args: string[], env: Record<string, string> = {}): CliResult {
  const r = spawnSync(process.execPath, [PGWAL, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 1 << 28 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export const PGHA = join(ROOT, 'dist', 'src', 'cli', 'pgha.js');

/** Run the built `pgha` without blocking this process (its agents may be serving the call) */
export function pgha(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [PGHA, ...args], { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ status: code ?? -1, stdout, stderr }));
  });
}

export function pgwalJson<T = Record<string, unknown>>(args: string[], env: Record<string, string> = {}): T {
  const r = pgwal([...args, '--json'], env);
  if (r.status !== 0) throw new Error(`pgwal ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** every error is exactly one line, prefixed, and never a stack trace */
export function expectOneLineError(r: CliResult): string {
  const lines = r.stderr.trim().split('\n');
  if (lines.length !== 1 || !lines[0].startsWith('pgwal: error: ') || /\n\s+at /.test(r.stderr)) {
    throw new Error(`expected a one-line error, got: ${r.stderr}`);
  }
  return lines[0];
}
