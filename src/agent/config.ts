/**
 * Agent configuration: a JSON file, then environment variables, then command-line flags (later wins).
 * Environment: PGHA_NODE_NAME, PGHA_LISTEN (host:port), PGDATA, PGHA_TOKEN, PGHA_PEERS
 * ("name=url,name=url"), PGHA_PG_PORT, PGHA_PG_BIN, PGHA_REPL_USER, PGHA_AUTO_REJOIN (0 turns the
 * automatic rejoin off), PGHA_AUTO_REJOIN_RECLONE, PGHA_PROXIES ("url,url"), PGHA_ETCD ("url,url"),
 * PGHA_CLUSTER, PGHA_ETCD_TTL, PGHA_DCS_FAILSAFE.
 */
import { readFileSync } from 'node:fs';
import { FormatError } from '../formats/errors.js';
import { readTokenFile, warnIfExposed, warnOnStderr, type Warn } from '../ship/token.js';
import { checkClusterName, checkTtl, DcsConfigError, parseEndpoints } from '../dcs/keys.js';
import { agentSettingsFromFile, ConfigFileError } from '../config/load.js';

export interface AgentConfig {
  name: string;
  host: string;
  port: number;
  pgdata: string;
  token: string;
  peers: Record<string, string>;
  pgPort?: number;
  pgBin: string;
  replUser?: string;
  /** address other nodes use to reach this PostgreSQL (default: the agent's listen host) */
  pgHost: string;
  /** the automatic rejoin loop (default on; false turns it off) */
  autoRejoin?: boolean;
  /** may the automatic rejoin re-clone (move the data directory aside)? default no */
  autoRejoinReclone?: boolean;
  /** how often the automatic rejoin looks (ms, default 2000) */
  autoRejoinIntervalMs?: number;
  /** pgha-proxy admin base URLs, asked (GET /status) for the primary before the peers */
  proxies?: string[];
  /** etcd endpoints: register this node, hold the primary lease, fence itself when cut off */
  etcd?: string[];
  /** the cluster's name on etcd (/pgha/<cluster>/) */
  cluster?: string;
  /** seconds of the agent's etcd lease (default 5) */
  etcdTtl?: number;
  /** DCS failsafe: a primary keeps running while etcd is down as long as every member's agent confirms it sees no other primary */
  dcsFailsafe?: boolean;
  /** serve HTTPS with this PEM certificate and key (paths) */
  tlsCert?: string;
  tlsKey?: string;
  /** CA (PEM path) the other agents' certificates are checked against */
  agentCa?: string;
}

export class ConfigError extends Error {}

