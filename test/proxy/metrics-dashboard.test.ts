/**
 * The proxy's throughput counters and the Grafana dashboard against real scrapes.
 *
 * A 2-node cluster (agents, one pgha-proxy with --auto-failover on the native relay, a second one
 * relaying in Node, a third pooling with --pool-mode transaction) and a real Prometheus (Debian's)
 * scraping the proxies and both agents:
 * - pgbench runs through each proxy into its own database; the proxy's transactions counter grows by
 *   exactly what PostgreSQL counted for that database (pg_stat_database xact_commit + xact_rollback)
 *   less the one transaction each backend runs at its start, and its queries counter by at least the
 *   statements pgbench ran;
 * - after a switchover, every metric a dashboard query reads has samples in the /metrics of a running
 *   proxy or agent, and every dashboard query, sent to Prometheus as Grafana would send it, parses
 *   and returns series (TPS above zero among them).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, freePort, sleep, waitFor } from '../harness/cluster.js';
import { stopAgentProcesses } from '../support/agents.js';
import { dashboardQueries, exposedNames, metricNames, withVariables } from '../support/grafana.js';
import { FAST_HEALTH, HA_TOKEN, HaCluster } from '../support/ha-cluster.js';
import { startProxy, type RunningProxy } from '../support/proxy.js';

const run = promisify(execFile);
const PROMETHEUS = process.env.PROMETHEUS_PATH ?? '/usr/bin/prometheus';
const TX = Number(process.env.PGHA_METRICS_TX ?? 200);

let ha: HaCluster | null = null;
let nodeRelay: RunningProxy | null = null;
/** a third proxy with --pool-mode transaction: the pool panels' series come from it */
let pooled: RunningProxy | null = null;
let prom: ChildProcess | null = null;
let promUrl = '';

async function scrape(url: string, token?: string): Promise<string> {
  const r = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  expect(r.status, url).toBe(200);
  return r.text();
}

/** a counter's value in a text exposition (one series without labels) */
function sample(text: string, name: string): number {
  const m = new RegExp(`^${name} ([0-9.e+]+)$`, 'm').exec(text);
  if (!m) throw new Error(`no sample of ${name} in the scrape`);
  return Number(m[1]);
}

/** transactions PostgreSQL counted for one database (both ends of a transaction: committed or rolled back) */
async function xacts(db: string): Promise<number> {
  const p = await ha!.primary();
  return Number(await p.pg.sql('SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1', [db]));
}

beforeAll(async () => {
  ha = await HaCluster.start({ name: 'metricsdash', nodes: 2 });
  nodeRelay = await startProxy(
    ha.nodes.map((n) => n.address),
    [...FAST_HEALTH, '--relay', 'node'],
    { env: { PGHA_TOKEN: HA_TOKEN } },
  );
  const authDir = mkdtempSync(join(tmpdir(), 'pgha-metrics-pool-'));
  writeFileSync(join(authDir, 'userlist.txt'), '"postgres" "pooled-secret"\n', { mode: 0o600 });
  pooled = await startProxy(
    ha.nodes.map((n) => n.address),
    [...FAST_HEALTH, '--pool-mode', 'transaction', '--pool-size', '2', '--auth-file', join(authDir, 'userlist.txt')],
    { env: { PGHA_TOKEN: HA_TOKEN } },
  );
  const p = await ha.primary();
  // nothing but the clients writes into these databases: autovacuum's transactions would count too
  await p.pg.sql('ALTER SYSTEM SET autovacuum = off');
  await p.pg.sql('SELECT pg_reload_conf()');
  for (const db of ['bench_native', 'bench_node']) {
    await p.pg.sql(`CREATE DATABASE ${db}`);
    p.pg.run('pgbench', ['-h', p.pg.host, '-p', String(p.pg.port), '-U', 'postgres', '-i', '-s', '1', '-q', db]);
  }
  // a real Prometheus scraping both proxies and both agents every second
  const dir = mkdtempSync(join(tmpdir(), 'pgha-prometheus-'));
  const port = await freePort();
  const agentTargets = ha.nodes.map((n) => new URL(n.agentUrl).host);
  writeFileSync(
    join(dir, 'prometheus.yml'),
    [
      'global: { scrape_interval: 1s, evaluation_interval: 1s }',
      'scrape_configs:',
      `  - job_name: pgha-proxy`,
      `    static_configs: [{ targets: [${[ha.proxy.adminPort, nodeRelay.adminPort, pooled.adminPort].map((x) => `"127.0.0.1:${x}"`).join(', ')}] }]`,
      `  - job_name: pgha-agent`,
      `    authorization: { type: Bearer, credentials: "${HA_TOKEN}" }`,
      `    static_configs: [{ targets: [${agentTargets.map((t) => `"${t}"`).join(', ')}] }]`,
      '',
    ].join('\n'),
  );
  prom = spawn(PROMETHEUS, [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], { stdio: 'ignore' });
  promUrl = `http://127.0.0.1:${port}`;
  await waitFor(async () => (await fetch(`${promUrl}/-/ready`).then((r) => r.ok, () => false)), 30_000, 'prometheus ready');
}, 300_000);

