/**
 * Carrying out an init plan on this machine: data directories, initdb, the configuration files,
 * the primary started, roles and member slots, the standbys' base backups (concurrently, as
 * asynchronous child processes run as the data directories' owner), the standbys started and
 * streaming. Before anything is touched the plan's refusals, the data directories and the ports
 * are checked again; a failure later stops the servers it started and says where it stopped.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { networkInterfaces } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import type { ClusterConfig } from '../config/load.js';
import { PgInstance } from '../pg/instance.js';
import { createPhysicalSlot } from '../slots/member-slot.js';
import { agentUnit, proxyUnit } from './systemd.js';
import { confBlock, PWFILE, type DirState, type InitPlan } from './plan.js';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class InitRefused extends Error {
  constructor(readonly reasons: string[]) {
    super(reasons.join('; '));
  }
}

export class InitFailed extends Error {}

export function dirState(path: string): DirState {
  try {
    const st = lstatSync(path);
    if (!st.isDirectory()) return 'not-a-directory';
    return readdirSync(path).length === 0 ? 'empty' : 'not-empty';
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
    throw e;
  }
}

export function dirStates(c: ClusterConfig): Record<string, DirState> {
  return Object.fromEntries(c.nodes.map((n) => [n.dataDir, dirState(n.dataDir)]));
}

export function localAddresses(): string[] {
  return Object.values(networkInterfaces()).flatMap((l) => (l ?? []).map((a) => a.address));
}

/** can HOST:PORT be listened on now? (a port taken by something else would fail a start later) */
function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code !== 'EADDRINUSE'));
    s.listen({ host: host === 'localhost' ? '127.0.0.1' : host.replace(/^\[|\]$/g, ''), port, exclusive: true }, () => s.close(() => resolve(true)));
  });
}

interface OsUser {
  uid: number;
  gid: number;
  name: string;
  group: string;
}

async function osUser(name: string): Promise<OsUser> {
  try {
    const [u, g, gn] = await Promise.all([run('id', ['-u', name]), run('id', ['-g', name]), run('id', ['-gn', name])]);
    return { uid: Number(u.stdout.trim()), gid: Number(g.stdout.trim()), name, group: gn.stdout.trim() };
  } catch {
    throw new InitRefused([`postgres.osUser: no user "${name}" on this machine (create it, or name the one that should own the data directories)`]);
  }
}

function readSecret(path: string, what: string): string {
  try {
    const s = readFileSync(path, 'utf8').replace(/\r?\n$/, '');
    if (!s) throw new InitRefused([`${what} ${path} is empty`]);
    return s;
  } catch (e) {
    if (e instanceof InitRefused) throw e;
    throw new InitRefused([`${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`]);
  }
}

/** may this user write into the directory (by its mode bits; supplementary groups and ACLs not looked at)? */
function writableBy(dir: string, u: { uid: number; gid: number }): boolean {
  const st = statSync(dir);
  if (u.uid === 0) return true;
  return Boolean((st.uid === u.uid && st.mode & 0o200) || (st.gid === u.gid && st.mode & 0o020) || st.mode & 0o002);
}

export interface InitResult {
  ok: true;
  primary: string;
  nodes: Array<{ name: string; role: 'primary' | 'standby'; dataDir: string; pgPort: number; streaming: boolean | null; slot: string | null }>;
  daemons: InitPlan['daemons'];
  units: string[];
  durationMs: number;
}

export interface ExecuteOptions {
  /** write the daemons' unit files here */
  systemdDir?: string | null;
  /** argv prefixes of the CLIs for the unit files (absolute) */
  pghaArgv: string[];
  proxyArgv: string[];
  log: (line: string) => void;
  /** how long the standbys may take to stream */
  streamTimeoutMs?: number;
}

/** the unit files of the plan: name → content */
export function renderUnits(plan: InitPlan, c: ClusterConfig, group: string, o: Pick<ExecuteOptions, 'pghaArgv' | 'proxyArgv'>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const d of plan.daemons) {
    if (d.kind === 'agent') {
      const n = plan.nodes.find((x) => x.name === d.name)!;
      out[d.unit] = agentUnit({ node: n.name, dataDir: n.dataDir, socketDir: String(n.nodeSettings.unix_socket_directories), pgBin: plan.pgBin, user: plan.osUser, group, pgha: o.pghaArgv, configFile: plan.configFile });
    } else out[d.unit] = proxyUnit({ proxy: d.name, user: plan.osUser, group, proxyCommand: o.proxyArgv, configFile: plan.configFile });
  }
  void c;
  return out;
}

