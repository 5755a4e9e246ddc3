/**
 * WAL file transfer through the agent (`pgha agent` in its own process; GET walFile on loopback,
 * sha256 verified, fsynced, renamed into place) vs a local copy of the same files (copy + fsync),
 * over bench/data/wal-1g. Needs dist/ (npm install).
 *   npx tsx bench/agent-transfer.ts
 */
import { closeSync, copyFileSync, fsyncSync, linkSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawn } from 'node:child_process';
import { AgentClient } from '../src/ship/client.js';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const data = join(root, 'bench', 'data', 'wal-1g');
const names = readdirSync(data).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort();
const bytes = names.reduce((a, n) => a + statSync(join(data, n)).size, 0);
const work = mkdtempSync(join(tmpdir(), 'pgha-xfer-'));
const pgdata = join(work, 'pgdata');
mkdirSync(join(pgdata, 'pg_wal'), { recursive: true });
for (const n of names) linkSync(join(data, n), join(pgdata, 'pg_wal', n));
const TOKEN = 'bench-token-0123456789';
// the agent in its own process, as on a real peer (sharing this process's event loop would halve both)
const port = 20000 + Math.floor(Math.random() * 20000);
const agent = spawn(process.execPath, [join(root, 'dist', 'src', 'cli', 'pgha.js'), 'agent', '--pgdata', pgdata, '--name', 'bench', '--token', TOKEN, '--listen', `127.0.0.1:${port}`], {
  env: { ...process.env, PGHA_LOG_LEVEL: 'warn' },
  stdio: 'inherit',
});
const client = new AgentClient(`http://127.0.0.1:${port}`, TOKEN, 120_000);
for (let i = 0; ; i++) {
  try {
    if ((await fetch(`http://127.0.0.1:${port}/health`)).ok) break;
  } catch {
    if (i > 100) throw new Error('agent did not start');
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** what rejoin does: up to CONCURRENCY downloads at once */
const CONCURRENCY = Number(process.env.PGHA_FETCH_CONCURRENCY ?? 4);
async function viaAgent(): Promise<number> {
  const dest = mkdtempSync(join(work, 'agent-'));
  const t = performance.now();
  const queue = [...names];
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    for (let n = queue.shift(); n !== undefined; n = queue.shift()) await client.download(n, dest);
  }));
  const s = (performance.now() - t) / 1000;
  rmSync(dest, { recursive: true });
  return s;
}
function localCopy(): number {
  const dest = mkdtempSync(join(work, 'local-'));
  const t = performance.now();
  for (const n of names) {
    copyFileSync(join(data, n), join(dest, n));
    const fd = openSync(join(dest, n), 'r');
    fsyncSync(fd);
    closeSync(fd);
  }
  const s = (performance.now() - t) / 1000;
  rmSync(dest, { recursive: true });
  return s;
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
await viaAgent();
localCopy();
const agentTimes: number[] = [];
const local: number[] = [];
for (let i = 0; i < 5; i++) {
  agentTimes.push(await viaAgent());
  local.push(localCopy());
}
const a = median(agentTimes);
const l = median(local);
console.log(`RESULT transfer | ${CONCURRENCY} concurrent downloads | ${names.length} segments, ${(bytes / 2 ** 30).toFixed(2)} GiB | agent ${(bytes / 1e9 / a).toFixed(2)} GB/s (${a.toFixed(2)} s) | local copy ${(bytes / 1e9 / l).toFixed(2)} GB/s (${l.toFixed(2)} s) | ratio ${(l / a).toFixed(2)}x`);
agent.kill('SIGTERM');
rmSync(work, { recursive: true, force: true });
