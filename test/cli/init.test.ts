/**
 * `pgha init --config` end to end: a YAML file for 3 nodes and 1 proxy on free loopback ports under
 * a temp dir; init builds the cluster (checked with psql and pg_controldata: settings, the
 * standbys in recovery through their member slots); the daemons are started exactly as init prints
 * them (`pgha agent --config F --name nX`, `pgha-proxy --config F --name p1`), and a write through
 * the proxy with psql reaches the primary and both standbys stream it (pg_stat_replication).
 * Then: a second init is refused with nothing touched; --dry-run touches nothing; the unit files
 * --systemd wrote pass `systemd-analyze verify`.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, pg15BinDir, processAlive, waitFor } from '../harness/cluster.js';
import { PGHA } from '../support/cli.js';

const BIN = pg15BinDir();
const root = mkdtempSync(join(tmpdir(), 'pgha-init-'));
chmodSync(root, 0o755); // the data directories' owner (postgres) must reach them
const config = join(root, 'pgha.yaml');
const daemons: ChildProcess[] = [];
let ports: { pg: number[]; agent: number[]; proxy: number; admin: number };

function psqlRun(port: number, sql: string, env: Record<string, string> = {}) {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PG')));
  return spawnSync(join(BIN, 'psql'), ['-X', '-q', '-At', '-w', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-c', sql], { encoding: 'utf8', env: { ...clean, ...env } });
}

function psql(port: number, sql: string, env: Record<string, string> = {}): string {
  const r = psqlRun(port, sql, env);
  if (r.status !== 0) throw new Error(`psql -p ${port} -c ${sql}: ${r.stderr}`);
  return r.stdout.trim();
}

/** stop the servers pg_ctl daemonized, by the PIDs in their postmaster.pid */
async function stopServers(dataDirs: string[]): Promise<void> {
  for (const d of dataDirs) {
    const pidFile = join(d, 'postmaster.pid');
    if (!existsSync(pidFile)) continue;
    const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
    if (pid > 0 && processAlive(pid)) {
      process.kill(pid, 'SIGQUIT');
      await waitFor(async () => !processAlive(pid), 15_000, `postmaster ${pid} to stop`).catch(() => process.kill(pid, 'SIGKILL'));
    }
  }
}

