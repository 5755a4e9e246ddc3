/**
 * pgwal against the real tools on WAL that real workloads produced (PostgreSQL 15):
 * pg_waldump --stats (native and TypeScript paths), where pg_waldump stops, pg_controldata,
 * pg_replication_slots, and whether validlsn's answer matches what a real server does.
 */
import { appendFileSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, PgCluster, waitFor } from '../harness/cluster.js';
import { pgwal, pgwalJson } from '../support/cli.js';
import { expectControlMatches, expectSlotsMatch, lsn, parseControldata, parseWaldumpEnd, parseWaldumpRecordStats, parseWaldumpRmgrStats, statsTriples } from '../support/oracles.js';

const IMPLS: Array<[string, Record<string, string>]> = [
  ['native', {}],
  ['typescript', { PGHA_NATIVE: '0' }],
];

let primary: PgCluster;
let standby: PgCluster;
let slotRows: Array<Record<string, unknown>>;

const norm = lsn;
const walFiles = (dir: string) => readdirSync(dir).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort();
/** start LSN of a segment file (1 MiB segments in these clusters), for pg_waldump -s */
const segStart = (name: string): string => {
  const segno = BigInt('0x' + name.slice(8, 16)) * 4096n + BigInt('0x' + name.slice(16, 24));
  const lsn = segno * BigInt(1 << 20);
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
};

beforeAll(async () => {
  primary = await PgCluster.init({ name: 'oracle-p', walSegSizeMB: 1, conf: { wal_keep_size: '512MB', max_wal_size: '1GB' } });
  await primary.start();
  await primary.sql("SELECT pg_create_logical_replication_slot('cdc', 'test_decoding')");
  await primary.sql("SELECT pg_create_physical_replication_slot('phys', true)");
  primary.pgbench(['-i', '-s', '2', '-q']);
  primary.pgbench(['-c', '2', '-t', '500']);
  await primary.sql('CREATE TABLE docs(id serial primary key, body text)');
  await primary.sql('CREATE INDEX ON docs(body)');
  await primary.checkpoint();
  await primary.sql('UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 7 = 0'); // FPIs after the checkpoint
  await primary.client(async (c) => {
    await c.query("BEGIN; INSERT INTO docs(body) VALUES ('two-phase'); PREPARE TRANSACTION 'tx1'");
    await c.query("COMMIT PREPARED 'tx1'");
    await c.query("BEGIN; INSERT INTO docs(body) VALUES ('rolled back'); PREPARE TRANSACTION 'tx2'");
    await c.query("ROLLBACK PREPARED 'tx2'");
  });
  await primary.sql("SELECT pg_logical_emit_message(true, 'pgha', repeat('p', 30000))"); // spans pages
  await primary.sql("SELECT pg_logical_emit_message(false, 'pgha', repeat('s', 1500000))"); // spans segments (1 MiB)
  await primary.sql("INSERT INTO docs(body) SELECT repeat(md5(i::text), 40) FROM generate_series(1, 2000) i");
  await primary.sql('DROP TABLE pgbench_history');
  await primary.sql("SELECT count(*) FROM pg_logical_slot_get_changes('cdc', NULL, 200)"); // the slot moves
  standby = await primary.createStandby({ name: 'oracle-s' });
  await primary.sql("INSERT INTO docs(body) VALUES ('before promote')");
  await primary.waitForReplay(standby);
  await primary.checkpoint();
  slotRows = await primary.rows(
    `SELECT slot_name, plugin, slot_type, datoid::int, database, temporary, xmin::text::int AS xmin, catalog_xmin::text::int AS catalog_xmin,
            restart_lsn::text, confirmed_flush_lsn::text AS confirmed_flush_lsn, two_phase FROM pg_replication_slots ORDER BY slot_name`,
  );
  // old primary stops cleanly before the promote: it can follow the new primary without a rewind
  primary.stop('fast');
  await standby.promote();
  await standby.sql("INSERT INTO docs(body) VALUES ('after promote')");
  await standby.checkpoint();
  standby.stop('fast');
}, 300_000);

