/**
 * pgha-proxy configuration: a JSON file (--config) overlaid by command-line flags. Every value is
 * checked here so a bad one is one clear line before anything listens.
 */
import { availableParallelism } from 'node:os';
import { readFileSync, statSync } from 'node:fs';
import { BACKEND_SSL_MODES, addressText, type BackendAddress, type BackendSslMode, type BackendTls } from './backend/connect.js';
import type { HealthCredentials } from './health/probe.js';
import type { SynchronousMode } from './cluster/plan.js';
import { checkClusterName, checkTtl, parseEndpoints } from '../src/dcs/keys.js';
import { AuthFileError, readAuthFile, type UserEntry } from './pool/auth.js';
import { ConfigFileError, proxySettingsFromFile } from '../src/config/load.js';

export class ProxyConfigError extends Error {}

export interface ProxyConfig {
  listen: BackendAddress;
  readListen: BackendAddress | null;
  admin: BackendAddress | null;
  backends: BackendAddress[];
  healthIntervalMs: number;
  healthTimeoutMs: number;
  healthRetries: number;
  healthRetryDelayMs: number;
  health: HealthCredentials;
  autoFailover: boolean;
  /** backend name (host:port) → agent URL */
  agents: Map<string, string>;
  token: string | undefined;
  migrateSlots: boolean;
  /** TLS towards clients: PEM certificate and key */
  tls: { cert: Buffer; key: Buffer } | null;
  /** --client-tls-ca: clients must present a certificate from this CA whose CN is their user (as pg_hba `cert`) */
  clientTlsCa: Buffer | null;
  backendTls: BackendTls;
  startupTimeoutMs: number;
  /** authentication (startup packet to the first ReadyForQuery) must end within this */
  authTimeoutMs: number;
  connectTimeoutMs: number;
  /** how long a new client waits for a primary during a failover before it is refused */
  primaryWaitMs: number;
  maxClients: number;
  /** read-only port: standbys further behind than this many bytes of WAL are not used */
  readMaxLagBytes: number;
  logLevel: string;
  /** who moves a session's bytes after startup: the native relay (default when built) or Node */
  relay: 'native' | 'node';
  /** epoll loops (threads) of the native relay; sessions are spread over them */
  relayThreads: number;
  /** keep a physical slot for every member on the primary (and copies on the standbys) */
  memberSlots: boolean;
  /** manage synchronous_standby_names on the primary: off (as configured), on, strict */
  synchronousMode: SynchronousMode;
  /** ANY k of the streaming standbys when synchronous mode is managed */
  synchronousCount: number;
  /** bearer token for the admin port's actions (POST /switchover, /failover); default: --token */
  adminToken: string | undefined;
  /** period of the cluster manager (member slots, synchronous standbys) */
  clusterIntervalMs: number;
  /** things worth a warning at start-up (secrets in files others may read) */
  warnings: string[];
  /** several proxies, one decision: cluster state and leadership on etcd (null: this proxy decides alone) */
  etcd: { endpoints: string[]; cluster: string; ttlSeconds: number } | null;
  /** --pool-mode: the proxy authenticates clients and pools server connections (null: one server connection per client, as before) */
  pool: PoolConfig | null;
  /** CA (PEM path) the agents' certificates are checked against (else $PGHA_AGENT_CA) */
  agentCa?: string;
}

export interface PoolConfig {
  mode: 'session' | 'transaction';
  /** server connections per (user, database, node) */
  size: number;
  /** the --auth-file's entries */
  users: Map<string, UserEntry>;
  /** the --auth-file (read again on RELOAD and SIGHUP) */
  authFile: string;
  /** PgBouncer's auth_query, run on the primary as authUser */
  authQuery: { sql: string; user: string } | null;
  /** the method for users whose entry is a plain password (MD5 and SCRAM entries use their own) */
  authType: 'scram-sha-256' | 'md5';
  /** run when a session-mode client lets its server connection go ('' : none) */
  resetQuery: string;
  /** transaction mode: statements the pool keeps prepared per server connection (least recently used closed first) */
  maxPreparedStatements: number;
  /** how long a client may wait for a server connection of a full or paused pool (0: no limit) */
  waitTimeoutMs: number;
  /** a server connection idle this long is closed (0: never) */
  serverIdleTimeoutMs: number;
  /** a server connection connected this long is closed once no client uses it (0: never) */
  serverLifetimeMs: number;
  /** server connections to one node per database (all users), per user (all databases); 0: no limit */
  maxDbConnections: number;
  maxUserConnections: number;
  /** who may use the console database pgha */
  adminUsers: string[];
}

