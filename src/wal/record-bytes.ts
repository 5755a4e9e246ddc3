/**
 * Reassemble one record's logical bytes (page headers stripped) from segment buffers already in
 * memory, for decoding the records a scan reported. The scan has validated everything; this only
 * copies bytes.
 */
import { XLP_LONG_HEADER } from '../formats/wal/constants.js';
import type { Lsn } from '../formats/lsn.js';

export interface BufferedRange {
  buf: Uint8Array;
  bufLsn: Lsn;
}

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
