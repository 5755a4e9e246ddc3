/**
 * What pgha keeps on etcd, under `/pgha/<cluster>/`, as data: key names, the records' shapes and
 * their (tolerant) parsing. No I/O here.
 *
 *   leader           the deciding pgha-proxy (bound to its lease)          LeaderRecord
 *   primary          the current primary, written by the decider only      PrimaryRecord
 *   primary-lease    held by the primary's agent while it may take writes  PrimaryLeaseRecord (bound to its lease)
 *   history/<n>      every change of primary, n = 1, 2, … (zero-padded)    HistoryRecord
 *   sync             who acknowledged commits at the primary's last answer SyncRecordView
 *   slots            the member slots on the primary (the leader manages)  SlotsRecordView
 *   members/<name>   one per agent: its PostgreSQL and its URL             MemberRecord (bound to its lease)
 */

export const DCS_ROOT = '/pgha';

export class DcsConfigError extends Error {}

/** a cluster name becomes one path segment: letters, digits, `_ . -`, at most 63 */
export function checkClusterName(name: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(name)) throw new DcsConfigError(`cluster name "${name}" must be 1-63 letters, digits, '_', '.' or '-' (starting with a letter or digit)`);
  return name;
}

/** `--etcd URL[,URL…]`: http(s)://host:port endpoints (a bare host:port means http) */
export function parseEndpoints(input: string | string[]): string[] {
  const list = (Array.isArray(input) ? input : [input]).flatMap((x) => String(x).split(',')).map((x) => x.trim()).filter(Boolean);
  if (list.length === 0) throw new DcsConfigError('--etcd needs at least one URL');
  return list.map((x) => {
    const url = /^https?:\/\//.test(x) ? x : `http://${x}`;
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      throw new DcsConfigError(`etcd endpoint "${x}" is not a URL`);
    }
    if (!u.port) throw new DcsConfigError(`etcd endpoint "${x}" needs a port (etcd's client port, usually 2379)`);
    if (u.pathname !== '/' || u.search) throw new DcsConfigError(`etcd endpoint "${x}" must be scheme://host:port only`);
    return `${u.protocol}//${u.host}`;
  });
}

export function checkTtl(v: unknown, what = '--etcd-ttl'): number {
  const n = typeof v === 'number' ? v : /^\d+$/.test(String(v ?? '').trim()) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < 2 || n > 600) throw new DcsConfigError(`${what} must be a whole number of seconds from 2 to 600, got "${v}"`);
  return n;
}

export interface ClusterKeys {
  base: string;
  leader: string;
  primary: string;
  primaryLease: string;
  sync: string;
  slots: string;
  members: string;
  member(name: string): string;
  history: string;
  historyEntry(n: number): string;
}

export function clusterKeys(cluster: string): ClusterKeys {
  const base = `${DCS_ROOT}/${checkClusterName(cluster)}/`;
  return {
    base,
    leader: `${base}leader`,
    primary: `${base}primary`,
    primaryLease: `${base}primary-lease`,
    sync: `${base}sync`,
    slots: `${base}slots`,
    members: `${base}members/`,
    member: (name) => `${base}members/${encodeURIComponent(name)}`,
    history: `${base}history/`,
    historyEntry: (n) => `${base}history/${String(n).padStart(8, '0')}`,
  };
}

export interface LeaderRecord {
  /** unique per process: host name and pid */
  id: string;
  /** the proxy's admin base URL (where POST /switchover goes), null without --admin */
  admin: string | null;
  since: string;
}

export interface PrimaryRecord {
  /** host:port as the proxies name the backend */
  backend: string;
  /** the agent's node name, null when not known */
  member: string | null;
  timeline: number | null;
  since: string;
  /** the id of the proxy that wrote it */
  by: string;
}

export interface HistoryRecord {
  n: number;
  kind: 'bootstrap' | 'failover' | 'switchover';
  trigger: 'auto' | 'manual' | null;
  from: PrimaryRecord | null;
  to: PrimaryRecord;
  at: string;
  by: string;
}

export interface PrimaryLeaseRecord {
  member: string;
  /** host:port of its PostgreSQL */
  pg: string;
  since: string;
}

export interface MemberRecord {
  name: string;
  /** host:port of its PostgreSQL as the other nodes reach it */
  pg: string;
  /** the agent's base URL */
  agent: string | null;
  since: string;
}

/**
 * Who acknowledged commits on the primary at its last answer (the proxy's health monitor keeps it;
 * the leader publishes it here with the primary's name): what a zero-loss failover must respect.
 */
export interface SyncRecordView {
  primary: string;
  /** FIRST (priority: every sync standby has every acknowledged commit) or ANY (quorum of k) */
  method: 'priority' | 'quorum';
  /** quorum: commits wait for k of the members */
  k: number;
  /** backend names of the standbys that were sync/quorum (the retiring ones included) */
  members: string[];
  /** members that stopped acknowledging and may still hold commits the others lack (absent: none) */
  retiring?: string[];
  synchronousStandbyNames: string;
  at: string;
}

/**
 * The member slots (pgha_<member>) on the primary as the leader's cluster manager last saw them
 * (pg_replication_slots there): the slots it creates and keeps so every other member can stream.
 */
export interface SlotsRecordView {
  primary: string;
  /** by slot name; `member`: the backend whose slot it is, null when no backend of the proxy has that name */
  slots: Array<{ slot: string; member: string | null }>;
  at?: string;
}

/** JSON of an object record, null for a missing key or anything that is not a JSON object */
export function parseRecord<T extends object>(text: string | null | undefined): T | null {
  if (!text) return null;
  try {
    const v = JSON.parse(text) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as T) : null;
  } catch {
    return null;
  }
}

/** is this primary record about that node (by PostgreSQL address, else by member name) */
export function recordNames(rec: { backend?: string; pg?: string; member?: string | null } | null, node: { pg?: string | null; member?: string | null }): boolean {
  if (!rec) return false;
  const addr = rec.backend ?? rec.pg;
  if (addr && node.pg && addr === node.pg) return true;
  return Boolean(rec.member && node.member && rec.member === node.member);
}
