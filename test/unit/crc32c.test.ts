import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { crc32c } from '../../src/formats/crc32c.js';

// bitwise reference: the definition, independent of the table code under test
function crcBitwise(data: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of data) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

describe('CRC-32C (TypeScript)', () => {
  it('matches the known vectors (pg-formats.md §5, RFC 3720)', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(crc32c(Uint8Array.from({ length: 256 }, (_, i) => i))).toBe(0x9c44184b);
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(crc32c(new Uint8Array(0))).toBe(0);
  });
  it('equals the bitwise definition at any length and alignment', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.integer({ min: 0, max: 7 }), (data, shift) => {
        const backing = new Uint8Array(data.length + shift);
        backing.set(data, shift);
        return crc32c(backing.subarray(shift)) === crcBitwise(data);
      }),
    );
  });
  it('continues from a previous result: crc(b, crc(a)) == crc(a ++ b)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.uint8Array({ maxLength: 200 }), (a, b) => {
        const ab = new Uint8Array(a.length + b.length);
        ab.set(a);
        ab.set(b, a.length);
        return crc32c(b, crc32c(a)) === crc32c(ab);
      }),
    );
  });
});
