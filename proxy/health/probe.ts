/**
 * One health check of one server with `pg`: a fresh connection (so a postmaster that no longer
 * accepts connections is noticed, as pgpool-II's health check does), one query, then close.
 */
import pg from 'pg';
import type { BackendAddress, BackendTls } from '../backend/connect.js';

export interface HealthCredentials {
  user: string;
  password?: string;
  database: string;
}

export interface ProbeResult {
  inRecovery: boolean;
  systemId: string;
  /** the timeline WAL is written on (primary) or received/replayed on (standby) */
  timeline: number;
  /** primary: pg_current_wal_lsn(); standby: pg_last_wal_replay_lsn() */
  lsn: string | null;
  receiveLsn: string | null;
  replayLsn: string | null;
}

// one round trip; pg_walfile_name() names the insert timeline of a primary (pg_control's checkpoint
// timeline lags behind a promotion until the next checkpoint)
const HEALTH_SQL = `SELECT pg_is_in_recovery() AS rec,
  (SELECT system_identifier FROM pg_control_system())::text AS sysid,
  CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS cur,
  CASE WHEN pg_is_in_recovery() THEN NULL
       ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS cur_tli,
  pg_last_wal_receive_lsn()::text AS recv,
  pg_last_wal_replay_lsn()::text AS replay,
  (SELECT received_tli FROM pg_stat_wal_receiver) AS recv_tli,
  (SELECT timeline_id FROM pg_control_checkpoint()) AS ckpt_tli`;

interface Row {
  rec: boolean;
  sysid: string;
  cur: string | null;
  cur_tli: number | null;
  recv: string | null;
  replay: string | null;
  recv_tli: number | null;
  ckpt_tli: number;
}

/** sslmode=prefer for `pg` (which has no such mode): servers found to refuse SSL are remembered */
const refusesSsl = new Set<string>();
const NO_SSL = 'The server does not support SSL connections';

export function pgSsl(tls: BackendTls, addr?: BackendAddress): pg.ClientConfig['ssl'] {
  switch (tls.mode) {
    case 'disable':
      return false;
    case 'prefer':
      return addr && refusesSsl.has(`${addr.host}:${addr.port}`) ? false : { rejectUnauthorized: false };
    case 'require':
      return { rejectUnauthorized: false };
    case 'verify-ca':
      return { rejectUnauthorized: true, ca: tls.ca, checkServerIdentity: () => undefined };
    case 'verify-full':
      return { rejectUnauthorized: true, ca: tls.ca };
  }
}

export function healthClient(addr: BackendAddress, creds: HealthCredentials, tls: BackendTls, timeoutMs: number): pg.Client {
  return new pg.Client({
    host: addr.host,
    port: addr.port,
    user: creds.user,
    password: creds.password,
    database: creds.database,
    ssl: pgSsl(tls, addr),
    connectionTimeoutMillis: timeoutMs,
    application_name: 'pgha-proxy health check',
  });
}

/** connect, query, close; rejects on any failure or after timeoutMs in total */
export async function probe(addr: BackendAddress, creds: HealthCredentials, tls: BackendTls, timeoutMs: number): Promise<ProbeResult> {
  try {
    return await probeOnce(addr, creds, tls, timeoutMs);
  } catch (e) {
    if (tls.mode !== 'prefer' || (e as Error).message !== NO_SSL) throw e;
    refusesSsl.add(`${addr.host}:${addr.port}`);
    return probeOnce(addr, creds, tls, timeoutMs);
  }
}

async function probeOnce(addr: BackendAddress, creds: HealthCredentials, tls: BackendTls, timeoutMs: number): Promise<ProbeResult> {
  const client = healthClient(addr, creds, tls, timeoutMs);
  client.on('error', () => undefined);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
  });
  let ok = false;
  try {
    const work = (async () => {
      await client.connect();
      const { rows } = await client.query<Row>(HEALTH_SQL);
      return rows[0];
    })();
    work.catch(() => undefined);
    const r = await Promise.race([work, timeout]);
    ok = true;
    const timeline = r.rec ? (r.recv_tli ?? r.ckpt_tli) : (r.cur_tli ?? r.ckpt_tli);
    return {
      inRecovery: r.rec,
      systemId: r.sysid,
      timeline,
      lsn: r.rec ? r.replay : r.cur,
      receiveLsn: r.recv,
      replayLsn: r.replay,
    };
  } finally {
    clearTimeout(timer);
    if (ok) {
      client.end().catch(() => undefined);
    } else {
      // a hung or dying server must not hold the check: drop the socket rather than wait for a goodbye
      (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
    }
  }
}
