/**
 * The agent over HTTPS (issue: security, transport): `pgha agent --tls-cert --tls-key` serves TLS,
 * clients (other agents, pgha-proxy, the CLI) check its certificate against the cluster's CA
 * (`--agent-ca`, $PGHA_AGENT_CA), a client without that CA is refused, plain HTTP gets nothing.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { get as httpsGet } from 'node:https';
import { afterAll, describe, expect, it } from 'vitest';
import { AgentClient, setAgentCa } from '../../src/ship/client.js';
import { cleanupAll, freePort, PgCluster, waitFor } from '../harness/cluster.js';
import { PGHA, pgha } from '../support/cli.js';
import { makeCerts } from '../support/tls.js';

const TOKEN = 'agent-tls-test-token-0123456789';
let agent: ChildProcess | null = null;

afterAll(async () => {
  if (agent && agent.exitCode === null) {
    const gone = new Promise((r) => agent!.once('exit', r));
    agent.kill('SIGTERM');
    await gone;
  }
  setAgentCa(null);
  await cleanupAll();
});

function getHealth(url: string, ca?: Buffer): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const get = url.startsWith('https:') ? httpsGet : httpGet;
    const req = get(url, { ca, timeout: 3000 }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

describe('agent over HTTPS', () => {
  it('serves TLS; clients with the CA get in, without it they are refused; plain HTTP gets nothing', async () => {
    const certs = makeCerts('localhost');
    const ca = readFileSync(certs.caCert);
    const pgc = await PgCluster.init({ name: 'agent-tls' });
    await pgc.start();
    const port = await freePort();
    agent = spawn(
      process.execPath,
      [PGHA, 'agent', '--name', 'tls1', '--pgdata', pgc.dataDir, '--listen', `127.0.0.1:${port}`, '--pg-port', String(pgc.port), '--pg-bin', pgc.binDir, '--repl-user', 'postgres', '--tls-cert', certs.cert, '--tls-key', certs.key, '--no-auto-rejoin'],
      { env: { ...process.env, PGHA_TOKEN: TOKEN }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let log = '';
    agent.stdout!.on('data', (d) => (log += d));
    agent.stderr!.on('data', (d) => (log += d));
    const url = `https://127.0.0.1:${port}`;
    await waitFor(async () => (await getHealth(`${url}/health`, ca)).status === 200, 30_000, 'agent over https').catch((e) => {
      throw new Error(`${(e as Error).message}\n${log}`);
    });
    // the CLI and the library check the certificate against the CA
    setAgentCa(certs.caCert);
    expect(await new AgentClient(url, TOKEN).get<{ name: string }>('system')).toMatchObject({ name: 'tls1', running: true });
    const listed = await pgha(['slots', 'list', '--agent', url, '--json'], { PGHA_TOKEN: TOKEN, PGHA_AGENT_CA: certs.caCert });
    expect(listed.status, listed.stderr).toBe(0);
    // an unknown route: 401 without the token (nothing said), the documented error shape with it
    expect((await getHealth(`${url}/api/pg/v1/nope`, ca)).status).toBe(401);
    await expect(new AgentClient(url, TOKEN).get('nope')).rejects.toThrow(/HTTP 404 \{"error":"NOT_FOUND","message":"no route GET \/api\/pg\/v1\/nope"\}/);
    // without the CA: the system's trust store does not know it
    setAgentCa(null);
    await expect(new AgentClient(url, TOKEN).get('system')).rejects.toThrow(/self[- ]signed|unable to verify|certificate/i);
    const refused = await pgha(['slots', 'list', '--agent', url, '--json'], { PGHA_TOKEN: TOKEN, PGHA_AGENT_CA: '' });
    expect(refused.status).toBe(2);
    expect(refused.stderr).toMatch(/certificate/i);
    // plain HTTP to the TLS port: no answer of the agent's
    const plain = await getHealth(`http://127.0.0.1:${port}/health`).catch((e: Error) => ({ status: -1, body: e.message }));
    expect(plain.status === -1 || plain.status === 400).toBe(true);
    expect(plain.body).not.toMatch(/"ok":true/);
  }, 120_000);
});
