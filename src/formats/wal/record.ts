/**
 * One record API over a scan's results, like xlogreader's DecodeXLogRecord: the packed record
 * entries both scanners produce (`RECORD_ENTRY_SIZE` bytes each, layout in contract.ts) read
 * through one accessor, and a record's bytes reassembled from the buffers it was scanned from and
 * decoded (block references, main data) for the major version the stream's page magic names.
 * Every consumer (inspect's record views, the lost-transaction report, rejoin's checkpoint search,
 * the segment stitcher) reads records here and nowhere else.
 */
import type { Lsn } from '../lsn.js';
import { majorFromPageMagic } from '../versions.js';
import { XLP_LONG_HEADER } from './constants.js';
import { RECORD_ENTRY_SIZE, type ScanCarry } from './contract.js';
import { checkRecordLayout, type BlockRef } from './layout.js';

/** One record as the scanner reported it (the fields of one packed entry). */
export interface RecordEntry {
  /** start LSN */
  lsn: Lsn;
  /** xl_prev */
  prev: Lsn;
  /** xl_tot_len */
  totLen: number;
  /** xl_xid */
  xid: number;
  /** Σ bimg_len of the record's full-page images (xlogstats.c's fpi_len) */
  fpiLen: number;
  /** xl_rmid */
  rmid: number;
  /** xl_info */
  info: number;
  /** number of block references */
  blocks: number;
  /** the record continues from a previous page */
  spansPages: boolean;
  /** the record continues from a previous segment */
  spansSegments: boolean;
}

/** Entry offsets within one packed record entry (contract.ts). */
const ENTRY = { lsn: 0, prev: 8, totLen: 16, xid: 20, fpiLen: 24, rmid: 28, info: 29, blocks: 30, flags: 31 } as const;

/** The `index`-th packed entry of a scan's `records` buffer. */
export function recordEntry(records: Uint8Array, index: number): RecordEntry {
  const at = index * RECORD_ENTRY_SIZE;
  if (index < 0 || at + RECORD_ENTRY_SIZE > records.length) throw new RangeError(`record entry ${index} is outside the ${records.length / RECORD_ENTRY_SIZE} entries scanned`);
  const dv = new DataView(records.buffer, records.byteOffset + at, RECORD_ENTRY_SIZE);
  const flags = dv.getUint8(ENTRY.flags);
  return {
    lsn: dv.getBigUint64(ENTRY.lsn, true),
    prev: dv.getBigUint64(ENTRY.prev, true),
    totLen: dv.getUint32(ENTRY.totLen, true),
    xid: dv.getUint32(ENTRY.xid, true),
    fpiLen: dv.getUint32(ENTRY.fpiLen, true),
    rmid: dv.getUint8(ENTRY.rmid),
    info: dv.getUint8(ENTRY.info),
    blocks: dv.getUint8(ENTRY.blocks),
    spansPages: (flags & 1) !== 0,
    spansSegments: (flags & 2) !== 0,
  };
}

/** Every entry of a scan's result, in WAL order. */
export function* recordEntries(result: { records: Uint8Array; count: number }): Generator<RecordEntry> {
  for (let i = 0; i < result.count; i++) yield recordEntry(result.records, i);
}

/** WAL bytes in memory starting at `bufLsn` (a segment or a part of one, page aligned). */
export interface BufferedRange {
  buf: Uint8Array;
  bufLsn: Lsn;
}

/**
 * Reassemble one record's logical bytes (page headers stripped) from the buffers it was scanned
 * from; null when a part of it is not in `ranges`. The scan has validated everything: this only
 * copies bytes.
 */
export function recordBytes(ranges: BufferedRange[], lsn: Lsn, totLen: number, blockSize: number): Uint8Array | null {
  const out = new Uint8Array(totLen);
  let done = 0;
  let pos = lsn;
  while (done < totLen) {
    const range = ranges.find((r) => pos >= r.bufLsn && pos < r.bufLsn + BigInt(r.buf.length));
    if (!range) return null;
    let off = Number(pos - range.bufLsn);
    const pageStart = off - (off % blockSize);
    if (off === pageStart) {
      const info = range.buf[pageStart + 2] | (range.buf[pageStart + 3] << 8);
      off += info & XLP_LONG_HEADER ? 40 : 24;
    }
    const take = Math.min(totLen - done, pageStart + blockSize - off);
    out.set(range.buf.subarray(off, off + take), done);
    done += take;
    pos = range.bufLsn + BigInt(off + take);
  }
  return out;
}

/** A record decoded as DecodeXLogRecord does: its bytes, block references and main data. */
export interface DecodedRecord extends RecordEntry {
  /** the whole record (XLogRecord header first), xl_tot_len bytes */
  bytes: Uint8Array;
  blockRefs: BlockRef[];
  origin?: number;
  toplevelXid?: number;
  /** offset of the main data in `bytes` */
  mainDataOffset: number;
  mainDataLength: number;
  /** the main data itself (a view into `bytes`) */
  mainData: Uint8Array;
}

/** The PostgreSQL major of a scanned stream, from its page magic (the scan has checked it is known). */
export function streamMajor(carry: Pick<ScanCarry, 'pageMagic'>): number {
  const major = majorFromPageMagic(carry.pageMagic);
  if (major === undefined) throw new RangeError(`page magic 0x${carry.pageMagic.toString(16)} is not a supported PostgreSQL version`);
  return major;
}

/**
 * Decode one scanned record from the buffers it was read from, for the stream's major version and
 * block size. Null when its bytes are not all in `ranges` (a record that began in a segment no
 * longer in memory).
 */
export function decodeRecord(ranges: BufferedRange[], entry: RecordEntry, major: number, blockSize: number): DecodedRecord | null {
  const bytes = recordBytes(ranges, entry.lsn, entry.totLen, blockSize);
  if (!bytes) return null;
  const frags = { blocks: [] as BlockRef[], mainDataLength: 0, mainDataOffset: 0, origin: undefined as number | undefined, toplevelXid: undefined as number | undefined };
  checkRecordLayout(bytes, major, blockSize, frags);
  return {
    ...entry,
    bytes,
    blockRefs: frags.blocks,
    ...(frags.origin !== undefined ? { origin: frags.origin } : {}),
    ...(frags.toplevelXid !== undefined ? { toplevelXid: frags.toplevelXid } : {}),
    mainDataOffset: frags.mainDataOffset,
    mainDataLength: frags.mainDataLength,
    mainData: bytes.subarray(frags.mainDataOffset, frags.mainDataOffset + frags.mainDataLength),
  };
}
