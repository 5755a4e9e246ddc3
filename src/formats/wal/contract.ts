/**
 * The contract shared by the native addon (native/, Rust) and its pure TypeScript twin
 * (src/formats/wal/scan.ts). Both implementations must produce byte-identical results for the same
 * input; test/native-parity.test.ts checks that.
 *
 * scanWal() walks WAL bytes that start on a page boundary (one segment, several consecutive segments,
 * or a part of a segment that is a whole number of pages) in ONE call, validating every page header
 * and every record (header, continuation, CRC, block-reference layout), exactly as PostgreSQL's
 * xlogreader.c does when reading forward. It never throws on content: the first failed check is
 * reported as the end of valid WAL with a reason. It throws only on bad arguments.
 */

/** Stable end-of-WAL reason codes (part of the `--json` contract). */
export const END_REASONS = [
  'zeroed', //              xl_tot_len == 0 at a record start, or an all-zero page header
  'bad-magic', //           xlp_magic differs from the stream's magic (or is not a known PG version)
  'bad-page-header', //     unknown xlp_info bits, missing long header at segment start, seg/blcksz/sysid mismatch
  'pageaddr-mismatch', //   xlp_pageaddr != LSN of the page (recycled segment)
  'tli-out-of-sequence', // xlp_tli lower than an earlier page's
  'bad-record-header', //   xl_tot_len < 24 (non-zero) or > 1 GiB-1, or invalid rmid
  'prev-mismatch', //       xl_prev != previous record (or >= own LSN on the first record)
  'bad-contrecord', //      continuation page lacks XLP_FIRST_IS_CONTRECORD or xlp_rem_len is wrong
  'crc-mismatch', //        record CRC-32C does not match
  'bad-record-body', //     block references / lengths do not decode (DecodeXLogRecord)
  'truncated', //           the file ended before the record/page did (set by the driver, not scanWal)
  'end-of-files', //        no next segment file (set by the driver, not scanWal)
] as const;
export type EndReason = (typeof END_REASONS)[number];

/** Numeric codes used across the native boundary: index into END_REASONS. */
export function endReasonFromCode(code: number): EndReason {
  const r = END_REASONS[code];
  if (r === undefined) throw new RangeError(`unknown end reason code ${code}`);
  return r;
}

/**
 * Size of one record entry in ScanResult.records (little-endian, packed):
 *   0  u64 lsn      start LSN of the record
 *   8  u64 prev     xl_prev
 *  16  u32 totLen   xl_tot_len
 *  20  u32 xid      xl_xid
 *  24  u32 fpiLen   sum of bimg_len of all block images (xlogstats.c's fpi_len)
 *  28  u8  rmid     xl_rmid
 *  29  u8  info     xl_info
 *  30  u8  blocks   number of block references
 *  31  u8  flags    bit0: record continued from a previous page (spans pages)
 *                   bit1: record continued from a previous segment (spans segments)
 */
export const RECORD_ENTRY_SIZE = 32;

/**
 * Scanner state carried from one call to the next (the next buffer must start exactly at
 * `nextPageLsn`). Opaque to callers except for reading; pass it back unchanged.
 */
export interface ScanCarry {
  /** LSN where the next buffer must start (page aligned) */
  nextPageLsn: bigint;
  /** LSN of the next record start (or of the partial record's start when `partial` is set) */
  nextRecordLsn: bigint;
  /** start LSN of the last complete record (0n if none yet); used for the xl_prev check */
  prevRecordLsn: bigint;
  /** highest page TLI seen so far (out-of-sequence check) */
  lastPageTli: number;
  /** xlp_magic of the stream (0 = not known yet) */
  pageMagic: number;
  /** system identifier from the first long page header (0n = not known yet) */
  systemId: bigint;
  segmentSize: number;
  blockSize: number;
  /** bytes of a record begun but not yet complete (header and data so far, page headers stripped) */
  partial: Uint8Array | null;
  /** xl_tot_len of the partial record (0 if unknown) */
  partialTotLen: number;
  /** true when the next record (first read) must satisfy the random-access xl_prev rule */
  randomAccess: boolean;
  /** 1 = partial record started in an earlier segment than the current page */
  partialCrossesSegment: boolean;
}

export interface ScanOptions {
  /** LSN of buf[0]; must be a multiple of the block size */
  bufLsn: bigint;
  /** state from the previous call for the buffer that ends where this one starts; null = fresh start */
  carry: ScanCarry | null;
  /**
   * 'records': fill `records` with one RECORD_ENTRY_SIZE entry per complete record.
   * 'stats':   leave `records` empty; fill `stats` only (faster, bounded memory).
   */
  mode: 'records' | 'stats';
  /** on a fresh start: first record LSN to look for (records before it are skipped); 0n = the first one */
  startLsn?: bigint;
  /** stop before the first record whose start LSN is >= endLsn (0n = no bound) */
  endLsn?: bigint;
}

/**
 * Per-record-type statistics: STATS_SLOTS entries of 3 little-endian u64 (count, recordBytes,
 * fpiBytes) at index (rmid * 16 + (info >> 4)). recordBytes = totLen - fpiLen (xlogstats.c).
 */
export const STATS_SLOTS = 256 * 16;
export const STATS_ENTRY_SIZE = 24;

export interface ScanResult {
  /** number of complete, valid records found in this call (also in 'stats' mode) */
  count: number;
  /** count * RECORD_ENTRY_SIZE bytes in 'records' mode, empty in 'stats' mode */
  records: Buffer;
  /** STATS_SLOTS * STATS_ENTRY_SIZE bytes, counts for records found in this call only */
  stats: Buffer;
  /** end of valid WAL found in this buffer, or null when the buffer was consumed without error */
  end: { lsn: bigint; reason: EndReason; message: string } | null;
  /** true when options.endLsn was reached (the scan stopped there, `end` is null) */
  reachedEndLsn: boolean;
  /** state to pass with the next buffer */
  carry: ScanCarry;
  /** LSN of the first record found in this call (0n if none) */
  firstRecordLsn: bigint;
  /** LSN of the last complete record found in this call (0n if none) */
  lastRecordLsn: bigint;
  /** LSN just past the last complete record (MAXALIGNed end, or next segment start after a SWITCH) */
  lastRecordEndLsn: bigint;
}

export interface WalScanner {
  scanWal(buf: Uint8Array, options: ScanOptions): ScanResult;
}

export interface Crc32c {
  /** PostgreSQL CRC-32C (finalized). `init` is a previous finalized result to continue from. */
  crc32c(data: Uint8Array, init?: number): number;
}

/** what a multi-threaded scan of whole files found: the result of one sequential pass over them */
export interface FilesScanResult {
  count: number;
  stats: Buffer;
  firstRecordLsn: bigint | null;
  lastRecordLsn: bigint | null;
  carry: ScanCarry | null;
  end: { lsn: bigint; reason: EndReason; message: string } | null;
  filesScanned: number;
  bytesScanned: number;
}
