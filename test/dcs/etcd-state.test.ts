/**
 * src/dcs against a real etcd (test/support/etcd.ts): leader election, the compare-and-swap of the
 * primary refusing a stale or deposed decider, lease expiry and takeover, and the agent's primary
 * lease with its self-fence. A process "cut off from etcd" talks to it through a TCP relay that can
 * black-hole traffic (connections stay open, nothing passes), as a partition looks to a client.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentSession } from '../../src/dcs/agent-session.js';
import { Coordinator, DcsRefused } from '../../src/dcs/coordinator.js';
import { clusterKeys, parseEndpoints, type PrimaryRecord } from '../../src/dcs/keys.js';
import { ClusterStore } from '../../src/dcs/store.js';
import { loadAgentConfig } from '../../src/agent/config.js';
import { loadProxyConfig } from '../../proxy/config.js';
import { sleep, waitFor } from '../harness/cluster.js';
import { etcdGate, startEtcd, type EtcdServer, type Gate } from '../support/etcd.js';

let etcd: EtcdServer;
const open: Array<{ stop(): Promise<void> }> = [];
let seq = 0;
const clusterName = () => `t${process.pid}-${++seq}`;

beforeAll(async () => {
  etcd = await startEtcd();
}, 30_000);

afterAll(async () => {
  for (const x of open.splice(0).reverse()) await x.stop().catch(() => undefined);
  await etcd?.stop();
}, 30_000);

async function gate(targetPort: number): Promise<Gate> {
  const g = await etcdGate(targetPort);
  open.push(g);
  return g;
}

function coordinator(cluster: string, url: string, id: string, ttlSeconds = 2): Coordinator {
  const c = new Coordinator({ endpoints: [url], cluster, ttlSeconds, id, admin: `http://admin-of-${id}` });
  open.push(c);
  return c;
}

const target = (backend: string, member: string, timeline = 1): Pick<PrimaryRecord, 'backend' | 'member' | 'timeline'> => ({ backend, member, timeline });

describe('etcd state (src/dcs) against a real etcd', () => {
  it('parses endpoints and checks names', () => {
    expect(parseEndpoints('127.0.0.1:2379,https://etcd-2:2379/')).toEqual(['http://127.0.0.1:2379', 'https://etcd-2:2379']);
    expect(() => parseEndpoints('http://x')).toThrow(/port/);
    expect(() => clusterKeys('a/b')).toThrow(/cluster name/);
    expect(clusterKeys('main').historyEntry(3)).toBe('/pgha/main/history/00000003');
  });

  it('configuration: --etcd goes with --cluster, on the proxy and the agent', () => {
    const proxy = (extra: object) => loadProxyConfig({ listen: '127.0.0.1:0', backend: ['127.0.0.1:5432'], ...extra }, {});
    expect(proxy({}).etcd).toBeNull();
    expect(proxy({ etcd: 'http://127.0.0.1:2379,127.0.0.2:2379', cluster: 'main' }).etcd).toEqual({ endpoints: ['http://127.0.0.1:2379', 'http://127.0.0.2:2379'], cluster: 'main', ttlSeconds: 5 });
    expect(proxy({ etcd: ['http://e:2379'], cluster: 'c', etcdTtl: '9' }).etcd?.ttlSeconds).toBe(9);
    expect(() => proxy({ etcd: 'http://127.0.0.1:2379' })).toThrow(/--cluster/);
    expect(() => proxy({ cluster: 'main' })).toThrow(/--etcd/);
    expect(() => proxy({ etcd: 'http://127.0.0.1:2379', cluster: 'main', etcdTtl: '1' })).toThrow(/--etcd-ttl/);
    const agent = (flags: object, env: NodeJS.ProcessEnv = {}) => loadAgentConfig({ name: 'n1', pgdata: '/x', token: 'a-token-of-sixteen-chars', ...flags }, env, () => undefined);
    expect(agent({}).etcd).toBeUndefined();
    expect(agent({ etcd: '127.0.0.1:2379', cluster: 'main' })).toMatchObject({ etcd: ['http://127.0.0.1:2379'], cluster: 'main', etcdTtl: 5 });
    expect(agent({}, { PGHA_ETCD: 'http://e:2379', PGHA_CLUSTER: 'c', PGHA_ETCD_TTL: '7' })).toMatchObject({ etcd: ['http://e:2379'], cluster: 'c', etcdTtl: 7 });
    expect(() => agent({ etcd: 'http://127.0.0.1:2379' })).toThrow(/--cluster/);
    expect(() => agent({ cluster: 'main' })).toThrow(/--etcd/);
  });

  it('election: one leader of two, the other knows it; a leader that stops hands over at once', async () => {
    const name = clusterName();
    const a = coordinator(name, etcd.url, 'a');
    const b = coordinator(name, etcd.url, 'b');
    await Promise.all([a.start(), b.start()]);
    await waitFor(async () => a.isLeader !== b.isLeader && a.leader?.id === b.leader?.id && a.leader !== null, 10_000, 'one leader');
    const [leader, other] = a.isLeader ? [a, b] : [b, a];
    expect(other.leader).toMatchObject({ id: leader.id, admin: `http://admin-of-${leader.id}` });
    const t0 = Date.now();
    await leader.stop();
    await waitFor(async () => other.isLeader, 5_000, 'takeover after a resign');
    const ms = Date.now() - t0;
    console.log(`resign → takeover: ${ms} ms`);
    expect(ms).toBeLessThan(1500);
  }, 30_000);

  it('compare-and-swap: a stale decider and a deposed leader are refused; one history entry per change', async () => {
    const name = clusterName();
    const a = coordinator(name, etcd.url, 'a');
    await a.start();
    await waitFor(async () => a.isLeader, 10_000, 'a leads');
    expect(await a.bootstrap(target('10.0.0.1:5432', 'n1'))).toBe(true);
    // a second bootstrap (someone recorded one meanwhile) does nothing
    expect(await a.bootstrap(target('10.0.0.2:5432', 'n2'))).toBe(false);
    const store = new ClusterStore({ endpoints: [etcd.url], cluster: name });
    open.push({ stop: () => store.close() });
    const first = await store.primary();
    expect(first.value).toMatchObject({ backend: '10.0.0.1:5432', member: 'n1', by: 'a' });

    // the decision: n1 → n2
    await a.claim('failover', 'auto', '10.0.0.1:5432', target('10.0.0.2:5432', 'n2', 2));
    // a decider that read n1 before that (stale) cannot write its own choice over it
    const stale = await store.swapPrimary(first.raw, { ...target('10.0.0.3:5432', 'n3', 2), since: new Date().toISOString(), by: 'stale' }, { kind: 'failover', trigger: 'auto', from: first.value });
    expect(stale).toMatchObject({ ok: false, current: { backend: '10.0.0.2:5432' } });
    expect(stale.reason).toMatch(/records 10\.0\.0\.2:5432/);
    // nor can the leader itself claim from a primary that is no longer recorded
    await expect(a.claim('failover', 'auto', '10.0.0.1:5432', target('10.0.0.3:5432', 'n3', 2))).rejects.toThrow(DcsRefused);
    // a retry of the same decision is fine (idempotent)
    await a.claim('failover', 'auto', '10.0.0.1:5432', target('10.0.0.2:5432', 'n2', 2));

    // a deposed leader (its key gone, another leader in its place) is refused even with a fresh read
    const guard = a.election.guard()!;
    const b = coordinator(name, etcd.url, 'b');
    await b.start();
    await a.stop();
    await waitFor(async () => b.isLeader, 5_000, 'b leads');
    const fresh = await store.primary();
    const deposed = await store.swapPrimary(fresh.raw, { ...target('10.0.0.3:5432', 'n3', 3), since: new Date().toISOString(), by: 'a' }, { kind: 'failover', trigger: 'auto', from: fresh.value }, guard);
    expect(deposed).toMatchObject({ ok: false, reason: 'this proxy is no longer the leader' });
    // two deciders racing on the same read: exactly one wins
    const cur = await store.primary();
    const race = await Promise.all(
      ['x', 'y', 'z'].map((by, i) => store.swapPrimary(cur.raw, { ...target(`10.0.0.${4 + i}:5432`, `n${4 + i}`, 3), since: new Date().toISOString(), by }, { kind: 'failover', trigger: 'auto', from: cur.value })),
    );
    expect(race.filter((r) => r.ok)).toHaveLength(1);
    const history = await store.history();
    expect(history.map((h) => [h.n, h.kind, h.from?.backend ?? null, h.to.backend])).toEqual([
      [1, 'bootstrap', null, '10.0.0.1:5432'],
      [2, 'failover', '10.0.0.1:5432', '10.0.0.2:5432'],
      [3, 'failover', '10.0.0.2:5432', race.find((r) => r.ok)!.current!.backend],
    ]);
  }, 30_000);

  it('a leader cut off from etcd steps down before its lease expires there; the other takes over within the TTL', async () => {
    const name = clusterName();
    const g = await gate(etcd.port);
    const a = coordinator(name, g.url, 'a');
    await a.start();
    await waitFor(async () => a.isLeader, 10_000, 'a leads');
    const b = coordinator(name, etcd.url, 'b');
    await b.start();
    await waitFor(async () => b.leader?.id === 'a', 5_000, 'b sees a');
    const events: Array<[string, number]> = [];
    a.on('leader', (on: boolean) => events.push([`a ${on}`, Date.now()]));
    b.on('leader', (on: boolean) => events.push([`b ${on}`, Date.now()]));
    const t0 = Date.now();
    g.cut();
    await waitFor(async () => b.isLeader, 10_000, 'b takes over');
    const aDown = events.find((e) => e[0] === 'a false')?.[1];
    const bUp = events.find((e) => e[0] === 'b true')![1];
    console.log(`cut → a steps down ${aDown! - t0} ms, b leads ${bUp - t0} ms (TTL 2 s)`);
    expect(aDown).toBeDefined();
    expect(aDown!).toBeLessThan(bUp);
    expect(bUp - t0).toBeLessThan(2000 + 1500);
    // a stale decision of the cut-off leader cannot land even when it gets through later
    g.heal();
    await expect(a.claim('failover', 'auto', 'x:1', target('y:1', 'y'))).rejects.toThrow(/not the leader/);
    // back, it follows b
    await waitFor(async () => a.leader?.id === 'b' && !a.isLeader, 10_000, 'a follows b');
  }, 30_000);

  it("agent session: the recorded primary's agent holds the primary lease, releases it after fencing when the record moves, and fences itself when cut off — before the lease can expire", async () => {
    const name = clusterName();
    const a = coordinator(name, etcd.url, 'decider');
    await a.start();
    await waitFor(async () => a.isLeader, 10_000, 'decider leads');
    await a.bootstrap(target('10.0.0.1:5432', 'n1'));

    const node = { primary: true, fences: [] as Array<{ at: number; reason: string }> };
    const g = await gate(etcd.port);
    const agent = new AgentSession({
      endpoints: [g.url],
      cluster: name,
      ttlSeconds: 2,
      member: { name: 'n1', pg: '10.0.0.1:5432', agent: 'http://10.0.0.1:8010' },
      runningAsPrimary: async () => node.primary,
      fence: async (reason) => {
        node.fences.push({ at: Date.now(), reason });
        await sleep(100);
        node.primary = false;
      },
    });
    open.push(agent);
    agent.start();
    await waitFor(async () => agent.holdsPrimaryLease, 10_000, 'n1 holds the primary lease');
    await waitFor(async () => a.members.some((m) => m.name === 'n1' && m.agent === 'http://10.0.0.1:8010'), 5_000, 'n1 registered');
    expect((await a.store.primaryLease()).value).toMatchObject({ member: 'n1', pg: '10.0.0.1:5432' });

    // cut off: the agent fences its node before etcd lets the lease go; only then may a decider promote
    const t0 = Date.now();
    g.cut();
    const r = await a.waitReleased({ pg: '10.0.0.1:5432', member: 'n1' }, 10_000);
    const goneAt = Date.now();
    expect(r).toMatchObject({ released: true, held: true });
    expect(node.fences).toHaveLength(1);
    expect(node.fences[0].reason).toMatch(/not renewed/);
    console.log(`cut → self-fence ${node.fences[0].at - t0} ms, lease gone on etcd ${goneAt - t0} ms (TTL 2 s)`);
    expect(node.fences[0].at + 100).toBeLessThan(goneAt);
    expect(goneAt - t0).toBeLessThan(2000 + 1500);
    expect(agent.selfFences).toBe(1);

    // back on the network as the recorded primary again (restarted by hand): it takes the lease
    // (a server running as a primary while the lease is not valid again would be fenced again)
    g.heal();
    await waitFor(async () => agent.lease.valid && agent.registered, 10_000, 'n1 has a lease again');
    node.primary = true;
    await waitFor(async () => agent.holdsPrimaryLease, 10_000, 'n1 holds the primary lease again');
    // the decision moves the primary away: the agent fences its still-running server first, then releases
    const before = node.fences.length;
    await a.claim('failover', 'manual', '10.0.0.1:5432', target('10.0.0.2:5432', 'n2', 2));
    const released = await a.waitReleased({ pg: '10.0.0.1:5432', member: 'n1' }, 5_000);
    expect(released.released).toBe(true);
    expect(released.waitedMs).toBeLessThan(2000);
    expect(node.fences.length).toBe(before + 1);
    expect(node.fences.at(-1)!.reason).toMatch(/records 10\.0\.0\.2:5432/);
    expect(node.primary).toBe(false);
    // an agent that stops deletes its member entry
    await agent.stop();
    await waitFor(async () => !(await a.store.members()).some((m) => m.name === 'n1'), 5_000, 'member entry gone');
  }, 40_000);
});
