/**
 * Failover through pgha-proxy, several runs: a client writing ~100 tx/s through the proxy, kill -9 of
 * the primary postmaster, automatic failover. Reports per run the time from the kill to the first
 * acknowledged commit, client errors, and acknowledged commits missing on the new primary.
 *   npx tsx bench/proxy-failover.ts [runs per mode=5]
 * Modes: sync (primary + 2 standbys, synchronous_standby_names = ANY 1 (s1, s2), promotion and
 * fencing through node agents) and async (primary + 1 standby, pg_promote() over SQL).
 */
import { cleanupAll, PgCluster, sleep, waitFor } from '../test/harness/cluster.js';
import { startAgent, stopAgents } from '../test/support/agents.js';
import { startProxy } from '../test/support/proxy.js';
import { LEDGER_DDL, WriteLoad } from '../test/support/write-load.js';

const runs = Number(process.argv[2] ?? 5);
const TOKEN = 'bench-failover-token';
const HEALTH = ['--health-interval', '200', '--health-timeout', '1000', '--health-retries', '3', '--health-retry-delay', '100', '--auto-failover', '--log-level', 'warn'];

interface Row {
  mode: string;
  run: number;
  firstCommitMs: number | null;
  failoverMs: number;
  errors: number;
  acked: number;
  lost: number;
}

async function once(mode: 'sync' | 'async', run: number): Promise<Row> {
  const n = mode === 'sync' ? 2 : 1;
  const primary = await PgCluster.init({ name: `bfo-${mode}-${run}` });
  await primary.start();
  await primary.sql(LEDGER_DDL);
  const standbys: PgCluster[] = [];
  for (let i = 1; i <= n; i++) standbys.push(await primary.createStandby({ name: `bfo-${mode}-${run}-s${i}`, conf: { cluster_name: `s${i}`, wal_retrieve_retry_interval: '200ms' } }));
  const extra: string[] = [];
  if (mode === 'sync') {
    for (const c of [primary, ...standbys]) {
      await c.sql("ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (s1, s2)'");
      await c.sql('SELECT pg_reload_conf()');
    }
    await waitFor(async () => Number(await primary.sql("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'quorum'")) === 2, 30_000, 'quorum standbys');
    const agents = await Promise.all([primary, ...standbys].map((c, i) => startAgent(`n${i}`, c, TOKEN)));
    extra.push('--token', TOKEN, ...[primary, ...standbys].flatMap((c, i) => ['--agent', `127.0.0.1:${c.port}=${agents[i]}`]));
  }
  const proxy = await startProxy([primary, ...standbys].map((c) => c.port), [...HEALTH, ...extra]);
  try {
    const load = new WriteLoad(proxy.port, { workers: 2, txPerSecond: 100 });
    load.start();
    await sleep(3000);
    const killedAt = Date.now();
    await primary.kill9();
    await waitFor(async () => {
      const p = (await proxy.status()).primary;
      return p !== null && p !== `127.0.0.1:${primary.port}`;
    }, 30_000, 'new primary');
    await sleep(3000);
    const report = await load.stop();
    const s = await proxy.status();
    const winner = standbys.find((c) => `127.0.0.1:${c.port}` === s.primary)!;
    const v = await load.verify(winner);
    return { mode, run, firstCommitMs: report.firstCommitAfter(killedAt), failoverMs: s.failovers[0]?.ms ?? -1, errors: report.errors, acked: v.ackedRows + v.ackedDeletes, lost: v.lost };
  } finally {
    await proxy.stop();
    await stopAgents();
    await cleanupAll();
  }
}

const rows: Row[] = [];
try {
  for (let r = 1; r <= runs; r++) {
    for (const mode of ['sync', 'async'] as const) {
      const row = await once(mode, r);
      rows.push(row);
      console.error(JSON.stringify(row));
    }
  }
} finally {
  await cleanupAll();
}
console.log('| mode | run | kill → first acknowledged commit | failover (down → promoted) | client errors | acknowledged | lost |');
console.log('|---|---|---|---|---|---|---|');
for (const r of rows) console.log(`| ${r.mode} | ${r.run} | ${r.firstCommitMs} ms | ${r.failoverMs} ms | ${r.errors} | ${r.acked} | ${r.lost} |`);
for (const mode of ['sync', 'async']) {
  const m = rows.filter((r) => r.mode === mode);
  const t = m.map((r) => r.firstCommitMs ?? Infinity).sort((a, b) => a - b);
  console.log(`${mode}: first commit after kill median ${t[Math.floor(t.length / 2)]} ms, max ${t[t.length - 1]} ms; lost ${m.reduce((a, r) => a + r.lost, 0)} of ${m.reduce((a, r) => a + r.acked, 0)} acknowledged`);
}
process.exit(0);
