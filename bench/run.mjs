#!/usr/bin/env node
// All benchmarks in one run (npm run bench): generates bench/data/wal-1g when missing, then the
// CRC-32C and whole-segment scan suites (benny) and the whole-process comparison with pg_waldump.
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const run = (script, args = []) => {
  const r = spawnSync(process.execPath, [join(here, script), ...args], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
};
if (!existsSync(join(here, 'data', 'wal-1g'))) run('make-wal.mjs', ['64']);
run('crc32c.bench.mjs');
run('scan.bench.mjs');
run('compare.mjs');
