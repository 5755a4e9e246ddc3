/**
 * The multi-threaded directory scan (native/src/wal_files.rs: pieces of files from fresh starts,
 * each boundary re-checked when joining) must give the same summary as one sequential pass — for
 * intact WAL, damage anywhere (every piece boundary included), a record that covers whole files
 * (the join cannot line up: the rest is scanned in sequence), and a short last file.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { walFileName } from '../../src/formats/lsn.js';
import { nativeImplementation } from '../../src/native/index.js';
import { selectSegments } from '../../src/wal/segments.js';
import { scanWalStream } from '../../src/wal/stream.js';
import { mainData, WalBuilder } from '../support/wal-builder.js';

const SEG = 1 << 20;
const root = mkdtempSync(join(tmpdir(), 'pgha-par-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const b = new WalBuilder();
while (b.position < BigInt(SEG) * 11n + 1000n) {
  const n = b.lsns.length;
  b.add({ body: mainData(n % 13 === 0 ? 40000 : 100 + (n % 7) * 300), xid: n });
  if (n === 3000) b.add({ rmid: 0, info: 0x40 }); // a switch somewhere in the first half
}
const wal = b.build();
const SEGS = wal.length / SEG;

let dirNo = 0;
function writeDir(mutate: (w: Buffer) => void, from: Buffer = wal, lastFileBytes?: number): string {
  const dir = join(root, `d${dirNo++}`);
  const w = Buffer.from(from);
  mutate(w);
  mkdirSync(dir, { recursive: true });
  const segs = w.length / SEG;
  for (let i = 0; i < segs; i++) {
    const end = i === segs - 1 && lastFileBytes !== undefined ? i * SEG + lastFileBytes : (i + 1) * SEG;
    writeFileSync(join(dir, walFileName(1, 1n + BigInt(i), SEG)), w.subarray(i * SEG, end));
  }
  return dir;
}

async function both(dir: string) {
  const sel = selectSegments(dir, SEG);
  const run = (parallel: boolean) => scanWalStream({ files: sel.files, segmentSize: SEG, mode: 'stats', impl: nativeImplementation!, parallel });
  const [p, s] = [await run(true), await run(false)];
  return { p: { ...p, stats: Array.from(p.stats) }, s: { ...s, stats: Array.from(s.stats) } };
}

describe('parallel directory scan', () => {
  it('equals the sequential scan on intact WAL', async () => {
    const { p, s } = await both(writeDir(() => undefined));
    expect(s.count).toBe(b.lsns.length);
    expect(p).toEqual(s);
  });

  it('equals the sequential scan with damage anywhere (piece boundaries included)', async () => {
    // pieces start at files n·j/pieces: damage near any file boundary hits one of them
    const nearBoundary = fc.integer({ min: 1, max: SEGS - 1 }).chain((k) => fc.integer({ min: k * SEG - 20000, max: k * SEG + 20000 }));
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(nearBoundary, fc.nat(wal.length - 1)),
        fc.integer({ min: 1, max: 255 }),
        async (at, x) => {
          const { p, s } = await both(writeDir((w) => (w[at] ^= x)));
          expect(p).toEqual(s);
        },
      ),
      { numRuns: 40 },
    );
  });

  it('equals the sequential scan when a record covers whole files (the join falls back to a sequential scan)', async () => {
    const big = new WalBuilder();
    while (big.position < BigInt(SEG) * 11n + 1000n) {
      const n = big.lsns.length;
      // one record of 2.5 segments in the middle: files 4 and 5 hold nothing but its continuation
      big.add({ body: mainData(n === 2000 ? Math.floor(SEG * 2.5) : 200 + (n % 5) * 100), xid: n });
    }
    const { p, s } = await both(writeDir(() => undefined, big.build()));
    expect(s.count).toBe(big.lsns.length);
    expect(s.endReason).toBe('zeroed'); // the builder's last segment is zero after its records
    expect(p).toEqual(s);
  });

  it('equals the sequential scan when the last file is short', async () => {
    // the last segment's records end after ~1000 bytes: a file of 100 bytes ends inside them
    const { p, s } = await both(writeDir(() => undefined, wal, 100));
    expect(s.endReason).toBe('truncated');
    expect(p).toEqual(s);
  });
});
