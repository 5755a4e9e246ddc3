/**
 * The pure TypeScript twin of the native whole-buffer WAL scanner (contract: ./contract.ts).
 *
 * Mirrors PostgreSQL 15's xlogreader.c reading forward: every page header is validated before any
 * of its bytes are used (XLogReaderValidatePageHeader), a record length is trusted only after the
 * header checks (ValidXLogRecordHeader), continuation pages must carry XLP_FIRST_IS_CONTRECORD and an
 * exact xlp_rem_len, then the CRC (ValidXLogRecord), then the fragment layout (DecodeXLogRecord).
 * The first failed check is the end of valid WAL; nothing here throws on content.
 */
import { crc32cRange } from '../crc32c.js';
import { MAXALIGN, isValidSegmentSize } from '../lsn.js';
import { majorFromPageMagic } from '../versions.js';
import {
  RECORD_ENTRY_SIZE,
  STATS_ENTRY_SIZE,
  STATS_SLOTS,
  type EndReason,
  type ScanCarry,
  type ScanOptions,
  type ScanResult,
} from './contract.js';
import {
  MAX_RECORD_LENGTH,
  RM_MAX_BUILTIN_ID,
  RM_MIN_CUSTOM_ID,
  RM_XLOG_ID,
  SIZE_OF_XLOG_LONG_PHD,
  SIZE_OF_XLOG_RECORD,
  SIZE_OF_XLOG_SHORT_PHD,
  XLOG_SWITCH,
  XLP_ALL_FLAGS,
  XLP_FIRST_IS_CONTRECORD,
  XLP_FIRST_IS_OVERWRITE_CONTRECORD,
  XLP_LONG_HEADER,
  XLR_RMGR_INFO_MASK,
  XL_CRC_COVERED,
} from './constants.js';
import { checkRecordLayout } from './layout.js';

class EndOfWal {
  constructor(
    readonly reason: EndReason,
    readonly message: string,
  ) {}
}

const hex = (n: number, w = 4): string => n.toString(16).toUpperCase().padStart(w, '0');
const lsnText = (l: bigint): string => `${(l >> 32n).toString(16).toUpperCase()}/${(l & 0xffffffffn).toString(16).toUpperCase()}`;

/** Is `rmid` a valid resource manager id for this WAL format (ValidXLogRecordHeader)? */
export function isValidRmid(rmid: number, major: number): boolean {
  if (rmid <= RM_MAX_BUILTIN_ID) return true;
  return major >= 15 && rmid >= RM_MIN_CUSTOM_ID;
}

export function scanWal(buf: Uint8Array, options: ScanOptions): ScanResult {
  return new Scanner(buf, options).run();
}

class Scanner {
  private readonly dv: DataView;
  private readonly bufLsn: bigint;
  private readonly len: number;
  // stream identity
  private pageMagic: number;
  private major = 0;
  private systemId: bigint;
  private segmentSize: number;
  private blockSize: number;
  private lastPageTli: number;
  // record chain
  private prevRecordLsn: bigint;
  private randomAccess: boolean;
  /** offset (relative to bufLsn) of the next record start; -1 while still looking for the first one */
  private recPos: number;
  private findFirst: boolean;
  // partial record
  private partialChunks: Uint8Array[] = [];
  private partialLen = 0;
  private partialTotLen = 0;
  private partialLsn = 0n;
  private partialCrossesSegment = false;
  private partialActive = false;
  // output
  private readonly mode: 'records' | 'stats';
  private out: Buffer;
  private outDv: DataView;
  private count = 0;
  private readonly statsAcc = new Float64Array(STATS_SLOTS * 3);
  private firstRecordLsn = 0n;
  private lastRecordLsn = 0n;
  private lastRecordEndLsn = 0n;
  private readonly startLsn: bigint;
  private readonly endLsn: bigint;
  private reachedEndLsn = false;

