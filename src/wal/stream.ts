/**
 * Reads a sequence of WAL segment files as one stream and scans it with the native addon (or its
 * TypeScript twin): one scanWal call per segment, the carry passed from one to the next so records
 * spanning segments are checked like any other. With the native addon the scan of segment N runs on
 * the libuv pool while the main thread reads segment N+1 into the other buffer, so both cores work.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { WalFormatError } from '../formats/errors.js';
import { formatLsn, segmentOf, segmentStartLsn, type Lsn } from '../formats/lsn.js';
import { majorFromPageMagic, type PgMajor } from '../formats/versions.js';
import {
  STATS_ENTRY_SIZE,
  STATS_SLOTS,
  type EndReason,
  type ScanCarry,
  type ScanOptions,
  type ScanResult,
} from '../native/contract.js';
import type { MappedFile } from '../native/index.js';
import type { SegmentFile } from './segments.js';

export interface ScanImplementation {
  scanWal(buf: Uint8Array, options: ScanOptions): ScanResult;
  scanWalAsync?(buf: Uint8Array, options: ScanOptions): Promise<ScanResult>;
  /** map files instead of reading them (native addon; used when no visitor needs the bytes) */
  mapFile?(path: string, length: number): Promise<MappedFile>;
  scanMapped?(map: MappedFile, options: ScanOptions): Promise<ScanResult>;
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
        expected: 'XLOG_PAGE_MAGIC of PG 12-17 (0xD101 ... 0xD116)',
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

export async function scanWalStream(opts: StreamScanOptions): Promise<StreamScanSummary> {
  const { files, segmentSize, impl } = opts;
  const ring = opts.onSegment ? 3 : 2;
  const buffers: Buffer[] = [];
  const bufferFor = (i: number): Buffer => {
    const k = i % ring;
    if (!buffers[k]) buffers[k] = Buffer.allocUnsafe(segmentSize);
    return buffers[k];
  };
  const stats = new Float64Array(STATS_SLOTS * 3);
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
    stats,
    filesScanned: 0,
    bytesScanned: 0,
  };
  if (files.length === 0) return summary;

  let carry: ScanCarry | null = null;
  let startIndex = 0;
  if (opts.start !== undefined) {
    const startSeg = segmentOf(opts.start, segmentSize);
    startIndex = files.findIndex((f) => f.segno === startSeg);
    if (startIndex < 0) {
      throw new WalFormatError(`no WAL segment file for start LSN ${formatLsn(opts.start)}`, { expected: `segment ${startSeg}` });
    }
  }

  for (const f of files) {
    if (f.size > segmentSize) {
      throw new WalFormatError('WAL file is larger than the segment size', { file: f.path, offset: segmentSize, expected: `${segmentSize} bytes`, got: `${f.size} bytes` });
    }
  }
  // mapping (native, stats only): map segment N+1 on the pool while N is scanned; else read
  // segment N+1 into the other buffer on this thread while N is scanned on the pool
  const mapFile = impl.mapFile;
  const scanMapped = impl.scanMapped;
  const useMap = mapFile !== undefined && scanMapped !== undefined && !opts.onSegment;
  const pageSizeOf = (i: number): number => {
    if (files[i].size < PAGE_PROBE) return 8192;
    const bs = probeSegmentHeader(files[startIndex].path).blockSize;
    return bs >= 1024 && bs <= 65536 && (bs & (bs - 1)) === 0 ? bs : 8192;
  };
  const mapBlockSize = useMap ? pageSizeOf(startIndex) : 0;
  const mapped: Array<Promise<MappedFile> | undefined> = [];
  const sizes: number[] = [];
  const load = (i: number): void => {
    const f = files[i];
    if (useMap) {
      const usable = Math.min(f.size, segmentSize);
      sizes[i] = usable;
      mapped[i] = mapFile(f.path, usable - (usable % mapBlockSize));
      mapped[i]!.catch(() => undefined); // awaited below; avoid an unhandled rejection meanwhile
    } else sizes[i] = readInto(f.path, bufferFor(i), Math.min(f.size, segmentSize));
  };
  load(startIndex);
  let blockSize = useMap ? mapBlockSize : 0;
  let prevVisit: { buf: Buffer; bufLsn: Lsn } | null = null;
  let finished = false;
  for (let i = startIndex; i < files.length && !finished; i++) {
    const f = files[i];
    const bufLsn = segmentStartLsn(f.segno, segmentSize);
    const got = sizes[i];
    if (blockSize === 0) blockSize = got >= PAGE_PROBE ? bufferFor(i).readUInt32LE(36) : 8192;
    if (blockSize < 1024 || blockSize > 65536 || (blockSize & (blockSize - 1)) !== 0) blockSize = 8192;
    const usable = got - (got % blockSize);
    const view = useMap ? Buffer.alloc(0) : bufferFor(i).subarray(0, usable);
    const options: ScanOptions = {
      bufLsn,
      carry,
      mode: opts.mode,
      startLsn: carry === null ? opts.start : undefined,
      endLsn: opts.end,
    };
    let result: ScanResult;
    if (useMap) {
      const map = await mapped[i]!;
      mapped[i] = undefined;
      if (i + 1 < files.length) load(i + 1);
      try {
        result = await scanMapped(map, options);
      } finally {
        map.release();
      }
    } else if (impl.scanWalAsync && i + 1 < files.length) {
      const pending = impl.scanWalAsync(view, options);
      try {
        load(i + 1);
      } catch (e) {
        await pending.catch(() => undefined);
        throw e;
      }
      result = await pending;
    } else {
      result = impl.scanWal(view, options);
      if (i + 1 < files.length) load(i + 1);
    }
    summary.filesScanned++;
    summary.bytesScanned += usable;
    carry = result.carry;
    if (summary.pageMagic === 0 && carry.pageMagic !== 0) {
      summary.pageMagic = carry.pageMagic;
      summary.pgVersion = majorFromPageMagic(carry.pageMagic) ?? null;
      summary.systemId = carry.systemId;
      summary.blockSize = carry.blockSize;
    }
    if (result.count > 0) {
      if (summary.firstRecordLsn === null) summary.firstRecordLsn = result.firstRecordLsn;
      summary.lastRecordLsn = result.lastRecordLsn;
      summary.count += result.count;
      addStats(stats, result.stats);
    }
    opts.onSegment?.({ file: f, buf: view as Buffer, bufLsn, prev: prevVisit, result });
    opts.onProgress?.(i - startIndex + 1, files.length - startIndex, summary.bytesScanned);
    prevVisit = { buf: view as Buffer, bufLsn };

    const fileEndLsn = bufLsn + BigInt(usable);
    if (result.end) {
      setEnd(summary, result.end.lsn, result.end.reason, result.end.message, files, segmentSize);
      finished = true;
    } else if (result.reachedEndLsn) {
      const endLsn = opts.end ?? carry.nextRecordLsn;
      setEnd(summary, endLsn, 'end-lsn-reached', `reached end LSN ${formatLsn(endLsn)}`, files, segmentSize);
      finished = true;
    } else if (got < segmentSize) {
      const at = carry.nextRecordLsn !== 0n ? carry.nextRecordLsn : fileEndLsn;
      setEnd(summary, at, 'truncated', `file ${f.name} ends after ${got} of ${segmentSize} bytes`, files, segmentSize);
      finished = true;
    } else if (i + 1 === files.length) {
      const at = carry.nextRecordLsn !== 0n ? carry.nextRecordLsn : fileEndLsn;
      setEnd(summary, at, 'end-of-files', `no WAL file after ${f.name}`, files, segmentSize);
      finished = true;
    }
  }
  return summary;
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
