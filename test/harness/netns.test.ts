/**
 * Network cuts with real namespaces: a primary and its agent process in a net host, a standby in the
 * root namespace streaming from the namespace's address; cut() must stop every packet (new
 * connections fail at once, the route is `unreachable` rather than the default route), heal() must
 * bring everything back, destroy() must leave nothing behind.
 */
import { spawnSync } from 'node:child_process';
import { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, PgCluster, processAlive, waitFor } from './cluster.js';
import { createNetHost, destroyAllNetHosts, listPghaNamespaces, NET_RANGE, type NetHost } from './netns.js';
import { type AgentProcess, startAgentProcess, stopAgentProcesses } from '../support/agents.js';

const TOKEN = 'netns-token-0123456789abcdef';

let host: NetHost;
let primary: PgCluster;
let standby: PgCluster;
let agent: AgentProcess;

function sh(cmd: string, args: string[]) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** a fresh TCP connection: 'connected', or the error code / 'timeout', and how long it took */
function tcpConnect(ip: string, port: number, timeoutMs = 2_000): Promise<{ result: string; ms: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const s = new Socket();
    const done = (result: string) => {
      s.destroy();
      resolve({ result, ms: Date.now() - t0 });
    };
    s.setTimeout(timeoutMs, () => done('timeout'));
    s.once('connect', () => done('connected'));
    s.once('error', (e: NodeJS.ErrnoException) => done(e.code ?? e.message));
    s.connect(port, ip);
  });
}

async function health(url: string): Promise<string> {
  try {
    const r = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2_000) });
    return r.ok ? JSON.stringify(await r.json()) : `status ${r.status}`;
  } catch (e) {
    return `error: ${((e as Error).cause as Error | undefined)?.message ?? (e as Error).message}`;
  }
}

async function receiverStatus(s: PgCluster): Promise<string | null> {
  return s.sql('SELECT status FROM pg_stat_wal_receiver');
}

const defaultDev = () => /\bdev (\S+)/.exec(sh('ip', ['route', 'show', 'default']).stdout)?.[1];

beforeAll(async () => {
  host = await createNetHost('primary');
  primary = await PgCluster.init({ name: 'ns-primary', walSegSizeMB: 1, netHost: host });
  await primary.start();
  standby = await primary.createStandby({ name: 'ns-standby', conf: { wal_receiver_timeout: '2s', wal_retrieve_retry_interval: '500ms' } });
  agent = await startAgentProcess('ns-primary', primary, TOKEN, {}, { netHost: host });
});

afterAll(async () => {
  await stopAgentProcesses();
  await cleanupAll();
  await destroyAllNetHosts();
});

