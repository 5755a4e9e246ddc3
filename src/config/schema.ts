/**
 * What a configuration file may hold, as one zod schema per section. The known keys of every
 * section (the ones an "unknown key" error lists) are the keys of its shape, so a setting added
 * later is one line here: in `AGENT_SETTINGS` or `PROXY_SETTINGS` it is then accepted by the flat
 * files of `pgha agent --config` / `pgha-proxy --config` and by the matching sections of the
 * cluster file (`agent`, `nodes[].agent`, `proxy`, `proxies[]`), and passed to the daemon under
 * its own name (the camelCase of its flag).
 *
 * Scalars check what the daemons check later (ports, HOST:PORT, URLs, integers), so a bad value
 * is found with its path before anything starts: `nodes[1].pgPort: expected a port number 1-65535, got "abc"`.
 */
import { z } from 'zod';

/** a value as an error shows it */
export function shown(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return 'a list';
  if (v === null) return 'null';
  if (typeof v === 'object') return 'a mapping';
  return String(v);
}

type Check<T> = (v: unknown) => v is T;

/** a scalar with its own wording: "<path>: expected <what>, got <value>" (or "required") */
function scalar<T>(what: string, ok: Check<T>) {
  return z.custom<T>((v) => ok(v), { error: (iss) => (iss.input === undefined ? 'required' : `expected ${what}, got ${shown(iss.input)}`) });
}

const isInt = (v: unknown, min: number, max: number): boolean => {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v) : NaN;
  return Number.isSafeInteger(n) && n >= min && n <= max;
};
const HOST_PORT = /^(?:\[[^\]]+\]|[^:\s]*):(\d+)$/;

export const text = () => scalar<string>('a non-empty string', (v): v is string => typeof v === 'string' && v.trim() !== '');
/** schemas of file paths: the cluster file takes relative ones from its own directory */
const PATH_SCHEMAS = new WeakSet<object>();
/** any string, the empty one included */
export const anyText = () => scalar<string>('a string', (v): v is string => typeof v === 'string');
export const path = () => {
  const s = scalar<string>('a file path', (v): v is string => typeof v === 'string' && v.trim() !== '' && !v.includes('\0'));
  PATH_SCHEMAS.add(s);
  return s;
};
/** is this key of a shape a file path? */
export function isPathKey(shape: z.ZodRawShape, key: string): boolean {
  let s: unknown = shape[key];
  if (s instanceof z.ZodOptional) s = s.unwrap();
  return typeof s === 'object' && s !== null && PATH_SCHEMAS.has(s);
}
export const bool = () => scalar<boolean>('true or false', (v): v is boolean => typeof v === 'boolean');
/** integers may be written as numbers or digit strings (the flat files always allowed both) */
export const int = (min: number, max = Number.MAX_SAFE_INTEGER) =>
  scalar<number | string>(max === Number.MAX_SAFE_INTEGER ? `an integer ≥ ${min}` : `an integer ${min}-${max}`, (v): v is number | string => isInt(v, min, max));
export const port = () => scalar<number | string>('a port number 1-65535', (v): v is number | string => isInt(v, 1, 65535));
export const hostPort = () =>
  scalar<string>('HOST:PORT', (v): v is string => typeof v === 'string' && HOST_PORT.test(v.trim()) && Number(HOST_PORT.exec(v.trim())![1]) <= 65535);
export const url = () =>
  scalar<string>('an http:// or https:// URL', (v): v is string => {
    if (typeof v !== 'string' || !/^https?:\/\//.test(v)) return false;
    try {
      new URL(v);
      return true;
    } catch {
      return false;
    }
  });
/** a proxy's admin address as the agents take it: a URL or HOST:PORT */
export const urlOrHostPort = () => scalar<string>('a URL or HOST:PORT', (v): v is string => typeof v === 'string' && v.trim() !== '' && !/\s/.test(v));
export const oneOf = <T extends string>(...values: T[]) => scalar<T>(`one of ${values.join(', ')}`, (v): v is T => typeof v === 'string' && (values as string[]).includes(v));
export const listOf = <T>(item: z.ZodType<T>) => z.array(item, { error: (iss) => (iss.input === undefined ? 'required' : `expected a list, got ${shown(iss.input)}`) });
/** one or several: "a,b" or [a, b] */
export const textOrList = () =>
  scalar<string | string[]>('a string or a list of strings', (v): v is string | string[] => (typeof v === 'string' && v.trim() !== '') || (Array.isArray(v) && v.every((x) => typeof x === 'string')));
export const mapOf = <T>(value: z.ZodType<T>) => z.record(z.string(), value, { error: (iss) => (iss.input === undefined ? 'required' : `expected a mapping, got ${shown(iss.input)}`) });
export const settingValue = () =>
  scalar<string | number | boolean>('a string, number or boolean', (v): v is string | number | boolean => typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v)));

/**
 * A section: a mapping that refuses keys it does not know, naming the known ones. Each section is
 * built from a plain shape so another section can reuse part of it (`pick`/`omit` below) and
 * still list its own keys.
 */
