/**
 * A whole HA cluster for the scenario and chaos tests: N PostgreSQL 15 nodes (a primary and
 * pg_basebackup standbys, optionally each in its own network namespace), a `pgha agent` process
 * beside each (peers of each other, automatic rejoin on), and one pgha-proxy with automatic
 * failover in front. Helpers read the cluster the way an operator would (the proxy's /status, the
 * nodes' own SQL) and check the invariants every fault test asserts.
 */
import pg from 'pg';
import { freePort, PgCluster, sleep, waitFor } from '../harness/cluster.js';
import { createNetHost, type NetHost } from '../harness/netns.js';
import { startAgentProcess, type AgentProcess } from './agents.js';
import { startProxy, type RunningProxy } from './proxy.js';
import { COUNTER_DDL, LEDGER_DDL, type WriteLoad } from './write-load.js';
import type { ProxyStatus } from '../../proxy/server.js';
import { memberSlotName } from '../../src/slots/member-slot.js';

export const HA_TOKEN = 'ha-cluster-test-token-0123456789';

export interface HaNode {
  name: string;
  pg: PgCluster;
  net: NetHost | null;
  agent: AgentProcess;
  agentUrl: string;
  /** host:port as the proxy names it */
  address: string;
}

export interface HaClusterOptions {
  name: string;
  nodes?: number;
  /** synchronous replication: `ANY 1 (*)` in every node's postgresql.conf */
  sync?: boolean;
  /** every node in its own network namespace (for network cuts) */
  netns?: boolean;
  proxyArgs?: string[];
  agentArgs?: string[];
  health?: string[];
  /** how many pgha-proxy processes, all with the same arguments (default 1; more need --etcd in proxyArgs) */
  proxies?: number;
  /** every proxy also gets a read-only port (--read-listen on a free port) */
  proxyRead?: boolean;
  /** called once the net hosts exist, before any agent starts (e.g. to start etcd listening on their gateways) */
  beforeAgents?: (nets: Array<NetHost | null>) => Promise<void>;
  /** more `pgha agent` arguments for node i (after agentArgs), e.g. an etcd URL reachable from its net host */
  agentArgsFor?: (i: number, net: NetHost | null) => string[];
  /**
   * another PostgreSQL build (test/harness/embedded.ts: initdb, pg_ctl and postgres only): the
   * standbys are cold copies of the stopped primary (standby.signal, primary_conninfo and
   * primary_slot_name through the member slot made on the primary first), not pg_basebackup clones
   */
  pg?: { binDir: string; libDir: string };
}

export const FAST_HEALTH = ['--health-interval', '200', '--health-timeout', '1000', '--health-retries', '3', '--health-retry-delay', '100'];

export class HaCluster {
  /** the proxies (the first one is `proxy`); a test that kills one removes it here */
  readonly proxies: RunningProxy[];

  private constructor(
    readonly nodes: HaNode[],
    proxies: RunningProxy[],
    /** backends and arguments every proxy of this cluster is started with */
    private readonly proxyLaunch: { backends: string[]; args: string[]; read?: boolean },
  ) {
    this.proxies = proxies;
  }

  /** the proxy the helpers ask (the first of `proxies`) */
  get proxy(): RunningProxy {
    return this.proxies[0];
  }

  /** one more pgha-proxy with the same arguments as the others (and `env` in its environment) */
  async addProxy(env: NodeJS.ProcessEnv = {}): Promise<RunningProxy> {
    const p = await startProxy(this.proxyLaunch.backends, this.proxyLaunch.args, { env: { PGHA_TOKEN: HA_TOKEN, ...env }, read: this.proxyLaunch.read });
    this.proxies.push(p);
    return p;
  }

