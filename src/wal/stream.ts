/**
 * Reads a sequence of WAL segment files as one stream and scans it with the native addon (or its
 * TypeScript twin): one scanWal call per segment, the carry passed from one to the next so records
 * spanning segments are checked like any other. With the native addon the scan of segment N runs on
 * the libuv pool while the main thread reads segment N+1 into the other buffer, so both cores work;
 * statistics over whole files (no visitor, no start/end) go to the addon in one call, which scans
 * them on one thread per core (native/src/wal_files.rs).
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { WalFormatError } from '../formats/errors.js';
import { formatLsn, segmentOf, segmentStartLsn, type Lsn } from '../formats/lsn.js';
import { KNOWN_PAGE_MAGICS_TEXT, SUPPORTED_RANGE, majorFromPageMagic, type PgMajor } from '../formats/versions.js';
import {
  STATS_ENTRY_SIZE,
  STATS_SLOTS,
  type EndReason,
  type FilesScanResult,
  type ScanCarry,
  type ScanOptions,
  type ScanResult,
} from '../formats/wal/contract.js';
import type { BufferedRange } from '../formats/wal/record.js';
import type { MappedFile } from '../native/index.js';
import type { SegmentFile } from './segments.js';

export interface ScanImplementation {
  scanWal(buf: Uint8Array, options: ScanOptions): ScanResult;
  scanWalAsync?(buf: Uint8Array, options: ScanOptions): Promise<ScanResult>;
  /** map files instead of reading them (native addon; used when no visitor needs the bytes) */
  mapFile?(path: string, length: number): Promise<MappedFile>;
  scanMapped?(map: MappedFile, options: ScanOptions): Promise<ScanResult>;
  /** scan consecutive whole files for statistics on several threads (native addon; see native/src/wal_files.rs) */
  scanFiles?(files: Array<{ path: string; bufLsn: Lsn }>, segmentSize: number, blockSize: number, onBytes?: (bytesDone: number) => void): Promise<FilesScanResult>;
}

/** What a visitor gets for each scanned segment (valid only during the callback). */
export interface SegmentVisit {
  file: SegmentFile;
  /** bytes of this segment that were scanned (a whole number of pages) */
  buf: Buffer;
  bufLsn: Lsn;
  /** the previous segment's bytes (for records that began there), if any */
  prev: { buf: Buffer; bufLsn: Lsn } | null;
  result: ScanResult;
}

/** The buffers a visit's records can be read from (this segment's, and the previous one's for a record that began there). */
export function visitedRanges(visit: SegmentVisit): BufferedRange[] {
  return visit.prev ? [visit.prev, { buf: visit.buf, bufLsn: visit.bufLsn }] : [{ buf: visit.buf, bufLsn: visit.bufLsn }];
}

export interface StreamScanOptions {
  files: SegmentFile[];
  segmentSize: number;
  mode: 'records' | 'stats';
  /** pg_waldump -s: records whose start LSN ≥ start */
  start?: Lsn;
  /** pg_waldump -e: records whose start LSN < end */
  end?: Lsn;
  impl: ScanImplementation;
  onSegment?: (visit: SegmentVisit) => void;
  onProgress?: (filesDone: number, filesTotal: number, bytesDone: number) => void;
  /** scan the two halves of a directory concurrently when it pays off (default true) */
  parallel?: boolean;
}

export interface StreamScanSummary {
  pgVersion: PgMajor | null;
  pageMagic: number;
  systemId: bigint;
  segmentSize: number;
  blockSize: number;
  /** timeline of the first file */
  timeline: number;
  firstRecordLsn: Lsn | null;
  lastRecordLsn: Lsn | null;
  /** end of valid WAL (where the next record would start), or where the range ended */
  endLsn: Lsn;
  endReason: EndReason | 'end-lsn-reached';
  endMessage: string;
  /** the file and byte offset of endLsn */
  endFile: string | null;
  endOffset: number;
  count: number;
  /** aggregated per-record-type stats, STATS_SLOTS entries (count, recordBytes, fpiBytes) */
  stats: Float64Array;
  filesScanned: number;
  bytesScanned: number;
}

