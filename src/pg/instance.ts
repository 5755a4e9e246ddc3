/**
 * One PostgreSQL instance as the agent and rejoin see it: its data directory, how to run its
 * tools as the data directory's owner, whether it runs, and SQL against it.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
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

/** what a finished tool run gives back (the fields of spawnSync's answer that callers use) */
export interface ToolResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** set when the run was ended by its timeout */
  timedOut: boolean;
}

export interface RunOptions {
  allowFailure?: boolean;
  /** added to the scrubbed environment */
  env?: Record<string, string>;
  timeoutMs?: number;
  /** each chunk of the tool's stderr as it comes (a --progress report) */
  onStderr?: (chunk: string) => void;
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

/** every process id /proc lists (empty where there is no /proc) */
export function processIds(): number[] {
  try {
    return readdirSync('/proc').filter((e) => /^\d+$/.test(e)).map(Number);
  } catch {
    return [];
  }
}

/** the direct children of a process (from /proc; empty where /proc is not there) */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const e of processIds()) {
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === pid) out.push(Number(e));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/**
 * The environment PostgreSQL's tools get: nothing of the agent's own (its token, PGHA_* settings,
 * PGDATA, PG* connection defaults) — pg_ctl's postmaster would inherit all of it.
 */
export function toolEnvironment(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = { PATH: process.env.PATH || '/usr/local/bin:/usr/bin:/bin', LANG: 'C', LC_ALL: 'C' };
  if (process.env.HOME) env.HOME = process.env.HOME;
  return { ...env, ...extra };
}

const owners = new Map<number, string>();

