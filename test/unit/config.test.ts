/**
 * Configuration files: the cluster file (YAML or JSON) and the daemons' flat files. Unknown keys,
 * wrong types and missing names are one line naming the file, the path and what was expected;
 * each daemon takes its own part of a cluster file; every flag of pgha-proxy and pgha agent is a
 * key of its schema (so a flag added without its schema line fails here); examples/pgha.yaml parses.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { agentSettingsFromFile, ConfigFileError, loadClusterConfig, proxySettingsFromFile } from '../../src/config/load.js';
import { AGENT_SETTINGS, PROXY_SETTINGS } from '../../src/config/schema.js';
import { PGHA, ROOT } from '../support/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'pgha-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const PROXY_CLI = join(ROOT, 'dist', 'proxy', 'cli.js');

let n = 0;
function file(content: string | object, ext = 'yaml'): string {
  const f = join(dir, `c${++n}.${ext}`);
  writeFileSync(f, typeof content === 'string' ? content : JSON.stringify(content), { mode: 0o600 });
  return f;
}

const CLUSTER = `
cluster: main
tokenFile: secrets/token
postgres:
  auth: trust
policy:
  autoFailover: true
  synchronousMode: "on"
agent:
  autoRejoinIntervalMs: 1000
nodes:
  - name: n1
    dataDir: data/n1
    pgPort: 5432
    agent: { listen: "127.0.0.1:8010" }
  - name: n2
    dataDir: /srv/n2
    pgPort: 5433
    agent: { listen: "0.0.0.0:8011", autoRejoinReclone: true }
proxies:
  - name: p1
    listen: 127.0.0.1:6432
    admin: 0.0.0.0:8008
  - name: p2
    listen: 127.0.0.1:6433
    admin: 127.0.0.1:8009
    healthInterval: 250
`;

/** the error a loader throws */
function errorOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigFileError);
    expect((e as Error).message.split('\n')).toHaveLength(1);
    return (e as Error).message;
  }
  throw new Error('expected an error');
}

