/**
 * Comparisons between pgwal's JSON and what PostgreSQL's own tools and SQL print, shared by the
 * live-cluster tests and the fixture tests.
 */
import { expect } from 'vitest';
import { parseLsn } from '../../src/formats/lsn.js';

export const lsn = (l: string | null | undefined): bigint => parseLsn(l ?? '0/0');

/** pg_controldata's "key: value" lines */
export function parseControldata(out: string): Record<string, string> {
  const map: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) map[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return map;
}

/** pg_waldump --stats=record → { "Rmgr/TYPE": [count, recordBytes, fpiBytes] } */
export function parseWaldumpRecordStats(out: string): Record<string, [number, number, number]> {
  const stats: Record<string, [number, number, number]> = {};
  for (const line of out.split('\n')) {
    const m = /^(\S+\/\S+(?: \(\w+\))?)\s+(\d+) \(\s*[\d.]+\)\s+(\d+) \(\s*[\d.]+\)\s+(\d+) \(/.exec(line);
    if (m) stats[m[1]] = [Number(m[2]), Number(m[3]), Number(m[4])];
  }
  return stats;
}

/** pg_waldump --stats → { Rmgr: [count, recordBytes, fpiBytes] } */
export function parseWaldumpRmgrStats(out: string): Record<string, [number, number, number]> {
  const stats: Record<string, [number, number, number]> = {};
  for (const line of out.split('\n')) {
    const m = /^(\w+)\s+(\d+) \(\s*[\d.]+\)\s+(\d+) \(\s*[\d.]+\)\s+(\d+) \(/.exec(line);
    if (m && m[1] !== 'Type') stats[m[1]] = [Number(m[2]), Number(m[3]), Number(m[4])];
  }
  return stats;
}

type StatsJson = Record<string, { count: number; recordBytes: number; fpiBytes: number }>;
export function statsTriples(stats: StatsJson): Record<string, [number, number, number]> {
  const out: Record<string, [number, number, number]> = {};
  for (const [k, v] of Object.entries(stats)) out[k] = [v.count, v.recordBytes, v.fpiBytes];
  return out;
}

/** "error in WAL record at R: … at Y" → last good record R and, for a zero tail, the end Y */
export function parseWaldumpEnd(line: string): { lastRecord?: string; zeroTailAt?: string; message: string } {
  const m = /error in WAL record at ([0-9A-F]+\/[0-9A-F]+): (.*)/.exec(line);
  const at = /invalid record length at ([0-9A-F]+\/[0-9A-F]+): wanted 24, got 0/.exec(line);
  return { lastRecord: m?.[1], zeroTailAt: at?.[1], message: m?.[2] ?? line };
}

/** pgwal's pg_control view vs pg_controldata output */
export function expectControlMatches(v: Record<string, unknown>, cd: Record<string, string>): void {
  expect(v.systemId).toBe(cd['Database system identifier']);
  expect(v.pgControlVersion).toBe(Number(cd['pg_control version number']));
  expect(v.catalogVersion).toBe(Number(cd['Catalog version number']));
  expect(v.state).toBe(cd['Database cluster state']);
  expect(lsn(v.checkpointLsn as string)).toBe(lsn(cd['Latest checkpoint location']));
  expect(lsn(v.redoLsn as string)).toBe(lsn(cd["Latest checkpoint's REDO location"]));
  expect(v.redoWalFile).toBe(cd["Latest checkpoint's REDO WAL file"]);
  expect(v.timeline).toBe(Number(cd["Latest checkpoint's TimeLineID"]));
  expect(v.prevTimeline).toBe(Number(cd["Latest checkpoint's PrevTimeLineID"]));
  expect(v.fullPageWrites).toBe(cd["Latest checkpoint's full_page_writes"] === 'on');
  expect(v.nextXid).toBe(cd["Latest checkpoint's NextXID"]);
  expect(v.nextOid).toBe(Number(cd["Latest checkpoint's NextOID"]));
  expect(v.nextMultiXactId).toBe(Number(cd["Latest checkpoint's NextMultiXactId"]));
  expect(v.oldestXid).toBe(Number(cd["Latest checkpoint's oldestXID"]));
  expect(v.oldestActiveXid).toBe(Number(cd["Latest checkpoint's oldestActiveXID"]));
  expect(lsn(v.unloggedLsn as string)).toBe(lsn(cd['Fake LSN counter for unlogged rels']));
  expect(lsn(v.minRecoveryPoint as string)).toBe(lsn(cd['Minimum recovery ending location']));
  expect(v.minRecoveryPointTLI).toBe(Number(cd["Min recovery ending loc's timeline"]));
  expect(v.backupEndRequired).toBe(cd['End-of-backup record required'] === 'yes');
  expect(v.walLevel).toBe(cd['wal_level setting']);
  expect(v.walLogHints).toBe(cd['wal_log_hints setting'] === 'on');
  expect(v.maxConnections).toBe(Number(cd['max_connections setting']));
  expect(v.maxWalSenders).toBe(Number(cd['max_wal_senders setting']));
  expect(v.maxPreparedXacts).toBe(Number(cd['max_prepared_xacts setting']));
  expect(v.blockSize).toBe(Number(cd['Database block size']));
  expect(v.walBlockSize).toBe(Number(cd['WAL block size']));
  expect(v.walSegmentSize).toBe(Number(cd['Bytes per WAL segment']));
  expect(v.dataChecksumVersion).toBe(Number(cd['Data page checksum version']));
  expect(v.mockAuthenticationNonce).toBe(cd['Mock authentication nonce']);
  expect(v.crcValid).toBe(true);
}

/** pgwal's slot views vs pg_replication_slots rows (taken right after a CHECKPOINT) */
export function expectSlotsMatch(views: Array<Record<string, unknown>>, rows: Array<Record<string, unknown>>, major: number): void {
  expect(views.map((s) => s.name)).toEqual(rows.map((r) => r.slot_name));
  for (const row of rows) {
    const s = views.find((x) => x.name === row.slot_name)!;
    expect(s.possibleVersions as number[]).toContain(major);
    expect(s.slotType).toBe(row.slot_type);
    expect(s.plugin).toBe(row.plugin);
    expect(s.database).toBe(row.datoid ?? 0);
    expect(s.xmin).toBe(Number(row.xmin ?? 0));
    expect(s.catalogXmin).toBe(Number(row.catalog_xmin ?? 0));
    expect(lsn(s.restartLsn as string)).toBe(lsn(row.restart_lsn as string));
    expect(lsn(s.confirmedFlush as string)).toBe(lsn((row.confirmed_flush_lsn ?? row.confirmed_flush) as string));
    if (row.temporary !== undefined) expect(s.persistency).toBe(row.temporary ? 'temporary' : 'persistent');
    if (major >= 14) expect(s.twoPhase).toBe(row.two_phase);
    if (major >= 17) expect({ failover: s.failover, synced: s.synced }).toEqual({ failover: row.failover, synced: row.synced });
    expect(s.checksumValid).toBe(true);
  }
}
