#!/usr/bin/env node
// Produce benchmark WAL: 64 consecutive 16 MiB segments (1 GiB) of real pgbench WAL from a throwaway
// PostgreSQL 15 cluster, copied to bench/data/wal-1g/. Re-runnable; the cluster is removed afterwards.
//   node bench/make-wal.mjs [segments=64] [fpi|dense]
// fpi (default): a checkpoint every 10 s of pgbench, so full-page images are most of the bytes (~1.2M
// records per GiB). dense: full_page_writes=off and no checkpoints, so the GiB is ~10M small records
// (the record walk, not the byte copying, dominates) — written to bench/data/wal-1g-dense/.
import { execFileSync, spawnSync } from 'node:child_process';
import { chownSync, copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const want = Number(process.argv[2] ?? 64);
const kind = process.argv[3] ?? 'fpi';
if (kind !== 'fpi' && kind !== 'dense') throw new Error(`kind must be fpi or dense, not ${kind}`);
const root = dirname(dirname(fileURLToPath(import.meta.url)));
const out = join(root, 'bench', 'data', kind === 'dense' ? 'wal-1g-dense' : 'wal-1g');
const bin = process.env.PG_BINDIR ?? '/usr/lib/postgresql/15/bin';
const asRoot = process.getuid?.() === 0;
const tmp = mkdtempSync(join(tmpdir(), 'pgha-bench-'));
const pgdata = join(tmp, 'data');
const port = 20000 + Math.floor(Math.random() * 20000);
if (asRoot) chownSync(tmp, Number(execFileSync('id', ['-u', 'postgres']).toString()), Number(execFileSync('id', ['-g', 'postgres']).toString()));

function run(cmd, args, opts = {}) {
  const [c, a] = asRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
  const r = spawnSync(c, a, { encoding: 'utf8', ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}
const psql = (sql) => run(join(bin, 'psql'), ['-h', tmp, '-p', String(port), '-d', 'postgres', '-Atc', sql]).trim();

try {
  run(join(bin, 'initdb'), ['-D', pgdata, '-A', 'trust', '--no-sync']);
  writeFileSync(
    join(pgdata, 'postgresql.auto.conf'),
    `port=${port}\nlisten_addresses=''\nunix_socket_directories='${tmp}'\nmax_wal_size='8GB'\nwal_keep_size='4GB'\nfsync=off\nsynchronous_commit=off\n${kind === 'dense' ? "checkpoint_timeout='1d'\nfull_page_writes=off\n" : "checkpoint_timeout='30s'\n"}`,
  );
  run(join(bin, 'pg_ctl'), ['-D', pgdata, '-l', join(tmp, 'log'), '-w', 'start']);
  run(join(bin, 'pgbench'), ['-h', tmp, '-p', String(port), '-i', '-s', '20', 'postgres']);
  const startLsn = psql('select pg_current_wal_lsn()');
  const target = BigInt(want + 2) * 16n * 1024n * 1024n;
  const toNum = (l) => { const [h, lo] = l.split('/'); return (BigInt('0x' + h) << 32n) | BigInt('0x' + lo); };
  while (toNum(psql('select pg_current_wal_lsn()')) - toNum(startLsn) < target) {
    run(join(bin, 'pgbench'), ['-h', tmp, '-p', String(port), '-c', '2', '-T', '10', 'postgres']);
    if (kind === 'fpi') psql('checkpoint'); // full-page images after each checkpoint, as in production
  }
  psql('select pg_switch_wal()');
  run(join(bin, 'pg_ctl'), ['-D', pgdata, '-m', 'fast', '-w', 'stop']);
  const segs = readdirSync(join(pgdata, 'pg_wal')).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort();
  // skip the first two (pgbench -i) and take `want` consecutive segments
  const pick = segs.slice(2, 2 + want);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  for (const s of pick) copyFileSync(join(pgdata, 'pg_wal', s), join(out, s));
  console.log(`wrote ${pick.length} segments ${pick[0]} .. ${pick.at(-1)} to ${out}`);
} finally {
  spawnSync(asRoot ? 'runuser' : join(bin, 'pg_ctl'), asRoot ? ['-u', 'postgres', '--', join(bin, 'pg_ctl'), '-D', pgdata, '-m', 'immediate', 'stop'] : ['-D', pgdata, '-m', 'immediate', 'stop']);
  rmSync(tmp, { recursive: true, force: true });
}