describe('cluster file', () => {
  it('each daemon takes its part; relative paths are from the file; sections win in order', () => {
    const f = file(CLUSTER);
    expect(agentSettingsFromFile(f, 'n2')).toEqual({
      name: 'n2',
      pgdata: '/srv/n2',
      listen: '0.0.0.0:8011',
      pgPort: 5433,
      pgHost: '127.0.0.1',
      pgBin: '/usr/lib/postgresql/15/bin',
      replUser: 'postgres',
      peers: { n1: 'http://127.0.0.1:8010' },
      proxies: ['http://127.0.0.1:8008', 'http://127.0.0.1:8009'],
      tokenFile: join(dir, 'secrets/token'),
      autoRejoinIntervalMs: 1000,
      autoRejoinReclone: true,
    });
    // n2 listens on 0.0.0.0: the others reach it at its node address
    expect(agentSettingsFromFile(f, 'n1')).toMatchObject({ pgdata: join(dir, 'data/n1'), peers: { n2: 'http://127.0.0.1:8011' } });
    expect(proxySettingsFromFile(f, 'p2')).toEqual({
      backend: ['127.0.0.1:5432', '127.0.0.1:5433'],
      agent: ['127.0.0.1:5432=http://127.0.0.1:8010', '127.0.0.1:5433=http://127.0.0.1:8011'],
      healthUser: 'postgres',
      tokenFile: join(dir, 'secrets/token'),
      autoFailover: true,
      synchronousMode: 'on',
      listen: '127.0.0.1:6433',
      admin: '127.0.0.1:8009',
      healthInterval: 250,
    });
  });

  it('flags (and the agent\'s environment) win over the file; the token comes from its tokenFile', async () => {
    const { loadProxyConfig } = await import('../../proxy/config.js');
    const { loadAgentConfig } = await import('../../src/agent/config.js');
    const f = file(CLUSTER);
    const secrets = join(dir, 'secrets');
    (await import('node:fs')).mkdirSync(secrets, { recursive: true });
    writeFileSync(join(secrets, 'token'), 'cluster-token-0123456789\n', { mode: 0o600 });
    const p = loadProxyConfig({ config: f, name: 'p2', healthInterval: '999', listen: '127.0.0.1:7000' }, {});
    expect(p).toMatchObject({ healthIntervalMs: 999, listen: { host: '127.0.0.1', port: 7000 }, token: 'cluster-token-0123456789', autoFailover: true, synchronousMode: 'on' });
    expect(p.backends.map((b) => `${b.host}:${b.port}`)).toEqual(['127.0.0.1:5432', '127.0.0.1:5433']);
    expect([...p.agents.entries()]).toEqual([['127.0.0.1:5432', 'http://127.0.0.1:8010'], ['127.0.0.1:5433', 'http://127.0.0.1:8011']]);
    const warnings: string[] = [];
    const a = loadAgentConfig({ config: f, name: 'n1', pgPort: '7777' }, { PGHA_PG_BIN: '/opt/pg/bin' }, (w) => warnings.push(w));
    expect(a).toMatchObject({ name: 'n1', pgdata: join(dir, 'data/n1'), pgPort: 7777, pgBin: '/opt/pg/bin', host: '127.0.0.1', port: 8010, token: 'cluster-token-0123456789', peers: { n2: 'http://127.0.0.1:8011' }, autoRejoinIntervalMs: 1000 });
    expect(() => loadProxyConfig({ name: 'p1', listen: '127.0.0.1:1', backend: ['127.0.0.1:2'] }, {})).toThrow(/--name picks a proxy of a cluster config file: give --config FILE/);
    // a file that others may read is worth a warning only when it holds the token itself
    (await import('node:fs')).chmodSync(f, 0o644);
    loadAgentConfig({ config: f, name: 'n1' }, {}, (w) => warnings.push(w));
    expect(warnings).toEqual([]);
    const inline = file(CLUSTER.replace('tokenFile: secrets/token', 'token: inline-token-0123456789'));
    (await import('node:fs')).chmodSync(inline, 0o644);
    expect(loadAgentConfig({ config: inline, name: 'n1' }, {}, (w) => warnings.push(w)).token).toBe('inline-token-0123456789');
    expect(warnings).toEqual([`pgha: warning: config file ${inline} is readable by group or others (mode 0644); it holds the agents' token: chmod 600 ${inline}`]);
  });

  it('JSON is accepted as well', () => {
    const f = file({ postgres: { auth: 'trust' }, nodes: [{ name: 'a', dataDir: '/d/a', pgPort: 5432, agent: { listen: '127.0.0.1:1' } }], proxies: [{ listen: '127.0.0.1:2' }] }, 'json');
    expect(proxySettingsFromFile(f, undefined)).toMatchObject({ backend: ['127.0.0.1:5432'], listen: '127.0.0.1:2' });
    expect(loadClusterConfig(f).proxies[0].name).toBe('p1');
  });

  it('unknown keys: named with their path and the known keys of that section', () => {
    const f = file(CLUSTER.replace('    healthInterval: 250', '    backends: ["127.0.0.1:5432"]'));
    const e = errorOf(() => proxySettingsFromFile(f, 'p2'));
    expect(e).toMatch(new RegExp(`^${f}: proxies\\[1\\]\\.backends: unknown key "backends" \\(known: name, adminUrl, listen, readListen, admin, `));
    expect(e).toMatch(/healthInterval, .*agentCa/);
    const g = file(CLUSTER.replace('    dataDir: /srv/n2', '    pgdta: /srv/n2\n    dataDir: /srv/n2'));
    expect(errorOf(() => agentSettingsFromFile(g, 'n1'))).toBe(`${g}: nodes[1].pgdta: unknown key "pgdta" (known: name, dataDir, host, pgPort, agent)`);
    const h = file(CLUSTER.replace('policy:', 'policy:\n  autoFailvoer: true'));
    expect(errorOf(() => loadClusterConfig(h))).toMatch(/: policy\.autoFailvoer: unknown key "autoFailvoer" \(known: autoFailover, migrateSlots, /);
    const top = file(CLUSTER + 'proxy-defaults: {}\n');
    expect(errorOf(() => loadClusterConfig(top))).toMatch(/: proxy-defaults: unknown key "proxy-defaults" \(known: cluster, pgBin, tokenFile, token, adminTokenFile, tls, etcd, postgres, policy, agent, proxy, nodes, proxies\)$/);
  });

  it('wrong types: the path, what was expected and what was there', () => {
    const cases: Array<[string, string]> = [
      [CLUSTER.replace('pgPort: 5433', 'pgPort: abc'), 'nodes[1].pgPort: expected a port number 1-65535, got "abc"'],
      [CLUSTER.replace('pgPort: 5433', 'pgPort: 70000'), 'nodes[1].pgPort: expected a port number 1-65535, got 70000'],
      [CLUSTER.replace('healthInterval: 250', 'healthInterval: soon'), 'proxies[1].healthInterval: expected an integer ≥ 10, got "soon"'],
      [CLUSTER.replace('autoFailover: true', 'autoFailover: yes'), 'policy.autoFailover: expected true or false, got "yes"'],
      [CLUSTER.replace('synchronousMode: "on"', 'synchronousMode: always'), 'policy.synchronousMode: expected one of off, on, strict, got "always"'],
      [CLUSTER.replace('listen: 127.0.0.1:6433', 'listen: 6433'), 'proxies[1].listen: expected HOST:PORT, got 6433'],
      [CLUSTER.replace('agent: { listen: "127.0.0.1:8010" }', 'agent: "127.0.0.1:8010"'), 'nodes[0].agent: expected a mapping, got "127.0.0.1:8010"'],
      [CLUSTER.replace(/nodes:[^]*proxies:/, 'nodes: n1\nproxies:'), 'nodes: expected a list, got "n1"'],
    ];
    for (const [text, msg] of cases) {
      const f = file(text);
      expect(errorOf(() => loadClusterConfig(f)), msg).toBe(`${f}: ${msg}`);
    }
  });

  it('missing and contradictory: a node without a name, two nodes of one name, --name absent or unknown', () => {
    const noName = file(CLUSTER.replace('  - name: n2\n', '  - host: 127.0.0.1\n'));
    expect(errorOf(() => loadClusterConfig(noName))).toBe(`${noName}: nodes[1].name: required`);
    const noListen = file(CLUSTER.replace('agent: { listen: "127.0.0.1:8010" }', 'agent: {}'));
    expect(errorOf(() => loadClusterConfig(noListen))).toBe(`${noListen}: nodes[0].agent.listen: required (HOST:PORT the agent listens on)`);
    const twice = file(CLUSTER.replace('name: n2', 'name: n1'));
    expect(errorOf(() => loadClusterConfig(twice))).toBe(`${twice}: nodes[1].name: "n1" is given twice (nodes[0])`);
    const f = file(CLUSTER);
    expect(errorOf(() => agentSettingsFromFile(f, undefined))).toBe(`${f} describes a cluster: --name NODE says which node this agent runs beside (n1, n2)`);
    expect(errorOf(() => agentSettingsFromFile(f, 'n9'))).toBe(`${f}: no node "n9" (nodes: n1, n2)`);
    expect(errorOf(() => proxySettingsFromFile(f, undefined))).toBe(`${f} describes 2 proxies: --name picks this one (p1, p2)`);
    const etcd = file(CLUSTER.replace('cluster: main\n', '') + 'etcd: { endpoints: "http://127.0.0.1:2379" }\n');
    expect(errorOf(() => loadClusterConfig(etcd))).toBe(`${etcd}: cluster: required with etcd (the cluster's name there: /pgha/NAME/)`);
    const scram = file(CLUSTER.replace('auth: trust', 'auth: scram-sha-256'));
    expect(errorOf(() => loadClusterConfig(scram))).toBe(`${scram}: postgres.superuserPasswordFile: required with auth scram-sha-256 (or auth: trust for a cluster on loopback)`);
    const trustFar = file(CLUSTER.replace('    dataDir: /srv/n2', '    dataDir: /srv/n2\n    host: 10.1.2.3'));
    expect(errorOf(() => loadClusterConfig(trustFar))).toMatch(/: postgres\.auth: trust is only for a cluster on loopback, and nodes\[1\]\.host is 10\.1\.2\.3/);
  });

  it('a YAML syntax error names the line and column', () => {
    const f = file('nodes:\n  - name: n1\n   dataDir: x\n');
    expect(errorOf(() => loadClusterConfig(f))).toMatch(new RegExp(`^${f}:3:\\d+: `));
  });

  it('the README\'s "Run a cluster" file parses too', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const at = readme.indexOf('## Run a cluster');
    const yaml = /```yaml\n([^]*?)```/.exec(readme.slice(at))![1];
    const c = loadClusterConfig(file(yaml));
    expect(c.nodes.map((x) => x.name)).toEqual(['n1', 'n2', 'n3']);
    expect(c.proxies.map((p) => p.name)).toEqual(['p1']);
  });

  it('examples/pgha.yaml parses: 3 nodes, proxies, every daemon gets its part', () => {
    const f = join(ROOT, 'examples', 'pgha.yaml');
    const c = loadClusterConfig(f);
    expect(c.nodes.map((x) => x.name)).toEqual(['n1', 'n2', 'n3']);
    expect(c.proxies.length).toBeGreaterThan(0);
    for (const x of c.nodes) expect(agentSettingsFromFile(f, x.name).name).toBe(x.name);
    for (const p of c.proxies) expect(proxySettingsFromFile(f, p.name).listen).toBeTruthy();
  });
});

