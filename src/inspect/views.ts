/**
 * JSON views of parsed files: the `--json` contract of `pgwal` (documented in the README).
 * LSNs are `X/Y` strings (as SQL prints pg_lsn), 64-bit identifiers are decimal strings, xids and
 * sizes are numbers. Field names are stable; new fields may be added.
 */
import type { ControlFile } from '../formats/control.js';
import { formatLsn, walFileNameForLsn } from '../formats/lsn.js';
import type { SlotState } from '../formats/replslot.js';
import type { TimelineHistory } from '../formats/timeline-history.js';
import { RMGR_NAMES, recordTypeName, rmgrName, statsRecordId } from '../formats/wal/rmgr.js';
import { STATS_SLOTS } from '../formats/wal/contract.js';
import type { StreamScanSummary } from '../wal/stream.js';

export interface RmgrStats {
  count: number;
  recordBytes: number;
  fpiBytes: number;
  combinedBytes: number;
}

export function historyView(path: string, h: TimelineHistory) {
  return {
    kind: 'history' as const,
    path,
    timeline: h.timeline,
    entries: h.entries.map((e) => ({ parentTimeline: e.parentTimeline, switchpoint: formatLsn(e.switchpoint), reason: e.reason })),
  };
}

export function slotView(path: string, s: SlotState) {
  return {
    kind: 'slot' as const,
    path,
    name: s.name,
    slotType: s.kind,
    plugin: s.kind === 'logical' ? s.plugin : null,
    database: s.database,
    persistency: s.persistency,
    xmin: s.xmin,
    catalogXmin: s.catalogXmin,
    restartLsn: formatLsn(s.restartLsn),
    confirmedFlush: formatLsn(s.confirmedFlush),
    version: s.version,
    length: s.length,
    pgVersion: s.pgVersion,
    possibleVersions: s.possibleVersions,
    checksum: s.checksum,
    checksumValid: s.checksumValid,
    ...(s.invalidatedAt !== undefined ? { invalidatedAt: formatLsn(s.invalidatedAt) } : {}),
    ...(s.invalidated !== undefined ? { invalidated: s.invalidated } : {}),
    ...(s.twoPhase !== undefined ? { twoPhase: s.twoPhase, twoPhaseAt: formatLsn(s.twoPhaseAt ?? 0n) } : {}),
    ...(s.synced !== undefined ? { synced: s.synced, failover: s.failover } : {}),
  };
}

export function controlView(path: string, c: ControlFile) {
  const cp = c.checkpoint;
  return {
    kind: 'control' as const,
    path,
    pgVersion: c.pgVersion,
    pgControlVersion: c.pgControlVersion,
    catalogVersion: c.catalogVersion,
    systemId: c.systemId.toString(),
    state: c.state,
    time: new Date(Number(c.time) * 1000).toISOString(),
    checkpointLsn: formatLsn(c.checkpointLsn),
    redoLsn: formatLsn(cp.redo),
    redoWalFile: walFileNameForLsn(cp.thisTimeLineID, cp.redo, c.walSegmentSize),
    timeline: cp.thisTimeLineID,
    prevTimeline: cp.prevTimeLineID,
    fullPageWrites: cp.fullPageWrites,
    nextXid: `${cp.nextXidEpoch}:${cp.nextXidXid}`,
    nextOid: cp.nextOid,
    nextMultiXactId: cp.nextMulti,
    nextMultiOffset: cp.nextMultiOffset,
    oldestXid: cp.oldestXid,
    oldestXidDB: cp.oldestXidDB,
    oldestActiveXid: cp.oldestActiveXid,
    oldestMultiXid: cp.oldestMulti,
    oldestMultiDB: cp.oldestMultiDB,
    oldestCommitTsXid: cp.oldestCommitTsXid,
    newestCommitTsXid: cp.newestCommitTsXid,
    checkpointTime: new Date(Number(cp.time) * 1000).toISOString(),
    unloggedLsn: formatLsn(c.unloggedLsn),
    minRecoveryPoint: formatLsn(c.minRecoveryPoint),
    minRecoveryPointTLI: c.minRecoveryPointTLI,
    backupStartPoint: formatLsn(c.backupStartPoint),
    backupEndPoint: formatLsn(c.backupEndPoint),
    backupEndRequired: c.backupEndRequired,
    walLevel: c.walLevel,
    walLogHints: c.walLogHints,
    maxConnections: c.maxConnections,
    maxWorkerProcesses: c.maxWorkerProcesses,
    maxWalSenders: c.maxWalSenders,
    maxPreparedXacts: c.maxPreparedXacts,
    maxLocksPerXact: c.maxLocksPerXact,
    trackCommitTimestamp: c.trackCommitTimestamp,
    maxAlign: c.maxAlign,
    blockSize: c.blockSize,
    relSegSize: c.relSegSize,
    walBlockSize: c.walBlockSize,
    walSegmentSize: c.walSegmentSize,
    nameDataLen: c.nameDataLen,
    indexMaxKeys: c.indexMaxKeys,
    toastMaxChunkSize: c.toastMaxChunkSize,
    largeObjectChunkSize: c.largeObjectChunkSize,
    float8ByVal: c.float8ByVal,
    dataChecksums: c.dataChecksumVersion !== 0,
    dataChecksumVersion: c.dataChecksumVersion,
    ...(c.defaultCharSignedness === undefined ? {} : { defaultCharSignedness: c.defaultCharSignedness }),
    mockAuthenticationNonce: c.mockAuthNonce,
    crc: c.crc,
    crcValid: c.crcValid,
  };
}