const PAGE_PROBE = 40;

/** Read the long page header at the start of a segment file: segment size and block size. */
export function probeSegmentHeader(path: string): { magic: number; segmentSize: number; blockSize: number; systemId: bigint; tli: number; pageaddr: bigint } {
  const fd = openSync(path, 'r');
  try {
    const head = Buffer.alloc(PAGE_PROBE);
    const n = readSync(fd, head, 0, PAGE_PROBE, 0);
    if (n < PAGE_PROBE) {
      throw new WalFormatError('file too short for a WAL segment\'s long page header', { file: path, offset: n, expected: `${PAGE_PROBE} bytes`, got: `${n} bytes` });
    }
    const magic = head.readUInt16LE(0);
    if (majorFromPageMagic(magic) === undefined) {
      throw new WalFormatError('not a WAL segment of a supported PostgreSQL version: unknown page magic', {
        file: path,
        offset: 0,
        expected: `XLOG_PAGE_MAGIC of ${SUPPORTED_RANGE} (${KNOWN_PAGE_MAGICS_TEXT})`,
        got: `0x${magic.toString(16).toUpperCase().padStart(4, '0')}`,
      });
    }
    const info = head.readUInt16LE(2);
    if (!(info & 0x0002)) {
      throw new WalFormatError('first page of a WAL segment lacks the long header', { file: path, offset: 2, expected: 'XLP_LONG_HEADER in xlp_info', got: `0x${info.toString(16)}` });
    }
    return {
      magic,
      tli: head.readUInt32LE(4),
      pageaddr: head.readBigUInt64LE(8),
      systemId: head.readBigUInt64LE(24),
      segmentSize: head.readUInt32LE(32),
      blockSize: head.readUInt32LE(36),
    };
  } finally {
    closeSync(fd);
  }
}

/** Read up to `size` bytes of a file into `buf`; returns the byte count. */
function readInto(path: string, buf: Buffer, size: number): number {
  const fd = openSync(path, 'r');
  try {
    let done = 0;
    while (done < size) {
      const n = readSync(fd, buf, done, size - done, done);
      if (n === 0) break;
      done += n;
    }
    return done;
  } finally {
    closeSync(fd);
  }
}

/** What one sequential run over a range of files found. */
interface ChainResult {
  count: number;
  stats: Float64Array;
  first: Lsn | null;
  last: Lsn | null;
  carry: ScanCarry | null;
  /** end of valid WAL, the end LSN reached, or the file that was too short */
  end: { lsn: Lsn; reason: StreamScanSummary['endReason']; message: string } | null;
  filesScanned: number;
  bytesScanned: number;
}

function blockSizeOf(f: SegmentFile): number {
  try {
    const bs = probeSegmentHeader(f.path).blockSize;
    return bs >= 1024 && bs <= 65536 && (bs & (bs - 1)) === 0 ? bs : 8192;
  } catch {
    return 8192; // the scan itself reports what is wrong with the file
  }
}

