#!/usr/bin/env node
// Whole-process comparison: `pgwal inspect --stats` (native, and PGHA_NATIVE=0) vs `pg_waldump --stats`
// over the same directory of WAL segments. Without a directory argument: bench/data/wal-1g-dense
// (~12M small records per GiB, what the target names) and bench/data/wal-1g (full-page
// images are most of the bytes), both from bench/make-wal.mjs.
// The commands take turns (one run of each per round, after one warm-up round with the page cache
// hot), so a noisy neighbour hits them alike; prints the median wall time of `runs` rounds,
// throughput and peak RSS (GNU time), and checks that both report the same record count.
//   node bench/compare.mjs [dir] [runs=7] [--no-ts]
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const args = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const withTs = !process.argv.includes('--no-ts');
const dirs = args[0] ? [args[0]] : ['wal-1g-dense', 'wal-1g'].map((d) => join(root, 'bench', 'data', d)).filter((d) => existsSync(d));
const runs = Number(args[1] ?? 7);
const bin = process.env.PG_BINDIR ?? '/usr/lib/postgresql/15/bin';
if (dirs.length === 0) {
  console.error('no WAL to compare: run node bench/make-wal.mjs 64 dense (and node bench/make-wal.mjs 64) first');
  process.exit(2);
}

function timed(cmd, args, env = {}) {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %M', cmd, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 1 << 26 });
  const lines = r.stderr.trim().split('\n');
  const [secs, kb] = lines[lines.length - 1].split(' ').map(Number);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return { secs, rssMiB: kb / 1024, stdout: r.stdout };
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

for (const dir of dirs) {
  const segs = readdirSync(dir).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort();
  const bytes = segs.reduce((a, s) => a + statSync(join(dir, s)).size, 0);
  const pgwal = [join(root, 'dist/src/cli/pgwal.js'), 'inspect', '--stats', '--json', '--no-progress', dir];
  const commands = {
    'pg_waldump --stats': [join(bin, 'pg_waldump'), ['--stats', '-p', dir, segs[0], segs[segs.length - 1]], {}],
    'pgwal inspect --stats (native)': [process.execPath, pgwal, {}],
    ...(withTs ? { 'pgwal inspect --stats (PGHA_NATIVE=0)': [process.execPath, pgwal, { PGHA_NATIVE: '0' }] } : {}),
  };
  const samples = Object.fromEntries(Object.keys(commands).map((k) => [k, []]));
  for (let round = 0; round <= runs; round++) {
    for (const [name, [cmd, a, env]] of Object.entries(commands)) {
      const s = timed(cmd, a, env);
      if (round > 0) samples[name].push(s); // round 0 warms the page cache
    }
  }
  const results = Object.fromEntries(
    Object.entries(samples).map(([k, xs]) => [k, { secs: median(xs.map((s) => s.secs)), min: Math.min(...xs.map((s) => s.secs)), max: Math.max(...xs.map((s) => s.secs)), rss: Math.max(...xs.map((s) => s.rssMiB)), last: xs.at(-1) }]),
  );
  const waldumpTotal = /Total\s+(\d+)/.exec(results['pg_waldump --stats'].last.stdout)?.[1];
  const pgwalTotal = JSON.parse(results['pgwal inspect --stats (native)'].last.stdout).records;
  console.log(`\nWAL: ${segs.length} segments, ${(bytes / 2 ** 30).toFixed(2)} GiB in ${dir}; median of ${runs} rounds after a warm-up round`);
  console.log(`records: pg_waldump ${waldumpTotal}, pgwal ${pgwalTotal}${String(waldumpTotal) === String(pgwalTotal) ? ' (equal)' : ' (DIFFERENT)'}`);
  console.log('| command | wall s (median) | min–max | GB/s | peak RSS MiB | vs pg_waldump |');
  console.log('|---|---:|---:|---:|---:|---:|');
  const base = results['pg_waldump --stats'].secs;
  for (const [name, r] of Object.entries(results)) {
    console.log(`| ${name} | ${r.secs.toFixed(3)} | ${r.min.toFixed(2)}–${r.max.toFixed(2)} | ${(bytes / 1e9 / r.secs).toFixed(2)} | ${r.rss.toFixed(0)} | ${(base / r.secs).toFixed(2)}× |`);
  }
  if (String(waldumpTotal) !== String(pgwalTotal)) process.exitCode = 1;
}
