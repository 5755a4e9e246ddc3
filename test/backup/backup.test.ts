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

const state: { startSeg?: string; label1?: string; timeAfterC?: string; lastArchived?: string; backup1Start?: string } = {};

beforeAll(async () => {
  primary = await PgCluster.init({ name: 'bk-p', walSegSizeMB: 1, conf: { track_commit_timestamp: 'on', wal_keep_size: '64MB' } });
  repo = primary.ownedDir('repo');
  primary.writeConf({ archive_mode: 'on', archive_command: `'${process.execPath}' '${PGHA}' archive push %p --repo '${repo}'` });
  await primary.start();
  // archive_mode = always on the standby: it pushes the same segments as the primary (idempotent)
  standby = await primary.createStandby({ name: 'bk-s', conf: { archive_mode: 'always' } });
  await primary.sql('CREATE TABLE t (id int PRIMARY KEY, batch text NOT NULL)');
}, 180_000);

afterAll(async () => {
  for (const s of started) stopRestored(s.dir);
  // the standby archives into the repository under the primary's directory: it goes first
  await standby?.cleanup();
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
    const closed = await switchAndArchive(primary);
    await primary.waitForReplay(standby);
    // the standby archived the same segments: each push found the primary's copy, byte for byte
    await waitFor(async () => (await archivedWal(standby)) >= closed, 60_000, `${closed} archived by the standby`);
    expect(await standby.sql('SELECT failed_count FROM pg_stat_archiver')).toBe('0');
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
    state.startSeg = latest.report.wal.firstSegment;
  });
});

/** the archived segments (not .partial, history or backup files) of a repository, by timeline directory */
function segmentsOf(dir: string, tli: string): Array<{ name: string; path: string }> {
  return walObjects(dir)
    .filter((o) => o.tli === tli && /^[0-9A-F]{24}\.[0-9a-f]{64}\.gz$/.test(o.file))
    .map((o) => ({ name: o.file.slice(0, 24), path: o.path }));
}

/** pg_waldump's records of one segment file: lsn, rmgr, total length */
function waldumpRecords(path: string): Array<{ lsn: string; rmgr: string; tot: number }> {
  const r = primary.run('pg_waldump', [path], { allowFailure: true });
  return [...r.stdout.matchAll(/rmgr: (\S+)\s+len \(rec\/tot\):\s+\d+\/\s*(\d+), tx:\s+\d+, lsn: ([0-9A-F]+\/[0-9A-F]+)/g)].map((m) => ({ rmgr: m[1], tot: Number(m[2]), lsn: m[3] }));
}

const lsnValue = (l: string) => {
  const [hi, lo] = l.split('/');
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
};

describe('pgha backup verify: what it names', () => {
  it('names the missing segment when one archived segment is removed', async () => {
    const copy = copyRepo('gap');
    const segs = segmentsOf(copy, '00000001');
    const startSeg = state.startSeg!;
    const after = segs.filter((s) => s.name > startSeg);
    expect(after.length).toBeGreaterThanOrEqual(1);
    const victim = after[0];
    rmSync(victim.path);
    const r = await pgha(['backup', 'verify', '--repo', copy, '--json']);
    expect(r.status).toBe(1);
    const v = json(r);
    expect(v.problems[0]).toMatchObject({ kind: 'gap', file: victim.name });
    // the path of timeline 2 runs through it as well
    expect(v.problems.find((p: any) => p.timeline === 2)).toMatchObject({ kind: 'gap', file: victim.name });
    expect(oneLine(r)).toContain(`${victim.name} is missing`);
    // the restore plan stops at the same gap
    const d = await pgha(['backup', 'restore', '--repo', copy, '--to', join(copy, 'x'), '--dry-run', '--json']);
    expect(json(d).wal.gap).toBe(victim.name);
  });

  it('names the record whose byte was flipped, where pg_waldump sees it too', async () => {
    for (const rekey of [false, true]) {
      const copy = copyRepo(`flip-${rekey}`);
      const segs = segmentsOf(copy, '00000001');
      const startSeg = state.startSeg!;
      const seg = segs.find((s) => s.name > startSeg)!;
      const bytes = Buffer.from(gunzipSync(readFileSync(seg.path)));
      const work = primary.ownedDir(`waldump-${rekey}`);
      const file = join(work, seg.name);
      writeFileSync(file, bytes);
      chownSync(file, pgUid, pgGid);
      // a record well inside a page, past the first one
      const rec = waldumpRecords(file).find((x) => {
        const off = Number(lsnValue(x.lsn) % BigInt(SEG));
        return off > 8192 && x.tot >= 48 && (off % 8192) + 48 < 8192;
      })!;
      expect(rec).toBeDefined();
      const at = Number(lsnValue(rec.lsn) % BigInt(SEG)) + 40;
      bytes[at] ^= 0x01;
      writeFileSync(file, bytes);
      const dump = primary.run('pg_waldump', [file], { allowFailure: true });
      const said = /in record at ([0-9A-F]+\/[0-9A-F]+)/.exec(dump.stderr);
      expect(said, dump.stderr).not.toBeNull();
      expect(lsnValue(said![1])).toBe(lsnValue(rec.lsn));
      const gz = gzipSync(bytes);
      if (rekey) {
        // the damaged bytes under a key whose sha256 matches them: only the scan can tell
        rmSync(seg.path);
        const sha = (await import('node:crypto')).createHash('sha256').update(bytes).digest('hex');
        writeFileSync(join(copy, 'wal', '00000001', `${seg.name}.${sha}.gz`), gz);
      } else writeFileSync(seg.path, gz);
      const r = await pgha(['backup', 'verify', '--repo', copy, '--skip-backup-data', '--json']);
      expect(r.status).toBe(1);
      const p = json(r).problems[0];
      expect(p.kind).toBe('damaged');
      expect(p.timeline).toBe(1);
      expect(p.file).toContain(seg.name);
      expect(lsnValue(p.lsn)).toBe(lsnValue(rec.lsn));
      const line = oneLine(r);
      expect(line).toContain('crc-mismatch');
      expect(line.includes('does not match the sha256')).toBe(!rekey);
    }
  });
});

