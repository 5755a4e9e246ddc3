/**
 * Real clients through pgha-proxy against a real PostgreSQL 15 primary + standby: psql, node-postgres
 * (simple, extended, prepared), pgbench in all three protocol modes, COPY both ways, LISTEN/NOTIFY,
 * rows over 1 MiB, a huge result read slowly (the proxy must not buffer it), a cursor, a cancel that
 * reaches the right server, SCRAM and MD5 passed through, TLS towards clients (every sslmode) and
 * towards the server, the read-only port, /status, /metrics and `pgha status`.
 */
import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { serialize } from 'pg-protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, PgCluster, sleep, waitFor } from '../harness/cluster.js';
import { startProxy, type RunningProxy } from '../support/proxy.js';
import { makeCerts, type TestCerts, serveTls } from '../support/tls.js';
import { rawSession } from '../support/raw-client.js';
import { pgha } from '../support/cli.js';

const run = promisify(execFile);

let primary: PgCluster;
let standby: PgCluster;
let proxy: RunningProxy;
let plainProxy: RunningProxy;
let certs: TestCerts;

const psqlBin = () => join(primary.clientBinDir, 'psql');

async function psql(conn: string, sql: string, env: NodeJS.ProcessEnv = {}): Promise<string> {
  const { stdout } = await run(psqlBin(), ['-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', conn, '-c', sql], { env: { ...process.env, ...env }, maxBuffer: 64 << 20 });
  return stdout.trim();
}

function psqlFails(conn: string, sql: string, env: NodeJS.ProcessEnv = {}): string {
  const r = spawnSync(psqlBin(), ['-X', '-At', '-d', conn, '-c', sql], { env: { ...process.env, ...env }, encoding: 'utf8' });
  expect(r.status, `psql should fail: ${r.stdout}`).not.toBe(0);
  return r.stderr;
}

const via = (p: RunningProxy, extra = '') => `host=127.0.0.1 port=${p.port} user=postgres dbname=postgres ${extra}`;
const client = (p: RunningProxy, cfg: pg.ClientConfig = {}) => new pg.Client({ host: '127.0.0.1', port: p.port, user: 'postgres', database: 'postgres', ...cfg });

async function withClient<T>(p: RunningProxy, fn: (c: pg.Client) => Promise<T>, cfg: pg.ClientConfig = {}): Promise<T> {
  const c = client(p, cfg);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  certs = makeCerts();
  primary = await PgCluster.init({ name: 'proxy-clients', conf: { max_connections: 200 } });
  // server-side TLS so the proxy's --backend-sslmode require is exercised
  serveTls(primary, certs);
  // SCRAM and MD5 users ahead of the harness's trust lines
  const hba = join(primary.dataDir, 'pg_hba.conf');
  writeFileSync(hba, 'host all scram_user 127.0.0.1/32 scram-sha-256\nhost all md5_user 127.0.0.1/32 md5\n' + readFileSync(hba, 'utf8'));
  await primary.start();
  primary.psql("SET password_encryption = 'scram-sha-256'; CREATE ROLE scram_user LOGIN PASSWORD 'scram-secret';");
  primary.psql("SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN PASSWORD 'md5-secret';");
  await primary.sql('CREATE TABLE items (id int PRIMARY KEY, body text)');
  standby = await primary.createStandby({ name: 'proxy-clients-standby' });
  proxy = await startProxy([standby.port, primary.port], ['--tls-cert', certs.cert, '--tls-key', certs.key, '--backend-sslmode', 'require', '--health-interval', '300'], { read: true });
  plainProxy = await startProxy([primary.port], ['--backend-sslmode', 'disable']);
}, 180_000);

afterAll(async () => {
  await proxy?.stop();
  await plainProxy?.stop();
  await cleanupAll();
});

