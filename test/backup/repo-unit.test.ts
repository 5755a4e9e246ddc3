/**
 * The pure parts of src/backup without a cluster: the retention decision, retention ages, the
 * manifest seal, the storage's atomic put-if-absent and its key rules, the choice of a source.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { chooseSource, type SourceProbe } from '../../src/backup/create.js';
import { parseRetention, planExpire } from '../../src/backup/expire.js';
import { openManifest, sealManifest, type BackupManifest } from '../../src/backup/repo.js';
import { LocalStorage } from '../../src/backup/storage.js';

const SEG = 16 << 20;
const DAY = 86400e3;
const NOW = Date.parse('2026-12-10T00:00:00Z');

function backup(label: string, daysAgo: number, startSeg: number): BackupManifest {
  const start = BigInt(startSeg) * BigInt(SEG) + 0x28n;
  return {
    format: 'pgha-backup/1', label, startLsn: `${(start >> 32n).toString(16)}/${(start & 0xffffffffn).toString(16)}`, stopLsn: '0/0', timeline: 1, stopTimeline: 1,
    startTime: new Date(NOW - daysAgo * DAY - 60e3).toISOString(), stopTime: new Date(NOW - daysAgo * DAY).toISOString(), pgVersion: 15, systemId: '1', segmentSize: SEG,
    source: { conninfo: '', standby: false }, object: { key: 'k', compression: 'gzip', size: 0, sha256: '', storedSize: 0 }, files: [], walFiles: [],
  };
}

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('retention (planExpire)', () => {
  const bs = [backup('a', 9, 10), backup('b', 6, 20), backup('c', 4, 30), backup('d', 1, 40)];
  it('a recovery window keeps the backups inside it and the newest one before it', () => {
    const p = planExpire(bs, { windowMs: 5 * DAY }, NOW, SEG);
    expect(p).toEqual({ keep: ['b', 'c', 'd'], remove: ['a'], walBelowSegno: 20n });
  });
  it('--keep N keeps the N newest; both rules: what either keeps', () => {
    expect(planExpire(bs, { keep: 1 }, NOW, SEG)).toEqual({ keep: ['d'], remove: ['a', 'b', 'c'], walBelowSegno: 40n });
    expect(planExpire(bs, { keep: 1, windowMs: 2 * DAY }, NOW, SEG)).toEqual({ keep: ['c', 'd'], remove: ['a', 'b'], walBelowSegno: 30n });
  });
  it('never removes the newest backup, and refuses no rule or --keep 0', () => {
    expect(planExpire(bs, { windowMs: 1 }, NOW, SEG).keep).toEqual(['d']);
    expect(() => planExpire(bs, {}, NOW, SEG)).toThrow('give --keep N or --retention AGE');
    expect(() => planExpire(bs, { keep: 0 }, NOW, SEG)).toThrow('--keep must be a whole number of at least 1, got 0');
    expect(planExpire([], { keep: 2 }, NOW, SEG)).toEqual({ keep: [], remove: [], walBelowSegno: null });
  });
  it('ages', () => {
    expect(parseRetention('5d')).toBe(5 * DAY);
    expect(parseRetention('12h')).toBe(12 * 3600e3);
    expect(parseRetention('90s')).toBe(90e3);
    expect(() => parseRetention('5 days')).toThrow('bad --retention "5 days": expected a number and a unit (s, m, h, d, w), e.g. 5d');
  });
});

describe('manifest seal', () => {
  it('round-trips, and any change of content is a checksum mismatch', () => {
    const text = sealManifest(backup('x', 0, 1));
    expect(openManifest(text, 'm.json').label).toBe('x');
    expect(() => openManifest(text.replace('"timeline": 1', '"timeline": 2'), 'm.json')).toThrow(/^m\.json: corrupt backup manifest: checksum mismatch/);
    expect(() => openManifest(text.slice(0, 50), 'm.json')).toThrow(/^m\.json: corrupt backup manifest: not valid JSON/);
  });
});

describe('LocalStorage', () => {
  it('puts atomically, never replaces with ifAbsent, lists by prefix, leaves no temp file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgha-storage-'));
    dirs.push(dir);
    const s = new LocalStorage(dir);
    expect(await s.put('wal/00000001/a.gz', Buffer.from('one'))).toEqual({ created: true, size: 3 });
    expect(await s.put('wal/00000001/a.gz', Buffer.from('two'), { ifAbsent: true })).toEqual({ created: false, size: 3 });
    const chunks: Buffer[] = [];
    for await (const c of await s.get('wal/00000001/a.gz')) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe('one');
    await s.put('backups/l/manifest.json', Buffer.from('{}'));
    expect((await s.list('wal/')).map((o) => o.key)).toEqual(['wal/00000001/a.gz']);
    expect((await s.list('')).map((o) => o.key)).toEqual(['backups/l/manifest.json', 'wal/00000001/a.gz']);
    expect(readdirSync(join(dir, 'wal', '00000001'))).toEqual(['a.gz']);
    await s.delete('backups/l/manifest.json');
    expect(readdirSync(dir).sort()).toEqual(['wal']);
    expect(await s.stat('nope')).toBeNull();
    for (const bad of ['../x', '/abs', 'a//b', 'a/./b', 'a/.pgha-tmp.x']) await expect(s.put(bad, Buffer.from(''))).rejects.toThrow(`invalid repository key ${JSON.stringify(bad)}`);
  });
});

describe('source choice', () => {
  const p = (conninfo: string, standby: boolean, streaming: boolean, reachable = true): SourceProbe => ({ conninfo, reachable, standby, streaming, systemId: '1' });
  it('a streaming standby when preferred, else the primary, else the first that answers', () => {
    expect(chooseSource([p('p', false, false), p('s1', true, false), p('s2', true, true)], true)?.conninfo).toBe('s2');
    expect(chooseSource([p('s1', true, false), p('p', false, false)], true)?.conninfo).toBe('p');
    expect(chooseSource([p('s2', true, true), p('p', false, false)], false)?.conninfo).toBe('s2');
    expect(chooseSource([p('x', false, false, false)], true)).toBeNull();
  });
});
