/**
 * One PostgreSQL instance as the agent and rejoin see it: its data directory, how to run its
 * tools as the data directory's owner, whether it runs, and SQL against it.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';

export class PgToolError extends Error {
  constructor(
    readonly tool: string,
    readonly stderr: string,
    message: string,
  ) {
    super(message);
  }
}

export interface InstanceOptions {
  pgdata: string;
  /** directory of pg_ctl, pg_rewind, pg_basebackup… */
  binDir: string;
  /** port the server listens on (from postgresql.conf when not given) */
  port?: number;
  /** database user for SQL and replication (default: the data directory's owner) */
  user?: string;
}

/**
 * Is the process alive? A zombie (exited, not yet reaped by whatever init the machine has) counts
 * as dead.
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false;
  }
}

function ownerOf(path: string): { uid: number; name: string } {
  const uid = statSync(path).uid;
  const name = execFileSync('id', ['-nu', String(uid)], { encoding: 'utf8' }).trim();
  return { uid, name };
}

export class PgInstance {
  readonly pgdata: string;
  readonly binDir: string;
  private readonly owner: { uid: number; name: string };
  private readonly configuredPort?: number;
  readonly user: string;

  constructor(opts: InstanceOptions) {
    this.pgdata = opts.pgdata;
    this.binDir = opts.binDir;
    this.owner = ownerOf(opts.pgdata);
    this.configuredPort = opts.port;
    this.user = opts.user ?? this.owner.name;
  }

  /** run a PostgreSQL tool as the data directory's owner (PostgreSQL refuses to run as root) */
  run(tool: string, args: string[], opts: { allowFailure?: boolean; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}) {
    const bin = join(this.binDir, tool);
    const asOwner = process.getuid?.() === 0 && this.owner.uid !== 0;
    const [cmd, argv] = asOwner ? ['runuser', ['-u', this.owner.name, '--', bin, ...args]] : [bin, args];
    const r = spawnSync(cmd, argv, { encoding: 'utf8', env: { ...process.env, LANG: 'C', LC_ALL: 'C', ...opts.env }, timeout: opts.timeoutMs, maxBuffer: 1 << 26 });
    if (r.status !== 0 && !opts.allowFailure) {
      const stderr = (r.stderr || r.stdout || String(r.error ?? '')).trim();
      throw new PgToolError(tool, stderr, `${tool} failed (exit ${r.status ?? r.signal}): ${stderr.split('\n').slice(-3).join(' | ')}`);
    }
    return r;
  }

  get port(): number {
    if (this.configuredPort) return this.configuredPort;
    const pidFile = join(this.pgdata, 'postmaster.pid');
    if (existsSync(pidFile)) {
      const port = Number(readFileSync(pidFile, 'utf8').split('\n')[3]);
      if (port > 0) return port;
    }
    for (const f of ['postgresql.auto.conf', 'postgresql.conf']) {
      const path = join(this.pgdata, f);
      if (!existsSync(path)) continue;
      const m = [...readFileSync(path, 'utf8').matchAll(/^\s*port\s*=\s*'?(\d+)'?/gm)].pop();
      if (m) return Number(m[1]);
    }
    return 5432;
  }

  get postmasterPid(): number | null {
    const pidFile = join(this.pgdata, 'postmaster.pid');
    if (!existsSync(pidFile)) return null;
    const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
    return pid > 0 ? pid : null;
  }

  isRunning(): boolean {
    const pid = this.postmasterPid;
    return pid !== null && processAlive(pid);
  }

  start(logFile = join(this.pgdata, 'pgha-server.log')): void {
    this.run('pg_ctl', ['-D', this.pgdata, '-l', logFile, '-w', '-t', '120', 'start']);
  }

  /** fast, then immediate after the timeout */
  stop(timeoutSeconds = 60): 'fast' | 'immediate' | 'not running' {
    if (!this.isRunning()) return 'not running';
    const r = this.run('pg_ctl', ['-D', this.pgdata, '-m', 'fast', '-w', '-t', String(timeoutSeconds), 'stop'], { allowFailure: true });
    if (r.status === 0) return 'fast';
    this.run('pg_ctl', ['-D', this.pgdata, '-m', 'immediate', '-w', '-t', String(timeoutSeconds), 'stop']);
    return 'immediate';
  }

  async query<R extends Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<R[]> {
    const c = new pg.Client({ host: '127.0.0.1', port: this.port, user: this.user, database: 'postgres', connectionTimeoutMillis: 5000 });
    await c.connect();
    try {
      return (await c.query(sql, params)).rows as R[];
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  /** promote and wait until it accepts writes */
  async promote(timeoutMs = 60_000): Promise<void> {
    this.run('pg_ctl', ['-D', this.pgdata, '-w', '-t', String(Math.ceil(timeoutMs / 1000)), 'promote']);
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const [r] = await this.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r');
      if (!r.r) return;
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new Error('promotion did not finish in time');
  }
}
