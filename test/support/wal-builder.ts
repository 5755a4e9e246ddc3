/**
 * Writes synthetic WAL the way XLogInsertRecord/CopyXLogRecordToWAL lay it out (page headers, long
 * header at segment start, continuation with xlp_rem_len, MAXALIGN, XLOG_SWITCH padding), so unit
 * tests can place records exactly where edge cases live (header split across pages, records spanning
 * segments, overwrite contrecords). Independent of the scanner under test; shares only CRC-32C.
 */
import { crc32c } from '../../src/formats/crc32c.js';

export interface BuilderOptions {
  segmentSize?: number;
  blockSize?: number;
  magic?: number;
  systemId?: bigint;
  tli?: number;
  /** first segment number */
  firstSegno?: bigint;
}

export interface RecordSpec {
  rmid?: number;
  info?: number;
  xid?: number;
  /** bytes after the 24-byte header (fragment headers + data) */
  body?: Uint8Array;
  /** override xl_prev */
  prev?: bigint;
  /** corrupt the CRC */
  badCrc?: boolean;
}

const MAXALIGN = (n: bigint): bigint => (n + 7n) & ~7n;

/** main data only: XLR_BLOCK_ID_DATA_SHORT/LONG + data */
export function mainData(len: number, fill = 0xab): Uint8Array {
  const data = new Uint8Array(len).fill(fill);
  if (len <= 255) return Uint8Array.from([0xff, len, ...data]);
  const h = Buffer.alloc(5);
  h[0] = 0xfe;
  h.writeUInt32LE(len, 1);
  return Buffer.concat([h, data]);
}

/** one block reference with a full-page image (no hole), block data and main data */
export function blockWithImage(blockSize: number, opts: { rel?: [number, number, number]; block?: number; dataLen?: number; mainLen?: number; major15?: boolean } = {}): Uint8Array {
  const [spc, db, rel] = opts.rel ?? [1663, 5, 16384];
  const dataLen = opts.dataLen ?? 0;
  const h = Buffer.alloc(4 + 5 + 12 + 4);
  h[0] = 0; // block id
  h[1] = 0x10 | (dataLen > 0 ? 0x20 : 0); // HAS_IMAGE (+HAS_DATA), main fork
  h.writeUInt16LE(dataLen, 2);
  h.writeUInt16LE(blockSize, 4); // bimg_len
  h.writeUInt16LE(0, 6); // hole_offset
  h[8] = (opts.major15 ?? true) ? 0x02 : 0x04; // APPLY
  h.writeUInt32LE(spc, 9);
  h.writeUInt32LE(db, 13);
  h.writeUInt32LE(rel, 17);
  h.writeUInt32LE(opts.block ?? 7, 21);
  const main = mainData(opts.mainLen ?? 3);
  const mainHdr = main.subarray(0, main[0] === 0xff ? 2 : 5);
  const mainBytes = main.subarray(mainHdr.length);
  return Buffer.concat([h, mainHdr, Buffer.alloc(blockSize, 0x5a), Buffer.alloc(dataLen, 0x33), mainBytes]);
}

export class WalBuilder {
  readonly segmentSize: number;
  readonly blockSize: number;
  readonly magic: number;
  readonly systemId: bigint;
  tli: number;
  readonly startLsn: bigint;
  private pos: bigint;
  private prevLsn = 0n;
  private readonly chunks = new Map<bigint, Buffer>(); // segno → bytes
  readonly lsns: bigint[] = [];
  /** pages whose header should get extra xlp_info bits, keyed by page LSN */
  readonly pageInfoExtra = new Map<bigint, number>();

  constructor(o: BuilderOptions = {}) {
    this.segmentSize = o.segmentSize ?? 1 << 20;
    this.blockSize = o.blockSize ?? 8192;
    this.magic = o.magic ?? 0xd110;
    this.systemId = o.systemId ?? 7000000000000000001n;
    this.tli = o.tli ?? 1;
    this.startLsn = (o.firstSegno ?? 1n) * BigInt(this.segmentSize);
    this.pos = this.startLsn;
  }

  get position(): bigint {
    return this.pos;
  }

  private seg(lsn: bigint): { buf: Buffer; off: number } {
    const segno = lsn / BigInt(this.segmentSize);
    let buf = this.chunks.get(segno);
    if (!buf) {
      buf = Buffer.alloc(this.segmentSize);
      this.chunks.set(segno, buf);
    }
    return { buf, off: Number(lsn % BigInt(this.segmentSize)) };
  }