export async function scanWalStream(opts: StreamScanOptions): Promise<StreamScanSummary> {
  const { files, segmentSize } = opts;
  const summary: StreamScanSummary = {
    pgVersion: null,
    pageMagic: 0,
    systemId: 0n,
    segmentSize,
    blockSize: 0,
    timeline: files[0]?.tli ?? 0,
    firstRecordLsn: null,
    lastRecordLsn: null,
    endLsn: files.length ? segmentStartLsn(files[0].segno, segmentSize) : 0n,
    endReason: 'end-of-files',
    endMessage: 'no WAL files',
    endFile: files[0]?.path ?? null,
    endOffset: 0,
    count: 0,
    stats: new Float64Array(STATS_SLOTS * 3),
    filesScanned: 0,
    bytesScanned: 0,
  };
  if (files.length === 0) return summary;
  for (const f of files) {
    if (f.size > segmentSize) {
      throw new WalFormatError('WAL file is larger than the segment size', { file: f.path, offset: segmentSize, expected: `${segmentSize} bytes`, got: `${f.size} bytes` });
    }
  }
  let startIndex = 0;
  if (opts.start !== undefined) {
    const startSeg = segmentOf(opts.start, segmentSize);
    startIndex = files.findIndex((f) => f.segno === startSeg);
    if (startIndex < 0) {
      throw new WalFormatError(`no WAL segment file for start LSN ${formatLsn(opts.start)}`, { expected: `segment ${startSeg}` });
    }
  }
  const blockSize = blockSizeOf(files[startIndex]);
  const total = files.length - startIndex;
  let done = 0;
  const progress = (bytes: number) => opts.onProgress?.(++done, total, bytes);

  // The common --stats case over whole files: the addon scans them on one thread per core (pieces
  // from fresh starts, joined by re-checking each boundary in sequence; native/src/wal_files.rs).
  const parallel = opts.impl.scanFiles !== undefined && !opts.onSegment && opts.parallel !== false && opts.start === undefined && opts.end === undefined && total >= 4;
  let result: ChainResult;
  if (parallel) {
    const run = files.slice(startIndex).map((f) => ({ path: f.path, bufLsn: segmentStartLsn(f.segno, segmentSize) }));
    const onBytes = opts.onProgress ? (bytes: number) => opts.onProgress!(Math.min(total, Math.floor(bytes / segmentSize)), total, bytes) : undefined;
    const r = await opts.impl.scanFiles!(run, segmentSize, blockSize, onBytes);
    const stats = new Float64Array(STATS_SLOTS * 3);
    addStats(stats, r.stats);
    result = { count: r.count, stats, first: r.firstRecordLsn, last: r.lastRecordLsn, carry: r.carry, end: r.end, filesScanned: r.filesScanned, bytesScanned: r.bytesScanned };
    opts.onProgress?.(r.filesScanned, total, r.bytesScanned);
  } else {
    result = await runChain(opts, files, startIndex, files.length, null, blockSize, progress);
  }

  const carry = result.carry;
  if (carry && carry.pageMagic !== 0) {
    summary.pageMagic = carry.pageMagic;
    summary.pgVersion = majorFromPageMagic(carry.pageMagic) ?? null;
    summary.systemId = carry.systemId;
    summary.blockSize = carry.blockSize;
  }
  summary.count = result.count;
  summary.stats = result.stats;
  summary.firstRecordLsn = result.first;
  summary.lastRecordLsn = result.last;
  summary.filesScanned = result.filesScanned;
  summary.bytesScanned = result.bytesScanned;
  if (result.end) setEnd(summary, result.end.lsn, result.end.reason, result.end.message, files, segmentSize);
  else {
    const lastFile = files[files.length - 1];
    const fileEnd = segmentStartLsn(lastFile.segno + 1n, segmentSize);
    const at = carry && carry.nextRecordLsn !== 0n ? carry.nextRecordLsn : fileEnd;
    setEnd(summary, at, 'end-of-files', `no WAL file after ${lastFile.name}`, files, segmentSize);
  }
  return summary;
}

