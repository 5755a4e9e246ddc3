/**
 * The chaos loop (issue: the loop closes): 3 PostgreSQL nodes, each in its own network namespace
 * with a `pgha agent` process beside it, synchronous replication (`ANY 1 (*)` in every node's
 * configuration), one pgha-proxy with automatic failover, 4 writers (insert + counter increment in
 * one transaction) through the proxy. Consecutive cycles of kill -9 of the current primary, a few of
 * SIGSTOP longer than the health timeout, a few of cutting the primary off the network. After every
 * cycle: exactly one primary (asked by SQL, not only the proxy), every node streaming from it, the
 * old primary rejoined by its own agent, nothing acknowledged by the old primary after the promotion.
 * At the end every acknowledged transaction is on every node and the counter equals the rows.
 *
 * Beside it a second pgha-proxy that only follows (no --auto-failover, no etcd: what an operator
 * runs as a second entry point), with 2 writers of its own: after every cycle it routes to the new
 * primary, and nothing it acknowledged came from the old primary after the promotion (it follows the
 * newer timeline and never routes to a resumed or healed old primary).
 *
 * Cycle counts: PGHA_CHAOS_KILL (default 20), PGHA_CHAOS_STOP (3), PGHA_CHAOS_CUT (3).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { cleanupAll, sleep, waitFor } from '../harness/cluster.js';
import { destroyAllNetHosts } from '../harness/netns.js';
import { stopAgentProcesses } from '../support/agents.js';
import { FAST_HEALTH, HaCluster, type HaNode } from '../support/ha-cluster.js';
import { startProxy, type RunningProxy } from '../support/proxy.js';
import { WriteLoad } from '../support/write-load.js';

const KILL = Number(process.env.PGHA_CHAOS_KILL ?? 20);
const STOP = Number(process.env.PGHA_CHAOS_STOP ?? 3);
const CUT = Number(process.env.PGHA_CHAOS_CUT ?? 3);

type Fault = 'kill -9' | 'SIGSTOP' | 'network cut';

/** spread the SIGSTOP and cut cycles among the kills */
function schedule(): Fault[] {
  const out: Fault[] = Array.from({ length: KILL }, () => 'kill -9' as Fault);
  const extra: Fault[] = [...Array.from({ length: STOP }, () => 'SIGSTOP' as Fault), ...Array.from({ length: CUT }, () => 'network cut' as Fault)];
  extra.forEach((f, i) => out.splice(Math.min(out.length, Math.round(((i + 1) * (out.length + extra.length)) / (extra.length + 1))), 0, f));
  return out;
}

interface CycleResult {
  cycle: number;
  fault: Fault;
  from: string;
  to: string;
  unavailableMs: number | null;
  failoverMs: number;
  backToFullMs: number;
  fenced: string;
  /** the same through the following proxy's writers */
  followerUnavailableMs: number | null;
}

let ha: HaCluster | null = null;
let follower: RunningProxy | null = null;

afterAll(async () => {
  await follower?.stop();
  await ha?.stop();
  await stopAgentProcesses();
  await cleanupAll();
  await destroyAllNetHosts();
}, 120_000);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN;
};

async function inject(fault: Fault, p: HaNode): Promise<() => Promise<void>> {
  if (fault === 'kill -9') {
    await p.pg.kill9({ waitOrphans: false });
    return async () => undefined;
  }
  if (fault === 'SIGSTOP') {
    const stopped: number[] = [];
    const resume = async () => {
      for (const pid of stopped) {
        try {
          process.kill(pid, 'SIGCONT');
        } catch {
          // killed meanwhile by the fence
        }
      }
    };
    for (const pid of p.pg.serverPids()) {
      try {
        process.kill(pid, 'SIGSTOP');
        stopped.push(pid);
      } catch (e) {
        // a backend that exited between listing and signalling is simply not there to stop
        if ((e as NodeJS.ErrnoException).code === 'ESRCH') continue;
        await resume();
        throw e;
      }
    }
    return resume;
  }
  await p.net!.cut();
  return async () => p.net!.heal();
}

