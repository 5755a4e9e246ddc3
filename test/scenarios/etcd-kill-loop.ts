/**
 * The primary killed again and again under write load (kill -9 of its postmaster), with whatever
 * proxies a HaCluster runs — two on etcd, or one alone — for test/scenarios/etcd-safe-mode.test.ts
 * and bench/etcd-kill-loop.ts. Per cycle: who was promoted, how many promotions the proxies report,
 * how many history entries etcd gained, and the times from the kill to every proxy routing to the
 * new primary and to the first commit it acknowledged. Assertions are the caller's.
 */
import pg from 'pg';
import type { ClusterStore } from '../../src/dcs/store.js';
import { waitFor } from '../harness/cluster.js';
import type { HaCluster, HaNode } from '../support/ha-cluster.js';
import type { RunningProxy } from '../support/proxy.js';
import type { WriteLoad } from '../support/write-load.js';

export interface KillCycle {
  cycle: number;
  from: string;
  to: string;
  /** kill → every proxy routes to the new primary */
  routedMs: number;
  /** kill → the first commit the new primary acknowledged through a proxy (null: none) */
  firstAckMs: number | null;
  /** the deciding proxy's own failover time (report.ms) */
  failoverMs: number | null;
  /** promotions reported by all proxies together for this kill */
  promotions: number;
  /** the proxy that promoted (its admin URL) */
  by: string | null;
  /** entries etcd's history gained (null without etcd), and the last one */
  historyAdded: number | null;
  lastHistory: { kind: string; from: string | null; to: string; by: string } | null;
  /** kill → every node streaming from the new primary again */
  healthyMs: number;
}

/** which server a connection through this proxy reaches: host:port */
export async function routedTo(p: RunningProxy): Promise<string> {
  const c = new pg.Client({ host: '127.0.0.1', port: p.port, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 10_000 });
  c.on('error', () => undefined);
  await c.connect();
  try {
    const { rows } = await c.query<{ a: string; p: string }>("SELECT coalesce(host(inet_server_addr()), '127.0.0.1') AS a, current_setting('port') AS p");
    return `${rows[0].a}:${rows[0].p}`;
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** every proxy routes to the same primary other than `old` (no failover running): that primary */
export async function allRouteTo(proxies: RunningProxy[], old: HaNode, what: string, timeoutMs = 60_000): Promise<string> {
  let primary = '';
  await waitFor(
    async () => {
      const st = await Promise.all(proxies.map((p) => p.status()));
      const ps = new Set(st.map((s) => s.primary));
      primary = st[0].primary ?? '';
      return ps.size === 1 && primary !== '' && primary !== old.address && st.every((s) => !s.failoverRunning);
    },
    timeoutMs,
    what,
  );
  return primary;
}

/** exactly one proxy leads, and every proxy names the same leader */
export async function leaderOf(proxies: RunningProxy[], timeoutMs = 30_000): Promise<{ leader: RunningProxy; others: RunningProxy[] }> {
  let leader: RunningProxy | null = null;
  await waitFor(
    async () => {
      const st = await Promise.all(proxies.map((p) => p.status()));
      const leading = proxies.filter((_, i) => st[i].leader?.isLeader);
      const ids = new Set(st.map((s) => s.leader?.leader?.id));
      leader = leading.length === 1 && ids.size === 1 ? leading[0] : null;
      return leader !== null;
    },
    timeoutMs,
    'exactly one leader, known to every proxy',
  );
  return { leader: leader!, others: proxies.filter((p) => p !== leader) };
}

export async function killPrimaryLoop(ha: HaCluster, o: { kills: number; loads: WriteLoad[]; store?: ClusterStore; log?: (line: string) => void }): Promise<KillCycle[]> {
  const rows: KillCycle[] = [];
  for (let cycle = 1; cycle <= o.kills; cycle++) {
    const old = await ha.primary();
    const historyBefore = o.store ? (await o.store.history()).length : null;
    const before = await Promise.all(ha.proxies.map(async (p) => (await p.status()).failovers.length));
    const t0 = Date.now();
    await old.pg.kill9({ waitOrphans: false });
    const to = await allRouteTo(ha.proxies, old, `cycle ${cycle}: every proxy on a new primary`);
    const routedMs = Date.now() - t0;
    const reports = (await Promise.all(ha.proxies.map(async (p, i) => (await p.status()).failovers.slice(before[i]).map((r) => ({ r, p }))))).flat();
    const promoted = reports.filter((x) => x.r.promotedAt);
    const history = o.store ? await o.store.history() : null;
    await ha.waitHealthy(120_000, `cycle ${cycle}: the old primary back as a standby`);
    // (the writers' first commit on the new primary may come after the routing was seen)
    const port = ha.node(to).pg.port;
    const acks = o.loads.flatMap((l) => l.acks.filter((a) => a.port === port && a.at > t0)).map((a) => a.at);
    const last = history?.at(-1) ?? null;
    const row: KillCycle = {
      cycle,
      from: old.address,
      to,
      routedMs,
      firstAckMs: acks.length ? Math.min(...acks) - t0 : null,
      failoverMs: promoted[0]?.r.ms ?? null,
      promotions: promoted.length,
      by: promoted[0]?.p.admin ?? null,
      historyAdded: history && historyBefore !== null ? history.length - historyBefore : null,
      lastHistory: last ? { kind: last.kind, from: last.from?.backend ?? null, to: last.to.backend, by: last.by } : null,
      healthyMs: Date.now() - t0,
    };
    rows.push(row);
    o.log?.(
      `cycle ${cycle}: kill -9 ${old.name} → ${ha.node(to).name}: routed after ${routedMs} ms, first commit on it after ${row.firstAckMs ?? '-'} ms (failover ${row.failoverMs ?? '-'} ms), ${row.promotions} promotion(s), history +${row.historyAdded ?? '-'}, all streaming after ${row.healthyMs} ms`,
    );
  }
  return rows;
}