  constructor(
    private readonly buf: Uint8Array,
    options: ScanOptions,
  ) {
    this.dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.bufLsn = options.bufLsn;
    this.len = buf.length;
    this.mode = options.mode;
    this.startLsn = options.startLsn ?? 0n;
    this.endLsn = options.endLsn ?? 0n;
    this.out = Buffer.alloc(this.mode === 'records' ? 4096 * RECORD_ENTRY_SIZE : 0);
    this.outDv = new DataView(this.out.buffer, this.out.byteOffset, this.out.byteLength);
    const c = options.carry;
    if (c) {
      if (c.nextPageLsn !== options.bufLsn) {
        throw new RangeError(`scanWal: buffer starts at ${lsnText(options.bufLsn)} but the carry expects ${lsnText(c.nextPageLsn)}`);
      }
      this.pageMagic = c.pageMagic;
      this.major = majorFromPageMagic(c.pageMagic) ?? 0;
      this.systemId = c.systemId;
      this.segmentSize = c.segmentSize;
      this.blockSize = c.blockSize;
      this.lastPageTli = c.lastPageTli;
      this.prevRecordLsn = c.prevRecordLsn;
      this.randomAccess = c.randomAccess;
      this.findFirst = c.pageMagic === 0 || c.nextRecordLsn === 0n;
      this.recPos = Number(c.nextRecordLsn - options.bufLsn);
      if (c.partial) {
        this.partialActive = true;
        this.partialChunks.push(c.partial);
        this.partialLen = c.partial.length;
        this.partialTotLen = c.partialTotLen;
        this.partialLsn = c.nextRecordLsn;
        this.partialCrossesSegment = c.partialCrossesSegment;
        this.recPos = 0;
      }
      if (this.blockSize > 0 && this.len % this.blockSize !== 0) {
        throw new RangeError(`scanWal: buffer length ${this.len} is not a multiple of the page size ${this.blockSize}`);
      }
    } else {
      this.pageMagic = 0;
      this.systemId = 0n;
      this.segmentSize = 0;
      this.blockSize = 0;
      this.lastPageTli = 0;
      this.prevRecordLsn = 0n;
      this.randomAccess = true;
      this.findFirst = true;
      this.recPos = 0;
    }
  }

  private lsnAt(off: number): bigint {
    return this.bufLsn + BigInt(off);
  }

  run(): ScanResult {
    let end: { lsn: bigint; reason: EndReason; message: string } | null = null;
    try {
      this.walk();
    } catch (e) {
      if (!(e instanceof EndOfWal)) throw e;
      const lsn = this.partialActive ? this.partialLsn : this.lsnAt(this.recPos);
      end = { lsn, reason: e.reason, message: e.message };
    }
    return this.result(end);
  }