/** Scan files[from, to) in order, starting from `carry` (null: a fresh start at files[from]). */
async function runChain(
  opts: StreamScanOptions,
  files: SegmentFile[],
  from: number,
  to: number,
  initial: ScanCarry | null,
  blockSize: number,
  progress: (bytes: number) => void,
): Promise<ChainResult> {
  const { segmentSize, impl } = opts;
  const out: ChainResult = { count: 0, stats: new Float64Array(STATS_SLOTS * 3), first: null, last: null, carry: initial, end: null, filesScanned: 0, bytesScanned: 0 };
  if (from >= to) return out;
  const useMap = impl.mapFile !== undefined && impl.scanMapped !== undefined && !opts.onSegment;
  // reading: segment N+1 is read into the other buffer on this thread while N is scanned on the
  // pool; mapping (native, no visitor): N+1 is mapped on the pool while N is scanned
  const ring = opts.onSegment ? 3 : 2;
  const buffers: Buffer[] = [];
  const bufferFor = (i: number): Buffer => (buffers[i % ring] ??= Buffer.allocUnsafe(segmentSize));
  const mapped: Array<Promise<MappedFile> | undefined> = [];
  const sizes: number[] = [];
  const load = (i: number): void => {
    const f = files[i];
    const size = Math.min(f.size, segmentSize);
    if (useMap) {
      sizes[i] = size;
      const m = impl.mapFile!(f.path, size - (size % blockSize));
      m.catch(() => undefined); // awaited below; no unhandled rejection meanwhile
      mapped[i] = m;
    } else sizes[i] = readInto(f.path, bufferFor(i), size);
  };
  load(from);
  let prevVisit: { buf: Buffer; bufLsn: Lsn } | null = null;
  let carry = initial;
  for (let i = from; i < to; i++) {
    const f = files[i];
    const bufLsn = segmentStartLsn(f.segno, segmentSize);
    const got = sizes[i];
    const usable = got - (got % blockSize);
    const options: ScanOptions = {
      bufLsn,
      carry,
      mode: opts.mode,
      startLsn: carry === null ? opts.start : undefined,
      endLsn: opts.end,
    };
    let result: ScanResult;
    const view = useMap ? null : bufferFor(i).subarray(0, usable);
    if (useMap) {
      const map = await mapped[i]!;
      mapped[i] = undefined;
      if (i + 1 < to) load(i + 1);
      try {
        result = await impl.scanMapped!(map, options);
      } finally {
        map.release();
      }
    } else if (impl.scanWalAsync && i + 1 < to) {
      const pending = impl.scanWalAsync(view!, options);
      try {
        load(i + 1);
      } catch (e) {
        await pending.catch(() => undefined);
        throw e;
      }
      result = await pending;
    } else {
      result = impl.scanWal(view!, options);
      if (i + 1 < to) load(i + 1);
    }
    out.filesScanned++;
    out.bytesScanned += usable;
    carry = result.carry;
    out.carry = carry;
    if (result.count > 0) {
      out.first ??= result.firstRecordLsn;
      out.last = result.lastRecordLsn;
      out.count += result.count;
      addStats(out.stats, result.stats);
    }
    if (view) opts.onSegment?.({ file: f, buf: view, bufLsn, prev: prevVisit, result });
    progress(out.bytesScanned);
    if (view) prevVisit = { buf: view, bufLsn };

    if (result.end) {
      out.end = { lsn: result.end.lsn, reason: result.end.reason, message: result.end.message };
      break;
    }
    if (result.reachedEndLsn) {
      const endLsn = opts.end ?? carry.nextRecordLsn;
      out.end = { lsn: endLsn, reason: 'end-lsn-reached', message: `reached end LSN ${formatLsn(endLsn)}` };
      break;
    }
    if (got < segmentSize) {
      const at = carry.nextRecordLsn !== 0n ? carry.nextRecordLsn : bufLsn + BigInt(usable);
      out.end = { lsn: at, reason: 'truncated', message: `file ${f.name} ends after ${got} of ${segmentSize} bytes` };
      break;
    }
  }
  // drop mappings made ahead that were not used (an end was found)
  for (const m of mapped) m?.then((x) => x.release(), () => undefined);
  return out;
}

function setEnd(s: StreamScanSummary, lsn: Lsn, reason: StreamScanSummary['endReason'], message: string, files: SegmentFile[], segmentSize: number): void {
  s.endLsn = lsn;
  s.endReason = reason;
  s.endMessage = message;
  const segno = segmentOf(lsn, segmentSize);
  const file = files.find((f) => f.segno === segno);
  s.endFile = file?.path ?? null;
  s.endOffset = Number(lsn % BigInt(segmentSize));
}

function addStats(into: Float64Array, stats: Buffer): void {
  for (let i = 0; i < STATS_SLOTS; i++) {
    const at = i * STATS_ENTRY_SIZE;
    // u64 counts fit a double exactly up to 2^53; read as two u32 halves
    const count = stats.readUInt32LE(at) + stats.readUInt32LE(at + 4) * 2 ** 32;
    if (count === 0) continue;
    into[i * 3] += count;
    into[i * 3 + 1] += stats.readUInt32LE(at + 8) + stats.readUInt32LE(at + 12) * 2 ** 32;
    into[i * 3 + 2] += stats.readUInt32LE(at + 16) + stats.readUInt32LE(at + 20) * 2 ** 32;
  }
}