  static async start(o: HaClusterOptions): Promise<HaCluster> {
    const n = o.nodes ?? 3;
    const nets: Array<NetHost | null> = [];
    for (let i = 0; i < n; i++) nets.push(o.netns ? await createNetHost(`${o.name}-n${i + 1}`) : null);
    await o.beforeAgents?.(nets);
    const conf = { wal_retrieve_retry_interval: '200ms', wal_receiver_timeout: '3s', wal_sender_timeout: '3s', max_wal_size: '256MB', wal_keep_size: '128MB' };
    const primary = await PgCluster.init({ name: `${o.name}-n1`, netHost: nets[0] ?? undefined, binDir: o.pg?.binDir, libDir: o.pg?.libDir, conf: { ...conf, cluster_name: 'n1' } });
    await primary.start();
    await primary.sql(LEDGER_DDL);
    primary.psql(COUNTER_DDL);
    const pgs = [primary];
    if (o.pg) {
      if (o.netns) throw new Error('HaCluster: cold-copy standbys (pg) are made in the root namespace only');
      for (let i = 1; i < n; i++) await primary.sql(`SELECT pg_create_physical_replication_slot('${memberSlotName(`n${i + 1}`)}', true)`);
      primary.stop('fast');
      for (let i = 1; i < n; i++) pgs.push(await primary.coldStandby({ name: `${o.name}-n${i + 1}`, slot: memberSlotName(`n${i + 1}`), conf: { cluster_name: `n${i + 1}` } }));
      for (const c of pgs) await c.start();
      for (const c of pgs.slice(1)) await waitFor(async () => (await c.sql('SELECT status FROM pg_stat_wal_receiver')) === 'streaming', 60_000, `${c.name} streaming`);
    } else {
      for (let i = 1; i < n; i++) {
        pgs.push(await primary.createStandby({ name: `${o.name}-n${i + 1}`, netHost: nets[i] ?? undefined, conf: { cluster_name: `n${i + 1}` } }));
      }
    }
    if (o.sync) {
      // in every node's own configuration, as an operator (or a base backup of it) would have it
      for (const c of pgs) {
        c.writeConf({ synchronous_standby_names: 'ANY 1 (*)' });
        await c.sql('SELECT pg_reload_conf()');
      }
      await waitFor(async () => Number(await primary.sql("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'quorum'")) === n - 1, 30_000, 'quorum standbys');
    }
    // agents know each other before they start: ports chosen first
    const ports = await Promise.all(pgs.map(() => freePort()));
    const urls = pgs.map((c, i) => `http://${c.host}:${ports[i]}`);
    const agents: AgentProcess[] = [];
    for (let i = 0; i < n; i++) {
      const peers = Object.fromEntries(urls.map((u, j) => [`n${j + 1}`, u]).filter((_, j) => j !== i));
      agents.push(await startAgentProcess(`n${i + 1}`, pgs[i], HA_TOKEN, peers, { netHost: nets[i] ?? undefined, port: ports[i], extraArgs: [...(o.agentArgs ?? []), ...(o.agentArgsFor?.(i, nets[i]) ?? [])] }));
    }
    const nodes: HaNode[] = pgs.map((c, i) => ({ name: `n${i + 1}`, pg: c, net: nets[i], agent: agents[i], agentUrl: urls[i], address: `${c.host}:${c.port}` }));
    const launch = {
      backends: nodes.map((x) => x.address),
      args: [...(o.health ?? FAST_HEALTH), '--auto-failover', ...nodes.flatMap((x) => ['--agent', `${x.address}=${x.agentUrl}`]), ...(o.proxyArgs ?? [])],
      read: o.proxyRead,
    };
    // several proxies start together: each waits until it routes to a primary (recorded by the leader)
    const proxies = await Promise.all(Array.from({ length: o.proxies ?? 1 }, () => startProxy(launch.backends, launch.args, { env: { PGHA_TOKEN: HA_TOKEN }, read: launch.read })));
    return new HaCluster(nodes, proxies, launch);
  }

  node(address: string): HaNode {
    const x = this.nodes.find((n) => n.address === address);
    if (!x) throw new Error(`no node ${address}`);
    return x;
  }

