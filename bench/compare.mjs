#!/usr/bin/env node
// Whole-process comparison: `pgwal inspect --stats` (native, and PGHA_NATIVE=0) vs `pg_waldump --stats`
// over the same directory of WAL segments (default bench/data/wal-1g from bench/make-wal.mjs).
// Each command runs `runs` times after one warm-up (page cache hot); prints median wall time,
// throughput and peak RSS (GNU time), and checks that both report the same record count.
//   node bench/compare.mjs [dir] [runs=7]
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const dir = process.argv[2] ?? join(root, 'bench', 'data', 'wal-1g');
const runs = Number(process.argv[3] ?? 7);
const bin = process.env.PG_BINDIR ?? '/usr/lib/postgresql/15/bin';
const segs = readdirSync(dir).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort();
const bytes = segs.reduce((a, s) => a + statSync(join(dir, s)).size, 0);

function timed(cmd, args, env = {}) {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %M', cmd, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 1 << 26 });
  const lines = r.stderr.trim().split('\n');
  const [secs, kb] = lines[lines.length - 1].split(' ').map(Number);
  return { secs, rssMiB: kb / 1024, stdout: r.stdout, stderr: r.stderr, status: r.status };
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const commands = {
  'pg_waldump --stats': [join(bin, 'pg_waldump'), ['--stats', '-p', dir, segs[0], segs[segs.length - 1]], {}],
  'pgwal inspect --stats (native)': [process.execPath, [join(root, 'dist/src/cli/pgwal.js'), 'inspect', '--stats', '--json', '--no-progress', dir], {}],
  'pgwal inspect --stats (PGHA_NATIVE=0)': [process.execPath, [join(root, 'dist/src/cli/pgwal.js'), 'inspect', '--stats', '--json', '--no-progress', dir], { PGHA_NATIVE: '0' }],
};

const results = {};
for (const [name, [cmd, args, env]] of Object.entries(commands)) {
  timed(cmd, args, env); // warm-up
  const samples = [];
  let last;
  for (let i = 0; i < runs; i++) samples.push((last = timed(cmd, args, env)));
  results[name] = { secs: median(samples.map((s) => s.secs)), rss: Math.max(...samples.map((s) => s.rssMiB)), last };
}
const waldumpTotal = /Total\s+(\d+)/.exec(results['pg_waldump --stats'].last.stdout)?.[1];
const pgwalTotal = JSON.parse(results['pgwal inspect --stats (native)'].last.stdout).records;
console.log(`WAL: ${segs.length} segments, ${(bytes / 2 ** 30).toFixed(2)} GiB in ${dir}; median of ${runs} runs after a warm-up`);
console.log(`records: pg_waldump ${waldumpTotal}, pgwal ${pgwalTotal}${String(waldumpTotal) === String(pgwalTotal) ? ' (equal)' : ' (DIFFERENT)'}`);
console.log('| command | wall s | GB/s | peak RSS MiB | vs pg_waldump |');
console.log('|---|---:|---:|---:|---:|');
const base = results['pg_waldump --stats'].secs;
for (const [name, r] of Object.entries(results)) {
  console.log(`| ${name} | ${r.secs.toFixed(3)} | ${(bytes / 1e9 / r.secs).toFixed(2)} | ${r.rss.toFixed(0)} | ${(base / r.secs).toFixed(2)}× |`);
}
