/**
 * The agent's closed loop on real PostgreSQL 15 clusters: an old primary killed with kill -9,
 * diverged (it wrote after replication was cut), fenced after its standby was promoted, is rewound
 * and made to stream through its slot by its own agent — while /health keeps answering; with the
 * automatic rejoin off nothing happens and `pgha rejoin` does it (the single-user crash recovery of
 * a fenced node); a running standby that received WAL the promoted node never had is rewound (one
 * that can follow is left alone); a fence of a primary paused by SIGSTOP ends in bounded time. And
 * the decision itself, as a pure function.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { decideAutoRejoin, findPrimaryForRejoin, slotNameFor, type AutoRejoinInputs } from '../../src/agent/auto-rejoin.js';
import type { AgentContext } from '../../src/agent/server.js';
import { Jobs } from '../../src/agent/jobs.js';
import { FENCE_MARKER } from '../../src/datadir/fence.js';
import { childPids, processAlive } from '../../src/pg/instance.js';
import { cleanupAll, freePort, PgCluster, sleep, waitFor } from '../harness/cluster.js';
import { startAgent, stopAgents } from '../support/agents.js';
import { pgha } from '../support/cli.js';

const TOKEN = 'auto-rejoin-token-0123456789';

async function api<T = Record<string, unknown>>(base: string, path: string, init: RequestInit = {}): Promise<{ status: number; body: T }> {
  const res = await fetch(`${base}/api/pg/v1/${path}`, { ...init, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', ...(init.headers ?? {}) } });
  return { status: res.status, body: (await res.json()) as T };
}
const post = <T = Record<string, unknown>>(base: string, path: string, body: unknown = {}) => api<T>(base, path, { method: 'POST', body: JSON.stringify(body) });

interface JobView {
  id: string;
  kind: string;
  state: string;
  result?: { rejoin?: { path: string; streaming: boolean }; slot?: string };
  error?: string;
  log: string[];
}

const savedEnv = new Map<string, string | undefined>();
function setEnv(vars: Record<string, string>): void {
  for (const [k, v] of Object.entries(vars)) {
    if (!savedEnv.has(k)) savedEnv.set(k, process.env[k]);
    process.env[k] = v;
  }
}
function restoreEnv(): void {
  for (const [k, v] of savedEnv) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  savedEnv.clear();
}

afterEach(async () => {
  restoreEnv();
  await stopAgents();
  await cleanupAll();
});
afterAll(async () => {
  await stopAgents();
  await cleanupAll();
});

/** cut a standby's replication: its WAL receiver stops (primary_conninfo emptied) */
async function cutReplication(s: PgCluster): Promise<void> {
  await s.sql("ALTER SYSTEM SET primary_conninfo = ''");
  await s.sql('SELECT pg_reload_conf()');
  await waitFor(async () => (await s.sql('SELECT count(*) FROM pg_stat_wal_receiver')) === '0', 30_000, `${s.name} walreceiver gone`);
}

/**
 * A primary and an asynchronous standby with some rows; replication cut at the standby (its
 * walreceiver stopped), then rows only the primary has (so a rejoin needs pg_rewind), then kill -9
 * of the primary and a promote of the standby through its agent, and rows only the new primary has.
 */
async function divergedPair(tag: string, oldAgent: { autoRejoin: boolean }) {
  const p = await PgCluster.init({ name: `${tag}-p`, walSegSizeMB: 1 });
  await p.start();
  await p.sql('CREATE TABLE t(id int primary key, src text)');
  await p.sql("INSERT INTO t SELECT i, 'common' FROM generate_series(1, 1000) i");
  const s = await p.createStandby({ name: `${tag}-s` });
  await p.waitForReplay(s);
  await cutReplication(s);
  // no checkpoint after this: the diverged WAL must stay in the old primary's pg_wal for pg_rewind
  await p.sql("INSERT INTO t SELECT i, 'lost' FROM generate_series(1001, 1200) i");
  await p.sql("UPDATE t SET src = 'common, changed' WHERE id <= 50");
  await p.kill9();

  // each agent knows the other (ports chosen first)
  const [pPort, sPort] = [await freePort(), await freePort()];
  const pUrl = `http://127.0.0.1:${pPort}`;
  const sUrl = `http://127.0.0.1:${sPort}`;
  await startAgent('node-b', s, TOKEN, { 'node-a': pUrl }, { port: sPort });
  const promoted = await post(sUrl, 'node/promote');
  expect(promoted.status, JSON.stringify(promoted.body)).toBe(200);
  await s.sql("INSERT INTO t SELECT i, 'new' FROM generate_series(5001, 5100) i");
  // the old primary's agent: its first look comes one interval after it starts, the fence right now
  await startAgent('node-a', p, TOKEN, { 'node-b': sUrl }, { port: pPort, autoRejoin: oldAgent.autoRejoin, autoRejoinIntervalMs: 1000 });
  const fenced = await post<{ fenced: boolean; stopped: string }>(pUrl, 'node/fence', { reason: 'test failover' });
  expect(fenced.status, JSON.stringify(fenced.body)).toBe(200);
  expect(fenced.body).toMatchObject({ 'node-a': 'inactive', fenced: true, stopped: 'not running' });
  expect(existsSync(join(p.dataDir, FENCE_MARKER))).toBe(true);
  return { p, s, pUrl, sUrl };
}