const emptyStats = (): RmgrStats => ({ count: 0, recordBytes: 0, fpiBytes: 0, combinedBytes: 0 });

/** Sum the STATS_SLOTS table into entries keyed by `keyOf(rmid, info)`. */
function groupStats(stats: Float64Array, out: Record<string, RmgrStats>, keyOf: (rmid: number, info: number) => string): Record<string, RmgrStats> {
  for (let i = 0; i < STATS_SLOTS; i++) {
    const count = stats[i * 3];
    if (count === 0) continue;
    const e = (out[keyOf(i >> 4, (i & 15) << 4)] ??= emptyStats());
    e.count += count;
    e.recordBytes += stats[i * 3 + 1];
    e.fpiBytes += stats[i * 3 + 2];
    e.combinedBytes += stats[i * 3 + 1] + stats[i * 3 + 2];
  }
  return out;
}

/** Per-rmgr stats keyed by pg_waldump's rmgr names (every built-in rmgr, zeros included). */
export function rmgrStats(stats: Float64Array): Record<string, RmgrStats> {
  const out: Record<string, RmgrStats> = {};
  for (const name of RMGR_NAMES) out[name] = emptyStats();
  return groupStats(stats, out, (rmid) => rmgrName(rmid));
}

/** Per-record-type stats keyed `Rmgr/TYPE` as pg_waldump --stats=record prints them (non-zero only). */
export function recordTypeStats(stats: Float64Array, major: number): Record<string, RmgrStats> {
  return groupStats(stats, {}, (rmid, info) => `${rmgrName(rmid)}/${recordTypeName(rmid, statsRecordId(rmid, info) << 4, major)}`);
}

export function walView(path: string, s: StreamScanSummary, files: string[]) {
  return {
    kind: 'wal' as const,
    path,
    files,
    timeline: s.timeline,
    pgVersion: s.pgVersion,
    systemId: s.systemId.toString(),
    segmentSize: s.segmentSize,
    blockSize: s.blockSize,
    firstRecordLsn: s.firstRecordLsn === null ? null : formatLsn(s.firstRecordLsn),
    lastRecordLsn: s.lastRecordLsn === null ? null : formatLsn(s.lastRecordLsn),
    endLsn: formatLsn(s.endLsn),
    endReason: s.endReason,
    endMessage: s.endMessage,
    endFile: s.endFile,
    endOffset: s.endOffset,
    records: s.count,
    bytesScanned: s.bytesScanned,
  };
}
