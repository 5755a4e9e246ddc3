/**
 * A failover that pooled clients between transactions do not see: two PostgreSQL 15 nodes with
 * their agents, pgha-proxy --auto-failover --pool-mode transaction in front. 20 node-postgres
 * clients each commit a transaction, then sit idle; one more client has a transaction in flight
 * (pg_sleep) when the primary's postmaster is killed with -9. Every idle client's next transaction
 * — started while there is no primary — waits for the promoted standby and commits there with no
 * error at all; only the client in flight gets one, with SQLSTATE 57P01 or 08006. Checked on the
 * new primary itself. A second proxy in session mode (native loop) watches the same nodes: its
 * sessions on the old primary end with 57P01/08006 (their state was there), never hang, and a new
 * session runs on the new primary.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanupAll, waitFor } from '../harness/cluster.js';
import { stopAgentProcesses } from '../support/agents.js';
import { HaCluster } from '../support/ha-cluster.js';
import { startProxy, type RunningProxy } from '../support/proxy.js';

let ha: HaCluster | null = null;
let sessionProxy: RunningProxy | null = null;

afterAll(async () => {
  await sessionProxy?.stop();
  await ha?.stop();
  await stopAgentProcesses();
  await cleanupAll();
}, 120_000);

describe('pooled clients across a failover', () => {
  it('kill -9 of the primary: 20 idle pooled clients commit their next transaction on the new primary with 0 errors; the one in flight gets 57P01/08006; sessions of a session-mode proxy end with 57P01/08006 and a new one runs on the new primary', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgha-pool-fo-'));
    const authFile = join(dir, 'userlist.txt');
    writeFileSync(authFile, '"postgres" "pool-secret"\n', { mode: 0o600 });
    ha = await HaCluster.start({ name: 'poolfo', nodes: 2, proxyArgs: ['--pool-mode', 'transaction', '--pool-size', '4', '--auth-file', authFile, '--primary-wait', '60000', '--backend-sslmode', 'disable'] });
    await ha.waitHealthy(60_000, 'initial cluster');
    const first = await ha.primary();
    await first.pg.sql('CREATE TABLE pooled_fo (id serial PRIMARY KEY, client int NOT NULL, round int NOT NULL)');
    const standby = ha.nodes.find((n) => n !== first)!;
    await first.pg.waitForReplay(standby.pg);

    const errors: Array<{ client: number; code?: string; message: string }> = [];
    const clients = await Promise.all(Array.from({ length: 20 }, async (_, i) => {
      const c = new pg.Client({ host: '127.0.0.1', port: ha!.proxy.port, user: 'postgres', password: 'pool-secret', database: 'postgres' });
      c.on('error', (e: Error & { code?: string }) => errors.push({ client: i, code: e.code, message: e.message }));
      await c.connect();
      return c;
    }));
    await Promise.all(clients.map(async (c, i) => {
      await c.query('BEGIN');
      await c.query('INSERT INTO pooled_fo (client, round) VALUES ($1, 1)', [i]);
      await c.query('COMMIT');
    }));
    // one client with a transaction in flight on the old primary
    const inFlight = new pg.Client({ host: '127.0.0.1', port: ha.proxy.port, user: 'postgres', password: 'pool-secret', database: 'postgres' });
    // the ended connection is reported as an 'error' event too (node-postgres)
    inFlight.on('error', () => undefined);
    await inFlight.connect();
    await inFlight.query('BEGIN');
    await inFlight.query('INSERT INTO pooled_fo (client, round) VALUES (-1, 1)');
    const sleeping = inFlight.query('SELECT pg_sleep(60)').then(
      () => null,
      (e: Error & { code?: string }) => e,
    );
    await waitFor(async () => (await first.pg.sql("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'")) === '1', 10_000, 'the transaction in flight');

    // session mode: three sessions between transactions on the old primary
    sessionProxy = await startProxy(ha.nodes.map((n) => n.pg.port), ['--pool-mode', 'session', '--pool-size', '4', '--auth-file', authFile, '--primary-wait', '60000', '--backend-sslmode', 'disable']);
    const sessionClient = () => new pg.Client({ host: '127.0.0.1', port: sessionProxy!.port, user: 'postgres', password: 'pool-secret', database: 'postgres' });
    const sessions = await Promise.all([0, 1, 2].map(async () => {
      const c = sessionClient();
      const ended = new Promise<{ code?: string }>((resolve) => c.on('error', (e) => resolve(e as { code?: string })));
      await c.connect();
      expect((await c.query('SELECT inet_server_port() AS port')).rows[0].port).toBe(first.pg.port);
      return { c, ended };
    }));
    expect((await sessionProxy.status()).pool?.native).toBe(3);

    await first.pg.kill9({ waitOrphans: false });
    // the next transaction of every idle client starts now, while there is no primary
    const t0 = Date.now();
    const results = await Promise.all(clients.map(async (c, i) => {
      try {
        await c.query('BEGIN');
        const r = await c.query('INSERT INTO pooled_fo (client, round) VALUES ($1, 2) RETURNING inet_server_port() AS port, pg_is_in_recovery() AS rec', [i]);
        await c.query('COMMIT');
        return r.rows[0] as { port: number; rec: boolean };
      } catch (e) {
        errors.push({ client: i, code: (e as { code?: string }).code, message: (e as Error).message });
        return null;
      }
    }));
    const waited = Date.now() - t0;
    const lost = await sleeping;
    console.log(`pooled failover: idle clients' next transactions committed after ${waited} ms; errors ${errors.length}; in flight: ${lost && (lost as { code?: string }).code} ${lost?.message}`);

    expect(errors).toEqual([]);
    const s = await ha.status();
    expect(s.primary).toBe(standby.address);
    // every one of them ran on the new primary, as a primary
    for (const r of results) expect(r).toEqual({ port: standby.pg.port, rec: false });
    expect(Number(await standby.pg.sql('SELECT count(*) FROM pooled_fo WHERE round = 2'))).toBe(20);
    expect(Number(await standby.pg.sql('SELECT count(DISTINCT client) FROM pooled_fo WHERE round = 2'))).toBe(20);
    // the transaction in flight: lost, with a clear SQLSTATE, never committed anywhere
    expect(lost).not.toBeNull();
    expect(['57P01', '08006']).toContain((lost as { code?: string }).code);
    expect(await standby.pg.sql('SELECT count(*) FROM pooled_fo WHERE client = -1')).toBe('0');
    // the pooled clients go on
    await Promise.all(clients.map(async (c) => expect((await c.query('SELECT 1 AS x')).rows[0].x).toBe(1)));
    await Promise.all(clients.map((c) => c.end()));

    // the sessions on the old primary were ended with a clear SQLSTATE; a new session runs on the new one
    for (const { ended } of sessions) expect(['57P01', '08006']).toContain((await ended).code);
    const next = sessionClient();
    await next.connect();
    await waitFor(async () => (await next.query('SELECT pg_is_in_recovery() AS rec')).rows[0].rec === false, 30_000, 'the session proxy on the new primary');
    expect((await next.query('INSERT INTO pooled_fo (client, round) VALUES (-2, 3) RETURNING inet_server_port() AS port')).rows[0].port).toBe(standby.pg.port);
    await next.end();
  });
});
