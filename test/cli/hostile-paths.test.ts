/**
 * pgwal on paths that are not what they should be: a device (/dev/zero, directly or through a
 * symlink) or a FIFO in place of a slot state file, a history file, pg_control or a history file
 * inside a WAL directory or a data directory. Each must end at once with exit 2 and one line
 * `pgwal: error: PATH: not a regular file` — never grow without bound, never block. Files larger
 * than their format allows are refused by size. Every run has a timeout, so a regression fails
 * instead of hanging the suite.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PGWAL, ROOT } from '../support/cli.js';

const FX = join(ROOT, 'fixtures', 'pg15');
const dir = mkdtempSync(join(tmpdir(), 'pgwal-hostile-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Run {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** pgwal with a hard timeout (SIGKILL): a read of /dev/zero or an open of a FIFO that hangs fails the test */
function run(args: string[], timeoutMs = 15_000): Run {
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [PGWAL, ...args], { encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1 << 24 });
  return { status: r.status, signal: r.signal, stdout: r.stdout ?? '', stderr: r.stderr ?? '', ms: Date.now() - t0 };
}

function expectNotRegular(args: string[], path: string): void {
  const r = run(args);
  expect(r.signal, `pgwal ${args.join(' ')} was killed after its timeout`).toBeNull();
  expect(r.status, `pgwal ${args.join(' ')}: ${r.stderr}`).toBe(2);
  expect(r.stderr).toBe(`pgwal: error: ${path}: not a regular file\n`);
  expect(r.stdout).toBe('');
}

function mkfifo(path: string): void {
  const r = spawnSync('mkfifo', [path]);
  if (r.status !== 0) throw new Error(`mkfifo ${path}: ${r.stderr}`);
}

/** a data directory from the PG 15 fixtures: pg_control, pg_wal with two segments and history files */
function dataDir(name: string): string {
  const d = join(dir, name);
  mkdirSync(join(d, 'global'), { recursive: true });
  copyFileSync(join(FX, 'pg_control'), join(d, 'global', 'pg_control'));
  cpSync(join(FX, 'wal'), join(d, 'pg_wal'), { recursive: true });
  return d;
}

/** a WAL directory whose newest timeline (2) has a segment, so its history file is read */
function walDirWithHistory(name: string, history: (path: string) => void): string {
  const d = join(dir, name);
  cpSync(join(FX, 'wal'), d, { recursive: true });
  copyFileSync(join(d, '000000010000000000000008'), join(d, '000000020000000000000008'));
  history(join(d, '00000002.history'));
  return d;
}

