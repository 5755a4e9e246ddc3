/**
 * Two proxies on etcd, the clients' side and etcd itself failing (issue 10). One cluster for all the
 * steps: 3 PostgreSQL 15 nodes with synchronous replication (`ANY 1 (*)`), a `pgha agent --etcd
 * --dcs-failsafe` beside each, two pgha-proxy processes with --auto-failover and a read-only port,
 * a throwaway etcd (Debian's etcd-server) and writers through each proxy.
 *
 *  (c) libpq multi-host across the proxies: `host=127.0.0.1,127.0.0.1 port=P1,P2
 *      target_session_attrs=read-write` reaches the primary, and still does once the first proxy is
 *      killed (-9); the read-only port of every proxy reaches a standby (also as a multi-host
 *      string with target_session_attrs=standby);
 *  (d) the primary killed PGHA_ETCD_KILLS times (default 3; bench/etcd-kill-loop.ts runs 20) with
 *      both proxies on --auto-failover: exactly one promotion per kill, made by the leader, recorded
 *      once in etcd's history;
 *  (a) etcd stopped: both proxies say safe mode in /status (dcs.reachable false, no leader), keep
 *      routing to the primary and writes keep being acknowledged — its agent keeps it running by
 *      DCS failsafe (every member confirms) instead of fencing it; the primary is then killed and
 *      nobody is promoted while etcd is down; etcd back: out of safe mode, one leader, and the
 *      failover happens — once.
 * At the end no write acknowledged through either proxy is missing on any node.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ClusterStore } from '../../src/dcs/store.js';
import { cleanupAll, freePort, pg15BinDir, sleep, waitFor } from '../harness/cluster.js';
import { stopAgentProcesses } from '../support/agents.js';
import { startEtcd, type EtcdServer } from '../support/etcd.js';
import { HaCluster, type HaNode } from '../support/ha-cluster.js';
import { pgha } from '../support/cli.js';
import type { RunningProxy } from '../support/proxy.js';
import { WriteLoad } from '../support/write-load.js';
import { allRouteTo, killPrimaryLoop, leaderOf, routedTo } from './etcd-kill-loop.js';

const TTL = 5;
const CLUSTER = 'safe-mode';
const KILLS = Number(process.env.PGHA_ETCD_KILLS ?? 3);

let etcd: EtcdServer | null = null;
let ha: HaCluster | null = null;
let store: ClusterStore | null = null;

afterAll(async () => {
  await store?.close();
  await ha?.stop();
  await stopAgentProcesses();
  await cleanupAll();
  await etcd?.stop();
}, 120_000);

/** psql (PostgreSQL 15's own libpq) with a connection string: `pg_is_in_recovery|port`, or the error */
function psql(conninfo: string): { ok: boolean; out: string } {
  const r = spawnSync(join(pg15BinDir(), 'psql'), [`${conninfo} user=postgres dbname=postgres connect_timeout=5`, '-XAtc', "SELECT pg_is_in_recovery(), current_setting('port')"], { encoding: 'utf8', timeout: 30_000 });
  return { ok: r.status === 0, out: (r.status === 0 ? r.stdout : r.stderr).trim() };
}

const portOf = (n: HaNode) => String(n.pg.port);