afterAll(cleanupAll);

describe('pgwal vs pg_waldump on real WAL', () => {
  it('per record type count, record bytes and FPI bytes equal pg_waldump --stats=record (both paths)', () => {
    const files = walFiles(primary.walDir);
    const dump = primary.run('pg_waldump', ['--stats=record', '-p', primary.walDir, '-s', segStart(files[0])], { allowFailure: true });
    const expected = parseWaldumpRecordStats(dump.stdout);
    // the workload must have produced what this test claims to cover
    for (const key of ['Heap/UPDATE', 'Btree/INSERT_LEAF', 'Transaction/PREPARE', 'Transaction/COMMIT_PREPARED', 'Transaction/ABORT_PREPARED', 'LogicalMessage/MESSAGE', 'XLOG/CHECKPOINT_ONLINE', 'Storage/CREATE']) {
      expect(expected[key], key).toBeDefined();
    }
    expect(Object.values(expected).some(([, , fpi]) => fpi > 0)).toBe(true);
    for (const [name, env] of IMPLS) {
      const out = pgwalJson<{ statsByRecordType: Record<string, { count: number; recordBytes: number; fpiBytes: number }>; stats: Record<string, { count: number }>; records: number }>(
        ['inspect', '--stats=record', primary.walDir],
        env,
      );
      expect(statsTriples(out.statsByRecordType), name).toEqual(expected);
      const total = Object.values(expected).reduce((a, [c]) => a + c, 0);
      expect(out.records, name).toBe(total);
    }
  });

  it('per-rmgr --stats equals pg_waldump --stats', () => {
    const files = walFiles(primary.walDir);
    const dump = primary.run('pg_waldump', ['--stats', '-p', primary.walDir, '-s', segStart(files[0])], { allowFailure: true });
    const out = pgwalJson<{ stats: Record<string, { count: number; recordBytes: number; fpiBytes: number }> }>(['inspect', '--stats', primary.walDir]);
    expect(statsTriples(out.stats)).toEqual(parseWaldumpRmgrStats(dump.stdout));
  });

  it('ends valid WAL exactly where pg_waldump does', () => {
    for (const c of [primary, standby]) {
      const files = walFiles(c.walDir);
      const tli = Math.max(...files.map((f) => parseInt(f.slice(0, 8), 16)));
      const first = files.find((f) => parseInt(f.slice(0, 8), 16) === tli)!;
      const dump = c.run('pg_waldump', ['-t', String(tli), '-p', c.walDir, '-s', segStart(first)], { allowFailure: true });
      const end = parseWaldumpEnd(dump.stderr);
      expect(end.lastRecord, dump.stderr).toBeDefined();
      for (const [name, env] of IMPLS) {
        const out = pgwalJson<{ lastRecordLsn: string; endLsn: string; endReason: string }>(['inspect', '--timeline', String(tli), c.walDir], env);
        expect(norm(out.lastRecordLsn), `${c.name} ${name}`).toBe(norm(end.lastRecord));
        if (end.zeroTailAt) {
          expect(norm(out.endLsn), `${c.name} ${name}`).toBe(norm(end.zeroTailAt));
          expect(out.endReason).toBe('zeroed');
        }
      }
    }
  });

  it('lists the same records as pg_waldump (LSN, rmgr, lengths, xid, prev)', () => {
    const files = walFiles(primary.walDir);
    const dump = primary.run('pg_waldump', ['-p', primary.walDir, files[files.length - 6], files[files.length - 3]], { allowFailure: true });
    const expected = dump.stdout
      .split('\n')
      .filter((l) => l.startsWith('rmgr:'))
      .map((l) => {
        const m = /^rmgr: (\S+)\s+len \(rec\/tot\):\s+(\d+)\/\s*(\d+), tx:\s+(\d+), lsn: (\S+), prev (\S+), desc: (\S+)/.exec(l)!;
        return { rmgr: m[1], recordLength: Number(m[2]), totalLength: Number(m[3]), xid: Number(m[4]), lsn: norm(m[5]), prev: norm(m[6]), type: m[7].replace(/:$/, '') };
      });
    expect(expected.length).toBeGreaterThan(0);
    const first = expected[0].lsn;
    const out = pgwalJson<{ recordList: Array<{ rmgr: string; recordLength: number; totalLength: number; xid: number; lsn: string; prev: string; type: string }> }>([
      'inspect', '--records', '--start', `${(first >> 32n).toString(16)}/${(first & 0xffffffffn).toString(16)}`, primary.walDir,
    ]);
    const got = out.recordList.map((r) => ({ ...r, lsn: norm(r.lsn), prev: norm(r.prev) })).slice(0, expected.length);
    expect(got.length).toBe(expected.length);
    got.forEach((g, i) => {
      const e = expected[i];
      expect({ rmgr: g.rmgr, recordLength: g.recordLength, totalLength: g.totalLength, xid: g.xid, lsn: g.lsn, prev: g.prev }).toEqual({
        rmgr: e.rmgr, recordLength: e.recordLength, totalLength: e.totalLength, xid: e.xid, lsn: e.lsn, prev: e.prev,
      });
      expect(g.type.startsWith(e.type) || e.type.startsWith(g.type), `${g.type} vs ${e.type} at ${i}`).toBe(true);
    });
    // commit times, to the microsecond, as pg_waldump prints them (this machine runs in UTC)
    const waldumpCommits = dump.stdout
      .split('\n')
      .map((l) => /desc: COMMIT (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}) UTC/.exec(l)?.[1])
      .filter((t): t is string => t !== undefined);
    const ours = (out.recordList as Array<{ type: string; time?: string }>)
      .slice(0, expected.length)
      .filter((r) => r.type === 'COMMIT')
      .map((r) => r.time!.replace('T', ' ').replace('Z', ''));
    expect(waldumpCommits.length).toBeGreaterThan(0);
    expect(ours).toEqual(waldumpCommits);
  });

  it('the timeline history matches the new timeline\'s first record (END_OF_RECOVERY at the switchpoint)', () => {
    const hist = pgwalJson<{ timeline: number; entries: Array<{ parentTimeline: number; switchpoint: string }> }>(['inspect', join(standby.walDir, '00000002.history')]);
    expect(hist.timeline).toBe(2);
    expect(hist.entries).toHaveLength(1);
    expect(hist.entries[0].parentTimeline).toBe(1);
    const tli2 = walFiles(standby.walDir).filter((f) => f.startsWith('00000002'));
    const dump = standby.run('pg_waldump', ['-t', '2', '-p', standby.walDir, '-s', hist.entries[0].switchpoint, tli2[tli2.length - 1]], { allowFailure: true });
    const firstLine = dump.stdout.split('\n').find((l) => l.startsWith('rmgr:'))!;
    expect(firstLine).toMatch(/desc: END_OF_RECOVERY/);
    expect(norm(/lsn: (\S+),/.exec(firstLine)![1])).toBe(norm(hist.entries[0].switchpoint));
  });
});

