/**
 * Failover through pgha-proxy with real PostgreSQL 15 clusters and a client writing continuously:
 * kill -9 of the primary postmaster with automatic failover (synchronous replication: zero
 * acknowledged commits lost; asynchronous: counted and reported), a switchover by hand with
 * `pg_ctl promote` (the proxy follows, the old primary is fenced), and a primary merely paused by
 * SIGSTOP for less than the health timeout (no promotion).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, PgCluster, sleep, waitFor } from '../harness/cluster.js';
import { startAgent, stopAgents } from '../support/agents.js';
import { duringHealthChecks, startProxy, type RunningProxy } from '../support/proxy.js';
import { LEDGER_DDL, WriteLoad } from '../support/write-load.js';

const TOKEN = 'failover-test-token';
const FAST_HEALTH = ['--health-interval', '200', '--health-timeout', '1000', '--health-retries', '3', '--health-retry-delay', '100'];

let proxy: RunningProxy | null = null;

afterEach(async () => {
  await proxy?.stop();
  proxy = null;
  await stopAgents();
  await cleanupAll();
});

async function makeCluster(name: string, standbys: number, sync: boolean): Promise<{ primary: PgCluster; standbys: PgCluster[] }> {
  const primary = await PgCluster.init({ name });
  await primary.start();
  await primary.sql(LEDGER_DDL);
  const list: PgCluster[] = [];
  for (let i = 1; i <= standbys; i++) {
    list.push(await primary.createStandby({ name: `${name}-s${i}`, conf: { cluster_name: `s${i}`, wal_retrieve_retry_interval: '200ms' } }));
  }
  if (sync) {
    // set once the standbys stream (a commit before that would wait for them), on every node as an
    // operator's configuration would be, so the promoted standby keeps synchronous commit
    // (synchronous_commit is on by default)
    const names = `ANY 1 (${list.map((_, i) => `s${i + 1}`).join(', ')})`;
    for (const c of [primary, ...list]) {
      await c.sql(`ALTER SYSTEM SET synchronous_standby_names = '${names}'`);
      await c.sql('SELECT pg_reload_conf()');
    }
  }
  if (sync) await waitFor(async () => Number(await primary.sql("SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')")) === standbys, 30_000, 'synchronous standbys');
  return { primary, standbys: list };
}

const name = (c: PgCluster) => `127.0.0.1:${c.port}`;

describe('pgha-proxy failover', () => {
  it('kill -9 of the primary, synchronous replication, agents: promoted, fenced, re-pointed, zero acknowledged commits lost', async () => {
    const { primary, standbys } = await makeCluster('fo-sync', 2, true);
    const agents = await Promise.all([primary, ...standbys].map((c, i) => startAgent(`n${i}`, c, TOKEN)));
    proxy = await startProxy(
      [standbys[1].port, primary.port, standbys[0].port],
      [...FAST_HEALTH, '--auto-failover', '--token', TOKEN, ...[primary, ...standbys].flatMap((c, i) => ['--agent', `${name(c)}=${agents[i]}`])],
    );
    const load = new WriteLoad(proxy.port, { workers: 2, txPerSecond: 100 });
    load.start();
    await sleep(2000);
    const killedAt = Date.now();
    await primary.kill9();
    await waitFor(async () => (await proxy!.status()).primary !== null && (await proxy!.status()).primary !== name(primary), 30_000, 'a new primary').catch((e) => {
      throw new Error(`${(e as Error).message}\n${proxy!.log().slice(-4000)}`);
    });
    await sleep(3000);
    const report = await load.stop();
    const s = await proxy.status();
    const winner = standbys.find((c) => name(c) === s.primary)!;
    const other = standbys.find((c) => c !== winner)!;
    expect(winner).toBeDefined();
    expect(s.backends.find((b) => b.name === name(primary))?.role).toBe('fenced');
    expect(s.failovers).toHaveLength(1);
    expect(s.failovers[0]).toMatchObject({ from: name(primary), to: name(winner), via: 'agent', fenced: 'agent', repointed: [name(other)], error: null });
    expect(s.timeline).toBe(2);
    // fenced through the agent: it would come back as a standby, and the agent refuses to start it as a primary
    expect(existsSync(join(primary.dataDir, 'standby.signal'))).toBe(true);
    expect(existsSync(join(primary.dataDir, 'pgha.fenced'))).toBe(true);
    // the other standby streams from the new primary (it is the synchronous one that lets commits through)
    expect(await other.sql('SELECT status FROM pg_stat_wal_receiver')).toBe('streaming');
    expect(await other.sql("SELECT setting FROM pg_settings WHERE name = 'primary_conninfo'")).toContain(`port='${winner.port}'`);
    const v = await load.verify(winner);
    const firstWrite = report.firstCommitAfter(killedAt);
    console.log(`sync kill -9: first acknowledged commit ${firstWrite} ms after the kill; ${report.commits} commits, ${report.errors} client errors ${JSON.stringify(report.errorKinds)}; acked rows ${v.ackedRows}, deletes ${v.ackedDeletes}, lost ${v.lost}; failover ${s.failovers[0].ms} ms`);
    expect(v.ackedRows).toBeGreaterThan(150);
    expect(v.lost).toBe(0);
    expect(firstWrite).not.toBeNull();
  });

  it('kill -9 of the primary, asynchronous replication, no agents: pg_promote over SQL; lost commits counted', async () => {
    const { primary, standbys } = await makeCluster('fo-async', 1, false);
    proxy = await startProxy([primary.port, standbys[0].port], [...FAST_HEALTH, '--auto-failover']);
    const load = new WriteLoad(proxy.port, { workers: 2, txPerSecond: 100 });
    load.start();
    await sleep(2000);
    const killedAt = Date.now();
    await primary.kill9();
    await waitFor(async () => (await proxy!.status()).primary === name(standbys[0]), 30_000, 'standby promoted');
    await sleep(2000);
    const report = await load.stop();
    const s = await proxy.status();
    expect(s.failovers[0]).toMatchObject({ from: name(primary), to: name(standbys[0]), via: 'sql', fenced: 'proxy-only', error: null });
    expect(s.backends.find((b) => b.name === name(primary))?.role).toBe('fenced');
    const v = await load.verify(standbys[0]);
    console.log(`async kill -9: first acknowledged commit ${report.firstCommitAfter(killedAt)} ms after the kill; ${report.commits} commits, ${report.errors} client errors; acked rows ${v.ackedRows}, lost ${v.lost} ${JSON.stringify(v.lostIds)}`);
    expect(v.ackedRows).toBeGreaterThan(150);
    expect(report.firstCommitAfter(killedAt)).not.toBeNull();
    // the old primary restarted by someone: it comes back as a primary on timeline 1 and stays fenced
    await primary.start();
    await waitFor(async () => (await proxy!.status()).backends.find((b) => b.name === name(primary))!.lastError === null, 10_000, 'the restarted old primary answering health checks');
    await duringHealthChecks(proxy, name(primary), 3, (b, after) => {
      expect(after.primary).toBe(name(standbys[0]));
      expect(b).toMatchObject({ role: 'fenced', timeline: 1 });
    });
    const c = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'postgres', database: 'postgres' });
    c.on('error', () => undefined);
    await c.connect();
    expect((await c.query("SELECT current_setting('port') AS port")).rows[0].port).toBe(String(standbys[0].port));
    await c.end();
  });

  it('switchover by hand (pg_ctl promote): the proxy follows within a health period, sessions on the old primary get 57P01, old primary fenced', async () => {
    const { primary, standbys } = await makeCluster('fo-switch', 1, false);
    const agents = await Promise.all([primary, standbys[0]].map((c, i) => startAgent(`n${i}`, c, TOKEN)));
    proxy = await startProxy([primary.port, standbys[0].port], [...FAST_HEALTH, '--token', TOKEN, '--agent', `${name(primary)}=${agents[0]}`, '--agent', `${name(standbys[0])}=${agents[1]}`]);
    const idle = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'postgres', database: 'postgres' });
    const ended = new Promise<Error & { code?: string }>((r) => idle.on('error', r));
    await idle.connect();
    const load = new WriteLoad(proxy.port, { workers: 1, txPerSecond: 50 });
    load.start();
    await sleep(1000);
    await primary.waitForReplay(standbys[0]);
    const promotedAt = Date.now();
    await standbys[0].promote();
    const err = await ended;
    expect(err.code).toBe('57P01');
    expect(err.message).toMatch(/terminating connection because of failover/);
    await waitFor(async () => (await proxy!.status()).primary === name(standbys[0]), 10_000, 'proxy follows');
    const followedMs = Date.now() - promotedAt;
    await sleep(1500);
    const report = await load.stop();
    const s = await proxy.status();
    expect(s.backends.find((b) => b.name === name(primary))).toMatchObject({ role: 'fenced' });
    // fenced through its agent as well: stopped, standby.signal and the marker written
    await waitFor(async () => existsSync(join(primary.dataDir, 'pgha.fenced')), 10_000, 'old primary fenced by its agent');
    await waitFor(async () => !primary.isRunning(), 30_000, 'old primary stopped');
    expect(existsSync(join(primary.dataDir, 'standby.signal'))).toBe(true);
    // commits the old primary acknowledged between the promotion and the proxy noticing it are not on
    // the new timeline: inherent to promoting by hand without stopping the old primary first
    const v = await load.verify(standbys[0]);
    console.log(`switchover: proxy routed to the new primary ${followedMs} ms after pg_ctl promote returned; first commit ${report.firstCommitAfter(promotedAt)} ms; ${report.errors} client errors; acknowledged by the old primary after the promotion and lost: ${v.lost}`);
    expect(s.failovers).toHaveLength(0);
  });

  it('a primary paused by SIGSTOP for less than the health timeout is not failed over', async () => {
    const { primary, standbys } = await makeCluster('fo-pause', 1, false);
    proxy = await startProxy([primary.port, standbys[0].port], ['--health-interval', '200', '--health-timeout', '2000', '--health-retries', '2', '--auto-failover']);
    const load = new WriteLoad(proxy.port, { workers: 1, txPerSecond: 50 });
    load.start();
    await sleep(1000);
    const pids = [primary.pid!, ...(await import('node:child_process')).execFileSync('pgrep', ['-P', String(primary.pid)], { encoding: 'utf8' }).trim().split('\n').map(Number)];
    // a child may exit between the listing and the signal (an autovacuum worker): only the
    // postmaster must be there
    const signal = (sig: NodeJS.Signals) => {
      for (const p of pids) {
        try {
          process.kill(p, sig);
        } catch (e) {
          if (p === primary.pid || (e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
        }
      }
    };
    signal('SIGSTOP');
    await sleep(1500);
    signal('SIGCONT');
    // five health checks after it resumes: it answers, and nobody failed it over
    await duringHealthChecks(proxy, name(primary), 5, (_b, s) => {
      expect(s.primary).toBe(name(primary));
      expect(s.failovers).toHaveLength(0);
    });
    const report = await load.stop();
    const s = await proxy.status();
    expect(s.primary).toBe(name(primary));
    expect(s.failovers).toHaveLength(0);
    expect(s.timeline).toBe(1);
    expect(await standbys[0].sql('SELECT pg_is_in_recovery()')).toBe('true');
    expect(report.errors).toBe(0);
    const v = await load.verify(primary);
    expect(v.lost).toBe(0);
  });

  it('without member slots, a re-pointed standby finds the slot it already streams through on the new primary', async () => {
    const primary = await PgCluster.init({ name: 'fo-slots' });
    await primary.start();
    await primary.sql(LEDGER_DDL);
    // as `pgha slots sync` or an operator leaves them: each standby streams through a physical slot
    const s1 = await primary.createStandby({ name: 'fo-slots-s1', slot: 'pgha_s1', conf: { wal_retrieve_retry_interval: '200ms' } });
    const s2 = await primary.createStandby({ name: 'fo-slots-s2', slot: 'pgha_s2', conf: { wal_retrieve_retry_interval: '200ms' } });
    proxy = await startProxy([primary.port, s1.port, s2.port], [...FAST_HEALTH, '--auto-failover', '--no-member-slots']);
    await primary.waitForReplay(s1);
    await primary.waitForReplay(s2);
    await primary.kill9();
    await waitFor(async () => {
      const st = await proxy!.status();
      return st.primary !== null && st.primary !== name(primary) && !st.failoverRunning;
    }, 30_000, 'failover');
    const st = await proxy.status();
    const winner = [s1, s2].find((c) => name(c) === st.primary)!;
    const other = winner === s1 ? s2 : s1;
    const otherSlot = other === s1 ? 'pgha_s1' : 'pgha_s2';
    expect(st.failovers[0]).toMatchObject({ error: null, slots: [otherSlot], repointed: [name(other)] });
    expect(st.memberSlots).toBe(false);
    await waitFor(async () => (await other.sql('SELECT status FROM pg_stat_wal_receiver')) === 'streaming', 30_000, 'the other standby streams from the new primary');
    expect(await winner.sql(`SELECT active FROM pg_replication_slots WHERE slot_name = '${otherSlot}'`)).toBe('true');
    expect(await other.sql('SHOW primary_slot_name')).toBe(otherSlot);
  });
});
