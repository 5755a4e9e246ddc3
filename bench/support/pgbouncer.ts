/**
 * PgBouncer for the benchmarks: the Debian package (installed when missing), started in a temporary
 * directory as the postgres user when run as root, with SCRAM-SHA-256 clients from a userlist.txt;
 * and the CPU time of a process, for CPU per transaction.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, PgCluster, waitFor } from '../../test/harness/cluster.js';

export function pgbouncerBin(): string {
  for (const p of ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer']) if (existsSync(p)) return p;
  console.error('installing pgbouncer (Debian package)…');
  const apt = (args: string[]) => spawnSync('apt-get', args, { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  if (apt(['install', '-y', '-q', 'pgbouncer']).status !== 0) {
    apt(['update', '-q']);
    if (apt(['install', '-y', '-q', 'pgbouncer']).status !== 0) throw new Error('could not install pgbouncer');
  }
  return '/usr/sbin/pgbouncer';
}

/** user + system CPU time of a process, ms */
export const cpuMs = (pid: number): number => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
};

const canConnect = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });

/** PgBouncers started here (killed by stopPgbouncers) */
const started: number[] = [];

/**
 * `userlist`: clients authenticate with SCRAM-SHA-256 against that file; null: trust. `poolSize`:
 * default_pool_size (the session-relay comparison gives every client its own server connection).
 */
export async function startPgbouncer(pgPort: number, mode: 'session' | 'transaction', userlist: string | null, poolSize = 20): Promise<{ port: number; pid: number; proc: ChildProcess }> {
  const bin = pgbouncerBin();
  const dir = mkdtempSync(join(tmpdir(), `pgha-bench-pgbouncer-${mode}-`));
  const port = await freePort();
  writeFileSync(join(dir, 'userlist.txt'), userlist ? readFileSync(userlist) : '"postgres" ""\n');
  writeFileSync(
    join(dir, 'pgbouncer.ini'),
    `[databases]
postgres = host=127.0.0.1 port=${pgPort} dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_type = ${userlist ? 'scram-sha-256' : 'trust'}
auth_file = ${join(dir, 'userlist.txt')}
pool_mode = ${mode}
max_client_conn = 2000
default_pool_size = ${poolSize}
max_db_connections = 0
server_tls_sslmode = disable
ignore_startup_parameters = extra_float_digits
logfile = ${join(dir, 'pgbouncer.log')}
pidfile = ${join(dir, 'pgbouncer.pid')}
`,
  );
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }));
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }));
    chownSync(dir, uid, gid);
    chownSync(join(dir, 'userlist.txt'), uid, gid);
  }
  const cmd = asRoot ? `exec setpriv --reuid=postgres --regid=postgres --init-groups ${bin} ${join(dir, 'pgbouncer.ini')}` : `exec ${bin} ${join(dir, 'pgbouncer.ini')}`;
  const proc = spawn('sh', ['-c', `ulimit -n $(ulimit -Hn) && ${cmd}`], { stdio: 'ignore' });
  started.push(proc.pid!);
  await waitFor(async () => canConnect(port), 15_000, 'pgbouncer listening');
  const child = spawnSync('pgrep', ['-P', String(proc.pid), 'pgbouncer'], { encoding: 'utf8' }).stdout.trim();
  return { port, pid: Number(child.split('\n')[0] || proc.pid), proc };
}

export function stopPgbouncers(): void {
  for (const pid of started) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/**
 * The PostgreSQL 15 the pooler comparisons run against (scale 10, fsync off, started) and a
 * userlist.txt giving `postgres` this password, for PgBouncer and pgha-proxy alike.
 */
export async function benchCluster(name: string, password: string): Promise<{ c: PgCluster; userlist: string; pgbenchBin: string }> {
  const c = await PgCluster.init({ name, conf: { max_connections: 300, shared_buffers: '256MB', fsync: 'off', synchronous_commit: 'off' } });
  await c.start();
  const userlist = join(mkdtempSync(join(tmpdir(), `pgha-${name}-`)), 'userlist.txt');
  writeFileSync(userlist, `"postgres" "${password}"\n`, { mode: 0o600 });
  const pgbenchBin = join(c.clientBinDir, 'pgbench');
  execFileSync(pgbenchBin, ['-h', '127.0.0.1', '-p', String(c.port), '-U', 'postgres', '-i', '-s', '10', '-q', 'postgres']);
  return { c, userlist, pgbenchBin };
}
