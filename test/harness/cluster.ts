/**
 * The one test harness for real PostgreSQL clusters: initdb in a temp dir, a free loopback port,
 * the socket in the temp dir, PostgreSQL run as an unprivileged user when the tests run as root,
 * standbys by pg_basebackup, promote, stop, kill -9 — and every process cleaned up by PID.
 */
import { execFileSync, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { processAlive } from '../../src/pg/instance.js';
import { freePort } from '../../src/demo/processes.js';
import { NET_RANGE, type NetHost } from './netns.js';

export { processAlive };

export interface ClusterOptions {
  name?: string;
  /** directory of initdb/pg_ctl/postgres (default: PG 15 from $PG_BINDIR, pg_config, or Debian's path) */
  binDir?: string;
  /** directory of client tools (psql, pg_basebackup, pg_waldump…), default binDir then PG 15 */
  clientBinDir?: string;
  walSegSizeMB?: number;
  conf?: Record<string, string | number | boolean>;
  initdbArgs?: string[];
  dataChecksums?: boolean;
  /** fsync on by default: tests that kill -9 rely on it */
  fsync?: boolean;
  /** extra library dir for embedded builds */
  libDir?: string;
  /**
   * run the server inside this network namespace (test/harness/netns.ts): pg_ctl/postgres via
   * `ip netns exec`, listening on the namespace's address (and its own loopback), which clients use
   */
  netHost?: NetHost;
}

const registry = new Set<PgCluster>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  const killAll = () => {
    for (const c of registry) c.killNow();
  };
  process.once('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      killAll();
      process.exit(130);
    });
  }
}

export function pg15BinDir(): string {
  if (process.env.PG_BINDIR) return process.env.PG_BINDIR;
  const debian = '/usr/lib/postgresql/15/bin';
  if (existsSync(join(debian, 'initdb'))) return debian;
  try {
    return execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim();
  } catch {
    return debian;
  }
}

/** uid/gid of the unprivileged user PostgreSQL runs as when we are root */
function serverUser(): { uid: number; gid: number; name: string } | null {
  if (process.getuid?.() !== 0) return null;
  const name = process.env.PGHA_TEST_PGUSER ?? 'postgres';
  const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', name], { encoding: 'utf8' }).trim());
  return { uid, gid, name };
}

/** a free loopback port, never one this process handed out before (the demo's own helper) */
export { freePort };

export class ToolError extends Error {}

export class PgCluster {
  readonly name: string;
  readonly root: string;
  readonly dataDir: string;
  readonly socketDir: string;
  readonly binDir: string;
  readonly clientBinDir: string;
  port = 0;
  private readonly user = serverUser();
  private readonly libDir?: string;
  private stoppedPids: number[] = [];
  /** the network namespace the server runs in (none: the root namespace, on 127.0.0.1) */
  readonly netHost?: NetHost;

  private constructor(name: string, root: string, binDir: string, clientBinDir: string, libDir?: string, netHost?: NetHost) {
    this.name = name;
    this.netHost = netHost;
    this.root = root;
    this.dataDir = join(root, 'data');
    this.socketDir = root;
    this.binDir = binDir;
    this.clientBinDir = clientBinDir;
    this.libDir = libDir;
    registry.add(this);
    installExitHook();
  }

  get walDir(): string {
    return join(this.dataDir, 'pg_wal');
  }

  /** the TCP address clients use: the net host's address, else 127.0.0.1 */
  get host(): string {
    return this.netHost?.ip ?? '127.0.0.1';
  }

  /** listen_addresses: inside a net host also its own loopback (the agent's local SQL uses 127.0.0.1) */
  private get listenAddresses(): string {
    return this.netHost ? `${this.netHost.ip},127.0.0.1` : '127.0.0.1';
  }

  get connectionString(): string {
    return `postgresql://${this.user?.name ?? process.env.USER ?? 'postgres'}@${this.host}:${this.port}/postgres`;
  }