  async status(): Promise<ProxyStatus> {
    return this.proxy.status();
  }

  async primary(): Promise<HaNode> {
    const s = await this.status();
    if (!s.primary) throw new Error('the proxy has no primary');
    return this.node(s.primary);
  }

  /** the SQL truth: which nodes answer as primaries (asked directly, not through the proxy) */
  async primariesBySql(): Promise<string[]> {
    const out: string[] = [];
    for (const n of this.nodes) {
      if (n.net?.isCut) continue;
      try {
        const rec = await withTimeout(n.pg.sql('SELECT pg_is_in_recovery()'), 3000);
        if (rec === 'false') out.push(n.address);
      } catch {
        // not running
      }
    }
    return out;
  }

  /**
   * Back to full redundancy: one primary, every other node a standby streaming from it on its
   * timeline (as the proxy sees it and as the primary's pg_stat_replication says), nothing fenced.
   */
  async waitHealthy(timeoutMs: number, what = 'every node back to streaming'): Promise<ProxyStatus> {
    let last: ProxyStatus | null = null;
    let why = '';
    const started = Date.now();
    await waitFor(
      async () => {
        const s = (last = await this.status());
        why = await this.notHealthy(s);
        if (why && process.env.PGHA_DEBUG_CHAOS && Date.now() - started > 5000) console.log(`not healthy yet: ${why}`);
        return why === '';
      },
      timeoutMs,
      what,
    ).catch((e) => {
      throw new Error(`${(e as Error).message}: ${why}\nproxy status: ${JSON.stringify(last?.backends.map((b) => ({ name: b.name, role: b.role, tl: b.timeline, streaming: b.streaming, upstream: b.upstream, fenced: b.fenced, reason: b.reason, err: b.lastError })))}\nagents:\n${this.nodes.map((n) => `--- ${n.name}\n${n.agent.log().split('\n').slice(-15).join('\n')}`).join('\n')}`);
    });
    return last!;
  }

  /** why the cluster is not back to full redundancy ('' when it is) */
  private async notHealthy(s: ProxyStatus): Promise<string> {
    if (!s.primary) return 'no primary';
    if (s.failoverRunning) return 'failover running';
    for (const b of s.backends) {
      if (b.name === s.primary) continue;
      if (b.role !== 'standby') return `${b.name} is ${b.role} (${b.reason ?? b.lastError ?? ''})`;
      if (!b.streaming) return `${b.name} does not stream`;
      if (b.fenced) return `${b.name} is fenced`;
      if (b.upstream !== s.primary) return `${b.name} streams from ${b.upstream}, not ${s.primary}`;
      if (b.timeline !== s.timeline) return `${b.name} is on timeline ${b.timeline}, the primary on ${s.timeline}`;
    }
    const p = this.node(s.primary);
    const streaming = Number(await p.pg.sql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"));
    return streaming === this.nodes.length - 1 ? '' : `${streaming} standbys streaming in the primary's pg_stat_replication`;
  }

  /** every acknowledged write of `loads` on every node, and the counter equal to the rows (ackedRows, lost: summed over the loads) */
  async verifyEverywhere(...loads: WriteLoad[]): Promise<{ ackedRows: number; perNode: Array<{ node: string; lost: number; rows: number; counter: number }> }> {
    const s = await this.status();
    const p = this.node(s.primary!);
    const target = await p.pg.sql('SELECT pg_current_wal_lsn()');
    const perNode: Array<{ node: string; lost: number; rows: number; counter: number }> = [];
    let acked = 0;
    for (const n of this.nodes) {
      if (n !== p) await waitFor(async () => (await n.pg.sql(`SELECT pg_last_wal_replay_lsn() >= '${target}'::pg_lsn`)) === 'true', 60_000, `${n.name} replay to ${target}`);
      const vs = await Promise.all(loads.map((l) => l.verify(n.pg)));
      acked = vs.reduce((a, v) => a + v.ackedRows, 0);
      const lost = vs.reduce((a, v) => a + v.lost, 0);
      const [r] = await n.pg.rows<{ rows: string; counter: string }>('SELECT (SELECT count(*) FROM ledger)::text AS rows, (SELECT n FROM counter WHERE id = 1)::text AS counter');
      perNode.push({ node: n.name, lost, rows: Number(r.rows), counter: Number(r.counter) });
    }
    return { ackedRows: acked, perNode };
  }

  async stop(): Promise<void> {
    for (const p of this.proxies) await p.stop().catch(() => undefined);
    for (const n of this.nodes) await n.agent.stop().catch(() => undefined);
    for (const n of this.nodes) {
      if (n.net?.isCut) await n.net.heal().catch(() => undefined);
    }
    for (const n of this.nodes) await n.pg.cleanup().catch(() => undefined);
    for (const n of this.nodes) await n.net?.destroy().catch(() => undefined);
  }
}

export function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms).unref())]);
}

