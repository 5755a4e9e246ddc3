/**
 * The demo's cluster on loopback under one temp dir: three PostgreSQL 15 nodes (n1 made by initdb
 * with HA settings, n2 and n3 by pg_basebackup -R, synchronous `ANY 1 (*)`), a `pgha agent`
 * process beside each (the real CLI, token in PGHA_TOKEN), one pgha-proxy with automatic failover
 * and slot migration, and a logical slot whose copies `pgha slots sync` keeps on the standbys.
 *
 * PostgreSQL is started by the demo as its own child (through runuser when we are root): a killed
 * postmaster is then reaped by its parent, so its agent can restart the node on any machine, even
 * one whose init does not reap orphans.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { syncOnce } from '../slots/sync.js';
import { asServerUser, DemoError, freePort, postmasterPid, type ProcessSet, type Tracked } from './processes.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** dist/src/demo → the package root's dist/ */
const DIST = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const PGHA_CLI = join(DIST, 'src', 'cli', 'pgha.js');
export const PROXY_CLI = join(DIST, 'proxy', 'cli.js');

export const DB_USER = 'postgres';
export const SLOT = 'demo_cdc';
export const LEDGER_DDL =
  'CREATE TABLE demo_ledger (id bigint PRIMARY KEY, worker int NOT NULL, at timestamptz NOT NULL DEFAULT now());' +
  'CREATE TABLE demo_counter (id int PRIMARY KEY, n bigint NOT NULL); INSERT INTO demo_counter VALUES (1, 0)';

/** PostgreSQL 15's bin directory: $PG_BINDIR, Debian's path, then pg_config */
export function pg15BinDir(): string {
  if (process.env.PG_BINDIR) return process.env.PG_BINDIR;
  const debian = '/usr/lib/postgresql/15/bin';
  if (existsSync(join(debian, 'initdb'))) return debian;
  try {
    return execFileSync('pg_config', ['--bindir'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return debian;
  }
}

export interface DemoNode {
  name: string;
  /** this node's directory: data/, postgres.log, agent.log, the socket */
  dir: string;
  dataDir: string;
  port: number;
  /** host:port, as the proxy names it */
  address: string;
  agentPort: number;
  agentUrl: string;
  agent: Tracked | null;
  /** every postmaster PID seen for this node (the one the demo started, ones an agent started later) */
  postmasters: Set<number>;
  serverLog: string;
  agentLog: string;
}

export interface DemoCluster {
  root: string;
  binDir: string;
  token: string;
  nodes: DemoNode[];
  proxy: { port: number; adminPort: number; admin: string; proc: Tracked | null; log: string };
  slot: string;
}

export interface BringUpOptions {
  binDir: string;
  say: (line: string) => void;
}

/** uid/gid/name of the user PostgreSQL runs as when we are root */
function serverUser(): { uid: number; gid: number; name: string } | null {
  if (process.getuid?.() !== 0) return null;
  const name = process.env.PGHA_DEMO_PGUSER ?? 'postgres';
  try {
    const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', name], { encoding: 'utf8' }).trim());
    return { uid, gid, name };
  } catch {
    throw new DemoError(`running as root, PostgreSQL needs an unprivileged user: no user "${name}" (create it, or set PGHA_DEMO_PGUSER)`);
  }
}

/** the environment of agents and the proxy: ours without PGHA_* settings, plus the token */
function childEnv(token: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PGHA_') && !/^PG(HOST|PORT|DATA|USER|DATABASE)$/.test(k)) env[k] = v;
  env.PGHA_TOKEN = token;
  if (process.env.PGHA_LOG_LEVEL) env.PGHA_LOG_LEVEL = process.env.PGHA_LOG_LEVEL;
  return env;
}

/** the cluster's root and layout; nothing started yet (so cleanup knows the dir from the start) */
export async function planCluster(binDir: string): Promise<DemoCluster> {
  const user = serverUser();
  const root = mkdtempSync(join(tmpdir(), 'pgha-demo-'));
  chmodSync(root, 0o755);
  if (user) chownSync(root, user.uid, user.gid);
  const nodes: DemoNode[] = [];
  for (const name of ['n1', 'n2', 'n3']) {
    const dir = join(root, name);
    mkdirSync(dir);
    chmodSync(dir, 0o700);
    if (user) chownSync(dir, user.uid, user.gid);
    const port = await freePort();
    const agentPort = await freePort();
    nodes.push({
      name,
      dir,
      dataDir: join(dir, 'data'),
      port,
      address: `127.0.0.1:${port}`,
      agentPort,
      agentUrl: `http://127.0.0.1:${agentPort}`,
      agent: null,
      postmasters: new Set(),
      serverLog: join(dir, 'postgres.log'),
      agentLog: join(dir, 'agent.log'),
    });
  }
  const port = await freePort();
  const adminPort = await freePort();
  return {
    root,
    binDir,
    token: randomBytes(24).toString('base64url'),
    nodes,
    proxy: { port, adminPort, admin: `http://127.0.0.1:${adminPort}`, proc: null, log: join(root, 'proxy.log') },
    slot: SLOT,
  };
}

/** settings appended to postgresql.conf (the last line of a setting wins) */
function writeConf(dataDir: string, settings: Record<string, string | number>): void {
  const lines = Object.entries(settings).map(([k, v]) => `${k} = ${typeof v === 'number' ? v : `'${v.replace(/'/g, "''")}'`}`);
  appendFileSync(join(dataDir, 'postgresql.conf'), `\n# pgha demo\n${lines.join('\n')}\n`);
}

export async function connect(port: number, timeoutMs = 3000): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port, user: DB_USER, database: 'postgres', connectionTimeoutMillis: timeoutMs, query_timeout: 10_000 });
  c.on('error', () => undefined);
  try {
    await c.connect();
  } catch (e) {
    c.end().catch(() => undefined);
    throw e;
  }
  return c;
}

