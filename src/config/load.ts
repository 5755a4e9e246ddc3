/**
 * Reading configuration files: YAML (js-yaml, core schema) or JSON, checked against the schemas of
 * `schema.ts`, every error one line naming the file, the path of the value and what was expected.
 *
 * Two kinds of file:
 * - a **cluster file** (it has `nodes`): the whole cluster; `pgha agent --config F --name n1` and
 *   `pgha-proxy --config F [--name p1]` each take their part (`agentSettingsFor`, `proxySettingsFor`),
 *   and `pgha init --config F` builds it;
 * - a **flat file** of one daemon's settings, the camelCase names of its flags (what
 *   `pgha agent --config` and `pgha-proxy --config` always took), kept for compatibility — now
 *   with unknown keys refused too.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import yaml from 'js-yaml';
import type { z } from 'zod';
import {
  agentFileSchema,
  CLUSTER_AGENT,
  CLUSTER_PROXY,
  clusterFileSchema,
  isPathKey,
  PROXY_SETTINGS,
  proxyFileSchema,
  type AgentFileSettings,
  type ClusterFile,
  type ProxyFileSettings,
} from './schema.js';

export class ConfigFileError extends Error {}

/** the parsed content of a YAML or JSON file (`.json` files are read as JSON, anything else as YAML) */
export function readConfigData(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigFileError(`${file}: ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory' : (code ?? (e as Error).message)}`);
  }
  if (/\.json$/i.test(file)) {
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new ConfigFileError(`${file}: ${(e as Error).message}`);
    }
  }
  try {
    return yaml.load(text, { filename: file, schema: yaml.CORE_SCHEMA });
  } catch (e) {
    if (e instanceof yaml.YAMLException) throw new ConfigFileError(`${file}:${e.mark ? `${e.mark.line + 1}:${e.mark.column + 1}:` : ''} ${e.reason}`);
    throw e;
  }
}

/** `nodes[1].agent.listen` */
export function pathText(path: ReadonlyArray<PropertyKey>): string {
  return path.reduce<string>((s, k) => (typeof k === 'number' ? `${s}[${k}]` : s ? `${s}.${String(k)}` : String(k)), '');
}

/** the first problem zod found, as one line: `FILE: PATH: what was expected, got what` */
export function describeIssue(file: string, issues: z.core.$ZodIssue[]): string {
  const iss = issues[0];
  const at = iss.code === 'unrecognized_keys' ? [...iss.path, iss.keys[0]] : iss.path;
  return `${file}: ${pathText(at) || '(top level)'}: ${iss.message}`;
}

function check<T>(schema: z.ZodType<T>, data: unknown, file: string): T {
  const r = schema.safeParse(data);
  if (!r.success) throw new ConfigFileError(describeIssue(file, r.error.issues));
  return r.data;
}

export const isClusterData = (data: unknown): boolean => typeof data === 'object' && data !== null && !Array.isArray(data) && 'nodes' in data;

// ---------------------------------------------------------------------------------------------
// the cluster file, resolved
// ---------------------------------------------------------------------------------------------

export interface ClusterNode {
  name: string;
  /** absolute */
  dataDir: string;
  host: string;
  pgPort: number;
  /** HOST:PORT the agent listens on */
  agentListen: string;
  /** how the others reach the agent */
  agentUrl: string;
  /** the agent's settings as its flat file would give them (the cluster's, `agent:`, then the node's own) */
  agent: AgentFileSettings;
}

export interface ClusterProxy {
  name: string;
  /** its settings as its flat file would give them (the cluster's, `proxy:`, then its own entry) */
  settings: ProxyFileSettings;
  /** how the agents reach its admin port (null: no admin port) */
  adminUrl: string | null;
}

export interface ClusterPostgres {
  osUser: string;
  superuser: string;
  auth: 'scram-sha-256' | 'md5' | 'trust';
  superuserPasswordFile: string | null;
  replicationUser: string;
  /** the replication role's password (the superuser's when it is the superuser) */
  replicationPasswordFile: string | null;
  walLevel: 'replica' | 'logical';
  dataChecksums: boolean;
  maxWalSenders: number;
  maxReplicationSlots: number;
  parameters: Record<string, string | number | boolean>;
  hba: string[];
  initdbArgs: string[];
  /** null: each node's data directory's parent */
  socketDir: string | null;
  primary: string;
}

