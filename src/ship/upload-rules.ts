/**
 * What `PUT walFile/:name` accepts, as pure decisions over bytes and numbers (no fs, no SQL): how
 * large each kind of file may be, whether a name may be written given where the server is, and
 * whether the content is what its name says — a WAL segment's long page header (magic of the
 * cluster's version, its own start address, its timeline, the cluster's system identifier, segment
 * and block size), a timeline history file of that timeline, a backup history file of that point.
 * Every refusal is a ShipError with the HTTP status and code the agent answers.
 */
import { formatLsn, historyFileName, segmentOf, segmentStartLsn, type Lsn, type WalFileInfo } from '../formats/lsn.js';
import { FormatError } from '../formats/errors.js';
import { parseHistory, timelineAt, type TimelineHistory } from '../formats/timeline-history.js';
import { SIZE_OF_XLOG_LONG_PHD, XLP_ALL_FLAGS, XLP_LONG_HEADER } from '../formats/wal/constants.js';
import { MAX_BACKUP_HISTORY_BYTES, MAX_HISTORY_FILE_BYTES } from '../wal/bounded-read.js';
import { ShipError } from './files.js';

/** the cluster as pg_control describes it */
export interface ClusterIdentity {
  systemId: bigint;
  segmentSize: number;
  blockSize: number;
  /** XLOG_PAGE_MAGIC of the cluster's major version */
  pageMagic: number;
}

/** where the server is (or would start from): no segment at or after this point on its timeline may be written */
export interface ServerPosition {
  running: boolean;
  /** the lowest timeline the server may be on (insert/receive timeline, checkpoint timeline) */
  tli: number;
  /** insert position (primary), receive/replay position (standby), or pg_control's REDO point */
  lsn: Lsn;
  /** how it was found */
  source: 'sql' | 'pg_control';
}

/** Size limits by kind: a segment (or .partial) has exactly the segment size; text files a bound. */
export function uploadSize(info: WalFileInfo, segmentSize: number): { exact?: number; max: number } {
  switch (info.kind) {
    case 'segment':
    case 'partial':
      return { exact: segmentSize, max: segmentSize };
    case 'history':
      return { max: MAX_HISTORY_FILE_BYTES };
    case 'backup':
      return { max: MAX_BACKUP_HISTORY_BYTES };
  }
}

/** Refuse a Content-Length that cannot be right before a byte of the body is read. */
export function checkContentLength(name: string, length: number | undefined, limits: { exact?: number; max: number }): void {
  if (length === undefined) return;
  if (!Number.isSafeInteger(length) || length < 0) throw new ShipError(`bad Content-Length for ${name}`, 400, 'BAD_LENGTH');
  if (length > limits.max) throw new ShipError(`${name}: body of ${length} bytes is larger than ${limits.max} bytes`, 413, 'TOO_LARGE');
  if (limits.exact !== undefined && length !== limits.exact) {
    throw new ShipError(`${name}: body of ${length} bytes, a WAL segment here has exactly ${limits.exact}`, 400, 'BAD_LENGTH');
  }
}

/**
 * May this name be written at all, given where the server is? Segments (and .partial files) at or
 * after the segment holding the server's position, on its timeline or a later one, may be in use
 * (written, pre-allocated, about to be read by recovery): refused. While it runs, a history file of
 * a timeline above the server's is refused too (a standby following the latest timeline would
 * switch to it). Old-timeline segments, segments before the position, and history files for a
 * stopped node are what rejoin and slot copying bring, and stay allowed.
 */
export function checkNotInUse(info: WalFileInfo, pos: ServerPosition, segmentSize: number): void {
  if ((info.kind === 'segment' || info.kind === 'partial') && info.segno !== undefined) {
    const posSeg = segmentOf(pos.lsn, segmentSize);
    if (info.tli >= pos.tli && info.segno >= posSeg) {
      throw new ShipError(
        `${info.name} is at or after the segment holding ${pos.running ? 'the running server\'s position' : 'the stopped server\'s REDO point'} ` +
          `${formatLsn(pos.lsn)} on timeline ${pos.tli} (from ${pos.source}): it may be in use and is never written through the agent`,
        409,
        'SEGMENT_IN_USE',
      );
    }
  }
  if (info.kind === 'history' && pos.running && info.tli > pos.tli) {
    throw new ShipError(`${info.name}: timeline ${info.tli} is above the running server's timeline ${pos.tli}; stop the server first`, 409, 'SERVER_RUNNING');
  }
}

const hex = (v: number | bigint, w: number) => `0x${v.toString(16).toUpperCase().padStart(w, '0')}`;

/**
 * The first page of a segment (or .partial) must carry the long header the server itself would
 * have written at that address: XLOG_PAGE_MAGIC of the cluster's version, XLP_LONG_HEADER,
 * xlp_pageaddr = the segment's start, the cluster's system identifier, segment and block size, and
 * as xlp_tli the name's timeline — or, for the first segment of a timeline (the server copies the
 * parent's segment up to the switch), the timeline that the name's timeline history has in use at
 * the segment's start. `historyOf(tli)` gives that history when pg_wal has it.
 */
