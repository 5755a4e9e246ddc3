/**
 * Two or more proxies, one decision (the seeds' scenarios 12–22: two PGPOOL-II instances in front
 * of one cluster — watchdog, one of them deciding, the other following; a pgpool down; the primary
 * lost or cut off while both run). Here: 3 PostgreSQL 15 nodes, each in its own network namespace
 * with a `pgha agent --etcd` beside it, synchronous replication (`ANY 1 (*)`), two pgha-proxy
 * processes with --auto-failover and --etcd on the same cluster name, a throwaway etcd on the root
 * side (listening on 127.0.0.1 for the proxies and on each net host's gateway for the agents), and
 * writers through each proxy.
 *
 *  (a) kill -9 of the primary: exactly one failover in etcd's history, made by the leader; both
 *      proxies route to the new primary;
 *  (b) kill -9 of the leader proxy: the other leads within the TTL (+ slack) and handles the next
 *      primary failure itself;
 *  (c) the primary cut off the network: its agent cannot renew its lease and fences the node (the
 *      postmaster is gone within about the TTL), the leader promotes another node only after the
 *      primary lease expired on etcd, and nothing is acknowledged by the old primary after that —
 *      also not to two writers INSIDE its cut namespace writing straight to it (test/scenarios/
 *      ns-writer.mjs; one with synchronous_commit = local, acknowledged without any standby): no
 *      write acknowledged after the lease expired is missing from the new primary, none is
 *      acknowledged after the self-fence, and every write the synchronous one got acknowledged is
 *      there. The time from the cut to the first write on the new primary is measured.
 *
 *  (d) the leader dies right after recording a new primary on etcd, before promoting it (the
 *      fault-injection point PGHA_TEST_CRASH_AFTER_RECORD=1): the other proxy, leading after the
 *      TTL, completes the recorded promotion (no new decision), exactly one primary, nothing lost.
 *
 * Also: the member slots and the synchronous standbys the leader records on etcd (`slots`, `sync`,
 * read raw with the etcd3 client) against pg_replication_slots and synchronous_standby_names on
 * the primary, and `pgha status` (table and --json) naming the leader proxy and safe mode.
 *
 * After each step the old primary is back as a streaming standby (its agent's automatic rejoin,
 * following the primary etcd records); at the end every write acknowledged through either proxy is
 * on every node and the counter equals the rows.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { Etcd3 } from 'etcd3';
import { ClusterStore } from '../../src/dcs/store.js';
import type { PrimaryLeaseRecord } from '../../src/dcs/keys.js';
import { cleanupAll, freePort, processAlive, sleep, waitFor } from '../harness/cluster.js';
import { destroyAllNetHosts } from '../harness/netns.js';
import { stopAgentProcesses } from '../support/agents.js';
import { pgha } from '../support/cli.js';
import { startEtcd, type EtcdServer } from '../support/etcd.js';
import { HaCluster, type HaNode } from '../support/ha-cluster.js';
import type { RunningProxy } from '../support/proxy.js';
import { WriteLoad } from '../support/write-load.js';

const TTL = 5;
const CLUSTER = 'two-proxies';

let etcd: EtcdServer | null = null;
let ha: HaCluster | null = null;
let store: ClusterStore | null = null;

afterAll(async () => {
  await store?.close();
  await ha?.stop();
  await stopAgentProcesses();
  await cleanupAll();
  await destroyAllNetHosts();
  await etcd?.stop();
}, 120_000);

/** which server a connection through this proxy reaches: host:port */
async function routedTo(p: RunningProxy): Promise<string> {
  const c = new pg.Client({ host: '127.0.0.1', port: p.port, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 10_000 });
  c.on('error', () => undefined);
  await c.connect();
  try {
    const { rows } = await c.query<{ a: string; p: string }>("SELECT host(inet_server_addr()) AS a, current_setting('port') AS p");
    return `${rows[0].a}:${rows[0].p}`;
  } finally {
    await c.end().catch(() => undefined);
  }
}

async function leaderOf(proxies: RunningProxy[]): Promise<{ leader: RunningProxy; others: RunningProxy[] }> {
  let leader: RunningProxy | null = null;
  await waitFor(
    async () => {
      const st = await Promise.all(proxies.map((p) => p.status()));
      const leading = proxies.filter((_, i) => st[i].leader?.isLeader);
      const ids = new Set(st.map((s) => s.leader?.leader?.id));
      leader = leading.length === 1 && ids.size === 1 ? leading[0] : null;
      return leader !== null;
    },
    30_000,
    'exactly one leader, known to every proxy',
  );
  return { leader: leader!, others: proxies.filter((p) => p !== leader) };
}