/** a file holding a secret that its group or others may read */
export function looseModeWarning(path: string, what: string): string | null {
  try {
    const mode = statSync(path).mode & 0o777;
    if (mode & 0o077) return `${what} ${path} is readable by others (mode ${mode.toString(8).padStart(4, '0')}): chmod 600 it`;
  } catch {
    // unreadable files are reported where they are read
  }
  return null;
}

/** flags and file keys (same names) */
export interface ProxyFlags {
  config?: string;
  /** with a cluster config file: which of its proxies this is (needed when it lists several) */
  name?: string;
  agentCa?: string;
  listen?: string;
  backend?: string[];
  readListen?: string;
  admin?: string;
  healthInterval?: string | number;
  healthTimeout?: string | number;
  healthRetries?: string | number;
  healthRetryDelay?: string | number;
  healthUser?: string;
  healthPassword?: string;
  /** files holding the secrets (so they never show in ps) */
  healthPasswordFile?: string;
  tokenFile?: string;
  adminTokenFile?: string;
  healthDatabase?: string;
  autoFailover?: boolean;
  agent?: string[];
  token?: string;
  migrateSlots?: boolean;
  tlsCert?: string;
  tlsKey?: string;
  backendSslmode?: string;
  backendSslrootcert?: string;
  backendSslcert?: string;
  backendSslkey?: string;
  clientTlsCa?: string;
  startupTimeout?: string | number;
  authTimeout?: string | number;
  connectTimeout?: string | number;
  primaryWait?: string | number;
  maxClients?: string | number;
  readMaxLag?: string | number;
  logLevel?: string;
  relay?: string;
  relayThreads?: string | number;
  memberSlots?: boolean;
  synchronousMode?: string;
  synchronousCount?: string | number;
  adminToken?: string;
  clusterInterval?: string | number;
  etcd?: string | string[];
  cluster?: string;
  etcdTtl?: string | number;
  poolMode?: string;
  poolSize?: string | number;
  maxDbConnections?: string | number;
  maxUserConnections?: string | number;
  authFile?: string;
  authQuery?: string;
  authUser?: string;
  authType?: string;
  serverResetQuery?: string;
  maxPreparedStatements?: string | number;
  poolWaitTimeout?: string | number;
  serverIdleTimeout?: string | number;
  serverLifetime?: string | number;
  adminUsers?: string | string[];
}

export function parseAddress(text: string, what: string): BackendAddress {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(String(text).trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 0 || port > 65535) throw new ProxyConfigError(`${what} "${text}" must be HOST:PORT`);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

/** the longest delay a Node timer keeps (a longer one fires at once) */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** a duration in milliseconds that a timer can wait */
function millis(v: string | number | undefined, what: string, min: number, fallback: number): number {
  const n = int(v, what, min, fallback);
  if (n > MAX_TIMER_MS) throw new ProxyConfigError(`${what} must be at most ${MAX_TIMER_MS} ms, got ${n}`);
  return n;
}

function int(v: string | number | undefined, what: string, min: number, fallback: number): number {
  if (v === undefined) return fallback;
  const n = typeof v === 'number' ? v : /^\d+$/.test(v.trim()) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < min) throw new ProxyConfigError(`${what} must be an integer ≥ ${min}, got "${v}"`);
  return n;
}

