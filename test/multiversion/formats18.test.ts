/**
 * PostgreSQL 18's formats on the real 18.4 files in fixtures/pg18 (made by fixtures/generate.ts from the
 * embedded build; expected.json is the server's own SQL): pg_control's 18 layout (CRC at 292,
 * default_char_signedness), damage to it, slot files shared with 17, WAL page magic 0xD118 and
 * what a later, unknown magic gets. No server needed.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseControlFile } from '../../src/formats/control.js';
import { ControlFileError, SlotStateError } from '../../src/formats/errors.js';
import { editSlotState, parseSlotState } from '../../src/formats/replslot.js';
import { majorFromControlVersion, majorFromPageMagic } from '../../src/formats/versions.js';
import { pgwal, pgwalJson, ROOT } from '../support/cli.js';

const FX = join(ROOT, 'fixtures', 'pg18');
const exp = JSON.parse(readFileSync(join(FX, 'expected.json'), 'utf8')) as { walFile: string; pgControlSystem: Record<string, unknown> };
const control = readFileSync(join(FX, 'pg_control'));
const tmp = mkdtempSync(join(tmpdir(), 'pgha-f18-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function describeError(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return (e as ControlFileError).describe();
  }
  throw new Error('no error');
}

describe('PostgreSQL 18 formats (fixtures/pg18)', () => {
  it('pg_control: version 1800, CRC over [0, 292) stored at 292, default_char_signedness at 256', () => {
    expect(majorFromControlVersion(1800, 202506291)).toBe(18);
    expect(majorFromControlVersion(1900, 202606291)).toBeUndefined();
    const c = parseControlFile(control);
    expect(c.pgVersion).toBe(18);
    expect(c.pgControlVersion).toBe(exp.pgControlSystem.pg_control_version);
    expect(c.catalogVersion).toBe(exp.pgControlSystem.catalog_version_no);
    expect(c.systemId.toString()).toBe(exp.pgControlSystem.system_identifier);
    expect(c.crcValid).toBe(true);
    expect(c.defaultCharSignedness).toBe(control[256] === 1);
    // initdb of 18 enables data checksums by default
    expect(c.dataChecksumVersion).toBe(1);
    // the nonce starts right after the new bool
    expect(c.mockAuthNonce).toBe(control.subarray(257, 289).toString('hex'));
  });

  it('pg_control: damage anywhere under the CRC, or to the CRC itself, is one line with offset 292', () => {
    for (const i of [0, 17, 100, 256, 257, 288, 291]) {
      const b = Buffer.from(control);
      b[i] ^= 0x40;
      expect(describeError(() => parseControlFile(b, { file: 'pg_control' })), `byte ${i}`).toMatch(/^pg_control: offset 292: incorrect checksum in control file \(expected 0x[0-9a-f]{8}, got 0x[0-9a-f]{8}\)$/);
    }
    const b = Buffer.from(control);
    b[293] ^= 1;
    expect(describeError(() => parseControlFile(b, { file: 'pg_control' }))).toMatch(/offset 292: incorrect checksum/);
    const v19 = Buffer.from(control);
    v19.writeUInt32LE(1900, 8);
    expect(describeError(() => parseControlFile(v19, { file: 'pg_control' }))).toMatch(
      /^pg_control: offset 8: unsupported pg_control version \(expected pg_control_version 1201 \(PG 12\), 1300 \(13-16\), 1700 \(17\) or 1800 \(18\) with a matching catalog version, got pg_control_version 1900/,
    );
    // `pgwal inspect` finds an 18 pg_control by its content, and says the same for a damaged copy
    writeFileSync(join(tmp, 'pg_control'), Buffer.from(control));
    expect(pgwalJson<{ kind: string; pgVersion: number }>(['inspect', join(tmp, 'pg_control')])).toMatchObject({ kind: 'control', pgVersion: 18 });
    const bad = Buffer.from(control);
    bad[100] ^= 1;
    writeFileSync(join(tmp, 'copy'), bad);
    const r = pgwal(['inspect', join(tmp, 'copy')]);
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toMatch(/copy: offset 292: incorrect checksum in control file/);
  });

  it('slot files: 18 writes 17\'s layout (SLOT_VERSION 5, 184 bytes), so the file fits both', () => {
    const bytes = readFileSync(join(FX, 'slots', 'cdc.state'));
    const s = parseSlotState(bytes);
    expect({ version: s.version, length: s.length, possible: s.possibleVersions, reported: s.pgVersion }).toEqual({ version: 5, length: 184, possible: [17, 18], reported: 18 });
    expect(parseSlotState(bytes, { preferVersion: 17 }).pgVersion).toBe(17);
    expect({ failover: s.failover, synced: s.synced }).toEqual({ failover: false, synced: false });
    const edited = parseSlotState(editSlotState(bytes, { failover: true }));
    expect(edited.failover).toBe(true);
    expect(edited.checksumValid).toBe(true);
    // byte 194 = 16 + offsetof(failover) = 178, as the 17/18 server writes it
    expect(editSlotState(bytes, { failover: true })[194]).toBe(1);
    const bad = Buffer.from(bytes);
    bad.writeUInt32LE(6, 8);
    expect(() => parseSlotState(bad, { file: 'state' })).toThrow(SlotStateError);
    expect(describeError(() => parseSlotState(bad, { file: 'state' }))).toMatch(/^state: offset 8: replication slot file has an unsupported version\/length \(expected .*5 \(17-18\) with length 184, got version 6, length 184\)$/);
  });

  it('WAL: page magic 0xD118 is 18 on both paths; a later magic is refused naming every known one', () => {
    expect(majorFromPageMagic(0xd118)).toBe(18);
    const seg = readFileSync(join(FX, exp.walFile));
    expect(seg.readUInt16LE(0)).toBe(0xd118);
    for (const env of [{}, { PGHA_NATIVE: '0' }] as Array<Record<string, string>>) {
      const w = pgwalJson<{ pgVersion: number; endReason: string }>(['inspect', join(FX, exp.walFile)], env);
      expect(w).toMatchObject({ pgVersion: 18, endReason: 'zeroed' });
    }
    const later = Buffer.from(seg);
    later.writeUInt16LE(0xd120, 0);
    writeFileSync(join(tmp, exp.walFile), later);
    const r = pgwal(['inspect', join(tmp, exp.walFile)]);
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toMatch(/offset 0: WAL segment of an unsupported PostgreSQL version \(expected XLOG_PAGE_MAGIC of PG 12-18 \(D101, D106, D10D, D110, D113, D116, D118\), got D120\)/);
  });
});
