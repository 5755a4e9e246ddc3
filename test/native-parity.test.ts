/**
 * Native addon vs TypeScript twin on REAL WAL (fixtures/ made by real servers, and the 16 MiB pgbench
 * segments of bench/data/wal-1g when present): identical records, stats, count, end LSN/reason and
 * carry, for every chunking (one page at a time … whole buffer, with carry) and for damaged copies
 * (flipped bytes, zeroed pages, truncation to N pages). Synthetic WAL cases are in
 * test/unit/native-parity.test.ts. Fails when the addon is not built (CI builds it).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { nativeImplementation, tsImplementation, type Implementation } from '../src/native/index.js';
import { STATS_ENTRY_SIZE, STATS_SLOTS, type ScanCarry, type ScanResult } from '../src/formats/wal/contract.js';
import { RMGR_NAMES } from '../src/formats/wal/rmgr.js';
import { parseWaldumpRecordStats } from './support/oracles.js';
import { comparable } from './support/scan-compare.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const fixtures = join(root, 'fixtures');
const native = nativeImplementation;
const PAGE = 8192;

/** LSN of a segment file's first byte = its first page's xlp_pageaddr */
const pageaddr = (b: Buffer): bigint => b.readBigUInt64LE(8);
const readSeg = (p: string): Buffer => readFileSync(p);

interface Source {
  name: string;
  buf: Buffer;
  lsn: bigint;
}

function sources(): Source[] {
  const out: Source[] = [];
  const pg15 = join(fixtures, 'pg15', 'wal');
  if (existsSync(pg15)) {
    const files = readdirSync(pg15).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort();
    const buf = Buffer.concat(files.map((f) => readSeg(join(pg15, f))));
    out.push({ name: 'pg15 fixture segments', buf, lsn: pageaddr(buf) });
  }
  for (const v of [12, 13, 14, 16, 17]) {
    const dir = join(fixtures, `pg${v}`);
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir).filter((n) => /^[0-9A-F]{24}$/.test(n))) {
      const buf = readSeg(join(dir, f));
      out.push({ name: `pg${v} ${f}`, buf, lsn: pageaddr(buf) });
    }
  }
  const big = join(root, 'bench', 'data', 'wal-1g');
  if (existsSync(big)) {
    const files = readdirSync(big).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort().slice(0, 2);
    if (files.length === 2) {
      const buf = Buffer.concat(files.map((f) => readSeg(join(big, f))));
      out.push({ name: 'bench pgbench 2 x 16 MiB', buf, lsn: pageaddr(buf) });
    }
  }
  return out;
}


/** scan `buf` in chunks of `pages` pages with carry; stops at the first end of WAL */
function chunked(impl: Implementation, buf: Buffer, lsn: bigint, pages: number, mode: 'records' | 'stats') {
  let carry: ScanCarry | null = null;
  const results: ScanResult[] = [];
  const step = pages * PAGE;
  for (let off = 0; off < buf.length; off += step) {
    const r = impl.scanWal(buf.subarray(off, Math.min(buf.length, off + step)), { bufLsn: lsn + BigInt(off), carry, mode });
    results.push(r);
    if (r.end) break;
    carry = r.carry;
  }
  return results;
}

/** what a chunked scan adds up to: all records, summed stats, total count, final end */
function merged(results: ScanResult[]) {
  const stats = new BigUint64Array(STATS_SLOTS * 3);
  for (const r of results) {
    for (let i = 0; i < STATS_SLOTS * 3; i++) stats[i] += r.stats.readBigUInt64LE(i * 8);
  }
  const last = results[results.length - 1];
  return {
    count: results.reduce((n, r) => n + r.count, 0),
    records: Buffer.concat(results.map((r) => r.records)).toString('hex'),
    stats: Buffer.from(stats.buffer).toString('hex'),
    end: last.end ? { lsn: last.end.lsn, reason: last.end.reason } : null,
  };
}

const both = (buf: Buffer, lsn: bigint, pages: number, mode: 'records' | 'stats') => ({
  ts: chunked(tsImplementation, buf, lsn, pages, mode).map(comparable),
  native: chunked(native!, buf, lsn, pages, mode).map(comparable),
});