export function section<S extends z.ZodRawShape>(shape: S) {
  const known = Object.keys(shape);
  return z.strictObject(shape, {
    error: (iss) => {
      if (iss.code === 'unrecognized_keys') return `unknown key ${iss.keys.map((k) => JSON.stringify(k)).join(', ')} (known: ${known.join(', ')})`;
      return iss.input === undefined ? 'required' : `expected a mapping, got ${shown(iss.input)}`;
    },
  });
}

export function omit<S extends z.ZodRawShape, K extends keyof S & string>(shape: S, keys: readonly K[]): Omit<S, K> {
  const out: Record<string, unknown> = { ...shape };
  for (const k of keys) delete out[k];
  return out as Omit<S, K>;
}

// ---------------------------------------------------------------------------------------------
// pgha agent: the keys of its flat JSON/YAML file (`pgha agent --config agent.json`), one per flag
// ---------------------------------------------------------------------------------------------
export const AGENT_SETTINGS = {
  name: text().optional(),
  pgdata: path().optional(),
  listen: hostPort().optional(),
  /** older spelling of listen */
  host: text().optional(),
  port: int(0, 65535).optional(),
  token: text().optional(),
  tokenFile: path().optional(),
  peers: mapOf(url()).optional(),
  pgPort: port().optional(),
  pgHost: text().optional(),
  pgBin: path().optional(),
  replUser: text().optional(),
  proxies: listOf(urlOrHostPort()).optional(),
  autoRejoin: bool().optional(),
  autoRejoinReclone: bool().optional(),
  autoRejoinIntervalMs: int(200).optional(),
  etcd: textOrList().optional(),
  cluster: text().optional(),
  etcdTtl: int(1).optional(),
  dcsFailsafe: bool().optional(),
  tlsCert: path().optional(),
  tlsKey: path().optional(),
  agentCa: path().optional(),
};
export const agentFileSchema = section(AGENT_SETTINGS);
export type AgentFileSettings = z.infer<typeof agentFileSchema>;

// ---------------------------------------------------------------------------------------------
// pgha-proxy: the keys of its flat file (`pgha-proxy --config proxy.json`), one per flag
// ---------------------------------------------------------------------------------------------
const ms = (min: number) => int(min);
export const PROXY_SETTINGS = {
  listen: hostPort().optional(),
  backend: listOf(hostPort()).optional(),
  readListen: hostPort().optional(),
  admin: hostPort().optional(),
  healthInterval: ms(10).optional(),
  healthTimeout: ms(1).optional(),
  healthRetries: int(1).optional(),
  healthRetryDelay: ms(0).optional(),
  healthUser: text().optional(),
  healthPassword: text().optional(),
  healthPasswordFile: path().optional(),
  healthDatabase: text().optional(),
  tokenFile: path().optional(),
  adminTokenFile: path().optional(),
  autoFailover: bool().optional(),
  agent: listOf(text()).optional(),
  token: text().optional(),
  migrateSlots: bool().optional(),
  tlsCert: path().optional(),
  tlsKey: path().optional(),
  backendSslmode: oneOf('disable', 'prefer', 'require', 'verify-ca', 'verify-full').optional(),
  backendSslrootcert: path().optional(),
  backendSslcert: path().optional(),
  backendSslkey: path().optional(),
  clientTlsCa: path().optional(),
  startupTimeout: ms(1).optional(),
  authTimeout: ms(1).optional(),
  connectTimeout: ms(1).optional(),
  primaryWait: ms(0).optional(),
  maxClients: int(1).optional(),
  readMaxLag: int(0).optional(),
  logLevel: oneOf('fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent').optional(),
  relay: oneOf('native', 'node').optional(),
  relayThreads: int(1).optional(),
  memberSlots: bool().optional(),
  synchronousMode: oneOf('off', 'on', 'strict').optional(),
  synchronousCount: int(1).optional(),
  adminToken: text().optional(),
  clusterInterval: ms(100).optional(),
  etcd: textOrList().optional(),
  cluster: text().optional(),
  etcdTtl: int(1).optional(),
  /** CA the agents' certificates are checked against (else $PGHA_AGENT_CA) */
  agentCa: path().optional(),
  poolMode: oneOf('session', 'transaction').optional(),
  poolSize: int(1).optional(),
  maxDbConnections: int(0).optional(),
  maxUserConnections: int(0).optional(),
  authFile: path().optional(),
  authQuery: text().optional(),
  authUser: text().optional(),
  authType: oneOf('scram-sha-256', 'md5').optional(),
  serverResetQuery: anyText().optional(),
  maxPreparedStatements: int(1).optional(),
  poolWaitTimeout: ms(0).optional(),
  serverIdleTimeout: ms(0).optional(),
  serverLifetime: ms(0).optional(),
  adminUsers: textOrList().optional(),
};
export const proxyFileSchema = section(PROXY_SETTINGS);
export type ProxyFileSettings = z.infer<typeof proxyFileSchema>;

// ---------------------------------------------------------------------------------------------
// the cluster file: the whole cluster, every daemon reads its part
// ---------------------------------------------------------------------------------------------