describe('pgha archive push / get and a corrupt repository: one-line errors', () => {
  it('refuses a truncated segment, a foreign one and other content under an archived name; the same content again is fine', async () => {
    const work = primary.ownedDir('bad-push');
    const archived = segmentsOf(repo, '00000002').find((s) => s.name === state.lastArchived)!;
    const good = Buffer.from(gunzipSync(readFileSync(archived.path)));
    // truncated
    const truncated = join(work, 'truncated', state.lastArchived!);
    mkdirSync(join(work, 'truncated'));
    writeFileSync(truncated, good.subarray(0, 8192));
    let r = await pgha(['archive', 'push', truncated, '--repo', repo]);
    expect(r.status).toBe(1);
    expect(oneLine(r)).toMatch(new RegExp(`${truncated}: truncated WAL segment: 8192 bytes, its header says segments are ${SEG} bytes`));
    // another cluster's first segment
    const foreign = await PgCluster.init({ name: 'bk-foreign', walSegSizeMB: 1 });
    const fc = parseControldata(foreign.run('pg_controldata', [foreign.dataDir]).stdout);
    const foreignId = fc['Database system identifier'];
    const ownId = parseControldata(standby.run('pg_controldata', [standby.dataDir]).stdout)['Database system identifier'];
    r = await pgha(['archive', 'push', join(foreign.walDir, fc["Latest checkpoint's REDO WAL file"]), '--repo', repo]);
    expect(r.status).toBe(1);
    expect(oneLine(r)).toContain(`belongs to database system ${foreignId}, this repository (${repo}) to system ${ownId}`);
    // the zero tail after the switch record changed: still valid WAL, but not what was archived
    const other = Buffer.from(good);
    other[other.length - 1] ^= 0xff;
    const otherPath = join(work, state.lastArchived!);
    writeFileSync(otherPath, other);
    r = await pgha(['archive', 'push', otherPath, '--repo', repo]);
    expect(r.status).toBe(1);
    expect(oneLine(r)).toContain(`${state.lastArchived} is already archived with other content`);
    writeFileSync(otherPath, good);
    r = await pgha(['archive', 'push', otherPath, '--repo', repo, '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(json(r).status).toBe('already-archived');
    // a damaged record in a complete segment is refused with its LSN
    const damaged = Buffer.from(good);
    const rec = waldumpRecords((() => {
      const f = join(work, 'dump', state.lastArchived!);
      mkdirSync(join(work, 'dump'));
      writeFileSync(f, good);
      chownSync(f, pgUid, pgGid);
      return f;
    })()).find((x) => Number(lsnValue(x.lsn) % BigInt(SEG)) > 100 && x.tot >= 48 && (Number(lsnValue(x.lsn) % 8192n) + 48) < 8192)!;
    damaged[Number(lsnValue(rec.lsn) % BigInt(SEG)) + 40] ^= 0x01;
    const damagedPath = join(work, 'truncated', state.lastArchived!);
    writeFileSync(damagedPath, damaged);
    r = await pgha(['archive', 'push', damagedPath, '--repo', repo]);
    expect(r.status).toBe(1);
    const line = oneLine(r);
    expect(line).toContain('damaged WAL segment');
    expect(lsnValue(/at ([0-9A-F]+\/[0-9A-F]+)/.exec(line)![1])).toBe(lsnValue(rec.lsn));
  });

  it('archive get: a file whose content fails its checksum is an error, a missing one exit 1', async () => {
    const copy = copyRepo('sum');
    const hist = walObjects(copy).find((o) => o.file.startsWith('00000002.history'))!;
    const text = gunzipSync(readFileSync(hist.path)).toString('utf8');
    writeFileSync(hist.path, gzipSync(Buffer.from(text.replace(/\t/, ' \t'))));
    const dest = join(copy, 'fetched');
    let r = await pgha(['archive', 'get', '00000002.history', dest, '--repo', copy]);
    expect(r.status).toBe(2);
    expect(oneLine(r)).toMatch(/00000002\.history\.[0-9a-f]{64}\.gz: checksum mismatch \(expected sha256:[0-9a-f]{64}, got sha256:[0-9a-f]{64}\)/);
    expect(() => statSync(dest)).toThrow();
    r = await pgha(['archive', 'get', '00000009.history', dest, '--repo', copy]);
    expect(r.status).toBe(1);
    expect(oneLine(r)).toContain('00000009.history is not in the archive');
    // the original comes back byte for byte
    r = await pgha(['archive', 'get', '00000002.history', dest, '--repo', repo]);
    expect(r.status, r.stderr).toBe(0);
    expect(readFileSync(dest, 'utf8')).toBe(readFileSync(join(standby.walDir, '00000002.history'), 'utf8'));
  });

  it('a corrupt manifest: list, restore and verify each say which and why', async () => {
    const copy = copyRepo('manifest');
    const mpath = join(copy, 'backups', state.label1!, 'manifest.json');
    const original = readFileSync(mpath, 'utf8');
    writeFileSync(mpath, original.replace(/"stopLsn": "[^"]+"/, '"stopLsn": "0/1"'));
    let r = await pgha(['backup', 'restore', '--repo', copy, '--to', join(copy, 'x'), '--dry-run']);
    expect(r.status).toBe(1);
    expect(oneLine(r)).toContain(`${mpath}: corrupt backup manifest: checksum mismatch`);
    truncateSync(mpath, 100);
    r = await pgha(['backup', 'list', '--repo', copy, '--json']);
    expect(r.status).toBe(1);
    expect(json(r).backups[0].problem).toContain(`${mpath}: corrupt backup manifest: not valid JSON`);
    r = await pgha(['backup', 'verify', '--repo', copy, '--json']);
    expect(r.status).toBe(1);
    expect(json(r).problems[0]).toMatchObject({ kind: 'manifest', file: `backups/${state.label1}/manifest.json` });
    // the backup's data changed under an intact manifest
    writeFileSync(mpath, original);
    const obj = join(copy, 'backups', state.label1!, 'base.tar.gz');
    const tar = Buffer.from(gunzipSync(readFileSync(obj)));
    const at = tar.indexOf(Buffer.from('PG_VERSION')) + 512; // the first byte of the file's content
    tar[at] ^= 0x01;
    writeFileSync(obj, gzipSync(tar));
    r = await pgha(['backup', 'verify', '--repo', copy, '--json']);
    expect(r.status).toBe(1);
    const p = json(r).problems.find((x: any) => x.kind === 'backup');
    expect(p.message).toContain('PG_VERSION does not match the manifest');
    r = await pgha(['backup', 'restore', '--repo', copy, '--to', join(copy, 'restored')]);
    expect(r.status).toBe(1);
    expect(oneLine(r)).toContain('PG_VERSION does not match the manifest');
    expect(() => statSync(join(copy, 'restored'))).toThrow();
    // bad usage: exit 2
    r = await pgha(['backup', 'restore', '--repo', copy, '--to', join(copy, 'y'), '--target-timeline', 'abc']);
    expect(r.status).toBe(2);
    expect(oneLine(r)).toContain('bad --target-timeline "abc"');
  });
});

describe('pgha backup expire: retention', () => {
  it('by age and by count, never removing WAL a kept backup needs', async () => {
    const b = await pgha(['backup', 'create', '--repo', repo, '--source', standby.conninfo, '--json']);
    expect(b.status, b.stderr).toBe(0);
    const m2 = json(b);
    expect(m2.timeline).toBe(2);
    await insertBatch(standby, 41, 45, 'E');
    await switchAndArchive(standby);
    const l1 = state.label1!;
    let r = await pgha(['backup', 'expire', '--repo', repo, '--retention', '1h', '--dry-run', '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(json(r)).toMatchObject({ keep: [l1, m2.label], remove: [], dryRun: true });
    await sleep(Math.max(0, Date.parse(m2.stopTime) + 1200 - Date.now()));
    r = await pgha(['backup', 'expire', '--repo', repo, '--retention', '1s', '--dry-run', '--json']);
    expect(json(r)).toMatchObject({ keep: [m2.label], remove: [l1] });
    const before = walObjects(repo).map((o) => o.file);
    // PostgreSQL names the segment the second backup starts in
    const startSeg = (await standby.sql('SELECT pg_walfile_name($1::pg_lsn)', [m2.startLsn]))!;
    r = await pgha(['backup', 'expire', '--repo', repo, '--keep', '1', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const e = json(r);
    expect(e).toMatchObject({ keep: [m2.label], remove: [l1], dryRun: false });
    const after = walObjects(repo).map((o) => o.file);
    const segOf = (f: string) => f.slice(8, 24);
    // removed: exactly the WAL below the kept backup's start segment; history files stay
    expect(before.filter((f) => !after.includes(f)).sort()).toEqual(before.filter((f) => !f.includes('.history') && segOf(f) < startSeg.slice(8)).sort());
    expect(after.some((f) => f.startsWith('00000002.history'))).toBe(true);
    expect(after.filter((f) => !f.includes('.history')).every((f) => segOf(f) >= startSeg.slice(8))).toBe(true);
    const v = await pgha(['backup', 'verify', '--repo', repo, '--json']);
    expect(v.status, v.stderr).toBe(0);
    expect(json(v).backups.map((x: any) => x.label)).toEqual([m2.label]);
    const list = json(await pgha(['backup', 'list', '--repo', repo, '--json']));
    expect(list.backups.map((x: any) => x.label)).toEqual([m2.label]);
    // status: the newest backup and the newest segment, and the lag behind the primary
    const s = await pgha(['backup', 'status', '--repo', repo, '--source', standby.conninfo, '--json']);
    expect(s.status, s.stderr).toBe(0);
    const st = json(s);
    expect(st.lastBackup.label).toBe(m2.label);
    expect(st.archive.lastSegment).toBe(await archivedWal(standby));
    // PostgreSQL's own subtraction, from the position the status read (nothing was written since)
    expect(st.source.archiveLagBytes).toBe(Math.max(0, Number(await standby.sql(`SELECT $1::pg_lsn - $2::pg_lsn`, [st.source.currentLsn, st.archive.lastSegmentEndLsn]))));
    const prom = await pgha(['backup', 'status', '--repo', repo, '--prometheus']);
    expect(prom.stdout).toMatch(/^pgha_backup_last_age_seconds \d+$/m);
  });
});

describe('pgha backup restore --standby-of', () => {
  it('a restored node comes up as a new standby of the current primary and streams', async () => {
    const to = restoreRoot('standby');
    const port = await freePort();
    const r = await pgha(['backup', 'restore', '--repo', repo, '--to', to, '--standby-of', standby.conninfo, '--set', `port=${port}`, '--set', `unix_socket_directories=${join(to, '..')}`, '--set', 'listen_addresses=127.0.0.1', '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(json(r)).toMatchObject({ signal: 'standby.signal', settings: { primary_conninfo: standby.conninfo } });
    const s = spawnSync('runuser', ['-u', 'postgres', '--', join(primary.binDir, 'pg_ctl'), '-D', to, '-l', `${to}.log`, '-w', '-t', '120', 'start'], { encoding: 'utf8' });
    started.push({ dir: to, port });
    expect(s.status, s.stderr).toBe(0);
    await insertBatch(standby, 46, 50, 'F');
    const target = (await standby.sql('SELECT pg_current_wal_lsn()'))!;
    const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
    await waitFor(async () => {
      await c.connect().catch(() => undefined);
      const row = (await c.query(`SELECT pg_is_in_recovery() AS rec, (SELECT status FROM pg_stat_wal_receiver) AS st, pg_last_wal_replay_lsn() >= $1::pg_lsn AS caught`, [target])).rows[0];
      return row.rec === true && row.st === 'streaming' && row.caught === true;
    }, 60_000, 'restored standby streaming');
    try {
      expect((await c.query('SELECT id FROM t ORDER BY id')).rows.map((x) => Number(x.id))).toEqual((await standby.rows<{ id: number }>('SELECT id FROM t ORDER BY id')).map((x) => Number(x.id)));
    } finally {
      await c.end();
      stopRestored(to);
    }
  });
});