  /** libpq keyword/value connection info (for primary_conninfo, psql -d) */
  get conninfo(): string {
    return `host=${this.host} port=${this.port} user=${this.user?.name ?? process.env.USER ?? 'postgres'} dbname=postgres`;
  }

  private static makeRoot(name: string): string {
    const root = mkdtempSync(join(tmpdir(), `pgha-test-${name}-`));
    chmodSync(root, 0o755);
    const u = serverUser();
    if (u) chownSync(root, u.uid, u.gid);
    return root;
  }

  static async init(opts: ClusterOptions = {}): Promise<PgCluster> {
    const name = opts.name ?? 'pg';
    const binDir = opts.binDir ?? pg15BinDir();
    const c = new PgCluster(name, PgCluster.makeRoot(name), binDir, opts.clientBinDir ?? pg15BinDir(), opts.libDir, opts.netHost);
    const args = ['-D', c.dataDir, '-A', 'trust', '-U', c.user?.name ?? process.env.USER ?? 'postgres', '--no-sync', '-E', 'UTF8', '--locale=C'];
    if (opts.walSegSizeMB) args.push(`--wal-segsize=${opts.walSegSizeMB}`);
    if (opts.dataChecksums) args.push('--data-checksums');
    c.runServerTool('initdb', [...args, ...(opts.initdbArgs ?? [])]);
    c.port = await freePort();
    c.writeConf({
      port: c.port,
      listen_addresses: c.listenAddresses,
      unix_socket_directories: c.socketDir,
      wal_level: 'logical',
      max_wal_senders: 10,
      max_replication_slots: 10,
      max_prepared_transactions: 10,
      wal_log_hints: 'on',
      hot_standby: 'on',
      fsync: opts.fsync === false ? 'off' : 'on',
      logging_collector: 'off',
      ...(opts.conf ?? {}),
    });
    writeFileSync(
      join(c.dataDir, 'pg_hba.conf'),
      'local all all trust\nlocal replication all trust\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n' +
        `host all all ${NET_RANGE} trust\nhost replication all ${NET_RANGE} trust\n`,
    );
    return c;
  }