  private writePageHeader(pageLsn: bigint, remLen: number): void {
    const { buf, off } = this.seg(pageLsn);
    const long = off === 0;
    let info = (long ? 0x0002 : 0) | 0x0004 | (remLen > 0 ? 0x0001 : 0);
    info |= this.pageInfoExtra.get(pageLsn) ?? 0;
    buf.writeUInt16LE(this.magic, off);
    buf.writeUInt16LE(info, off + 2);
    buf.writeUInt32LE(this.tli, off + 4);
    buf.writeBigUInt64LE(pageLsn, off + 8);
    buf.writeUInt32LE(remLen, off + 16);
    if (long) {
      buf.writeBigUInt64LE(this.systemId, off + 24);
      buf.writeUInt32LE(this.segmentSize, off + 32);
      buf.writeUInt32LE(this.blockSize, off + 36);
    }
  }

  private headerSize(lsn: bigint): number {
    return lsn % BigInt(this.segmentSize) === 0n ? 40 : 24;
  }

  private written = new Set<bigint>();
  private ensureHeader(pageLsn: bigint, remLen = 0): void {
    if (this.written.has(pageLsn)) return;
    this.written.add(pageLsn);
    this.writePageHeader(pageLsn, remLen);
  }

  /** Append a record; returns its LSN. */
  add(spec: RecordSpec = {}): bigint {
    const body = spec.body ?? mainData(8);
    const totLen = 24 + body.length;
    const rec = Buffer.alloc(totLen);
    rec.writeUInt32LE(totLen, 0);
    rec.writeUInt32LE(spec.xid ?? 0, 4);
    rec.writeBigUInt64LE(spec.prev ?? this.prevLsn, 8);
    rec[16] = spec.info ?? 0;
    rec[17] = spec.rmid ?? 21;
    rec.set(body, 24);
    let crc = crc32c(rec.subarray(0, 20), crc32c(rec.subarray(24)));
    if (spec.badCrc) crc ^= 1;
    rec.writeUInt32LE(crc, 20);

    const bs = BigInt(this.blockSize);
    // records start after a page header when at a page boundary
    if (this.pos % bs === 0n) {
      this.ensureHeader(this.pos);
      this.pos += BigInt(this.headerSize(this.pos));
    } else this.ensureHeader(this.pos - (this.pos % bs));
    const lsn = this.pos;
    let done = 0;
    let p = this.pos;
    while (done < totLen) {
      if (p % bs === 0n) {
        this.ensureHeader(p, totLen - done);
        p += BigInt(this.headerSize(p));
      }
      const pageEnd = p - (p % bs) + bs;
      const take = Math.min(totLen - done, Number(pageEnd - p));
      const { buf, off } = this.seg(p);
      rec.copy(buf, off, done, done + take);
      done += take;
      p += BigInt(take);
    }
    this.prevLsn = lsn;
    this.lsns.push(lsn);
    const isSwitch = (spec.rmid ?? 21) === 0 && ((spec.info ?? 0) & 0xf0) === 0x40;
    if (isSwitch) {
      const seg = BigInt(this.segmentSize);
      this.pos = lsn - (lsn % seg) + seg;
    } else this.pos = MAXALIGN(p);
    return lsn;
  }

  /** Fill with small records until the next record would start at page offset `offset` of some page. */
  fillUntilPageOffset(offset: number): void {
    const bs = BigInt(this.blockSize);
    for (let guard = 0; guard < 100000; guard++) {
      const inPage = Number(this.pos % bs);
      if (inPage === offset) return;
      const gap = (offset - inPage + this.blockSize) % this.blockSize;
      // a record of total length L advances by MAXALIGN(L); minimum 24+2
      if (gap >= 32 && gap <= 24 + 2 + 255) {
        this.add({ body: mainData(gap - 24 - 2) });
        if (Number(this.pos % bs) === offset) return;
      } else this.add({ body: mainData(6) });
    }
    throw new Error('fillUntilPageOffset did not converge');
  }

  /** Whole segments from the first to the one holding the current position. */
  build(): Buffer {
    const segs = [...this.chunks.keys()].sort((a, b) => (a < b ? -1 : 1));
    const first = segs[0] ?? this.startLsn / BigInt(this.segmentSize);
    const last = segs[segs.length - 1] ?? first;
    const parts: Buffer[] = [];
    for (let s = first; s <= last; s++) parts.push(this.chunks.get(s) ?? Buffer.alloc(this.segmentSize));
    return Buffer.concat(parts);
  }
}
