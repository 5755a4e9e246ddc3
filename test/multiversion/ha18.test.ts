/**
 * The HA path on PostgreSQL 17 and 18 (embedded builds: initdb, pg_ctl and postgres only): a primary and two
 * standbys made from cold copies of the stopped primary, a `pgha agent` beside each (--pg-bin the
 * embedded bin directory), pgha-proxy with --auto-failover and --synchronous-mode on in front, writes
 * through the proxy. kill -9 of the primary: exactly one new primary (by every node's own SQL), no
 * acknowledged write lost on any running node. The old primary's agent rejoins it by itself when the
 * follow path does it (no tool needed); when a rewind would be needed it says in one line that this
 * build has no pg_rewind, and the node stays down (never a second primary).
 */
import { readdirSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanupAll, PgCluster, waitFor } from '../harness/cluster.js';
import { embeddedPostgres } from '../harness/embedded.js';
import { startAgent, stopAgents } from '../support/agents.js';
import { pgha } from '../support/cli.js';
import { HaCluster } from '../support/ha-cluster.js';
import { WriteLoad } from '../support/write-load.js';

let ha: HaCluster | null = null;
afterAll(async () => {
  await stopAgents();
  await ha?.stop();
  await cleanupAll();
});

const TOKEN = 'ha18-test-token-0123456789';
/** the majors to run (default 17 and 18; e.g. PGHA_HA_MAJORS=18 for one) */
const MAJORS = (process.env.PGHA_HA_MAJORS ?? '17,18').split(',').map(Number);

