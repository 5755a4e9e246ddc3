/**
 * Node agents on real PostgreSQL 15 clusters over loopback: security and file shipping, then an old
 * primary rejoining by following (stopped before the promote) and by rewinding (it wrote after the
 * fork), with the WAL pg_rewind needs recycled locally and shipped from a peer.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, renameSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent as startAgentWith, stopAgents } from '../support/agents.js';
import { rejoin, RejoinRefused } from '../../src/rejoin/execute.js';
import { cleanupAll, PgCluster, waitFor } from '../harness/cluster.js';
import { pgha } from '../support/cli.js';
import { processAlive } from '../../src/pg/instance.js';

const TOKEN = 'test-token-0123456789abcdef';
const startAgent = (name: string, c: PgCluster, peers: Record<string, string> = {}) => startAgentWith(name, c, TOKEN, peers);

async function api(base: string, path: string, init: RequestInit = {}, token: string | null = TOKEN): Promise<Response> {
  return fetch(`${base}/api/pg/v1/${path}`, { ...init, headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(init.headers ?? {}) } });
}

/** an md5 over every user table's rows, to compare nodes */
async function tableChecksum(c: PgCluster): Promise<string> {
  const tables = await c.rows<{ t: string }>("SELECT format('%I.%I', schemaname, relname) AS t FROM pg_stat_user_tables ORDER BY 1");
  const sums: string[] = [];
  for (const { t } of tables) sums.push(`${t}:${await c.sql(`SELECT md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM ${t} x`)}`);
  return sums.join('\n');
}

afterAll(async () => {
  await stopAgents();
  await cleanupAll();
});