function file(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new ProxyConfigError(`${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

export function loadProxyConfig(flags: ProxyFlags, env: NodeJS.ProcessEnv = process.env): ProxyConfig {
  let fromFile: ProxyFlags = {};
  if (flags.config) {
    // a flat file of these settings, or a cluster file (YAML or JSON) of which --name picks the proxy
    try {
      fromFile = proxySettingsFromFile(flags.config, flags.name) as ProxyFlags;
    } catch (e) {
      throw new ProxyConfigError(`config file ${e instanceof ConfigFileError ? e.message : `${flags.config}: ${(e as Error).message}`}`);
    }
  } else if (flags.name !== undefined) throw new ProxyConfigError('--name picks a proxy of a cluster config file: give --config FILE');
  const defined = Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined && !(Array.isArray(v) && v.length === 0)));
  const f: ProxyFlags = { ...fromFile, ...defined };

  if (!f.listen) throw new ProxyConfigError('--listen HOST:PORT is required');
  const backends = (f.backend ?? []).map((b) => parseAddress(b, '--backend'));
  if (backends.length === 0) throw new ProxyConfigError('at least one --backend HOST:PORT is required');
  const names = backends.map(addressText);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup) throw new ProxyConfigError(`--backend ${dup} is given twice`);

  const agents = new Map<string, string>();
  for (const a of f.agent ?? []) {
    const i = a.indexOf('=');
    if (i <= 0) throw new ProxyConfigError(`--agent "${a}" must be HOST:PORT=URL`);
    const name = addressText(parseAddress(a.slice(0, i), '--agent backend'));
    const url = a.slice(i + 1).replace(/\/+$/, '');
    if (!/^https?:\/\//.test(url)) throw new ProxyConfigError(`--agent "${a}": URL must start with http:// or https://`);
    if (!names.includes(name)) throw new ProxyConfigError(`--agent "${a}": ${name} is not one of the --backend addresses`);
    agents.set(name, url);
  }
  const secretFile = (path: string | undefined, what: string): string | undefined => {
    if (!path) return undefined;
    const w = looseModeWarning(path, what);
    if (w) fileWarnings.push(w);
    const text = file(path, what).toString('utf8').replace(/\r?\n$/, '');
    if (!text) throw new ProxyConfigError(`${what} ${path} is empty`);
    return text;
  };
  const fileWarnings: string[] = [];
  const token = secretFile(f.tokenFile, '--token-file') ?? f.token ?? env.PGHA_TOKEN;
  if (agents.size > 0 && !token) throw new ProxyConfigError('--agent needs --token (or PGHA_TOKEN) to talk to the agents');

  if (Boolean(f.tlsCert) !== Boolean(f.tlsKey)) throw new ProxyConfigError('--tls-cert and --tls-key go together');
  const tls = f.tlsCert && f.tlsKey ? { cert: file(f.tlsCert, '--tls-cert'), key: file(f.tlsKey, '--tls-key') } : null;

  const mode = (f.backendSslmode ?? 'prefer') as BackendSslMode;
  if (!BACKEND_SSL_MODES.includes(mode)) throw new ProxyConfigError(`--backend-sslmode must be one of ${BACKEND_SSL_MODES.join(', ')}, got "${f.backendSslmode}"`);
  const ca = f.backendSslrootcert ? file(f.backendSslrootcert, '--backend-sslrootcert') : undefined;
  if ((mode === 'verify-ca' || mode === 'verify-full') && !ca) throw new ProxyConfigError(`--backend-sslmode ${mode} needs --backend-sslrootcert FILE`);
  if (Boolean(f.backendSslcert) !== Boolean(f.backendSslkey)) throw new ProxyConfigError('--backend-sslcert and --backend-sslkey go together');
  if (f.backendSslcert && mode === 'disable') throw new ProxyConfigError('--backend-sslcert needs TLS towards the servers: --backend-sslmode is disable');
  const backendCert = f.backendSslcert ? { cert: file(f.backendSslcert, '--backend-sslcert'), key: file(f.backendSslkey!, '--backend-sslkey') } : {};
  if (f.clientTlsCa && !tls) throw new ProxyConfigError('--client-tls-ca needs --tls-cert and --tls-key (client certificates come over TLS)');
  const clientTlsCa = f.clientTlsCa ? file(f.clientTlsCa, '--client-tls-ca') : null;

  const healthTimeoutMs = millis(f.healthTimeout, '--health-timeout', 1, 2000);
  let etcd: ProxyConfig['etcd'] = null;
  const etcdGiven = f.etcd !== undefined && f.etcd !== '' && !(Array.isArray(f.etcd) && f.etcd.length === 0);
  if (etcdGiven) {
    if (!f.cluster) throw new ProxyConfigError('--etcd needs --cluster NAME (the cluster\'s name on etcd: /pgha/NAME/)');
    try {
      etcd = { endpoints: parseEndpoints(f.etcd!), cluster: checkClusterName(String(f.cluster)), ttlSeconds: checkTtl(f.etcdTtl ?? 5) };
    } catch (e) {
      throw new ProxyConfigError((e as Error).message);
    }
  } else if (f.cluster !== undefined || f.etcdTtl !== undefined) throw new ProxyConfigError('--cluster and --etcd-ttl need --etcd URL[,URL…]');
  return {
    listen: parseAddress(f.listen, '--listen'),
    readListen: f.readListen ? parseAddress(f.readListen, '--read-listen') : null,
    admin: f.admin ? parseAddress(f.admin, '--admin') : null,
    backends,
    healthIntervalMs: millis(f.healthInterval, '--health-interval', 10, 1000),
    healthTimeoutMs,
    healthRetries: int(f.healthRetries, '--health-retries', 1, 3),
    healthRetryDelayMs: millis(f.healthRetryDelay, '--health-retry-delay', 0, 100),
    health: {
      user: f.healthUser ?? env.PGUSER ?? 'postgres',
      password: secretFile(f.healthPasswordFile, '--health-password-file') ?? f.healthPassword ?? env.PGPASSWORD,
      database: f.healthDatabase ?? 'postgres',
    },
    autoFailover: f.autoFailover === true,
    agents,
    token,
    migrateSlots: f.migrateSlots === true,
    tls,
    clientTlsCa,
    backendTls: { mode, ca, ...backendCert },
    startupTimeoutMs: millis(f.startupTimeout, '--startup-timeout', 1, 10_000),
    authTimeoutMs: millis(f.authTimeout, '--auth-timeout', 1, 15_000),
    connectTimeoutMs: millis(f.connectTimeout, '--connect-timeout', 1, healthTimeoutMs),
    primaryWaitMs: millis(f.primaryWait, '--primary-wait', 0, 10_000),
    maxClients: int(f.maxClients, '--max-clients', 1, 10_000),
    readMaxLagBytes: int(f.readMaxLag, '--read-max-lag', 0, 16 * 1024 * 1024),
    logLevel: f.logLevel ?? env.PGHA_LOG_LEVEL ?? 'info',
    relay: relayMode(f.relay ?? (env.PGHA_NATIVE === '0' ? 'node' : 'native')),
    relayThreads: int(f.relayThreads, '--relay-threads', 1, Math.min(4, availableParallelism())),
    memberSlots: f.memberSlots !== false,
    synchronousMode: synchronousMode(f.synchronousMode ?? 'off'),
    synchronousCount: int(f.synchronousCount, '--synchronous-count', 1, 1),
    adminToken: secretFile(f.adminTokenFile, '--admin-token-file') ?? f.adminToken ?? env.PGHA_ADMIN_TOKEN ?? token,
    clusterIntervalMs: millis(f.clusterInterval, '--cluster-interval', 100, 2000),
    warnings: [
      ...fileWarnings,
      f.tlsKey ? looseModeWarning(f.tlsKey, '--tls-key') : null,
      f.backendSslkey ? looseModeWarning(f.backendSslkey, '--backend-sslkey') : null,
      flags.config && (fromFile.token || fromFile.adminToken || fromFile.healthPassword) ? looseModeWarning(flags.config, 'config file with a secret') : null,
    ].filter((w): w is string => w !== null),
    etcd,
    pool: poolConfig(f),
    agentCa: f.agentCa,
  };
}