  private walk(): void {
    let pageOff = 0;
    if (this.len === 0) return;
    if (!this.findFirst && !this.partialActive && this.recPos < 0) this.recPos = 0;
    while (pageOff < this.len) {
      // pages wholly before the next record (after an XLOG_SWITCH) are never read
      if (!this.findFirst && !this.partialActive && this.blockSize > 0 && this.recPos >= pageOff + this.blockSize) {
        pageOff += this.blockSize;
        continue;
      }
      if (this.findFirst && !this.partialActive) this.recPos = pageOff;
      const info = this.validatePage(pageOff);
      const hdr = info & XLP_LONG_HEADER ? SIZE_OF_XLOG_LONG_PHD : SIZE_OF_XLOG_SHORT_PHD;
      const bs = this.blockSize;
      const pageEnd = pageOff + bs;
      if (pageEnd > this.len) throw new RangeError(`scanWal: buffer length ${this.len} is not a multiple of the page size ${bs}`);

      if (this.findFirst) {
        // XLogFindNextRecord: skip the tail of a record continued from an earlier page
        if (info & XLP_FIRST_IS_CONTRECORD) {
          const rem = this.dv.getUint32(pageOff + 16, true);
          if (MAXALIGN(rem) >= bs - hdr) {
            pageOff += bs;
            continue;
          }
          this.recPos = pageOff + hdr + MAXALIGN(rem);
        } else {
          this.recPos = pageOff + hdr;
        }
        this.findFirst = false;
      } else if (this.partialActive) {
        if (info & XLP_FIRST_IS_OVERWRITE_CONTRECORD) {
          // an aborted record was overwritten: abandon it and restart at this page
          this.dropPartial();
          this.recPos = pageOff + hdr;
        } else {
          if (!(info & XLP_FIRST_IS_CONTRECORD)) {
            throw new EndOfWal('bad-contrecord', `there is no contrecord flag at ${lsnText(this.lsnAt(pageOff))}`);
          }
          const rem = this.dv.getUint32(pageOff + 16, true);
          const missing = this.partialTotLen - this.partialLen;
          if (rem === 0 || rem !== missing) {
            throw new EndOfWal(
              'bad-contrecord',
              `invalid contrecord length ${rem} (expected ${missing}) at ${lsnText(this.lsnAt(pageOff))}`,
            );
          }
          const take = Math.min(rem, bs - hdr);
          this.appendPartial(this.buf.subarray(pageOff + hdr, pageOff + hdr + take));
          if (this.partialLen >= SIZE_OF_XLOG_RECORD && !this.partialHeaderChecked) {
            this.checkPartialHeader();
          }
          if (take < rem) {
            pageOff += bs;
            this.markSegmentCrossing(pageOff);
            continue;
          }
          this.finishPartial(pageOff + hdr + MAXALIGN(rem));
          if (this.reachedEndLsn) return;
        }
      } else if (this.recPos === pageOff) {
        // a new record starts at the very beginning of this page: it follows the header
        if (info & XLP_FIRST_IS_CONTRECORD) {
          throw new EndOfWal('bad-contrecord', `contrecord is requested by ${lsnText(this.lsnAt(pageOff))}`);
        }
        this.recPos = pageOff + hdr;
      } else if (this.recPos < pageOff + hdr) {
        throw new EndOfWal('bad-record-header', `invalid record offset at ${lsnText(this.lsnAt(this.recPos))}`);
      }

      // records that start on this page
      while (this.recPos < pageEnd) {
        const recOff = this.recPos;
        const recLsn = this.lsnAt(recOff);
        if (this.endLsn !== 0n && recLsn >= this.endLsn) {
          this.reachedEndLsn = true;
          return;
        }
        const avail = pageEnd - recOff;
        const totLen = this.dv.getUint32(recOff, true);
        if (avail >= SIZE_OF_XLOG_RECORD) {
          this.checkRecordHeader(recOff, recLsn);
        } else {
          this.checkTotLen(totLen, recLsn);
        }
        if (totLen <= avail) {
          this.completeRecord(this.buf, this.dv, recOff, totLen, recLsn, 0);
          if (this.reachedEndLsn) return;
          continue;
        }
        // the record continues on the next page
        this.partialActive = true;
        this.partialChunks = [this.buf.subarray(recOff, pageEnd)];
        this.partialLen = avail;
        this.partialTotLen = totLen;
        this.partialLsn = recLsn;
        this.partialCrossesSegment = false;
        this.partialHeaderChecked = avail >= SIZE_OF_XLOG_RECORD;
        break;
      }
      pageOff += bs;
      this.markSegmentCrossing(pageOff);
    }
  }

  /** a partial record that reaches a segment start spans segments */
  private markSegmentCrossing(pageOff: number): void {
    if (this.partialActive && this.segmentSize > 0 && (this.bufLsn + BigInt(pageOff)) % BigInt(this.segmentSize) === 0n) {
      this.partialCrossesSegment = true;
    }
  }

  private partialHeaderChecked = false;

  private appendPartial(chunk: Uint8Array): void {
    this.partialChunks.push(chunk);
    this.partialLen += chunk.length;
  }

  private dropPartial(): void {
    this.partialActive = false;
    this.partialChunks = [];
    this.partialLen = 0;
    this.partialTotLen = 0;
    this.partialCrossesSegment = false;
    this.partialHeaderChecked = false;
  }

  private partialBytes(): Uint8Array {
    if (this.partialChunks.length === 1) return this.partialChunks[0];
    const joined = Buffer.concat(this.partialChunks, this.partialLen);
    this.partialChunks = [joined];
    return joined;
  }