describe('agent: security and WAL file shipping', () => {
  let p: PgCluster;
  let url: string;
  beforeAll(async () => {
    p = await PgCluster.init({ name: 'agent-sec', walSegSizeMB: 1 });
    await p.start();
    await p.sql('CREATE TABLE t AS SELECT generate_series(1, 1000) a');
    await p.switchWal();
    url = await startAgent('sec', p);
  });

  it('answers the health probe without a token and everything else only with it', async () => {
    expect((await fetch(`${url}/health`)).status).toBe(200);
    for (const path of ['instance/current', 'lsn/current', 'in_recovery', 'validLsn/1/0-0', 'walFiles/1/0-0']) {
      expect((await api(url, path, {}, null)).status, path).toBe(401);
      expect((await api(url, path, {}, 'wrong-token-wrong-token')).status, path).toBe(401);
    }
    expect((await fetch(`${url}/metrics`)).status).toBe(401);
    const m = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(await m.text()).toMatch(/pgha_agent_requests_total/);
  });

  it('reports state, LSNs, recovery and validLsn', async () => {
    expect(await (await api(url, 'instance/current')).json()).toEqual({ sec: 'single' });
    expect(await (await api(url, 'in_recovery')).json()).toEqual({ in_recovery: 'f' });
    const lsn = (await (await api(url, 'lsn/current')).json()) as Record<string, Record<string, string>>;
    expect(Object.keys(lsn.sec).sort()).toEqual(['chkPoint', 'chkRedoPoint', 'lastLsn', 'timeLineID', 'walFile']);
    expect(lsn.sec.timeLineID).toBe('1');
    expect(await (await api(url, `validLsn/1/${lsn.sec.lastLsn}`)).json()).toEqual({ code: 0, msg: 'Valid lsn', cnt: 0 });
    expect(await (await api(url, `validLsn/1/${lsn.sec.lastLsn.replace('/', '-')}`)).json()).toEqual({ code: 0, msg: 'Valid lsn', cnt: 0 });
    expect((await api(url, 'validLsn/x/0-0')).status).toBe(400);
  });

  it('lists and streams files with checksums that match the bytes', async () => {
    const at = (await p.sql('SELECT pg_current_wal_lsn()'))!;
    const list = (await (await api(url, `walFiles/1/${at}`)).json()) as { files: Array<{ name: string; size: number; sha256: string }> };
    expect(list.files.length).toBeGreaterThan(0);
    const f = list.files[0];
    const res = await api(url, `walFile/${f.name}`);
    const body = Buffer.from(await res.arrayBuffer());
    expect(res.headers.get('x-checksum')).toBe(`sha256:${f.sha256}`);
    expect(createHash('sha256').update(body).digest('hex')).toBe(f.sha256);
    expect(body.length).toBe(f.size);
  });

  it('refuses bad names, wrong checksums and interrupted uploads, leaving nothing behind', async () => {
    const walDir = p.walDir;
    // a real, complete segment before the server's position, taken out of pg_wal: what a node may
    // legitimately be sent back (uploads are checked against what their name says: test/agent/uploads.test.ts)
    await p.switchWal();
    await p.sql('INSERT INTO t VALUES (1001)');
    const current = (await p.sql('SELECT pg_walfile_name(pg_current_wal_lsn())'))!;
    const name = readdirSync(walDir).filter((n) => /^[0-9A-F]{24}$/.test(n) && n < current).sort()[0];
    expect(name, 'an old segment').toBeDefined();
    const data = readFileSync(join(walDir, name));
    renameSync(join(walDir, name), join(p.ownedDir('aside'), name));
    const before = readdirSync(walDir).sort();
    const sha = createHash('sha256').update(data).digest('hex');
    const put = (name: string, body: Buffer, checksum: string) =>
      api(url, `walFile/${name}`, { method: 'PUT', body: new Uint8Array(body), headers: { 'content-type': 'application/octet-stream', 'x-checksum': `sha256:${checksum}` } });
    for (const bad of ['..%2F..%2Fpostgresql.conf', '00000001000000000000000X', 'postgresql.conf', '%2Fetc%2Fpasswd']) {
      const r = await put(bad, data, sha);
      expect([400, 404], bad).toContain(r.status);
    }
    const wrong = await put(name, data, 'f'.repeat(64));
    expect(wrong.status).toBe(422);
    expect((await api(url, `walFile/${name}`, { method: 'PUT', body: new Uint8Array(data), headers: { 'content-type': 'application/octet-stream' } })).status).toBe(400);
    // an interrupted upload: announce the whole segment, send half; once the agent is receiving it (its
    // temp file is there), drop the connection — the agent then removes the temp file and stores nothing
    const temps = () => readdirSync(walDir).filter((n) => n.startsWith('.pgha-tmp'));
    const u = new URL(`${url}/api/pg/v1/walFile/${name}`);
    const req = request({ host: u.hostname, port: u.port, path: u.pathname, method: 'PUT', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/octet-stream', 'content-length': String(data.length), 'x-checksum': `sha256:${sha}` } });
    const closed = new Promise<void>((resolve) => req.on('error', () => resolve()).on('close', () => resolve()));
    req.write(data.subarray(0, data.length / 2));
    await waitFor(async () => temps().length === 1, 10_000, 'the agent receiving the upload (its temp file in pg_wal)');
    req.destroy();
    await closed;
    await waitFor(async () => temps().length === 0, 10_000, "the interrupted upload's temp file removed");
    expect(readdirSync(walDir).sort()).toEqual(before);
    // two concurrent uploads of one file end with one correct file: one creates it, the other finds it there
    const [a, b] = await Promise.all([put(name, data, sha), put(name, data, sha)]);
    expect([a.status, b.status].sort()).toEqual([200, 201]);
    const got = readFileSync(join(walDir, name));
    expect(createHash('sha256').update(got).digest('hex')).toBe(sha);
    expect(readdirSync(walDir).filter((n) => n.startsWith('.pgha-tmp'))).toEqual([]);
  });
});

describe('rejoin of an old primary', () => {
  it('follows without a rewind when it stopped before the promote', async () => {
    const p = await PgCluster.init({ name: 'rj-follow-p', walSegSizeMB: 1 });
    await p.start();
    await p.sql('CREATE TABLE t(a int)');
    await p.sql('INSERT INTO t SELECT generate_series(1, 100)');
    const s = await p.createStandby({ name: 'rj-follow-s' });
    await p.waitForReplay(s);
    p.stop('fast');
    const sUrl = await startAgent('s', s);
    expect((await api(sUrl, 'node/promote', { method: 'POST' })).status).toBe(200);
    await s.sql('INSERT INTO t VALUES (101)');
    // the old primary's own agent rejoins it through POST instance/slave (the same code as pgha rejoin)
    const pUrl = await startAgent('p', p, { s: sUrl });
    expect(await (await api(pUrl, 'instance/current')).json()).toEqual({ p: 'inactive' });
    const res = await api(pUrl, 'instance/slave', { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
    const body = (await res.json()) as { p: string; rejoin: { path: string; streaming: boolean; lostTransactions: { count: number } } };
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(body.rejoin.path).toBe('follow');
    expect(body.rejoin.streaming).toBe(true);
    expect(body.rejoin.lostTransactions.count).toBe(0);
    expect(body.p).toBe('slave');
    expect(await (await api(pUrl, 'instance/all')).json()).toEqual({ p: 'slave', s: 'master' });
    const lsnAll = (await (await api(pUrl, 'lsn/all')).json()) as Record<string, { timeLineID: string }>;
    expect([lsnAll.p.timeLineID, lsnAll.s.timeLineID]).toEqual(['2', '2']);
    expect(await (await api(pUrl, 'in_recovery')).json()).toEqual({ in_recovery: 't' });
    await s.waitForReplay(p);
    expect(await p.sql('SELECT count(*) FROM t')).toBe('101');
    expect(await s.sql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")).toBe('1');
    // and stops through its agent
    expect(await (await api(pUrl, 'instance/current', { method: 'DELETE' })).json()).toEqual({ p: 'inactive', stopped: 'fast' });
    await p.cleanup();
    await s.cleanup();
  });

  it('rewinds a diverged old primary, ships the recycled WAL from a peer, and reports exactly the lost transactions', async () => {
    const p = await PgCluster.init({ name: 'rj-rewind-p', walSegSizeMB: 1 });
    await p.start();
    await p.sql('CREATE TABLE acct(id int primary key, v int)');
    await p.sql('INSERT INTO acct SELECT i, 0 FROM generate_series(1, 2000) i');
    p.pgbench(['-i', '-s', '1', '-q']);
    await p.checkpoint();
    const s = await p.createStandby({ name: 'rj-rewind-s', conf: { wal_keep_size: '256MB' } });
    await p.waitForReplay(s);
    await s.promote();
    // the old primary keeps writing: these transactions exist only on timeline 1
    const lost: number[] = [];
    for (let i = 0; i < 5; i++) {
      const [r] = await p.rows<{ xid: string }>(`WITH u AS (UPDATE acct SET v = v + 1 WHERE id = ${i + 1} RETURNING 1) SELECT txid_current()::text AS xid`);
      lost.push(Number(r.xid));
    }
    await p.client(async (c) => {
      await c.query("BEGIN; INSERT INTO acct VALUES (900001, 1); PREPARE TRANSACTION 'lost2pc'");
      const [r] = (await c.query("SELECT transaction::text AS xid FROM pg_prepared_xacts WHERE gid = 'lost2pc'")).rows;
      await c.query("COMMIT PREPARED 'lost2pc'");
      lost.push(Number(r.xid));
    });
    await p.kill9();
    await s.sql('INSERT INTO acct VALUES (800001, 8)');

    // recycle: the common-history segments before the fork are gone from the old primary (as after
    // its checkpoints), while the new primary still has them; the diverged WAL after the fork stays
    const history = readFileSync(join(s.walDir, '00000002.history'), 'utf8');
    const fork = /^1\t([0-9A-F]+)\/([0-9A-F]+)/m.exec(history)!;
    const forkSeg = ((BigInt('0x' + fork[1]) << 32n) | BigInt('0x' + fork[2])) / BigInt(1 << 20);
    const aside = p.ownedDir('recycled');
    const recycled = readdirSync(p.walDir).filter((n) => /^00000001[0-9A-F]{16}$/.test(n) && BigInt('0x' + n.slice(16)) < forkSeg && existsSync(join(s.walDir, n)));
    expect(recycled.length).toBeGreaterThan(0);
    for (const n of recycled) renameSync(join(p.walDir, n), join(aside, n));

    const sUrl = await startAgent('s2', s);
    // without the WAL anywhere: a clear refusal
    const peerAside = s.ownedDir('peer-aside');
    const onPeer = recycled.filter((n) => existsSync(join(s.walDir, n)));
    expect(onPeer.length).toBeGreaterThan(0);
    for (const n of onPeer) renameSync(join(s.walDir, n), join(peerAside, n));
    const refused = await rejoin({ pgdata: p.dataDir, source: sUrl, token: TOKEN, binDir: p.binDir }).then(() => null, (e: unknown) => e);
    expect(refused, String(refused)).toBeInstanceOf(RejoinRefused);
    await expect(rejoin({ pgdata: p.dataDir, source: sUrl, token: TOKEN, binDir: p.binDir })).rejects.toThrow(/missing here and on every agent asked/);
    for (const n of onPeer) renameSync(join(peerAside, n), join(s.walDir, n));

    // dry run: the plan, nothing changed
    const plan = await rejoin({ pgdata: p.dataDir, source: sUrl, token: TOKEN, binDir: p.binDir, dryRun: true });
    expect(plan.path).toBe('rewind');
    expect(plan.steps).toContain('CHECKPOINT on the source');
    expect(plan.steps.indexOf('pg_rewind from the source, keeping this node\'s configuration files')).toBeGreaterThan(plan.steps.findIndex((st) => st.startsWith('report the transactions')));
    expect(plan.lostTransactions.report).toBeNull();
    expect(plan.fetched.some((f) => recycled.includes(f.name))).toBe(true);
    expect(readdirSync(p.walDir).filter((n) => recycled.includes(n))).toEqual([]);

    const r = await rejoin({ pgdata: p.dataDir, source: sUrl, token: TOKEN, binDir: p.binDir });
    expect(r.path).toBe('rewind');
    expect(r.streaming).toBe(true);
    expect(r.fetched.map((f) => f.name).filter((n) => recycled.includes(n)).length).toBeGreaterThan(0);
    expect([...r.lostTransactions.xids].sort()).toEqual([...lost].sort());
    const report = JSON.parse(readFileSync(r.lostTransactions.report!, 'utf8'));
    expect(report.transactions.map((t: { xid: number }) => t.xid).sort()).toEqual([...lost].sort());
    for (const t of report.transactions) {
      expect(Number.isNaN(Date.parse(t.commitTime))).toBe(false);
      expect(t.relations.length).toBeGreaterThan(0);
    }
    await s.waitForReplay(p);
    expect(await tableChecksum(p)).toBe(await tableChecksum(s));
    expect(await p.sql('SELECT count(*) FROM acct WHERE id = 900001')).toBe('0');
    expect(await p.sql('SELECT count(*) FROM acct WHERE id = 800001')).toBe('1');
    await waitFor(async () => (await s.sql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")) === '1', 30_000, 'rejoined node in pg_stat_replication');
    await p.cleanup();
    await s.cleanup();
  });
});

describe('rejoin when the last checkpoint before the fork is on the parent timeline', () => {
  it("reads the WAL before its timeline's switch from the parent timeline's files, as pg_rewind does", async () => {
    // a (TL 1) -> b promoted to TL 2 in a later segment than the last checkpoint, with its
    // checkpointer stopped so no checkpoint follows the promotion (as when the old primary is
    // killed before its post-promotion checkpoint) -> c follows b, is promoted to TL 3 -> b killed
    const a = await PgCluster.init({ name: 'rj-parent-a', walSegSizeMB: 1 });
    await a.start();
    await a.sql('CREATE TABLE t(id int primary key, v text)');
    await a.sql("INSERT INTO t SELECT i, 'a' FROM generate_series(1, 500) i");
    const b = await a.createStandby({ name: 'rj-parent-b', conf: { wal_keep_size: '64MB' } });
    const c = await a.createStandby({ name: 'rj-parent-c', conf: { wal_keep_size: '64MB' } });
    await a.checkpoint();
    await a.waitForReplay(b);
    await b.sql('CHECKPOINT'); // a restartpoint: b's pg_control points at a checkpoint on TL 1
    await a.switchWal();
    await a.sql("INSERT INTO t VALUES (501, 'a')");
    await a.switchWal();
    await a.sql("INSERT INTO t VALUES (502, 'a')");
    await a.waitForReplay(b);
    await a.waitForReplay(c);
    const ckpt = Number(await b.sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"));
    process.kill(ckpt, 'SIGSTOP');
    try {
      a.stop('immediate');
      await b.promote();
      await b.sql("INSERT INTO t VALUES (503, 'b')");
      // c follows b onto TL 2 (primary_conninfo is reloadable; recovery_target_timeline is latest)
      const conninfo = (await c.sql('SHOW primary_conninfo'))!.replace(/port=\d+/, `port=${b.port}`);
      await c.sql(`ALTER SYSTEM SET primary_conninfo = '${conninfo.replace(/'/g, "''")}'`);
      await c.sql('SELECT pg_reload_conf()');
      await waitFor(async () => (await c.sql("SELECT count(*) FROM t WHERE id = 503")) === '1', 60_000, 'c replays TL 2');
      await c.promote();
      await b.sql("INSERT INTO t VALUES (504, 'lost')");
      expect(await b.sql('SELECT count(*) FROM pg_stat_activity WHERE backend_type = \'checkpointer\'')).toBe('1');
    } finally {
      await b.kill9({ waitOrphans: false });
      try {
        process.kill(ckpt, 'SIGKILL');
      } catch {
        // gone with the postmaster
      }
    }
    await waitFor(async () => !processAlive(ckpt), 30_000, 'the stopped checkpointer gone');
    // the fork is on TL 2; no checkpoint record on TL 2 before it; the one before is in a TL 1 file
    const cHistory = readFileSync(join(c.walDir, '00000003.history'), 'utf8');
    expect(cHistory).toMatch(/^2\t/m);
    const bHistory = readFileSync(join(b.walDir, '00000002.history'), 'utf8');
    const sw = /^1\t([0-9A-F]+)\/([0-9A-F]+)/m.exec(bHistory)!;
    const switchSeg = ((BigInt('0x' + sw[1]) << 32n) | BigInt('0x' + sw[2])) >> 20n;
    const segName = (tli: number, seg: bigint) => `${tli.toString(16).toUpperCase().padStart(8, '0')}${'0'.repeat(8)}${seg.toString(16).toUpperCase().padStart(8, '0')}`;
    expect(existsSync(join(b.walDir, segName(1, switchSeg - 1n)))).toBe(true);
    expect(existsSync(join(b.walDir, segName(2, switchSeg - 1n)))).toBe(false);

    const cUrl = await startAgent('c3', c);
    const r = await rejoin({ pgdata: b.dataDir, source: cUrl, token: TOKEN, binDir: b.binDir });
    expect(r.path).toBe('rewind');
    expect(r.streaming).toBe(true);
    expect(r.lostTransactions.count).toBe(1);
    await c.waitForReplay(b);
    expect(await b.sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM t WHERE id > 500")).toBe('501,502,503');
    await b.cleanup();
    await c.cleanup();
    await a.cleanup();
  });
});

describe('pgha rejoin command line', () => {
  it('refuses a node of another cluster without --allow-reclone, and re-clones it with the flag', async () => {
    const primary = await PgCluster.init({ name: 'rc-primary', walSegSizeMB: 1 });
    await primary.start();
    await primary.sql('CREATE TABLE t AS SELECT generate_series(1, 500) a');
    const stranger = await PgCluster.init({ name: 'rc-stranger', walSegSizeMB: 1 });
    await stranger.start();
    await stranger.sql('CREATE TABLE mine(a int)');
    stranger.stop('fast');
    const url = await startAgent('primary', primary);
    const before = readdirSync(stranger.dataDir).sort();
    const args = ['rejoin', '--pgdata', stranger.dataDir, '--source', url, '--token', TOKEN, '--pg-bin', stranger.binDir, '--json'];
    const refused = await pgha(args);
    expect(refused.status, refused.stderr).toBe(1);
    expect(JSON.parse(refused.stdout)).toMatchObject({ path: 'refused' });
    expect(JSON.parse(refused.stdout).reason).toMatch(/different system identifier.*--allow-reclone/);
    expect(readdirSync(stranger.dataDir).sort()).toEqual(before);
    const plan = await pgha([...args, '--dry-run', '--allow-reclone']);
    expect(plan.status, plan.stderr).toBe(0);
    expect(JSON.parse(plan.stdout)).toMatchObject({ path: 'reclone', dryRun: true });
    expect(readdirSync(stranger.dataDir).sort()).toEqual(before);
    const done = await pgha([...args, '--allow-reclone']);
    expect(done.status, done.stderr).toBe(0);
    const out = JSON.parse(done.stdout);
    expect(out).toMatchObject({ path: 'reclone', streaming: true, lostTransactions: { count: 0, report: null } });
    expect(existsSync(join(out.movedAside, 'PG_VERSION'))).toBe(true); // moved aside, not deleted
    const clone = stranger;
    await waitFor(async () => (await clone.sql('SELECT count(*) FROM t')) === '500', 30_000, 'clone has the primary\'s rows');
    expect(await primary.sql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")).toBe('1');
    await clone.cleanup();
    await primary.cleanup();
  });
});
