/**
 * etcd unreachable, against a real etcd (test/support/etcd.ts):
 *  - a proxy's `dcs` status: reachable, cluster, revision (compared with etcd's own answer), the
 *    leader; cut off from etcd it is in safe mode — it keeps the primary it last read and decides
 *    nothing — and back to normal once etcd answers again;
 *  - DCS failsafe (agent-session.ts): a primary whose keep-alives go unanswered keeps running only
 *    while every other member confirms (they cannot reach etcd either, see no other primary, and
 *    promise not to be promoted for one TTL); one member silent → it fences before its last full
 *    round's cover ends; cut off from etcd alone (the members still reach it) → it fences before its
 *    lease can expire, exactly as without failsafe;
 *  - 3 etcd members, the raft leader killed: leadership, the primary lease, a decision and the
 *    watches carry on (quorum), nobody self-fences.
 * A process "cut off from etcd" talks to it through a TCP relay that black-holes traffic.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAgentConfig } from '../../src/agent/config.js';
import { buildAgent } from '../../src/agent/server.js';
import { AgentSession, type FailsafeAnswer, type FailsafeRequest } from '../../src/dcs/agent-session.js';
import { Coordinator } from '../../src/dcs/coordinator.js';
import type { PrimaryRecord } from '../../src/dcs/keys.js';
import { pg15BinDir, sleep, waitFor } from '../harness/cluster.js';
import { etcdGate, startEtcd, startEtcdCluster, type EtcdServer, type Gate } from '../support/etcd.js';

let etcd: EtcdServer;
const open: Array<{ stop(): Promise<void> }> = [];
let seq = 0;
const clusterName = () => `fs${process.pid}-${++seq}`;
const TTL = 2;
/** the failsafe's agents: a keep-alive late and a round of answers both fit before the fence margin */
const FS_TTL = 3;
/** the quorum test: the default TTL, which a raft leader change (≈ 1 s here) fits into */
const Q_TTL = 5;

beforeAll(async () => {
  etcd = await startEtcd();
}, 30_000);

afterAll(async () => {
  for (const x of open.splice(0).reverse()) await x.stop().catch(() => undefined);
  await etcd?.stop();
}, 60_000);

async function gate(port: number): Promise<Gate> {
  const g = await etcdGate(port);
  open.push(g);
  return g;
}

function coordinator(cluster: string, urls: string[], id: string, ttlSeconds = TTL): Coordinator {
  const c = new Coordinator({ endpoints: urls, cluster, ttlSeconds, id, admin: null });
  open.push(c);
  return c;
}

const target = (backend: string, member: string, timeline = 1): Pick<PrimaryRecord, 'backend' | 'member' | 'timeline'> => ({ backend, member, timeline });

/** etcd's current revision as etcd itself answers it (its JSON gateway), not through our client */
async function etcdRevision(url: string): Promise<string> {
  const r = await fetch(`${url}/v3/kv/range`, { method: 'POST', body: JSON.stringify({ key: Buffer.from('/').toString('base64') }) });
  return ((await r.json()) as { header: { revision: string } }).header.revision;
}

interface FakeNode {
  name: string;
  primary: boolean;
  fences: Array<{ at: number; reason: string }>;
  session: AgentSession;
}

/** an agent session for a node whose server is simulated by a flag (fencing clears it after 100 ms) */
function node(cluster: string, urls: string[], name: string, primary: boolean, failsafe?: AgentSession['o']['failsafe'], ttlSeconds = TTL): FakeNode {
  const n: FakeNode = { name, primary, fences: [], session: null as unknown as AgentSession };
  n.session = new AgentSession({
    endpoints: urls,
    cluster,
    ttlSeconds,
    member: { name, pg: `10.0.0.${name.slice(1)}:5432`, agent: `agent://${name}` },
    runningAsPrimary: async () => n.primary,
    fence: async (reason) => {
      n.fences.push({ at: Date.now(), reason });
      await sleep(100);
      n.primary = false;
    },
    failsafe,
  });
  open.push(n.session);
  n.session.start();
  return n;
}

