/**
 * pgha-proxy's command line: --help, one-line errors with exit code 2 for bad configuration, exit 1
 * when it cannot listen, the JSON config file with flags winning, and --max-clients answered like
 * PostgreSQL's "too many clients".
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, PgCluster, waitFor } from '../harness/cluster.js';
import { PROXY_CLI, startProxy } from '../support/proxy.js';

const proxyCli = (args: string[]) => {
  const r = spawnSync(process.execPath, [PROXY_CLI, ...args], { encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
};

let primary: PgCluster;
beforeAll(async () => {
  primary = await PgCluster.init({ name: 'proxy-cli' });
  await primary.start();
}, 60_000);
afterAll(() => cleanupAll());

describe('pgha-proxy command line', () => {
  it('--help lists the contract flags', () => {
    const r = proxyCli(['--help']);
    expect(r.status).toBe(0);
    for (const f of ['--listen', '--backend', '--read-listen', '--health-interval', '--health-timeout', '--health-retries', '--auto-failover', '--agent', '--token', '--admin', '--health-user', '--health-password', '--health-database', '--tls-cert', '--tls-key', '--config']) {
      expect(r.stdout).toContain(f);
    }
  });

  it('bad configuration: one line on stderr, exit 2, nothing listens', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgha-proxy-cli-'));
    writeFileSync(join(dir, 'bad.json'), '{ not json');
    const cases: Array<[string[], RegExp]> = [
      [['--backend', '127.0.0.1:5432'], /--listen HOST:PORT is required/],
      [['--listen', '127.0.0.1:0'], /at least one --backend/],
      [['--listen', 'nowhere', '--backend', '127.0.0.1:5432'], /--listen "nowhere" must be HOST:PORT/],
      [['--listen', '127.0.0.1:0', '--backend', '127.0.0.1:99999'], /--backend "127.0.0.1:99999" must be HOST:PORT/],
      [['--listen', '127.0.0.1:0', '--backend', '127.0.0.1:5432', '--backend', '127.0.0.1:5432'], /is given twice/],
      [['--listen', '127.0.0.1:0', '--backend', '127.0.0.1:5432', '--agent', '127.0.0.1:5432=http://x:1'], /--agent needs --token/],
      [['--listen', '127.0.0.1:0', '--backend', '127.0.0.1:5432', '--agent', '127.0.0.1:6000=http://x:1', '--token', 't'], /127\.0\.0\.1:6000 is not one of the --backend addresses/],
      [['--listen', '127.0.0.1:0', '--backend', '127.0.0.1:5432', '--health-interval', 'soon'], /--health-interval must be an integer ≥ 10, got "soon"/],
      [['--listen', '127.0.0.1:0', '--backend', '127.0.0.1:5432', '--relay-threads', '0'], /--relay-threads must be an integer ≥ 1, got "0"/],
      // a Node timer fires at once past 2^31 − 1 ms: refused rather than a failover wait of zero
      [['--listen', '127.0.0.1:0', '--backend', '127.0.0.1:5432', '--primary-wait', '3000000000'], /--primary-wait must be at most 2147483647 ms, got 3000000000/],
      [['--listen', '127.0.0.1:0', '--backend', '127.0.0.1:5432', '--tls-cert', '/nonexistent.crt'], /--tls-cert and --tls-key go together/],
      [['--listen', '127.0.0.1:0', '--backend', '127.0.0.1:5432', '--tls-cert', '/nonexistent.crt', '--tls-key', '/nonexistent.key'], /--tls-cert \/nonexistent.crt: ENOENT/],
      [['--listen', '127.0.0.1:0', '--backend', '127.0.0.1:5432', '--backend-sslmode', 'verify-full'], /needs --backend-sslrootcert/],
      [['--config', join(dir, 'bad.json')], /config file .*bad\.json: /],
    ];
    for (const [args, re] of cases) {
      const r = proxyCli(args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(r.stderr, args.join(' ')).toMatch(re);
    }
  });

  it('the read-only port falls back to the primary when no standby is healthy', async () => {
    const p = await startProxy([primary.port], ['--backend-sslmode', 'disable'], { read: true });
    try {
      const c = new pg.Client({ host: '127.0.0.1', port: p.readPort!, user: 'postgres', database: 'postgres' });
      await c.connect();
      expect((await c.query("SELECT pg_is_in_recovery() AS r, current_setting('port') AS port")).rows[0]).toEqual({ r: false, port: String(primary.port) });
      await c.end();
      expect((await p.status()).clients.accepted.ro).toBe(1);
    } finally {
      await p.stop();
    }
  });

  it('SIGHUP leaves sessions and the process as they are (Node would exit); SIGTERM: open sessions get 57P01 "shutting down", the process exits 0', async () => {
    const p = await startProxy([primary.port], ['--backend-sslmode', 'disable']);
    const c = new pg.Client({ host: '127.0.0.1', port: p.port, user: 'postgres', database: 'postgres' });
    const ended = new Promise<Error & { code?: string }>((r) => c.on('error', r));
    await c.connect();
    await c.query('SELECT 1');
    p.proc.kill('SIGHUP');
    await waitFor(async () => /SIGHUP: nothing to reload/.test(p.log()), 10_000, 'the SIGHUP logged');
    expect((await c.query('SELECT 2 AS two')).rows[0].two).toBe(2);
    expect(p.proc.exitCode).toBe(null);
    const exited = new Promise<number | null>((r) => p.proc.once('exit', (code) => r(code)));
    p.proc.kill('SIGTERM');
    const err = await ended;
    expect([err.code, err.message]).toEqual(['57P01', 'terminating connection because pgha-proxy is shutting down']);
    expect(await exited).toBe(0);
  });

  it('a port already in use: exit 1 with the reason', async () => {
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
    const port = (busy.address() as { port: number }).port;
    const r = proxyCli(['--listen', `127.0.0.1:${port}`, '--backend', `127.0.0.1:${primary.port}`, '--log-level', 'error']);
    busy.close();
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/cannot start: .*EADDRINUSE/);
  });

  it('a JSON config file, flags winning over it; --max-clients refuses the next client with 53300', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgha-proxy-cli-'));
    const file = join(dir, 'proxy.json');
    writeFileSync(file, JSON.stringify({ backend: [`127.0.0.1:${primary.port}`], healthInterval: 250, maxClients: 2, healthUser: 'postgres' }));
    const p = await startProxy([], ['--config', file, '--health-interval', '300']);
    try {
      const s = await p.status();
      expect(s.primary).toBe(`127.0.0.1:${primary.port}`);
      expect(s.health).toEqual({ intervalMs: 300, timeoutMs: 2000, retries: 3, retryDelayMs: 100 });
      const clients = [0, 1].map(() => new pg.Client({ host: '127.0.0.1', port: p.port, user: 'postgres', database: 'postgres' }));
      for (const c of clients) await c.connect();
      const third = new pg.Client({ host: '127.0.0.1', port: p.port, user: 'postgres', database: 'postgres' });
      await expect(third.connect()).rejects.toMatchObject({ code: '53300', message: expect.stringMatching(/too many clients already \(pgha-proxy --max-clients 2\)/) });
      for (const c of clients) await c.end();
    } finally {
      await p.stop();
    }
  });

  it('a config file holding a token that others may read is used, with a warning; /sessions then needs the token', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgha-proxy-cli-'));
    const cfgFile = join(dir, 'proxy.json');
    writeFileSync(cfgFile, JSON.stringify({ token: 'config-file-token-0123456789' }), { mode: 0o644 });
    const p = await startProxy([primary.port], ['--config', cfgFile]);
    try {
      expect(p.log()).toMatch(/config file with a secret .*proxy\.json is readable by others \(mode 0644\): chmod 600 it/);
      expect((await fetch(`http://127.0.0.1:${p.adminPort}/sessions`)).status).toBe(401);
      const ok = await fetch(`http://127.0.0.1:${p.adminPort}/sessions`, { headers: { authorization: 'Bearer config-file-token-0123456789' } });
      expect(ok.status).toBe(200);
      expect(await ok.json()).toEqual([]);
      expect((await fetch(`http://127.0.0.1:${p.adminPort}/status`)).status).toBe(200);
    } finally {
      await p.stop();
    }
    chmodSync(cfgFile, 0o600);
    const quiet = await startProxy([primary.port], ['--config', cfgFile]);
    try {
      expect(quiet.log()).not.toMatch(/readable by others/);
    } finally {
      await quiet.stop();
    }
  });

  it('secrets from files: --token-file and --admin-token-file are used, --health-password-file read; a missing file is one line and exit 2', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgha-proxy-cli-'));
    writeFileSync(join(dir, 'token'), 'token-from-a-file-0123456789\n', { mode: 0o600 });
    writeFileSync(join(dir, 'admin'), 'admin-from-a-file-0123456789\n', { mode: 0o600 });
    writeFileSync(join(dir, 'pw'), 'unused-with-trust\n', { mode: 0o640 });
    const p = await startProxy([primary.port], ['--token-file', join(dir, 'token'), '--admin-token-file', join(dir, 'admin'), '--health-password-file', join(dir, 'pw')]);
    try {
      const sessions = (token: string) => fetch(`http://127.0.0.1:${p.adminPort}/sessions`, { headers: { authorization: `Bearer ${token}` } });
      expect((await sessions('admin-from-a-file-0123456789')).status).toBe(200);
      expect((await sessions('token-from-a-file-0123456789')).status).toBe(401);
      expect(p.log()).toMatch(/--health-password-file .*pw is readable by others \(mode 0640\)/);
      expect(p.log()).not.toMatch(/token-from-a-file|admin-from-a-file|unused-with-trust/);
    } finally {
      await p.stop();
    }
    const r = proxyCli(['--listen', '127.0.0.1:0', '--backend', `127.0.0.1:${primary.port}`, '--health-password-file', join(dir, 'nope')]);
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toEqual([`pgha-proxy: --health-password-file ${join(dir, 'nope')}: ENOENT`]);
  });

  it('--version answers like pgha --version; unknown admin routes answer {"error":"NOT_FOUND"}', async () => {
    const v = proxyCli(['--version']);
    expect(v.status).toBe(0);
    expect(v.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    const p = await startProxy([primary.port]);
    try {
      const r = await fetch(`http://127.0.0.1:${p.adminPort}/nope?x=1`);
      expect(r.status).toBe(404);
      expect(await r.json()).toEqual({ error: 'NOT_FOUND', message: 'no route GET /nope' });
    } finally {
      await p.stop();
    }
  });
});
