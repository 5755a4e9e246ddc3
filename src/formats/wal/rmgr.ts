/**
 * Resource managers (rmgrlist.h: id = line order, the same 22 in 12–18) and their record-type names,
 * as pg_waldump's rmgrdesc `*_identify(info)` functions print them for PostgreSQL 15 (pg_waldump), and
 * 16, 17, 18 (pg_walinspect's record_type, which calls the same functions): names that differ by
 * major take the major (Database 15+, Heap2 17+). An unknown opcode prints
 * `UNKNOWN (%X)` like pg_waldump; ids 128–255 are custom rmgrs (`custom###`).
 */
import { RM_XACT_ID, XLOG_XACT_OPMASK, XLR_INFO_MASK } from './constants.js';

export const RMGR_NAMES: readonly string[] = [
  'XLOG',
  'Transaction',
  'Storage',
  'CLOG',
  'Database',
  'Tablespace',
  'MultiXact',
  'RelMap',
  'Standby',
  'Heap2',
  'Heap',
  'Btree',
  'Hash',
  'Gin',
  'Gist',
  'Sequence',
  'SPGist',
  'BRIN',
  'CommitTs',
  'ReplicationOrigin',
  'Generic',
  'LogicalMessage',
];

export function rmgrName(rmid: number): string {
  if (rmid < RMGR_NAMES.length) return RMGR_NAMES[rmid];
  if (rmid >= 128) return `custom${String(rmid).padStart(3, '0')}`;
  return `UNKNOWN(${rmid})`;
}

type Identify = (info: number, major: number) => string | undefined;

/** opcode (info & 0xF0) → name tables */
const table =
  (names: Record<number, string>): Identify =>
  (info) =>
    names[info & 0xf0];

const heapLike =
  (names: Record<number, string>): Identify =>
  (info) => {
    const name = names[info & 0x70];
    if (name === undefined) return undefined;
    return info & 0x80 ? `${name}+INIT` : name;
  };

const IDENTIFY: Record<number, Identify> = {
  0: table({
    0x00: 'CHECKPOINT_SHUTDOWN',
    0x10: 'CHECKPOINT_ONLINE',
    0x20: 'NOOP',
    0x30: 'NEXTOID',
    0x40: 'SWITCH',
    0x50: 'BACKUP_END',
    0x60: 'PARAMETER_CHANGE',
    0x70: 'RESTORE_POINT',
    0x80: 'FPW_CHANGE',
    0x90: 'END_OF_RECOVERY',
    0xa0: 'FPI_FOR_HINT',
    0xb0: 'FPI',
    0xd0: 'OVERWRITE_CONTRECORD',
    0xe0: 'CHECKPOINT_REDO',
  }),
  1: (info) =>
    ({
      0x00: 'COMMIT',
      0x10: 'PREPARE',
      0x20: 'ABORT',
      0x30: 'COMMIT_PREPARED',
      0x40: 'ABORT_PREPARED',
      0x50: 'ASSIGNMENT',
      0x60: 'INVALIDATION',
    })[info & XLOG_XACT_OPMASK],
  2: table({ 0x10: 'CREATE', 0x20: 'TRUNCATE' }),
  3: table({ 0x00: 'ZEROPAGE', 0x10: 'TRUNCATE' }),
  4: (info, major) =>
    (major >= 15
      ? { 0x00: 'CREATE_FILE_COPY', 0x10: 'CREATE_WAL_LOG', 0x20: 'DROP' }
      : ({ 0x00: 'CREATE', 0x10: 'DROP' } as Record<number, string>))[info & 0xf0],
  5: table({ 0x00: 'CREATE', 0x10: 'DROP' }),
  6: table({ 0x00: 'ZERO_OFF_PAGE', 0x10: 'ZERO_MEM_PAGE', 0x20: 'CREATE_ID', 0x30: 'TRUNCATE_ID' }),
  7: table({ 0x00: 'UPDATE' }),
  8: table({ 0x00: 'LOCK', 0x10: 'RUNNING_XACTS', 0x20: 'INVALIDATIONS' }),
  9: (info, major) =>
    heapLike(
      major >= 17
        ? {
            // 17 folded PRUNE/VACUUM/FREEZE_PAGE into one prune record logged three ways (heapdesc.c)
            0x00: 'REWRITE',
            0x10: 'PRUNE_ON_ACCESS',
            0x20: 'PRUNE_VACUUM_SCAN',
            0x30: 'PRUNE_VACUUM_CLEANUP',
            0x40: 'VISIBLE',
            0x50: 'MULTI_INSERT',
            0x60: 'LOCK_UPDATED',
            0x70: 'NEW_CID',
          }
        : {
            0x00: 'REWRITE',
            0x10: 'PRUNE',
            0x20: 'VACUUM',
            0x30: 'FREEZE_PAGE',
            0x40: 'VISIBLE',
            0x50: 'MULTI_INSERT',
            0x60: 'LOCK_UPDATED',
            0x70: 'NEW_CID',
          },
    )(info, major),
  10: heapLike({
    0x00: 'INSERT',
    0x10: 'DELETE',
    0x20: 'UPDATE',
    0x30: 'TRUNCATE',
    0x40: 'HOT_UPDATE',
    0x50: 'CONFIRM',
    0x60: 'LOCK',
    0x70: 'INPLACE',
  }),
  11: table({
    0x00: 'INSERT_LEAF',
    0x10: 'INSERT_UPPER',
    0x20: 'INSERT_META',
    0x30: 'SPLIT_L',
    0x40: 'SPLIT_R',
    0x50: 'INSERT_POST',
    0x60: 'DEDUP',
    0x70: 'DELETE',
    0x80: 'UNLINK_PAGE',
    0x90: 'UNLINK_PAGE_META',
    0xa0: 'NEWROOT',
    0xb0: 'MARK_PAGE_HALFDEAD',
    0xc0: 'VACUUM',
    0xd0: 'REUSE_PAGE',
    0xe0: 'META_CLEANUP',
  }),
  12: table({
    0x00: 'INIT_META_PAGE',
    0x10: 'INIT_BITMAP_PAGE',
    0x20: 'INSERT',
    0x30: 'ADD_OVFL_PAGE',
    0x40: 'SPLIT_ALLOCATE_PAGE',
    0x50: 'SPLIT_PAGE',
    0x60: 'SPLIT_COMPLETE',
    0x70: 'MOVE_PAGE_CONTENTS',
    0x80: 'SQUEEZE_PAGE',
    0x90: 'DELETE',
    0xa0: 'SPLIT_CLEANUP',
    0xb0: 'UPDATE_META_PAGE',
    0xc0: 'VACUUM_ONE_PAGE',
  }),
  15: table({ 0x00: 'LOG' }),
  18: table({ 0x00: 'ZEROPAGE', 0x10: 'TRUNCATE' }),
  19: table({ 0x00: 'SET', 0x10: 'DROP' }),
  20: table({ 0x00: 'Generic' }),
  21: table({ 0x00: 'MESSAGE' }),
};

/** The record type name pg_waldump prints after `desc:` (its rmgr's identify function). */
export function recordTypeName(rmid: number, info: number, major = 15): string {
  const name = IDENTIFY[rmid]?.(info & ~XLR_INFO_MASK, major);
  return name ?? `UNKNOWN (${(info & ~XLR_INFO_MASK).toString(16).toUpperCase()})`;
}

/** xlogstats.c's per-record-type key: info >> 4, with XACT records masked to their 3 opcode bits. */
export function statsRecordId(rmid: number, info: number): number {
  const recid = info >> 4;
  return rmid === RM_XACT_ID ? recid & 0x07 : recid;
}