export async function sql<R extends Record<string, unknown> = Record<string, unknown>>(port: number, text: string, params: unknown[] = []): Promise<R[]> {
  const c = await connect(port);
  try {
    return (await c.query(text, params)).rows as R[];
  } finally {
    await c.end().catch(() => undefined);
  }
}

async function waitUntil(what: string, timeoutMs: number, cond: () => Promise<boolean>, where?: string, dead?: () => string | null): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const why = dead?.();
    if (why) throw new DemoError(`${what}: ${why}`, where);
    try {
      if (await cond()) return;
    } catch (e) {
      last = (e as Error).message;
    }
    if (Date.now() > deadline) throw new DemoError(`${what}: not within ${timeoutMs / 1000} s${last ? ` (${last})` : ''}`, where);
    await sleep(100);
  }
}

/** postgres itself as our child (runuser reaps it when it is killed), ready when it takes a connection */
async function startPostgres(c: DemoCluster, n: DemoNode, procs: ProcessSet): Promise<void> {
  const user = serverUser();
  const [cmd, args] = asServerUser(join(c.binDir, 'postgres'), ['-D', n.dataDir], user?.name ?? null);
  const t = procs.start(`postgres ${n.name}`, cmd, args, { logFile: n.serverLog, cwd: n.dir, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C', LC_ALL: 'C' } });
  // its life is the agents' business once they run (a slot sync restarts it through its agent)
  procs.expectExit(t.pid);
  await waitUntil(`PostgreSQL ${n.name} on port ${n.port} to accept connections`, 60_000, async () => {
    await sql(n.port, 'SELECT 1');
    return true;
  }, n.serverLog, () => (t.exit ? `postgres exited (${t.exit.code ?? t.exit.signal})` : null));
  const pid = postmasterPid(n.dataDir);
  if (pid) {
    n.postmasters.add(pid);
    procs.adopt(pid);
  }
}

async function startAgent(c: DemoCluster, n: DemoNode, procs: ProcessSet): Promise<void> {
  const args = [
    PGHA_CLI, 'agent',
    '--name', n.name,
    '--pgdata', n.dataDir,
    '--listen', `127.0.0.1:${n.agentPort}`,
    '--pg-port', String(n.port),
    '--pg-host', '127.0.0.1',
    '--pg-bin', c.binDir,
    '--repl-user', DB_USER,
    '--proxy', c.proxy.admin,
    ...c.nodes.filter((x) => x !== n).flatMap((x) => ['--peer', `${x.name}=${x.agentUrl}`]),
  ];
  n.agent = procs.start(`agent ${n.name}`, process.execPath, args, { env: childEnv(c.token), logFile: n.agentLog, watched: true });
  const a = n.agent;
  await waitUntil(`agent ${n.name} to answer ${n.agentUrl}/health`, 30_000, async () => (await fetch(`${n.agentUrl}/health`, { signal: AbortSignal.timeout(1000) })).ok, n.agentLog, () =>
    a.exit ? `it exited (${a.exit.code ?? a.exit.signal})` : null,
  );
}

export const FAST_HEALTH = ['--health-interval', '200', '--health-timeout', '1000', '--health-retries', '3', '--health-retry-delay', '100'];

async function startProxy(c: DemoCluster, procs: ProcessSet): Promise<void> {
  const args = [
    PROXY_CLI,
    '--listen', `127.0.0.1:${c.proxy.port}`,
    '--admin', `127.0.0.1:${c.proxy.adminPort}`,
    '--health-user', DB_USER,
    ...c.nodes.flatMap((n) => ['--backend', n.address]),
    ...c.nodes.flatMap((n) => ['--agent', `${n.address}=${n.agentUrl}`]),
    '--auto-failover',
    '--migrate-slots',
    ...FAST_HEALTH,
  ];
  c.proxy.proc = procs.start('pgha-proxy', process.execPath, args, { env: childEnv(c.token), logFile: c.proxy.log, watched: true });
  const p = c.proxy.proc;
  const primary = c.nodes[0].address;
  await waitUntil(`pgha-proxy to route to ${primary}`, 30_000, async () => {
    const s = (await (await fetch(`${c.proxy.admin}/status`, { signal: AbortSignal.timeout(1000) })).json()) as { primary: string | null };
    return s.primary === primary;
  }, c.proxy.log, () => (p.exit ? `it exited (${p.exit.code ?? p.exit.signal})` : null));
}

/** `pgha slots sync` (the library's pass) from the primary to one standby, retried a little */
export async function syncSlot(c: DemoCluster, from: DemoNode, to: DemoNode, attempts = 3): Promise<Awaited<ReturnType<typeof syncOnce>>> {
  for (let i = 1; ; i++) {
    try {
      return await syncOnce(from.agentUrl, to.agentUrl, c.token);
    } catch (e) {
      if (i >= attempts) throw new DemoError(`pgha slots sync ${from.name} → ${to.name}: ${(e as Error).message}`, to.agentLog);
      await sleep(500);
    }
  }
}

/** everything up and checked; `say` tells each step */
export async function bringUp(c: DemoCluster, procs: ProcessSet, say: (line: string) => void): Promise<void> {
  const user = serverUser();
  const [n1, ...standbys] = c.nodes;
  const asUser = (bin: string, args: string[]) => asServerUser(join(c.binDir, bin), args, user?.name ?? null);
  const toolEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C', LC_ALL: 'C' };

  // n1: initdb with the settings an HA node needs
  const [icmd, iargs] = asUser('initdb', ['-D', n1.dataDir, '-U', DB_USER, '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync']);
  await procs.run('initdb n1', icmd, iargs, { env: toolEnv, cwd: n1.dir, logFile: join(n1.dir, 'initdb.log') });
  writeConf(n1.dataDir, {
    listen_addresses: '127.0.0.1',
    port: n1.port,
    unix_socket_directories: n1.dir,
    cluster_name: n1.name,
    wal_level: 'logical',
    wal_log_hints: 'on',
    max_wal_senders: 10,
    max_replication_slots: 10,
    hot_standby: 'on',
    hot_standby_feedback: 'on',
    synchronous_standby_names: 'ANY 1 (*)',
    wal_keep_size: '128MB',
    max_wal_size: '256MB',
    wal_retrieve_retry_interval: '200ms',
    wal_receiver_timeout: '3s',
    wal_sender_timeout: '3s',
    fsync: 'on',
    logging_collector: 'off',
    log_line_prefix: '%m [%p] %q%a ',
  });
  writeFileSync(
    join(n1.dataDir, 'pg_hba.conf'),
    '# pgha demo: loopback only\nlocal all all trust\nlocal replication all trust\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n',
  );
  await startPostgres(c, n1, procs);
  say(`n1: initdb, started on port ${n1.port} (wal_level=logical, wal_log_hints=on, synchronous_standby_names='ANY 1 (*)')`);

  // n2, n3: pg_basebackup -R from n1, each with its own port and cluster_name
  await Promise.all(
    standbys.map(async (s) => {
      const [cmd, args] = asUser('pg_basebackup', ['-D', s.dataDir, '-h', '127.0.0.1', '-p', String(n1.port), '-U', DB_USER, '-R', '-X', 'stream', '-c', 'fast', '--no-sync']);
      await procs.run(`pg_basebackup ${s.name}`, cmd, args, { env: toolEnv, cwd: s.dir, logFile: join(s.dir, 'basebackup.log') });
      writeConf(s.dataDir, { port: s.port, unix_socket_directories: s.dir, cluster_name: s.name });
      await startPostgres(c, s, procs);
    }),
  );
  await waitUntil('n2 and n3 streaming as synchronous (quorum) standbys of n1', 60_000, async () => {
    const [r] = await sql<{ n: string }>(n1.port, "SELECT count(*)::text AS n FROM pg_stat_replication WHERE state = 'streaming' AND sync_state = 'quorum'");
    return Number(r.n) === standbys.length;
  }, n1.serverLog);
  say(`n2, n3: pg_basebackup -R from n1, streaming, synchronous (ANY 1 of them acknowledges every commit)`);

  const conn = await connect(n1.port);
  try {
    await conn.query(LEDGER_DDL);
    await conn.query("SELECT pg_create_logical_replication_slot($1, 'test_decoding')", [c.slot]);
  } finally {
    await conn.end().catch(() => undefined);
  }

  // the agents know each other (and the proxy) before they start: every port was chosen up front
  await Promise.all(c.nodes.map((n) => startAgent(c, n, procs)));
  say(`agents: ${c.nodes.map((n) => `${n.name} ${n.agentUrl}`).join(', ')} (automatic rejoin on)`);
  await startProxy(c, procs);
  say(`pgha-proxy: clients on 127.0.0.1:${c.proxy.port}, admin ${c.proxy.admin} (--auto-failover --migrate-slots, health every 200 ms)`);
  say(`  watch it: open ${c.proxy.admin}/ in a browser, or run pgha status --proxy ${c.proxy.admin} --watch 1`);

  // the logical slot: copies on the standbys (installed with a restart of each standby by its agent)
  for (const s of standbys) await syncSlot(c, n1, s);
  say(`slot ${c.slot} (test_decoding) on n1, copies on n2 and n3 (pgha slots sync)`);
}

/** the postmasters running now (from each data directory's postmaster.pid), remembered per node */
export function notePostmasters(c: DemoCluster, procs: ProcessSet): void {
  for (const n of c.nodes) {
    const pid = postmasterPid(n.dataDir);
    if (pid && !n.postmasters.has(pid)) {
      n.postmasters.add(pid);
      procs.adopt(pid);
    }
  }
}
