/**
 * Backups and point-in-time restore on real PostgreSQL 15 (one primary and one standby, 1 MiB WAL
 * segments, archive_command = pgha archive push on both): rows with commit times PostgreSQL
 * records, a base backup from the standby, more rows across a failover (the archive follows the new
 * timeline), restores to a time, a restore point and the latest point checked row by row on the
 * started servers (and by pg_verifybackup before they start); verify passing, then naming a removed
 * segment and a flipped record byte (pg_waldump's verdict on the same file is the oracle);
 * retention; bad pushes and a corrupt repository, each a one-line error.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chownSync, cpSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, freePort, PgCluster, sleep, waitFor } from '../harness/cluster.js';
import { parseControldata } from '../support/oracles.js';
import { pgha, PGHA, type CliResult } from '../support/cli.js';

const SEG = 1 << 20;
let primary: PgCluster;
let standby: PgCluster;
let repo: string;
const started: Array<{ dir: string; port: number }> = [];
const pgUid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
const pgGid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());

function oneLine(r: CliResult): string {
  const lines = r.stderr.trim().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  return lines[0];
}

const json = <T = any>(r: CliResult): T => {
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`not JSON (exit ${r.status}): ${r.stdout}\n${r.stderr}`);
  }
};

async function insertBatch(c: PgCluster, from: number, to: number, batch: string): Promise<void> {
  // one transaction per row: each has its own commit time
  for (let i = from; i <= to; i++) await c.sql('INSERT INTO t (id, batch) VALUES ($1, $2)', [i, batch]);
}

/** a directory owned by postgres for a restored server; returns its data dir path (not created) */
function restoreRoot(name: string): string {
  const root = primary.ownedDir(`restore-${name}`);
  return join(root, 'data');
}

/** start a restored data directory as postgres and wait until it accepts writes */
async function startRestored(dir: string, port: number): Promise<pg.Client> {
  const r = spawnSync('runuser', ['-u', 'postgres', '--', join(primary.binDir, 'pg_ctl'), '-D', dir, '-l', `${dir}.log`, '-w', '-t', '120', 'start'], { encoding: 'utf8' });
  started.push({ dir, port });
  if (r.status !== 0) throw new Error(`pg_ctl start failed: ${r.stderr}\n${readFileSync(`${dir}.log`, 'utf8').split('\n').slice(-20).join('\n')}`);
  const client = async () => {
    const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
    await c.connect();
    return c;
  };
  await waitFor(async () => {
    const c = await client();
    try {
      return (await c.query('SELECT pg_is_in_recovery() AS r')).rows[0].r === false;
    } finally {
      await c.end();
    }
  }, 120_000, `restored ${dir} promoted`);
  return client();
}

function stopRestored(dir: string): void {
  spawnSync('runuser', ['-u', 'postgres', '--', join(primary.binDir, 'pg_ctl'), '-D', dir, '-m', 'immediate', '-w', 'stop'], { encoding: 'utf8' });
}

async function restoreAndRead(name: string, args: string[]): Promise<{ ids: number[]; timeline: number; report: any }> {
  const to = restoreRoot(name);
  const port = await freePort();
  const r = await pgha(['backup', 'restore', '--repo', repo, '--to', to, ...args, '--set', `port=${port}`, '--set', `unix_socket_directories=${join(to, '..')}`, '--set', 'listen_addresses=127.0.0.1', '--json']);
  expect(r.status, r.stderr).toBe(0);
  const report = json(r);
  // PostgreSQL's own check of the restored files against its backup_manifest (our two additions aside)
  const check = primary.run('pg_verifybackup', ['-i', 'postgresql.auto.conf', '-i', report.signal, to], { allowFailure: true });
  expect(check.status, check.stderr + check.stdout).toBe(0);
  // the first segment the plan names is the one PostgreSQL's backup_label starts from
  expect(readFileSync(join(to, 'backup_label'), 'utf8')).toContain(`(file ${report.wal.firstSegment})`);
  const c = await startRestored(to, port);
  try {
    const ids = (await c.query('SELECT id FROM t ORDER BY id')).rows.map((x) => Number(x.id));
    const timeline = Number((await c.query('SELECT timeline_id FROM pg_control_checkpoint()')).rows[0].timeline_id);
    return { ids, timeline, report };
  } finally {
    await c.end();
    stopRestored(to);
  }
}

const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

async function archivedWal(c: PgCluster): Promise<string> {
  return (await c.sql('SELECT coalesce(last_archived_wal, \'\') FROM pg_stat_archiver'))!;
}

/** switch WAL on `c` and wait until its archiver archived the segment it closed */
async function switchAndArchive(c: PgCluster): Promise<string> {
  await c.sql('SELECT txid_current()'); // a record, so the switch closes a segment
  const name = (await c.sql('SELECT pg_walfile_name(pg_switch_wal())'))!;
  await waitFor(async () => (await archivedWal(c)) >= name, 60_000, `${name} archived by ${c.name}`);
  return name;
}

function copyRepo(name: string): string {
  const dir = join(primary.root, `repo-copy-${name}`);
  cpSync(repo, dir, { recursive: true });
  return dir;
}

