/**
 * PostgreSQL's CRC-32C (Castagnoli, reflected polynomial 0x82F63B78, init and final xor 0xFFFFFFFF)
 * in pure TypeScript, slicing-by-8. This is the fallback twin of the native addon's crc32c.
 *
 * `init` is a previous *finalized* result to continue from, so
 * crc32c(b, crc32c(a)) === crc32c(a ++ b). PostgreSQL's WAL record CRC is therefore
 * crc32c(header[0..20), crc32c(record[24..tot_len))).
 */
const TABLES: Uint32Array = (() => {
  const t = new Uint32Array(8 * 256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  for (let i = 0; i < 256; i++) {
    let c = t[i];
    for (let s = 1; s < 8; s++) {
      c = (t[c & 0xff] ^ (c >>> 8)) >>> 0;
      t[s * 256 + i] = c;
    }
  }
  return t;
})();

export function crc32c(data: Uint8Array, init = 0): number {
  return crc32cRange(data, 0, data.length, init);
}

/** crc32c over data[start, end) without creating a view (hot path of the scanner). */
export function crc32cRange(data: Uint8Array, start: number, end: number, init = 0): number {
  const t = TABLES;
  let crc = ~init >>> 0;
  let i = start;
  const n = end;
  // align to 4 bytes of the underlying buffer so the Uint32Array fast path can be used
  while (i < n && ((data.byteOffset + i) & 3) !== 0) crc = t[(crc ^ data[i++]) & 0xff] ^ (crc >>> 8);
  const words = (n - i) >>> 3;
  if (words > 0) {
    const w = words > 16 ? new Uint32Array(data.buffer, data.byteOffset + i, words * 2) : null;
    if (w === null) {
      for (const stop = i + words * 8; i < stop; ) crc = t[(crc ^ data[i++]) & 0xff] ^ (crc >>> 8);
      while (i < n) crc = t[(crc ^ data[i++]) & 0xff] ^ (crc >>> 8);
      return ~crc >>> 0;
    }
    for (let j = 0; j < w.length; j += 2) {
      const a = w[j] ^ crc;
      const b = w[j + 1];
      crc =
        t[1792 + (a & 0xff)] ^
        t[1536 + ((a >>> 8) & 0xff)] ^
        t[1280 + ((a >>> 16) & 0xff)] ^
        t[1024 + (a >>> 24)] ^
        t[768 + (b & 0xff)] ^
        t[512 + ((b >>> 8) & 0xff)] ^
        t[256 + ((b >>> 16) & 0xff)] ^
        t[b >>> 24];
    }
    i += words * 8;
  }
  while (i < n) crc = t[(crc ^ data[i++]) & 0xff] ^ (crc >>> 8);
  return ~crc >>> 0;
}
