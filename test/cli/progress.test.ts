/**
 * Progress bars (src/log/progress.ts): drawn only on a terminal, nothing on a pipe or with JSON;
 * fed by a real pg_basebackup --progress (what a re-clone runs), whose last report matches the
 * size of the backup it wrote (du -sk --apparent-size); and `pgha rejoin --allow-reclone` of a
 * stranger node shows its pg_basebackup bar on a real pseudo-terminal (script(1)), not on a pipe.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, chmodSync, chownSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, PgCluster, waitFor } from '../harness/cluster.js';
import { startAgent, stopAgents } from '../support/agents.js';
import { PGHA, pgha } from '../support/cli.js';
import { PgInstance } from '../../src/pg/instance.js';
import { parseToolProgress, progress } from '../../src/log/progress.js';

/** a stream that says it is (or is not) a terminal, and keeps what was written */
function stream(isTTY: boolean): { s: NodeJS.WriteStream; text: () => string } {
  const p = new PassThrough();
  let out = '';
  p.on('data', (d: Buffer) => (out += d.toString()));
  Object.assign(p, { isTTY, columns: 100, cursorTo: () => true, clearLine: () => true, moveCursor: () => true });
  return { s: p as unknown as NodeJS.WriteStream, text: () => out };
}

let primary: PgCluster;

beforeAll(async () => {
  primary = await PgCluster.init({ name: 'progress' });
  await primary.start();
  await primary.sql('CREATE TABLE filler AS SELECT g, repeat(md5(g::text), 20) AS pad FROM generate_series(1, 40000) g');
}, 120_000);

afterAll(async () => {
  await stopAgents();
  await cleanupAll();
}, 60_000);

describe('progress bars', () => {
  it('on a terminal: a bar with its label and count; on a pipe or when disabled: nothing', async () => {
    const tty = stream(true);
    const bar = progress({ label: 'rejoin: fetching WAL', total: 3, unit: 'files', stream: tty.s });
    for (let i = 0; i < 3; i++) bar.increment();
    bar.stop();
    expect(tty.text()).toMatch(/rejoin: fetching WAL \[[^\]]+\] 100% 3\/3 files/);
    for (const [isTTY, enabled] of [[false, true], [true, false]] as const) {
      const out = stream(isTTY);
      const b = progress({ label: 'x', total: 3, unit: 'files', stream: out.s, enabled });
      b.increment();
      b.stop();
      expect(out.text(), `isTTY ${isTTY} enabled ${enabled}`).toBe('');
    }
  });

  it("reads a real pg_basebackup --progress: the last report is done = total, the backup's size as du -sk --apparent-size measures it", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgha-progress-'));
    const target = join(dir, 'copy');
    // the tool runs as the data directory's owner (PgInstance does it): give it the directory
    const owner = statSync(primary.dataDir);
    chownSync(dir, owner.uid, owner.gid);
    chmodSync(dir, 0o700);
    const reports: Array<{ done: number; total: number }> = [];
    const tool = new PgInstance({ pgdata: primary.dataDir, binDir: primary.binDir });
    await tool.run('pg_basebackup', ['-D', target, '-h', primary.host, '-p', String(primary.port), '-U', 'postgres', '-X', 'fetch', '-c', 'fast', '--no-sync', '--progress'], {
      onStderr: (chunk) => {
        const p = parseToolProgress(chunk);
        if (p) reports.push(p);
      },
    });
    expect(reports.length).toBeGreaterThan(0);
    const last = reports.at(-1)!;
    expect(last.done).toBe(last.total);
    for (let i = 1; i < reports.length; i++) expect(reports[i].done).toBeGreaterThanOrEqual(reports[i - 1].done);
    // pg_basebackup counts the bytes of the files it sends (with -X fetch the WAL too): du's apparent size of the copy
    const du = Number(execFileSync('du', ['-sk', '--apparent-size', target], { encoding: 'utf8' }).split('\t')[0]);
    expect(Math.abs(last.total - du) / du).toBeLessThan(0.05);
  });

  it('parses the report lines of pg_basebackup and pg_rewind, the last of a chunk', () => {
    expect(parseToolProgress('  1234/56789 kB (2%), 0/1 tablespace\r 5000/56789 kB (8%), 0/1 tablespace\r')).toEqual({ done: 5000, total: 56789 });
    expect(parseToolProgress('pg_rewind: 120/4096 kB (2%) copied')).toEqual({ done: 120, total: 4096 });
    expect(parseToolProgress('pg_basebackup: checkpoint completed')).toBeNull();
  });

  it('pgha rejoin re-cloning a node: a pg_basebackup bar on a terminal, none on a pipe', async () => {
    const token = 'progress-test-token-0123456789';
    const url = await startAgent('primary', primary, token);
    for (const where of ['terminal', 'pipe'] as const) {
      const stranger = await PgCluster.init({ name: `progress-stranger-${where}` });
      await stranger.start();
      stranger.stop('fast');
      const args = ['rejoin', '--pgdata', stranger.dataDir, '--source', url, '--token', token, '--pg-bin', stranger.binDir, '--allow-reclone'];
      let out: string;
      if (where === 'terminal') {
        // script(1) runs it on a pseudo-terminal of its own and copies what it writes to our pipe
        const s = spawn('script', ['-qfec', [process.execPath, PGHA, ...args].map((a) => `'${a}'`).join(' '), '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, TERM: 'xterm' } });
        let text = '';
        s.stdout.on('data', (d: Buffer) => (text += d.toString()));
        const code = await new Promise<number | null>((r) => s.once('close', r));
        expect(code, text).toBe(0);
        out = text;
        expect(out).toMatch(/rejoin: pg_basebackup \[[^\]]*\] 100% (\d+)\/\1 kB/);
      } else {
        const r = await pgha(args);
        expect(r.status, r.stderr).toBe(0);
        out = r.stdout + r.stderr;
        expect(out).not.toMatch(/pg_basebackup \[|\d+% \d+\/\d+ kB/);
      }
      expect(out).toMatch(/rejoined: reclone/);
      await waitFor(async () => (await stranger.sql("SELECT count(*) FROM pg_class WHERE relname = 'filler'")) === '1', 30_000, 'the clone has the primary\'s table');
      await stranger.cleanup();
    }
  });
});