/** the data path, run through the Node relay (client TLS, TLS to the server) and through the native relay */
function dataPathTests(p: () => RunningProxy, tag: string, base: number, relay: 'node' | 'native'): void {
  it('sessions are carried by the expected relay', async () => {
    await withClient(p(), async (c) => {
      await c.query('SELECT 1');
      const sessions = (await (await fetch(`http://127.0.0.1:${p().adminPort}/sessions`)).json()) as Array<{ relay: string; phase: string }>;
      expect(sessions.filter((s) => s.phase === 'relay').map((s) => s.relay)).toContain(relay);
    }, relay === 'node' ? { ssl: { rejectUnauthorized: false } } : {});
  });

    it('node-postgres: simple, extended with parameters, named prepared statements, transaction status', async () => {
      await withClient(p(), async (c) => {
        expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
        expect((await c.query('SELECT $1::int + $2::int AS sum, $3::text AS t', [2, 3, 'ü'])).rows).toEqual([{ sum: 5, t: 'ü' }]);
        for (let i = 0; i < 5; i++) {
          const r = await c.query({ name: 'ins', text: 'INSERT INTO items VALUES ($1, $2) RETURNING id', values: [base + i, `row ${i}`] });
          expect(r.rows[0].id).toBe(base + i);
        }
        await c.query('BEGIN');
        await c.query('SELECT 1');
        const inTx = (await (await fetch(`http://127.0.0.1:${p().adminPort}/sessions`)).json()) as Array<{ txStatus: string; backend: string }>;
        expect(inTx.some((s) => s.txStatus === 'T' && s.backend === `127.0.0.1:${primary.port}`)).toBe(true);
        // (node-postgres rejects at the ErrorResponse, which the server flushes before its
        // ReadyForQuery: the relay may not have seen the 'E' yet when the promise settles)
        await c.query('SELECT 1/0').catch(() => undefined);
        await waitFor(async () => ((await (await fetch(`http://127.0.0.1:${p().adminPort}/sessions`)).json()) as Array<{ txStatus: string }>).some((s) => s.txStatus === 'E'), 5_000, "the session's status E");
        await c.query('ROLLBACK');
        expect((await c.query('SELECT count(*)::int AS n FROM items WHERE id >= $1 AND id < $1 + 100', [base])).rows[0].n).toBe(5);
      });
    });

    it('pgbench -M simple, extended, prepared: every transaction processed, no errors', async () => {
      const bench = join(primary.clientBinDir, 'pgbench');
      await run(bench, ['-h', '127.0.0.1', '-p', String(p().port), '-U', 'postgres', '-i', '-s', '1', '-q', 'postgres']);
      for (const mode of ['simple', 'extended', 'prepared']) {
        const { stdout } = await run(bench, ['-h', '127.0.0.1', '-p', String(p().port), '-U', 'postgres', '-M', mode, '-c', '4', '-j', '2', '-t', '250', 'postgres']);
        expect(stdout, mode).toMatch(/number of transactions actually processed: 1000\/1000/);
        expect(stdout, mode).toMatch(/number of failed transactions: 0 /);
      }
      // the history rows the last run wrote through the proxy are on the primary (each run truncates it first)
      expect(await primary.sql('SELECT count(*) FROM pgbench_history')).toBe('1000');
    });

    it('COPY in and out through psql: the same bytes both ways', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'pgha-copy-'));
      const lines = Array.from({ length: 50_000 }, (_, i) => `${i}\tline ${i} ${'x'.repeat(i % 97)}`).join('\n') + '\n';
      writeFileSync(join(dir, 'in.tsv'), lines);
      await psql(via(p()), `CREATE TABLE copied_${tag} (id int, body text)`);
      await psql(via(p()), `\\copy copied_${tag} FROM '${join(dir, 'in.tsv')}'`);
      await psql(via(p()), `\\copy (SELECT * FROM copied_${tag} ORDER BY id) TO '${join(dir, 'out.tsv')}'`);
      const md5 = (p: string) => createHash('md5').update(readFileSync(p)).digest('hex');
      expect(md5(join(dir, 'out.tsv'))).toBe(md5(join(dir, 'in.tsv')));
      expect(await primary.sql(`SELECT count(*) FROM copied_${tag}`)).toBe('50000');
    });

    it('LISTEN/NOTIFY across two proxied sessions, with the real sender PID', async () => {
      const listener = client(p());
      const sender = client(p());
      await listener.connect();
      await sender.connect();
      try {
        await listener.query('LISTEN pgha_events');
        const got = new Promise<pg.Notification>((resolve) => listener.once('notification', resolve));
        const senderPid = (await sender.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
        await sender.query("NOTIFY pgha_events, 'hello through the proxy'");
        const n = await got;
        expect([n.channel, n.payload, n.processId]).toEqual(['pgha_events', 'hello through the proxy', senderPid]);
      } finally {
        await listener.end();
        await sender.end();
      }
    });

    it('rows larger than 1 MiB both ways', async () => {
      await withClient(p(), async (c) => {
        const big = 'abcdefghij'.repeat(350_000); // 3.5 MB
        await c.query(`CREATE TABLE big_${tag} (id int, body text)`);
        await c.query(`INSERT INTO big_${tag} VALUES (1, $1)`, [big]);
        const r = await c.query(`SELECT body, md5(body) AS m FROM big_${tag} WHERE id = 1`);
        expect(r.rows[0].body.length).toBe(big.length);
        expect(r.rows[0].m).toBe(createHash('md5').update(big).digest('hex'));
      });
    });

    it('a huge result read slowly by a cursor, and by a client that stops reading: the proxy does not buffer it', async () => {
      await withClient(p(), async (c) => {
        await c.query('BEGIN');
        await c.query("DECLARE cur CURSOR FOR SELECT g, repeat('y', 500) AS pad FROM generate_series(1, 200000) g");
        let n = 0;
        let sum = 0;
        for (;;) {
          const r = await c.query('FETCH 20000 FROM cur');
          if (r.rows.length === 0) break;
          n += r.rows.length;
          for (const row of r.rows) sum += row.g;
          await sleep(20);
        }
        await c.query('COMMIT');
        expect([n, sum]).toEqual([200000, (200000 * 200001) / 2]);
      });
      // raw client: ask for ~400 MB and stop reading; the proxy must pause the server, not buffer it
      const before = p().rssKiB();
      const sock = await rawSession(p().port);
      sock.write(serialize.query("SELECT repeat('z', 2000) FROM generate_series(1, 200000)"));
      let received = 0;
      sock.on('data', (b) => (received += b.length));
      await sleep(300);
      sock.pause();
      // the back-pressure reaches the server: its backend waits to write to the proxy (ClientWrite)
      await waitFor(
        async () => Number(await primary.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'ClientWrite' AND query LIKE 'SELECT repeat(''z'', 2000)%'")) === 1,
        20_000,
        'the server blocked writing the result (ClientWrite)',
      );
      const paused = p().rssKiB();
      const atPause = received;
      sock.resume();
      await waitFor(async () => received > 400_000_000, 60_000, 'whole result through');
      sock.destroy();
      console.log(`slow reader: proxy RSS ${before} KiB before, ${paused} KiB while the client was paused after ${atPause} bytes`);
      expect(paused - before).toBeLessThan(64 * 1024);
    });

    it('a cancel of pg_sleep(30) reaches the right server and ends the query', async () => {
      const c = client(p());
      await c.connect();
      try {
        const started = Date.now();
        const q = c.query('SELECT pg_sleep(30)').then(
          () => null,
          (e: pg.DatabaseError) => e,
        );
        await sleep(500);
        const key = c as unknown as { processID: number; secretKey: number };
        const cancel = connect({ host: '127.0.0.1', port: p().port });
        await new Promise((r) => cancel.once('connect', r));
        cancel.end(serialize.cancel(key.processID, key.secretKey));
        const err = await q;
        expect(err?.code).toBe('57014');
        expect(Date.now() - started).toBeLessThan(10_000);
        // the session is still usable
        expect((await c.query('SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
        const m = await p().metrics();
        expect(m).toMatch(/pgha_proxy_cancel_requests\{result="forwarded"\} [1-9]/);
      } finally {
        await c.end();
      }
    });

    it('SCRAM-SHA-256 and MD5 authentication pass through; a wrong password is refused by the server', async () => {
      expect(await psql(via(p(), 'user=scram_user'), 'SELECT current_user', { PGPASSWORD: 'scram-secret' })).toBe('scram_user');
      expect(await psql(via(p(), 'user=md5_user'), 'SELECT current_user', { PGPASSWORD: 'md5-secret' })).toBe('md5_user');
      await withClient(p(), async (c) => expect((await c.query('SELECT current_user AS u')).rows[0].u).toBe('scram_user'), { user: 'scram_user', password: 'scram-secret' });
      expect(psqlFails(via(p(), 'user=scram_user'), 'SELECT 1', { PGPASSWORD: 'wrong' })).toMatch(/password authentication failed for user "scram_user"/);
      expect(psqlFails(via(p(), 'user=md5_user'), 'SELECT 1', { PGPASSWORD: 'wrong' })).toMatch(/password authentication failed for user "md5_user"/);
    });
}

describe('pgha-proxy data path through the Node relay (TLS to the server)', () => dataPathTests(() => proxy, 'node', 1000, 'node'));
describe('pgha-proxy data path through the native relay', () => dataPathTests(() => plainProxy, 'native', 2000, 'native'));

describe('pgha-proxy with real clients', () => {
  it('finds the primary whatever the backend order, and psql reaches it', async () => {
    const s = await proxy.status();
    expect(s.primary).toBe(`127.0.0.1:${primary.port}`);
    expect(Object.fromEntries(s.backends.map((b) => [b.name, b.role]))).toEqual({ [`127.0.0.1:${primary.port}`]: 'primary', [`127.0.0.1:${standby.port}`]: 'standby' });
    expect(s.backends.every((b) => b.timeline === 1 && /^[0-9A-F]+\/[0-9A-F]+$/.test(b.lsn ?? ''))).toBe(true);
    expect(await psql(via(proxy), "SELECT pg_is_in_recovery(), current_setting('port')")).toBe(`f|${primary.port}`);
    // the server side of the proxy's connection is TLS (--backend-sslmode require)
    expect(await psql(via(proxy), 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()')).toBe('t');
  });

  it('sslmode disable, prefer, require, verify-ca and verify-full with TLS configured', async () => {
    const conninfo = (mode: string, extra = '') => via(proxy, `sslmode=${mode} ${extra}`);
    const sslUsed = async (mode: string, extra = '') => (await psql(conninfo(mode, extra), '\\conninfo')).includes('SSL connection');
    expect(await sslUsed('disable')).toBe(false);
    expect(await sslUsed('prefer')).toBe(true);
    expect(await sslUsed('require')).toBe(true);
    expect(await sslUsed('verify-ca', `sslrootcert=${certs.caCert}`)).toBe(true);
    expect(await sslUsed('verify-full', `sslrootcert=${certs.caCert}`)).toBe(true);
    expect(await psql(`host=localhost port=${proxy.port} user=postgres dbname=postgres sslmode=verify-full sslrootcert=${certs.caCert}`, 'SELECT 1')).toBe('1');
    // a CA that did not sign the proxy's certificate: refused by the client
    const other = makeCerts();
    expect(psqlFails(conninfo('verify-ca', `sslrootcert=${other.caCert}`), 'SELECT 1')).toMatch(/certificate verify failed/);
    // node-postgres over TLS
    await withClient(proxy, async (c) => expect((await c.query('SELECT 1 AS x')).rows).toEqual([{ x: 1 }]), { ssl: { ca: readFileSync(certs.caCert), servername: 'localhost' } });
    const sessions = (await (await fetch(`http://127.0.0.1:${proxy.adminPort}/sessions`)).json()) as unknown[];
    expect(Array.isArray(sessions)).toBe(true);
  });

  it("PG 17's direct TLS (sslnegotiation=direct: ClientHello first, ALPN postgresql)", async () => {
    const t = tlsConnect({ host: '127.0.0.1', port: proxy.port, ca: readFileSync(certs.caCert), servername: 'localhost', ALPNProtocols: ['postgresql'] });
    await new Promise<void>((resolve, reject) => {
      t.once('secureConnect', () => resolve());
      t.once('error', reject);
    });
    expect(t.alpnProtocol).toBe('postgresql');
    t.write(serialize.startup({ user: 'postgres', database: 'postgres' }));
    let buf = Buffer.alloc(0);
    await new Promise<void>((resolve) => {
      t.on('data', (b: Buffer) => {
        buf = Buffer.concat([buf, b]);
        if (buf.includes(Buffer.from([0x5a, 0, 0, 0, 5, 0x49]))) resolve();
      });
    });
    t.write(serialize.query("SELECT 'direct tls ok'"));
    await new Promise<void>((resolve) => t.on('data', () => buf.toString('latin1').includes('direct tls ok') && resolve()));
    t.end(serialize.end());
  });

  it('without a certificate the proxy answers N: require fails cleanly, prefer and disable work', async () => {
    expect(psqlFails(via(plainProxy, 'sslmode=require'), 'SELECT 1')).toMatch(/server does not support SSL, but SSL was required/);
    expect(await psql(via(plainProxy, 'sslmode=prefer'), 'SELECT 1')).toBe('1');
    expect(await psql(via(plainProxy, 'sslmode=disable'), 'SELECT 1')).toBe('1');
    // GSSENCRequest is answered N and the connection goes on in clear
    expect(await psql(via(plainProxy, 'gssencmode=prefer sslmode=disable'), 'SELECT 1')).toBe('1');
  });

  it('the read-only port goes to the standby', async () => {
    const conn = `host=127.0.0.1 port=${proxy.readPort} user=postgres dbname=postgres`;
    expect(await psql(conn, "SELECT pg_is_in_recovery(), current_setting('port')")).toBe(`t|${standby.port}`);
  });

  it('/metrics and `pgha status` show the cluster as the proxy sees it', async () => {
    const m = await proxy.metrics();
    expect(m).toContain(`pgha_proxy_backend_role{backend="127.0.0.1:${primary.port}",role="primary"} 1`);
    expect(m).toContain(`pgha_proxy_backend_role{backend="127.0.0.1:${standby.port}",role="standby"} 1`);
    expect(m).toMatch(/pgha_proxy_bytes\{direction="server_to_client"\} [1-9]\d+/);
    expect(m).toMatch(/pgha_proxy_health_check_seconds_count\{backend="127.0.0.1:\d+",ok="true"\} [1-9]/);
    const r = await pgha(['status', '--proxy', `http://127.0.0.1:${proxy.adminPort}`, '--json']);
    expect(r.status).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s.primary).toBe(`127.0.0.1:${primary.port}`);
    const text = await pgha(['status', '--proxy', `127.0.0.1:${proxy.adminPort}`]);
    // backend, then (since etcd) its member name, role, timeline, LSN
    expect(text.stdout).toMatch(new RegExp(`127\\.0\\.0\\.1:${primary.port}\\s+(\\S+\\s+)?primary\\s+1\\s+[0-9A-F]+/`));
    const down = await pgha(['status', '--proxy', 'http://127.0.0.1:1']);
    expect(down.status).toBe(2);
    expect(down.stderr).toMatch(/127\.0\.0\.1:1\/status/);
  });
});

describe('native relay loops', () => {
  it('an idle proxy puts new sessions on its first loop; /status relayLoops and /metrics say where sessions are and what each loop used', async () => {
    const p = await startProxy([primary.port], ['--backend-sslmode', 'disable', '--relay-threads', '3']);
    const clients: pg.Client[] = [];
    try {
      for (let i = 0; i < 5; i++) {
        const c = client(p);
        await c.connect();
        await c.query('SELECT 1');
        clients.push(c);
      }
      const loops = (await p.status()).relayLoops!;
      expect(loops.map((l) => l.sessions)).toEqual([5, 0, 0]);
      for (const l of loops) expect(l.cpuSeconds).toBeGreaterThanOrEqual(0);
      const m = await p.metrics();
      expect(m).toContain('pgha_proxy_relay_loop_sessions{loop="0"} 5');
      expect(m).toContain('pgha_proxy_relay_loop_sessions{loop="2"} 0');
      expect(m).toMatch(/pgha_proxy_relay_loop_cpu_seconds_total\{loop="0"\} \d/);
      await Promise.all(clients.splice(0).map((c) => c.end()));
      await waitFor(async () => (await p.status()).relayLoops!.every((l) => l.sessions === 0), 10_000, 'every loop empty again');
    } finally {
      await Promise.all(clients.map((c) => c.end()));
      await p.stop();
    }
  });
});
