/**
 * Planned switchover through pgha-proxy (`pgha switchover`): 3 nodes with synchronous replication,
 * 4 writers through the proxy. New transactions are held at the proxy, the old primary is stopped
 * cleanly, the target replays everything, is promoted, the old primary follows it — no acknowledged
 * commit lost, the pause measured. Then back again with `--to`, and the admin port refuses the
 * action without the token. A second proxy that only follows (no --auto-failover, no etcd) and is
 * slow to call a node down (100 health retries) routes to the new primary once it is promoted: the
 * newer timeline wins over an old primary it has not yet called down.
 */
import { afterAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { cleanupAll, sleep, waitFor } from '../harness/cluster.js';
import { stopAgentProcesses } from '../support/agents.js';
import { pgha } from '../support/cli.js';
import { HA_TOKEN, HaCluster } from '../support/ha-cluster.js';
import { startProxy, type RunningProxy } from '../support/proxy.js';
import { WriteLoad } from '../support/write-load.js';

let ha: HaCluster | null = null;
let follower: RunningProxy | null = null;

afterAll(async () => {
  await follower?.stop();
  await ha?.stop();
  await stopAgentProcesses();
  await cleanupAll();
}, 120_000);

interface SwitchoverJson {
  from: string;
  to: string;
  pauseMs: number;
  lostTransactions: number;
  oldPrimaryStreaming: boolean;
  error: string | null;
}

describe('pgha switchover', () => {
  it('twice under load: nothing lost, writes paused briefly, the old primary streams from the new one', async () => {
    ha = await HaCluster.start({ name: 'switch', nodes: 3, sync: true });
    await ha.waitHealthy(60_000, 'initial cluster');
    // refused without the admin token, and with a wrong one
    expect((await fetch(`${ha.proxy.admin}/switchover`, { method: 'POST' })).status).toBe(401);
    expect((await fetch(`${ha.proxy.admin}/switchover`, { method: 'POST', headers: { authorization: 'Bearer wrong-wrong-wrong-wrong' } })).status).toBe(401);
    const refused = await pgha(['switchover', '--proxy', ha.proxy.admin, '--json'], { PGHA_TOKEN: '', PGHA_ADMIN_TOKEN: 'not-the-token-at-all' });
    expect(refused.status).toBe(1);
    expect((await ha.status()).failovers).toHaveLength(0);
    follower = await startProxy(ha.nodes.map((n) => n.address), ['--health-interval', '200', '--health-timeout', '1000', '--health-retries', '100', '--health-retry-delay', '100']);
    const initial = (await ha.status()).primary;
    await waitFor(async () => (await follower!.status()).primary === initial, 15_000, 'the follower proxy routing to the first primary');

    const load = new WriteLoad(ha.proxy.port, { workers: 4, txPerSecond: 150, counter: true });
    load.start();
    const first = (await ha.status()).primary!;
    const pauses: number[] = [];
    const gaps: number[] = [];
    try {
      await sleep(1500);
      for (const to of [undefined, first]) {
        const before = (await ha.status()).primary!;
        const t0 = Date.now();
        const r = await pgha(['switchover', '--proxy', ha.proxy.admin, '--json', ...(to ? ['--to', to] : [])], { PGHA_TOKEN: HA_TOKEN });
        expect(r.status, r.stdout + r.stderr).toBe(0);
        const j = JSON.parse(r.stdout) as SwitchoverJson;
        expect(j).toMatchObject({ from: before, lostTransactions: 0, oldPrimaryStreaming: true, error: null });
        if (to) expect(j.to).toBe(to);
        else expect(j.to).not.toBe(before);
        const s = await ha.waitHealthy(60_000, 'every node streaming after the switchover');
        expect(s.primary).toBe(j.to);
        expect(await ha.primariesBySql()).toEqual([j.to]);
        // the follower: writes reach the new primary through it
        await waitFor(async () => (await follower!.status()).primary === j.to, 15_000, `the follower proxy routing to ${j.to}`).catch(async (e: Error) => {
          throw new Error(`${e.message}: it sees ${JSON.stringify((await follower!.status()).backends.map((b) => [b.name, b.role, b.reason]))}`);
        });
        const c = new pg.Client({ host: '127.0.0.1', port: follower.port, user: 'postgres', database: 'postgres' });
        await c.connect();
        expect((await c.query('SELECT inet_server_port() AS port, pg_is_in_recovery() AS r')).rows[0]).toEqual({ port: ha.node(j.to).pg.port, r: false });
        await c.end();
        // the longest gap between two acknowledged commits around the switchover, as clients saw it
        const times = load.acks.filter((a) => a.at >= t0 - 1000).map((a) => a.at).sort((a, b) => a - b);
        let gap = 0;
        for (let i = 1; i < times.length; i++) gap = Math.max(gap, times[i] - times[i - 1]);
        pauses.push(j.pauseMs);
        gaps.push(gap);
        console.log(`switchover ${j.from} -> ${j.to}: proxy held writes ${j.pauseMs} ms; longest gap between acknowledged commits ${gap} ms; lost ${j.lostTransactions}`);
        // nothing acknowledged by the old primary after it was stopped
        const promotedAt = Date.parse(s.failovers[s.failovers.length - 1].promotedAt!);
        expect(load.acks.filter((a) => a.port === ha!.node(j.from).pg.port && a.at > promotedAt)).toEqual([]);
        await sleep(1500);
      }
    } finally {
      await load.stop();
    }
    const v = await ha.verifyEverywhere(load);
    console.log(`switchovers: pauses ${pauses.join(', ')} ms; client gaps ${gaps.join(', ')} ms; ${JSON.stringify(v.perNode)}`);
    for (const x of v.perNode) {
      expect(x.lost, x.node).toBe(0);
      expect(x.counter, x.node).toBe(x.rows);
    }
    expect(v.ackedRows).toBeGreaterThan(500);
  }, 600_000);
});
