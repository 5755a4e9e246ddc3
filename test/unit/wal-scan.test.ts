import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { crc32c } from '../../src/formats/crc32c.js';
import { scanWal } from '../../src/formats/wal/scan.js';
import { RECORD_ENTRY_SIZE, type ScanCarry, type ScanResult } from '../../src/formats/wal/contract.js';
import { blockWithImage, mainData, WalBuilder } from '../support/wal-builder.js';

const SEG = 1 << 20;

function lsnsOf(r: ScanResult): bigint[] {
  const out: bigint[] = [];
  for (let i = 0; i < r.count; i++) out.push(r.records.readBigUInt64LE(i * RECORD_ENTRY_SIZE));
  return out;
}

/** scan in chunks of `pages` pages, carrying state, and concatenate what comes out */
function scanChunked(buf: Buffer, bufLsn: bigint, pages: number): { lsns: bigint[]; end: ScanResult['end']; carry: ScanCarry | null } {
  let carry: ScanCarry | null = null;
  const lsns: bigint[] = [];
  for (let off = 0; off < buf.length; off += pages * 8192) {
    const r = scanWal(buf.subarray(off, Math.min(buf.length, off + pages * 8192)), { bufLsn: bufLsn + BigInt(off), carry, mode: 'records' });
    lsns.push(...lsnsOf(r));
    if (r.end) return { lsns, end: r.end, carry: null };
    carry = r.carry;
  }
  return { lsns, end: null, carry };
}