/** PgBouncer's default auth_query */
export const DEFAULT_AUTH_QUERY = 'SELECT usename, passwd FROM pg_shadow WHERE usename = $1';

function poolConfig(f: ProxyFlags): PoolConfig | null {
  const poolOnly = (['poolSize', 'maxDbConnections', 'maxUserConnections', 'authFile', 'authQuery', 'authUser', 'authType', 'serverResetQuery', 'adminUsers', 'maxPreparedStatements', 'poolWaitTimeout', 'serverIdleTimeout', 'serverLifetime'] as const).filter((k) => f[k] !== undefined);
  if (f.poolMode === undefined) {
    if (poolOnly.length > 0) throw new ProxyConfigError(`--${poolOnly[0].replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} needs --pool-mode session|transaction`);
    return null;
  }
  if (f.poolMode !== 'session' && f.poolMode !== 'transaction') throw new ProxyConfigError(`--pool-mode must be session or transaction, got "${f.poolMode}"`);
  if (!f.authFile) throw new ProxyConfigError('--pool-mode needs --auth-file FILE (userlist.txt: "user" "password" per line): the proxy authenticates clients itself and logs in to servers with these entries');
  let users: Map<string, UserEntry>;
  try {
    users = readAuthFile(f.authFile);
  } catch (e) {
    throw new ProxyConfigError(e instanceof AuthFileError ? e.message : `--auth-file ${f.authFile}: ${(e as Error).message}`);
  }
  if (Boolean(f.authQuery) && !f.authUser) throw new ProxyConfigError('--auth-query needs --auth-user USER (who runs it; its password comes from --auth-file)');
  let authQuery: PoolConfig['authQuery'] = null;
  if (f.authUser) {
    const u = users.get(f.authUser);
    if (!u) throw new ProxyConfigError(`--auth-user ${f.authUser} is not in --auth-file ${f.authFile} (its password logs the auth query in)`);
    if (u.secret.kind !== 'plain') throw new ProxyConfigError(`--auth-user ${f.authUser} needs a plain password in --auth-file ${f.authFile} (a hash cannot log the auth query in)`);
    authQuery = { sql: f.authQuery || DEFAULT_AUTH_QUERY, user: f.authUser };
  }
  const authType = f.authType ?? 'scram-sha-256';
  if (authType !== 'scram-sha-256' && authType !== 'md5') throw new ProxyConfigError(`--auth-type must be scram-sha-256 or md5, got "${authType}"`);
  const admins = Array.isArray(f.adminUsers) ? f.adminUsers : (f.adminUsers ?? '').split(',');
  return {
    mode: f.poolMode,
    size: int(f.poolSize, '--pool-size', 1, 20),
    maxDbConnections: int(f.maxDbConnections, '--max-db-connections', 0, 0),
    maxUserConnections: int(f.maxUserConnections, '--max-user-connections', 0, 0),
    users,
    authFile: f.authFile,
    authQuery,
    authType,
    resetQuery: f.serverResetQuery ?? 'DISCARD ALL',
    maxPreparedStatements: int(f.maxPreparedStatements, '--max-prepared-statements', 1, 200),
    waitTimeoutMs: millis(f.poolWaitTimeout, '--pool-wait-timeout', 0, 120_000),
    serverIdleTimeoutMs: millis(f.serverIdleTimeout, '--server-idle-timeout', 0, 600_000),
    serverLifetimeMs: millis(f.serverLifetime, '--server-lifetime', 0, 3_600_000),
    adminUsers: admins.map((a) => a.trim()).filter(Boolean),
  };
}

function synchronousMode(v: string): SynchronousMode {
  if (v !== 'off' && v !== 'on' && v !== 'strict') throw new ProxyConfigError(`--synchronous-mode must be off, on or strict, got "${v}"`);
  return v;
}

function relayMode(v: string): 'native' | 'node' {
  if (v !== 'native' && v !== 'node') throw new ProxyConfigError(`--relay must be native or node, got "${v}"`);
  return v;
}