describe('etcd unreachable: safe mode and DCS failsafe', () => {
  it("a proxy's dcs status; cut off from etcd it is in safe mode (last primary kept, no decision), then back to normal", async () => {
    const name = clusterName();
    const g = await gate(etcd.port);
    const a = coordinator(name, [g.url], 'a');
    await a.start();
    await waitFor(async () => a.isLeader, 10_000, 'a leads');
    expect(await a.bootstrap(target('10.0.0.1:5432', 'n1'))).toBe(true);
    await waitFor(async () => a.primary?.backend === '10.0.0.1:5432', 5_000, 'a follows the recorded primary');
    const real = await etcdRevision(etcd.url);
    await waitFor(async () => a.dcsStatus().revision === real, 5_000, `the revision etcd answers (${real})`);
    expect(a.dcsStatus()).toMatchObject({ reachable: true, cluster: name, safeMode: false, leader: 'a', id: 'a', isLeader: true });

    const t0 = Date.now();
    g.cut();
    await waitFor(async () => a.dcsStatus().safeMode && !a.isLeader, TTL * 1000 + 3000, 'safe mode, not leading');
    console.log(`cut → safe mode and stepped down after ${Date.now() - t0} ms (TTL ${TTL} s)`);
    expect(a.dcsStatus()).toMatchObject({ reachable: false, safeMode: true, isLeader: false });
    expect(a.dcsStatus().lastError).toBeTruthy();
    // the last primary read stays what it routes to; nothing can be decided
    expect(a.primary?.backend).toBe('10.0.0.1:5432');
    await expect(a.claim('failover', 'auto', '10.0.0.1:5432', target('10.0.0.2:5432', 'n2', 2))).rejects.toThrow(/not the leader/);

    g.heal();
    await waitFor(async () => !a.dcsStatus().safeMode && a.isLeader, 15_000, 'back: reachable and leading again');
    expect(a.dcsStatus()).toMatchObject({ reachable: true, leader: 'a' });
    // and deciding works again
    await a.claim('failover', 'manual', '10.0.0.1:5432', target('10.0.0.2:5432', 'n2', 2));
    expect((await a.store.history()).map((h) => h.to.backend)).toEqual(['10.0.0.1:5432', '10.0.0.2:5432']);
  }, 40_000);

  it('failsafe: cut off from etcd alone, the primary is told "no" by members that still reach etcd and fences before its lease can expire; etcd down for every agent, it keeps running while all confirm and fences once one is silent', async () => {
    const name = clusterName();
    const decider = coordinator(name, [etcd.url], 'decider');
    await decider.start();
    await waitFor(async () => decider.isLeader, 10_000, 'decider leads');
    await decider.bootstrap(target('10.0.0.1:5432', 'n1'));

    const gates = { n1: await gate(etcd.port), n2: await gate(etcd.port), n3: await gate(etcd.port) };
    const silent = new Set<string>();
    const byUrl = new Map<string, FakeNode>();
    const asked: FailsafeRequest[] = [];
    const ask = async (url: string, req: FailsafeRequest, timeoutMs: number): Promise<FailsafeAnswer> => {
      asked.push(req);
      const n = byUrl.get(url)!;
      if (silent.has(n.name)) {
        await sleep(timeoutMs);
        throw new Error(`${url}: no answer within ${timeoutMs} ms`);
      }
      return n.session.answerFailsafe(req);
    };
    // n1's configured peers are n2 only: n3 is asked because etcd lists it as a member
    const n1 = node(name, [gates.n1.url], 'n1', true, { peers: () => [{ name: 'n2', url: 'agent://n2' }], ask }, FS_TTL);
    const n2 = node(name, [gates.n2.url], 'n2', false, undefined, FS_TTL);
    const n3 = node(name, [gates.n3.url], 'n3', false, undefined, FS_TTL);
    for (const n of [n1, n2, n3]) byUrl.set(`agent://${n.name}`, n);
    await waitFor(async () => n1.session.holdsPrimaryLease && n2.session.registered && n3.session.registered, 10_000, 'n1 holds the primary lease, all registered');
    await sleep(FS_TTL * 250 + 200); // n1 read the member list at its next reconcile

    // -- (1) n1 alone cut off from etcd: n2 and n3 reach etcd and say no; n1 fences before its lease can expire
    let t0 = Date.now();
    gates.n1.cut();
    const r = await decider.waitReleased({ pg: '10.0.0.1:5432', member: 'n1' }, 10_000);
    const goneAt = Date.now();
    expect(r).toMatchObject({ released: true, held: true });
    expect(n1.fences).toHaveLength(1);
    expect(n1.fences[0].at + 100).toBeLessThan(goneAt);
    const round = n1.session.status().failsafe.lastRound!;
    expect(round.ok).toBe(false);
    expect(round.answers.map((x) => x.member).sort()).toEqual(['n2', 'n3']);
    for (const x of round.answers) expect(x.reason).toMatch(/etcd answers this member/);
    expect(n2.session.promotionBlocked()).toBeNull();
    console.log(`(1) n1 cut off from etcd alone: members said no, self-fence after ${n1.fences[0].at - t0} ms, lease gone on etcd after ${goneAt - t0} ms`);

    // back as the recorded primary
    gates.n1.heal();
    await waitFor(async () => n1.session.lease.valid && n1.session.registered, 10_000, 'n1 has a lease again');
    n1.primary = true;
    await waitFor(async () => n1.session.holdsPrimaryLease, 10_000, 'n1 holds the primary lease again');

    // -- (2) etcd unreachable for every agent: all confirm, n1 keeps running well past its lease
    const roundsBefore = n1.session.status().failsafe.rounds;
    t0 = Date.now();
    for (const g of Object.values(gates)) g.cut();
    await waitFor(async () => n1.session.status().failsafe.active, FS_TTL * 1000 + 2000, 'n1 kept running by its members');
    await sleep(3 * FS_TTL * 1000);
    expect(n1.fences, 'no fence while every member confirms').toHaveLength(1);
    expect(n1.primary).toBe(true);
    const st = n1.session.status();
    expect(st.healthy).toBe(false);
    expect(st.failsafe).toMatchObject({ enabled: true, active: true, lastRound: { ok: true } });
    expect(st.failsafe.rounds).toBeGreaterThan(roundsBefore + 3);
    expect(st.failsafe.lastRound!.answers.map((x) => x.member).sort()).toEqual(['n2', 'n3']);
    expect(asked.at(-1)).toEqual({ member: 'n1', pg: '10.0.0.1:5432' });
    // the members promised not to be promoted meanwhile
    for (const n of [n2, n3]) {
      expect(n.session.promotionBlocked()).toMatch(/confirmed to n1/);
      expect(n.session.status().failsafe.promisedTo).toBe('n1');
    }
    // a member that runs as a primary itself never confirms
    expect(await n1.session.answerFailsafe({ member: 'n9', pg: '10.0.0.9:5432' })).toMatchObject({ ok: false });
    expect((await n2.session.answerFailsafe({ member: 'n3', pg: '10.0.0.3:5432' })).reason).toMatch(/records 10\.0\.0\.1:5432/);

    // -- (3) one member silent: n1 fences before the cover of its last full round ends
    t0 = Date.now();
    silent.add('n3');
    await waitFor(async () => n1.fences.length === 2, FS_TTL * 1000 + 2000, 'n1 fences');
    const fence = n1.fences[1];
    const cover = n1.session.status().failsafe.until;
    console.log(`(3) n3 silent: n1 self-fenced after ${fence.at - t0} ms, ${cover - fence.at} ms before its last full round's cover ended`);
    expect(fence.reason).toMatch(/not renewed/);
    expect(fence.at + 100).toBeLessThan(cover);
    // n2's promise lasts until at least that cover, then ends: it may be promoted again
    expect(n2.session.promotionBlocked()).not.toBeNull();
    await waitFor(async () => n2.session.promotionBlocked() === null, FS_TTL * 1000 + 1000, "n2's promise ends");
    expect(Date.now()).toBeGreaterThanOrEqual(cover);
    for (const g of Object.values(gates)) g.heal();
  }, 60_000);

  it('configuration and bad input: --dcs-failsafe needs --etcd; POST dcs/failsafe checks its body, answers no while etcd answers, promises (and refuses node/promote) when it does not', async () => {
    const cfg = (flags: object, env: NodeJS.ProcessEnv = {}) => loadAgentConfig({ name: 'n1', pgdata: '/x', token: 'a-token-of-sixteen-chars', ...flags }, env, () => undefined);
    const e = { etcd: '127.0.0.1:2379', cluster: 'main' };
    expect(cfg({ ...e, dcsFailsafe: true }).dcsFailsafe).toBe(true);
    expect(cfg(e, { PGHA_DCS_FAILSAFE: '1' }).dcsFailsafe).toBe(true);
    expect(cfg(e).dcsFailsafe).toBe(false);
    expect(() => cfg({ dcsFailsafe: true })).toThrow('--dcs-failsafe needs --etcd URL[,URL…] and --cluster NAME');
    expect(() => cfg(e, { PGHA_DCS_FAILSAFE: 'maybe' })).toThrow('PGHA_DCS_FAILSAFE="maybe": expected 1/0, true/false, on/off or yes/no');

    // an agent (its PostgreSQL not running) on etcd through a relay, and one without etcd
    const dir = mkdtempSync(join(tmpdir(), 'pgha-failsafe-route-'));
    open.push({ stop: async () => rmSync(dir, { recursive: true, force: true }) });
    mkdirSync(join(dir, 'pg_wal'));
    const token = 'failsafe-route-token-0123';
    const g = await gate(etcd.port);
    const base = { host: '127.0.0.1', port: 0, pgdata: dir, token, peers: {}, pgBin: pg15BinDir(), pgPort: 1, pgHost: '127.0.0.1', replUser: 'postgres', autoRejoin: false };
    const withEtcd = buildAgent({ ...base, name: 'n2', etcd: [g.url], cluster: clusterName(), etcdTtl: FS_TTL }, { logger: false }).app;
    const without = buildAgent({ ...base, name: 'n3' }, { logger: false }).app;
    open.push({ stop: () => withEtcd.close() }, { stop: () => without.close() });
    // over real HTTP (the agent's error path lingers on the request's socket)
    const urls = new Map<typeof withEtcd, string>();
    for (const app of [withEtcd, without]) urls.set(app, await app.listen({ host: '127.0.0.1', port: 0 }));
    const post = async (app: typeof withEtcd, path: string, body: unknown, auth = true) => {
      const r = await fetch(`${urls.get(app)}${path}`, { method: 'POST', headers: { ...(auth ? { authorization: `Bearer ${token}` } : {}), 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const json = (await r.json()) as Record<string, unknown> & { message?: string; reason?: string; until?: number };
      return { statusCode: r.status, json: () => json };
    };
    const bad = await post(withEtcd, '/api/pg/v1/dcs/failsafe', { member: 'n1' });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().message).toBe('POST dcs/failsafe: expected a JSON body {"member": NAME, "pg": "HOST:PORT"}');
    const noDcs = await post(without, '/api/pg/v1/dcs/failsafe', { member: 'n1', pg: '10.0.0.1:5432' });
    expect(noDcs.statusCode).toBe(409);
    expect(noDcs.json()).toMatchObject({ error: 'NO_DCS' });
    const unauth = await post(without, '/api/pg/v1/dcs/failsafe', {}, false);
    expect(unauth.statusCode).toBe(401);
    // etcd answers this agent: no
    const no = await post(withEtcd, '/api/pg/v1/dcs/failsafe', { member: 'n1', pg: '10.0.0.1:5432' });
    expect(no.statusCode).toBe(200);
    expect(no.json()).toMatchObject({ ok: false, member: 'n2', until: null });
    expect(no.json().reason).toMatch(/etcd answers this member/);
    // etcd unreachable for it (and its server not a primary): ok, and no promotion for one TTL
    g.cut();
    const t0 = Date.now();
    const ok = await post(withEtcd, '/api/pg/v1/dcs/failsafe', { member: 'n1', pg: '10.0.0.1:5432' });
    expect(ok.json()).toMatchObject({ ok: true, member: 'n2', reason: null });
    expect(ok.json().until!).toBeGreaterThanOrEqual(t0 + FS_TTL * 1000);
    const promote = await post(withEtcd, '/api/pg/v1/node/promote', {});
    expect(promote.statusCode).toBe(409);
    expect(promote.json()).toMatchObject({ error: 'FAILSAFE_PROMISE' });
    expect(promote.json().message).toMatch(/confirmed to n1 \(a primary in DCS failsafe mode/);
    g.heal();
  }, 30_000);

  it('3 etcd members, the raft leader killed: leadership, the primary lease, decisions and watches carry on', async () => {
    const ec = await startEtcdCluster(3);
    open.push(ec);
    const name = clusterName();
    const a = coordinator(name, ec.urls, 'a', Q_TTL);
    const b = coordinator(name, ec.urls, 'b', Q_TTL);
    await Promise.all([a.start(), b.start()]);
    await waitFor(async () => a.isLeader !== b.isLeader && a.leader?.id === b.leader?.id && a.leader !== null, 10_000, 'one leader');
    const leader = a.isLeader ? a : b;
    const other = leader === a ? b : a;
    await leader.bootstrap(target('10.0.0.1:5432', 'n1'));
    const n1 = node(name, ec.urls, 'n1', true, undefined, Q_TTL);
    await waitFor(async () => n1.session.holdsPrimaryLease && other.primary?.backend === '10.0.0.1:5432', 10_000, 'n1 holds the primary lease; b follows');

    // the raft leader, as the members themselves say
    const statuses = await Promise.all(ec.members.map(async (m) => (await (await fetch(`${m.url}/v3/maintenance/status`, { method: 'POST', body: '{}' })).json()) as { header: { member_id: string }; leader: string }));
    const i = statuses.findIndex((s) => s.header.member_id === s.leader);
    expect(i).toBeGreaterThanOrEqual(0);
    const t0 = Date.now();
    await ec.members[i].kill();
    // for 2 TTLs: always exactly the same leader, n1 never loses its lease (no self-fence)
    const leaders = new Set<string>();
    while (Date.now() - t0 < 2 * Q_TTL * 1000) {
      for (const c of [a, b]) if (c.isLeader) leaders.add(c.id);
      expect(n1.fences).toEqual([]);
      await sleep(50);
    }
    expect([...leaders]).toEqual([leader.id]);
    expect(n1.session.lease.valid).toBe(true);
    expect(leader.dcsStatus()).toMatchObject({ reachable: true, safeMode: false });
    // a decision goes through and the other proxy sees it (its watch survived)
    await leader.claim('failover', 'manual', '10.0.0.1:5432', target('10.0.0.2:5432', 'n2', 2));
    await waitFor(async () => other.primary?.backend === '10.0.0.2:5432', 10_000, 'b sees the new primary');
    // n1 fences (the record moved) and releases the primary lease
    const rel = await leader.waitReleased({ pg: '10.0.0.1:5432', member: 'n1' }, 10_000);
    expect(rel.released).toBe(true);
    expect(n1.fences.map((f) => f.reason)).toEqual([expect.stringMatching(/records 10\.0\.0\.2:5432/)]);
    const history = await other.store.history();
    expect(history.map((h) => [h.kind, h.to.backend])).toEqual([
      ['bootstrap', '10.0.0.1:5432'],
      ['failover', '10.0.0.2:5432'],
    ]);
    console.log(`3 etcd members, raft leader m${i + 1} killed: same proxy leader, no self-fence, decision and watch fine (${Date.now() - t0} ms)`);
  }, 60_000);
});
