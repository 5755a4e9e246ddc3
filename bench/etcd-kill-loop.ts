/**
 * Failover with etcd vs without, per cycle: the primary of a 3-node cluster (synchronous
 * replication `ANY 1 (*)`, an agent beside each node, writers through every proxy) killed with
 * kill -9 N times in a row, the old primary rejoining as a standby before the next kill
 * (test/scenarios/etcd-kill-loop.ts).
 *   npx tsx bench/etcd-kill-loop.ts [kills per mode=20] [modes=etcd,alone]
 * Modes: `etcd` — two pgha-proxy processes, both --auto-failover, on a throwaway etcd (TTL 5 s),
 * agents with --etcd --dcs-failsafe; `alone` — one pgha-proxy, no etcd (the default path).
 * Per cycle: kill → every proxy routes to the new primary, kill → its first acknowledged commit,
 * the deciding proxy's failover time, promotions (must be 1), etcd history entries (must be 1).
 * At the end of each mode every acknowledged commit is checked on every node.
 */
import { ClusterStore } from '../src/dcs/store.js';
import { cleanupAll, sleep } from '../test/harness/cluster.js';
import { stopAgentProcesses } from '../test/support/agents.js';
import { startEtcd, type EtcdServer } from '../test/support/etcd.js';
import { HaCluster } from '../test/support/ha-cluster.js';
import { WriteLoad } from '../test/support/write-load.js';
import { killPrimaryLoop, leaderOf, type KillCycle } from '../test/scenarios/etcd-kill-loop.js';

const kills = Number(process.argv[2] ?? 20);
const modes = (process.argv[3] ?? 'etcd,alone').split(',') as Array<'etcd' | 'alone'>;
const TTL = 5;

async function run(mode: 'etcd' | 'alone'): Promise<{ rows: KillCycle[]; lost: number; acked: number }> {
  let etcd: EtcdServer | null = null;
  let ha: HaCluster | null = null;
  let store: ClusterStore | null = null;
  try {
    if (mode === 'etcd') etcd = await startEtcd();
    const dcs = etcd ? ['--etcd', etcd.url, '--cluster', 'bench', '--etcd-ttl', String(TTL)] : [];
    ha = await HaCluster.start({
      name: `bkl-${mode}`,
      nodes: 3,
      sync: true,
      proxies: mode === 'etcd' ? 2 : 1,
      agentArgs: etcd ? [...dcs, '--dcs-failsafe'] : [],
      proxyArgs: [...dcs, '--log-level', 'warn'],
    });
    await ha.waitHealthy(60_000, 'initial cluster');
    if (etcd) {
      store = new ClusterStore({ endpoints: [etcd.url], cluster: 'bench' });
      await leaderOf(ha.proxies);
    }
    const loads = ha.proxies.map((p, i) => new WriteLoad(p.port, { workers: 2, txPerSecond: 50, counter: true, firstWorker: 2 * i }));
    for (const l of loads) l.start();
    await sleep(2000);
    const rows = await killPrimaryLoop(ha, { kills, loads, store: store ?? undefined, log: (l) => console.error(`${mode}: ${l}`) });
    for (const l of loads) await l.stop();
    let lost = 0;
    let acked = 0;
    for (const l of loads) {
      const v = await ha.verifyEverywhere(l);
      acked += v.ackedRows;
      lost += v.perNode.reduce((a, x) => a + x.lost, 0);
    }
    return { rows, lost, acked };
  } finally {
    await store?.close();
    await ha?.stop();
    await stopAgentProcesses();
    await cleanupAll();
    await etcd?.stop();
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

const results: Array<{ mode: string; rows: KillCycle[]; lost: number; acked: number }> = [];
const summary = (r: (typeof results)[number]) => {
  const ack = r.rows.map((c) => c.firstAckMs ?? Infinity);
  const routed = r.rows.map((c) => c.routedMs);
  const fo = r.rows.map((c) => c.failoverMs ?? Infinity);
  const bad = r.rows.filter((c) => c.promotions !== 1 || (c.historyAdded !== null && c.historyAdded !== 1)).length;
  console.log(
    `${r.mode}: ${r.rows.length} kills; first commit on the new primary median ${median(ack)} ms (max ${Math.max(...ack)}); routed median ${median(routed)} ms (max ${Math.max(...routed)}); failover median ${median(fo)} ms; cycles with promotions ≠ 1 or history ≠ 1: ${bad}; acknowledged commits lost: ${r.lost} of ${r.acked}`,
  );
};
// each mode's table as soon as it is done
console.log('| mode | cycle | kill → routed by every proxy | kill → first commit on the new primary | failover (down → promoted) | promotions | etcd history entries |');
console.log('|---|---|---|---|---|---|---|');
for (const mode of modes) {
  const r = { mode, ...(await run(mode)) };
  results.push(r);
  for (const c of r.rows) console.log(`| ${r.mode} | ${c.cycle} | ${c.routedMs} ms | ${c.firstAckMs ?? '-'} ms | ${c.failoverMs ?? '-'} ms | ${c.promotions} | ${c.historyAdded ?? '-'} |`);
}
console.log('');
for (const r of results) summary(r);
process.exit(0);
