/**
 * Prometheus metrics (prom-client). Byte counters are plain numbers in the relay's hot path and are
 * read at scrape time, so relaying a chunk costs no label lookup.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { FailoverReport } from '../failover/failover.js';
import type { BackendState } from '../health/monitor.js';
import type { ProxyStats } from '../session/context.js';
import type { PoolStat } from '../pool/pool.js';
import type { Counts, RouteTotals } from '../pool/stats.js';

/** What the metrics read from the proxy at scrape time (the proxy server implements it). */
export interface MetricsSource {
  sessions: Iterable<{ kind: string; phase: string }>;
  accepted: { rw: number; ro: number };
  stats: ProxyStats;
  /** the native relay's counters: [bytes from clients, bytes to clients, …, queries, transactions]; per loop [sessions, CPU seconds] */
  relay: { counters(): number[]; loops(): number[][] } | null;
  monitor: { backends: readonly BackendState[]; timeline: number };
  failover: { history: readonly FailoverReport[] };
  sessionsOn(name: string): number;
  isDecider(): boolean;
  /** --pool-mode: the pools (null without pooling) */
  pool: { stats(): PoolStat[]; waitTimeouts: ReadonlyMap<string, { user: string; database: string; count: number }>; trafficTotals(): Counts; routeTotals(): RouteTotals[] } | null;
}

type Sample = [labels: Record<string, string>, value: number];