/** a client connected straight to a node (not through the proxy) */
export async function direct(n: HaNode): Promise<pg.Client> {
  const c = new pg.Client({ host: n.pg.host, port: n.pg.port, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 3000 });
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

export { sleep };

/**
 * Restart a node's agent process (stopped by hand, e.g. while an operator works on the node) on
 * the same port with the same peers, so the proxy and the other agents reach it at the same URL.
 */
export async function restartAgent(ha: HaCluster, node: HaNode, extraArgs?: string[]): Promise<AgentProcess> {
  await node.agent.stop().catch(() => undefined);
  const peers = Object.fromEntries(ha.nodes.filter((n) => n !== node).map((n) => [n.name, n.agentUrl]));
  node.agent = await startAgentProcess(node.name, node.pg, HA_TOKEN, peers, { netHost: node.net ?? undefined, port: Number(new URL(node.agentUrl).port), extraArgs });
  return node.agent;
}

/** one look at a node: its role in the proxy's /status and its own pg_is_in_recovery() (null: no answer) */
export interface NodeObservation {
  /** when the look started (ms) */
  at: number;
  role: string | null;
  inRecovery: 'true' | 'false' | null;
}

export interface NodeWatch {
  /** every look so far, oldest first (grows while the watch runs) */
  readonly observations: NodeObservation[];
  stop(): Promise<NodeObservation[]>;
}

/** pg_is_in_recovery() asked on a fresh connection, null when the node does not answer within ~1 s */
export async function askInRecovery(n: HaNode): Promise<'true' | 'false' | null> {
  const c = new pg.Client({ connectionString: n.pg.connectionString, connectionTimeoutMillis: 1000, query_timeout: 1000 });
  c.on('error', () => undefined);
  try {
    await withTimeout(c.connect(), 1500);
    const { rows } = await withTimeout(c.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r'), 1500);
    return rows[0].r ? 'true' : 'false';
  } catch {
    return null;
  } finally {
    c.end().catch(() => undefined);
  }
}

/**
 * Watch a node (an old primary after a failover) every `periodMs` until stop(): what the proxy says
 * it is and whether it answers as a primary itself — the split-brain questions, asked while it is
 * fenced and rejoining rather than only at the end.
 */
export function watchNode(ha: HaCluster, node: HaNode, periodMs = 100): NodeWatch {
  const observations: NodeObservation[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const at = Date.now();
      const [role, inRecovery] = await Promise.all([
        withTimeout(ha.status(), 2000).then(
          (s) => s.backends.find((b) => b.name === node.address)?.role ?? null,
          () => null,
        ),
        askInRecovery(node),
      ]);
      observations.push({ at, role, inRecovery });
      await sleep(periodMs);
    }
  })();
  return {
    observations,
    stop: async () => {
      running = false;
      await loop;
      return observations;
    },
  };
}