afterAll(async () => {
  if (prom?.pid) {
    const gone = new Promise((r) => prom!.once('exit', r));
    prom.kill('SIGTERM');
    await Promise.race([gone, sleep(5000)]);
    if (prom.exitCode === null) prom.kill('SIGKILL');
  }
  await nodeRelay?.stop();
  await pooled?.stop();
  await ha?.stop();
  await stopAgentProcesses();
  await cleanupAll();
}, 120_000);

async function promQuery(expr: string): Promise<{ status: string; error?: string; data?: { result: unknown[] } }> {
  const r = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
  return (await r.json()) as { status: string; error?: string; data?: { result: unknown[] } };
}

describe('throughput counters and the Grafana dashboard, against real scrapes', () => {
  for (const relay of ['native', 'node'] as const) {
    it(`${relay} relay: the transactions counter grows by what pg_stat_database counted for the database pgbench used`, async () => {
      const proxy = relay === 'native' ? ha!.proxy : nodeRelay!;
      const db = `bench_${relay}`;
      if (relay === 'native') expect((await proxy.status()).relay).toBe('native');
      const before = await scrape(`${proxy.admin}/metrics`);
      const x0 = await xacts(db);
      const bench = join(ha!.nodes[0].pg.clientBinDir, 'pgbench');
      const { stdout } = await run(bench, ['-h', '127.0.0.1', '-p', String(proxy.port), '-U', 'postgres', '-n', '-M', 'extended', '-c', '2', '-j', '1', '-t', String(TX), db]);
      expect(stdout).toMatch(new RegExp(`number of transactions actually processed: ${2 * TX}/${2 * TX}`));
      // the server's counts arrive when its backends end (the proxy closes them as pgbench
      // disconnects): wait until they are all in and the count holds still
      let last = -1;
      const seen: number[] = [];
      await waitFor(
        async () => {
          const now = (await xacts(db)) - x0;
          seen.push(now);
          const still = now === last && now >= 2 * TX;
          last = now;
          if (!still) await sleep(700);
          return still;
        },
        60_000,
        'pg_stat_database caught up',
      ).catch((e: Error) => {
        throw new Error(`${e.message}: transactions counted ${seen.join(', ')}`);
      });
      const dx = last;
      console.log(`${relay}: pg_stat_database transactions seen ${seen.join(', ')}`);
      const after = await scrape(`${proxy.admin}/metrics`);
      const dt = sample(after, 'pgha_proxy_transactions_total') - sample(before, 'pgha_proxy_transactions_total');
      const dq = sample(after, 'pgha_proxy_queries_total') - sample(before, 'pgha_proxy_queries_total');
      const accepted = (t: string) => Number(/^pgha_proxy_client_connections_accepted\{port="rw"\} (\d+)$/m.exec(t)![1]);
      const sessions = accepted(after) - accepted(before);
      // pgbench's connections: one to look at the tables, one per client
      expect(sessions).toBe(3);
      // PostgreSQL also counts the transaction each new backend runs while it starts (reading the
      // catalogs), which no client asked for and the proxy does not see: one per session
      expect(dt).toBe(dx - sessions);
      // TPC-B-like: BEGIN, 3 UPDATE, SELECT, INSERT, END per transaction, each answered by a Sync
      expect(dq).toBeGreaterThanOrEqual(7 * 2 * TX);
    });
  }

  it('after a switchover: every metric the dashboard reads is exported, and every query returns series from Prometheus', async () => {
    // a switchover needs its target streaming (the proxy refuses one that is not): every node up first
    await ha!.waitHealthy(60_000);
    const p0 = await ha!.primary();
    const target = ha!.nodes.find((n) => n !== p0)!;
    const r = await fetch(`${ha!.proxy.admin}/switchover`, { method: 'POST', headers: { authorization: `Bearer ${HA_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ to: target.address }) });
    const report = (await r.json()) as { error: string | null; phases: Array<{ name: string; ms: number }> };
    expect(r.status, JSON.stringify(report)).toBe(200);
    expect(report.phases.map((x) => x.name)).toEqual(['prepare', 'stop', 'catch-up', 'promote', 'reroute', 'repoint', 'rejoin-old']);
    await ha!.waitHealthy(60_000);
    // some load through the proxy so rates have something to show
    const bench = join(p0.pg.clientBinDir, 'pgbench');
    await run(bench, ['-h', '127.0.0.1', '-p', String(ha!.proxy.port), '-U', 'postgres', '-n', '-c', '1', '-T', '3', 'bench_native']);
    // and through the pooling proxy, more clients than its pool has connections (some wait)
    await run(bench, ['-h', '127.0.0.1', '-p', String(pooled!.port), '-U', 'postgres', '-n', '-S', '-c', '4', '-j', '2', '-T', '2', 'bench_node'], { env: { ...process.env, PGPASSWORD: 'pooled-secret' } }).catch((e: { stderr?: string; message: string }) => {
      throw new Error(`pgbench through the pooling proxy: ${e.stderr || e.message}`);
    });

    const exported = new Set<string>();
    for (const proxy of [ha!.proxy, nodeRelay!, pooled!]) for (const n of exposedNames(await scrape(`${proxy.admin}/metrics`))) exported.add(n);
    for (const node of ha!.nodes) for (const n of exposedNames(await scrape(`${node.agentUrl}/metrics`, HA_TOKEN))) exported.add(n);
    const queries = dashboardQueries();
    for (const q of queries) for (const name of metricNames(q.expr)) expect(exported.has(name), `${q.where}: ${name} has no sample in any /metrics`).toBe(true);

    // Prometheus has scraped the proxies and agents through the switchover: ask it what Grafana would
    await sleep(3000);
    const empty: string[] = [];
    for (const q of queries) {
      // Grafana's label_values(metric, label) is not PromQL: it lists the label's values of the metric's series
      const lv = /^label_values\((\w+),\s*(\w+)\)$/.exec(q.expr);
      const expr = lv ? `count by (${lv[2]}) (${lv[1]})` : withVariables(q.expr);
      const res = await promQuery(expr);
      expect(res.status, `${q.where}: ${expr}: ${res.error ?? ''}`).toBe('success');
      if (res.data!.result.length === 0) empty.push(q.where);
    }
    // only the annotation may find nothing: the timeline changed more than a minute ago on a slow machine
    expect(empty.filter((w) => !w.startsWith('annotation'))).toEqual([]);
    const tps = await promQuery('sum(rate(pgha_proxy_transactions_total{job="pgha-proxy"}[1m]))');
    expect(Number((tps.data!.result[0] as { value: [number, string] }).value[1])).toBeGreaterThan(0);
  });
});