describe('net hosts (network namespaces + veth)', () => {
  it('runs the primary and its agent inside the namespace, reachable over TCP at its address', async () => {
    expect(host.ns).toMatch(new RegExp(`^pgha-${process.pid.toString(36)}-`));
    expect(host.ip).toMatch(/^10\.231\.\d+\.\d+$/);
    expect(listPghaNamespaces()).toContain(host.ns);
    expect(primary.host).toBe(host.ip);
    expect(primary.connectionString).toContain(`@${host.ip}:`);
    // the postmaster and the agent really live in the namespace
    const inside = host.pids();
    expect(inside).toContain(primary.pid);
    expect(inside).toContain(agent.pid);
    expect(sh('ip', ['netns', 'identify', String(primary.pid)]).stdout.trim()).toBe(host.ns);
    // a TCP query to the namespace address
    expect(await primary.sql('SELECT host(inet_server_addr())')).toBe(host.ip);
    // the standby in the root namespace streams from it
    const [rx] = await standby.rows<{ status: string; sender_host: string }>('SELECT status, sender_host FROM pg_stat_wal_receiver');
    expect(rx).toEqual({ status: 'streaming', sender_host: host.ip });
    expect(agent.url).toBe(`http://${host.ip}:${new URL(agent.url).port}`);
    expect(JSON.parse(await health(agent.url))).toMatchObject({ ok: true, name: 'ns-primary' });
    // the agent reaches its PostgreSQL from inside (SQL: one standby streaming → master)
    const role = await fetch(`${agent.url}/api/pg/v1/instance/current`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(await role.json()).toEqual({ 'ns-primary': 'master' });
    expect(sh('ip', ['route', 'show', NET_RANGE]).stdout).toMatch(/^unreachable 10\.231\.0\.0\/16/m);
  });

  it('cut(): nothing gets through in either direction and nothing leaves by the default route', async () => {
    const dev = defaultDev();
    const t0 = Date.now();
    await host.cut();
    expect(host.isCut).toBe(true);
    const c = await tcpConnect(host.ip, primary.port, 2_000);
    expect(c.result).not.toBe('connected');
    expect(c.ms).toBeLessThan(2_500);
    expect(await primary.sql('SELECT 1').then(() => 'answered', (e: Error) => `failed: ${e.message}`)).toMatch(/^failed/);
    expect(await health(agent.url)).toMatch(/^error/);
    // root namespace: the address now falls on `unreachable 10.231.0.0/16`, not on the default route
    const get = sh('ip', ['route', 'get', host.ip]);
    const said = get.stdout + get.stderr;
    expect(get.stdout.startsWith('unreachable') || /No route to host/.test(get.stderr), said).toBe(true);
    if (dev) expect(said).not.toContain(`dev ${dev}`);
    expect(sh('ip', ['route', 'show', 'dev', host.vethHost]).stdout.trim()).toBe('');
    // the namespace side: its way out is gone too
    const back = host.run(['ip', 'route', 'get', host.hostIp]);
    expect(back.status, back.stdout).not.toBe(0);
    expect(back.stderr).toMatch(/unreachable/i);
    // the server itself still runs (over its Unix socket)
    expect(primary.psql('SELECT 1').trim()).toBe('1');
    expect(Date.now() - t0).toBeLessThan(10_000);
    // the standby notices (wal_receiver_timeout 2s) and keeps failing to reconnect
    await waitFor(async () => (await receiverStatus(standby)) !== 'streaming', 20_000, 'standby to stop streaming');
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await receiverStatus(standby)).not.toBe('streaming');
  });

  it('heal(): queries, the agent and streaming come back', async () => {
    await host.heal();
    expect(host.isCut).toBe(false);
    expect((await tcpConnect(host.ip, primary.port)).result).toBe('connected');
    expect(await primary.sql('SELECT host(inet_server_addr())')).toBe(host.ip);
    expect(JSON.parse(await health(agent.url))).toMatchObject({ ok: true, name: 'ns-primary' });
    expect(host.run(['ip', 'route', 'show', 'default']).stdout).toContain(`via ${host.hostIp}`);
    await waitFor(async () => (await receiverStatus(standby)) === 'streaming', 30_000, 'standby streaming again');
    await primary.sql('CREATE TABLE after_heal AS SELECT 42 AS v');
    await primary.waitForReplay(standby);
    expect(await standby.sql('SELECT v FROM after_heal')).toBe('42');
  });

  it('namespace to namespace goes through the root namespace, never beyond the range', async () => {
    const other = await createNetHost('standby2');
    try {
      expect(other.ip).not.toBe(host.ip);
      const s2 = await primary.createStandby({ name: 'ns-standby2', netHost: other });
      expect(other.pids()).toContain(s2.pid);
      const [rx] = await s2.rows<{ status: string; sender_host: string }>('SELECT status, sender_host FROM pg_stat_wal_receiver');
      expect(rx).toEqual({ status: 'streaming', sender_host: host.ip });
      // what a namespace sends to an address outside the range is refused in the root namespace
      const out = sh('ip', ['route', 'get', '192.0.2.77', 'from', other.ip, 'iif', other.vethHost]);
      expect(out.status, out.stdout).not.toBe(0);
      expect(out.stderr).toMatch(/unreachable|No route to host/i);
      // kill -9 works for a namespaced cluster
      const pid = s2.pid!;
      await s2.kill9();
      expect(processAlive(pid)).toBe(false);
      expect(s2.isRunning()).toBe(false);
      await s2.cleanup();
    } finally {
      await other.destroy();
    }
    expect(listPghaNamespaces()).not.toContain(other.ns);
  });

  it('destroy(): the namespace, its veth and every process in it are gone', async () => {
    const pids = [...new Set([...host.pids(), primary.pid!, agent.pid])];
    expect(pids.length).toBeGreaterThan(2);
    await host.destroy();
    expect(host.destroyed).toBe(true);
    expect(sh('ip', ['netns', 'list']).stdout).not.toContain(host.ns);
    expect(sh('ip', ['link', 'show', host.vethHost]).status).not.toBe(0);
    for (const pid of pids) expect(processAlive(pid), `pid ${pid}`).toBe(false);
    expect(primary.isRunning()).toBe(false);
    expect(sh('pgrep', ['-f', primary.dataDir]).stdout.trim()).toBe('');
    // the shared route goes with the last namespace (another test worker may still hold one)
    if (listPghaNamespaces().length === 0) expect(sh('ip', ['route', 'show', NET_RANGE]).stdout.trim()).toBe('');
    await agent.stop();
    await primary.cleanup();
  });
});