describe('pgwal vs pg_controldata and pg_replication_slots', () => {
  const controldata = (c: PgCluster) => parseControldata(c.run('pg_controldata', ['-D', c.dataDir]).stdout);

  it('pgwal lsn equals pg_controldata (checkpoint, redo, REDO WAL file, timeline) for both nodes', () => {
    for (const c of [primary, standby]) {
      const cd = controldata(c);
      const out = pgwalJson<Record<string, string>>(['lsn', '--pgdata', c.dataDir]);
      expect(norm(out.chkPoint)).toBe(norm(cd['Latest checkpoint location']));
      expect(norm(out.chkRedoPoint)).toBe(norm(cd["Latest checkpoint's REDO location"]));
      expect(out.walFile).toBe(cd["Latest checkpoint's REDO WAL file"]);
      expect(out.timeLineID).toBe(cd["Latest checkpoint's TimeLineID"]);
      // a cleanly stopped server's WAL ends right after its shutdown checkpoint record
      expect(norm(out.lastLsn)).toBeGreaterThan(norm(out.chkPoint));
    }
  });

  it('inspect pg_control equals every pg_controldata field we report', () => {
    for (const c of [primary, standby]) {
      const cd = controldata(c);
      expectControlMatches(pgwalJson<Record<string, unknown>>(['inspect', join(c.dataDir, 'global', 'pg_control')]), cd);
    }
  });

  it('slot state files equal pg_replication_slots after a checkpoint', () => {
    expectSlotsMatch(pgwalJson<Array<Record<string, unknown>>>(['slot', 'show', primary.dataDir]), slotRows, 15);
    expect(pgwal(['slot', 'verify', primary.dataDir]).status).toBe(0);
  });
});

