/** `pgha agent` as a process: config file < environment < flags, token required, clean shutdown. */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, freePort, PgCluster, waitFor } from '../harness/cluster.js';
import { PGHA, pgha } from '../support/cli.js';

const TOKEN = 'process-token-0123456789';
let c: PgCluster;
const dir = mkdtempSync(join(tmpdir(), 'pgha-agent-'));

beforeAll(async () => {
  c = await PgCluster.init({ name: 'agent-proc', walSegSizeMB: 1 });
  await c.start();
});
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await cleanupAll();
});

describe('pgha agent process', () => {
  it('takes its settings from a file, the environment and flags (later wins) and serves with the token', async () => {
    const port = await freePort();
    const config = join(dir, 'agent.json');
    writeFileSync(config, JSON.stringify({ name: 'from-file', pgdata: c.dataDir, token: 'file-token-that-is-overridden', listen: '127.0.0.1:1', pgBin: c.binDir }));
    const child = spawn(process.execPath, [PGHA, 'agent', '--config', config, '--listen', `127.0.0.1:${port}`, '--pg-port', String(c.port), '--repl-user', 'postgres'], {
      env: { ...process.env, PGHA_TOKEN: TOKEN, PGHA_NODE_NAME: 'from-env', PGHA_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let exited: number | null = null;
    child.on('exit', (code) => (exited = code ?? -1));
    try {
      await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/health`)).ok, 20_000, 'agent listening');
      // no job yet; the automatic rejoin is on by default
      expect(await (await fetch(`http://127.0.0.1:${port}/health`)).json()).toEqual({ ok: true, name: 'from-env', job: null, autoRejoin: true });
      expect((await fetch(`http://127.0.0.1:${port}/api/pg/v1/instance/current`)).status).toBe(401);
      const r = await fetch(`http://127.0.0.1:${port}/api/pg/v1/instance/current`, { headers: { authorization: `Bearer ${TOKEN}` } });
      expect(await r.json()).toEqual({ 'from-env': 'single' });
    } finally {
      child.kill('SIGTERM');
      await waitFor(async () => exited !== null, 10_000, 'agent exit');
    }
    expect(exited).toBe(0);
  });

  it('refuses a missing or short token and a bad listen address with exit 2 and one line', async () => {
    const short = await pgha(['agent', '--pgdata', c.dataDir, '--name', 'x', '--token', 'short']);
    expect(short.status).toBe(2);
    expect(short.stderr.trim()).toMatch(/^pgha: error: token missing or shorter than 16 characters/);
    const listen = await pgha(['agent', '--pgdata', c.dataDir, '--name', 'x', '--token', TOKEN, '--listen', 'nowhere']);
    expect(listen.status).toBe(2);
    expect(listen.stderr.trim()).toMatch(/^pgha: error: listen address "nowhere" must be HOST:PORT$/);
  });

  it('turns the automatic rejoin off with --no-auto-rejoin (and the environment), and reads its settings', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, [PGHA, 'agent', '--pgdata', c.dataDir, '--name', 'n', '--listen', `127.0.0.1:${port}`, '--pg-port', String(c.port), '--no-auto-rejoin'], {
      env: { ...process.env, PGHA_TOKEN: TOKEN, PGHA_LOG_LEVEL: 'warn', PGHA_AUTO_REJOIN: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let exited: number | null = null;
    child.on('exit', (code) => (exited = code ?? -1));
    try {
      await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/health`)).ok, 20_000, 'agent listening');
      expect(await (await fetch(`http://127.0.0.1:${port}/health`)).json()).toEqual({ ok: true, name: 'n', job: null, autoRejoin: false });
      const jobs = await fetch(`http://127.0.0.1:${port}/api/pg/v1/jobs`, { headers: { authorization: `Bearer ${TOKEN}` } });
      expect(await jobs.json()).toEqual({ jobs: [] });
    } finally {
      child.kill('SIGTERM');
      await waitFor(async () => exited !== null, 10_000, 'agent exit');
    }

    const { loadAgentConfig } = await import('../../src/agent/config.js');
    const base = { pgdata: c.dataDir, name: 'n', token: TOKEN };
    const config = join(dir, 'auto.json');
    writeFileSync(config, JSON.stringify({ autoRejoin: false, autoRejoinReclone: true, proxies: ['http://p1:8008/'] }));
    expect(loadAgentConfig(base, {})).toMatchObject({ autoRejoin: true, autoRejoinReclone: false, proxies: [], autoRejoinIntervalMs: 2000 });
    expect(loadAgentConfig({ ...base, config }, {})).toMatchObject({ autoRejoin: false, autoRejoinReclone: true, proxies: ['http://p1:8008'] });
    expect(loadAgentConfig({ ...base, config }, { PGHA_AUTO_REJOIN: '1', PGHA_AUTO_REJOIN_RECLONE: 'off', PGHA_PROXIES: 'p2:1,http://p3:2' })).toMatchObject({
      autoRejoin: true,
      autoRejoinReclone: false,
      proxies: ['http://p2:1', 'http://p3:2'],
    });
    expect(loadAgentConfig({ ...base, autoRejoin: false, autoRejoinReclone: true, proxy: ['127.0.0.1:9'] }, { PGHA_AUTO_REJOIN: 'yes' })).toMatchObject({
      autoRejoin: false,
      autoRejoinReclone: true,
      proxies: ['http://127.0.0.1:9'],
    });
    expect(() => loadAgentConfig(base, { PGHA_AUTO_REJOIN: 'maybe' })).toThrow(/PGHA_AUTO_REJOIN="maybe"/);
  });
});
