/**
 * pgha-proxy --pool-mode against PgBouncer (Debian package, installed when missing) in the same
 * mode, on one PostgreSQL 15 (scale 10, fsync off), both authenticating clients with SCRAM-SHA-256
 * from the same userlist.txt and pooling 20 server connections:
 *   - pgbench -C -S (a new connection per transaction): direct, PgBouncer transaction, pgha-proxy transaction
 *   - pgbench -S -c 16 -j 2, -M simple / extended / prepared: PgBouncer vs pgha-proxy, transaction mode
 *   - the same in session mode: PgBouncer session, pgha-proxy --pool-mode session, and pgha-proxy's
 *     relay without pooling (today's default mode, native relay)
 * CPU per transaction is user+system time of the pooler process itself. One run of each, or with
 * `rounds` > 1 the -S cases that many times (direct once), the targets taking turns (order reversed
 * every other round), and tables of medians.
 *   npx tsx bench/pool.ts [seconds per pgbench run=8] [rounds=1]
 * Writes bench/results/pool.json and prints a Markdown table.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cleanupAll } from '../test/harness/cluster.js';
import { startProxy, type RunningProxy } from '../test/support/proxy.js';
import { benchCluster, cpuMs, pgbouncerBin, startPgbouncer, stopPgbouncers } from './support/pgbouncer.js';

const secs = Number(process.argv[2] ?? 8);
const rounds = Math.max(1, Number(process.argv[3] ?? 1));
const here = dirname(fileURLToPath(import.meta.url));
const PASSWORD = 'bench-pool-secret';
const POOL = 20;

interface Row {
  case: string;
  target: string;
  tps: number;
  failed: string;
  cpuUsPerTx: number | null;
  error?: string;
}

try {
  const { c, userlist, pgbenchBin: bench } = await benchCluster('bench-pool', PASSWORD);
  const pgbench = (port: number, args: string[]): { out: string; err: string } => {
    const r = spawnSync(bench, ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', ...args, 'postgres'], { encoding: 'utf8', maxBuffer: 1 << 26, env: { ...process.env, PGPASSWORD: PASSWORD } });
    return { out: r.stdout, err: r.stderr };
  };
  const proxyArgs = (mode: 'session' | 'transaction') => ['--backend-sslmode', 'disable', '--pool-mode', mode, '--pool-size', String(POOL), '--auth-file', userlist, '--log-level', 'warn'];
  const txnBouncer = await startPgbouncer(c.port, 'transaction', userlist, POOL);
  const sesBouncer = await startPgbouncer(c.port, 'session', userlist, POOL);
  const txnProxy: RunningProxy = await startProxy([c.port], proxyArgs('transaction'));
  const sesProxy: RunningProxy = await startProxy([c.port], proxyArgs('session'));
  const relay: RunningProxy = await startProxy([c.port], ['--backend-sslmode', 'disable', '--log-level', 'warn']);
  const rows: Row[] = [];
  const measure = (label: string, target: string, port: number, pid: number | null, args: string[]) => {
    const cpu0 = pid ? cpuMs(pid) : 0;
    const { out, err } = pgbench(port, [...args, '-T', String(secs), '-n']);
    const tps = Number(/tps = ([\d.]+)/.exec(out)?.[1] ?? NaN);
    const txs = Number(/actually processed: (\d+)/.exec(out)?.[1] ?? 0);
    const failed = /number of failed transactions: (\d+)/.exec(out)?.[1] ?? '?';
    const aborted = /(\d+) of \d+ clients? aborted|client \d+ aborted/.exec(err + out);
    const row: Row = { case: label, target, tps, failed, cpuUsPerTx: pid && txs > 0 ? ((cpuMs(pid) - cpu0) * 1000) / txs : null };
    if (!(tps > 0) || aborted) row.error = (err.split('\n').find((l) => /error|abort|FATAL/i.test(l)) ?? 'no tps').slice(0, 160);
    rows.push(row);
    console.error(`${label.padEnd(34)} ${target.padEnd(28)} ${Number.isFinite(tps) ? tps.toFixed(0) : '—'} tps${row.cpuUsPerTx !== null ? `, ${row.cpuUsPerTx.toFixed(1)} CPU µs/tx` : ''}${row.error ? `  (${row.error})` : ''}`);
  };
  // a new connection per transaction
  const conn = ['-C', '-S', '-M', 'simple', '-c', '16', '-j', '2'];
  measure('-C -S -c 16 (transaction)', 'direct', c.port, null, conn);
  measure('-C -S -c 16 (transaction)', 'PgBouncer transaction', txnBouncer.port, txnBouncer.pid, conn);
  measure('-C -S -c 16 (transaction)', 'pgha-proxy transaction', txnProxy.port, txnProxy.pid, conn);
  for (let round = 0; round < rounds; round++) {
    for (const mode of ['simple', 'extended', 'prepared']) {
      const args = ['-S', '-M', mode, '-c', '16', '-j', '2'];
      const both = [() => measure(`-S -c 16 -M ${mode} (transaction)`, 'PgBouncer transaction', txnBouncer.port, txnBouncer.pid, args), () => measure(`-S -c 16 -M ${mode} (transaction)`, 'pgha-proxy transaction', txnProxy.port, txnProxy.pid, args)];
      for (const m of round % 2 ? both.reverse() : both) m();
    }
  }
  for (let round = 0; round < rounds; round++) {
    for (const mode of ['simple', 'extended', 'prepared']) {
      const args = ['-S', '-M', mode, '-c', '16', '-j', '2'];
      const label = `-S -c 16 -M ${mode} (session)`;
      if (round === 0) measure(label, 'direct', c.port, null, args);
      const all = [() => measure(label, 'PgBouncer session', sesBouncer.port, sesBouncer.pid, args), () => measure(label, 'pgha-proxy --pool-mode session', sesProxy.port, sesProxy.pid, args), () => measure(label, 'pgha-proxy relay (no pooling)', relay.port, relay.pid, args)];
      for (const m of round % 2 ? all.reverse() : all) m();
    }
  }
  const version = execFileSync(pgbouncerBin(), ['--version'], { encoding: 'utf8' }).split('\n')[0];
  const result = { date: new Date().toISOString(), command: `npx tsx bench/pool.ts ${secs} ${rounds}`, machine: `${execFileSync('nproc', { encoding: 'utf8' }).trim()} cores, PostgreSQL ${c.psql('SHOW server_version').trim()}, ${version}`, setup: `scale 10, fsync off, pool size ${POOL}, SCRAM-SHA-256 clients, TCP 127.0.0.1, ${secs} s per run`, rows };
  mkdirSync(join(here, 'results'), { recursive: true });
  writeFileSync(join(here, 'results', 'pool.json'), JSON.stringify(result, null, 2) + '\n');
  console.log(`${result.machine}; ${result.setup}\n`);
  console.log('| case | target | TPS | failed | CPU µs/tx of the pooler |');
  console.log('|---|---|---:|---:|---:|');
  for (const r of rows) console.log(`| ${r.case} | ${r.target} | ${Number.isFinite(r.tps) ? r.tps.toFixed(0) : '—'} | ${r.failed}${r.error ? ` (${r.error})` : ''} | ${r.cpuUsPerTx === null ? '—' : r.cpuUsPerTx.toFixed(1)} |`);
  if (rounds > 1) {
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
    console.log(`\nTransaction mode, median of ${rounds} rounds:\n`);
    console.log('| case | PgBouncer TPS | pgha-proxy TPS | pgha-proxy/PgBouncer | CPU µs/tx PgBouncer | CPU µs/tx pgha-proxy |');
    console.log('|---|---:|---:|---:|---:|---:|');
    const of = (mode: string, pool: string, target: string) => rows.filter((r) => r.case === `-S -c 16 -M ${mode} (${pool})` && r.target === target);
    for (const mode of ['simple', 'extended', 'prepared']) {
      const [b, p] = [of(mode, 'transaction', 'PgBouncer transaction'), of(mode, 'transaction', 'pgha-proxy transaction')];
      const [bt, pt] = [median(b.map((r) => r.tps)), median(p.map((r) => r.tps))];
      console.log(`| -S -c 16 -M ${mode} | ${bt.toFixed(0)} | ${pt.toFixed(0)} | ${(pt / bt).toFixed(2)} | ${median(b.map((r) => r.cpuUsPerTx ?? NaN)).toFixed(1)} | ${median(p.map((r) => r.cpuUsPerTx ?? NaN)).toFixed(1)} |`);
    }
    console.log(`\nSession mode, median of ${rounds} rounds (TPS, then CPU µs/tx):\n`);
    console.log('| case | PgBouncer session | pgha-proxy --pool-mode session | relay (no pooling) | pool-mode session/PgBouncer | relay/PgBouncer |');
    console.log('|---|---:|---:|---:|---:|---:|');
    for (const mode of ['simple', 'extended', 'prepared']) {
      const [b, p, r] = ['PgBouncer session', 'pgha-proxy --pool-mode session', 'pgha-proxy relay (no pooling)'].map((t) => of(mode, 'session', t));
      const [bt, pt, rt] = [b, p, r].map((x) => median(x.map((y) => y.tps)));
      const [bc, pc, rc] = [b, p, r].map((x) => median(x.map((y) => y.cpuUsPerTx ?? NaN)).toFixed(1));
      console.log(`| -S -c 16 -M ${mode} | ${bt.toFixed(0)} (${bc}) | ${pt.toFixed(0)} (${pc}) | ${rt.toFixed(0)} (${rc}) | ${(pt / bt).toFixed(2)} | ${(rt / bt).toFixed(2)} |`);
    }
  }
  for (const p of [txnProxy, sesProxy, relay]) await p.stop();
  for (const b of [txnBouncer, sesBouncer]) process.kill(b.pid, 'SIGTERM');
} finally {
  stopPgbouncers();
  await cleanupAll();
}
process.exit(0);