/** agent keys the cluster file fills from elsewhere (the node's own keys, the cluster-wide ones) */
const AGENT_DERIVED = ['name', 'pgdata', 'host', 'port', 'pgPort', 'pgHost', 'peers', 'token', 'tokenFile', 'etcd', 'cluster', 'etcdTtl'] as const;
/** an agent section: `agent:` (for every node) and `nodes[].agent` (this node's, winning) */
export const CLUSTER_AGENT = {
  ...omit(AGENT_SETTINGS, AGENT_DERIVED),
  /** how the others reach this agent (default: http(s)://<listen>, a wildcard listen host replaced by the node's host) */
  url: url().optional(),
};

/** proxy keys the cluster file fills from elsewhere */
const PROXY_DERIVED = ['backend', 'agent', 'token', 'tokenFile', 'adminToken', 'adminTokenFile', 'etcd', 'cluster', 'etcdTtl'] as const;
/** `proxy:` (for every proxy) */
export const CLUSTER_PROXY_DEFAULTS = omit(PROXY_SETTINGS, PROXY_DERIVED);
/** `proxies[]`: one proxy, winning over `proxy:` */
export const CLUSTER_PROXY = {
  name: text().optional(),
  /** how the agents reach its admin port (default: http://<admin>, a wildcard host replaced by 127.0.0.1) */
  adminUrl: url().optional(),
  ...CLUSTER_PROXY_DEFAULTS,
};

const NODE_NAME = scalar<string>('a name of letters, digits, "_", "-" or "."', (v): v is string => typeof v === 'string' && /^[A-Za-z0-9_.-]{1,63}$/.test(v));

export const CLUSTER_NODE = {
  name: NODE_NAME,
  /** the data directory (relative paths are taken from the config file's directory) */
  dataDir: path(),
  /** the address the other nodes, the agents and the proxies reach its PostgreSQL at */
  host: text().optional(),
  pgPort: port(),
  agent: section(CLUSTER_AGENT),
};

export const CLUSTER_POSTGRES = {
  /** the operating-system user owning the data directories (PostgreSQL and the agents run as it) */
  osUser: text().optional(),
  /** the database superuser initdb makes; the agents and the proxies' health checks use it */
  superuser: text().optional(),
  /** how members authenticate in pg_hba.conf: trust only when every member is on loopback */
  auth: oneOf('scram-sha-256', 'md5', 'trust').optional(),
  /** a file holding the superuser's password (required unless auth is trust): initdb sets it, the proxies' health checks use it */
  superuserPasswordFile: path().optional(),
  /** the replication role (default: the superuser) and a file holding its password (required for a role of its own unless auth is trust) */
  replication: section({ user: text().optional(), passwordFile: path().optional() }).optional(),
  walLevel: oneOf('replica', 'logical').optional(),
  /** initdb --data-checksums (else wal_log_hints = on: pg_rewind needs one of them) */
  dataChecksums: bool().optional(),
  maxWalSenders: int(2).optional(),
  maxReplicationSlots: int(2).optional(),
  /** more postgresql.conf settings for every node */
  parameters: mapOf(settingValue()).optional(),
  /** more pg_hba.conf lines (clients), after the members' lines */
  hba: listOf(text()).optional(),
  initdbArgs: listOf(text()).optional(),
  /** unix_socket_directories (default: the data directory's parent) */
  socketDir: path().optional(),
  /** the node initdb makes (default: the first) */
  primary: text().optional(),
};

export const CLUSTER_POLICY = {
  autoFailover: bool().optional(),
  migrateSlots: bool().optional(),
  memberSlots: bool().optional(),
  synchronousMode: oneOf('off', 'on', 'strict').optional(),
  synchronousCount: int(1).optional(),
  autoRejoin: bool().optional(),
  autoRejoinReclone: bool().optional(),
};

export const CLUSTER_FILE = {
  /** the cluster's name (etcd's /pgha/NAME/, cluster_name of the nodes) */
  cluster: text().optional(),
  pgBin: path().optional(),
  /** the agents' bearer token: prefer tokenFile (relative paths: from the config file's directory) */
  tokenFile: path().optional(),
  token: text().optional(),
  adminTokenFile: path().optional(),
  /** the agents' HTTPS: the CA every client checks them against, and a certificate and key (per node in nodes[].agent) */
  tls: section({ ca: path().optional(), cert: path().optional(), key: path().optional() }).optional(),
  etcd: section({ endpoints: textOrList(), ttl: int(1).optional() }).optional(),
  postgres: section(CLUSTER_POSTGRES).optional(),
  policy: section(CLUSTER_POLICY).optional(),
  agent: section(omit(CLUSTER_AGENT, ['listen', 'url'])).optional(),
  proxy: section(CLUSTER_PROXY_DEFAULTS).optional(),
  nodes: listOf(section(CLUSTER_NODE)),
  proxies: listOf(section(CLUSTER_PROXY)).optional(),
};
export const clusterFileSchema = section(CLUSTER_FILE);
export type ClusterFile = z.infer<typeof clusterFileSchema>;
export type ClusterNodeEntry = ClusterFile['nodes'][number];
export type ClusterProxyEntry = NonNullable<ClusterFile['proxies']>[number];
