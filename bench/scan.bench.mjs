// Whole-segment scan in process (every page header and record CRC checked), 16 MiB segments from
// the page cache (bench/data/wal-1g from bench/make-wal.mjs): native vs TypeScript, stats mode.
//   node bench/scan.bench.mjs
import b from 'benny';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nativeImplementation, tsImplementation } from '../dist/src/native/index.js';

if (!nativeImplementation) throw new Error('native addon not loaded');
const dir = join(dirname(fileURLToPath(import.meta.url)), 'data', 'wal-1g');
const names = readdirSync(dir).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort().slice(10, 14);
const segs = names.map((n) => ({ buf: readFileSync(join(dir, n)), lsn: BigInt('0x' + n.slice(16)) * 16777216n + BigInt('0x' + n.slice(8, 16)) * 0x100000000n }));
const SIZE = segs[0].buf.length;
let i = 0;
const next = () => segs[i++ % segs.length];
for (const s of segs) {
  const a = nativeImplementation.scanWal(s.buf, { bufLsn: s.lsn, carry: null, mode: 'stats' });
  const t = tsImplementation.scanWal(s.buf, { bufLsn: s.lsn, carry: null, mode: 'stats' });
  if (a.count !== t.count || !a.stats.equals(t.stats)) throw new Error('native and TypeScript disagree');
}
const gbps = (r) => ((r.ops * SIZE) / 1e9).toFixed(2);
await b.suite(
  'scanWal, 16 MiB segment, stats mode',
  b.add('native scanWal', () => {
    const s = next();
    nativeImplementation.scanWal(s.buf, { bufLsn: s.lsn, carry: null, mode: 'stats' });
  }),
  b.add('TypeScript scanWal', () => {
    const s = next();
    tsImplementation.scanWal(s.buf, { bufLsn: s.lsn, carry: null, mode: 'stats' });
  }),
  b.cycle(),
  b.complete((summary) => {
    for (const r of summary.results) console.log(`RESULT scan | ${r.name} | ${gbps(r)} GB/s | ±${r.margin}%`);
  }),
);
