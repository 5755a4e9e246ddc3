import { LsnFormatError } from './errors.js';

/** An LSN is a 64-bit byte position in the WAL stream; kept as bigint end to end. */
export type Lsn = bigint;

export const INVALID_LSN = 0n;
const U64_MAX = (1n << 64n) - 1n;
const LSN_TEXT = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

/** Parse `X/Y` (each part 1–8 hex digits), as pg_lsn_in does. */
export function parseLsn(text: string): Lsn {
  const m = LSN_TEXT.exec(text.trim());
  if (!m) throw new LsnFormatError(`invalid LSN "${text}"`, { expected: 'X/Y with 1-8 hex digits each', got: text });
  return (BigInt('0x' + m[1]) << 32n) | BigInt('0x' + m[2]);
}

/** A timeline ID written in decimal (1 … 2^32−1), as the REST routes and `pgwal validlsn` take it. */
export function parseTimelineId(text: string): number {
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > 0xffffffff) {
    throw new LsnFormatError(`invalid timeline ID "${text}": expected a decimal number from 1 to 4294967295`, { expected: 'a decimal number from 1 to 4294967295', got: text });
  }
  return Number(text);
}

/** Format as PostgreSQL's SQL `pg_lsn` output: `%X/%X` (no padding). */
export function formatLsn(lsn: Lsn): string {
  if (lsn < 0n || lsn > U64_MAX) throw new RangeError(`LSN out of range: ${lsn}`);
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** Format as pg_waldump 15 does: low word zero-padded to 8 digits (`0/015007F0`). */
export function formatLsnPadded(lsn: Lsn): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase().padStart(8, '0')}`;
}

export function isValidSegmentSize(size: number): boolean {
  return Number.isInteger(size) && size >= 1 << 20 && size <= 1 << 30 && (size & (size - 1)) === 0;
}

function checkSegmentSize(segmentSize: number): void {
  if (!isValidSegmentSize(segmentSize)) {
    throw new RangeError(`WAL segment size must be a power of two between 1 MiB and 1 GiB, got ${segmentSize}`);
  }
}

/** XLByteToSeg */
export function segmentOf(lsn: Lsn, segmentSize: number): bigint {
  checkSegmentSize(segmentSize);
  return lsn / BigInt(segmentSize);
}

/** XLogSegmentOffset */
export function segmentOffset(lsn: Lsn, segmentSize: number): number {
  return Number(lsn % BigInt(segmentSize));
}

/** XLogSegNoOffsetToRecPtr */
export function segmentStartLsn(segno: bigint, segmentSize: number): Lsn {
  return segno * BigInt(segmentSize);
}

/** XLogSegmentsPerXLogId: segments per 4 GiB "xlogid". */
export function segmentsPerXLogId(segmentSize: number): bigint {
  checkSegmentSize(segmentSize);
  return 0x100000000n / BigInt(segmentSize);
}

const hex8 = (v: bigint | number): string => v.toString(16).toUpperCase().padStart(8, '0');

/** XLogFileName: `%08X%08X%08X` of (tli, segno / S, segno % S). */
export function walFileName(tli: number, segno: bigint, segmentSize: number): string {
  const per = segmentsPerXLogId(segmentSize);
  return hex8(tli) + hex8(segno / per) + hex8(segno % per);
}

/** The WAL file that contains `lsn` on timeline `tli`. */
export function walFileNameForLsn(tli: number, lsn: Lsn, segmentSize: number): string {
  return walFileName(tli, segmentOf(lsn, segmentSize), segmentSize);
}

export function historyFileName(tli: number): string {
  return `${hex8(tli)}.history`;
}

export type WalFileKind = 'segment' | 'partial' | 'history' | 'backup';

export interface WalFileInfo {
  kind: WalFileKind;
  name: string;
  tli: number;
  /** segment number (segment, partial, backup); needs the segment size to compute */
  segno?: bigint;
  /** for .backup: the backup start offset within the segment */
  backupOffset?: number;
}

const SEGMENT_RE = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$/;
const PARTIAL_RE = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.partial$/;
const HISTORY_RE = /^([0-9A-F]{8})\.history$/;
const BACKUP_RE = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.([0-9A-F]{8})\.backup$/;

/**
 * Classify a file name found in pg_wal (or an archive). Returns null for anything that is not a
 * WAL segment, partial segment, timeline history or backup history file name (these patterns are
 * also the whitelist for files accepted over the network: no path separators can match).
 */
export function parseWalFileName(name: string, segmentSize?: number): WalFileInfo | null {
  let m: RegExpExecArray | null;
  const seg = (hi: string, lo: string): bigint | undefined => {
    if (segmentSize === undefined) return undefined;
    const per = segmentsPerXLogId(segmentSize);
    const low = BigInt('0x' + lo);
    if (low >= per) return undefined;
    return BigInt('0x' + hi) * per + low;
  };
  if ((m = SEGMENT_RE.exec(name))) {
    const tli = parseInt(m[1], 16);
    if (tli === 0) return null;
    if (segmentSize !== undefined && seg(m[2], m[3]) === undefined) return null;
    return { kind: 'segment', name, tli, segno: seg(m[2], m[3]) };
  }
  if ((m = PARTIAL_RE.exec(name))) {
    const tli = parseInt(m[1], 16);
    if (tli === 0) return null;
    return { kind: 'partial', name, tli, segno: seg(m[2], m[3]) };
  }
  if ((m = HISTORY_RE.exec(name))) {
    const tli = parseInt(m[1], 16);
    if (tli < 2) return null; // timeline 1 never has a history file
    return { kind: 'history', name, tli };
  }
  if ((m = BACKUP_RE.exec(name))) {
    const tli = parseInt(m[1], 16);
    if (tli === 0) return null;
    return { kind: 'backup', name, tli, segno: seg(m[2], m[3]), backupOffset: parseInt(m[4], 16) };
  }
  return null;
}

/** Parse a segment name that must be exactly a segment for the given size; throws otherwise. */
export function parseSegmentName(name: string, segmentSize: number): { tli: number; segno: bigint } {
  const info = parseWalFileName(name, segmentSize);
  if (!info || (info.kind !== 'segment' && info.kind !== 'partial') || info.segno === undefined) {
    throw new LsnFormatError(`not a WAL segment file name for ${segmentSize}-byte segments: "${name}"`, {
      expected: '24 upper-case hex digits (TLI, log, seg)',
      got: name,
    });
  }
  return { tli: info.tli, segno: info.segno };
}

export const MAXALIGN = (n: number): number => (n + 7) & ~7;
export const maxAlignLsn = (lsn: Lsn): Lsn => (lsn + 7n) & ~7n;