describe('pgwal refuses what is not a regular file, at once', () => {
  it('slot show / verify of /dev/zero and of a FIFO', () => {
    expectNotRegular(['slot', 'show', '/dev/zero'], '/dev/zero');
    expectNotRegular(['slot', 'verify', '/dev/zero', '--json'], '/dev/zero');
    const fifo = join(dir, 'state');
    mkfifo(fifo);
    expectNotRegular(['slot', 'show', fifo], fifo);
    expectNotRegular(['slot', 'verify', fifo], fifo);
    // a FIFO as a slot's state file inside a data directory
    const d = join(dir, 'slotdata');
    mkdirSync(join(d, 'pg_replslot', 'cdc'), { recursive: true });
    mkfifo(join(d, 'pg_replslot', 'cdc', 'state'));
    expectNotRegular(['slot', 'verify', d], join(d, 'pg_replslot', 'cdc', 'state'));
  });

  it('validlsn --history of /dev/zero and of a FIFO', () => {
    expectNotRegular(['validlsn', '1', '0/A00000', '--history', '/dev/zero'], '/dev/zero');
    const fifo = join(dir, '00000002.history');
    mkfifo(fifo);
    expectNotRegular(['validlsn', '1', '0/A00000', '--history', fifo, '--json'], fifo);
  });

  it('lsn and validlsn --pgdata whose pg_control is a symlink to /dev/zero, or a FIFO', () => {
    const d = dataDir('zero-control');
    const control = join(d, 'global', 'pg_control');
    rmSync(control);
    symlinkSync('/dev/zero', control);
    expectNotRegular(['lsn', '--pgdata', d], control);
    expectNotRegular(['lsn', '--pgdata', d, '--json'], control);
    expectNotRegular(['validlsn', '1', '0/A00000', '--pgdata', d], control);
    rmSync(control);
    mkfifo(control);
    expectNotRegular(['lsn', '--pgdata', d], control);
    expectNotRegular(['inspect', control], control);
  });

  it('inspect of a WAL directory or a data directory whose history file links to /dev/zero or is a FIFO', () => {
    const zero = walDirWithHistory('zero-history', (p) => symlinkSync('/dev/zero', p));
    expectNotRegular(['inspect', zero], join(zero, '00000002.history'));
    expectNotRegular(['inspect', '--stats', zero, '--json'], join(zero, '00000002.history'));
    const fifo = walDirWithHistory('fifo-history', (p) => mkfifo(p));
    expectNotRegular(['inspect', fifo], join(fifo, '00000002.history'));
    const d = dataDir('datadir-history');
    copyFileSync(join(d, 'pg_wal', '000000010000000000000008'), join(d, 'pg_wal', '000000020000000000000008'));
    symlinkSync('/dev/zero', join(d, 'pg_wal', '00000002.history'));
    expectNotRegular(['inspect', d], join(d, 'pg_wal', '00000002.history'));
  });

  it('inspect of /dev/zero, a FIFO, and a symlink to /dev/zero named like each kind of file', () => {
    expectNotRegular(['inspect', '/dev/zero'], '/dev/zero');
    const fifo = join(dir, 'inspect-fifo');
    mkfifo(fifo);
    expectNotRegular(['inspect', fifo], fifo);
    for (const name of ['00000003.history', 'pg_control', 'state', '000000010000000000000001']) {
      const link = join(dir, `zero-${name}`);
      mkdirSync(link);
      symlinkSync('/dev/zero', join(link, name));
      expectNotRegular(['inspect', join(link, name)], join(link, name));
    }
  });

  it('lsn --pgdata passes over a history file that pg_control does not refer to when it is not a regular file', () => {
    // pg_control says timeline 1; a FIFO 00000002.history beside a timeline-2 segment must not hang the answer
    const d = dataDir('skip-history');
    copyFileSync(join(d, 'pg_wal', '000000010000000000000008'), join(d, 'pg_wal', '000000020000000000000008'));
    mkfifo(join(d, 'pg_wal', '00000002.history'));
    const r = run(['lsn', '--pgdata', d, '--json']);
    expect(r.signal).toBeNull();
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).timeLineID).toBe('1');
  });

  it('a FIFO named like a segment in a WAL directory is left out, not opened', () => {
    const d = join(dir, 'fifo-segment');
    cpSync(join(FX, 'wal'), d, { recursive: true });
    mkfifo(join(d, '000000010000000000000001'));
    const r = run(['inspect', d, '--json']);
    expect(r.signal).toBeNull();
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).files).toEqual(['000000010000000000000007', '000000010000000000000008']);
  });
});

describe('pgwal refuses files larger than their format', () => {
  it('a history file over 1 MiB, a pg_control over 8192 bytes, a slot state file over 200 bytes', () => {
    const hist = join(dir, 'big', '00000002.history');
    mkdirSync(join(dir, 'big'));
    const text = '1\t0/A00000\tno recovery target specified\n' + '#'.repeat(2 << 20) + '\n';
    writeFileSync(hist, text);
    const h = run(['validlsn', '1', '0/A00000', '--history', hist]);
    expect(h.status).toBe(2);
    expect(h.stderr).toBe(`pgwal: error: ${hist}: offset ${1 << 20}: timeline history file too large (expected at most ${1 << 20} bytes, got ${text.length} bytes)\n`);

    const d = dataDir('big-control');
    const control = join(d, 'global', 'pg_control');
    writeFileSync(control, Buffer.concat([readFileSync(join(FX, 'pg_control')), Buffer.alloc(1 << 20)]));
    const c = run(['lsn', '--pgdata', d]);
    expect(c.status).toBe(2);
    expect(c.stderr).toMatch(new RegExp(`^pgwal: error: ${control}: offset 8192: pg_control file too large \\(expected at most 8192 bytes, got ${8192 + (1 << 20)} bytes\\)\\n$`));

    const state = join(dir, 'big', 'state');
    writeFileSync(state, Buffer.concat([readFileSync(join(FX, 'slots', 'cdc.state')), Buffer.alloc(1 << 20)]));
    const s = run(['slot', 'verify', state]);
    expect(s.status).toBe(1);
    expect(s.stdout).toMatch(/replication slot state file too large \(expected at most 200 bytes/);
  });
});
