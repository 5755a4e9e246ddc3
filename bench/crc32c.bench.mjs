// CRC-32C on a 16 MiB buffer: the native addon vs @node-rs/crc32 vs the TypeScript twin (benny).
//   node bench/crc32c.bench.mjs        (after npm install; reads dist/ and native/)
import b from 'benny';
import { crc32c as nodeRsCrc32c } from '@node-rs/crc32';
import { nativeImplementation, tsImplementation } from '../dist/src/native/index.js';

if (!nativeImplementation) throw new Error('native addon not loaded');
const SIZE = 16 << 20;
const buf = Buffer.alloc(SIZE);
for (let i = 0; i < SIZE; i++) buf[i] = (i * 2654435761) >>> 24;
const expected = tsImplementation.crc32c(buf);
if (nativeImplementation.crc32c(buf) !== expected || nodeRsCrc32c(buf) !== expected) throw new Error('implementations disagree');

const gbps = (r) => ((r.ops * SIZE) / 1e9).toFixed(2);
await b.suite(
  'crc32c, 16 MiB buffer',
  b.add('pgha native (crc-fast, folding with PCLMULQDQ/VPCLMULQDQ)', () => nativeImplementation.crc32c(buf)),
  b.add('@node-rs/crc32 crc32c', () => nodeRsCrc32c(buf)),
  b.add('pgha TypeScript (slicing-by-8)', () => tsImplementation.crc32c(buf)),
  b.cycle(),
  b.complete((summary) => {
    for (const r of summary.results) console.log(`RESULT crc32c | ${r.name} | ${gbps(r)} GB/s | ±${r.margin}%`);
    const n = summary.results[0].ops;
    const peer = summary.results[1].ops;
    console.log(`RESULT crc32c | native / @node-rs ratio | ${(n / peer).toFixed(2)}x |`);
  }),
);