  /** settings appended to postgresql.auto.conf-style file included last */
  writeConf(settings: Record<string, string | number | boolean>): void {
    const lines = Object.entries(settings).map(([k, v]) => `${k} = ${typeof v === 'number' ? v : `'${String(v).replace(/'/g, "''")}'`}`);
    const path = join(this.dataDir, 'postgresql.conf');
    const before = readFileSync(path, 'utf8');
    writeFileSync(path, before + '\n# pgha test harness\n' + lines.join('\n') + '\n');
  }

  private env(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { ...process.env, LANG: 'C', LC_ALL: 'C', PGHOST: this.socketDir };
    if (this.port > 0) env.PGPORT = String(this.port);
    else delete env.PGPORT;
    if (this.libDir) env.LD_LIBRARY_PATH = [this.libDir, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':');
    return env;
  }

  /** `netHost`: run inside that network namespace (server tools: this cluster's, while it exists) */
  private spawn(bin: string, args: string[], input?: string, netHost?: NetHost): SpawnSyncReturns<string> {
    let [cmd, argv] = this.user ? ['runuser', ['-u', this.user.name, '--', bin, ...args]] : [bin, args];
    if (netHost && !netHost.destroyed) [cmd, ...argv] = netHost.exec([cmd, ...argv]);
    return spawnSync(cmd, argv, { encoding: 'utf8', env: this.env(), cwd: this.root, input, maxBuffer: 1 << 28 });
  }

  private check(tool: string, args: string[], r: SpawnSyncReturns<string>): string {
    if (r.status !== 0) {
      throw new ToolError(`${tool} ${args.join(' ')} failed (exit ${r.status}${r.signal ? `, ${r.signal}` : ''}): ${(r.stderr || r.stdout || String(r.error ?? '')).trim()}`);
    }
    return r.stdout;
  }

  /** a server-side binary (initdb, pg_ctl, postgres) of this cluster's version */
  runServerTool(tool: string, args: string[]): string {
    return this.check(tool, args, this.spawn(join(this.binDir, tool), args, undefined, this.netHost));
  }

  /** a client tool (pg_waldump, pg_controldata, psql, pg_basebackup, pg_rewind, pgbench…), as the server user */
  run(tool: string, args: string[], opts: { allowFailure?: boolean; input?: string } = {}): SpawnSyncReturns<string> {
    const dir = existsSync(join(this.binDir, tool)) ? this.binDir : this.clientBinDir;
    const r = this.spawn(join(dir, tool), args, opts.input);
    if (!opts.allowFailure) this.check(tool, args, r);
    return r;
  }

  get pid(): number | null {
    const pidFile = join(this.dataDir, 'postmaster.pid');
    if (!existsSync(pidFile)) return null;
    const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  }

  isRunning(): boolean {
    const pid = this.pid;
    return pid !== null && processAlive(pid);
  }

  async start(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const r = this.spawn(join(this.binDir, 'pg_ctl'), ['-D', this.dataDir, '-l', join(this.root, 'server.log'), '-w', '-t', '60', 'start'], undefined, this.netHost);
      if (r.status === 0) return;
      const log = existsSync(join(this.root, 'server.log')) ? readFileSync(join(this.root, 'server.log'), 'utf8') : '';
      if (attempt < 3 && /could not bind|Address already in use/.test(log)) {
        this.port = await freePort();
        this.writeConf({ port: this.port });
        continue;
      }
      throw new ToolError(`pg_ctl start of ${this.name} failed: ${r.stderr.trim()}\n${log.split('\n').slice(-15).join('\n')}`);
    }
  }

  stop(mode: 'smart' | 'fast' | 'immediate' = 'fast'): void {
    const pid = this.pid;
    if (!this.isRunning()) return;
    this.runServerTool('pg_ctl', ['-D', this.dataDir, '-m', mode, '-w', '-t', '60', 'stop']);
    if (pid) this.stoppedPids.push(pid);
  }

  /**
   * kill -9 the postmaster (children exit when they notice it is gone). By default this waits
   * until no process holds the data directory; `waitOrphans: false` returns once the postmaster is
   * dead (an agent beside the node may be restarting it already).
   */
  async kill9(opts: { waitOrphans?: boolean } = {}): Promise<void> {
    const pid = this.pid;
    if (pid === null) return;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      return;
    }
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && processAlive(pid)) await sleep(50);
    // where nothing reaps orphans (this sandbox's init), the dead postmaster stays a zombie and
    // PostgreSQL would take its postmaster.pid for a live server; a real init reaps it at once,
    // after which PostgreSQL ignores the stale file. Do what the reaping makes PostgreSQL do.
    const pidFile = join(this.dataDir, 'postmaster.pid');
    if (!processAlive(pid) && existsSync(pidFile) && Number(readFileSync(pidFile, 'utf8').split('\n')[0]) === pid) {
      rmSync(pidFile);
      const lock = join(this.socketDir, `.s.PGSQL.${this.port}.lock`);
      if (existsSync(lock)) rmSync(lock);
      rmSync(join(this.socketDir, `.s.PGSQL.${this.port}`), { force: true });
    }
    // backends and auxiliary processes of the killed postmaster go away on their own, but wait
    // until none holds the data directory so a restart is not refused
    if (opts.waitOrphans !== false) await this.waitForOrphans();
  }

  private async waitForOrphans(): Promise<void> {
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      const r = spawnSync('pgrep', ['-f', `-D ${this.dataDir}`], { encoding: 'utf8' });
      const orphans = spawnSync('pgrep', ['-f', this.dataDir], { encoding: 'utf8' }).stdout.trim();
      if (!orphans && !r.stdout.trim()) return;
      await sleep(50);
    }
  }

  async restart(): Promise<void> {
    this.stop('fast');
    await this.start();
  }

  async client<T>(fn: (c: pg.Client) => Promise<T>, database = 'postgres'): Promise<T> {
    const c = new pg.Client({ host: this.host, port: this.port, user: this.user?.name ?? process.env.USER ?? 'postgres', database });
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  async rows<R extends Record<string, unknown> = Record<string, unknown>>(query: string, params: unknown[] = [], database = 'postgres'): Promise<R[]> {
    return this.client(async (c) => (await c.query(query, params)).rows as R[], database);
  }

  async sql(query: string, params: unknown[] = []): Promise<string | null> {
    const rows = await this.rows(query, params);
    if (rows.length === 0) return null;
    const v = Object.values(rows[0])[0];
    return v === null || v === undefined ? null : String(v);
  }

  psql(sql: string, database = 'postgres'): string {
    return this.run('psql', ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-h', this.socketDir, '-p', String(this.port), '-d', database, '-c', sql]).stdout;
  }

  async checkpoint(): Promise<void> {
    await this.sql('CHECKPOINT');
  }

  async switchWal(): Promise<string> {
    return (await this.sql('SELECT pg_switch_wal()'))!;
  }

  async currentLsn(): Promise<string> {
    return (await this.sql(
      'SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END',
    ))!;
  }

  pgbench(args: string[]): string {
    return this.run('pgbench', ['-h', this.socketDir, '-p', String(this.port), ...args, 'postgres']).stdout;
  }

  /**
   * a streaming standby made by pg_basebackup -R, started and connected; with `netHost` it runs in
   * that network namespace (pg_basebackup too, so primary_conninfo is what works from there — the
   * primary must then be in a net host itself: 127.0.0.1 of the root namespace is not reachable)
   */
  async createStandby(opts: { name?: string; slot?: string; conf?: Record<string, string | number | boolean>; netHost?: NetHost } = {}): Promise<PgCluster> {
    const name = opts.name ?? `${this.name}-standby`;
    if (opts.netHost && !this.netHost) {
      throw new ToolError(`standby ${name} in net host ${opts.netHost.ns} cannot reach primary ${this.name} on 127.0.0.1: put the primary in a net host too`);
    }
    const s = new PgCluster(name, PgCluster.makeRoot(name), this.binDir, this.clientBinDir, this.libDir, opts.netHost);
    const args = ['-D', s.dataDir, '-h', this.host, '-p', String(this.port), '-U', this.user?.name ?? process.env.USER ?? 'postgres', '-R', '-X', 'stream', '-c', 'fast', '--no-sync'];
    if (opts.slot) args.push('-S', opts.slot, '-C');
    if (opts.netHost) {
      const dir = existsSync(join(this.binDir, 'pg_basebackup')) ? this.binDir : this.clientBinDir;
      this.check('pg_basebackup', args, this.spawn(join(dir, 'pg_basebackup'), args, undefined, opts.netHost));
    } else {
      this.run('pg_basebackup', args);
    }
    s.port = await freePort();
    // the primary's listen_addresses came with the copy: a standby elsewhere listens on its own
    const listen: Record<string, string> = opts.netHost || this.netHost ? { listen_addresses: s.listenAddresses } : {};
    s.writeConf({ port: s.port, unix_socket_directories: s.socketDir, ...listen, ...(opts.conf ?? {}) });
    await s.start();
    await waitFor(async () => (await s.sql('SELECT status FROM pg_stat_wal_receiver')) === 'streaming', 60_000, `${name} streaming`);
    return s;
  }

  /**
   * a standby made from a cold copy of this (stopped) primary's data directory — for builds without
   * pg_basebackup (the embedded PostgreSQL 16-18 packages): the copy without the primary's slots,
   * standby.signal, primary_conninfo and primary_slot_name (the slot made on the primary by the
   * caller, before the stop, so it reserves WAL from there). Not started.
   */
  coldStandby(opts: { name: string; slot: string; conf?: Record<string, string | number | boolean> }): Promise<PgCluster> {
    if (this.isRunning()) throw new ToolError(`${this.name}: a cold copy needs the primary stopped`);
    const s = new PgCluster(opts.name, PgCluster.makeRoot(opts.name), this.binDir, this.clientBinDir, this.libDir, this.netHost);
    execFileSync('cp', ['-a', this.dataDir, s.dataDir]);
    for (const f of readdirSync(join(s.dataDir, 'pg_replslot'))) rmSync(join(s.dataDir, 'pg_replslot', f), { recursive: true, force: true });
    rmSync(join(s.dataDir, 'postmaster.pid'), { force: true });
    writeFileSync(join(s.dataDir, 'standby.signal'), '');
    return freePort().then((port) => {
      s.port = port;
      s.writeConf({ port, unix_socket_directories: s.socketDir, primary_conninfo: `${this.conninfo} application_name=${opts.name}`, primary_slot_name: opts.slot, ...(opts.conf ?? {}) });
      return s;
    });
  }

  /** wait until `standby` has replayed everything this primary has written so far */
  async waitForReplay(standby: PgCluster): Promise<void> {
    const target = await this.sql('SELECT pg_current_wal_lsn()');
    await waitFor(
      async () => (await standby.sql(`SELECT pg_last_wal_replay_lsn() >= '${target}'::pg_lsn`)) === 'true',
      60_000,
      `${standby.name} replay to ${target}`,
    );
  }

  /** promote and wait until it accepts writes */
  async promote(): Promise<void> {
    this.runServerTool('pg_ctl', ['-D', this.dataDir, '-w', '-t', '60', 'promote']);
    await waitFor(async () => (await this.sql('SELECT pg_is_in_recovery()')) === 'false', 60_000, `${this.name} promotion`);
  }

  /** stop the server by PID immediately (used at exit) */
  killNow(): void {
    for (const pid of [this.pid, ...this.stoppedPids]) {
      if (!pid) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }

  /** all processes of this server: the postmaster and its children */
  serverPids(): number[] {
    const pid = this.pid;
    if (!pid) return [];
    let children: number[] = [];
    try {
      children = execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).map(Number);
    } catch {
      // no children (pgrep exits 1)
    }
    return [pid, ...children];
  }

  /** SIGCONT the postmaster and its children (harmless when they run) */
  resumeStopped(): void {
    for (const p of this.serverPids()) {
      try {
        process.kill(p, 'SIGCONT');
      } catch {
        // already gone
      }
    }
  }

  /** stop (fast → immediate → kill -9 by PID) and remove the temp dir unless PGHA_KEEP_TMP=1 */
  async cleanup(): Promise<void> {
    try {
      // a test may have left the server SIGSTOPped: a stopped postmaster would let pg_ctl wait out its timeout
      this.resumeStopped();
      if (this.isRunning()) {
        try {
          this.stop('fast');
        } catch {
          try {
            this.stop('immediate');
          } catch {
            await this.kill9();
          }
        }
      }
      if (this.isRunning()) await this.kill9();
    } finally {
      registry.delete(this);
      if (process.env.PGHA_KEEP_TMP !== '1') rmSync(this.root, { recursive: true, force: true });
    }
  }

  /** make a directory owned by the server user (for copies it must read) */
  ownedDir(name: string): string {
    const dir = join(this.root, name);
    mkdirSync(dir, { recursive: true });
    if (this.user) chownSync(dir, this.user.uid, this.user.gid);
    return dir;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function waitFor(cond: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      if (await cond()) return;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
}

/** stop and remove every cluster still registered (afterAll safety net) */
export async function cleanupAll(): Promise<void> {
  for (const c of [...registry]) await c.cleanup();
}