for (const MAJOR of MAJORS) describe(`HA path on PostgreSQL ${MAJOR} (embedded build, cold-copy standbys)`, () => {
  it('kill -9 of the primary under synchronous replication: one new primary, nothing acknowledged lost, the old primary rejoined or a one-line reason', async () => {
    const e = embeddedPostgres(MAJOR);
    ha = await HaCluster.start({ name: `ha${MAJOR}`, nodes: 3, pg: { binDir: e.binDir, libDir: e.libDir }, proxyArgs: ['--synchronous-mode', 'on'] });
    const s0 = await ha.waitHealthy(60_000, 'initial cluster');
    const old = ha.node(s0.primary!);
    expect(await old.pg.sql('SHOW server_version_num')).toMatch(new RegExp(`^${MAJOR}`));
    // --synchronous-mode on: the primary's own setting names a standby before the fault
    await waitFor(async () => /ANY 1/.test((await old.pg.sql('SHOW synchronous_standby_names')) ?? ''), 30_000, 'synchronous_standby_names set by the proxy');

    const load = new WriteLoad(ha.proxy.port, { workers: 2, txPerSecond: 60, counter: true });
    load.start();
    let report: Awaited<ReturnType<WriteLoad['stop']>>;
    try {
      await waitFor(async () => load.acks.length > 50, 30_000, 'writes acknowledged through the proxy');
      const failoversBefore = (await ha.status()).failovers.length;
      await old.pg.kill9();
      await waitFor(async () => {
        const s = await ha!.status();
        return s.failovers.length > failoversBefore && !s.failoverRunning && s.primary !== null && s.primary !== old.address;
      }, 60_000, 'a new primary').catch((err) => {
        throw new Error(`${(err as Error).message}\n${ha!.proxy.log().slice(-3000)}`);
      });
      const acksBefore = load.acks.length;
      await waitFor(async () => load.acks.length > acksBefore + 20, 30_000, 'writes acknowledged by the new primary');
    } finally {
      report = await load.stop();
    }
    const s = await ha.status();
    const fresh = ha.node(s.primary!);
    expect(s.failovers.at(-1)).toMatchObject({ from: old.address, error: null, zeroLoss: true });
    expect(await fresh.pg.sql('SELECT pg_is_in_recovery()')).toBe('false');
    expect(Number(await fresh.pg.sql("SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"))).toBe(2);

    // the old primary's agent: the rejoin path it decided, from its own log
    let decided = '';
    await waitFor(async () => {
      decided = old.agent.log().match(/rejoin: (follow|rewind|reclone): /)?.[1] ?? '';
      return decided !== '';
    }, 60_000, 'the old primary\'s agent decides how to rejoin');
    if (decided === 'follow') {
      await ha.waitHealthy(90_000, 'the old primary streams from the new one');
      expect(await old.pg.sql('SELECT pg_is_in_recovery()')).toBe('true');
    } else {
      // no pg_rewind in this build: said in one line, the node left down
      await waitFor(async () => /pg_rewind is not in /.test(old.agent.log()), 30_000, 'the agent says pg_rewind is missing');
      const line = old.agent.log().split('\n').find((l) => l.includes('pg_rewind is not in '))!;
      expect(line).toContain(`pg_rewind is not in ${e.binDir} (this PostgreSQL build ships without it)`);
      expect(old.pg.isRunning()).toBe(false);
    }
    console.log(`PostgreSQL ${MAJOR}: ${report.commits} acknowledged commits, ${report.errors} client errors; old primary rejoin path: ${decided}`);

    // exactly one primary by every node's own SQL, and every acknowledged write on every running node
    expect(await ha.primariesBySql()).toEqual([fresh.address]);
    const target = await fresh.pg.sql('SELECT pg_current_wal_lsn()');
    for (const n of ha.nodes.filter((x) => x.pg.isRunning())) {
      if (n !== fresh) await waitFor(async () => (await n.pg.sql(`SELECT pg_last_wal_replay_lsn() >= '${target}'::pg_lsn`)) === 'true', 60_000, `${n.name} replay`);
      const v = await load.verify(n.pg);
      const [r] = await n.pg.rows<{ rows: string; counter: string }>('SELECT (SELECT count(*) FROM ledger)::text AS rows, (SELECT n FROM counter WHERE id = 1)::text AS counter');
      expect(v.lost, `${n.name}: acknowledged transactions missing`).toBe(0);
      expect(Number(r.counter), `${n.name}: counter = rows`).toBe(Number(r.rows));
      expect(v.ackedRows).toBeGreaterThan(70);
    }
    await ha.stop();
    ha = null;
  }, 240_000);

  it('an old primary that went on writing needs a rewind: pgha rejoin says in one line that this build has no pg_rewind, and changes nothing', async () => {
    const e = embeddedPostgres(MAJOR);
    const p = await PgCluster.init({ name: `rw${MAJOR}-p`, binDir: e.binDir, libDir: e.libDir, walSegSizeMB: 1 });
    await p.start();
    await p.sql("SELECT pg_create_physical_replication_slot('pgha_s', true)");
    p.stop('fast');
    const s = await p.coldStandby({ name: `rw${MAJOR}-s`, slot: 'pgha_s' });
    await p.start();
    await s.start();
    await p.sql('CREATE TABLE t AS SELECT generate_series(1, 100) a');
    await p.waitForReplay(s);
    await s.promote();
    // the old primary goes on alone: its WAL forks from the new timeline
    await p.sql('INSERT INTO t SELECT generate_series(101, 5000)');
    p.stop('fast');
    const url = await startAgent('s', s, TOKEN);
    const before = readdirSync(p.dataDir).sort();
    const r = await pgha(['rejoin', '--pgdata', p.dataDir, '--source', url, '--token', TOKEN, '--pg-bin', e.binDir, '--json']);
    expect(r.status, r.stderr).toBe(1);
    const out = JSON.parse(r.stdout) as { path: string; reason: string };
    expect(out.path).toBe('refused');
    expect(out.reason).toMatch(new RegExp(`^a rewind is needed \\(.+\\) but pg_rewind is not in ${e.binDir.replace(/[.+]/g, '\\$&')} \\(this PostgreSQL build ships without it\\): install it or point --pg-bin at a directory that has it$`));
    expect(out.reason).not.toContain('\n');
    expect(readdirSync(p.dataDir).sort()).toEqual(before);
    expect(p.isRunning()).toBe(false);
  }, 120_000);
});
