/**
 * One health check of one server with `pg`: a fresh connection (so a postmaster that no longer
 * accepts connections is noticed, as pgpool-II's health check does), one query, then close.
 */
import pg from 'pg';
import type { BackendAddress, BackendTls } from '../backend/connect.js';
import { parseConninfo } from '../backend/conninfo.js';

export interface HealthCredentials {
  user: string;
  password?: string;
  database: string;
}

export interface ReplicationRow {
  /** application_name the standby connected with */
  app: string;
  state: string | null;
  /** sync, quorum, potential, async */
  syncState: string | null;
  flushLsn: string | null;
  replayLsn: string | null;
  replayLagSeconds: number | null;
}

export interface SlotRow {
  name: string;
  active: boolean;
  restartLsn: string | null;
}

export interface ProbeResult {
  inRecovery: boolean;
  systemId: string;
  /**
   * the timeline WAL is written on (primary) or received on (standby, while its WAL receiver runs);
   * null for a standby whose receiver is not running: the checkpoint's timeline lags a promotion
   * until the next restartpoint, so the monitor keeps the last timeline it saw instead
   */
  timeline: number | null;
  /** lower bounds of a standby's timeline from pg_control (checkpoint, minimum recovery point) */
  controlTimeline: number;
  /** primary: pg_current_wal_lsn(); standby: pg_last_wal_replay_lsn() */
  lsn: string | null;
  receiveLsn: string | null;
  replayLsn: string | null;
  /** standby: seconds since the last replayed commit when it has not replayed all it received, else 0 */
  replayDelaySeconds: number | null;
  /** standby: pg_stat_wal_receiver.status ('streaming', 'catchup'…) or null without a receiver */
  receiverStatus: string | null;
  /** standby: host:port its WAL receiver streams from */
  receiverSender: string | null;
  /** standby: the application_name its WAL receiver uses (primary_conninfo's, else cluster_name, else walreceiver) */
  applicationName: string;
  primaryConninfo: string | null;
  primarySlotName: string | null;
  synchronousStandbyNames: string;
  /** primary: pg_stat_replication */
  replication: ReplicationRow[];
  /** physical replication slots on this node */
  slots: SlotRow[];
  /** max_connections − superuser_reserved_connections: the slots ordinary clients can take */
  clientSlots: number;
}

/**
 * The server answered with an error (too many clients, authentication, no such database…): it is
 * alive. Only a failure that means the server is gone (refused, reset, timeout, 57P0x shutting down
 * or crashed) may count toward a failover.
 */
export class ServerAnsweredError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** a server going away answers 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now */
const GONE_SQLSTATE = /^57P0[123]$/;

export function answeredError(e: unknown): ServerAnsweredError | null {
  const code = (e as { code?: unknown }).code;
  const severity = (e as { severity?: unknown }).severity;
  if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && typeof severity === 'string' && !GONE_SQLSTATE.test(code)) {
    return new ServerAnsweredError(code, `${(e as Error).message} (SQLSTATE ${code})`);
  }
  return null;
}

// one round trip; pg_walfile_name() names the insert timeline of a primary (pg_control's checkpoint
// timeline lags behind a promotion until the next checkpoint). Settings come from pg_settings, which
// hides superuser-only ones from a role that may not read them instead of failing.
const HEALTH_SQL = `SELECT pg_is_in_recovery() AS rec,
  (SELECT system_identifier FROM pg_control_system())::text AS sysid,
  CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS cur,
  CASE WHEN pg_is_in_recovery() THEN NULL
       ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS cur_tli,
  pg_last_wal_receive_lsn()::text AS recv,
  pg_last_wal_replay_lsn()::text AS replay,
  CASE WHEN NOT pg_is_in_recovery() THEN NULL
       WHEN pg_last_wal_receive_lsn() IS NULL OR pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn() THEN 0
       ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END AS replay_delay,
  r.received_tli AS recv_tli, r.status AS recv_status,
  CASE WHEN r.sender_host IS NULL THEN NULL ELSE r.sender_host || ':' || r.sender_port END AS recv_sender,
  (SELECT timeline_id FROM pg_control_checkpoint()) AS ckpt_tli,
  (SELECT min_recovery_end_timeline FROM pg_control_recovery()) AS minrec_tli,
  (SELECT setting FROM pg_settings WHERE name = 'cluster_name') AS cluster_name,
  (SELECT setting FROM pg_settings WHERE name = 'primary_conninfo') AS primary_conninfo,
  (SELECT setting FROM pg_settings WHERE name = 'primary_slot_name') AS primary_slot_name,
  (SELECT setting FROM pg_settings WHERE name = 'synchronous_standby_names') AS sync_names,
  (SELECT coalesce(json_agg(json_build_object('app', application_name, 'state', state, 'syncState', sync_state,
          'flushLsn', flush_lsn::text, 'replayLsn', replay_lsn::text,
          'replayLagSeconds', extract(epoch FROM replay_lag)::float8)), '[]') FROM pg_stat_replication) AS repl,
  (SELECT coalesce(json_agg(json_build_object('name', slot_name, 'active', active, 'restartLsn', restart_lsn::text)), '[]')
     FROM pg_replication_slots WHERE slot_type = 'physical') AS slots,
  current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int AS client_slots
  FROM (SELECT 1) one LEFT JOIN pg_stat_wal_receiver r ON true`;