describe('native vs TypeScript scanWal on real WAL', () => {
  const srcs = sources();

  it('the addon is loaded', () => {
    expect(native).not.toBeNull();
  });

  it('has real WAL to compare', () => {
    expect(srcs.length).toBeGreaterThan(0);
  });

  for (const s of srcs) {
    it(`${s.name}: identical for one call and for 1..N-page chunks, records and stats mode`, () => {
      const totalPages = s.buf.length / PAGE;
      const whole = native!.scanWal(s.buf, { bufLsn: s.lsn, carry: null, mode: 'records' });
      expect(whole.count).toBeGreaterThan(0);
      expect(comparable(whole)).toEqual(comparable(tsImplementation.scanWal(s.buf, { bufLsn: s.lsn, carry: null, mode: 'records' })));
      const wholeStats = native!.scanWal(s.buf, { bufLsn: s.lsn, carry: null, mode: 'stats' });
      expect(comparable(wholeStats)).toEqual(comparable(tsImplementation.scanWal(s.buf, { bufLsn: s.lsn, carry: null, mode: 'stats' })));
      expect(wholeStats.stats.equals(whole.stats)).toBe(true);
      const big = s.buf.length > 4 << 20;
      for (const pages of big ? [7, 2048] : [1, 2, 3, 17, 128, totalPages]) {
        const n = chunked(native!, s.buf, s.lsn, pages, 'records');
        // chunking changes nothing in what is found
        expect(merged(n), `${pages}-page chunks`).toEqual(merged([whole]));
        if (!big) expect(n.map(comparable), `${pages}-page chunks vs TS`).toEqual(chunked(tsImplementation, s.buf, s.lsn, pages, 'records').map(comparable));
      }
      if (!big) {
        const { ts, native: nat } = both(s.buf, s.lsn, 5, 'stats');
        expect(nat).toEqual(ts);
      }
    });
  }

  it('pg15 fixture: per-rmgr stats equal pg_waldump --stats=record', () => {
    const exp = JSON.parse(readFileSync(join(fixtures, 'pg15', 'expected.json'), 'utf8'));
    const s = srcs.find((x) => x.name === 'pg15 fixture segments');
    // the fixture and its oracle stats are committed: missing means broken, never a silent pass
    expect(s, 'pg15 fixture segments').toBeDefined();
    expect(exp.wal?.waldumpStatsRecord, 'fixtures/pg15/expected.json wal.waldumpStatsRecord').toBeTruthy();
    if (!s) return;
    const dump = parseWaldumpRecordStats(exp.wal.waldumpStatsRecord);
    const want: Record<string, [number, number, number]> = {};
    for (const [k, v] of Object.entries(dump)) {
      const rm = k.split('/')[0];
      const w = (want[rm] ??= [0, 0, 0]);
      for (let i = 0; i < 3; i++) w[i] += v[i];
    }
    const r = native!.scanWal(s.buf, { bufLsn: s.lsn, carry: null, mode: 'stats' });
    const got: Record<string, [number, number, number]> = {};
    for (let slot = 0; slot < STATS_SLOTS; slot++) {
      const at = slot * STATS_ENTRY_SIZE;
      const count = Number(r.stats.readBigUInt64LE(at));
      if (count === 0) continue;
      const rm = RMGR_NAMES[slot >> 4] ?? `custom${slot >> 4}`;
      const g = (got[rm] ??= [0, 0, 0]);
      g[0] += count;
      g[1] += Number(r.stats.readBigUInt64LE(at + 8));
      g[2] += Number(r.stats.readBigUInt64LE(at + 16));
    }
    expect(got).toEqual(want);
  });

  it('damaged fixture copies: the end pg_waldump reports, same in both', () => {
    const corrupt = join(fixtures, 'corrupt');
    const cases: Array<[string, string, bigint | null, bigint]> = [
      // dir, reason, failing record (null: not pinned), last good record = pg_waldump's "error in WAL record at"
      ['wal-crc', 'crc-mismatch', 0x7236d0n, 0x723698n],
      ['wal-pageaddr', 'pageaddr-mismatch', null, 0x74dc28n],
      ['wal-zero-page', 'zeroed', null, 0x775408n],
    ];
    const exp = JSON.parse(readFileSync(join(corrupt, 'expected.json'), 'utf8'));
    for (const [dir, reason, at, lastGood] of cases) {
      const buf = readSeg(join(corrupt, dir, exp.segment));
      const lsn = pageaddr(buf);
      const n = native!.scanWal(buf, { bufLsn: lsn, carry: null, mode: 'records' });
      expect(comparable(n), dir).toEqual(comparable(tsImplementation.scanWal(buf, { bufLsn: lsn, carry: null, mode: 'records' })));
      expect(n.end?.reason, dir).toBe(reason);
      if (at !== null) expect(n.end?.lsn, dir).toBe(at);
      expect(n.lastRecordLsn, dir).toBe(lastGood);
      expect(exp.walVariants[dir].waldumpEnd).toContain(`error in WAL record at 0/${lastGood.toString(16).toUpperCase()}`);
      for (const pages of [1, 4]) {
        const { ts, native: nat } = both(buf, lsn, pages, 'records');
        expect(nat, `${dir} ${pages}`).toEqual(ts);
      }
    }
    // truncated copy: whole pages only are scanned; the rest is the driver's 'truncated'
    const t = readSeg(join(corrupt, 'wal-truncated', exp.segment));
    const whole = t.subarray(0, Math.floor(t.length / PAGE) * PAGE);
    const { ts, native: nat } = both(whole, pageaddr(t), 3, 'records');
    expect(nat).toEqual(ts);
    // bad magic: nothing found
    const bm = readSeg(join(corrupt, 'wal-bad-magic'));
    const r = native!.scanWal(bm, { bufLsn: pageaddr(bm), carry: null, mode: 'records' });
    expect([r.count, r.end?.reason]).toEqual([0, 'bad-magic']);
    expect(comparable(r)).toEqual(comparable(tsImplementation.scanWal(bm, { bufLsn: pageaddr(bm), carry: null, mode: 'records' })));
  });

  it('mutated real segments (flipped bytes, zeroed pages, truncation, random chunking): identical', () => {
    const s = srcs.find((x) => x.name === 'pg15 fixture segments');
    if (!s) throw new Error('the pg15 fixture segments are missing (fixtures/pg15/wal)');
    const pages = s.buf.length / PAGE;
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(s.buf.length - 1), fc.integer({ min: 1, max: 255 })), { maxLength: 3 }),
        fc.option(fc.nat(pages - 1)),
        fc.integer({ min: 1, max: pages }),
        fc.integer({ min: 1, max: 40 }),
        fc.constantFrom<'records' | 'stats'>('records', 'stats'),
        (flips, zeroPage, keepPages, chunk, mode) => {
          const w = Buffer.from(s.buf.subarray(0, keepPages * PAGE));
          for (const [i, x] of flips) if (i < w.length) w[i] ^= x;
          if (zeroPage !== null && zeroPage < keepPages) w.fill(0, zeroPage * PAGE, (zeroPage + 1) * PAGE);
          const { ts, native: nat } = both(w, s.lsn, chunk, mode);
          expect(nat).toEqual(ts);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('flips inside record headers and page headers of a real segment: identical', () => {
    const s = srcs.find((x) => x.name === 'pg15 fixture segments');
    if (!s) throw new Error('the pg15 fixture segments are missing (fixtures/pg15/wal)');
    const base = native!.scanWal(s.buf, { bufLsn: s.lsn, carry: null, mode: 'records' });
    // targeted: every byte of a few record headers, and of a few page headers
    const recLsns: bigint[] = [];
    for (let i = 0; i < base.count; i += Math.max(1, Math.floor(base.count / 12))) recLsns.push(base.records.readBigUInt64LE(i * 32));
    const offsets: number[] = [];
    for (const l of recLsns) for (let k = 0; k < 24; k++) offsets.push(Number(l - s.lsn) + k);
    for (const p of [0, 1, 5, 64, 127]) for (let k = 0; k < 40; k++) if (p * PAGE + k < s.buf.length) offsets.push(p * PAGE + k);
    for (const off of offsets) {
      if (off >= s.buf.length) continue;
      const w = Buffer.from(s.buf);
      w[off] ^= 0x41;
      const n = native!.scanWal(w, { bufLsn: s.lsn, carry: null, mode: 'records' });
      const t = tsImplementation.scanWal(w, { bufLsn: s.lsn, carry: null, mode: 'records' });
      expect(comparable(n), `flip at ${off}`).toEqual(comparable(t));
    }
  });

  it('scanWalAsync over consecutive real segments gives the sync answer', async () => {
    const s = srcs[srcs.length - 1];
    const seg = Math.min(s.buf.length, s.buf.readUInt32LE(32));
    let carry: ScanCarry | null = null;
    const asyncOut: ScanResult[] = [];
    for (let off = 0; off < s.buf.length; off += seg) {
      const r: ScanResult = await native!.scanWalAsync(s.buf.subarray(off, off + seg), { bufLsn: s.lsn + BigInt(off), carry, mode: 'records' });
      asyncOut.push(r);
      if (r.end) break;
      carry = r.carry;
    }
    expect(asyncOut.map(comparable)).toEqual(chunked(native!, s.buf, s.lsn, seg / PAGE, 'records').map(comparable));
    // a plain Uint8Array (not a Buffer) is accepted too
    const u8 = new Uint8Array(s.buf.buffer, s.buf.byteOffset, seg);
    expect(comparable(await native!.scanWalAsync(u8, { bufLsn: s.lsn, carry: null, mode: 'stats' }))).toEqual(
      comparable(native!.scanWal(u8, { bufLsn: s.lsn, carry: null, mode: 'stats' })),
    );
  });
});
