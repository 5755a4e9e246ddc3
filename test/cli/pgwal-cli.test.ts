import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { walFileName } from '../../src/formats/lsn.js';
import { expectOneLineError, pgwal, pgwalJson } from '../support/cli.js';
import { mainData, WalBuilder } from '../support/wal-builder.js';

const dir = mkdtempSync(join(tmpdir(), 'pgwal-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SEG = 1 << 20;
function writeWalDir(name: string): { path: string; b: WalBuilder } {
  const b = new WalBuilder();
  while (b.position < BigInt(SEG) * 2n + 5000n) b.add({ body: mainData(300 + (b.lsns.length % 9) * 500), xid: 700 + b.lsns.length });
  const bytes = b.build();
  const path = join(dir, name);
  mkdirSync(path);
  for (let i = 0; i * SEG < bytes.length; i++) writeFileSync(join(path, walFileName(1, 1n + BigInt(i), SEG)), bytes.subarray(i * SEG, (i + 1) * SEG));
  return { path, b };
}

describe('pgwal command line', () => {
  const { path: walDir, b } = writeWalDir('wal');

  it('inspects a directory of segments as one stream, same answer with and without the addon', () => {
    const native = pgwalJson<Record<string, unknown>>(['inspect', '--stats', walDir]);
    const ts = pgwalJson<Record<string, unknown>>(['inspect', '--stats', walDir], { PGHA_NATIVE: '0' });
    expect(native).toEqual(ts);
    expect(native).toMatchObject({
      kind: 'wal',
      timeline: 1,
      pgVersion: 15,
      systemId: b.systemId.toString(),
      segmentSize: SEG,
      blockSize: 8192,
      records: b.lsns.length,
      endReason: 'zeroed',
    });
    const stats = native.stats as Record<string, { count: number }>;
    expect(stats.LogicalMessage.count).toBe(b.lsns.length);
    expect(stats.XLOG.count).toBe(0);
  });

  it('lists records and honours --start/--end', () => {
    const fmt = (l: bigint) => `${(l >> 32n).toString(16).toUpperCase()}/${(l & 0xffffffffn).toString(16).toUpperCase()}`;
    const out = pgwalJson<{ records: number; recordList: Array<{ lsn: string; xid: number; rmgr: string; type: string }> }>([
      'inspect', '--records', '--start', fmt(b.lsns[10]), '--end', fmt(b.lsns[20]), walDir,
    ]);
    expect(out.records).toBe(10);
    expect(out.recordList.map((r) => r.lsn)).toEqual(b.lsns.slice(10, 20).map(fmt));
    expect(out.recordList[0]).toMatchObject({ rmgr: 'LogicalMessage', type: 'MESSAGE', xid: 710 });
  });

  it('exits 2 with one line naming the file and offset for bad files', () => {
    const junk = join(dir, 'junk.bin');
    writeFileSync(junk, Buffer.from('this is not a postgres file at all'));
    const r = pgwal(['inspect', junk]);
    expect(r.status).toBe(2);
    expect(expectOneLineError(r)).toContain(`${junk}: offset 0: unrecognized file`);

    const empty = join(dir, 'empty');
    writeFileSync(empty, '');
    expect(pgwal(['inspect', empty]).status).toBe(2);

    const missing = pgwal(['inspect', join(dir, 'nope')]);
    expect(missing.status).toBe(2);
    expect(expectOneLineError(missing)).toMatch(/no such file/);

    const badLsn = pgwal(['inspect', '--start', 'zz', walDir]);
    expect(badLsn.status).toBe(2);
    expect(expectOneLineError(badLsn)).toMatch(/invalid LSN "zz"/);
  });

  it('validlsn answers from a history file with exit 0/1 and the documented JSON', () => {
    const hist = join(dir, '00000003.history');
    writeFileSync(hist, '1\t0/400EC78\tno recovery target specified\n\n2\t0/400ED90\tno recovery target specified\n');
    const ok = pgwal(['validlsn', '1', '0/400EC78', '--history', hist, '--json']);
    expect(ok.status).toBe(0);
    expect(JSON.parse(ok.stdout)).toEqual({ code: 0, msg: 'Valid lsn', cnt: 2 });
    const bad = pgwal(['validlsn', '1', '0/400ED00', '--history', hist, '--json']);
    expect(bad.status).toBe(1);
    expect(JSON.parse(bad.stdout)).toEqual({ code: 1, msg: 'Invalid lsn', cnt: 1 });
    const usage = pgwal(['validlsn', 'x', '0/1', '--history', hist]);
    expect(usage.status).toBe(2);
    expect(pgwal(['validlsn', '1', '0/1']).status).toBe(2);
    const h = pgwalJson<{ kind: string; timeline: number; entries: unknown[] }>(['inspect', hist]);
    expect(h).toEqual({
      kind: 'history',
      path: hist,
      timeline: 3,
      entries: [
        { parentTimeline: 1, switchpoint: '0/400EC78', reason: 'no recovery target specified' },
        { parentTimeline: 2, switchpoint: '0/400ED90', reason: 'no recovery target specified' },
      ],
    });
  });

  it('prints help for every command and exits 0', () => {
    for (const args of [['--help'], ['inspect', '--help'], ['validlsn', '--help'], ['lsn', '--help'], ['slot', 'show', '--help']]) {
      const r = pgwal(args);
      expect(r.status, args.join(' ')).toBe(0);
      expect(r.stdout).toMatch(/Usage: pgwal/);
    }
    expect(pgwal(['frobnicate']).status).toBe(2);
  });
});
