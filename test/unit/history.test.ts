import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { HistoryFormatError } from '../../src/formats/errors.js';
import { parseLsn } from '../../src/formats/lsn.js';
import { forkPoint, formatHistory, parseHistory, timelineAt, timelineOfSegment, validLsn } from '../../src/formats/timeline-history.js';

// real files from a PG 15 promote chain (pg-formats.md §2)
const TLI2 = '1\t0/400EC78\tno recovery target specified\n';
const TLI3 = '1\t0/400EC78\tno recovery target specified\n\n2\t0/400ED90\tno recovery target specified\n';

describe('timeline history files', () => {
  it('parses real files, blank lines and reasons included', () => {
    const h = parseHistory(TLI3, 3);
    expect(h.timeline).toBe(3);
    expect(h.entries).toEqual([
      { parentTimeline: 1, switchpoint: parseLsn('0/400EC78'), reason: 'no recovery target specified' },
      { parentTimeline: 2, switchpoint: parseLsn('0/400ED90'), reason: 'no recovery target specified' },
    ]);
    expect(formatHistory(h)).toBe(TLI3);
    expect(formatHistory(parseHistory(TLI2, 2))).toBe(TLI2);
  });
  it('follows readTimeLineHistory: comments, leading blanks, whitespace runs, gaps in TLIs', () => {
    const h = parseHistory('# comment\n   1   0/10\n\n3 0/20\tbefore 2026-01-01 00:00:00+00\n\n', 5);
    expect(h.entries.map((e) => e.parentTimeline)).toEqual([1, 3]);
    expect(timelineAt(h, 0x5n)).toBe(1);
    expect(timelineAt(h, 0x10n)).toBe(3);
    expect(timelineAt(h, 0x20n)).toBe(5);
  });
  it("names a segment's file as pg_rewind reads it: the timeline in use at the segment's last byte", () => {
    // 16 MiB segments; 6 -> 7 inside segment 4 (PostgreSQL copies segment 4's head into TL 7's file),
    // 7 -> 8 exactly at the start of segment 5 (segment 4 is wholly TL 7's)
    const seg = 16 * 1024 * 1024;
    const h = parseHistory('5\t0/2000100\tx\n6\t0/4179600\tx\n7\t0/5000000\tx\n', 8);
    expect([1n, 2n, 3n, 4n, 5n, 6n].map((s) => timelineOfSegment(h, s, seg))).toEqual([5, 6, 6, 7, 8, 8]);
    expect(timelineOfSegment(parseHistory('', 1), 9n, seg)).toBe(1);
  });
  it('rejects what PostgreSQL rejects, with the line number', () => {
    expect(() => parseHistory('1\t0/10\n1\t0/20\n', 3)).toThrow(HistoryFormatError);
    expect(() => parseHistory('2\t0/10\n1\t0/20\n', 3)).toThrow(/increasing/);
    expect(() => parseHistory('1\tnonsense\n', 2)).toThrow(/line 1: syntax error/);
    expect(() => parseHistory('2\t0/10\n', 2)).toThrow(/less than child/);
    expect(() => parseHistory(Buffer.from([0x31, 0, 0x32]), 2)).toThrow(HistoryFormatError);
  });
  it('answers validLsn by the walsender rule (lsn <= switchpoint of tli)', () => {
    const h = parseHistory(TLI3, 3);
    expect(validLsn(h, 1, parseLsn('0/400EC78')).valid).toBe(true); // exactly at the switch: fine
    expect(validLsn(h, 1, parseLsn('0/400EC79')).valid).toBe(false);
    expect(validLsn(h, 2, parseLsn('0/400ED00')).valid).toBe(true);
    expect(validLsn(h, 2, parseLsn('0/400EDA0')).valid).toBe(false);
    expect(validLsn(h, 3, parseLsn('5/0')).valid).toBe(true);
    expect(validLsn(h, 4, parseLsn('0/1')).valid).toBe(false);
    // cnt: switches at or after the LSN
    expect(validLsn(h, 1, parseLsn('0/3000000')).switchesAfter).toBe(2);
    expect(validLsn(h, 2, parseLsn('0/400ED00')).switchesAfter).toBe(1);
    expect(validLsn(h, 3, parseLsn('0/5000000')).switchesAfter).toBe(0);
  });
  it('finds the fork point of two histories like pg_rewind', () => {
    const a = parseHistory(TLI2, 2);
    const b = parseHistory('1\t0/400EC78\tx\n\n2\t0/5000000\tx\n', 3);
    expect(forkPoint(a, b)).toEqual({ tli: 2, lsn: parseLsn('0/5000000') });
    const c = parseHistory('1\t0/3000000\tx\n', 2); // a different promote of TLI 1
    expect(forkPoint(a, c)).toEqual({ tli: 1, lsn: parseLsn('0/3000000') });
    expect(forkPoint(parseHistory('', 1), parseHistory(TLI2, 2))).toEqual({ tli: 1, lsn: parseLsn('0/400EC78') });
  });
  it('never crashes on arbitrary text: a history or a HistoryFormatError', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), (s) => {
        try {
          parseHistory(s, 9);
        } catch (e) {
          return e instanceof HistoryFormatError;
        }
        return true;
      }),
    );
  });
});
