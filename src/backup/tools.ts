/** PostgreSQL's client tools (psql, pg_basebackup) run as child processes that never block the event loop. */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { join } from 'node:path';
import { toolEnvironment } from '../pg/instance.js';

export interface ToolRun {
  child: ChildProcessWithoutNullStreams;
  /** resolves with the exit status and the last 64 KiB of stderr */
  done: Promise<{ status: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

export function startTool(binDir: string, tool: string, args: string[], opts: { onStderr?: (text: string) => void; env?: Record<string, string> } = {}): ToolRun {
  const child = spawn(join(binDir, tool), args, { env: toolEnvironment({ PGCONNECT_TIMEOUT: '10', ...(opts.env ?? {}) }), stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin.end();
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d: string) => {
    opts.onStderr?.(d);
    stderr = (stderr + d).slice(-65536);
  });
  const done = new Promise<{ status: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) => {
    child.on('error', (e) => resolve({ status: null, signal: null, stderr: `${tool}: ${e.message}` }));
    child.on('close', (status, signal) => resolve({ status, signal, stderr }));
  });
  return { child, done };
}

/** one row of psql -At output (fields split on '|'), or an error with psql's message */
export async function psqlRow(binDir: string, conninfo: string, sql: string): Promise<string[]> {
  const run = startTool(binDir, 'psql', ['-X', '-At', '-F', '|', '-v', 'ON_ERROR_STOP=1', '-d', conninfo, '-c', sql]);
  let out = '';
  run.child.stdout.setEncoding('utf8');
  run.child.stdout.on('data', (d: string) => (out += d));
  const r = await run.done;
  if (r.status !== 0) throw new Error(`psql -d "${redactConninfo(conninfo)}": ${r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`}`);
  return out.trim().split('\n')[0]?.split('|') ?? [];
}

/** a conninfo without its password (key=value or URL form) */
export function redactConninfo(conninfo: string): string {
  return conninfo.replace(/(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)/gi, '$1***').replace(/(\/\/[^:/@]+:)[^@]*@/, '$1***@');
}