export interface ClusterConfig {
  file: string;
  name: string | null;
  pgBin: string;
  tokenFile: string | null;
  token: string | null;
  adminTokenFile: string | null;
  tls: { ca: string | null; cert: string | null; key: string | null };
  etcd: { endpoints: string | string[]; ttl: number | null } | null;
  postgres: ClusterPostgres;
  policy: NonNullable<ClusterFile['policy']>;
  /** `agent:`: settings for every agent, under each node's own */
  agentDefaults: AgentFileSettings;
  nodes: ClusterNode[];
  proxies: ClusterProxy[];
}

export const DEFAULT_PG_BIN = '/usr/lib/postgresql/15/bin';

const WILDCARD = new Set(['', '0.0.0.0', '::', '[::]', '*']);
const isLoopback = (host: string) => /^(127\.\d+\.\d+\.\d+|::1|\[::1\]|localhost)$/.test(host);

/** HOST:PORT as the proxy names a backend ([v6]:port) */
export function hostPort(host: string, port: number | string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
}

function splitHostPort(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text.trim())!;
  return { host: m[1] ?? m[2] ?? '', port: Number(m[3]) };
}

function defined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined && v !== null)) as T;
}

/** path-valued keys of a section made absolute (relative to the config file's directory) */
function absolutePaths<T extends Record<string, unknown>>(o: T, shape: z.ZodRawShape, base: string): T {
  const out: Record<string, unknown> = { ...o };
  for (const [k, v] of Object.entries(o)) if (typeof v === 'string' && isPathKey(shape, k) && !isAbsolute(v)) out[k] = resolve(base, v);
  return out as T;
}

