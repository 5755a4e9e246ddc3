import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  formatLsn,
  formatLsnPadded,
  parseLsn,
  parseSegmentName,
  parseWalFileName,
  segmentOf,
  walFileName,
  walFileNameForLsn,
} from '../../src/formats/lsn.js';
import { LsnFormatError } from '../../src/formats/errors.js';

describe('LSN text', () => {
  it('parses and formats like pg_lsn', () => {
    expect(parseLsn('0/15007F0')).toBe(0x15007f0n);
    expect(parseLsn('16/B374D848')).toBe((0x16n << 32n) | 0xb374d848n);
    expect(formatLsn(0x15007f0n)).toBe('0/15007F0');
    expect(formatLsnPadded(0x15007f0n)).toBe('0/015007F0');
    expect(formatLsn((0xffffffffn << 32n) | 0xffffffffn)).toBe('FFFFFFFF/FFFFFFFF');
  });
  it('rejects malformed text with a typed error', () => {
    for (const bad of ['', '0', '0/', '/1', '0/123456789', 'G/0', '0/1/2', '-1/0', '0x1/0']) {
      expect(() => parseLsn(bad), bad).toThrow(LsnFormatError);
    }
  });
  it('round-trips every 64-bit value', () => {
    fc.assert(fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (v) => parseLsn(formatLsn(v)) === v && parseLsn(formatLsnPadded(v)) === v));
  });
});

describe('WAL file names', () => {
  // examples from pg-formats.md §1.11 (LSN 1/A0000000, TLI 1)
  it('names segments for every segment size', () => {
    const lsn = parseLsn('1/A0000000');
    expect(walFileNameForLsn(1, lsn, 16 << 20)).toBe('0000000100000001000000A0');
    expect(walFileNameForLsn(1, lsn, 64 << 20)).toBe('000000010000000100000028');
    expect(walFileNameForLsn(1, lsn, 1 << 30)).toBe('000000010000000100000002');
    expect(walFileNameForLsn(1, lsn, 1 << 20)).toBe('000000010000000100000A00');
  });
  it('parses names back to (tli, segno) for all sizes', () => {
    fc.assert(
      fc.property(fc.integer({ min: 20, max: 30 }), fc.integer({ min: 1, max: 0xffffffff }), fc.bigInt({ min: 0n, max: (1n << 40n) - 1n }), (bits, tli, seg) => {
        const size = 1 << bits;
        const segno = seg % ((1n << 64n) / BigInt(size));
        const name = walFileName(tli, segno, size);
        const back = parseSegmentName(name, size);
        return back.tli === tli && back.segno === segno && segmentOf(segno * BigInt(size), size) === segno;
      }),
    );
  });
  it('classifies partial, history and backup files, and refuses everything else', () => {
    expect(parseWalFileName('000000010000000000000004.partial', 16 << 20)).toMatchObject({ kind: 'partial', tli: 1, segno: 4n });
    expect(parseWalFileName('00000002.history')).toMatchObject({ kind: 'history', tli: 2 });
    expect(parseWalFileName('000000010000000000000003.00000028.backup', 16 << 20)).toMatchObject({ kind: 'backup', tli: 1, segno: 3n, backupOffset: 0x28 });
    for (const bad of ['00000001.history', '../000000010000000000000001', '000000010000000000000001/x', '0000000100000000000001', 'archive_status', '00000000000000000000000A', '0000000100000000000001FF']) {
      expect(parseWalFileName(bad, 1 << 24), bad).toBeNull();
    }
  });
  it('refuses segment sizes outside 1 MiB..1 GiB or not a power of two', () => {
    expect(() => walFileName(1, 1n, 1 << 19)).toThrow(RangeError);
    expect(() => walFileName(1, 1n, 3 << 20)).toThrow(RangeError);
    expect(() => walFileName(1, 1n, 2 ** 31)).toThrow(RangeError);
  });
});
