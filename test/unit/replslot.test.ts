import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { SlotStateError } from '../../src/formats/errors.js';
import { parseLsn } from '../../src/formats/lsn.js';
import { editSlotState, parseSlotState, serializeSlotState, type SlotState } from '../../src/formats/replslot.js';

/** the PG 15 slot of pg-formats.md §3.2, whose real file has CRC 0x789A37A0 */
function pg15Example(): Buffer {
  const b = Buffer.alloc(200);
  b.writeUInt32LE(0x1051ca1, 0);
  b.writeUInt32LE(2, 8);
  b.writeUInt32LE(184, 12);
  b.write('s1', 16);
  b.writeUInt32LE(5, 16 + 64);
  b.writeUInt32LE(724, 16 + 76);
  b.writeBigUInt64LE(parseLsn('0/15007B8'), 16 + 80);
  b.writeBigUInt64LE(parseLsn('0/15007F0'), 16 + 96);
  b.write('test_decoding', 16 + 113);
  return b;
}

describe('replication slot state files', () => {
  it('parses the documented PG 15 example and its stored CRC equals the real file\'s', () => {
    const bytes = pg15Example();
    const crc = parseSlotState(bytes, { allowBadChecksum: true }).computedChecksum;
    expect(crc).toBe(0x789a37a0);
    bytes.writeUInt32LE(crc, 4);
    const s = parseSlotState(bytes);
    expect(s).toMatchObject({
      name: 's1',
      database: 5,
      kind: 'logical',
      persistency: 'persistent',
      catalogXmin: 724,
      restartLsn: parseLsn('0/15007B8'),
      confirmedFlush: parseLsn('0/15007F0'),
      plugin: 'test_decoding',
      twoPhase: false,
      version: 2,
      possibleVersions: [14, 15],
      checksumValid: true,
    });
    expect(serializeSlotState(s, bytes).equals(bytes)).toBe(true);
  });
  it('edits fields and recomputes the CRC', () => {
    const bytes = pg15Example();
    bytes.writeUInt32LE(0x789a37a0, 4);
    const edited = editSlotState(bytes, { confirmedFlush: parseLsn('0/2000000'), catalogXmin: 800 });
    const s = parseSlotState(edited);
    expect(s.confirmedFlush).toBe(parseLsn('0/2000000'));
    expect(s.catalogXmin).toBe(800);
    expect(s.checksumValid).toBe(true);
    expect(edited.subarray(16, 16 + 64).equals(bytes.subarray(16, 16 + 64))).toBe(true);
    expect(() => editSlotState(bytes, { failover: true })).toThrow(/only in PostgreSQL 17/);
  });
  it('refuses bad magic, unknown version/length, wrong size and bad CRC with the offset', () => {
    const good = pg15Example();
    good.writeUInt32LE(0x789a37a0, 4);
    const cases: Array<[Buffer, RegExp, number]> = [
      [Buffer.from(good).fill(0, 0, 4), /wrong magic/, 0],
      [(() => { const b = Buffer.from(good); b.writeUInt32LE(9, 8); return b; })(), /unsupported version/, 8],
      [(() => { const b = Buffer.from(good); b.writeUInt32LE(176, 12); return b; })(), /unsupported version/, 8],
      [good.subarray(0, 150), /wrong size/, 150],
      [good.subarray(0, 10), /too short/, 10],
      [(() => { const b = Buffer.from(good); b[100] ^= 1; return b; })(), /checksum mismatch/, 4],
    ];
    for (const [bytes, re, offset] of cases) {
      let err: unknown;
      try {
        parseSlotState(bytes, { file: 'state' });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(SlotStateError);
      expect((err as SlotStateError).message).toMatch(re);
      expect((err as SlotStateError).offset).toBe(offset);
      expect((err as SlotStateError).describe()).toContain('state');
    }
  });
  it('round-trips every layout (12..17) byte for byte', () => {
    const layouts: Array<[number, number, number]> = [[12, 2, 160], [13, 2, 168], [15, 2, 184], [16, 3, 184], [17, 5, 184]];
    for (const [major, version, length] of layouts) {
      const s = {
        pgVersion: major, version, length, name: 'slot_' + major, database: 16384, persistencyCode: 0, xmin: 0, catalogXmin: 900,
        restartLsn: parseLsn('1/2345678'), confirmedFlush: parseLsn('1/2345700'), plugin: 'pgoutput', twoPhase: true,
        twoPhaseAt: parseLsn('1/0'), invalidatedAt: 0n, invalidatedCode: 0, synced: true, failover: true,
      } as unknown as SlotState;
      const bytes = serializeSlotState(s);
      const back = parseSlotState(bytes);
      expect(back.pgVersion === major || back.possibleVersions.includes(major as 15)).toBe(true);
      expect(back.name).toBe('slot_' + major);
      expect(back.plugin).toBe('pgoutput');
      expect(back.restartLsn).toBe(parseLsn('1/2345678'));
      expect(back.confirmedFlush).toBe(parseLsn('1/2345700'));
      expect(serializeSlotState(back, bytes).equals(bytes)).toBe(true);
      if (major >= 17) expect(back).toMatchObject({ synced: true, failover: true });
    }
  });
  it('random and mutated bytes give a SlotState or a SlotStateError, never anything else', () => {
    const good = pg15Example();
    good.writeUInt32LE(0x789a37a0, 4);
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 400 }), fc.tuple(fc.nat(199), fc.integer({ min: 1, max: 255 })).map(([i, x]) => { const b = Buffer.from(good); b[i] ^= x; return b; })), (bytes) => {
        try {
          parseSlotState(bytes);
        } catch (e) {
          return e instanceof SlotStateError;
        }
        return true;
      }),
    );
  });
});
