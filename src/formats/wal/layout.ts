import {
  BKPBLOCK_FORK_MASK,
  BKPBLOCK_WILL_INIT,
  BKPIMAGE_APPLY,
  BKPIMAGE_APPLY_V14,
  BKPBLOCK_HAS_DATA,
  BKPBLOCK_HAS_IMAGE,
  BKPBLOCK_SAME_REL,
  BKPIMAGE_COMPRESS_LZ4,
  BKPIMAGE_COMPRESS_PGLZ,
  BKPIMAGE_COMPRESS_ZSTD,
  BKPIMAGE_HAS_HOLE,
  BKPIMAGE_IS_COMPRESSED_V14,
  SIZE_OF_XLOG_RECORD,
  XLR_BLOCK_ID_DATA_LONG,
  XLR_BLOCK_ID_DATA_SHORT,
  XLR_BLOCK_ID_ORIGIN,
  XLR_BLOCK_ID_TOPLEVEL_XID,
  XLR_MAX_BLOCK_ID,
} from './constants.js';

/** Is this bimg_info a compressed image, for the WAL format of `major`? */
export function isCompressedImage(bimgInfo: number, major: number): boolean {
  return major >= 15
    ? (bimgInfo & (BKPIMAGE_COMPRESS_PGLZ | BKPIMAGE_COMPRESS_LZ4 | BKPIMAGE_COMPRESS_ZSTD)) !== 0
    : (bimgInfo & BKPIMAGE_IS_COMPRESSED_V14) !== 0;
}

/** One block reference of a record, as decoded (for display; the scanner passes no sink). */
export interface BlockRef {
  id: number;
  forkNumber: number;
  /** tablespace / database / relfilenode (RelFileNode ≤15, RelFileLocator 16+) */
  spcNode: number;
  dbNode: number;
  relNode: number;
  block: number;
  willInit: boolean;
  dataLength: number;
  image?: {
    length: number;
    holeOffset: number;
    holeLength: number;
    apply: boolean;
    compression: 'none' | 'pglz' | 'lz4' | 'zstd';
  };
}

/** Everything DecodeXLogRecord extracts besides the data itself. */
export interface DecodedFragments {
  blocks: BlockRef[];
  origin?: number;
  toplevelXid?: number;
  mainDataLength: number;
  /** offset of the main data within the record */
  mainDataOffset: number;
}

/** Outcome of checking a reassembled record's fragment headers (DecodeXLogRecord's checks). */
export interface RecordLayout {
  /** null when the layout is valid, else the reason (xlogreader's wording) */
  error: string | null;
  blocks: number;
  /** Σ bimg_len */
  fpiLen: number;
}

/**
 * Walk the fragment headers of a complete record (`rec` starts at the XLogRecord header and is
 * exactly xl_tot_len bytes) with DecodeXLogRecord's bounds and consistency checks, without
 * materialising anything. Used by the scanner on every record.
 */
