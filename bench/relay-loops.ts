/**
 * pgha-proxy's session relay (no pooling) with its default loops (up to one per core, sessions
 * filling the first until it uses half a core) and with one loop,
 * against PgBouncer in session mode, taking turns (order reversed every other round), on one
 * PostgreSQL 15 (scale 10, fsync off): `pgbench -S -c 16 -j 2` per mode, TPS and CPU per
 * transaction of each proxy process (all its threads), medians over the rounds.
 *   npx tsx bench/relay-loops.ts [seconds per run=15] [rounds=6] [modes=simple,extended,prepared] [fresh]
 * Runs are long by default: without pooling every run's 16 clients get 16 new backends through the
 * relay, while PgBouncer's session pool keeps its server connections (and their backends' warm
 * caches and page tables) from one run to the next, which shows in short runs. `fresh` adds
 * PgBouncer with new backends for every run (its server connections terminated before it), to
 * measure that.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { cleanupAll } from '../test/harness/cluster.js';
import { startProxy } from '../test/support/proxy.js';
import { benchCluster, cpuMs, startPgbouncer, stopPgbouncers } from './support/pgbouncer.js';

const secs = Number(process.argv[2] ?? 15);
const rounds = Number(process.argv[3] ?? 6);
const modes = (process.argv[4] ?? 'simple,extended,prepared').split(',');
const fresh = process.argv[5] === 'fresh';
const PASSWORD = 'bench-relay-secret';

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

try {
  const { c, userlist, pgbenchBin: bench } = await benchCluster('bench-relay-loops', PASSWORD);
  const bouncer = await startPgbouncer(c.port, 'session', userlist);
  const two = await startProxy([c.port], ['--backend-sslmode', 'disable', '--log-level', 'warn']);
  const one = await startProxy([c.port], ['--backend-sslmode', 'disable', '--log-level', 'warn', '--relay-threads', '1']);
  const targets = [
    { name: 'PgBouncer session', port: bouncer.port, pid: bouncer.pid, fresh: false },
    ...(fresh ? [{ name: 'PgBouncer, fresh backends', port: bouncer.port, pid: bouncer.pid, fresh: true }] : []),
    { name: 'relay, default loops', port: two.port, pid: two.pid, fresh: false },
    { name: 'relay, 1 loop', port: one.port, pid: one.pid, fresh: false },
  ];
  const table: string[] = ['| mode | target | median TPS | median CPU µs/tx | runs (kTPS) |', '|---|---|---:|---:|---|'];
  for (const mode of modes) {
    const got = new Map<string, Array<{ tps: number; cpu: number }>>();
    for (let r = 0; r < rounds; r++) {
      for (const t of r % 2 ? [...targets].reverse() : targets) {
        // PgBouncer's idle server connections ended: its next run logs in new backends, as the relay's runs do
        if (t.fresh) c.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()");
        const cpu0 = cpuMs(t.pid);
        const out = spawnSync(bench, ['-h', '127.0.0.1', '-p', String(t.port), '-U', 'postgres', '-S', '-M', mode, '-c', '16', '-j', '2', '-T', String(secs), '-n', 'postgres'], { encoding: 'utf8', env: { ...process.env, PGPASSWORD: PASSWORD } }).stdout;
        const txs = Number(/actually processed: (\d+)/.exec(out)?.[1] ?? 0);
        const tps = Number(/tps = ([\d.]+)/.exec(out)?.[1] ?? NaN);
        const cpu = txs > 0 ? ((cpuMs(t.pid) - cpu0) * 1000) / txs : NaN;
        console.error(`${mode.padEnd(9)} ${t.name.padEnd(22)} ${tps.toFixed(0)} tps, ${cpu.toFixed(1)} CPU µs/tx`);
        got.set(t.name, [...(got.get(t.name) ?? []), { tps, cpu }]);
      }
    }
    for (const t of targets) {
      const runs = got.get(t.name)!;
      table.push(`| ${mode} | ${t.name} | ${median(runs.map((x) => x.tps)).toFixed(0)} | ${median(runs.map((x) => x.cpu)).toFixed(1)} | ${runs.map((x) => (x.tps / 1000).toFixed(1)).join(', ')} |`);
    }
  }
  console.log(`${execFileSync('nproc', { encoding: 'utf8' }).trim()} cores; pgbench -S -c 16 -j 2, ${secs} s per run, ${rounds} rounds\n`);
  console.log(table.join('\n'));
  await two.stop();
  await one.stop();
} finally {
  stopPgbouncers();
  await cleanupAll();
}
process.exit(0);
