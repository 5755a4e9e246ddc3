/**
 * The record accessor over the scanners' packed entries: every field read where contract.ts puts it,
 * and an index outside the scanned entries refused rather than read as garbage.
 */
import { describe, expect, it } from 'vitest';
import { RECORD_ENTRY_SIZE } from '../../src/formats/wal/contract.js';
import { recordEntries, recordEntry } from '../../src/formats/wal/record.js';

function packed(entries: Array<{ lsn: bigint; prev: bigint; totLen: number; xid: number; fpiLen: number; rmid: number; info: number; blocks: number; flags: number }>): Buffer {
  const b = Buffer.alloc(entries.length * RECORD_ENTRY_SIZE);
  entries.forEach((e, i) => {
    const at = i * RECORD_ENTRY_SIZE;
    b.writeBigUInt64LE(e.lsn, at);
    b.writeBigUInt64LE(e.prev, at + 8);
    b.writeUInt32LE(e.totLen, at + 16);
    b.writeUInt32LE(e.xid, at + 20);
    b.writeUInt32LE(e.fpiLen, at + 24);
    b[at + 28] = e.rmid;
    b[at + 29] = e.info;
    b[at + 30] = e.blocks;
    b[at + 31] = e.flags;
  });
  return b;
}

describe('recordEntry', () => {
  const raw = [
    { lsn: 0x1_0000_0028n, prev: 0x0_ffff_ff00n, totLen: 114, xid: 4_000_000_000, fpiLen: 0, rmid: 10, info: 0x80, blocks: 1, flags: 1 },
    { lsn: 0x1_0000_00a0n, prev: 0x1_0000_0028n, totLen: 8_300, xid: 0, fpiLen: 8_192, rmid: 0, info: 0x10, blocks: 0, flags: 2 },
  ];
  const buf = packed(raw);

  it('reads every field at the offsets of the scan contract', () => {
    const got = [...recordEntries({ records: buf, count: 2 })];
    expect(got).toEqual(
      raw.map(({ flags, ...e }) => ({ ...e, spansPages: (flags & 1) !== 0, spansSegments: (flags & 2) !== 0 })),
    );
  });

  it('reads entries of a buffer that is a view into a larger one', () => {
    const outer = Buffer.concat([Buffer.alloc(7, 0xff), buf]);
    expect(recordEntry(outer.subarray(7), 1).lsn).toBe(0x1_0000_00a0n);
  });

  it('refuses an index outside the scanned entries', () => {
    expect(() => recordEntry(buf, 2)).toThrow(/record entry 2 is outside the 2 entries/);
    expect(() => recordEntry(buf, -1)).toThrow(RangeError);
  });
});