describe('two proxies on etcd: clients across the proxies, repeated failover, etcd stopped', () => {
  it('(c) libpq multi-host, (d) kill loop, (a) safe mode', async () => {
    const t00 = Date.now();
    etcd = await startEtcd();
    const etcdUrl = etcd.url;
    ha = await HaCluster.start({
      name: 'esm',
      nodes: 3,
      sync: true,
      proxies: 2,
      proxyRead: true,
      agentArgs: ['--etcd', etcdUrl, '--cluster', CLUSTER, '--etcd-ttl', String(TTL), '--dcs-failsafe'],
      proxyArgs: ['--etcd', etcdUrl, '--cluster', CLUSTER, '--etcd-ttl', String(TTL)],
    });
    store = new ClusterStore({ endpoints: [etcdUrl], cluster: CLUSTER });
    await ha.waitHealthy(60_000, 'initial cluster');
    await leaderOf(ha.proxies);
    console.log(`cluster up (3 nodes, 3 agents, 2 proxies, etcd) in ${Date.now() - t00} ms`);
    // /status: the dcs object and the members from etcd
    for (const p of ha.proxies) {
      const s = await p.status();
      expect(s.dcs).toMatchObject({ reachable: true, cluster: CLUSTER, safeMode: false });
      expect(Number(s.dcs!.revision)).toBeGreaterThan(0);
      expect(s.dcs!.members.map((m) => m.name).sort()).toEqual(['n1', 'n2', 'n3']);
      expect(s.dcs!.leader).toBe((await ha.proxies[0].status()).leader!.leader!.id);
    }

    const loads = new Map<RunningProxy, WriteLoad>();
    const startLoad = (p: RunningProxy) => {
      const l = new WriteLoad(p.port, { workers: 2, txPerSecond: 40, counter: true, firstWorker: 2 * loads.size });
      l.start();
      loads.set(p, l);
    };
    for (const p of ha.proxies) startLoad(p);
    const allLoads = () => [...loads.values()];
    // each load's acknowledged commits are checked on every node at the end (more than 20 of them):
    // the first proxy's load is stopped early, so it runs until it has that many, not for a fixed time
    await waitFor(async () => allLoads().every((l) => l.acks.length > 25), 60_000, 'every load past 25 acknowledged commits');

    // ---------------------------------------------------------------- (c) libpq multi-host across the proxies
    {
      const primary = await ha.primary();
      const [p1, p2] = ha.proxies;
      const rw = `host=127.0.0.1,127.0.0.1 port=${p1.port},${p2.port} target_session_attrs=read-write`;
      expect(psql(rw)).toEqual({ ok: true, out: `f|${portOf(primary)}` });
      const standbyPorts = ha.nodes.filter((n) => n !== primary).map(portOf);
      for (const p of ha.proxies) {
        const r = psql(`host=127.0.0.1 port=${p.readPort}`);
        expect(r.ok, r.out).toBe(true);
        expect(r.out).toMatch(/^t\|\d+$/);
        expect(standbyPorts).toContain(r.out.split('|')[1]);
      }
      // kill -9 of the first proxy: libpq goes on to the second
      await loads.get(p1)!.stop();
      process.kill(p1.pid, 'SIGKILL');
      ha.proxies.splice(ha.proxies.indexOf(p1), 1);
      await waitFor(async () => spawnSync('kill', ['-0', String(p1.pid)]).status !== 0, 5_000, 'the first proxy gone');
      expect(psql(rw)).toEqual({ ok: true, out: `f|${portOf(primary)}` });
      const ro = psql(`host=127.0.0.1,127.0.0.1 port=${p1.readPort},${p2.readPort} target_session_attrs=standby`);
      expect(ro.ok, ro.out).toBe(true);
      expect(standbyPorts).toContain(ro.out.split('|')[1]);
      // a second proxy again
      startLoad(await ha.addProxy());
      await leaderOf(ha.proxies, TTL * 1000 + 30_000);
      console.log('(c) libpq multi-host: read-write through either proxy, on to the second when the first is killed; read-only ports on standbys');
    }

    // ---------------------------------------------------------------- (d) the primary killed KILLS times
    {
      const rows = await killPrimaryLoop(ha, { kills: KILLS, loads: allLoads(), store, log: (l) => console.log(`(d) ${l}`) });
      const { leader } = await leaderOf(ha.proxies);
      const leaderId = (await leader.status()).leader!.id;
      for (const r of rows) {
        expect(r.promotions, `cycle ${r.cycle}: promotions`).toBe(1);
        expect(r.historyAdded, `cycle ${r.cycle}: history entries`).toBe(1);
        expect(r.lastHistory).toMatchObject({ kind: 'failover', from: r.from, to: r.to });
        expect(r.by).toBe(leader.admin);
        expect(r.lastHistory!.by).toBe(leaderId);
        expect(r.firstAckMs).not.toBeNull();
      }
      expect(await ha.primariesBySql()).toEqual([rows.at(-1)!.to]);
    }

    // ---------------------------------------------------------------- (a) etcd stopped: safe mode
    {
      const primary = await ha.primary();
      const failoversBefore = await Promise.all(ha.proxies.map(async (p) => (await p.status()).failovers.length));
      const historyBefore = (await store.history()).length;
      const t0 = Date.now();
      await etcd.halt();
      await waitFor(async () => (await Promise.all(ha!.proxies.map((p) => p.status()))).every((s) => s.dcs!.safeMode && !s.dcs!.reachable && !s.leader!.isLeader), TTL * 1000 + 5000, 'both proxies in safe mode');
      console.log(`(a) etcd stopped: both proxies in safe mode after ${Date.now() - t0} ms`);
      // pgha status says so, in its dcs table and in --json
      for (const p of ha.proxies) {
        const js = await pgha(['status', '--proxy', p.admin, '--json']);
        expect(js.status, js.stderr).toBe(0);
        const doc = JSON.parse(js.stdout) as { safeMode: boolean; leaderProxy: string | null; dcs: { leader: string | null } };
        expect(doc).toMatchObject({ safeMode: true, dcs: { safeMode: true, reachable: false } });
        expect(doc.leaderProxy).toBe(doc.dcs.leader);
        const out = await pgha(['status', '--proxy', p.admin]);
        expect(out.stdout).toMatch(/^safe mode +YES \(etcd unreachable\)$/m);
        expect(out.stdout).toMatch(/^leader proxy +\S+$/m);
      }
      // past the TTL the primary still runs (DCS failsafe: every member confirmed) and takes writes through both proxies
      await sleep(2 * TTL * 1000);
      const health = (await (await fetch(`${primary.agentUrl}/health`)).json()) as { etcd: { healthy: boolean; selfFences: number; failsafe: { active: boolean; lastRound: { ok: boolean; answers: Array<{ member: string; ok: boolean }> } } } };
      expect(health.etcd).toMatchObject({ healthy: false, selfFences: 0, failsafe: { active: true, lastRound: { ok: true } } });
      expect(health.etcd.failsafe.lastRound.answers.map((a) => a.member).sort()).toEqual(ha.nodes.filter((n) => n !== primary).map((n) => n.name).sort());
      const since = Date.now() - 2000;
      for (const p of ha.proxies) {
        const l = loads.get(p)!;
        expect(await routedTo(p)).toBe(primary.address);
        expect(l.acks.filter((a) => a.at > since && a.port === primary.pg.port).length, `writes through the proxy on ${p.port} in safe mode`).toBeGreaterThan(0);
      }
      for (const p of ha.proxies) expect((await p.status()).primary).toBe(primary.address);
      const standbys = ha.nodes.filter((n) => n !== primary);
      for (const n of standbys) {
        const h = (await (await fetch(`${n.agentUrl}/health`)).json()) as { etcd: { failsafe: { promisedTo: string | null } } };
        expect(h.etcd.failsafe.promisedTo).toBe(primary.name);
      }

      // the primary killed while etcd is down: nobody is promoted
      const t1 = Date.now();
      await primary.pg.kill9({ waitOrphans: false });
      while (Date.now() - t1 < 3 * TTL * 1000) {
        const sql = await ha.primariesBySql();
        expect(sql.filter((a) => a !== primary.address), 'no other primary while etcd is down').toEqual([]);
        const st = await Promise.all(ha.proxies.map((p) => p.status()));
        st.forEach((s, i) => expect(s.failovers.length, 'no failover attempted in safe mode').toBe(failoversBefore[i]));
        for (const s of st) expect(s.dcs!.safeMode).toBe(true);
        await sleep(500);
      }
      console.log(`(a) primary killed in safe mode: no promotion for ${Date.now() - t1} ms`);

      // etcd back: normal again, and the failover happens (once)
      const t2 = Date.now();
      await etcd.restart();
      await waitFor(async () => (await Promise.all(ha!.proxies.map((p) => p.status()))).every((s) => !s.dcs!.safeMode && s.dcs!.reachable), 30_000, 'out of safe mode');
      await leaderOf(ha.proxies);
      // the old primary may have been restarted by its agent meanwhile (it is still the recorded one): then it is killed again
      if ((await ha.status()).primary === primary.address) await primary.pg.kill9({ waitOrphans: false });
      const now = await allRouteTo(ha.proxies, primary, '(a) a new primary after etcd came back', 90_000);
      console.log(`(a) etcd back: failover to ${ha.node(now).name} ${Date.now() - t2} ms after etcd was started again`);
      const history = await store.history();
      expect(history.length).toBe(historyBefore + 1);
      expect(history.at(-1)).toMatchObject({ kind: 'failover', from: { backend: primary.address }, to: { backend: now } });
      const reports = (await Promise.all(ha.proxies.map(async (p, i) => (await p.status()).failovers.slice(failoversBefore[i])))).flat();
      expect(reports.filter((r) => r.promotedAt)).toHaveLength(1);
      await ha.waitHealthy(120_000, '(a) old primary back as a standby');
      expect(await ha.primariesBySql()).toEqual([now]);
    }

    // ---------------------------------------------------------------- nothing lost through either proxy
    const reports = await Promise.all(allLoads().map((l) => l.stop()));
    for (const [i, l] of allLoads().entries()) {
      const v = await ha.verifyEverywhere(l);
      console.log(`writers #${i + 1}: ${reports[i].commits} acknowledged commits, ${reports[i].errors} client errors; per node ${JSON.stringify(v.perNode)}`);
      expect(v.ackedRows).toBeGreaterThan(20);
      for (const x of v.perNode) {
        expect(x.lost, `${x.node}: acknowledged transactions missing (writers #${i + 1})`).toBe(0);
        expect(x.counter, `${x.node}: counter = rows`).toBe(x.rows);
      }
    }
    console.log(`etcd-safe-mode: ${Date.now() - t00} ms in all`);
  }, 900_000);
});