  /** the 24-byte header became complete on a continuation page: run the checks skipped earlier */
  private checkPartialHeader(): void {
    const bytes = this.partialBytes();
    this.checkHeaderFields(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), 0, this.partialLsn);
    this.partialHeaderChecked = true;
  }

  private finishPartial(nextPos: number): void {
    const rec = this.partialBytes();
    const lsn = this.partialLsn;
    const flags = 1 | (this.partialCrossesSegment ? 2 : 0);
    // the record is complete; a failure below is reported at its start
    this.completeRecord(rec, new DataView(rec.buffer, rec.byteOffset, rec.byteLength), 0, rec.length, lsn, flags, nextPos);
    if (this.partialActive) this.dropPartial();
  }

  private checkTotLen(totLen: number, recLsn: bigint): void {
    if (totLen === 0) throw new EndOfWal('zeroed', `invalid record length at ${lsnText(recLsn)}: wanted 24, got 0`);
    if (totLen < SIZE_OF_XLOG_RECORD) {
      throw new EndOfWal('bad-record-header', `invalid record length at ${lsnText(recLsn)}: wanted 24, got ${totLen}`);
    }
    if (totLen > MAX_RECORD_LENGTH) {
      throw new EndOfWal('bad-record-header', `record length ${totLen} at ${lsnText(recLsn)} too long`);
    }
  }

  private checkRecordHeader(recOff: number, recLsn: bigint): void {
    this.checkHeaderFields(this.dv, recOff, recLsn);
  }

  /** ValidXLogRecordHeader */
  private checkHeaderFields(dv: DataView, off: number, recLsn: bigint): void {
    this.checkTotLen(dv.getUint32(off, true), recLsn);
    const rmid = dv.getUint8(off + 17);
    if (!isValidRmid(rmid, this.major)) {
      throw new EndOfWal('bad-record-header', `invalid resource manager ID ${rmid} at ${lsnText(recLsn)}`);
    }
    const prev = dv.getBigUint64(off + 8, true);
    if (this.randomAccess) {
      if (prev >= recLsn) {
        throw new EndOfWal('prev-mismatch', `record with incorrect prev-link ${lsnText(prev)} at ${lsnText(recLsn)}`);
      }
    } else if (prev !== this.prevRecordLsn) {
      throw new EndOfWal('prev-mismatch', `record with incorrect prev-link ${lsnText(prev)} at ${lsnText(recLsn)}`);
    }
  }

  /**
   * A whole record is in `rec` (header first, exactly xl_tot_len bytes, page headers stripped):
   * CRC, layout, then emit. `nextPos` is where the next record starts when the record spanned pages.
   */
  private completeRecord(src: Uint8Array, dv: DataView, off: number, totLen: number, recLsn: bigint, flags: number, nextPos?: number): void {
    const stored = dv.getUint32(off + 20, true);
    const computed = crc32cRange(src, off, off + XL_CRC_COVERED, crc32cRange(src, off + SIZE_OF_XLOG_RECORD, off + totLen));
    if (computed !== stored) {
      throw new EndOfWal(
        'crc-mismatch',
        `incorrect resource manager data checksum in record at ${lsnText(recLsn)}`,
      );
    }
    const layout = checkRecordLayout(src, this.major, this.blockSize, undefined, off, totLen);
    if (layout.error !== null) throw new EndOfWal('bad-record-body', `${layout.error} at ${lsnText(recLsn)}`);

    const xid = dv.getUint32(off + 4, true);
    const info = src[off + 16];
    const rmid = src[off + 17];
    const prev = this.mode === 'records' ? dv.getBigUint64(off + 8, true) : 0n;

    // the record is valid: it becomes the new chain link
    this.prevRecordLsn = recLsn;
    this.randomAccess = false;
    let next: number = nextPos ?? this.recPos + MAXALIGN(totLen);
    const isSwitch = rmid === RM_XLOG_ID && (info & XLR_RMGR_INFO_MASK) === XLOG_SWITCH;
    if (isSwitch) {
      // the rest of the segment is unused: continue at the next segment's start
      const segStart = recLsn - (recLsn % BigInt(this.segmentSize));
      next = Number(segStart + BigInt(this.segmentSize) - this.bufLsn);
    }
    this.recPos = next;
    if (this.partialActive) this.dropPartial();

    if (recLsn < this.startLsn) return; // validated, but before the requested range
    if (this.firstRecordLsn === 0n) this.firstRecordLsn = recLsn;
    this.lastRecordLsn = recLsn;
    this.lastRecordEndLsn = this.lsnAt(next);
    this.count++;
    const slot = rmid * 16 + (info >> 4);
    this.statsAcc[slot * 3] += 1;
    this.statsAcc[slot * 3 + 1] += totLen - layout.fpiLen;
    this.statsAcc[slot * 3 + 2] += layout.fpiLen;
    if (this.mode === 'records') this.emit(recLsn, prev, totLen, xid, layout.fpiLen, rmid, info, layout.blocks, flags);
  }

  private emit(lsn: bigint, prev: bigint, totLen: number, xid: number, fpiLen: number, rmid: number, info: number, blocks: number, flags: number): void {
    let at = (this.count - 1) * RECORD_ENTRY_SIZE;
    if (at + RECORD_ENTRY_SIZE > this.out.length) {
      const bigger = Buffer.alloc(this.out.length * 2);
      this.out.copy(bigger);
      this.out = bigger;
      this.outDv = new DataView(bigger.buffer, bigger.byteOffset, bigger.byteLength);
    }
    const dv = this.outDv;
    dv.setBigUint64(at, lsn, true);
    dv.setBigUint64(at + 8, prev, true);
    dv.setUint32(at + 16, totLen, true);
    dv.setUint32(at + 20, xid, true);
    dv.setUint32(at + 24, fpiLen, true);
    dv.setUint8(at + 28, rmid);
    dv.setUint8(at + 29, info);
    dv.setUint8(at + 30, blocks);
    dv.setUint8(at + 31, flags);
    at += RECORD_ENTRY_SIZE;
  }

  /** XLogReaderValidatePageHeader; returns xlp_info */
  private validatePage(pageOff: number): number {
    const dv = this.dv;
    const pageLsn = this.lsnAt(pageOff);
    if (pageOff + SIZE_OF_XLOG_SHORT_PHD > this.len) {
      throw new RangeError(`scanWal: buffer ends inside the page header at ${lsnText(pageLsn)}`);
    }
    const magic = dv.getUint16(pageOff, true);
    const info = dv.getUint16(pageOff + 2, true);
    const tli = dv.getUint32(pageOff + 4, true);
    const where = `at ${lsnText(pageLsn)}`;
    if (magic === 0) throw new EndOfWal('zeroed', `invalid magic number 0000 in WAL page ${where}`);
    if (this.pageMagic === 0) {
      // first page of a fresh scan defines the stream
      const major = majorFromPageMagic(magic);
      if (major === undefined) throw new EndOfWal('bad-magic', `invalid magic number ${hex(magic)} in WAL page ${where}`);
      if (!(info & XLP_LONG_HEADER) || pageOff + SIZE_OF_XLOG_LONG_PHD > this.len) {
        throw new EndOfWal('bad-page-header', `WAL scan must start at a page with a long header ${where}`);
      }
      const segSize = dv.getUint32(pageOff + 32, true);
      const blcksz = dv.getUint32(pageOff + 36, true);
      if (!isValidSegmentSize(segSize)) throw new EndOfWal('bad-page-header', `invalid WAL segment size ${segSize} in page header ${where}`);
      if (blcksz < 1024 || blcksz > 65536 || (blcksz & (blcksz - 1)) !== 0) {
        throw new EndOfWal('bad-page-header', `invalid XLOG_BLCKSZ ${blcksz} in page header ${where}`);
      }
      if (this.bufLsn % BigInt(blcksz) !== 0n || this.len % blcksz !== 0) {
        throw new RangeError(`scanWal: buffer at ${lsnText(this.bufLsn)} of ${this.len} bytes is not page aligned for ${blcksz}-byte pages`);
      }
      this.pageMagic = magic;
      this.major = major;
      this.segmentSize = segSize;
      this.blockSize = blcksz;
      this.systemId = dv.getBigUint64(pageOff + 24, true);
    }
    if (magic !== this.pageMagic) throw new EndOfWal('bad-magic', `invalid magic number ${hex(magic)} in WAL page ${where}`);
    if (info & ~XLP_ALL_FLAGS) throw new EndOfWal('bad-page-header', `invalid info bits ${hex(info)} in WAL page ${where}`);
    const segOffset = Number(pageLsn % BigInt(this.segmentSize));
    if (info & XLP_LONG_HEADER) {
      const sysid = dv.getBigUint64(pageOff + 24, true);
      if (this.systemId !== 0n && sysid !== this.systemId) {
        throw new EndOfWal('bad-page-header', `WAL file is from different database system: WAL file database system identifier is ${sysid}, expected ${this.systemId}`);
      }
      if (dv.getUint32(pageOff + 32, true) !== this.segmentSize) {
        throw new EndOfWal('bad-page-header', `WAL file is from different database system: incorrect segment size in page header ${where}`);
      }
      if (dv.getUint32(pageOff + 36, true) !== this.blockSize) {
        throw new EndOfWal('bad-page-header', `WAL file is from different database system: incorrect XLOG_BLCKSZ in page header ${where}`);
      }
    } else if (segOffset === 0) {
      throw new EndOfWal('bad-page-header', `invalid info bits ${hex(info)} in WAL segment start ${where}`);
    }
    const pageaddr = dv.getBigUint64(pageOff + 8, true);
    if (pageaddr !== pageLsn) {
      throw new EndOfWal('pageaddr-mismatch', `unexpected pageaddr ${lsnText(pageaddr)} in WAL page ${where}`);
    }
    if (tli < this.lastPageTli) {
      throw new EndOfWal('tli-out-of-sequence', `out-of-sequence timeline ID ${tli} (after ${this.lastPageTli}) in WAL page ${where}`);
    }
    this.lastPageTli = tli;
    return info;
  }

  private result(end: { lsn: bigint; reason: EndReason; message: string } | null): ScanResult {
    const stats = Buffer.alloc(STATS_SLOTS * STATS_ENTRY_SIZE);
    const acc = this.statsAcc;
    for (let i = 0; i < STATS_SLOTS; i++) {
      if (acc[i * 3] === 0) continue;
      stats.writeBigUInt64LE(BigInt(acc[i * 3]), i * 24);
      stats.writeBigUInt64LE(BigInt(acc[i * 3 + 1]), i * 24 + 8);
      stats.writeBigUInt64LE(BigInt(acc[i * 3 + 2]), i * 24 + 16);
    }
    const records = this.mode === 'records' ? this.out.subarray(0, this.count * RECORD_ENTRY_SIZE) : Buffer.alloc(0);
    const nextPageLsn = this.lsnAt(this.len);
    let partial: Uint8Array | null = null;
    if (this.partialActive && end === null) partial = Buffer.from(this.partialBytes()); // own the bytes past this call
    const carry: ScanCarry = {
      nextPageLsn,
      nextRecordLsn: this.partialActive ? this.partialLsn : this.findFirst ? 0n : this.lsnAt(this.recPos),
      prevRecordLsn: this.prevRecordLsn,
      lastPageTli: this.lastPageTli,
      pageMagic: this.pageMagic,
      systemId: this.systemId,
      segmentSize: this.segmentSize,
      blockSize: this.blockSize,
      partial,
      partialTotLen: partial ? this.partialTotLen : 0,
      randomAccess: this.randomAccess,
      partialCrossesSegment: partial ? this.partialCrossesSegment : false,
    };
    return {
      count: this.count,
      records,
      stats,
      end,
      reachedEndLsn: this.reachedEndLsn,
      carry,
      firstRecordLsn: this.firstRecordLsn,
      lastRecordLsn: this.lastRecordLsn,
      lastRecordEndLsn: this.lastRecordEndLsn,
    };
  }
}
