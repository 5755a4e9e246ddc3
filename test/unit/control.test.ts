import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ControlFileError } from '../../src/formats/errors.js';
import { crc32c } from '../../src/formats/crc32c.js';
import { parseControlFile } from '../../src/formats/control.js';
import { ROOT } from '../support/cli.js';

const real = readFileSync(join(ROOT, 'fixtures', 'pg15', 'pg_control'));

describe('pg_control parser', () => {
  it('random bytes and mutations of a real file: a ControlFile or a ControlFileError, never a crash', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 9000 }),
          fc.tuple(fc.nat(real.length - 1), fc.integer({ min: 1, max: 255 })).map(([i, x]) => {
            const b = Buffer.from(real);
            b[i] ^= x;
            return b;
          }),
          fc.nat(real.length).map((n) => real.subarray(0, n)),
        ),
        (bytes) => {
          try {
            parseControlFile(bytes);
          } catch (e) {
            return e instanceof ControlFileError;
          }
          return true;
        },
      ),
      { numRuns: 500 },
    );
  });

  it('a mutation inside the CRC-covered bytes is always detected', () => {
    fc.assert(
      fc.property(fc.nat(287), fc.integer({ min: 1, max: 255 }), (i, x) => {
        const b = Buffer.from(real);
        b[i] ^= x;
        if (i >= 8 && i < 16) return true; // version fields: refused as unsupported before the CRC
        expect(() => parseControlFile(b)).toThrow(/incorrect checksum|invalid|unsupported/);
        return true;
      }),
      { numRuns: 300 },
    );
  });

  it('reports an unknown version with the offset, and accepts a bad CRC only when asked', () => {
    const b = Buffer.from(real);
    b.writeUInt32LE(1100, 8);
    expect(() => parseControlFile(b, { file: 'x' })).toThrow(ControlFileError);
    try {
      parseControlFile(b, { file: 'x' });
    } catch (e) {
      expect((e as ControlFileError).describe()).toMatch(/^x: offset 8: unsupported pg_control version/);
    }
    const bad = Buffer.from(real);
    bad[50] ^= 1;
    const c = parseControlFile(bad, { allowBadCrc: true });
    expect(c.crcValid).toBe(false);
    expect(c.computedCrc).toBe(crc32c(bad.subarray(0, 288)));
  });
});
