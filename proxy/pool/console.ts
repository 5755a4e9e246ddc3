/**
 * The pool's admin console: `psql -d pgha` on the listener as one of --admin-users, answering
 * PgBouncer's SHOW POOLS / SHOW CLIENTS / SHOW SERVERS / SHOW STATS (and STATS_TOTALS,
 * STATS_AVERAGES) / SHOW DATABASES / SHOW CONFIG / SHOW VERSION / SHOW HELP, PAUSE (new transactions wait,
 * answered once no server connection is in use), RESUME and RELOAD (the auth file read again), over
 * the simple query protocol.
 */
import { packageVersion } from '../../src/config/version.js';
import { errorResponse } from '../protocol/backend-messages.js';
import { SQLSTATE } from '../protocol/codes.js';
import { commandComplete, emptyQuery, readyForQuery, resultSet } from './messages.js';
import type { PoolManager } from './pool.js';
import { byDatabase, STATS_PERIOD_MS } from './stats.js';

const PAUSE_WAIT_MS = 60_000;

/** the SHOW commands: what each answers (SHOW HELP lists these and the actions) */
const SHOW: Record<string, (mgr: PoolManager) => Buffer> = {
  'SHOW POOLS': pools,
  'SHOW CLIENTS': clients,
  'SHOW SERVERS': servers,
  'SHOW STATS': (mgr) => stats(mgr, true, true),
  'SHOW STATS_TOTALS': (mgr) => stats(mgr, true, false),
  'SHOW STATS_AVERAGES': (mgr) => stats(mgr, false, true),
  'SHOW DATABASES': databases,
  'SHOW CONFIG': config,
  'SHOW VERSION': () => resultSet(['version'], [[`pgha-proxy ${packageVersion()}`]]),
};
const ACTIONS = ['PAUSE', 'RESUME', 'RELOAD'];

export async function consoleQuery(mgr: PoolManager, text: string): Promise<Buffer> {
  const out: Buffer[] = [];
  const statements = text.split(';').map((x) => x.trim()).filter(Boolean);
  if (statements.length === 0) out.push(emptyQuery());
  for (const st of statements) {
    const words = st.toUpperCase().split(/\s+/);
    const cmd = words.join(' ');
    const show = Object.hasOwn(SHOW, cmd) ? SHOW[cmd] : null;
    if (show) out.push(show(mgr));
    else if (cmd === 'SHOW HELP') out.push(resultSet(['command'], [...Object.keys(SHOW), ...ACTIONS].map((c) => [c])));
    else if (cmd === 'RELOAD') {
      try {
        mgr.reloadAuth();
      } catch (e) {
        out.push(errorResponse({ severity: 'ERROR', code: SQLSTATE.configFileError, message: `RELOAD: ${(e as Error).message}`, detail: 'The entries read before are still in use.' }));
        break;
      }
      out.push(commandComplete('RELOAD'));
    }
    else if (cmd === 'PAUSE') {
      mgr.pause();
      if (!(await mgr.whenQuiet(PAUSE_WAIT_MS))) {
        out.push(errorResponse({ severity: 'ERROR', code: SQLSTATE.cannotConnectNow, message: `PAUSE: server connections still in use after ${PAUSE_WAIT_MS} ms (new transactions wait; RESUME lets them run)` }));
        break;
      }
      out.push(commandComplete('PAUSE'));
    } else if (cmd === 'RESUME') {
      mgr.resume();
      out.push(commandComplete('RESUME'));
    } else {
      out.push(errorResponse({ severity: 'ERROR', code: '42601', message: `unknown pgha console command: ${st.slice(0, 80)}`, hint: 'SHOW HELP lists them' }));
      break;
    }
  }
  out.push(readyForQuery('I'));
  return Buffer.concat(out);
}

function pools(mgr: PoolManager): Buffer {
  const rows = mgr.stats().map((p) => [p.database, p.user, p.node, p.clActive, p.clWaiting, p.svActive, p.svIdle, p.svLogin, Math.floor(p.maxWaitMs / 1000), (p.maxWaitMs % 1000) * 1000, p.mode, p.state]);
  return resultSet(['database', 'user', 'node', 'cl_active', 'cl_waiting', 'sv_active', 'sv_idle', 'sv_login', 'maxwait', 'maxwait_us', 'pool_mode', 'state'], rows);
}

function clients(mgr: PoolManager): Buffer {
  const view = mgr.nativeView();
  const rows = [...mgr.clients].map((c) => {
    const d = c.describe(view);
    return [d.user, d.database, d.state, d.addr, d.port, d.connect_time, d.wait_ms, d.server, d.node, d.tls, d.transactions, d.prepared_statements, c.id];
  });
  return resultSet(['user', 'database', 'state', 'addr', 'port', 'connect_time', 'wait_ms', 'server', 'node', 'tls', 'transactions', 'prepared_statements', 'id'], rows);
}