function walObjects(dir: string): Array<{ tli: string; file: string; name: string; path: string }> {
  const out = [];
  for (const tli of readdirSync(join(dir, 'wal'))) {
    for (const file of readdirSync(join(dir, 'wal', tli))) out.push({ tli, file, name: file.split('.')[0] + (file.includes('.partial') ? '.partial' : file.includes('.history') ? '.history' : ''), path: join(dir, 'wal', tli, file) });
  }
  return out.sort((a, b) => (a.file < b.file ? -1 : 1));
}

const state: { label1?: string; timeAfterC?: string; lastArchived?: string; backup1Start?: string } = {};

beforeAll(async () => {
  primary = await PgCluster.init({ name: 'bk-p', walSegSizeMB: 1, conf: { track_commit_timestamp: 'on', wal_keep_size: '64MB' } });
  repo = primary.ownedDir('repo');
  primary.writeConf({ archive_mode: 'on', archive_command: `'${process.execPath}' '${PGHA}' archive push %p --repo '${repo}'` });
  await primary.start();
  standby = await primary.createStandby({ name: 'bk-s' });
  await primary.sql('CREATE TABLE t (id int PRIMARY KEY, batch text NOT NULL)');
}, 180_000);

afterAll(async () => {
  for (const s of started) stopRestored(s.dir);
  await cleanupAll();
});

describe('pgha backup: a failover, then point-in-time restores', () => {
  it('backs up from the standby, follows the new timeline, restores to a time, a restore point and the latest point', async () => {
    await insertBatch(primary, 1, 10, 'A');
    const b = await pgha(['backup', 'create', '--repo', repo, '--source', primary.conninfo, '--source', standby.conninfo, '--prefer-standby', '--json']);
    expect(b.status, b.stderr).toBe(0);
    const m = json(b);
    expect(m.source.standby).toBe(true);
    expect(m.timeline).toBe(1);
    expect(m.systemId).toBe(parseControldata(primary.run('pg_controldata', [primary.dataDir]).stdout)['Database system identifier']);
    state.label1 = m.label;
    state.backup1Start = m.startLsn;

    await insertBatch(primary, 11, 20, 'B');
    await primary.sql("SELECT pg_create_restore_point('after_b')");
    await insertBatch(primary, 21, 30, 'C');
    // the target: the commit time of the last row of C, as PostgreSQL recorded it
    state.timeAfterC = (await primary.sql("SELECT max(pg_xact_commit_timestamp(xmin))::text FROM t WHERE batch = 'C'"))!;
    await switchAndArchive(primary);
    await primary.waitForReplay(standby);
    // failover: the primary goes, the standby is promoted (timeline 2) and archives from then on
    primary.stop('fast');
    await standby.promote();
    await insertBatch(standby, 31, 40, 'D');
    expect(Number(await standby.sql("SELECT count(*) FROM t WHERE pg_xact_commit_timestamp(xmin) <= $1::timestamptz", [state.timeAfterC]))).toBe(30);
    state.lastArchived = await switchAndArchive(standby);
    expect(state.lastArchived.startsWith('00000002')).toBe(true);
    await waitFor(async () => readdirSync(join(repo, 'wal')).includes('00000002') && readdirSync(join(repo, 'wal', '00000002')).some((f) => f.startsWith('00000002.history')), 30_000, 'history file archived');

    // verify: both timelines, from the backup's start to what the new primary last archived
    const v = await pgha(['backup', 'verify', '--repo', repo, '--json']);
    expect(v.status, v.stderr + v.stdout).toBe(0);
    const vr = json(v);
    expect(vr.ok).toBe(true);
    expect(vr.timelines.map((x: any) => x.timeline)).toEqual([1, 2]);
    const t2 = vr.timelines.find((x: any) => x.timeline === 2);
    expect(t2.lastSegment).toBe(state.lastArchived);
    expect(t2.backups).toEqual([state.label1]);
    expect(vr.backups).toEqual([{ label: state.label1, ok: true, dataChecked: true, problem: null }]);

    // dry run: the backup and the WAL range, nothing written
    const dryTo = restoreRoot('dry');
    const d = await pgha(['backup', 'restore', '--repo', repo, '--to', dryTo, '--target-time', state.timeAfterC, '--dry-run', '--json']);
    expect(d.status, d.stderr).toBe(0);
    const dr = json(d);
    expect(dr.backup.label).toBe(state.label1);
    expect(dr.timeline).toBe(2);
    expect(dr.wal.lastSegment).toBe(state.lastArchived);
    expect(dr.wal.gap).toBeNull();
    expect(() => statSync(dryTo)).toThrow();

    const atTime = await restoreAndRead('time', ['--target-time', state.timeAfterC]);
    expect(atTime.ids).toEqual(range(1, 30));
    expect(atTime.timeline).toBe(3);
    const atName = await restoreAndRead('name', ['--target-name', 'after_b']);
    expect(atName.ids).toEqual(range(1, 20));
    const latest = await restoreAndRead('latest', []);
    expect(latest.ids).toEqual(range(1, 40));
    expect(latest.report.wal.lastSegment).toBe(state.lastArchived);
  });
});