export function proxyMetrics(proxy: MetricsSource): { registry: Registry; healthLatency: Histogram<'backend' | 'ok'>; failovers: Counter<'result'> } {
  const registry = new Registry();
  /** a gauge read from the proxy's state when Prometheus scrapes */
  const scraped = (name: string, help: string, labelNames: string[], read: () => Sample[]) =>
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        for (const [labels, value] of read()) this.set(labels, value);
      },
    });

  /** a counter read from the proxy's state when Prometheus scrapes (the proxy keeps the running total) */
  const scrapedCounter = (name: string, help: string, labelNames: string[], read: () => Sample[]) =>
    new Counter({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        for (const [labels, value] of read()) this.inc(labels, value);
      },
    });

  scraped('pgha_proxy_client_connections', 'client connections open, by port (rw/ro) and phase', ['port', 'phase'], () => {
    // every port and phase, 0 included: a graph of sessions shows 0, not "no data"
    const count = new Map<string, number>(['rw', 'ro'].flatMap((port) => ['startup', 'connecting', 'relay'].map((phase): [string, number] => [`${port} ${phase}`, 0])));
    for (const s of proxy.sessions) count.set(`${s.kind} ${s.phase}`, (count.get(`${s.kind} ${s.phase}`) ?? 0) + 1);
    return [...count].map(([k, v]) => [{ port: k.split(' ')[0], phase: k.split(' ')[1] }, v]);
  });
  scraped('pgha_proxy_client_connections_accepted', 'client connections accepted since start (a counter)', ['port'], () => [
    [{ port: 'rw' }, proxy.accepted.rw],
    [{ port: 'ro' }, proxy.accepted.ro],
  ]);
  scraped('pgha_proxy_bytes', 'bytes relayed since start (a counter), by direction', ['direction'], () => {
    const [fromClients, toClients] = proxy.relay?.counters() ?? [0, 0];
    const pool = proxy.pool?.trafficTotals();
    return [
      [{ direction: 'client_to_server' }, proxy.stats.bytesFromClients + fromClients + (pool?.bytesFromClients ?? 0)],
      [{ direction: 'server_to_client' }, proxy.stats.bytesToClients + toClients + (pool?.bytesToClients ?? 0)],
    ];
  });
  scraped('pgha_proxy_backend_role', '1 for the role each backend has now (primary, standby, down, fenced, unknown)', ['backend', 'role'], () =>
    proxy.monitor.backends.flatMap((b) => ['primary', 'standby', 'down', 'fenced', 'unknown'].map((role): Sample => [{ backend: b.name, role }, b.role === role ? 1 : 0])),
  );
  scraped('pgha_proxy_backend_sessions', 'client sessions attached to each backend', ['backend'], () =>
    proxy.monitor.backends.map((b): Sample => [{ backend: b.name }, proxy.sessionsOn(b.name)]),
  );
  scraped('pgha_proxy_backend_lag_bytes', 'WAL bytes the primary wrote that a standby has not replayed', ['backend'], () =>
    proxy.monitor.backends.filter((b) => b.lagBytes !== null).map((b): Sample => [{ backend: b.name }, b.lagBytes!]),
  );
  scraped('pgha_proxy_backend_lag_seconds', "seconds since a standby's last replayed commit while it has WAL left to replay (0 when caught up)", ['backend'], () =>
    proxy.monitor.backends.filter((b) => b.lagSeconds !== null).map((b): Sample => [{ backend: b.name }, b.lagSeconds!]),
  );
  scraped('pgha_proxy_backend_streaming', "1 when a standby's WAL receiver streams, 0 when it does not", ['backend'], () =>
    proxy.monitor.backends.filter((b) => b.streaming !== null).map((b): Sample => [{ backend: b.name }, b.streaming ? 1 : 0]),
  );
  scraped('pgha_proxy_backend_synchronous', '1 when a standby is synchronous (sync or quorum) for the primary', ['backend'], () =>
    proxy.monitor.backends.filter((b) => b.role === 'standby').map((b): Sample => [{ backend: b.name }, b.syncState === 'sync' || b.syncState === 'quorum' ? 1 : 0]),
  );
  scraped('pgha_proxy_timeline', 'newest timeline seen on any backend', [], () => [[{}, proxy.monitor.timeline]]);
  scraped('pgha_proxy_sessions_terminated', 'sessions ended by the proxy with an ErrorResponse (a counter)', [], () => [[{}, proxy.stats.terminated]]);
  scraped('pgha_proxy_protocol_errors', 'clients refused for breaking the protocol or timing out in startup (a counter)', [], () => [[{}, proxy.stats.protocolErrors]]);
  scraped('pgha_proxy_cancel_requests', 'cancel requests, forwarded or with an unknown key (a counter)', ['result'], () => [
    [{ result: 'forwarded' }, proxy.stats.cancelsForwarded],
    [{ result: 'unknown_key' }, proxy.stats.cancelsUnknown],
  ]);
  scrapedCounter('pgha_proxy_transactions_total', 'transactions ended through the proxy, autocommit statements included: ReadyForQuery (idle) relayed to clients after their startup (rate() is TPS)', [], () => [
    [{}, proxy.stats.readyIdle + (proxy.relay?.counters()[4] ?? 0) + (proxy.pool?.trafficTotals().xacts ?? 0)],
  ]);
  scrapedCounter('pgha_proxy_queries_total', 'queries answered through the proxy: ReadyForQuery relayed to clients after their startup, one per simple Query or extended-protocol Sync', [], () => [
    [{}, proxy.stats.ready + (proxy.relay?.counters()[3] ?? 0) + (proxy.pool?.trafficTotals().queries ?? 0)],
  ]);
  // the native relay's loops: how sessions are spread and how busy each loop's thread is
  scraped('pgha_proxy_relay_loop_sessions', "sessions each native relay loop carries (a new one goes to the first loop under half a core's CPU)", ['loop'], () =>
    (proxy.relay?.loops() ?? []).map(([sessions], i): Sample => [{ loop: String(i) }, sessions]),
  );
  scrapedCounter('pgha_proxy_relay_loop_cpu_seconds_total', "CPU time of each native relay loop's thread (rate() near 1: the loop is saturated)", ['loop'], () =>
    (proxy.relay?.loops() ?? []).map(([, cpu], i): Sample => [{ loop: String(i) }, cpu]).filter(([, cpu]) => Number.isFinite(cpu)),
  );
  // --pool-mode: PgBouncer's SHOW POOLS as gauges, one series per (database, user, node)
  const poolLabels = ['database', 'user', 'node'];
  const poolKey = (p: PoolStat) => ({ database: p.database, user: p.user, node: p.node });
  scraped('pgha_proxy_pool_clients', 'pooled clients by pool and state: active (on a server connection of the pool) or waiting for one', [...poolLabels, 'state'], () =>
    (proxy.pool?.stats() ?? []).flatMap((p): Sample[] => [
      [{ ...poolKey(p), state: 'active' }, p.clActive],
      [{ ...poolKey(p), state: 'waiting' }, p.clWaiting],
    ]),
  );
  scraped('pgha_proxy_pool_servers', 'server connections by pool and state: active (a client on it), idle, login', [...poolLabels, 'state'], () =>
    (proxy.pool?.stats() ?? []).flatMap((p): Sample[] => [
      [{ ...poolKey(p), state: 'active' }, p.svActive],
      [{ ...poolKey(p), state: 'idle' }, p.svIdle],
      [{ ...poolKey(p), state: 'login' }, p.svLogin],
    ]),
  );
  scraped('pgha_proxy_pool_maxwait_seconds', 'how long the oldest client waiting for a server connection of the pool has waited', poolLabels, () =>
    (proxy.pool?.stats() ?? []).map((p): Sample => [poolKey(p), p.maxWaitMs / 1000]),
  );
  scrapedCounter('pgha_proxy_pool_wait_timeouts_total', 'pooled clients closed because no server connection of their pool became free within --pool-wait-timeout (query_wait_timeout), by database and user (0 for every pool there is)', ['database', 'user'], () => {
    const out = new Map<string, Sample>();
    for (const p of proxy.pool?.stats() ?? []) out.set(`${p.user}\0${p.database}`, [{ database: p.database, user: p.user }, 0]);
    for (const [k, t] of proxy.pool?.waitTimeouts ?? []) out.set(k, [{ database: t.database, user: t.user }, t.count]);
    return [...out.values()];
  });
  // PgBouncer's SHOW STATS totals by database and user (rate() of the seconds over rate() of the
  // count is the average: of a wait, a transaction, a query)
  const routeCounter = (name: string, help: string, value: (t: RouteTotals) => number) =>
    scrapedCounter(name, help, ['database', 'user'], () => (proxy.pool?.routeTotals() ?? []).map((t): Sample => [{ database: t.database, user: t.user }, value(t)]));
  routeCounter('pgha_proxy_pool_wait_seconds_total', 'time pooled clients spent waiting for a server connection (a full pool, a new connection being opened), counted when they got one, by database and user', (t) => t.waitUs / 1e6);
  routeCounter('pgha_proxy_pool_waits_total', 'pooled clients (a transaction, or a session) that waited for a server connection and got one, by database and user', (t) => t.waits);
  routeCounter('pgha_proxy_pool_transactions_total', "pooled transactions, autocommit statements included (ReadyForQuery 'I' relayed), by database and user", (t) => t.xacts);
  routeCounter('pgha_proxy_pool_queries_total', 'pooled queries (ReadyForQuery relayed: one per simple Query or Sync), by database and user', (t) => t.queries);
  routeCounter('pgha_proxy_pool_transaction_seconds_total', "time pooled transactions took, from their first message sent to the server to ReadyForQuery 'I' (idle in transaction included), by database and user", (t) => t.xactUs / 1e6);
  routeCounter('pgha_proxy_pool_query_seconds_total', 'time pooled queries took, from a request sent to the server to the ReadyForQuery answering it, by database and user', (t) => t.queryUs / 1e6);
  routeCounter('pgha_proxy_pool_received_bytes_total', 'bytes pooled clients sent (after their login), by database and user', (t) => t.bytesFromClients);
  routeCounter('pgha_proxy_pool_sent_bytes_total', 'bytes sent to pooled clients (after their login), by database and user', (t) => t.bytesToClients);
  scraped('pgha_proxy_decider', '1 when this proxy decides failovers: the leader on etcd, or the only proxy without etcd', [], () => [[{}, proxy.isDecider() ? 1 : 0]]);
  scrapedCounter('pgha_proxy_failovers_recorded_total', 'failovers and switchovers in this proxy\'s history (GET /status), by kind and result', ['kind', 'result'], () => {
    const count = new Map<string, number>();
    for (const f of proxy.failover.history) {
      const k = `${f.kind} ${f.error ? 'failed' : f.promotedAt ? 'promoted' : 'running'}`;
      count.set(k, (count.get(k) ?? 0) + 1);
    }
    return [...count].map(([k, v]): Sample => [{ kind: k.split(' ')[0], result: k.split(' ')[1] }, v]);
  });
  scraped('pgha_proxy_last_failover_phase_seconds', 'where the time of the last failover or switchover went, by phase (detect, confirm, fence, prepare, promote, reroute, …)', ['kind', 'phase'], () => {
    const last = proxy.failover.history.at(-1);
    return last ? last.phases.map((p): Sample => [{ kind: last.kind, phase: p.name }, p.ms / 1000]) : [];
  });
  scrapedCounter('pgha_proxy_failover_phase_seconds_total', 'seconds spent in each phase over every failover and switchover of this proxy', ['kind', 'phase'], () => {
    const sum = new Map<string, number>();
    for (const f of proxy.failover.history) for (const p of f.phases) sum.set(`${f.kind} ${p.name}`, (sum.get(`${f.kind} ${p.name}`) ?? 0) + p.ms / 1000);
    return [...sum].map(([k, v]): Sample => [{ kind: k.split(' ')[0], phase: k.split(' ')[1] }, v]);
  });
  scraped('pgha_proxy_last_failover_seconds', 'duration of the last failover or switchover until writes were routed again', ['kind'], () => {
    const last = proxy.failover.history.at(-1);
    return last ? [[{ kind: last.kind }, last.ms / 1000]] : [];
  });
  const healthLatency = new Histogram({
    name: 'pgha_proxy_health_check_seconds',
    help: 'health check latency by backend and outcome',
    labelNames: ['backend', 'ok'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  const failovers = new Counter({
    name: 'pgha_proxy_failovers_total',
    help: 'automatic failovers run by this proxy, by result, plus primary changes it followed',
    labelNames: ['result'],
    registers: [registry],
  });
  return { registry, healthLatency, failovers };
}