function parsePeers(text: string): Record<string, string> {
  const peers: Record<string, string> = {};
  for (const part of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const i = part.indexOf('=');
    if (i <= 0) throw new ConfigError(`peer "${part}" must be NAME=URL`);
    const url = part.slice(i + 1);
    if (!/^https?:\/\//.test(url)) throw new ConfigError(`peer "${part}": URL must start with http:// or https://`);
    peers[part.slice(0, i)] = url.replace(/\/+$/, '');
  }
  return peers;
}

function parseListen(text: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(text);
  if (!m || Number(m[2]) > 65535) throw new ConfigError(`listen address "${text}" must be HOST:PORT`);
  return { host: m[1] || '127.0.0.1', port: Number(m[2]) };
}

export interface AgentFlags {
  config?: string;
  pgdata?: string;
  listen?: string;
  name?: string;
  token?: string;
  /** a file holding the token (wins over --token, PGHA_TOKEN and the config file's) */
  tokenFile?: string;
  peer?: string[];
  pgPort?: string;
  pgBin?: string;
  replUser?: string;
  pgHost?: string;
  /** commander's --no-auto-rejoin: false when given (it can only turn the loop off) */
  autoRejoin?: boolean;
  autoRejoinReclone?: boolean;
  proxy?: string[];
  etcd?: string;
  cluster?: string;
  etcdTtl?: string;
  dcsFailsafe?: boolean;
  tlsCert?: string;
  tlsKey?: string;
  agentCa?: string;
}

function parseBool(text: string, what: string): boolean {
  if (/^(1|true|on|yes)$/i.test(text.trim())) return true;
  if (/^(0|false|off|no)$/i.test(text.trim())) return false;
  throw new ConfigError(`${what}="${text}": expected 1/0, true/false, on/off or yes/no`);
}

function parseProxies(list: string[]): string[] {
  return list
    .flatMap((x) => x.split(','))
    .map((x) => x.trim())
    .filter(Boolean)
    .map((u) => {
      const url = /^https?:\/\//.test(u) ? u : `http://${u}`;
      try {
        new URL(url);
      } catch {
        throw new ConfigError(`proxy "${u}" is not a URL`);
      }
      return url.replace(/\/+$/, '');
    });
}

export function loadAgentConfig(flags: AgentFlags, env: NodeJS.ProcessEnv = process.env, warn: Warn = warnOnStderr): AgentConfig {
  // a flat file of the agent's settings, or a cluster file (YAML or JSON) of which --name picks the node
  let file: Partial<Omit<AgentConfig, 'etcd' | 'pgPort' | 'port' | 'etcdTtl' | 'autoRejoinIntervalMs'>> & {
    listen?: string;
    peers?: Record<string, string>;
    proxies?: string[];
    etcd?: string | string[];
    tokenFile?: string;
    pgPort?: number | string;
    port?: number | string;
    etcdTtl?: number | string;
    autoRejoinIntervalMs?: number | string;
  } = {};
  if (flags.config) {
    try {
      file = agentSettingsFromFile(flags.config, flags.name ?? env.PGHA_NODE_NAME);
    } catch (e) {
      throw new ConfigError(e instanceof ConfigFileError ? e.message : `${flags.config}: ${(e as Error).message}`);
    }
    // only a file holding the token is a secret (a cluster file naming a tokenFile may be shared with the proxies' user)
    if (file.token) warnIfExposed(flags.config, 'config file', warn);
  }
  const listen = flags.listen ?? env.PGHA_LISTEN ?? file.listen ?? `${file.host ?? '127.0.0.1'}:${file.port ?? 8079}`;
  const { host, port } = parseListen(listen);
  const tokenFrom = (path: string): string => {
    try {
      return readTokenFile(path, warn);
    } catch (e) {
      const msg = e instanceof FormatError ? e.describe() : (e as Error).message;
      throw new ConfigError(msg.includes(path) ? msg : `${path}: ${msg}`);
    }
  };
  const tokenFromFile = flags.tokenFile ? tokenFrom(flags.tokenFile) : undefined;
  const peers = { ...(file.peers ?? {}), ...(env.PGHA_PEERS ? parsePeers(env.PGHA_PEERS) : {}), ...(flags.peer ? parsePeers(flags.peer.join(',')) : {}) };
  const cfg: AgentConfig = {
    name: flags.name ?? env.PGHA_NODE_NAME ?? file.name ?? '',
    host,
    port,
    pgdata: flags.pgdata ?? env.PGDATA ?? file.pgdata ?? '',
    token: tokenFromFile ?? flags.token ?? env.PGHA_TOKEN ?? (file.tokenFile ? tokenFrom(file.tokenFile) : file.token) ?? '',
    peers,
    pgPort: Number(flags.pgPort ?? env.PGHA_PG_PORT ?? file.pgPort ?? 0) || undefined,
    pgBin: flags.pgBin ?? env.PGHA_PG_BIN ?? file.pgBin ?? '/usr/lib/postgresql/15/bin',
    replUser: flags.replUser ?? env.PGHA_REPL_USER ?? file.replUser,
    pgHost: flags.pgHost ?? env.PGHA_PG_HOST ?? file.pgHost ?? (host === '0.0.0.0' ? '127.0.0.1' : host),
    autoRejoin:
      flags.autoRejoin === false ? false : env.PGHA_AUTO_REJOIN !== undefined && env.PGHA_AUTO_REJOIN !== '' ? parseBool(env.PGHA_AUTO_REJOIN, 'PGHA_AUTO_REJOIN') : file.autoRejoin !== false,
    autoRejoinReclone:
      flags.autoRejoinReclone === true ||
      (env.PGHA_AUTO_REJOIN_RECLONE !== undefined && env.PGHA_AUTO_REJOIN_RECLONE !== '' ? parseBool(env.PGHA_AUTO_REJOIN_RECLONE, 'PGHA_AUTO_REJOIN_RECLONE') : file.autoRejoinReclone === true),
    autoRejoinIntervalMs: Math.max(200, Number(file.autoRejoinIntervalMs ?? 2000) || 2000),
    proxies: parseProxies(flags.proxy ?? (env.PGHA_PROXIES ? [env.PGHA_PROXIES] : (file.proxies ?? []))),
  };
  const etcd = flags.etcd ?? env.PGHA_ETCD ?? file.etcd;
  if (etcd !== undefined && etcd !== '' && !(Array.isArray(etcd) && etcd.length === 0)) {
    try {
      cfg.etcd = parseEndpoints(etcd);
      cfg.cluster = checkClusterName(String(flags.cluster ?? env.PGHA_CLUSTER ?? file.cluster ?? ''));
      cfg.etcdTtl = checkTtl(flags.etcdTtl ?? env.PGHA_ETCD_TTL ?? file.etcdTtl ?? 5);
      cfg.dcsFailsafe = flags.dcsFailsafe === true || (env.PGHA_DCS_FAILSAFE !== undefined && env.PGHA_DCS_FAILSAFE !== '' ? parseBool(env.PGHA_DCS_FAILSAFE, 'PGHA_DCS_FAILSAFE') : file.dcsFailsafe === true);
    } catch (e) {
      throw new ConfigError(e instanceof DcsConfigError && /cluster name ""/.test(e.message) ? '--etcd needs --cluster NAME (or PGHA_CLUSTER, or "cluster" in the config file)' : (e as Error).message);
    }
  } else if (flags.cluster ?? env.PGHA_CLUSTER ?? file.cluster) {
    throw new ConfigError('--cluster needs --etcd URL[,URL…] (or PGHA_ETCD, or "etcd" in the config file)');
  } else if (flags.dcsFailsafe || file.dcsFailsafe) {
    throw new ConfigError('--dcs-failsafe needs --etcd URL[,URL…] and --cluster NAME');
  }
  cfg.tlsCert = flags.tlsCert ?? env.PGHA_TLS_CERT ?? file.tlsCert;
  cfg.tlsKey = flags.tlsKey ?? env.PGHA_TLS_KEY ?? file.tlsKey;
  cfg.agentCa = flags.agentCa ?? env.PGHA_AGENT_CA ?? file.agentCa;
  if (Boolean(cfg.tlsCert) !== Boolean(cfg.tlsKey)) throw new ConfigError('--tls-cert and --tls-key go together (or PGHA_TLS_CERT/PGHA_TLS_KEY, "tlsCert"/"tlsKey")');
  if (cfg.tlsKey) warnIfExposed(cfg.tlsKey, 'TLS key', warn);
  if (!cfg.name) throw new ConfigError('node name missing (--name, PGHA_NODE_NAME or "name" in the config file)');
  if (!cfg.pgdata) throw new ConfigError('data directory missing (--pgdata, PGDATA or "pgdata")');
  if (cfg.token.length < 16) throw new ConfigError('token missing or shorter than 16 characters (--token-file, --token, PGHA_TOKEN or "token")');
  return cfg;
}