/** the data directory's owner; the name is looked up once per uid (one `id` run) */
function ownerOf(path: string): { uid: number; name: string } {
  const uid = statSync(path).uid;
  let name = owners.get(uid);
  if (name === undefined) {
    name = execFileSync('id', ['-nu', String(uid)], { encoding: 'utf8', env: toolEnvironment() }).trim();
    owners.set(uid, name);
  }
  return { uid, name };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export type StopHow = 'fast' | 'immediate' | 'killed' | 'not running';

/**
 * A setting as the data directory's own configuration files give it (postgresql.auto.conf wins over
 * postgresql.conf, the last line over earlier ones; included files are not followed), or null.
 */
export function configuredSetting(pgdata: string, name: string): string | null {
  const re = new RegExp(`^\\s*${name}\\s*=\\s*(?:'((?:[^']|'')*)'|([^\\s#]+))`, 'gm');
  for (const f of ['postgresql.auto.conf', 'postgresql.conf']) {
    const path = join(pgdata, f);
    if (!existsSync(path)) continue;
    const m = [...readFileSync(path, 'utf8').matchAll(re)].pop();
    if (m) return m[1] !== undefined ? m[1].replace(/''/g, "'") : m[2];
  }
  return null;
}

/**
 * where the agent sends a server's output when it starts it: `<data dir>.server.log` beside the data
 * directory when its owner may write there (so base backups and pg_rewind do not copy it), else
 * `pgha-server.log` inside it
 */
export function serverLogFile(pgdata: string): string {
  const dir = resolve(pgdata);
  try {
    const own = statSync(dir);
    const parent = statSync(dirname(dir));
    const writable = (parent.uid === own.uid && parent.mode & 0o200) || (parent.gid === own.gid && parent.mode & 0o020) || parent.mode & 0o002;
    if (writable) return join(dirname(dir), `${basename(dir)}.server.log`);
  } catch {
    // fall back to inside
  }
  return join(dir, 'pgha-server.log');
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

  /**
   * Run a PostgreSQL tool as the data directory's owner (PostgreSQL refuses to run as root), without
   * blocking the event loop, in a scrubbed environment. Rejects with PgToolError on a non-zero exit
   * (unless allowFailure) or when the timeout ended it.
   */
  run(tool: string, args: string[], opts: RunOptions = {}): Promise<ToolResult> {
    const bin = join(this.binDir, tool);
    const asOwner = process.getuid?.() === 0 && this.owner.uid !== 0;
    const [cmd, argv] = asOwner ? ['runuser', ['-u', this.owner.name, '--', bin, ...args]] : [bin, args];
    return new Promise((resolve, reject) => {
      const child = spawn(cmd, argv, { env: toolEnvironment(opts.env), stdio: ['ignore', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let size = 0;
      const keep = (into: Buffer[]) => (d: Buffer) => {
        size += d.length;
        if (size <= 1 << 26) into.push(d);
      };
      child.stdout.on('data', keep(out));
      child.stderr.on('data', keep(err));
      if (opts.onStderr) {
        const onStderr = opts.onStderr;
        child.stderr.on('data', (d: Buffer) => onStderr(d.toString('utf8')));
      }
      let timedOut = false;
      let killTimer: NodeJS.Timeout | undefined;
      const timer = opts.timeoutMs
        ? setTimeout(() => {
            timedOut = true;
            // runuser passes SIGTERM on to the tool; SIGKILL if it does not go
            child.kill('SIGTERM');
            killTimer = setTimeout(() => child.kill('SIGKILL'), 5000);
          }, opts.timeoutMs)
        : undefined;
      let spawnError: Error | null = null;
      let settled = false;
      const finish = (status: number | null, signal: NodeJS.Signals | null) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        clearTimeout(killTimer);
        const r: ToolResult = { status, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), timedOut };
        if (r.status !== 0 && !opts.allowFailure) {
          const stderr = (r.stderr || r.stdout || String(spawnError ?? '')).trim() || (timedOut ? `timed out after ${opts.timeoutMs} ms` : '');
          reject(new PgToolError(tool, stderr, `${tool} failed (exit ${r.status ?? r.signal ?? 'none'}${timedOut ? ', timed out' : ''}): ${stderr.split('\n').slice(-3).join(' | ')}`));
        } else resolve(r);
      };
      child.on('error', (e) => {
        spawnError = e;
        finish(null, null);
      });
      // a tool that leaves a process behind holding its pipes (a server started without a log
      // file) must not keep the caller waiting: give the pipes a moment after the exit, then go
      child.on('exit', (code, signal) => {
        const t = setTimeout(() => {
          child.stdout.destroy();
          child.stderr.destroy();
          finish(code, signal);
        }, 500);
        child.once('close', () => {
          clearTimeout(t);
          finish(code, signal);
        });
      });
    });
  }

  get port(): number {
    if (this.configuredPort) return this.configuredPort;
    const pidFile = join(this.pgdata, 'postmaster.pid');
    if (existsSync(pidFile)) {
      const port = Number(readFileSync(pidFile, 'utf8').split('\n')[3]);
      if (port > 0) return port;
    }
    const port = configuredSetting(this.pgdata, 'port');
    return port && /^\d+$/.test(port) ? Number(port) : 5432;
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

  /**
   * pg_ctl start; the server's early output (and all of it without logging_collector) goes beside
   * the data directory, never inside it, where base backups and pg_rewind would copy it
   */
  async start(logFile = serverLogFile(this.pgdata)): Promise<void> {
    await this.run('pg_ctl', ['-D', this.pgdata, '-l', logFile, '-w', '-t', '120', 'start']);
  }

  /** fast, then immediate after the timeout */
  async stop(timeoutSeconds = 60): Promise<'fast' | 'immediate' | 'not running'> {
    if (!this.isRunning()) return 'not running';
    const r = await this.run('pg_ctl', ['-D', this.pgdata, '-m', 'fast', '-w', '-t', String(timeoutSeconds), 'stop'], { allowFailure: true });
    if (r.status === 0) return 'fast';
    await this.run('pg_ctl', ['-D', this.pgdata, '-m', 'immediate', '-w', '-t', String(timeoutSeconds), 'stop']);
    return 'immediate';
  }

  /**
   * Stop whatever it takes, in bounded time (a fence): fast, then immediate, each with a short
   * timeout, then SIGKILL of the postmaster and its children (a postmaster paused by SIGSTOP
   * answers neither; its backends must not carry on writing once it is gone).
   */
  async stopOrKill(fastSeconds = 5, immediateSeconds = 5): Promise<StopHow> {
    if (!this.isRunning()) return 'not running';
    const fast = await this.run('pg_ctl', ['-D', this.pgdata, '-m', 'fast', '-w', '-t', String(fastSeconds), 'stop'], { allowFailure: true, timeoutMs: (fastSeconds + 5) * 1000 });
    if (fast.status === 0 || !this.isRunning()) return 'fast';
    const imm = await this.run('pg_ctl', ['-D', this.pgdata, '-m', 'immediate', '-w', '-t', String(immediateSeconds), 'stop'], { allowFailure: true, timeoutMs: (immediateSeconds + 5) * 1000 });
    if (imm.status === 0 || !this.isRunning()) return 'immediate';
    const pid = this.postmasterPid;
    if (pid === null || !processAlive(pid)) return 'immediate';
    // children first (after the postmaster's death they would be handed to init)
    const children = childPids(pid);
    for (const p of [pid, ...children]) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && (processAlive(pid) || children.some(processAlive))) await sleep(20);
    if (processAlive(pid)) throw new PgToolError('kill', '', `postmaster ${pid} is still alive after SIGKILL`);
    return 'killed';
  }

  async query<R extends Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<R[]> {
    const c = new pg.Client({ host: '127.0.0.1', port: this.port, user: this.user, database: 'postgres', connectionTimeoutMillis: 5000 });
    // a server that dies mid-query makes the client emit 'error': never let that end the process
    c.on('error', () => undefined);
    await c.connect();
    try {
      return (await c.query(sql, params)).rows as R[];
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  /** promote and wait until it accepts writes */
  async promote(timeoutMs = 60_000): Promise<void> {
    await this.run('pg_ctl', ['-D', this.pgdata, '-w', '-t', String(Math.ceil(timeoutMs / 1000)), 'promote']);
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const [r] = await this.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r');
      if (!r.r) return;
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new Error('promotion did not finish in time');
  }
}