describe('chaos loop: repeated failover and automatic rejoin under synchronous replication', () => {
  it(`${KILL} kill -9, ${STOP} SIGSTOP and ${CUT} network-cut cycles: one primary, three nodes streaming after each, nothing acknowledged lost`, async () => {
    ha = await HaCluster.start({ name: 'chaos', nodes: 3, sync: true, netns: true });
    await ha.waitHealthy(60_000, 'initial cluster');
    const first = (await ha.status()).primary;
    follower = await startProxy(ha.nodes.map((n) => n.address), FAST_HEALTH);
    await waitFor(async () => (await follower!.status()).primary === first, 15_000, 'the following proxy routing to the first primary');
    const load = new WriteLoad(ha.proxy.port, { workers: 4, txPerSecond: 120, counter: true });
    const followerLoad = new WriteLoad(follower.port, { workers: 2, txPerSecond: 40, counter: true, firstWorker: 4 });
    load.start();
    followerLoad.start();
    const results: CycleResult[] = [];
    let report: Awaited<ReturnType<WriteLoad['stop']>>;
    let followerReport: Awaited<ReturnType<WriteLoad['stop']>>;
    try {
      await sleep(1500);
      const faults = schedule();
      for (let i = 0; i < faults.length; i++) {
        const fault = faults[i];
        const before = await ha.status();
        const old = ha.node(before.primary!);
        const failoversBefore = before.failovers.length;
        if (process.env.PGHA_DEBUG_CHAOS) console.log(JSON.stringify({ sync: before.synchronous, b: before.backends.map((b) => [b.name, b.role, b.applicationName, b.syncState, b.streaming, b.upstream]) }));
        const t0 = Date.now();
        const restore = await inject(fault, old);
        try {
          await waitFor(async () => {
            const s = await ha!.status();
            return s.failovers.length > failoversBefore && !s.failoverRunning && s.primary !== null && s.primary !== old.address;
          }, 60_000, `cycle ${i + 1} (${fault}): a new primary`);
        } catch (e) {
          throw new Error(`${(e as Error).message}\n${ha.proxy.log().slice(-3000)}`);
        } finally {
          if (fault !== 'kill -9') {
            await sleep(1000);
            await restore();
          }
        }
        const s = await ha.waitHealthy(120_000, `cycle ${i + 1} (${fault}): every node streaming again`);
        const report = s.failovers[failoversBefore];
        if (process.env.PGHA_DEBUG_CHAOS) console.log(old.agent.log().split('\n').filter((l) => /rejoin|decision|job/i.test(l)).slice(-30).join('\n'));
        expect(report, `cycle ${i + 1}`).toMatchObject({ from: old.address, error: null, zeroLoss: true });
        expect(await ha.primariesBySql(), `cycle ${i + 1}: primaries by SQL`).toEqual([s.primary]);
        // the old primary acknowledged nothing once the new one was promoted
        const promotedAt = Date.parse(report.promotedAt!);
        const late = load.acks.filter((a) => a.port === old.pg.port && a.at > promotedAt);
        expect(late, `cycle ${i + 1}: commits acknowledged by the fenced old primary after the promotion`).toEqual([]);
        // the following proxy: on the new primary too, and it never had the old one acknowledge after the promotion
        await waitFor(async () => (await follower!.status()).primary === s.primary, 30_000, `cycle ${i + 1} (${fault}): the following proxy routing to ${s.primary}`).catch(async (e: Error) => {
          throw new Error(`${e.message}: it sees ${JSON.stringify((await follower!.status()).backends.map((b) => [b.name, b.role, b.timeline, b.fenced, b.reason]))}`);
        });
        const followerLate = followerLoad.acks.filter((a) => a.port === old.pg.port && a.at > promotedAt);
        expect(followerLate, `cycle ${i + 1}: commits the old primary acknowledged through the following proxy after the promotion`).toEqual([]);
        await waitFor(async () => followerLoad.acks.some((a) => a.at > t0 && a.port === ha!.node(s.primary!).pg.port), 30_000, `cycle ${i + 1}: a commit through the following proxy on the new primary`);
        const followerAck = followerLoad.acks.find((a) => a.at > t0 && a.port !== old.pg.port);
        // unavailable until the new primary acknowledges (a commit the old one finished as it died is not service)
        const firstAck = load.acks.find((a) => a.at > t0 && a.port !== old.pg.port);
        results.push({
          cycle: i + 1,
          fault,
          from: old.name,
          to: ha.node(s.primary!).name,
          unavailableMs: firstAck ? firstAck.at - t0 : null,
          failoverMs: report.ms,
          backToFullMs: Date.now() - t0,
          fenced: report.fenced,
          followerUnavailableMs: followerAck ? followerAck.at - t0 : null,
        });
        console.log(`cycle ${i + 1} ${fault}: ${old.name} -> ${ha.node(s.primary!).name}, writes unavailable ${results[i].unavailableMs} ms (following proxy ${results[i].followerUnavailableMs} ms), failover ${report.ms} ms, old primary fenced ${report.fenced}, back to 3 streaming after ${results[i].backToFullMs} ms`);
        await sleep(700);
      }
    } finally {
      report = await load.stop();
      followerReport = await followerLoad.stop();
    }
    const v = await ha.verifyEverywhere(load, followerLoad);
    for (const fault of ['kill -9', 'SIGSTOP', 'network cut'] as Fault[]) {
      const xs = results.filter((r) => r.fault === fault && r.unavailableMs !== null).map((r) => r.unavailableMs!);
      const ys = results.filter((r) => r.fault === fault && r.followerUnavailableMs !== null).map((r) => r.followerUnavailableMs!);
      if (xs.length) console.log(`${fault}: ${xs.length} cycles, write-unavailability median ${median(xs)} ms, max ${Math.max(...xs)} ms (through the following proxy: median ${median(ys)} ms, max ${Math.max(...ys)} ms); back to full redundancy median ${median(results.filter((r) => r.fault === fault).map((r) => r.backToFullMs))} ms`);
    }
    console.log(`chaos: ${report.commits} acknowledged commits, ${report.errors} client errors ${JSON.stringify(report.errorKinds)}; through the following proxy ${followerReport.commits} and ${followerReport.errors} ${JSON.stringify(followerReport.errorKinds)}; per node ${JSON.stringify(v.perNode)}`);
    expect(results).toHaveLength(KILL + STOP + CUT);
    expect(v.ackedRows).toBeGreaterThan(100 * results.length);
    for (const x of v.perNode) {
      expect(x.lost, `${x.node}: acknowledged transactions missing`).toBe(0);
      expect(x.counter, `${x.node}: counter = rows`).toBe(x.rows);
      expect(x.rows).toBeGreaterThanOrEqual(v.ackedRows);
    }
    expect(results.every((r) => r.unavailableMs !== null && r.followerUnavailableMs !== null)).toBe(true);
  }, 3_600_000);
});
