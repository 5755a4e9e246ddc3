/**
 * The native addon and the TypeScript twin must give identical answers (records, stats, end of
 * WAL, carry) for the same bytes, including any chunking and any damage. CI fails if the addon is
 * not built (.ci/run), and here its absence is a failure too.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { nativeImplementation, nativeStatus, tsImplementation, type Implementation } from '../../src/native/index.js';
import type { ScanCarry } from '../../src/formats/wal/contract.js';
import { blockWithImage, mainData, WalBuilder } from '../support/wal-builder.js';
import { comparable } from '../support/scan-compare.js';

const native = nativeImplementation as Implementation;


function scanBoth(buf: Buffer, bufLsn: bigint, pages: number, mode: 'records' | 'stats' = 'records') {
  const run = (impl: Implementation) => {
    let carry: ScanCarry | null = null;
    const out: ReturnType<typeof comparable>[] = [];
    for (let off = 0; off < buf.length; off += pages * 8192) {
      const r = impl.scanWal(buf.subarray(off, Math.min(buf.length, off + pages * 8192)), { bufLsn: bufLsn + BigInt(off), carry, mode });
      out.push(comparable(r));
      if (r.end) break;
      carry = r.carry;
    }
    return out;
  };
  return { ts: run(tsImplementation), native: run(native) };
}

function sampleWal(): { b: WalBuilder; wal: Buffer } {
  const b = new WalBuilder();
  while (b.position < BigInt(1 << 20) * 2n + 30000n) {
    const k = b.lsns.length % 11;
    b.add({ body: k === 3 ? blockWithImage(8192, { dataLen: 40 }) : mainData(k === 7 ? 20000 : 50 + k * 90), xid: 1000 + b.lsns.length, rmid: k === 5 ? 10 : 21 });
    if (b.lsns.length === 700) b.add({ rmid: 0, info: 0x40 }); // XLOG_SWITCH
  }
  return { b, wal: b.build() };
}

describe('native addon vs TypeScript twin', () => {
  it('the addon is loaded', () => {
    expect(nativeStatus()).toEqual({ native: true });
  });

  it('crc32c agrees on random data, lengths, alignments and continuation', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 5000 }), fc.nat(7), fc.nat(0xffffffff), (data, shift, init) => {
        const backing = new Uint8Array(data.length + shift);
        backing.set(data, shift);
        const view = backing.subarray(shift);
        return native.crc32c(view) === tsImplementation.crc32c(view) && native.crc32c(view, init) === tsImplementation.crc32c(view, init);
      }),
      { numRuns: 500 },
    );
    const big = Buffer.alloc(16 << 20);
    for (let i = 0; i < big.length; i += 4096) big[i] = i & 0xff;
    expect(native.crc32c(big)).toBe(tsImplementation.crc32c(big));
  });

  it('scanWal agrees on synthetic WAL for every chunking, in records and stats mode', () => {
    const { b, wal } = sampleWal();
    for (const pages of [1, 2, 5, 128, 1 << 20]) {
      const { ts, native: n } = scanBoth(wal, b.startLsn, pages);
      expect(n, `chunk ${pages} pages`).toEqual(ts);
    }
    const { ts, native: n } = scanBoth(wal, b.startLsn, 128, 'stats');
    expect(n).toEqual(ts);
  });

  it('scanWal agrees on damaged WAL (flipped bytes anywhere, zeroed pages, truncation)', () => {
    const { b, wal } = sampleWal();
    const head = wal.subarray(0, 40 * 8192);
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(head.length - 1), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 }),
        fc.option(fc.nat(39)),
        fc.integer({ min: 1, max: 40 }),
        (flips, zeroPage, keepPages) => {
          const w = Buffer.from(head);
          for (const [i, x] of flips) w[i] ^= x;
          if (zeroPage !== null) w.fill(0, zeroPage * 8192, (zeroPage + 1) * 8192);
          const { ts, native: n } = scanBoth(w.subarray(0, keepPages * 8192), b.startLsn, 3);
          expect(n).toEqual(ts);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('scanWalAsync and the mapped-file path give the sync answer', async () => {
    const { b, wal } = sampleWal();
    const seg = wal.subarray(0, 1 << 20);
    const opts = { bufLsn: b.startLsn, carry: null, mode: 'records' as const };
    expect(comparable(await native.scanWalAsync(seg, opts))).toEqual(comparable(native.scanWal(seg, opts)));
    const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const dir = mkdtempSync(join(tmpdir(), 'pgha-map-'));
    try {
      const file = join(dir, 'seg');
      writeFileSync(file, seg);
      const map = await native.mapFile!(file, seg.length);
      const viaMap = await native.scanMapped!(map, opts);
      map.release();
      expect(comparable(viaMap)).toEqual(comparable(tsImplementation.scanWal(seg, opts)));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rejects bad arguments with an error instead of a crash', () => {
    const { b, wal } = sampleWal();
    const r = native.scanWal(wal.subarray(0, 8192), { bufLsn: b.startLsn, carry: null, mode: 'records' });
    expect(() => native.scanWal(wal.subarray(8192, 16384), { bufLsn: b.startLsn, carry: r.carry, mode: 'records' })).toThrow(/carry expects/);
    expect(() => native.scanWal(wal.subarray(0, 1000), { bufLsn: b.startLsn, carry: r.carry, mode: 'records' })).toThrow();
  });
});