export async function executeInit(plan: InitPlan, c: ClusterConfig, o: ExecuteOptions): Promise<InitResult> {
  const started = Date.now();
  const log = o.log;
  // --- nothing is touched until every check passed ---
  const refusals = [...plan.refusals];
  for (const n of plan.nodes) {
    const s = dirState(n.dataDir);
    if (s === 'not-empty') refusals.push(`${n.name}: data directory ${n.dataDir} exists and is not empty`);
    if (s === 'not-a-directory') refusals.push(`${n.name}: ${n.dataDir} exists and is not a directory`);
    if (!(await portFree(n.host, n.pgPort))) refusals.push(`${n.name}: port ${n.pgPort} on ${n.host} is in use`);
  }
  for (const tool of ['initdb', 'pg_ctl', 'pg_basebackup', 'postgres'])
    if (!existsSync(join(plan.pgBin, tool))) refusals.push(`pgBin: no ${tool} in ${plan.pgBin} (PostgreSQL's server binaries)`);
  const asRoot = process.getuid?.() === 0;
  const user = await osUser(plan.osUser);
  if (!asRoot && process.getuid?.() !== user.uid) refusals.push(`run pgha init as root or as ${plan.osUser} (postgres.osUser), who will own the data directories`);
  if (asRoot && user.uid === 0) refusals.push('postgres.osUser: PostgreSQL does not run as root; name an unprivileged user');
  // the server's socket and lock file go into the socket directory: it must be the owner's to write
  for (const sock of new Set(plan.nodes.map((n) => String(n.nodeSettings.unix_socket_directories)))) {
    // one that is not there yet is made by init, for the owner
    if (existsSync(sock) && !writableBy(sock, user)) refusals.push(`postgres.socketDir: ${sock} is not writable by ${plan.osUser}${c.postgres.socketDir ? '' : ' (by default the socket directory is the data directories\' parent)'}: set postgres.socketDir or give ${plan.osUser} the directory`);
  }
  const superPw = c.postgres.superuserPasswordFile ? readSecret(c.postgres.superuserPasswordFile, 'postgres.superuserPasswordFile') : null;
  const replPw = c.postgres.replicationPasswordFile ? readSecret(c.postgres.replicationPasswordFile, 'postgres.replication.passwordFile') : null;
  if (refusals.length) throw new InitRefused(refusals);

  const own = (p: string) => {
    if (asRoot) chownSync(p, user.uid, user.gid);
  };
  const startedServers: PgInstance[] = [];
  let step = '';
  try {
    // data directories (and the parents we make: the agent writes its server log beside the data directory)
    step = 'data directories';
    for (const n of plan.nodes) {
      const parents: string[] = [];
      for (let d = dirname(n.dataDir); !existsSync(d); d = dirname(d)) parents.unshift(d);
      for (const d of parents) {
        mkdirSync(d, { mode: 0o755 });
        own(d);
      }
      if (!existsSync(n.dataDir)) mkdirSync(n.dataDir, { mode: 0o700 });
      chmodSync(n.dataDir, 0o700);
      own(n.dataDir);
      const sock = String(n.nodeSettings.unix_socket_directories);
      if (!existsSync(sock)) {
        mkdirSync(sock, { recursive: true, mode: 0o755 });
        own(sock);
      }
    }
    log(`data directories: ${plan.nodes.map((n) => n.dataDir).join(', ')} (owner ${plan.osUser})`);

    const [p, ...standbys] = plan.nodes;
    const primary = new PgInstance({ pgdata: p.dataDir, binDir: plan.pgBin, port: p.pgPort, user: plan.superuser });
    step = `initdb ${p.name}`;
    let pwfile: string | null = null;
    if (superPw !== null) {
      pwfile = join(dirname(p.dataDir), `.pgha-init-${randomBytes(6).toString('hex')}`);
      writeFileSync(pwfile, `${superPw}\n`, { mode: 0o600 });
      own(pwfile);
    }
    try {
      await primary.run('initdb', plan.initdbArgs.map((a) => (pwfile ? a.replace(PWFILE, pwfile) : a)), { timeoutMs: 300_000 });
    } finally {
      if (pwfile) rmSync(pwfile, { force: true });
    }
    const conf = join(p.dataDir, 'postgresql.conf');
    appendFileSync(conf, confBlock('pgha init: the cluster (every node, copied by the base backups)', plan.settings) + confBlock(`pgha init: node ${p.name}`, p.nodeSettings));
    writeFileSync(join(p.dataDir, 'pg_hba.conf'), plan.hba.join('\n') + '\n', { mode: 0o600 });
    own(join(p.dataDir, 'pg_hba.conf'));
    log(`${p.name}: initdb (${plan.initdbArgs.includes('--data-checksums') ? 'data checksums' : 'wal_log_hints=on'}, wal_level=${plan.settings.wal_level}), postgresql.conf and pg_hba.conf written`);

    step = `start ${p.name}`;
    await primary.start();
    startedServers.push(primary);
    log(`${p.name}: started on port ${p.pgPort}`);

    step = `roles and slots on ${p.name}`;
    /** the primary's SQL, as the superuser (with its password when there is one) */
    const connectPrimary = async (): Promise<pg.Client> => {
      const c = new pg.Client({ host: '127.0.0.1', port: p.pgPort, user: plan.superuser, database: 'postgres', password: superPw ?? undefined, connectionTimeoutMillis: 10_000 });
      c.on('error', () => undefined);
      await c.connect();
      return c;
    };
    const client = await connectPrimary();
    try {
      for (const s of plan.sql) await client.query(s);
      if (replPw !== null && plan.replicationUser !== plan.superuser) {
        const [r] = (await client.query('SELECT format($1::text, $2::text, $3::text) AS q', ['ALTER ROLE %I PASSWORD %L', plan.replicationUser, replPw])).rows as Array<{ q: string }>;
        await client.query(r.q);
      }
      for (const slot of plan.slots) await createPhysicalSlot(client, slot);
    } finally {
      await client.end().catch(() => undefined);
    }
    if (plan.sql.length) log(`${p.name}: ${plan.sql.join('; ')}`);
    if (plan.slots.length) log(`${p.name}: member slots ${plan.slots.join(', ')}`);

    // the standbys: base backups at once, each through its own slot, then their own settings
    await Promise.all(
      standbys.map(async (s) => {
        const inst = new PgInstance({ pgdata: s.dataDir, binDir: plan.pgBin, port: s.pgPort, user: plan.superuser });
        step = `pg_basebackup ${s.name}`;
        const t0 = Date.now();
        await inst.run(
          'pg_basebackup',
          ['-D', s.dataDir, '-h', p.host === 'localhost' ? '127.0.0.1' : p.host.replace(/^\[|\]$/g, ''), '-p', String(p.pgPort), '-U', plan.replicationUser, '-X', 'stream', '-c', 'fast', '-R', '-S', s.slot, '-w'],
          { env: replPw !== null ? { PGPASSWORD: replPw } : {}, timeoutMs: 24 * 3600_000 },
        );
        appendFileSync(join(s.dataDir, 'postgresql.conf'), confBlock(`pgha init: node ${s.name}`, s.nodeSettings));
        log(`${s.name}: pg_basebackup from ${p.name} through slot ${s.slot} (${((Date.now() - t0) / 1000).toFixed(1)} s), standby.signal + primary_conninfo + primary_slot_name`);
        step = `start ${s.name}`;
        await inst.start();
        startedServers.push(inst);
        log(`${s.name}: started on port ${s.pgPort}`);
      }),
    );

    step = 'streaming';
    const timeout = o.streamTimeoutMs ?? 120_000;
    const deadline = Date.now() + timeout;
    let streaming = new Set<string>();
    const watch = standbys.length ? await connectPrimary() : null;
    try {
      while (watch) {
        const { rows } = await watch.query<{ slot_name: string }>("SELECT s.slot_name FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE r.state = 'streaming'");
        streaming = new Set(rows.map((r) => r.slot_name));
        if (standbys.every((s) => streaming.has(s.slot))) break;
        if (Date.now() > deadline) throw new InitFailed(`not streaming within ${timeout / 1000} s: ${standbys.filter((s) => !streaming.has(s.slot)).map((s) => s.name).join(', ')}`);
        await sleep(200);
      }
    } finally {
      await watch?.end().catch(() => undefined);
    }
    if (standbys.length) log(`${standbys.map((s) => s.name).join(', ')}: streaming from ${p.name}`);

    let units: string[] = [];
    if (o.systemdDir) {
      step = `unit files in ${o.systemdDir}`;
      mkdirSync(o.systemdDir, { recursive: true });
      const files = renderUnits(plan, c, user.group, o);
      for (const [name, text] of Object.entries(files)) writeFileSync(join(o.systemdDir, name), text, { mode: 0o644 });
      units = Object.keys(files).map((f) => join(o.systemdDir!, f));
      log(`unit files: ${units.join(', ')}`);
    }
    return {
      ok: true,
      primary: p.name,
      nodes: plan.nodes.map((n) => ({ name: n.name, role: n.role, dataDir: n.dataDir, pgPort: n.pgPort, streaming: n.role === 'standby' ? streaming.has(n.slot) : null, slot: n.role === 'standby' ? n.slot : null })),
      daemons: plan.daemons,
      units,
      durationMs: Date.now() - started,
    };
  } catch (e) {
    // leave nothing running; the directories stay for a look
    for (const s of startedServers.reverse()) await s.stop(30).catch(() => undefined);
    const msg = e instanceof Error ? e.message.split('\n')[0] : String(e);
    throw new InitFailed(`${step}: ${msg}${startedServers.length ? ' (the servers it had started are stopped again)' : ''}; the data directories are left as they are: remove them before running pgha init again`);
  }
}
