/**
 * The two-chain directory scan (second half from a fresh start, boundary re-checked) must give the
 * same summary as one sequential pass — for intact WAL and for damage anywhere, boundary included.
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
function writeDir(mutate: (w: Buffer) => void): string {
  const dir = join(root, `d${dirNo++}`);
  const w = Buffer.from(wal);
  mutate(w);
  mkdirSync(dir, { recursive: true });
  for (let i = 0; i < SEGS; i++) writeFileSync(join(dir, walFileName(1, 1n + BigInt(i), SEG)), w.subarray(i * SEG, (i + 1) * SEG));
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

  it('equals the sequential scan with damage anywhere (boundary segment included)', async () => {
    const half = Math.floor(SEGS / 2) * SEG;
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.integer({ min: half - 20000, max: half + 20000 }), fc.nat(wal.length - 1)),
        fc.integer({ min: 1, max: 255 }),
        async (at, x) => {
          const { p, s } = await both(writeDir((w) => (w[at] ^= x)));
          expect(p).toEqual(s);
        },
      ),
      { numRuns: 40 },
    );
  });
});
