/**
 * Backups: `pgha backup create` (pg_basebackup's tar stream, hashed, checked, gzip into the
 * repository) against `pg_basebackup -Ft -X fetch` alone into a directory; `pgha backup restore`
 * (unpack, check every file, fsync); `pgha archive push` per 16 MiB segment (one process each, as
 * archive_command runs it) against `cp` of the same file.
 *   npx tsx bench/backup.ts [scale=20] [segments=16]
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { cleanupAll, PgCluster } from '../test/harness/cluster.js';

const scale = Number(process.argv[2] ?? 20);
const segments = Number(process.argv[3] ?? 16);
const PGHA = join(import.meta.dirname, '..', 'dist', 'src', 'cli', 'pgha.js');
const secs = (t: number) => (performance.now() - t) / 1000;
const run = (cmd: string, args: string[]) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
};
const dirSize = (d: string): number => readdirSync(d, { withFileTypes: true }).reduce((n, e) => n + (e.isDirectory() ? dirSize(join(d, e.name)) : statSync(join(d, e.name)).size), 0);
try {
  const p = await PgCluster.init({ name: 'bench-bk', conf: { max_wal_size: '4GB', wal_keep_size: '1GB' } });
  await p.start();
  p.pgbench(['-i', '-s', String(scale), '-q']);
  await p.checkpoint();
  const size = Number(await p.sql('SELECT pg_database_size(current_database())'));
  const repo = p.ownedDir('repo');
  const plain = p.ownedDir('plain');
  let t = performance.now();
  run(join(p.binDir, 'pg_basebackup'), ['-d', p.conninfo, '-D', plain, '-F', 't', '-X', 'fetch', '-c', 'fast', '--manifest-checksums=SHA256', '--no-sync']);
  const baseSecs = secs(t);
  const rawBytes = dirSize(plain);
  t = performance.now();
  const m = JSON.parse(run(process.execPath, [PGHA, 'backup', 'create', '--repo', repo, '--source', p.conninfo, '--json']));
  const createSecs = secs(t);
  const to = join(p.ownedDir('restore'), 'data');
  t = performance.now();
  run(process.execPath, [PGHA, 'backup', 'restore', '--repo', repo, '--to', to, '--json']);
  const restoreSecs = secs(t);
  t = performance.now();
  run(process.execPath, [PGHA, 'backup', 'verify', '--repo', repo, '--json']);
  const verifySecs = secs(t);
  // archive push: full 16 MiB segments made by pgbench
  p.pgbench(['-c', '2', '-t', '20000']);
  await p.switchWal();
  const wal = readdirSync(p.walDir).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort().slice(0, segments);
  const seg = p.ownedDir('segs');
  for (const n of wal) execFileSync('cp', [join(p.walDir, n), join(seg, n)]);
  const arch = p.ownedDir('arch');
  mkdirSync(join(arch, 'r'));
  t = performance.now();
  for (const n of wal) run(process.execPath, [PGHA, 'archive', 'push', join(seg, n), '--repo', join(arch, 'r')]);
  const pushSecs = secs(t) / wal.length;
  t = performance.now();
  for (const n of wal) run('cp', [join(seg, n), join(arch, n)]);
  const cpSecs = secs(t) / wal.length;
  const stored = dirSize(join(arch, 'r', 'wal'));
  const mb = (n: number) => (n / (1 << 20)).toFixed(0);
  console.log(`database ${mb(size)} MiB (pgbench scale ${scale}); tar stream ${mb(rawBytes)} MiB`);
  console.log(`pg_basebackup -Ft -X fetch alone: ${baseSecs.toFixed(2)} s (${(rawBytes / (1 << 20) / baseSecs).toFixed(0)} MiB/s)`);
  console.log(`pgha backup create:                ${createSecs.toFixed(2)} s (${(m.object.size / (1 << 20) / createSecs).toFixed(0)} MiB/s), stored ${mb(m.object.storedSize)} MiB (${(m.object.size / m.object.storedSize).toFixed(1)}x)`);
  console.log(`pgha backup restore:               ${restoreSecs.toFixed(2)} s (${(m.object.size / (1 << 20) / restoreSecs).toFixed(0)} MiB/s)`);
  console.log(`pgha backup verify:                ${verifySecs.toFixed(2)} s`);
  console.log(`archive push: ${(pushSecs * 1000).toFixed(0)} ms per 16 MiB segment (${wal.length} segments, stored ${(wal.length * 16 / (stored / (1 << 20))).toFixed(1)}x smaller), cp ${(cpSecs * 1000).toFixed(0)} ms`);
} finally {
  await cleanupAll();
}
