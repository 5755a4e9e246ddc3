/**
 * Synchronous replication managed by pgha (`--synchronous-mode on|strict`): the proxy keeps the
 * primary's synchronous_standby_names at ANY 1 of the standbys that stream, so a failover never
 * leaves a new primary waiting for a standby that is gone; only a standby that was synchronous is
 * promoted automatically, and when too few of them answer to be sure, no one is — an operator's
 * `pgha failover --to` decides. Strict mode never acknowledges a write held by the primary alone.
 */
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, sleep, waitFor } from '../harness/cluster.js';
import { stopAgentProcesses } from '../support/agents.js';
import { pgha } from '../support/cli.js';
import { HA_TOKEN, HaCluster, type HaNode } from '../support/ha-cluster.js';
import { WriteLoad } from '../support/write-load.js';

let ha: HaCluster | null = null;

afterEach(async () => {
  await ha?.stop();
  ha = null;
}, 120_000);
afterAll(async () => {
  await stopAgentProcesses();
  await cleanupAll();
}, 120_000);

const MANAGED = ['--cluster-interval', '300'];

async function agent(n: HaNode, method: string, path: string): Promise<Response> {
  return fetch(`${n.agentUrl}/api/pg/v1/${path}`, { method, headers: { authorization: `Bearer ${HA_TOKEN}` }, signal: AbortSignal.timeout(120_000) });
}

async function syncNames(n: HaNode): Promise<string> {
  return (await n.pg.sql('SHOW synchronous_standby_names'))!;
}