/** every proxy routes to the same new primary (other than `old`), and connections through each reach it */
async function allRouteTo(proxies: RunningProxy[], old: HaNode, what: string): Promise<string> {
  let primary = '';
  await waitFor(
    async () => {
      const st = await Promise.all(proxies.map((p) => p.status()));
      const ps = new Set(st.map((s) => s.primary));
      primary = st[0].primary ?? '';
      return ps.size === 1 && primary !== '' && primary !== old.address && st.every((s) => !s.failoverRunning);
    },
    60_000,
    what,
  );
  for (const p of proxies) expect(await routedTo(p), `a connection through the proxy on ${p.port}`).toBe(primary);
  return primary;
}

/** the commits a node acknowledged after `since` */
const acksBy = (loads: WriteLoad[], n: HaNode, since: number) => loads.flatMap((l) => l.acks.filter((a) => a.port === n.pg.port && a.at > since));

describe('two proxies on etcd: one decision, self-fencing on partition', () => {
  it('(a) kill -9 of the primary, (b) kill -9 of the leader proxy, (c) the primary cut off the network', async () => {
    const t00 = Date.now();
    const etcdPort = await freePort();
    const etcdUrl = `http://127.0.0.1:${etcdPort}`;
    ha = await HaCluster.start({
      name: '2px',
      nodes: 3,
      sync: true,
      netns: true,
      proxies: 2,
      beforeAgents: async (nets) => {
        etcd = await startEtcd({ port: etcdPort, listen: nets.map((n) => n!.hostIp) });
      },
      agentArgsFor: (_i, net) => ['--etcd', `http://${net!.hostIp}:${etcdPort}`, '--cluster', CLUSTER, '--etcd-ttl', String(TTL)],
      proxyArgs: ['--etcd', etcdUrl, '--cluster', CLUSTER, '--etcd-ttl', String(TTL)],
    });
    store = new ClusterStore({ endpoints: [etcdUrl], cluster: CLUSTER });
    await ha.waitHealthy(60_000, 'initial cluster');
    console.log(`cluster up (3 nodes, 3 agents, 2 proxies, etcd) in ${Date.now() - t00} ms`);

    // -- bootstrap: one leader; the primary recorded once; both route to it; agents registered
    let { leader, others } = await leaderOf(ha.proxies);
    const first = await ha.primary();
    expect((await store.primary()).value).toMatchObject({ backend: first.address, member: first.name });
    expect((await store.history()).map((h) => h.kind)).toEqual(['bootstrap']);
    expect((await store.members()).map((m) => m.name).sort()).toEqual(['n1', 'n2', 'n3']);
    await waitFor(async () => (await store!.primaryLease()).value?.member === first.name, 10_000, 'the primary holds the primary lease');
    const health = (await (await fetch(`${first.agentUrl}/health`)).json()) as { etcd?: { holdsPrimaryLease: boolean; registered: boolean; cluster: string } };
    expect(health.etcd).toMatchObject({ holdsPrimaryLease: true, registered: true, cluster: CLUSTER });
    // the leader publishes the synchronous record of the primary it routes to
    await waitFor(async () => (await store!.sync())?.primary === first.address, 10_000, 'the synchronous record on etcd');
    expect((await store.sync())!.members.length).toBeGreaterThan(0);
    for (const p of ha.proxies) expect(await routedTo(p)).toBe(first.address);
    // pgha status names the leader, through either proxy
    const leaderId = (await leader.status()).leader!.id;
    for (const p of ha.proxies) {
      const out = await pgha(['status', '--proxy', p.admin]);
      expect(out.status, out.stderr).toBe(0);
      expect(out.stdout).toContain(`leader: ${leaderId} (${leader.admin})`);
      expect(out.stdout).toMatch(p === leader ? /this proxy: \S+ \(leader\)/ : /this proxy: \S+ \(follower\)/);
      expect(out.stdout).toContain(`recorded primary: ${first.address}`);
      expect(out.stdout).toMatch(new RegExp(`^leader proxy +${leaderId.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
      expect(out.stdout).toMatch(/^safe mode +no$/m);
      const js = await pgha(['status', '--proxy', p.admin, '--json']);
      expect(JSON.parse(js.stdout)).toMatchObject({ leaderProxy: leaderId, safeMode: false, dcs: { leader: leaderId, safeMode: false, cluster: CLUSTER } });
    }
    // the member slots and the synchronous standbys on etcd, read raw, against the primary itself
    {
      const raw = new Etcd3({ hosts: [etcdUrl] });
      const onPrimary = async () => ({
        slots: ((await first.pg.sql("SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots WHERE slot_type = 'physical' AND slot_name LIKE 'pgha\\_%'")) ?? '').split(',').filter(Boolean),
        ssn: (await first.pg.sql('SHOW synchronous_standby_names')) ?? '',
      });
      let seen = '';
      try {
        await waitFor(
          async () => {
            const slots = JSON.parse((await raw.get(`/pgha/${CLUSTER}/slots`).string()) ?? 'null') as { primary: string; slots: Array<{ slot: string; member: string | null }> } | null;
            const sync = JSON.parse((await raw.get(`/pgha/${CLUSTER}/sync`).string()) ?? 'null') as { primary: string; synchronousStandbyNames: string } | null;
            const pg = await onPrimary();
            seen = JSON.stringify({ slots, sync, pg });
            return slots?.primary === first.address && JSON.stringify(slots.slots.map((x) => x.slot)) === JSON.stringify(pg.slots) && sync?.primary === first.address && sync.synchronousStandbyNames === pg.ssn;
          },
          20_000,
          'etcd slots and sync = the primary\'s pg_replication_slots and synchronous_standby_names',
        );
      } finally {
        await raw.close();
        console.log(`etcd slots/sync vs the primary: ${seen}`);
      }
      const pg = await onPrimary();
      expect(pg.slots.length, 'a member slot for each standby on the primary').toBe(2);
      // /status dcs shows them, on both proxies
      for (const p of ha.proxies) await waitFor(async () => (await p.status()).dcs?.slots?.slots.length === 2, 10_000, '/status dcs.slots');
    }
    // a switchover asked of the follower is refused with the leader's address
    const refused = await fetch(`${others[0].admin}/switchover`, { method: 'POST', headers: { authorization: `Bearer ${'ha-cluster-test-token-0123456789'}`, 'content-type': 'application/json' }, body: '{}' });
    expect(refused.status).toBe(409);
    expect(((await refused.json()) as { message: string }).message).toContain(leader.admin);

    const loads = new Map<RunningProxy, WriteLoad>();
    const startLoad = (p: RunningProxy) => {
      // each proxy's writers on their own rows (worker numbers apart), all on the one counter
      const l = new WriteLoad(p.port, { workers: 2, txPerSecond: 50, counter: true, firstWorker: 2 * loads.size });
      l.start();
      loads.set(p, l);
    };
    for (const p of ha.proxies) startLoad(p);
    const allLoads = () => [...loads.values()];
    await sleep(1500);

    // ---------------------------------------------------------------- (a) kill -9 of the primary
    {
      const old = await ha.primary();
      const historyBefore = (await store.history()).length;
      const failoversBefore = await Promise.all(ha.proxies.map(async (p) => (await p.status()).failovers.length));
      const t0 = Date.now();
      await old.pg.kill9({ waitOrphans: false });
      const now = await allRouteTo(ha.proxies, old, '(a) both proxies on the new primary');
      const ms = Date.now() - t0;
      const history = await store.history();
      expect(history.length, '(a) exactly one failover in etcd').toBe(historyBefore + 1);
      const h = history.at(-1)!;
      const leaderId = (await leader.status()).leader!.id;
      expect(h).toMatchObject({ kind: 'failover', trigger: 'auto', from: { backend: old.address }, to: { backend: now }, by: leaderId });
      // only the leader acted
      const reports = await Promise.all(ha.proxies.map(async (p, i) => (await p.status()).failovers.slice(failoversBefore[i])));
      expect(reports[ha.proxies.indexOf(leader)]).toHaveLength(1);
      expect(reports[ha.proxies.indexOf(leader)][0]).toMatchObject({ from: old.address, to: now, error: null, zeroLoss: true });
      for (const o of others) expect(reports[ha.proxies.indexOf(o)]).toEqual([]);
      expect(await ha.primariesBySql()).toEqual([now]);
      const promotedAt = Date.parse(reports[ha.proxies.indexOf(leader)][0].promotedAt!);
      expect(acksBy(allLoads(), old, promotedAt), '(a) acknowledged by the old primary after the promotion').toEqual([]);
      const s = await ha.waitHealthy(120_000, '(a) old primary back as a standby');
      console.log(`(a) kill -9 ${old.name}: both proxies on ${ha.node(now).name} after ${ms} ms (failover ${reports[ha.proxies.indexOf(leader)][0].ms} ms); all streaming again after ${Date.now() - t0} ms; timeline ${s.timeline}`);
    }

    // ---------------------------------------------------------------- (b) kill -9 of the leader proxy
    {
      const survivor = others[0];
      // its writers stop first (their acknowledged writes are checked at the end)
      await loads.get(leader)!.stop();
      const t0 = Date.now();
      process.kill(leader.pid, 'SIGKILL');
      ha.proxies.splice(ha.proxies.indexOf(leader), 1);
      await waitFor(async () => (await survivor.status()).leader?.isLeader === true, TTL * 1000 + 5000, '(b) the other proxy leads');
      const takeover = Date.now() - t0;
      console.log(`(b) kill -9 of the leader proxy: the other leads after ${takeover} ms (TTL ${TTL} s)`);
      expect(takeover).toBeLessThan(TTL * 1000 + 2500);
      // a second proxy again, following the new leader
      const fresh = await ha.addProxy();
      startLoad(fresh);
      ({ leader, others } = await leaderOf(ha.proxies));
      expect(leader).toBe(survivor);
      await sleep(1000);
      // the next primary failure is handled by the new leader
      const old = await ha.primary();
      const historyBefore = (await store.history()).length;
      const before = (await survivor.status()).failovers.length;
      const t1 = Date.now();
      await old.pg.kill9({ waitOrphans: false });
      const now = await allRouteTo(ha.proxies, old, '(b) both proxies on the new primary');
      const routedMs = Date.now() - t1;
      const history = await store.history();
      expect(history.length).toBe(historyBefore + 1);
      expect(history.at(-1)).toMatchObject({ kind: 'failover', from: { backend: old.address }, to: { backend: now }, by: (await survivor.status()).leader!.id });
      const rep = (await survivor.status()).failovers.slice(before);
      expect(rep).toHaveLength(1);
      expect(rep[0]).toMatchObject({ from: old.address, to: now, error: null });
      expect((await fresh.status()).failovers).toEqual([]);
      expect(acksBy(allLoads(), old, Date.parse(rep[0].promotedAt!))).toEqual([]);
      await ha.waitHealthy(120_000, '(b) old primary back as a standby');
      console.log(`(b) then kill -9 of ${old.name}: failover by the new leader (${rep[0].ms} ms), both proxies on ${ha.node(now).name} after ${routedMs} ms, all streaming again after ${Date.now() - t1} ms`);
    }

    // ---------------------------------------------------------------- (c) the primary cut off the network
    {
      const old = await ha.primary();
      const pid = old.pg.pid!;
      expect(pid).toBeGreaterThan(0);
      await waitFor(async () => (await store!.primaryLease()).value?.member === old.name, 10_000, '(c) the primary holds the primary lease');
      const before = (await leader.status()).failovers.length;
      let leaseGoneAt = 0;
      const leaseWatch = store.waitFor<PrimaryLeaseRecord>(store.keys.primaryLease, (v) => {
        if (v?.member === old.name) return false;
        leaseGoneAt = Date.now();
        return true;
      }, 60_000);
      // two writers inside the primary's namespace, straight to its server
      await old.pg.sql('CREATE TABLE IF NOT EXISTS ns_writes (id bigint PRIMARY KEY, mode text NOT NULL)');
      const wdir = mkdtempSync(join(tmpdir(), 'pgha-ns-writer-'));
      const writerScript = join(dirname(fileURLToPath(import.meta.url)), 'ns-writer.mjs');
      const writers = (['sync', 'local'] as const).map((mode, i) => {
        const out = join(wdir, `${mode}.log`);
        const [cmd, ...argv] = old.net!.exec([process.execPath, writerScript, String(old.pg.port), out, mode, String((i + 1) * 1_000_000_000)]);
        const proc = spawn(cmd, argv, { stdio: 'ignore' });
        const exited = new Promise<void>((r) => proc.once('exit', () => r()));
        return { mode, out, proc, exited };
      });
      const writerLines = (w: (typeof writers)[number]) => {
        try {
          return readFileSync(w.out, 'utf8').trim().split('\n').filter(Boolean).map((l) => l.split(' '));
        } catch {
          return [];
        }
      };
      await waitFor(async () => writers.every((w) => writerLines(w).some((l) => l[0] === 'ack')), 20_000, '(c) the writers inside the namespace write');
      let postmasterGoneAt = 0;
      const t0 = Date.now();
      await old.net!.cut();
      const pm = (async () => {
        while (processAlive(pid) && Date.now() - t0 < 60_000) await sleep(25);
        postmasterGoneAt = Date.now();
      })();
      let now = '';
      try {
        now = await allRouteTo(ha.proxies, old, '(c) both proxies on a new primary');
        await pm;
        expect(await leaseWatch).toBe(true);
      } finally {
        await sleep(500);
        for (const w of writers) w.proc.kill('SIGTERM');
        await Promise.race([Promise.all(writers.map((w) => w.exited)), sleep(5000)]);
        for (const w of writers) if (w.proc.exitCode === null) w.proc.kill('SIGKILL');
        await old.net!.heal();
      }
      const rep = (await leader.status()).failovers.slice(before);
      expect(rep).toHaveLength(1);
      expect(rep[0]).toMatchObject({ from: old.address, to: now, error: null });
      const promotedAt = Date.parse(rep[0].promotedAt!);
      console.log(
        `(c) cut ${old.name}: postmaster gone after ${postmasterGoneAt - t0} ms (self-fence), primary lease gone on etcd after ${leaseGoneAt - t0} ms, ${ha.node(now).name} promoted after ${promotedAt - t0} ms`,
      );
      // the old primary fenced itself within about the TTL, before etcd let its lease go
      expect(postmasterGoneAt - t0).toBeLessThan(TTL * 1000 + 1000);
      expect(postmasterGoneAt).toBeLessThanOrEqual(leaseGoneAt + 100);
      // the leader promoted only after the lease expired: never two primaries taking writes
      expect(leaseGoneAt).toBeLessThanOrEqual(promotedAt);
      expect(acksBy(allLoads(), old, promotedAt), '(c) acknowledged by the old primary after the promotion').toEqual([]);
      expect(old.agent.log()).toMatch(/self-fenc/);
      const newPort = ha.node(now).pg.port;
      const firstWrite = Math.min(...allLoads().flatMap((l) => l.acks.filter((a) => a.port === newPort && a.at > t0).map((a) => a.at)));
      await ha.waitHealthy(120_000, '(c) old primary back as a standby');
      expect(await ha.primariesBySql()).toEqual([now]);
      // the writers inside the cut namespace, against what the new primary holds
      const onNew = new Set(((await ha.node(now).pg.sql("SELECT coalesce(string_agg(id::text, ','), '') FROM ns_writes")) ?? '').split(',').filter(Boolean));
      for (const w of writers) {
        const lines = writerLines(w);
        const acks = lines.filter((l) => l[0] === 'ack').map((l) => ({ id: l[1], at: Number(l[2]) }));
        const afterCut = acks.filter((a) => a.at > t0);
        const afterFence = acks.filter((a) => a.at > postmasterGoneAt);
        const afterLease = acks.filter((a) => a.at > leaseGoneAt);
        const missing = acks.filter((a) => !onNew.has(a.id));
        console.log(
          `(c) writer inside the cut namespace (${w.mode}): ${acks.length} acknowledged, ${afterCut.length} of them after the cut (the last ${afterCut.length ? afterCut.at(-1)!.at - t0 : '-'} ms after it), ${lines.length - acks.length} failed attempts; acknowledged but not on the new primary: ${missing.length}`,
        );
        expect(acks.length, `(c) ${w.mode} writer: acknowledged writes before the cut`).toBeGreaterThan(0);
        expect(afterFence, `(c) ${w.mode} writer: acknowledged by the old primary after its self-fence`).toEqual([]);
        expect(afterLease.filter((a) => !onNew.has(a.id)), `(c) ${w.mode} writer: acknowledged after the lease expired and missing on the new primary`).toEqual([]);
        // the writer kept trying after the fence: its attempts failed
        expect(lines.some((l) => l[0] === 'err' && Number(l[2]) > postmasterGoneAt), `(c) ${w.mode} writer: attempts after the fence`).toBe(true);
        if (w.mode === 'sync') expect(missing, '(c) synchronous writer: acknowledged writes missing on the new primary').toEqual([]);
      }
      rmSync(wdir, { recursive: true, force: true });
      console.log(`(c) cut → first write on the new primary through the proxies: ${firstWrite - t0} ms (lease TTL ${TTL} s)`);
      console.log(`(c) all streaming again after ${Date.now() - t0} ms`);
    }

    // ---------------------------------------------------------------- (d) the leader dies between the record and the promotion
    {
      const [l0, f0] = [leader, others[0]];
      // a proxy that exits right after its compare-and-swap (fault-injection point) becomes the leader:
      // the follower goes, the crashing one starts, the leader resigns
      await loads.get(f0)!.stop();
      await f0.stop();
      ha.proxies.splice(ha.proxies.indexOf(f0), 1);
      const crashing = await ha.addProxy({ PGHA_TEST_CRASH_AFTER_RECORD: '1' });
      await loads.get(l0)!.stop();
      await l0.stop();
      ha.proxies.splice(ha.proxies.indexOf(l0), 1);
      await waitFor(async () => (await crashing.status()).leader?.isLeader === true, TTL * 1000 + 5000, '(d) the crashing proxy leads');
      const next = await ha.addProxy();
      startLoad(next);
      ({ leader, others } = await leaderOf(ha.proxies));
      expect(leader).toBe(crashing);
      const crashId = (await crashing.status()).leader!.id;
      await sleep(1000);
      const old = await ha.primary();
      const historyBefore = (await store.history()).length;
      const t0 = Date.now();
      await old.pg.kill9({ waitOrphans: false });
      await waitFor(async () => !processAlive(crashing.pid), 30_000, '(d) the leader exits right after recording its decision');
      const crashedAt = Date.now();
      ha.proxies.splice(ha.proxies.indexOf(crashing), 1);
      expect(crashing.log()).not.toMatch(/failover: promoting/);
      const history = await store.history();
      expect(history.length, '(d) the decision recorded once').toBe(historyBefore + 1);
      const h = history.at(-1)!;
      expect(h).toMatchObject({ kind: 'failover', from: { backend: old.address }, by: crashId });
      const recorded = h.to.backend;
      expect((await store.primary()).value?.backend).toBe(recorded);
      // nobody promoted it: still a standby when the leader died
      expect(await ha.node(recorded).pg.sql('SELECT pg_is_in_recovery()')).toBe('true');
      await waitFor(async () => (await next.status()).primary === recorded, TTL * 1000 + 10_000, '(d) the other proxy completes the recorded promotion');
      const rolled = Date.now() - crashedAt;
      const st = await next.status();
      expect(st.leader?.isLeader).toBe(true);
      const rep = st.failovers.filter((f) => f.resumed);
      expect(rep).toHaveLength(1);
      expect(rep[0]).toMatchObject({ from: old.address, to: recorded, error: null });
      // no new decision: the history holds the one the dead leader recorded
      expect((await store.history()).length).toBe(historyBefore + 1);
      expect(await routedTo(next)).toBe(recorded);
      expect(await ha.primariesBySql()).toEqual([recorded]);
      console.log(`(d) leader died after recording ${ha.node(recorded).name} (${crashedAt - t0} ms after kill -9 of ${old.name}); the other proxy promoted it and routes to it ${rolled} ms later (TTL ${TTL} s; completion ${rep[0].ms} ms: ${rep[0].phases.map((p) => `${p.name} ${p.ms}`).join(', ')})`);
      expect(rolled).toBeLessThan(TTL * 1000 + 8000);
      await ha.waitHealthy(120_000, '(d) old primary back as a standby');
    }

    // ---------------------------------------------------------------- nothing lost through either proxy
    const reports = await Promise.all(allLoads().map((l) => l.stop()));
    for (const [i, l] of allLoads().entries()) {
      const v = await ha.verifyEverywhere(l);
      console.log(`writers #${i + 1}: ${reports[i].commits} acknowledged commits, ${reports[i].errors} client errors ${JSON.stringify(reports[i].errorKinds)}; per node ${JSON.stringify(v.perNode)}`);
      expect(v.ackedRows).toBeGreaterThan(50);
      for (const x of v.perNode) {
        expect(x.lost, `${x.node}: acknowledged transactions missing (writers #${i + 1})`).toBe(0);
        expect(x.counter, `${x.node}: counter = rows`).toBe(x.rows);
      }
    }
    const kinds = (await store.history()).map((h) => h.kind);
    expect(kinds).toEqual(['bootstrap', 'failover', 'failover', 'failover', 'failover']);
    console.log(`two-proxies: ${Date.now() - t00} ms in all`);
  }, 600_000);
});
