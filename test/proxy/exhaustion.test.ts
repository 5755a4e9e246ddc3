/**
 * Security: nobody who can merely connect may force a failover. A primary with max_connections=20;
 * clients that send a startup packet for a SCRAM role and never answer the challenge try to fill
 * it — through the proxy (which keeps every server below its client slots and drops stalled
 * authentications as the server would) and straight at the server (health checks then get 53300:
 * a server that answers is alive, and its agent confirms it). No promotion either way.
 */
import { connect, type Socket } from 'node:net';
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanupAll, PgCluster, sleep, waitFor } from '../harness/cluster.js';
import { startAgent, stopAgents } from '../support/agents.js';
import { duringHealthChecks, startProxy, type RunningProxy } from '../support/proxy.js';

const TOKEN = 'exhaustion-test-token-0123456789';
let proxy: RunningProxy | null = null;
const sockets: Socket[] = [];

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await proxy?.stop();
  await stopAgents();
  await cleanupAll();
});

/** a StartupMessage for `user`, then silence: the server waits for the SCRAM answer */
function stalledStartup(port: number, user: string): Promise<{ socket: Socket; firstReply: Promise<Buffer | null> }> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => {
      const params = Buffer.from(`user\0${user}\0database\0postgres\0\0`);
      const head = Buffer.alloc(8);
      head.writeInt32BE(8 + params.length, 0);
      head.writeInt32BE(196608, 4);
      s.write(Buffer.concat([head, params]));
      const firstReply = new Promise<Buffer | null>((r) => {
        s.once('data', (d: Buffer) => r(d));
        s.once('close', () => r(null));
      });
      resolve({ socket: s, firstReply });
    });
    s.on('error', () => undefined);
    s.once('error', reject);
    sockets.push(s);
  });
}

describe('connection exhaustion does not cause a failover', () => {
  it('through the proxy and straight at the server, under --auto-failover: the primary stays primary', async () => {
    const primary = await PgCluster.init({ name: 'exhaust', conf: { max_connections: 20, password_encryption: 'scram-sha-256', authentication_timeout: '60s' } });
    // the attacker's role authenticates with SCRAM; everyone else as the harness sets up
    const hba = join(primary.dataDir, 'pg_hba.conf');
    writeFileSync(hba, 'host all attacker 127.0.0.1/32 scram-sha-256\n' + readFileSync(hba, 'utf8'));
    await primary.start();
    await primary.sql("CREATE ROLE attacker LOGIN PASSWORD 'secret-secret'");
    const standby = await primary.createStandby({ name: 'exhaust-s' });
    const agents = [await startAgent('p', primary, TOKEN), await startAgent('s', standby, TOKEN)];
    proxy = await startProxy(
      [primary.port, standby.port],
      ['--health-interval', '200', '--health-timeout', '1000', '--health-retries', '3', '--health-retry-delay', '100', '--auto-failover', '--auth-timeout', '3000',
        '--agent', `127.0.0.1:${primary.port}=${agents[0]}`, '--agent', `127.0.0.1:${standby.port}=${agents[1]}`],
      { env: { PGHA_TOKEN: TOKEN } },
    );
    const name = `127.0.0.1:${primary.port}`;
    const capacity = (await proxy.status()).backends.find((b) => b.name === name)!.capacity;
    expect(capacity).toBe(20 - 3 - 2);

    // (a) 25 stalled authentications through the proxy: it lets `capacity` through and answers the
    // rest as the server would (53300) — the server keeps its reserved slots for the health checks
    const viaProxy = await Promise.all(Array.from({ length: 25 }, () => stalledStartup(proxy!.port, 'attacker')));
    const replies = await Promise.all(viaProxy.map((x) => x.firstReply));
    const refused = replies.filter((r) => r !== null && r[0] === 0x45 && r.toString('latin1').includes('53300'));
    const challenged = replies.filter((r) => r !== null && r[0] === 0x52); // AuthenticationSASL
    expect(challenged.length).toBe(capacity);
    expect(refused.length).toBe(25 - capacity!);
    // five health checks while the slots are held: each answered, the primary stays primary
    await duringHealthChecks(proxy, name, 5, (b, s) => {
      expect(b.sessions, 'the stalled authentications still hold their slots').toBe(capacity);
      expect(s.primary).toBe(name);
      expect(b).toMatchObject({ role: 'primary', failures: 0 });
    });
    // stalled authentications are dropped after --auth-timeout, as the server's authentication_timeout would
    await waitFor(async () => (await proxy!.status()).backends.find((b) => b.name === name)!.sessions === 0, 10_000, 'stalled sessions dropped');
    for (const x of viaProxy) x.socket.destroy();

    // (b) straight at the server, bypassing the proxy: every slot taken, the health checks get 53300
    const direct = await Promise.all(Array.from({ length: 25 }, () => stalledStartup(primary.port, 'attacker')));
    await Promise.all(direct.map((x) => x.firstReply));
    await waitFor(async () => /53300/.test((await proxy!.status()).backends.find((b) => b.name === name)!.lastError ?? ''), 10_000, 'health checks answered with 53300');
    const alive = (await (await fetch(`${agents[0]}/api/pg/v1/alive`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as { running: boolean; answers: boolean; detail: string };
    expect(alive).toMatchObject({ running: true, answers: true });
    expect(alive.detail).toMatch(/53300/);
    // ten health checks answered with 53300 (three failures would have made it down): no failover
    await duringHealthChecks(proxy, name, 10, (b, s) => {
      expect(b.lastError).toMatch(/53300/);
      expect(s.failovers).toEqual([]);
      expect(s.primary).toBe(name);
      expect(b).toMatchObject({ role: 'primary', failures: 0 });
    });
    expect(await standby.sql('SELECT pg_is_in_recovery()')).toBe('true');
    for (const x of direct) x.socket.destroy();
    // and a real failure is still a failure
    await primary.kill9();
    await waitFor(async () => (await proxy!.status()).primary === `127.0.0.1:${standby.port}`, 30_000, 'failover after a real kill');
  }, 180_000);
});