describe('synchronous mode managed by pgha', () => {
  it('on: ANY 1 of the streaming standbys; a failover promotes only a synchronous standby and never blocks; too few answering: no automatic promotion, the operator decides', async () => {
    ha = await HaCluster.start({ name: 'syncmode', nodes: 3, proxyArgs: ['--synchronous-mode', 'on', ...MANAGED] });
    const [n1, n2, n3] = ha.nodes;
    await waitFor(async () => (await syncNames(n1)) === 'ANY 1 ("n2", "n3")', 30_000, 'synchronous_standby_names managed');
    await waitFor(async () => Number(await n1.pg.sql("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'quorum'")) === 2, 30_000, 'quorum');
    await waitFor(async () => (await ha!.status()).synchronous.record?.members.length === 2, 10_000, 'the proxy records both');

    // an operator stops n3: the primary no longer waits for it
    expect((await agent(n3, 'DELETE', 'instance/current')).status).toBe(200);
    await waitFor(async () => (await syncNames(n1)) === 'ANY 1 ("n2")', 30_000, 'n3 dropped from synchronous_standby_names');
    await waitFor(async () => JSON.stringify((await ha!.status()).synchronous.record?.members) === JSON.stringify([n2.address]), 30_000, 'the record follows');

    // kill -9 of the primary under load: n2, the only synchronous standby, is promoted; the new
    // primary does not wait for the stopped n3 or the rejoining n1
    const load = new WriteLoad(ha.proxy.port, { workers: 2, txPerSecond: 80, counter: true });
    load.start();
    await sleep(1000);
    const t0 = Date.now();
    await n1.pg.kill9({ waitOrphans: false });
    await waitFor(async () => (await ha!.status()).primary === n2.address, 30_000, 'n2 promoted');
    await waitFor(async () => load.acks.some((a) => a.at > t0 + 100 && a.port === n2.pg.port), 30_000, 'writes acknowledged by the new primary');
    await waitFor(async () => !(await ha!.status()).failoverRunning, 30_000, 'failover finished');
    const s = await ha.status();
    expect(s.failovers[0]).toMatchObject({ from: n1.address, to: n2.address, zeroLoss: true, error: null });
    // n1 comes back by itself and becomes n2's synchronous standby
    await waitFor(async () => (await syncNames(n2)) === 'ANY 1 ("n1")', 60_000, 'n1 synchronous for n2');
    // n3 started again: it was stopped before the failover (pointing at n1) and is re-pointed at n2
    expect((await agent(n3, 'POST', 'instance/current')).status).toBe(200);
    await ha.waitHealthy(60_000, 'n3 back, streaming from n2');
    await waitFor(async () => (await syncNames(n2)) === 'ANY 1 ("n1", "n3")', 30_000, 'both synchronous for n2');
    await load.stop();
    const v = await ha.verifyEverywhere(load);
    for (const x of v.perNode) expect(x.lost, x.node).toBe(0);
    console.log(`synchronous mode on: first write on the new primary ${load.acks.find((a) => a.at > t0 && a.port === n2.pg.port)!.at - t0} ms after the kill; ${JSON.stringify(v.perNode)}`);

    // the primary and one of its two synchronous standbys die together: the survivor may lack a
    // commit only the dead one acknowledged, so no automatic promotion
    await waitFor(async () => (await ha!.status()).synchronous.record?.members.length === 2, 30_000, 'record of two');
    await Promise.all([n2.pg.kill9({ waitOrphans: false }), n3.pg.kill9({ waitOrphans: false })]);
    await waitFor(async () => (await ha!.status()).failovers.length === 2 && !(await ha!.status()).failoverRunning, 30_000, 'a failover attempt');
    const refused = (await ha.status()).failovers[1];
    expect(refused.to).toBeNull();
    expect(refused.error).toMatch(/zero-loss failover impossible: 1 of the 2 synchronous standbys/);
    expect((await ha.status()).primary).toBeNull();
    expect(await n1.pg.sql('SELECT pg_is_in_recovery()')).toBe('true');
    // n3 started again (by an operator): now both synchronous standbys answer, and the failover
    // that was refused is tried again by itself
    expect((await agent(n3, 'POST', 'instance/current')).status).toBe(200);
    await waitFor(async () => {
      const st = await ha!.status();
      return st.primary !== null && !st.failoverRunning;
    }, 60_000, 'the failover retried once n3 answers');
    const retried = (await ha.status()).failovers.at(-1)!;
    expect(retried).toMatchObject({ trigger: 'auto', zeroLoss: true, error: null });
    expect([n1.address, n3.address]).toContain(retried.to);
    const p = ha.node(retried.to!);
    const other = p === n1 ? n3 : n1;
    await waitFor(async () => (await syncNames(p)) === `ANY 1 ("${other.name}")`, 60_000, 'the other one synchronous for the new primary');
    // an operator moves the primary by hand while it runs: it is fenced through its agent first
    const r = await pgha(['failover', '--proxy', ha.proxy.admin, '--to', other.address, '--json'], { PGHA_TOKEN: HA_TOKEN });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ kind: 'failover', trigger: 'manual', from: p.address, to: other.address, fenced: 'agent', error: null });
    await waitFor(async () => (await ha!.status()).primary === other.address, 30_000, 'manual failover');
    expect(await ha.primariesBySql()).toEqual([other.address]);
    const c = new pg.Client({ host: '127.0.0.1', port: ha.proxy.port, user: 'postgres', database: 'postgres' });
    await c.connect();
    await c.query('INSERT INTO ledger VALUES (-1, 0, -1)');
    await c.end();
  }, 600_000);

  it('strict: with no standby streaming a commit waits until one is back', async () => {
    // the operator brings n2 back here: its agent's automatic rejoin would race that start (both run
    // pg_ctl start; one fails) and could end the wait before it is observed
    ha = await HaCluster.start({ name: 'syncstrict', nodes: 2, proxyArgs: ['--synchronous-mode', 'strict', ...MANAGED], agentArgs: ['--no-auto-rejoin'] });
    const [n1, n2] = ha.nodes;
    await waitFor(async () => (await syncNames(n1)) === 'ANY 1 ("n2")', 30_000, 'managed');
    expect((await agent(n2, 'DELETE', 'instance/current')).status).toBe(200);
    await waitFor(async () => (await syncNames(n1)) === '*', 30_000, 'strict: still synchronous with no standby');
    const c = new pg.Client({ host: '127.0.0.1', port: ha.proxy.port, user: 'postgres', database: 'postgres' });
    c.on('error', () => undefined);
    await c.connect();
    let done = false;
    const commit = c.query('INSERT INTO ledger VALUES (-2, 0, -2)').then(() => (done = true));
    // the commit is seen waiting for a synchronous standby on the primary, not merely not done yet
    await waitFor(async () => (await n1.pg.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")) === '1', 10_000, 'the commit waiting in SyncRep');
    expect(done).toBe(false);
    const started = await agent(n2, 'POST', 'instance/current');
    expect(started.status, `${await started.text()}\n${n2.agent.log().slice(-3000)}`).toBe(200);
    await commit;
    expect(done).toBe(true);
    await c.end();
    await waitFor(async () => (await n2.pg.sql('SELECT count(*) FROM ledger WHERE id = -2')) === '1', 30_000, 'on the standby');
  }, 300_000);
});