function init(args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [PGHA, 'init', '--config', config, ...args], { encoding: 'utf8', timeout: 180_000 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(async () => {
  ports = { pg: [await freePort(), await freePort(), await freePort()], agent: [await freePort(), await freePort(), await freePort()], proxy: await freePort(), admin: await freePort() };
  writeFileSync(join(root, 'token'), 'init-test-token-0123456789abcdef\n', { mode: 0o600 });
  writeFileSync(
    config,
    `# written by test/cli/init.test.ts
cluster: inittest
pgBin: ${BIN}
tokenFile: token
postgres:
  auth: trust
  parameters: { max_connections: 40, shared_buffers: 16MB }
policy:
  autoFailover: true
  synchronousMode: "on"
nodes:
${[0, 1, 2].map((i) => `  - name: n${i + 1}\n    dataDir: data/n${i + 1}\n    pgPort: ${ports.pg[i]}\n    agent: { listen: "127.0.0.1:${ports.agent[i]}" }`).join('\n')}
proxy:
  healthInterval: 300
proxies:
  - name: p1
    listen: 127.0.0.1:${ports.proxy}
    admin: 127.0.0.1:${ports.admin}
`,
    { mode: 0o600 },
  );
});

afterAll(async () => {
  for (const d of daemons) if (d.pid && d.exitCode === null) d.kill('SIGTERM');
  await waitFor(async () => daemons.every((d) => d.exitCode !== null || d.signalCode !== null), 15_000, 'daemons to stop').catch(() => {
    for (const d of daemons) if (d.exitCode === null) d.kill('SIGKILL');
  });
  // the servers init started (pg_ctl daemonized them)
  await stopServers(['n1', 'n2', 'n3'].map((n) => join(root, 'data', n)));
  rmSync(root, { recursive: true, force: true });
});

describe('pgha init --config', () => {
  it('--dry-run prints the plan and touches nothing', () => {
    const r = init(['--dry-run', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as { ok: boolean; dryRun: boolean; plan: { refusals: string[]; nodes: Array<{ name: string; role: string; slot: string }>; daemons: Array<{ command: string }> } };
    expect(j.ok && j.dryRun).toBe(true);
    expect(j.plan.refusals).toEqual([]);
    expect(j.plan.nodes.map((n) => [n.name, n.role, n.slot])).toEqual([['n1', 'primary', 'pgha_n1'], ['n2', 'standby', 'pgha_n2'], ['n3', 'standby', 'pgha_n3']]);
    expect(j.plan.daemons.map((d) => d.command.replace(/^node \S+ /, ''))).toEqual([
      `agent --config ${config} --name n1`,
      `agent --config ${config} --name n2`,
      `agent --config ${config} --name n3`,
      `--config ${config} --name p1`,
    ]);
    expect(existsSync(join(root, 'data'))).toBe(false);
  });

  it('builds the cluster; the daemons started from the file route writes to the primary and both standbys stream', async () => {
    const r = init(['--json', '--systemd', join(root, 'units')]);
    expect(r.status, r.stderr + r.stdout).toBe(0);
    const j = JSON.parse(r.stdout) as { result: { primary: string; nodes: Array<{ name: string; streaming: boolean | null }>; units: string[]; daemons: Array<{ kind: string; name: string; argv: string[] }> } };
    expect(j.result.primary).toBe('n1');
    expect(j.result.nodes.map((n) => n.streaming)).toEqual([null, true, true]);

    // what PostgreSQL itself says
    expect(psql(ports.pg[0], "SELECT current_setting('wal_level'), current_setting('wal_log_hints'), current_setting('hot_standby'), current_setting('max_connections'), pg_is_in_recovery()")).toBe('logical|on|on|40|f');
    for (const i of [1, 2]) expect(psql(ports.pg[i], "SELECT pg_is_in_recovery(), current_setting('primary_slot_name'), current_setting('cluster_name'), current_setting('port')")).toBe(`t|pgha_n${i + 1}|n${i + 1}|${ports.pg[i]}`);
    const ctl = spawnSync('runuser', ['-u', 'postgres', '--', join(BIN, 'pg_controldata'), join(root, 'data', 'n1')], { encoding: 'utf8' }).stdout;
    expect(ctl).toMatch(/wal_level setting:\s+logical/);
    expect(statSync(join(root, 'data', 'n2')).mode & 0o777).toBe(0o700);
    expect(existsSync(join(root, 'data', 'n2', 'standby.signal'))).toBe(true);

    // the daemons exactly as init printed them
    for (const d of j.result.daemons) {
      const log = openSync(join(root, `${d.kind}-${d.name}.log`), 'a');
      const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PGHA_') && !k.startsWith('PG')));
      daemons.push(spawn(d.argv[0], d.argv.slice(1), { stdio: ['ignore', log, log], env }));
      closeSync(log);
    }
    expect(j.result.daemons.map((d) => d.argv.slice(2).join(' '))).toEqual([
      `agent --config ${config} --name n1`,
      `agent --config ${config} --name n2`,
      `agent --config ${config} --name n3`,
      `--config ${config} --name p1`,
    ]);
    const admin = `http://127.0.0.1:${ports.admin}`;
    await waitFor(async () => ((await (await fetch(`${admin}/status`)).json()) as { primary: string | null }).primary === `127.0.0.1:${ports.pg[0]}`, 30_000, 'the proxy to route to n1');
    for (const i of [0, 1, 2]) {
      const url = `http://127.0.0.1:${ports.agent[i]}/health`;
      await waitFor(async () => (await fetch(url)).ok, 30_000, `agent n${i + 1}`);
      expect(await (await fetch(url)).json()).toMatchObject({ ok: true, name: `n${i + 1}` });
    }

    // writes through the proxy (psql), streamed to both standbys
    expect(psql(ports.proxy, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 100) g; SELECT current_setting('port'), count(*) FROM t")).toBe(`${ports.pg[0]}|100`);
    await waitFor(async () => psql(ports.pg[0], "SELECT string_agg(application_name || ':' || state, ',' ORDER BY application_name) FROM pg_stat_replication") === 'n2:streaming,n3:streaming', 30_000, 'n2 and n3 streaming');
    for (const i of [1, 2]) await waitFor(async () => psql(ports.pg[i], 'SELECT count(*) FROM t') === '100', 30_000, `the rows on n${i + 1}`);
    // the proxy's cluster manager took over from the file's policy: synchronous, ANY 1 of the streaming standbys
    await waitFor(async () => psql(ports.pg[0], "SELECT string_agg(sync_state, ',') FROM pg_stat_replication") === 'quorum,quorum', 30_000, 'synchronous standbys');
    for (const d of daemons) expect(d.exitCode).toBeNull();

    // the unit files it wrote: systemd's own check, nothing to say
    expect(j.result.units.map((u) => u.replace(root, ''))).toEqual(['/units/pgha-agent@n1.service', '/units/pgha-agent@n2.service', '/units/pgha-agent@n3.service', '/units/pgha-proxy@p1.service']);
    const v = spawnSync('systemd-analyze', ['verify', ...j.result.units], { encoding: 'utf8' });
    expect(v.stderr).toBe('');
    expect(v.status).toBe(0);
    const unit = readFileSync(j.result.units[0], 'utf8');
    expect(unit).toMatch(/^User=postgres$/m);
    expect(unit).toMatch(/^NoNewPrivileges=yes$/m);
    expect(unit).toMatch(/^ProtectSystem=strict$/m);
    expect(unit).toContain(`ReadWritePaths=${join(root, 'data')}`);
    expect(unit).toContain(`ExecStart=${process.execPath} ${PGHA} agent --config ${config} --name n1`);
  });

  it('refuses a second run (data directories not empty): exit 1, one line, nothing touched', () => {
    const before = readdirSync(join(root, 'data', 'n1')).sort();
    const conf = readFileSync(join(root, 'data', 'n1', 'postgresql.conf'), 'utf8');
    const r = init([]);
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^pgha init: refused \(nothing touched\): nodes\[0\] n1: data directory .*\/data\/n1 exists and is not empty; nodes\[1\] n2: .*; nodes\[2\] n3: /);
    expect(readdirSync(join(root, 'data', 'n1')).sort()).toEqual(before);
    expect(readFileSync(join(root, 'data', 'n1', 'postgresql.conf'), 'utf8')).toBe(conf);
    expect(psql(ports.proxy, 'SELECT count(*) FROM t')).toBe('100');
  });

  it('a bad file is exit 2 with one line', () => {
    const bad = join(root, 'bad.yaml');
    writeFileSync(bad, readFileSync(config, 'utf8').replace(`pgPort: ${ports.pg[1]}`, 'pgPort: abc'));
    const r = spawnSync(process.execPath, [PGHA, 'init', '--config', bad], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(`pgha init: ${bad}: nodes[1].pgPort: expected a port number 1-65535, got "abc"\n`);
  });
});

describe('pgha init with passwords', () => {
  const root2 = mkdtempSync(join(tmpdir(), 'pgha-init-scram-'));
  chmodSync(root2, 0o755);
  afterAll(async () => {
    await stopServers(['a', 'b'].map((n) => join(root2, 'data', n)));
    rmSync(root2, { recursive: true, force: true });
  });

  it('scram-sha-256, a replication role of its own, data checksums: the standby streams as that role', async () => {
    const [pa, pb, aa, ab] = [await freePort(), await freePort(), await freePort(), await freePort()];
    writeFileSync(join(root2, 'su'), 'su-secret-Ω-1\n', { mode: 0o600 });
    writeFileSync(join(root2, 'repl'), "repl'secret-2\n", { mode: 0o600 });
    const cfg = join(root2, 'pgha.yaml');
    writeFileSync(
      cfg,
      `pgBin: ${BIN}
postgres:
  auth: scram-sha-256
  superuserPasswordFile: su
  replication: { user: replicator, passwordFile: repl }
  dataChecksums: true
  walLevel: replica
nodes:
  - { name: a, dataDir: a, pgPort: ${pa}, agent: { listen: "127.0.0.1:${aa}" } }
  - { name: b, dataDir: b, pgPort: ${pb}, agent: { listen: "127.0.0.1:${ab}" } }
`,
    );
    // the data directories' parent is the socket directory: root's here, so refused, nothing touched
    const refused = spawnSync(process.execPath, [PGHA, 'init', '--config', cfg], { encoding: 'utf8', timeout: 60_000 });
    expect(refused.status).toBe(1);
    expect(refused.stderr).toBe(`pgha init: refused (nothing touched): postgres.socketDir: ${root2} is not writable by postgres (by default the socket directory is the data directories' parent): set postgres.socketDir or give postgres the directory\n`);
    expect(readdirSync(root2).sort()).toEqual(['pgha.yaml', 'repl', 'su']);
    writeFileSync(cfg, readFileSync(cfg, 'utf8').replace('dataDir: a,', 'dataDir: data/a,').replace('dataDir: b,', 'dataDir: data/b,'));
    const r = spawnSync(process.execPath, [PGHA, 'init', '--config', cfg], { encoding: 'utf8', timeout: 180_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^cluster ready: a primary, b streaming/);
    expect(r.stdout).toMatch(/note: pg_hba asks members for a scram-sha-256 password/);
    // the superuser's password is the file's; without it the server refuses
    const su = { PGPASSWORD: 'su-secret-Ω-1' };
    expect(psql(pa, "SELECT rolreplication, rolcanlogin FROM pg_roles WHERE rolname = 'replicator'", su)).toBe('t|t');
    const none = psqlRun(pa, 'SELECT 1');
    expect(none.status).not.toBe(0);
    expect(none.stderr).toMatch(/password/);
    expect(psql(pa, "SELECT usename, state FROM pg_stat_replication", su)).toBe('replicator|streaming');
    expect(psql(pb, "SELECT pg_is_in_recovery(), current_setting('data_checksums'), current_setting('wal_level')", su)).toBe('t|on|replica');
    // the replication role's password works (and is the file's)
    const repl = spawnSync(join(BIN, 'psql'), ['-X', '-At', '-w', '-h', '127.0.0.1', '-p', String(pa), '-U', 'replicator', '-d', 'replication=true', '-c', 'IDENTIFY_SYSTEM'], { encoding: 'utf8', env: { PATH: process.env.PATH!, PGPASSWORD: "repl'secret-2" } });
    expect(repl.status, repl.stderr).toBe(0);
    const ctl = spawnSync('runuser', ['-u', 'postgres', '--', join(BIN, 'pg_controldata'), join(root2, 'data', 'a')], { encoding: 'utf8' }).stdout;
    expect(ctl).toMatch(/Data page checksum version:\s+1/);
    // initdb's copy of the password file is gone
    expect(readdirSync(join(root2, 'data')).filter((f) => f.startsWith('.pgha-init-'))).toEqual([]);
  });
});