describe('validlsn matches what a real server does', () => {
  it('old primary stopped cleanly before the promote: valid, and it really follows the new primary', async () => {
    const lsn = pgwalJson<{ lastLsn: string; timeLineID: string }>(['lsn', '--pgdata', primary.dataDir]);
    const r = pgwal(['validlsn', lsn.timeLineID, lsn.lastLsn, '--pgdata', standby.dataDir, '--json']);
    expect(JSON.parse(r.stdout)).toEqual({ code: 0, msg: 'Valid lsn', cnt: 1 });
    expect(r.status).toBe(0);
    await standby.start();
    try {
      writeFileSync(join(primary.dataDir, 'standby.signal'), '');
      appendFileSync(join(primary.dataDir, 'postgresql.conf'), `primary_conninfo = '${standby.conninfo}'\n`);
      await primary.start();
      await waitFor(async () => (await primary.sql('SELECT status FROM pg_stat_wal_receiver')) === 'streaming', 60_000, 'old primary streaming');
      expect(await primary.sql('SELECT received_tli FROM pg_stat_wal_receiver')).toBe('2');
      await standby.sql("INSERT INTO docs(body) VALUES ('followed')");
      await standby.waitForReplay(primary);
      expect(await primary.sql("SELECT count(*) FROM docs WHERE body = 'followed'")).toBe('1');
    } finally {
      primary.stop('fast');
      standby.stop('fast');
    }
  });

  it('old primary that wrote after the fork: invalid, and the real server refuses to follow', async () => {
    const p = await PgCluster.init({ name: 'fork-p', walSegSizeMB: 1 });
    await p.start();
    await p.sql('CREATE TABLE t(a int)');
    const s = await p.createStandby({ name: 'fork-s' });
    await p.waitForReplay(s);
    await s.promote();
    await p.sql('INSERT INTO t SELECT generate_series(1, 5000)'); // diverges from the new timeline
    await p.checkpoint();
    p.stop('fast');
    await s.checkpoint();
    const lsn = pgwalJson<{ lastLsn: string; timeLineID: string }>(['lsn', '--pgdata', p.dataDir]);
    const r = pgwal(['validlsn', lsn.timeLineID, lsn.lastLsn, '--pgdata', s.dataDir, '--json']);
    expect(r.status).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ code: 1, msg: 'Invalid lsn' });
    writeFileSync(join(p.dataDir, 'standby.signal'), '');
    appendFileSync(join(p.dataDir, 'postgresql.conf'), `primary_conninfo = '${s.conninfo}'\n`);
    await p.start();
    const logOf = (c: PgCluster) => readFileSync(join(c.root, 'server.log'), 'utf8');
    await waitFor(
      async () => /forked off current database system timeline|not in this server's history|is not in this server's history/.test(logOf(p) + logOf(s)),
      60_000,
      'timeline fork error in the logs',
    );
    // the receiver that hit the fork is gone (or restarting): it never reaches streaming
    expect(await p.sql("SELECT coalesce((SELECT status FROM pg_stat_wal_receiver), 'none')")).not.toBe('streaming');
    await p.cleanup();
    await s.cleanup();
    rmSync(p.root, { recursive: true, force: true });
  });
});
