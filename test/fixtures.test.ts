/**
 * The committed fixtures (fixtures/generate.ts) against the oracle values recorded beside them at
 * generation time by PostgreSQL's own tools and SQL, and the corrupted copies against pg_waldump's
 * verdicts and our error contract. Runs without a server.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT, expectOneLineError, pgwal, pgwalJson } from './support/cli.js';
import {
  expectControlMatches,
  expectSlotsMatch,
  lsn,
  parseWaldumpEnd,
  parseWaldumpRecordStats,
  parseWaldumpRmgrStats,
  statsTriples,
} from './support/oracles.js';

const FX = join(ROOT, 'fixtures');
const read = (p: string) => JSON.parse(readFileSync(join(FX, p), 'utf8'));
const IMPLS: Array<[string, Record<string, string>]> = [
  ['native', {}],
  ['typescript', { PGHA_NATIVE: '0' }],
];

describe('fixtures: PostgreSQL 15', () => {
  const exp = read('pg15/expected.json');

  it('WAL stats per record type and per rmgr equal pg_waldump, on both paths', () => {
    for (const [name, env] of IMPLS) {
      const out = pgwalJson<Record<string, never>>(['inspect', '--stats=record', '--start', exp.wal.start, '--end', exp.wal.end, join(FX, 'pg15', 'wal')], env);
      expect(statsTriples(out.statsByRecordType), name).toEqual(parseWaldumpRecordStats(exp.wal.waldumpStatsRecord));
      expect(statsTriples(out.stats), name).toEqual(parseWaldumpRmgrStats(exp.wal.waldumpStats));
    }
  });

  it('covers what it claims: FPIs, 2PC, records spanning pages and segments', () => {
    const stats = parseWaldumpRecordStats(exp.wal.waldumpStatsRecord);
    expect(stats['Transaction/PREPARE']).toBeDefined();
    expect(stats['Transaction/COMMIT_PREPARED']).toBeDefined();
    expect(Object.values(stats).some(([, , fpi]) => fpi > 0)).toBe(true);
    const out = pgwalJson<{ recordList: Array<{ spansPages: boolean; spansSegments: boolean; rmgr: string }> }>(['inspect', '--records', join(FX, 'pg15', 'wal')]);
    expect(out.recordList.some((r) => r.spansSegments && r.rmgr === 'LogicalMessage')).toBe(true);
    expect(out.recordList.filter((r) => r.spansPages).length).toBeGreaterThan(2);
  });

  it('stops where pg_waldump stops (the next segment file is missing)', () => {
    expect(exp.wal.waldumpEnd).toMatch(/could not find file "(\w+)"/);
    const missing = /could not find file "(\w+)"/.exec(exp.wal.waldumpEnd)![1];
    const out = pgwalJson<Record<string, string>>(['inspect', join(FX, 'pg15', 'wal')]);
    expect(out.endReason).toBe('end-of-files');
    expect(out.endLsn).toBe(`0/${(parseInt(missing.slice(16), 16) * (1 << 20)).toString(16).toUpperCase()}`);
  });

  it('pg_control equals pg_controldata', () => {
    expectControlMatches(pgwalJson(['inspect', join(FX, 'pg15', 'pg_control')]), exp.controldata);
  });

  it('slot state files equal pg_replication_slots', () => {
    const views = ['cdc', 'phys'].map((n) => pgwalJson<Record<string, unknown>>(['inspect', join(FX, 'pg15', 'slots', `${n}.state`)]));
    expectSlotsMatch(views, exp.slots, 15);
    expect(pgwal(['slot', 'verify', join(FX, 'pg15', 'slots', 'cdc.state')]).status).toBe(0);
  });

  it('history files of a two-promote chain', () => {
    const h3 = pgwalJson<{ timeline: number; entries: Array<{ parentTimeline: number; switchpoint: string; reason: string }> }>(['inspect', join(FX, 'pg15', '00000003.history')]);
    const lines = (exp.histories['00000003.history'] as string).split('\n').filter((l) => l.trim());
    expect(h3.timeline).toBe(3);
    expect(h3.entries.map((e) => `${e.parentTimeline}\t${e.switchpoint}\t${e.reason}`)).toEqual(lines);
    const h2 = pgwalJson<typeof h3>(['inspect', join(FX, 'pg15', '00000002.history')]);
    expect(h2.entries).toEqual(h3.entries.slice(0, 1));
    // a server that stopped exactly at the first switch can follow timeline 3; one byte later it cannot
    const sp = h3.entries[0].switchpoint;
    expect(pgwal(['validlsn', '1', sp, '--history', join(FX, 'pg15', '00000003.history')]).status).toBe(0);
    const after = lsn(sp) + 1n;
    expect(pgwal(['validlsn', '1', `${(after >> 32n).toString(16)}/${(after & 0xffffffffn).toString(16)}`, '--history', join(FX, 'pg15', '00000003.history')]).status).toBe(1);
  });
});

for (const major of [12, 13, 14, 16, 17, 18]) {
  describe(`fixtures: PostgreSQL ${major}`, () => {
    const exp = read(`pg${major}/expected.json`);
    it('slot files, pg_control and the WAL segment match the server\'s SQL', () => {
      const views = ['cdc', 'phys'].map((n) => pgwalJson<Record<string, unknown>>(['inspect', join(FX, `pg${major}`, 'slots', `${n}.state`)]));
      expectSlotsMatch(views, exp.slots, major);
      const ctl = pgwalJson<Record<string, unknown>>(['inspect', join(FX, `pg${major}`, 'pg_control')]);
      expect(ctl.pgVersion).toBe(major);
      expect(ctl.systemId).toBe(exp.pgControlSystem.system_identifier);
      expect(ctl.pgControlVersion).toBe(exp.pgControlSystem.pg_control_version);
      expect(ctl.catalogVersion).toBe(exp.pgControlSystem.catalog_version_no);
      expect(lsn(ctl.checkpointLsn as string)).toBe(lsn(exp.pgControlCheckpoint.checkpoint_lsn));
      expect(lsn(ctl.redoLsn as string)).toBe(lsn(exp.pgControlCheckpoint.redo_lsn));
      expect(ctl.timeline).toBe(exp.pgControlCheckpoint.timeline_id);
      expect(ctl.nextXid).toBe(exp.pgControlCheckpoint.next_xid);
      for (const [name, env] of IMPLS) {
        const wal = pgwalJson<Record<string, string | number>>(['inspect', join(FX, `pg${major}`, exp.walFile)], env);
        expect(wal.pgVersion, name).toBe(major);
        expect(wal.systemId).toBe(exp.pgControlSystem.system_identifier);
        expect(lsn(wal.endLsn as string), name).toBeGreaterThanOrEqual(lsn(exp.currentWalInsertLsn));
        expect(wal.endReason).toBe('zeroed');
      }
    });
  });
}

describe('fixtures: corrupted files', () => {
  const exp = read('corrupt/expected.json');
  const C = (p: string) => join(FX, 'corrupt', p);

  it('damaged WAL ends where pg_waldump ends, with the reason, on both paths', () => {
    const reasons: Record<string, string> = {
      'wal-crc': 'crc-mismatch',
      'wal-pageaddr': 'pageaddr-mismatch',
      'wal-zero-page': 'zeroed',
    };
    for (const [variant, reason] of Object.entries(reasons)) {
      const end = parseWaldumpEnd(exp.walVariants[variant].waldumpEnd);
      expect(end.lastRecord, variant).toBeDefined();
      for (const [name, env] of IMPLS) {
        const out = pgwalJson<Record<string, string>>(['inspect', join(C(variant), exp.segment)], env);
        expect(out.endReason, `${variant} ${name}`).toBe(reason);
        expect(lsn(out.lastRecordLsn), `${variant} ${name}`).toBe(lsn(end.lastRecord));
      }
    }
    const crcAt = /checksum in record at ([0-9A-F]+\/[0-9A-F]+)/.exec(exp.walVariants['wal-crc'].waldumpEnd)![1];
    expect(lsn(pgwalJson<Record<string, string>>(['inspect', join(C('wal-crc'), exp.segment)]).endLsn)).toBe(lsn(crcAt));
  });

  it('a truncated segment ends as truncated, at or before the cut, naming the file', () => {
    for (const [name, env] of IMPLS) {
      const out = pgwalJson<Record<string, string | number>>(['inspect', join(C('wal-truncated'), exp.segment)], env);
      expect(out.endReason, name).toBe('truncated');
      expect(out.endOffset as number).toBeLessThanOrEqual(100000);
      expect(out.endFile).toBe(join(C('wal-truncated'), exp.segment));
    }
  });

  it('bad files exit 2 with one line naming the file, the offset and what was expected', () => {
    const cases: Array<[string, RegExp]> = [
      ['wal-bad-magic', /wal-bad-magic: offset 0: .*unsupported PostgreSQL version.*expected XLOG_PAGE_MAGIC/],
      ['foreign-random.bin', /foreign-random\.bin: offset 0: unrecognized file/],
      ['foreign-text.txt', /foreign-text\.txt: offset 0: unrecognized file/],
      ['slot-bad-crc.state', /slot-bad-crc\.state: offset 4: checksum mismatch for replication slot file \(expected 0x[0-9a-f]{8}, got 0x[0-9a-f]{8}\)/],
      ['slot-bad-magic.state', /slot-bad-magic\.state: offset 0: unrecognized file|slot-bad-magic\.state: offset 0: replication slot file has wrong magic/],
      ['slot-bad-version.state', /slot-bad-version\.state: offset 8: replication slot file has an unsupported version\/length .*got version 7, length 184/],
      ['slot-truncated.state', /slot-truncated\.state: offset 150: replication slot file has the wrong size \(expected 200 bytes, got 150 bytes\)/],
      ['pg_control-bad-crc', /pg_control-bad-crc: offset 288: incorrect checksum in control file/],
      ['pg_control-truncated', /pg_control-truncated: offset 200: pg_control file too short/],
      ['00000004.history', /00000004\.history: offset \d+: line 5: timeline IDs must be in increasing sequence \(expected > 3, got 2\)/],
      ['00000005.history', /00000005\.history: offset \d+: line 2: syntax error in history file/],
    ];
    for (const [file, re] of cases) {
      const r = pgwal(['inspect', C(file)]);
      expect(r.status, file).toBe(2);
      expect(r.stdout, file).toBe('');
      expect(expectOneLineError(r), file).toMatch(re);
    }
  });

  it('slot verify answers 1 for bad slot files and names each problem', () => {
    for (const file of ['slot-bad-crc.state', 'slot-bad-version.state', 'slot-truncated.state']) {
      const r = pgwal(['slot', 'verify', C(file)]);
      expect(r.status, file).toBe(1);
      expect(r.stdout).toContain(C(file));
    }
    const j = JSON.parse(pgwal(['slot', 'verify', '--json', C('slot-bad-crc.state')]).stdout);
    expect(j).toMatchObject({ valid: false, checksumValid: false, name: 'cdc' });
  });
});