export function parseClusterConfig(data: unknown, file: string): ClusterConfig {
  const f = check(clusterFileSchema, data, file);
  const base = dirname(resolve(file));
  const abs = (p: string | undefined | null) => (p ? (isAbsolute(p) ? p : resolve(base, p)) : null);
  const fail = (at: string, what: string) => new ConfigFileError(`${file}: ${at}: ${what}`);

  if (f.nodes.length === 0) throw fail('nodes', 'expected at least one node');
  if (f.etcd && !f.cluster) throw fail('cluster', 'required with etcd (the cluster\'s name there: /pgha/NAME/)');
  const pg = f.postgres ?? {};
  const tls = { ca: abs(f.tls?.ca), cert: abs(f.tls?.cert), key: abs(f.tls?.key) };
  const topAgent = absolutePaths(f.agent ?? {}, CLUSTER_AGENT, base);

  const seen = new Map<string, number>();
  const nodes: ClusterNode[] = f.nodes.map((n, i) => {
    if (seen.has(n.name)) throw fail(`nodes[${i}].name`, `"${n.name}" is given twice (nodes[${seen.get(n.name)}])`);
    seen.set(n.name, i);
    const own = absolutePaths(n.agent, CLUSTER_AGENT, base);
    const listen = own.listen;
    if (!listen) throw fail(`nodes[${i}].agent.listen`, 'required (HOST:PORT the agent listens on)');
    const host = n.host ?? '127.0.0.1';
    const { url, ...agentOwn } = own;
    const l = splitHostPort(listen);
    const tlsOn = Boolean(agentOwn.tlsCert ?? topAgent.tlsCert ?? tls.cert);
    const agentUrl = (url ?? `${tlsOn ? 'https' : 'http'}://${hostPort(WILDCARD.has(l.host) ? host : l.host, l.port)}`).replace(/\/+$/, '');
    return { name: n.name, dataDir: abs(n.dataDir)!, host, pgPort: Number(n.pgPort), agentListen: listen, agentUrl, agent: agentOwn as AgentFileSettings };
  });
  const addr = new Map<string, string>();
  nodes.forEach((n, i) => {
    const a = hostPort(n.host, n.pgPort);
    if (addr.has(a)) throw fail(`nodes[${i}].pgPort`, `${a} is ${addr.get(a)}'s address too`);
    addr.set(a, n.name);
    const d = nodes.findIndex((m) => m.dataDir === n.dataDir);
    if (d !== i) throw fail(`nodes[${i}].dataDir`, `${n.dataDir} is ${nodes[d].name}'s data directory too`);
  });

  const postgres: ClusterPostgres = {
    osUser: pg.osUser ?? 'postgres',
    superuser: pg.superuser ?? 'postgres',
    auth: pg.auth ?? 'scram-sha-256',
    superuserPasswordFile: abs(pg.superuserPasswordFile),
    replicationUser: pg.replication?.user ?? pg.superuser ?? 'postgres',
    replicationPasswordFile: abs(pg.replication?.passwordFile),
    walLevel: pg.walLevel ?? 'logical',
    dataChecksums: pg.dataChecksums ?? false,
    maxWalSenders: Number(pg.maxWalSenders ?? 10),
    maxReplicationSlots: Number(pg.maxReplicationSlots ?? 10),
    parameters: pg.parameters ?? {},
    hba: pg.hba ?? [],
    initdbArgs: pg.initdbArgs ?? [],
    socketDir: abs(pg.socketDir),
    primary: pg.primary ?? nodes[0].name,
  };
  if (postgres.replicationUser === postgres.superuser) {
    if (pg.replication?.passwordFile) throw fail('postgres.replication.passwordFile', `the replication role is the superuser ${postgres.superuser}: its password is postgres.superuserPasswordFile`);
    postgres.replicationPasswordFile = postgres.superuserPasswordFile;
  }
  if (postgres.auth !== 'trust') {
    if (!postgres.superuserPasswordFile) throw fail('postgres.superuserPasswordFile', `required with auth ${postgres.auth} (or auth: trust for a cluster on loopback)`);
    if (!postgres.replicationPasswordFile) throw fail('postgres.replication.passwordFile', `required with auth ${postgres.auth} for the role ${postgres.replicationUser}`);
  }
  if (!seen.has(postgres.primary)) throw fail('postgres.primary', `no node "${postgres.primary}" (nodes: ${nodes.map((n) => n.name).join(', ')})`);
  if (postgres.auth === 'trust') {
    const i = nodes.findIndex((n) => !isLoopback(n.host));
    if (i >= 0) throw fail('postgres.auth', `trust is only for a cluster on loopback, and nodes[${i}].host is ${nodes[i].host}: use scram-sha-256 with a password`);
  }

  const topProxy = absolutePaths(f.proxy ?? {}, PROXY_SETTINGS, base);
  const names = new Set<string>();
  const proxies: ClusterProxy[] = (f.proxies ?? []).map((p, i) => {
    const { name: given, adminUrl, ...own } = absolutePaths(p, CLUSTER_PROXY, base);
    const name = given ?? `p${i + 1}`;
    if (names.has(name)) throw fail(`proxies[${i}].name`, `"${name}" is given twice`);
    names.add(name);
    const settings = { ...topProxy, ...own } as ProxyFileSettings;
    if (!settings.listen) throw fail(`proxies[${i}].listen`, 'required (HOST:PORT clients connect to)');
    let url = adminUrl ?? null;
    if (!url && settings.admin) {
      const a = splitHostPort(settings.admin);
      url = `http://${hostPort(WILDCARD.has(a.host) ? '127.0.0.1' : a.host, a.port)}`;
    }
    return { name, settings, adminUrl: url ? url.replace(/\/+$/, '') : null };
  });

  return {
    file,
    name: f.cluster ?? null,
    pgBin: abs(f.pgBin) ?? DEFAULT_PG_BIN,
    tokenFile: abs(f.tokenFile),
    token: f.token ?? null,
    adminTokenFile: abs(f.adminTokenFile),
    tls,
    etcd: f.etcd ? { endpoints: f.etcd.endpoints, ttl: f.etcd.ttl === undefined ? null : Number(f.etcd.ttl) } : null,
    postgres,
    policy: f.policy ?? {},
    agentDefaults: topAgent as AgentFileSettings,
    nodes,
    proxies,
  };
}

export function loadClusterConfig(file: string): ClusterConfig {
  const data = readConfigData(file);
  if (!isClusterData(data)) throw new ConfigFileError(`${file}: nodes: required (a cluster file lists its nodes)`);
  return parseClusterConfig(data, file);
}