describe('automatic rejoin', () => {
  it('rewinds a fenced, diverged old primary by itself, streams through its slot, and /health answers throughout', async () => {
    const t0 = Date.now();
    // the agent's own environment must not reach PostgreSQL's tools (the postmaster keeps it)
    setEnv({ PGHA_TOKEN: 'must-not-leak-into-postgres', PGHA_SECRET_SETTING: 'x', PGDATA: '/nonexistent' });
    const { p, s, pUrl } = await divergedPair('ar-on', { autoRejoin: true });
    const slot = slotNameFor('node-a');
    expect(slot).toBe('pgha_node_a');

    // poll /health every 50 ms until the automatic job has ended
    const latencies: number[] = [];
    type Health = { job: { id: string; kind: string; state: string } | null; autoRejoin: boolean };
    let last = null as Health | null;
    const deadline = Date.now() + 90_000;
    while (Date.now() < deadline) {
      const t = performance.now();
      const res = await fetch(`${pUrl}/health`, { signal: AbortSignal.timeout(10_000) });
      latencies.push(performance.now() - t);
      expect(res.status).toBe(200);
      last = (await res.json()) as Health;
      if (last!.job && last!.job.state !== 'running') break;
      await sleep(50);
    }
    expect(last?.autoRejoin).toBe(true);
    if (last?.job?.state === 'failed') console.log(JSON.stringify((await api(pUrl, `jobs/${last.job.id}`)).body, null, 1));
    expect(last?.job, 'an automatic rejoin ran').toMatchObject({ kind: 'auto-rejoin', state: 'succeeded' });
    const max = Math.max(...latencies);
    console.log(`auto-rejoin: /health polled ${latencies.length} times during the job, max latency ${max.toFixed(1)} ms`);
    expect(latencies.length).toBeGreaterThan(10);
    expect(max).toBeLessThan(1000);

    // streaming from the new primary, through its slot, no longer fenced
    await waitFor(async () => (await p.sql('SELECT status FROM pg_stat_wal_receiver')) === 'streaming', 30_000, 'old primary streaming');
    expect(existsSync(join(p.dataDir, FENCE_MARKER))).toBe(false);
    expect(await p.sql('SHOW primary_slot_name')).toBe(slot);
    await waitFor(async () => (await s.sql(`SELECT active FROM pg_replication_slots WHERE slot_name = '${slot}'`)) === 'true', 30_000, 'slot active on the new primary');
    await s.waitForReplay(p);
    expect(await p.sql("SELECT count(*) FROM t WHERE src <> 'common' AND src <> 'new'")).toBe('0');
    expect(await p.sql("SELECT count(*) FROM t WHERE src = 'new'")).toBe('100');
    // the postmaster the agent started: a scrubbed environment
    const environ = readFileSync(`/proc/${p.pid}/environ`, 'utf8').split('\0').filter(Boolean);
    restoreEnv();
    expect(environ.filter((e) => e.startsWith('PGHA_'))).toEqual([]);
    // pg_ctl sets PGDATA for its postmaster itself: the data directory, never the agent's value
    expect(environ.filter((e) => e.startsWith('PGDATA=') && e !== `PGDATA=${p.dataDir}`)).toEqual([]);
    expect(environ.some((e) => e.startsWith('PATH='))).toBe(true);

    const jobs = await api<{ jobs: JobView[] }>(pUrl, 'jobs');
    expect(jobs.status).toBe(200);
    const job = jobs.body.jobs[0];
    expect(job).toMatchObject({ kind: 'auto-rejoin', state: 'succeeded' });
    expect(job.result?.rejoin).toMatchObject({ path: 'rewind', streaming: true });
    expect(job.result?.slot).toBe(slot);
    expect(job.log.join('\n')).toMatch(/single-user/);
    expect((await api<JobView>(pUrl, `jobs/${job.id}`)).body.id).toBe(job.id);
    expect((await api(pUrl, 'jobs/nope')).status).toBe(404);
    const metrics = await (await fetch(`${pUrl}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).text();
    expect(metrics).toMatch(/pgha_agent_rejoins_total\{result="succeeded"\} 1/);

    // POST instance/slave?async=1: 202 with the job at once; a second life-cycle request is BUSY
    const started = await post<{ job: string }>(pUrl, 'instance/slave?async=1');
    expect(started.status, JSON.stringify(started.body)).toBe(202);
    const busy = await post<{ error: string }>(pUrl, 'instance/slave');
    expect(busy.status).toBe(409);
    expect(busy.body.error).toBe('BUSY');
    await waitFor(async () => (await api<JobView>(pUrl, `jobs/${started.body.job}`)).body.state !== 'running', 60_000, 'async rejoin job');
    const done = (await api<JobView>(pUrl, `jobs/${started.body.job}`)).body;
    expect(done, JSON.stringify(done)).toMatchObject({ kind: 'rejoin', state: 'succeeded' });
    expect(done.result?.rejoin).toMatchObject({ path: 'follow', streaming: true });
    expect((await api<{ jobs: JobView[] }>(pUrl, 'jobs')).body.jobs.map((j) => j.kind)).toEqual(['rejoin', 'auto-rejoin']);
    console.log(`auto-rejoin test: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  });

  it('with the automatic rejoin off nothing happens; `pgha rejoin` then rejoins the fenced, killed old primary and unfences it', async () => {
    const { p, s, pUrl, sUrl } = await divergedPair('ar-off', { autoRejoin: false });
    const health = (await (await fetch(`${pUrl}/health`)).json()) as { autoRejoin: boolean; job: unknown };
    expect(health).toMatchObject({ autoRejoin: false, job: null });
    // watched for 6 s: stays stopped and fenced, no job
    const until = Date.now() + 6000;
    while (Date.now() < until) {
      expect(p.isRunning()).toBe(false);
      expect(existsSync(join(p.dataDir, FENCE_MARKER))).toBe(true);
      expect((await api<{ jobs: JobView[] }>(pUrl, 'jobs')).body.jobs).toEqual([]);
      await sleep(250);
    }
    // a fenced node is not started by the agent
    expect((await post<{ error: string }>(pUrl, 'instance/current')).body.error).toBe('FENCED');

    // the command line: crash recovery of a fenced node (standby.signal) in single-user mode works
    const r = await pgha(['rejoin', '--pgdata', p.dataDir, '--source', sUrl, '--token', TOKEN, '--pg-bin', p.binDir, '--json']);
    expect(r.status, r.stderr + r.stdout).toBe(0);
    const out = JSON.parse(r.stdout) as { path: string; streaming: boolean; lostTransactions: { count: number } };
    expect(out.path).toBe('rewind');
    expect(out.streaming).toBe(true);
    expect(out.lostTransactions.count).toBeGreaterThan(0);
    expect(existsSync(join(p.dataDir, FENCE_MARKER))).toBe(false);
    expect(existsSync(join(p.dataDir, 'standby.signal'))).toBe(true);
    await s.waitForReplay(p);
    expect(await p.sql("SELECT count(*) FROM t WHERE src <> 'common' AND src <> 'new'")).toBe('0');
    expect(await p.sql("SELECT count(*) FROM t WHERE src = 'new'")).toBe('100');
  });

  it('rewinds a running standby that received WAL the promoted node never had, and leaves one that can follow alone', async () => {
    // the primary, an asynchronous standby ahead (b) and two behind (a, promoted later; c, which can follow)
    const p = await PgCluster.init({ name: 'ar-sb-p', walSegSizeMB: 1 });
    await p.start();
    await p.sql('CREATE TABLE t(id int primary key, src text)');
    await p.sql("INSERT INTO t SELECT i, 'common' FROM generate_series(1, 1000) i");
    const a = await p.createStandby({ name: 'ar-sb-a' });
    const b = await p.createStandby({ name: 'ar-sb-b' });
    const c = await p.createStandby({ name: 'ar-sb-c' });
    for (const s of [a, b, c]) await p.waitForReplay(s);
    for (const s of [a, c]) await cutReplication(s);
    // rows only b receives, then the primary is gone and a (behind b) is promoted
    await p.sql("INSERT INTO t SELECT i, 'ahead' FROM generate_series(1001, 1300) i");
    await p.waitForReplay(b);
    await p.kill9();
    const ports = { a: await freePort(), b: await freePort(), c: await freePort() };
    const url = (n: keyof typeof ports) => `http://127.0.0.1:${ports[n]}`;
    await startAgent('node-a', a, TOKEN, { 'node-b': url('b'), 'node-c': url('c') }, { port: ports.a });
    const aEnd = await a.sql('SELECT pg_last_wal_replay_lsn()'); // where timeline 2 will begin
    const promoted = await post(url('a'), 'node/promote');
    expect(promoted.status, JSON.stringify(promoted.body)).toBe(200);
    await a.sql("INSERT INTO t SELECT i, 'new' FROM generate_series(5001, 5100) i");
    // b and c pointed at the new primary, as a failover does; b's WAL on timeline 1 ends past a's switch
    for (const s of [b, c]) {
      await s.sql(`ALTER SYSTEM SET primary_conninfo = '${a.conninfo} application_name=${s.name}'`);
      await s.sql('SELECT pg_reload_conf()');
    }
    expect(await b.sql(`SELECT greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) > '${aEnd}'::pg_lsn`), 'b is past the switch point').toBe('true');
    await startAgent('node-b', b, TOKEN, { 'node-a': url('a'), 'node-c': url('c') }, { port: ports.b, autoRejoin: true, autoRejoinIntervalMs: 1000 });
    await startAgent('node-c', c, TOKEN, { 'node-a': url('a'), 'node-b': url('b') }, { port: ports.c, autoRejoin: true, autoRejoinIntervalMs: 1000 });

    // c follows timeline 2 by itself; b cannot, and its agent rewinds it
    await waitFor(async () => (await api<{ jobs: JobView[] }>(url('b'), 'jobs')).body.jobs.some((j) => j.state !== 'running'), 90_000, 'b rejoined by its agent');
    const [job] = (await api<{ jobs: JobView[] }>(url('b'), 'jobs')).body.jobs;
    expect(job, JSON.stringify(job)).toMatchObject({ kind: 'auto-rejoin', state: 'succeeded' });
    expect(job.result?.rejoin).toMatchObject({ path: 'rewind', streaming: true });
    expect(job.log.join('\n')).toMatch(/running as a standby on timeline 1 with WAL up to .* past the point where node-a's history \(timeline 2\) left timeline 1: it cannot follow/);
    for (const s of [b, c]) {
      await waitFor(async () => (await s.sql('SELECT status FROM pg_stat_wal_receiver')) === 'streaming', 30_000, `${s.name} streaming from a`);
      await a.waitForReplay(s);
      expect(await s.sql("SELECT count(*) FROM t WHERE src = 'ahead'")).toBe('0');
      expect(await s.sql("SELECT count(*) FROM t WHERE src = 'new'")).toBe('100');
    }
    // c could follow: its agent never acted
    expect((await api<{ jobs: JobView[] }>(url('c'), 'jobs')).body.jobs).toEqual([]);
  });

  it('fences a primary paused by SIGSTOP in bounded time: fast, immediate, then SIGKILL', async () => {
    const p = await PgCluster.init({ name: 'ar-stop', walSegSizeMB: 1 });
    await p.start();
    await p.sql('CREATE TABLE t AS SELECT generate_series(1, 100) a');
    const url = await startAgent('paused', p, TOKEN);
    const pm = p.pid!;
    const children = childPids(pm);
    expect(children.length).toBeGreaterThan(2);
    const all = [pm, ...children];
    for (const pid of all) process.kill(pid, 'SIGSTOP');
    try {
      const t = Date.now();
      const r = await post<{ fenced: boolean; stopped: string }>(url, 'node/fence', { reason: 'paused primary' });
      const ms = Date.now() - t;
      console.log(`fence of a SIGSTOPped primary: ${ms} ms, stopped: ${r.body.stopped}`);
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect(ms).toBeLessThan(15_000);
      expect(r.body).toMatchObject({ paused: 'inactive', fenced: true, stopped: 'killed' });
      expect(processAlive(pm)).toBe(false);
      expect(JSON.parse(readFileSync(join(p.dataDir, FENCE_MARKER), 'utf8'))).toMatchObject({ reason: 'paused primary' });
      expect(existsSync(join(p.dataDir, 'standby.signal'))).toBe(true);
    } finally {
      // whatever is left of the server: resumed so it can exit, then killed by PID
      for (const pid of all) {
        try {
          process.kill(pid, 'SIGCONT');
        } catch {
          // gone
        }
      }
      await waitFor(async () => !all.some(processAlive), 10_000, 'server processes gone').catch(() => {
        for (const pid of all.filter(processAlive)) process.kill(pid, 'SIGKILL');
      });
    }
    expect(all.filter(processAlive)).toEqual([]);
  });
});

describe('automatic rejoin decision (pure)', () => {
  const primary = { name: 'b', url: 'http://b', timeline: 3, via: 'peers' as const };
  const base: AutoRejoinInputs = { running: false, inRecovery: null, fenced: false, timeline: 2, primary: null, primaryIsSelf: false };
  const d = (over: Partial<AutoRejoinInputs>) => decideAutoRejoin({ ...base, ...over });

  it('rejoins a fenced node when another node is primary, and only then', () => {
    expect(d({ fenced: true, primary }).action).toBe('rejoin');
    expect(d({ fenced: true, primary, running: true, inRecovery: true }).action).toBe('rejoin');
    expect(d({ fenced: true, primary: { ...primary, timeline: 1 } }).action).toBe('rejoin');
    const none = d({ fenced: true });
    expect(none.action).toBe('none');
    expect(none.reason).toMatch(/no primary/);
    expect(d({ fenced: true, primary, primaryIsSelf: true }).action).toBe('none');
  });

  it('rejoins a running primary only when another primary is on a newer timeline', () => {
    expect(d({ running: true, inRecovery: false, primary }).action).toBe('rejoin');
    expect(d({ running: true, inRecovery: false, primary: { ...primary, timeline: 2 } }).action).toBe('none');
    expect(d({ running: true, inRecovery: false, primary: { ...primary, timeline: 1 } }).action).toBe('none');
    expect(d({ running: true, inRecovery: false }).action).toBe('none');
    expect(d({ running: true, inRecovery: false, primary, primaryIsSelf: true }).action).toBe('none');
  });

  it('leaves a running standby alone unless its WAL is off the primary\'s history, twice in a row', () => {
    expect(d({ running: true, inRecovery: true, primary }).action).toBe('none');
    expect(d({ running: true, inRecovery: null, primary }).action).toBe('none');
    const off = (offHistoryChecks: number, onPrimaryHistory = false) => ({ endLsn: '0/5000000', onPrimaryHistory, offHistoryChecks });
    expect(d({ running: true, inRecovery: true, primary, standbyWal: off(0, true) }).action).toBe('none');
    const first = d({ running: true, inRecovery: true, primary, standbyWal: off(1) });
    expect(first.action).toBe('none');
    expect(first.reason).toMatch(/check 1 of 2/);
    const second = d({ running: true, inRecovery: true, primary, standbyWal: off(2) });
    expect(second.action).toBe('rejoin');
    expect(second.reason).toMatch(/timeline 2 with WAL up to 0\/5000000, past the point where b's history \(timeline 3\) left timeline 2: it cannot follow; stop and rejoin it/);
    // never without another primary, never for a node that is not a standby
    expect(d({ running: true, inRecovery: true, standbyWal: off(5) }).action).toBe('none');
    expect(d({ running: true, inRecovery: true, primary, primaryIsSelf: true, standbyWal: off(5) }).action).toBe('none');
    expect(d({ running: true, inRecovery: null, primary, standbyWal: off(5) }).action).toBe('none');
  });

  it('rejoins a stopped node that is not fenced when a primary is found on a timeline at least its own', () => {
    expect(d({ primary }).action).toBe('rejoin');
    expect(d({ primary: { ...primary, timeline: 2 } }).action).toBe('rejoin');
    expect(d({ primary: { ...primary, timeline: 1 } }).action).toBe('none');
    expect(d({}).reason).toMatch(/no primary/);
    expect(d({ primary, stoppedOnRequest: true }).action).toBe('none');
    expect(d({ primary, primaryIsSelf: true }).action).toBe('none');
  });

  it('names the slot pgha_<node> in [a-z0-9_], at most 63 characters', () => {
    expect(slotNameFor('node-A.1')).toBe('pgha_node_a_1');
    expect(slotNameFor('x'.repeat(100))).toHaveLength(63);
  });

  it('runs one job at a time and keeps the newest 20', async () => {
    const jobs = new Jobs();
    let release!: () => void;
    const a = jobs.start('a', () => new Promise<string>((r) => (release = () => r('ok'))));
    expect(() => jobs.start('b', async () => 1)).toThrow(/is running/);
    try {
      jobs.assertIdle('x');
    } catch (e) {
      expect((e as { code: string; status: number }).code).toBe('BUSY');
      expect((e as { status: number }).status).toBe(409);
    }
    expect(jobs.current?.state).toBe('running');
    await sleep(0); // the job's function runs after start() has returned
    release();
    expect(await a.done).toBe('ok');
    expect(jobs.get(a.id)).toMatchObject({ state: 'succeeded', result: 'ok' });
    const f = jobs.start('f', async () => {
      throw new Error('boom');
    });
    await expect(f.done).rejects.toThrow('boom');
    expect(jobs.get(f.id)).toMatchObject({ state: 'failed', error: 'boom' });
    for (let i = 0; i < 25; i++) await jobs.start(`n${i}`, async () => i).done;
    expect(jobs.list()).toHaveLength(20);
    expect(jobs.list()[0].kind).toBe('n24');
    expect(jobs.latest()?.kind).toBe('n24');
  });

  it('finds the primary through a proxy first, else the unfenced peer primary on the highest timeline', async () => {
    const servers: Server[] = [];
    // a fake endpoint: GET path -> JSON (a proxy's /status, an agent's instance/current and system)
    const fake = async (routes: Record<string, unknown>): Promise<string> => {
      const srv = createServer((req, res) => {
        const body = routes[req.url ?? ''];
        res.writeHead(body === undefined ? 404 : 200, { 'content-type': 'application/json' }).end(JSON.stringify(body ?? { error: 'NOT_FOUND' }));
      });
      servers.push(srv);
      await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
      const a = srv.address();
      return `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
    };
    try {
      const sys = (name: string, timeline: number, fenced = false) => ({ name, timeline, fenced, pgHost: '127.0.0.1', pgPort: 1, pgUser: 'postgres' });
      const agentC = await fake({ '/api/pg/v1/system': sys('c', 4), '/api/pg/v1/instance/current': { c: 'master' } });
      const proxy = await fake({ '/status': { primary: '10.0.0.3:5432', backends: [{ name: '10.0.0.2:5432', agent: null, timeline: 3 }, { name: '10.0.0.3:5432', agent: agentC, timeline: 4 }] } });
      const noPrimary = await fake({ '/status': { primary: null, backends: [] } });
      const peerOld = await fake({ '/api/pg/v1/system': sys('old', 2), '/api/pg/v1/instance/current': { old: 'single' } });
      const peerNew = await fake({ '/api/pg/v1/system': sys('new', 3), '/api/pg/v1/instance/current': { new: 'master' } });
      const peerFenced = await fake({ '/api/pg/v1/system': sys('fen', 9, true), '/api/pg/v1/instance/current': { fen: 'single' } });
      const peerStandby = await fake({ '/api/pg/v1/system': sys('sb', 9), '/api/pg/v1/instance/current': { sb: 'slave' } });
      const ctx = (proxies: string[], peers: Record<string, string>) => ({ cfg: { name: 'a', token: TOKEN, proxies, peers } }) as unknown as AgentContext;
      const peers = { old: peerOld, new: peerNew, fen: peerFenced, sb: peerStandby };
      expect(await findPrimaryForRejoin(ctx([noPrimary, 'http://127.0.0.1:1', proxy], peers), 1000)).toEqual({ name: 'c', url: agentC, timeline: 4, via: 'proxy' });
      expect(await findPrimaryForRejoin(ctx([noPrimary], peers), 1000)).toEqual({ name: 'new', url: peerNew, timeline: 3, via: 'peers' });
      expect(await findPrimaryForRejoin(ctx([], { fen: peerFenced, sb: peerStandby, gone: 'http://127.0.0.1:1' }), 1000)).toBeNull();
    } finally {
      for (const srv of servers) srv.close();
    }
  });
});