export function checkRecordLayout(
  rec: Uint8Array,
  major: number,
  blockSize: number,
  sink?: DecodedFragments,
  /** the record's offset in `rec` and its length (default: all of `rec`) */
  base = 0,
  totLen = rec.length - base,
): RecordLayout {
  let remaining = totLen - SIZE_OF_XLOG_RECORD;
  let datatotal = 0;
  let p = base + SIZE_OF_XLOG_RECORD;
  let maxBlockId = -1;
  let haveRel = false;
  let blocks = 0;
  let fpiLen = 0;
  const fail = (error: string): RecordLayout => ({ error, blocks, fpiLen });
  const short = (): RecordLayout => fail('record with invalid length');
  const u16 = (): number => rec[p] | (rec[p + 1] << 8);
  const u32 = (at: number): number => (rec[at] | (rec[at + 1] << 8) | (rec[at + 2] << 16) | (rec[at + 3] << 24)) >>> 0;
  let rel = { spc: 0, db: 0, rel: 0 };
  let mainDataLength = 0;

  while (remaining > datatotal) {
    if (remaining < 1) return short();
    const id = rec[p];
    p += 1;
    remaining -= 1;
    if (id === XLR_BLOCK_ID_DATA_SHORT) {
      if (remaining < 1) return short();
      mainDataLength = rec[p];
      datatotal += mainDataLength;
      p += 1;
      remaining -= 1;
      break;
    } else if (id === XLR_BLOCK_ID_DATA_LONG) {
      if (remaining < 4) return short();
      mainDataLength = u32(p);
      datatotal += mainDataLength;
      p += 4;
      remaining -= 4;
      break;
    } else if (id === XLR_BLOCK_ID_ORIGIN) {
      if (remaining < 2) return short();
      if (sink) sink.origin = u16();
      p += 2;
      remaining -= 2;
    } else if (id === XLR_BLOCK_ID_TOPLEVEL_XID && major >= 14) {
      if (remaining < 4) return short();
      if (sink) sink.toplevelXid = u32(p);
      p += 4;
      remaining -= 4;
    } else if (id <= XLR_MAX_BLOCK_ID) {
      if (id <= maxBlockId) return fail(`out-of-order block_id ${id}`);
      maxBlockId = id;
      blocks++;
      if (remaining < 3) return short();
      const forkFlags = rec[p];
      p += 1;
      const dataLen = u16();
      p += 2;
      remaining -= 3;
      const hasData = (forkFlags & BKPBLOCK_HAS_DATA) !== 0;
      let image: BlockRef['image'];
      if (hasData && dataLen === 0) return fail('BKPBLOCK_HAS_DATA set, but no data included');
      if (!hasData && dataLen !== 0) return fail(`BKPBLOCK_HAS_DATA not set, but data length is ${dataLen}`);
      datatotal += dataLen;
      if (forkFlags & BKPBLOCK_HAS_IMAGE) {
        if (remaining < 5) return short();
        const bimgLen = u16();
        p += 2;
        const holeOffset = u16();
        p += 2;
        const bimgInfo = rec[p];
        p += 1;
        remaining -= 5;
        const compressed = isCompressedImage(bimgInfo, major);
        const hasHole = (bimgInfo & BKPIMAGE_HAS_HOLE) !== 0;
        let holeLength: number;
        if (compressed) {
          if (hasHole) {
            if (remaining < 2) return short();
            holeLength = u16();
            p += 2;
            remaining -= 2;
          } else holeLength = 0;
        } else holeLength = blockSize - bimgLen;
        datatotal += bimgLen;
        fpiLen += bimgLen;
        if (sink) {
          image = {
            length: bimgLen,
            holeOffset,
            holeLength,
            apply: (bimgInfo & (major >= 15 ? BKPIMAGE_APPLY : BKPIMAGE_APPLY_V14)) !== 0,
            compression: !compressed
              ? 'none'
              : major < 15 || bimgInfo & BKPIMAGE_COMPRESS_PGLZ
                ? 'pglz'
                : bimgInfo & BKPIMAGE_COMPRESS_LZ4
                  ? 'lz4'
                  : 'zstd',
          };
        }
        if (hasHole && (holeOffset === 0 || holeLength === 0 || bimgLen === blockSize)) {
          return fail(`BKPIMAGE_HAS_HOLE set, but hole offset ${holeOffset} length ${holeLength} block image length ${bimgLen}`);
        }
        if (!hasHole && (holeOffset !== 0 || holeLength !== 0)) {
          return fail(`BKPIMAGE_HAS_HOLE not set, but hole offset ${holeOffset} length ${holeLength}`);
        }
        if (compressed && bimgLen === blockSize) return fail(`BKPIMAGE_COMPRESSED set, but block image length ${bimgLen}`);
        if (!hasHole && !compressed && bimgLen !== blockSize) {
          return fail(`neither BKPIMAGE_HAS_HOLE nor BKPIMAGE_COMPRESSED set, but block image length is ${bimgLen}`);
        }
      }
      if (!(forkFlags & BKPBLOCK_SAME_REL)) {
        if (remaining < 12) return short();
        rel = { spc: u32(p), db: u32(p + 4), rel: u32(p + 8) };
        p += 12;
        remaining -= 12;
        haveRel = true;
      } else if (!haveRel) {
        return fail('BKPBLOCK_SAME_REL set but no previous rel');
      }
      if (remaining < 4) return short();
      if (sink) {
        sink.blocks.push({
          id,
          forkNumber: forkFlags & BKPBLOCK_FORK_MASK,
          spcNode: rel.spc,
          dbNode: rel.db,
          relNode: rel.rel,
          block: u32(p),
          willInit: (forkFlags & BKPBLOCK_WILL_INIT) !== 0,
          dataLength: dataLen,
          image,
        });
      }
      p += 4;
      remaining -= 4;
    } else {
      return fail(`invalid block_id ${id}`);
    }
  }
  if (remaining !== datatotal) return short();
  if (sink) {
    sink.mainDataLength = mainDataLength;
    sink.mainDataOffset = totLen - mainDataLength;
  }
  return { error: null, blocks, fpiLen };
}