interface Row {
  rec: boolean;
  sysid: string;
  cur: string | null;
  cur_tli: number | null;
  recv: string | null;
  replay: string | null;
  replay_delay: number | null;
  recv_tli: number | null;
  recv_status: string | null;
  recv_sender: string | null;
  ckpt_tli: number;
  minrec_tli: number;
  cluster_name: string | null;
  primary_conninfo: string | null;
  primary_slot_name: string | null;
  sync_names: string | null;
  repl: ReplicationRow[];
  slots: SlotRow[];
  client_slots: number;
}

/** the application_name a standby's WAL receiver connects with (walreceiver.c's rule) */
export function receiverApplicationName(primaryConninfo: string | null, clusterName: string | null): string {
  if (primaryConninfo) {
    try {
      const app = parseConninfo(primaryConninfo).find(([k]) => k === 'application_name');
      if (app && app[1]) return app[1];
    } catch {
      // an unparsable conninfo: the server would not connect with it either
    }
  }
  return clusterName || 'walreceiver';
}

/** sslmode=prefer for `pg` (which has no such mode): servers found to refuse SSL are remembered */
const refusesSsl = new Set<string>();
const NO_SSL = 'The server does not support SSL connections';

export function pgSsl(tls: BackendTls, addr?: BackendAddress): pg.ClientConfig['ssl'] {
  // --backend-sslcert/--backend-sslkey: presented to a server that asks for a certificate
  const own = tls.cert ? { cert: tls.cert, key: tls.key } : {};
  switch (tls.mode) {
    case 'disable':
      return false;
    case 'prefer':
      return addr && refusesSsl.has(`${addr.host}:${addr.port}`) ? false : { rejectUnauthorized: false, ...own };
    case 'require':
      return { rejectUnauthorized: false, ...own };
    case 'verify-ca':
      return { rejectUnauthorized: true, ca: tls.ca, checkServerIdentity: () => undefined, ...own };
    case 'verify-full':
      return { rejectUnauthorized: true, ca: tls.ca, ...own };
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
    const answered = answeredError(e);
    if (answered) throw answered;
    if (tls.mode !== 'prefer' || (e as Error).message !== NO_SSL) throw e;
    refusesSsl.add(`${addr.host}:${addr.port}`);
    try {
      return await probeOnce(addr, creds, tls, timeoutMs);
    } catch (e2) {
      throw answeredError(e2) ?? e2;
    }
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
    return {
      inRecovery: r.rec,
      systemId: r.sysid,
      timeline: r.rec ? r.recv_tli : (r.cur_tli ?? r.ckpt_tli),
      controlTimeline: Math.max(r.ckpt_tli ?? 0, r.minrec_tli ?? 0),
      lsn: r.rec ? r.replay : r.cur,
      receiveLsn: r.recv,
      replayLsn: r.replay,
      replayDelaySeconds: r.replay_delay === null ? null : Math.max(0, Number(r.replay_delay)),
      receiverStatus: r.recv_status,
      receiverSender: r.recv_sender,
      applicationName: receiverApplicationName(r.primary_conninfo, r.cluster_name),
      primaryConninfo: r.primary_conninfo,
      primarySlotName: r.primary_slot_name || null,
      synchronousStandbyNames: r.sync_names ?? '',
      replication: r.repl ?? [],
      slots: r.slots ?? [],
      clientSlots: r.client_slots,
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