describe('WAL scanner (TypeScript twin) on synthetic WAL', () => {
  it('reads records, spanning pages and segments, and ends at the zero tail', () => {
    const b = new WalBuilder();
    for (let i = 0; i < 50; i++) b.add({ body: mainData(100 + i) });
    b.add({ body: blockWithImage(8192) }); // spans a page
    b.add({ body: mainData(30000) }); // spans several pages
    while (b.position < BigInt(SEG) * 2n - 5000n) b.add({ body: mainData(200) });
    b.add({ body: mainData(20000) }); // spans the segment boundary
    b.add({ body: mainData(10) });
    const wal = b.build();
    const r = scanWal(wal, { bufLsn: b.startLsn, carry: null, mode: 'records' });
    expect(lsnsOf(r)).toEqual(b.lsns);
    expect(r.end?.reason).toBe('zeroed');
    expect(r.end?.lsn).toBe(b.position);
    // the segment-spanning record is flagged
    const i = b.lsns.length - 2;
    expect(r.records[i * RECORD_ENTRY_SIZE + 31] & 3).toBe(3);
    // FPI bytes are accounted
    const fpi = b.lsns.indexOf(b.lsns[50]);
    expect(r.records.readUInt32LE(fpi * RECORD_ENTRY_SIZE + 24)).toBe(8192);
  });

  it('gives identical results for any chunking of the buffer (carry)', () => {
    const b = new WalBuilder();
    while (b.position < BigInt(SEG) + 300000n) b.add({ body: mainData(500 + (b.lsns.length % 7) * 3000) });
    const wal = b.build().subarray(0, SEG);
    const whole = scanWal(wal, { bufLsn: b.startLsn, carry: null, mode: 'records' });
    for (const pages of [1, 2, 3, 7, 64]) {
      const chunked = scanChunked(wal, b.startLsn, pages);
      expect(chunked.lsns).toEqual(lsnsOf(whole));
    }
  });

  it('handles a record header split across pages (tot_len on one page, the rest on the next)', () => {
    const b = new WalBuilder();
    b.fillUntilPageOffset(8184); // 8 bytes left on the page
    const split = b.add({ body: mainData(40) });
    b.add({ body: mainData(12) });
    const wal = b.build();
    const r = scanWal(wal, { bufLsn: b.startLsn, carry: null, mode: 'records' });
    expect(lsnsOf(r)).toContain(split);
    expect(r.count).toBe(b.lsns.length);
    expect(r.end?.reason).toBe('zeroed');
  });

  it('skips the rest of the segment after XLOG_SWITCH without reading its pages', () => {
    const b = new WalBuilder();
    b.add();
    b.add({ rmid: 0, info: 0x40 });
    b.add({ body: mainData(16) }); // next segment
    const wal = b.build();
    // garbage in the skipped part must not matter
    wal.fill(0xee, 16384, SEG - 8192);
    const r = scanWal(wal, { bufLsn: b.startLsn, carry: null, mode: 'records' });
    expect(lsnsOf(r)).toEqual(b.lsns);
    expect(lsnsOf(r)[2]).toBe(BigInt(SEG) * 2n + 40n);
  });

  it('starts mid-stream by skipping a continued record (XLogFindNextRecord) and uses the random-access prev rule', () => {
    const b = new WalBuilder();
    while (b.position < BigInt(SEG) * 2n - 3000n) b.add({ body: mainData(250) });
    b.add({ body: mainData(9000) });
    b.add({ body: mainData(8) });
    const wal = b.build();
    const second = wal.subarray(SEG);
    const r = scanWal(second, { bufLsn: BigInt(SEG) * 2n, carry: null, mode: 'records' });
    expect(lsnsOf(r)).toEqual([b.lsns[b.lsns.length - 1]]);
  });

  it('respects --start/--end with pg_waldump semantics', () => {
    const b = new WalBuilder();
    for (let i = 0; i < 20; i++) b.add({ body: mainData(50) });
    const wal = b.build();
    const r = scanWal(wal, { bufLsn: b.startLsn, carry: null, mode: 'records', startLsn: b.lsns[5], endLsn: b.lsns[9] });
    expect(lsnsOf(r)).toEqual(b.lsns.slice(5, 9));
    expect(r.reachedEndLsn).toBe(true);
    expect(r.end).toBeNull();
  });

  const corruptions: Array<[string, (b: WalBuilder, wal: Buffer, target: bigint) => void, string]> = [
    ['flipped record byte', (b, wal, t) => { wal[Number(t - b.startLsn) + 30] ^= 0x40; }, 'crc-mismatch'],
    ['bad prev link', (b, wal, t) => { const o = Number(t - b.startLsn) + 8; wal.writeBigUInt64LE(wal.readBigUInt64LE(o) + 8n, o); }, 'prev-mismatch'],
    ['invalid rmid', (b, wal, t) => { wal[Number(t - b.startLsn) + 17] = 77; }, 'bad-record-header'],
    ['tiny tot_len', (b, wal, t) => { wal.writeUInt32LE(12, Number(t - b.startLsn)); }, 'bad-record-header'],
  ];
  for (const [name, corrupt, reason] of corruptions) {
    it(`ends at the damaged record: ${name}`, () => {
      const b = new WalBuilder();
      for (let i = 0; i < 30; i++) b.add({ body: mainData(60) });
      const wal = b.build();
      const target = b.lsns[17];
      corrupt(b, wal, target);
      const r = scanWal(wal, { bufLsn: b.startLsn, carry: null, mode: 'records' });
      expect(r.count).toBe(17);
      expect(r.end).toMatchObject({ lsn: target, reason });
    });
  }

  it('detects page-level damage: pageaddr, magic, info bits, TLI going backwards, zero page, missing contrecord', () => {
    const make = () => {
      const b = new WalBuilder();
      while (b.position < b.startLsn + 5n * 8192n + 100n) b.add({ body: mainData(200) });
      return { b, wal: b.build() };
    };
    const page3 = 3 * 8192;
    const cases: Array<[string, (w: Buffer) => void, string]> = [
      ['pageaddr', (w) => w.writeBigUInt64LE(0x123000n, page3 + 8), 'pageaddr-mismatch'],
      ['magic', (w) => w.writeUInt16LE(0xd10d, page3), 'bad-magic'],
      ['info bits', (w) => w.writeUInt16LE(0x0104, page3 + 2), 'bad-page-header'],
      ['tli backwards', (w) => { for (let p = 0; p < 3; p++) w.writeUInt32LE(5, p * 8192 + 4); }, 'tli-out-of-sequence'],
      ['zero page', (w) => w.fill(0, page3, page3 + 8192), 'zeroed'],
      ['contrecord flag cleared', (w) => w.writeUInt16LE(w.readUInt16LE(page3 + 2) & ~1, page3 + 2), 'bad-contrecord'],
      ['rem_len wrong', (w) => w.writeUInt32LE(w.readUInt32LE(page3 + 16) + 8, page3 + 16), 'bad-contrecord'],
    ];
    for (const [name, damage, reason] of cases) {
      const { b, wal } = make();
      damage(wal);
      const r = scanWal(wal, { bufLsn: b.startLsn, carry: null, mode: 'records' });
      expect(r.end?.reason, name).toBe(reason);
      // nothing at or after the damaged page was accepted (tli case damages earlier pages: the end is at page 3 too)
      for (const l of lsnsOf(r)) expect(l, name).toBeLessThan(b.startLsn + BigInt(page3));
    }
  });

  it('restarts at an XLP_FIRST_IS_OVERWRITE_CONTRECORD page (aborted record overwritten)', () => {
    // a record starts near the end of page 0 but its continuation was never written (crash); after
    // recovery page 1 carries XLP_FIRST_IS_OVERWRITE_CONTRECORD and begins with XLOG_OVERWRITE_CONTRECORD
    const w = new WalBuilder();
    for (let i = 0; i < 3; i++) w.add({ body: mainData(100) });
    w.fillUntilPageOffset(8000);
    const lastGood = w.lsns[w.lsns.length - 1];
    const aborted = w.add({ body: mainData(500) });
    const wal = w.build();
    const p1 = 8192;
    wal.fill(0, p1, p1 + 8192);
    wal.writeUInt16LE(0xd110, p1);
    wal.writeUInt16LE(0x0004 | 0x0008, p1 + 2);
    wal.writeUInt32LE(1, p1 + 4);
    wal.writeBigUInt64LE(w.startLsn + 8192n, p1 + 8);
    const ow = Buffer.alloc(24 + 2 + 16);
    ow.writeUInt32LE(ow.length, 0);
    ow.writeBigUInt64LE(lastGood, 8);
    ow[16] = 0xd0; // XLOG_OVERWRITE_CONTRECORD
    ow[17] = 0;
    ow[24] = 0xff;
    ow[25] = 16;
    ow.writeBigUInt64LE(aborted, 26);
    ow.writeUInt32LE(crc32c(ow.subarray(0, 20), crc32c(ow.subarray(24))), 20);
    ow.copy(wal, p1 + 24);
    const r = scanWal(wal, { bufLsn: w.startLsn, carry: null, mode: 'records' });
    const got = lsnsOf(r);
    expect(got).toEqual([...w.lsns.slice(0, -1), w.startLsn + 8192n + 24n]);
    expect(r.end?.reason).toBe('zeroed');
  });

  it('never throws on random or mutated bytes: always a result with an end reason or a clean carry', () => {
    const b = new WalBuilder();
    while (b.position < b.startLsn + 6n * 8192n) b.add({ body: mainData(300 + (b.lsns.length % 5) * 900) });
    const wal = b.build().subarray(0, 8 * 8192);
    const base = scanWal(wal, { bufLsn: b.startLsn, carry: null, mode: 'records' });
    expect(base.count).toBeGreaterThan(5);
    const lsnsOf = (r: typeof base) => Array.from({ length: r.count }, (_, i) => r.records.readBigUInt64LE(i * RECORD_ENTRY_SIZE));
    const baseLsns = lsnsOf(base);
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(8 * 8192 - 1), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 8 }), (muts) => {
        const w = Buffer.from(wal);
        for (const [i, x] of muts) w[i] ^= x;
        const r = scanWal(w, { bufLsn: b.startLsn, carry: null, mode: 'records' });
        // damage can only cut the valid WAL short: never a record that was not there, and the ones
        // found are the undamaged stream's first ones; a shorter stream says why it ended
        expect(lsnsOf(r)).toEqual(baseLsns.slice(0, r.count));
        if (r.count < base.count) expect(typeof r.end?.reason).toBe('string');
        const stats = scanWal(w, { bufLsn: b.startLsn, carry: null, mode: 'stats' });
        expect(stats.count).toBe(r.count);
      }),
      { numRuns: 300 },
    );
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 8192, maxLength: 8192 }), (bytes) => {
        const r = scanWal(bytes, { bufLsn: 0n, carry: null, mode: 'records' });
        return r.count === 0 && r.end !== null;
      }),
    );
  });
});