export function checkSegmentHead(
  head: Buffer,
  info: WalFileInfo,
  cluster: ClusterIdentity,
  historyOf: (tli: number) => TimelineHistory | undefined,
): void {
  const name = info.name;
  const bad = (offset: number, what: string, expected: string, got: string) =>
    new ShipError(`${name}: offset ${offset}: ${what} (expected ${expected}, got ${got})`, 422, 'BAD_CONTENT');
  if (head.length < SIZE_OF_XLOG_LONG_PHD) throw bad(head.length, 'too short for a long page header', `${SIZE_OF_XLOG_LONG_PHD} bytes`, `${head.length}`);
  const magic = head.readUInt16LE(0);
  if (magic !== cluster.pageMagic) throw bad(0, 'not a WAL segment of this cluster\'s PostgreSQL version', `page magic ${hex(cluster.pageMagic, 4)}`, hex(magic, 4));
  const infoBits = head.readUInt16LE(2);
  if (!(infoBits & XLP_LONG_HEADER) || infoBits & ~XLP_ALL_FLAGS) throw bad(2, 'first page lacks a valid long header', 'XLP_LONG_HEADER and no unknown bits', hex(infoBits, 4));
  const start = segmentStartLsn(info.segno!, cluster.segmentSize);
  const pageaddr = head.readBigUInt64LE(8);
  if (pageaddr !== start) throw bad(8, 'xlp_pageaddr is not the start of the segment this name says', formatLsn(start), formatLsn(pageaddr));
  const sysid = head.readBigUInt64LE(24);
  if (sysid !== cluster.systemId) throw bad(24, 'system identifier is not this cluster\'s', cluster.systemId.toString(), sysid.toString());
  const segSize = head.readUInt32LE(32);
  if (segSize !== cluster.segmentSize) throw bad(32, 'segment size differs from this cluster\'s', String(cluster.segmentSize), String(segSize));
  const blcksz = head.readUInt32LE(36);
  if (blcksz !== cluster.blockSize) throw bad(36, 'WAL block size differs from this cluster\'s', String(cluster.blockSize), String(blcksz));
  const pageTli = head.readUInt32LE(4);
  if (pageTli === info.tli) return;
  if (pageTli === 0 || pageTli > info.tli) throw bad(4, 'xlp_tli does not fit the name\'s timeline', `${info.tli} or an ancestor`, String(pageTli));
  // the first segment of a timeline: its first page belongs to the parent timeline in use there
  const history = historyOf(info.tli);
  if (!history) {
    throw new ShipError(
      `${name}: offset 4: first page is on timeline ${pageTli}, not ${info.tli}; ${historyFileName(info.tli)} must be on this node first to check that timeline ${info.tli} began in this segment`,
      422,
      'BAD_CONTENT',
    );
  }
  const inUse = timelineAt(history, start);
  if (inUse !== pageTli) throw bad(4, `xlp_tli is not the timeline in use at ${formatLsn(start)} on timeline ${info.tli}'s history`, String(inUse ?? 'none'), String(pageTli));
}

/** A `.history` upload must parse as the history file of the timeline its name says, with entries. */
export function checkHistoryContent(content: Buffer, info: WalFileInfo): TimelineHistory {
  let h: TimelineHistory;
  try {
    h = parseHistory(content, info.tli, info.name);
  } catch (e) {
    if (e instanceof FormatError) throw new ShipError(e.describe(), 422, 'BAD_CONTENT');
    throw e;
  }
  if (h.entries.length === 0) throw new ShipError(`${info.name}: no timeline switch in it: a history file of timeline ${info.tli} names its parents`, 422, 'BAD_CONTENT');
  return h;
}

/**
 * A `.backup` upload (backup history file) must be text whose first line is the server's
 * `START WAL LOCATION: X/Y (file NAME)` for the point and segment its name says.
 */
export function checkBackupContent(content: Buffer, info: WalFileInfo, segmentSize: number): void {
  const nul = content.indexOf(0);
  if (nul >= 0) throw new ShipError(`${info.name}: offset ${nul}: a backup history file is text (NUL byte found)`, 422, 'BAD_CONTENT');
  const first = content.toString('latin1').split('\n')[0];
  const m = /^START WAL LOCATION: ([0-9A-F]{1,8})\/([0-9A-F]{1,8}) \(file ([0-9A-F]{24})\)$/.exec(first);
  const start = segmentStartLsn(info.segno!, segmentSize) + BigInt(info.backupOffset ?? 0);
  const segName = info.name.slice(0, 24);
  if (!m || m[3] !== segName || ((BigInt('0x' + m[1]) << 32n) | BigInt('0x' + m[2])) !== start) {
    throw new ShipError(
      `${info.name}: offset 0: not the backup history file its name says (expected "START WAL LOCATION: ${formatLsn(start)} (file ${segName})", got ${JSON.stringify(first.slice(0, 80))})`,
      422,
      'BAD_CONTENT',
    );
  }
}