function servers(mgr: PoolManager): Buffer {
  const rows: Array<Array<string | number | null>> = [];
  const view = mgr.nativeView();
  for (const p of mgr.pools.values()) {
    for (const s of p.all) {
      const nv = s.state === 'native' ? view?.servers.get(s.id) : undefined;
      if (nv) {
        rows.push([s.user, s.database, nv.state, s.node, s.backendKey?.pid ?? null, new Date(s.connectedAt).toISOString(), null, nv.client, nv.prepared, s.id]);
        continue;
      }
      const c = s.client as { id: number } | null;
      rows.push([s.user, s.database, s.state, s.node, s.backendKey?.pid ?? null, new Date(s.connectedAt).toISOString(), new Date(s.lastUsed).toISOString(), c?.id ?? null, s.prepared.size, s.id]);
    }
  }
  return resultSet(['user', 'database', 'state', 'node', 'remote_pid', 'connect_time', 'request_time', 'client', 'prepared_statements', 'id'], rows);
}

/**
 * PgBouncer's SHOW STATS, per database (its users summed): totals since the start, and averages
 * over the last whole stats period (60 s; 0 until one has passed) — per second for counts and
 * bytes, per transaction / query / wait for times, in microseconds.
 */
function stats(mgr: PoolManager, withTotals: boolean, withAverages: boolean): Buffer {
  const totals = ['total_xact_count', 'total_query_count', 'total_received', 'total_sent', 'total_xact_time', 'total_query_time', 'total_wait_time'];
  const averages = ['avg_xact_count', 'avg_query_count', 'avg_recv', 'avg_sent', 'avg_xact_time', 'avg_query_time', 'avg_wait_time'];
  const columns = ['database', ...(withTotals ? totals : []), ...(withAverages ? averages : [])];
  const rows = [...byDatabase(mgr.routeTotals())].sort(([a], [b]) => a.localeCompare(b)).map(([database, t]) => {
    const a = mgr.periods.average(database);
    return [
      database,
      ...(withTotals ? [t.xacts, t.queries, t.bytesFromClients, t.bytesToClients, t.xactUs, t.queryUs, t.waitUs] : []),
      ...(withAverages ? [a.xactsPerSecond, a.queriesPerSecond, a.receivedPerSecond, a.sentPerSecond, a.xactUs, a.queryUs, a.waitUs] : []),
    ];
  });
  return resultSet(columns, rows);
}

/**
 * PgBouncer's SHOW DATABASES for the databases clients use (pgha-proxy has no list of its own: a
 * pool is made for whatever database a client names), one row per node that has a pool of it:
 * where it is, the limits, and its server connections there now (all users).
 */
function databases(mgr: PoolManager): Buffer {
  const rows = new Map<string, Array<string | number | null>>();
  for (const p of mgr.pools.values()) {
    if (p.drained) continue;
    const key = `${p.database}\0${p.node}`;
    const r = rows.get(key) ?? [p.database, p.address.host, p.address.port, p.database, p.node, mgr.settings.size, mgr.settings.mode, mgr.settings.maxDbConnections, 0, mgr.paused ? 1 : 0];
    (r[8] as number) += p.all.size;
    rows.set(key, r);
  }
  return resultSet(['name', 'host', 'port', 'database', 'node', 'pool_size', 'pool_mode', 'max_connections', 'current_connections', 'paused'], [...rows.values()]);
}

/** the pool's settings as SHOW CONFIG shows PgBouncer's: key, value, changeable (only the auth file is, by RELOAD) */
function config(mgr: PoolManager): Buffer {
  const st = mgr.settings;
  const rows: Array<[string, string | number, string]> = [
    ['pool_mode', st.mode, 'no'],
    ['default_pool_size', st.size, 'no'],
    ['max_db_connections', st.maxDbConnections, 'no'],
    ['max_user_connections', st.maxUserConnections, 'no'],
    ['max_client_conn', mgr.cfg.maxClients, 'no'],
    ['query_wait_timeout', st.waitTimeoutMs / 1000, 'no'],
    ['server_idle_timeout', st.serverIdleTimeoutMs / 1000, 'no'],
    ['server_lifetime', st.serverLifetimeMs / 1000, 'no'],
    ['server_reset_query', st.resetQuery, 'no'],
    ['max_prepared_statements', st.maxPreparedStatements, 'no'],
    ['auth_type', st.authType, 'no'],
    ['auth_file', st.authFile, 'yes'],
    ['admin_users', st.adminUsers.join(','), 'no'],
    ['stats_period', STATS_PERIOD_MS / 1000, 'no'],
  ];
  return resultSet(['key', 'value', 'changeable'], rows.map(([k, v, c]) => [k, String(v), c]));
}