describe('flat files (the daemons\' own settings, as before)', () => {
  it('are accepted as they were', () => {
    expect(agentSettingsFromFile(file({ name: 'x', pgdata: '/d', pgPort: '5432', autoRejoin: false }, 'json'), undefined)).toEqual({ name: 'x', pgdata: '/d', pgPort: '5432', autoRejoin: false });
    expect(proxySettingsFromFile(file({ backend: ['127.0.0.1:5432'], healthInterval: 250 }, 'json'), undefined)).toEqual({ backend: ['127.0.0.1:5432'], healthInterval: 250 });
  });

  it('refuse "backends" (pgha-proxy) and "pgdta" (pgha agent), silently ignored before: exit 2, one line', () => {
    const p = file({ listen: '127.0.0.1:0', backends: ['127.0.0.1:5432'] }, 'json');
    const r = spawnSync(process.execPath, [PROXY_CLI, '--config', p], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(new RegExp(`^pgha-proxy: config file ${p}: backends: unknown key "backends" \\(known: listen, backend, readListen, `));
    const a = file({ name: 'n1', pgdta: '/var/lib/postgresql/data' }, 'json');
    const s = spawnSync(process.execPath, [PGHA, 'agent', '--config', a], { encoding: 'utf8', env: { ...process.env, PGHA_TOKEN: 'a-token-of-sixteen-chars' } });
    expect(s.status).toBe(2);
    expect(s.stderr.trim().split('\n').filter((l) => !/warning/.test(l))).toEqual([`pgha: error: ${a}: pgdta: unknown key "pgdta" (known: ${Object.keys(AGENT_SETTINGS).join(', ')})`]);
    // the same through a cluster file
    const c = file(CLUSTER.replace('    healthInterval: 250', '    backends: ["127.0.0.1:5432"]'));
    const t = spawnSync(process.execPath, [PROXY_CLI, '--config', c, '--name', 'p1'], { encoding: 'utf8' });
    expect(t.status).toBe(2);
    expect(t.stderr).toMatch(/^pgha-proxy: config file .*: proxies\[1\]\.backends: unknown key "backends" \(known: /);
  });

  it('every flag of pgha-proxy and pgha agent is a key of its schema', () => {
    const flags = (help: string) => [...help.matchAll(/^\s+--(?:no-)?([a-z][a-z0-9-]*)/gm)].map((m) => m[1].replace(/-([a-z])/g, (_x, c: string) => c.toUpperCase()));
    const proxyHelp = spawnSync(process.execPath, [PROXY_CLI, '--help'], { encoding: 'utf8' }).stdout;
    // how the process logs is said by flags and the environment only (PGHA_LOG_FORMAT, and for the agent PGHA_LOG_LEVEL)
    const proxyFlags = flags(proxyHelp).filter((k) => !['config', 'name', 'help', 'version', 'logFormat'].includes(k));
    expect(proxyFlags.length).toBeGreaterThan(30);
    expect(proxyFlags.filter((k) => !(k in PROXY_SETTINGS))).toEqual([]);
    const agentHelp = spawnSync(process.execPath, [PGHA, 'agent', '--help'], { encoding: 'utf8' }).stdout;
    // file keys that differ from their flags: --peer NAME=URL (peers {name: url}), --proxy (proxies)
    const agentFlags = flags(agentHelp)
      .filter((k) => !['config', 'help', 'logFormat', 'logLevel'].includes(k))
      .map((k) => ({ peer: 'peers', proxy: 'proxies' })[k] ?? k);
    expect(agentFlags.length).toBeGreaterThan(15);
    expect(agentFlags.filter((k) => !(k in AGENT_SETTINGS))).toEqual([]);
  });
});