/** the settings of node `name`'s agent, in the shape of the agent's flat file */
export function agentSettingsFor(c: ClusterConfig, name: string): AgentFileSettings {
  const node = c.nodes.find((n) => n.name === name);
  if (!node) throw new ConfigFileError(`${c.file}: no node "${name}" (nodes: ${c.nodes.map((n) => n.name).join(', ')})`);
  return defined({
    name: node.name,
    pgdata: node.dataDir,
    listen: node.agentListen,
    pgPort: node.pgPort,
    pgHost: node.host,
    pgBin: c.pgBin,
    replUser: c.postgres.superuser,
    peers: Object.fromEntries(c.nodes.filter((n) => n !== node).map((n) => [n.name, n.agentUrl])),
    proxies: c.proxies.flatMap((p) => (p.adminUrl ? [p.adminUrl] : [])),
    tokenFile: c.tokenFile ?? undefined,
    token: c.token ?? undefined,
    etcd: c.etcd?.endpoints,
    cluster: c.etcd ? (c.name ?? undefined) : undefined,
    etcdTtl: c.etcd?.ttl ?? undefined,
    tlsCert: c.tls.cert ?? undefined,
    tlsKey: c.tls.key ?? undefined,
    agentCa: c.tls.ca ?? undefined,
    autoRejoin: c.policy.autoRejoin,
    autoRejoinReclone: c.policy.autoRejoinReclone,
    ...c.agentDefaults,
    ...node.agent,
  });
}

/** the settings of proxy `name` (or of the only one), in the shape of the proxy's flat file */
export function proxySettingsFor(c: ClusterConfig, name?: string): ProxyFileSettings {
  let entry: ClusterProxy | undefined;
  if (name !== undefined) {
    entry = c.proxies.find((p) => p.name === name);
    if (!entry) throw new ConfigFileError(`${c.file}: no proxy "${name}" (proxies: ${c.proxies.map((p) => p.name).join(', ') || 'none'})`);
  } else if (c.proxies.length > 1) {
    throw new ConfigFileError(`${c.file} describes ${c.proxies.length} proxies: --name picks this one (${c.proxies.map((p) => p.name).join(', ')})`);
  } else entry = c.proxies[0];
  return defined({
    backend: c.nodes.map((n) => hostPort(n.host, n.pgPort)),
    agent: c.nodes.map((n) => `${hostPort(n.host, n.pgPort)}=${n.agentUrl}`),
    healthUser: c.postgres.superuser,
    healthPasswordFile: c.postgres.auth === 'trust' ? undefined : (c.postgres.superuserPasswordFile ?? undefined),
    tokenFile: c.tokenFile ?? undefined,
    token: c.token ?? undefined,
    adminTokenFile: c.adminTokenFile ?? undefined,
    agentCa: c.tls.ca ?? undefined,
    etcd: c.etcd?.endpoints,
    cluster: c.etcd ? (c.name ?? undefined) : undefined,
    etcdTtl: c.etcd?.ttl ?? undefined,
    autoFailover: c.policy.autoFailover,
    migrateSlots: c.policy.migrateSlots,
    memberSlots: c.policy.memberSlots,
    synchronousMode: c.policy.synchronousMode,
    synchronousCount: c.policy.synchronousCount,
    ...(entry?.settings ?? {}),
  });
}

/**
 * `pgha agent --config FILE [--name N]`: a cluster file gives node N's part; a flat file is the
 * agent's own settings (relative paths as written).
 */
export function agentSettingsFromFile(file: string, name: string | undefined): AgentFileSettings {
  const data = readConfigData(file);
  if (!isClusterData(data)) return check(agentFileSchema, data ?? {}, file);
  const c = parseClusterConfig(data, file);
  if (!name) throw new ConfigFileError(`${file} describes a cluster: --name NODE says which node this agent runs beside (${c.nodes.map((n) => n.name).join(', ')})`);
  return agentSettingsFor(c, name);
}

/** `pgha-proxy --config FILE [--name P]`: a cluster file gives proxy P's part; a flat file is the proxy's own settings */
export function proxySettingsFromFile(file: string, name: string | undefined): ProxyFileSettings {
  const data = readConfigData(file);
  if (!isClusterData(data)) {
    if (name !== undefined) throw new ConfigFileError(`--name ${name}: ${file} is not a cluster file (it has no nodes)`);
    return check(proxyFileSchema, data ?? {}, file);
  }
  return proxySettingsFor(parseClusterConfig(data, file), name);
}
