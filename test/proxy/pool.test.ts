/**
 * pgha-proxy --pool-mode against a real PostgreSQL 15, with real clients (psql, node-postgres,
 * pgbench): the proxy authenticates clients itself (SCRAM-SHA-256 and MD5, failing as PostgreSQL
 * fails: 28P01) and logs in to the server with the auth file's entries (plain, MD5 hash, SCRAM
 * secret); the pool size holds and clients queue; transaction mode carries 20 clients over 2 server
 * connections, startup settings and named prepared statements across them (node-postgres named
 * queries, pgbench -M prepared); LISTEN is refused with 0A000; session mode resets a connection
 * between clients; cancels reach the server a client is on; the console (psql -d pgha) answers
 * SHOW POOLS/CLIENTS/SERVERS, PAUSE and RESUME.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { serialize } from 'pg-protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Authenticator } from '../../proxy/pool/auth.js';
import { parseSecret } from '../../proxy/pool/secrets.js';
import { cleanupAll, PgCluster, sleep, waitFor } from '../harness/cluster.js';
import { PROXY_CLI, startProxy, type RunningProxy } from '../support/proxy.js';
import { makeCerts } from '../support/tls.js';

const run = promisify(execFile);

let primary: PgCluster;
/** the options every proxy of these tests gets */
let common: string[];
let authFile: string;

const PASSWORDS = { scram_user: 'scram-secret', md5_user: 'md5-secret', plain_user: 'plain-secret', admin: 'admin-secret' };

/** what each hostile first byte got, through the first relay tested (the second must answer alike) */
const hostileMessages = new Map<number, string>();

/** the socket under a node-postgres client (to write what a well-behaved client would not) */
const rawStream = (c: pg.Client): Socket => (c as unknown as { connection: { stream: Socket } }).connection.stream;

const client = (p: RunningProxy, user: keyof typeof PASSWORDS, cfg: pg.ClientConfig = {}) => new pg.Client({ host: '127.0.0.1', port: p.port, user, password: PASSWORDS[user], database: 'postgres', ...cfg });

async function psql(port: number, user: string, password: string, sql: string, db = 'postgres'): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const args = ['-X', '-At', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(port), '-U', user, '-d', db, '-c', sql];
  try {
    const r = await run(join(primary.clientBinDir, 'psql'), args, { env: { ...process.env, PGPASSWORD: password, PGCONNECT_TIMEOUT: '10' } });
    return { status: 0, stdout: r.stdout.trim(), stderr: r.stderr.trim() };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return { status: typeof x.code === 'number' ? x.code : -1, stdout: (x.stdout ?? '').trim(), stderr: (x.stderr ?? '').trim() };
  }
}

/** the fields of the console's SHOW POOLS row of a user */
async function poolRow(p: RunningProxy, user: string): Promise<string[]> {
  const r = await psql(p.port, 'admin', PASSWORDS.admin, 'SHOW POOLS', 'pgha');
  return r.stdout.split('\n').find((l) => l.startsWith(`postgres|${user}|`))?.split('|') ?? [];
}

/** the first authentication request a server (or the proxy) sends a user: 5 MD5, 10 SASL */
async function firstAuthCode(port: number, user: string): Promise<number> {
  const s = connect({ host: '127.0.0.1', port });
  await new Promise((r) => s.once('connect', r));
  s.write(serialize.startup({ user, database: 'postgres' }));
  const b = await new Promise<Buffer>((resolve) => {
    let buf = Buffer.alloc(0);
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (buf.length >= 9) resolve(buf);
    });
  });
  s.destroy();
  expect(String.fromCharCode(b[0])).toBe('R');
  return b.readInt32BE(5);
}

async function errorOf(p: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await p;
  } catch (e) {
    return e as { code?: string; message: string };
  }
  throw new Error('expected an error');
}

beforeAll(async () => {
  primary = await PgCluster.init({ name: 'proxy-pool', conf: { max_connections: 100 } });
  const hba = join(primary.dataDir, 'pg_hba.conf');
  writeFileSync(hba, 'host all scram_user 127.0.0.1/32 scram-sha-256\nhost all plain_user 127.0.0.1/32 scram-sha-256\nhost all md5_user 127.0.0.1/32 md5\nhost all admin 127.0.0.1/32 scram-sha-256\n' + readFileSync(hba, 'utf8'));
  await primary.start();
  primary.psql(`SET password_encryption = 'scram-sha-256'; CREATE ROLE scram_user LOGIN PASSWORD '${PASSWORDS.scram_user}'; CREATE ROLE plain_user LOGIN PASSWORD '${PASSWORDS.plain_user}'; CREATE ROLE admin LOGIN PASSWORD '${PASSWORDS.admin}';`);
  primary.psql(`SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN PASSWORD '${PASSWORDS.md5_user}';`);
  primary.psql('GRANT ALL ON SCHEMA public TO scram_user, plain_user, md5_user; CREATE TABLE pooled (id serial PRIMARY KEY, who text, pid int); GRANT ALL ON pooled, pooled_id_seq TO scram_user, plain_user, md5_user;');
  // the file holds what pg_authid holds for two users (a SCRAM secret, an MD5 hash) and plain passwords for the others
  const secrets = Object.fromEntries((await primary.rows<{ rolname: string; rolpassword: string }>("SELECT rolname, rolpassword FROM pg_authid WHERE rolname IN ('scram_user', 'md5_user')")).map((r) => [r.rolname, r.rolpassword]));
  expect(secrets.scram_user).toMatch(/^SCRAM-SHA-256\$/);
  expect(secrets.md5_user).toMatch(/^md5/);
  const dir = mkdtempSync(join(tmpdir(), 'pgha-pool-'));
  authFile = join(dir, 'userlist.txt');
  writeFileSync(authFile, `; PgBouncer's format\n"scram_user" "${secrets.scram_user}"\n"md5_user" "${secrets.md5_user}"\n"plain_user" "${PASSWORDS.plain_user}"\n"admin" "${PASSWORDS.admin}"\n"postgres" "unused"\n`, { mode: 0o600 });
  common = ['--backend-sslmode', 'disable', '--auth-file', authFile, '--admin-users', 'admin'];
}, 180_000);

afterAll(async () => {
  await cleanupAll();
});

describe('the auth query cache', () => {
  it('keeps an answer per name a client tries, unknown names too, and never more than its bound: the oldest go first', async () => {
    const file = new Map([['postgres', { user: 'postgres', secret: parseSecret('unused-with-trust') }]]);
    const auth = new Authenticator(file, { sql: 'SELECT rolname, rolpassword FROM pg_authid WHERE rolname = $1 AND rolcanlogin', user: 'postgres', target: () => ({ host: '127.0.0.1', port: primary.port }), ssl: false, timeoutMs: 5000 }, 3);
    expect((await auth.lookup('scram_user', 'postgres'))?.secret.kind).toBe('scram');
    for (const name of ['made-up-1', 'made-up-2', 'made-up-3', 'made-up-4']) expect(await auth.lookup(name, 'postgres')).toBe(null);
    expect(auth.cachedAnswers).toBe(3);
    // scram_user's answer was the oldest: asked again, and it is still found
    expect((await auth.lookup('scram_user', 'postgres'))?.secret.kind).toBe('scram');
    expect(auth.cachedAnswers).toBe(3);
  });
});

// every test through both relays: the native pool loop (native/src/pool_relay.rs, the default) and
// the TypeScript pool (--relay node), in transaction and session mode
describe.each([['native'], ['node']] as const)('pgha-proxy --pool-mode (%s relay)', (relay) => {
  let txn: RunningProxy;
  let session: RunningProxy;
  beforeAll(async () => {
    txn = await startProxy([primary.port], ['--pool-mode', 'transaction', '--pool-size', '2', '--relay', relay, ...common]);
    session = await startProxy([primary.port], ['--pool-mode', 'session', '--pool-size', '1', '--relay', relay, ...common]);
  }, 60_000);
  afterAll(async () => {
    await txn?.stop();
    await session?.stop();
  });

  it('clients on plain TCP are carried by the relay asked for', async () => {
    const c = client(txn, 'plain_user');
    await c.connect();
    expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    const st = await txn.status();
    expect(st.pool?.native).toBe(relay === 'native' ? 1 : null);
    await c.end();
    await waitFor(async () => (await txn.status()).pool?.clients === 0, 5000, 'the client gone from the pool');
    expect((await txn.status()).pool?.native).toBe(relay === 'native' ? 0 : null);
  });

  it('authenticates clients itself: SCRAM for SCRAM and plain entries, MD5 for MD5 entries, as the server asks them', async () => {
    // the server's own choice per user, and the proxy's
    expect(await firstAuthCode(primary.port, 'scram_user')).toBe(10);
    expect(await firstAuthCode(txn.port, 'scram_user')).toBe(10);
    expect(await firstAuthCode(primary.port, 'md5_user')).toBe(5);
    expect(await firstAuthCode(txn.port, 'md5_user')).toBe(5);
    expect(await firstAuthCode(txn.port, 'plain_user')).toBe(10);
    for (const user of ['scram_user', 'md5_user', 'plain_user'] as const) {
      const r = await psql(txn.port, user, PASSWORDS[user], 'SELECT current_user');
      expect(r.stderr, user).toBe('');
      expect(r.stdout).toBe(user);
      const c = client(txn, user);
      await c.connect();
      expect((await c.query('SELECT current_user AS u')).rows[0].u).toBe(user);
      await c.end();
    }
  });

  it('a wrong password or an unknown user fails with 28P01 and the message PostgreSQL gives', async () => {
    for (const user of ['scram_user', 'md5_user', 'plain_user'] as const) {
      const direct = await errorOf(new pg.Client({ host: '127.0.0.1', port: primary.port, user, password: 'wrong', database: 'postgres' }).connect());
      const pooled = await errorOf(client(txn, user, { password: 'wrong' }).connect());
      expect(pooled.code, user).toBe(direct.code);
      expect(pooled.code).toBe('28P01');
      expect(pooled.message).toBe(direct.message);
      const r = await psql(txn.port, user, 'wrong', 'SELECT 1');
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain(`password authentication failed for user "${user}"`);
    }
    const unknown = await errorOf(new pg.Client({ host: '127.0.0.1', port: txn.port, user: 'nobody', password: 'x', database: 'postgres' }).connect());
    expect(unknown.code).toBe('28P01');
    expect(unknown.message).toBe('password authentication failed for user "nobody"');
  });

  it('transaction mode: 20 clients run their transactions over 2 server connections, queueing for them', async () => {
    const clients = await Promise.all(Array.from({ length: 20 }, async (_, i) => {
      const c = client(txn, 'plain_user', { application_name: `client-${i}` });
      await c.connect();
      return c;
    }));
    const rounds = Number(process.env.PGHA_POOL_ROUNDS ?? 5);
    const seen = new Set<number>();
    // (the table is shared by the runs through each relay)
    await primary.sql("DELETE FROM pooled WHERE who LIKE 'client-%'");
    await Promise.all(clients.map(async (c, i) => {
      for (let r = 0; r < rounds; r++) {
        await c.query('BEGIN');
        const pid = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
        // the client's own startup setting, on whichever server connection it landed
        expect((await c.query("SELECT current_setting('application_name') AS a")).rows[0].a).toBe(`client-${i}`);
        await c.query('INSERT INTO pooled (who, pid) VALUES ($1, $2)', [`client-${i}`, pid]);
        await c.query('COMMIT');
        seen.add(pid);
      }
    }));
    expect(seen.size).toBeGreaterThanOrEqual(1);
    expect(seen.size).toBeLessThanOrEqual(2);
    expect(Number(await primary.sql("SELECT count(*) FROM pooled WHERE who LIKE 'client-%'"))).toBe(20 * rounds);
    // the server itself says how many connections served these clients (their SET application_name
    // stays on a connection; the session-mode proxy of other tests may hold one more of plain_user)
    expect(Number(await primary.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'plain_user' AND application_name LIKE 'client-%'"))).toBeLessThanOrEqual(2);
    await Promise.all(clients.map((c) => c.end()));
  });

  it("/metrics and SHOW STATS count what the pool relays: a transaction per ReadyForQuery 'I', a query per ReadyForQuery, bytes both ways, time in transactions and in queries (both modes)", async () => {
    for (const p of [txn, session]) {
      const read = async () => {
        const m = await p.metrics();
        const one = (re: RegExp) => Number(re.exec(m)?.[1] ?? NaN);
        const route = (name: string) => one(new RegExp(`^${name}\\{database="postgres",user="plain_user"\\} ([0-9.e+-]+)$`, 'm'));
        const st = await psql(p.port, 'admin', PASSWORDS.admin, 'SHOW STATS', 'pgha');
        expect(st.stderr).toBe('');
        const row = st.stdout.split('\n').find((l) => l.startsWith('postgres|'))?.split('|').map(Number) ?? [];
        return {
          tx: one(/^pgha_proxy_transactions_total (\d+)$/m),
          q: one(/^pgha_proxy_queries_total (\d+)$/m),
          up: one(/^pgha_proxy_bytes\{direction="client_to_server"\} (\d+)$/m),
          down: one(/^pgha_proxy_bytes\{direction="server_to_client"\} (\d+)$/m),
          routeTx: route('pgha_proxy_pool_transactions_total'),
          routeUp: route('pgha_proxy_pool_received_bytes_total'),
          routeXactSeconds: route('pgha_proxy_pool_transaction_seconds_total'),
          // SHOW STATS: database, total_xact_count, total_query_count, total_received, total_sent, total_xact_time, total_query_time, total_wait_time, avg_…
          stats: { xacts: row[1], queries: row[2], received: row[3], sent: row[4], xactUs: row[5], queryUs: row[6] },
        };
      };
      const c = client(p, 'plain_user');
      await c.connect();
      await c.query('SELECT 1');
      expect((await p.status()).pool?.native).toBe(relay === 'native' ? 1 : null);
      // what the client itself wrote and read (its socket's counts): the oracle for the bytes
      const sock = (c as unknown as { connection: { stream: Socket } }).connection.stream;
      const before = await read();
      const [w0, r0] = [sock.bytesWritten, sock.bytesRead];
      const t0 = performance.now();
      for (let i = 0; i < 30; i++) await c.query('SELECT $1::int AS i', [i]);
      for (let i = 0; i < 10; i++) await c.query('SELECT 1');
      await c.query('BEGIN');
      await c.query('SELECT pg_sleep(0.2)');
      await sleep(300); // idle in transaction: in the transaction's time, not in any query's
      await c.query('COMMIT');
      const wallUs = (performance.now() - t0) * 1000;
      const [written, readBytes] = [sock.bytesWritten - w0, sock.bytesRead - r0];
      const after = await read();
      await c.end();
      const d = (f: (x: typeof before) => number) => f(after) - f(before);
      // 40 autocommit statements and one explicit transaction of three
      expect({ tx: d((x) => x.tx), q: d((x) => x.q) }, p === txn ? 'transaction mode' : 'session mode').toEqual({ tx: 41, q: 43 });
      expect({ xacts: d((x) => x.stats.xacts), queries: d((x) => x.stats.queries), routeTx: d((x) => x.routeTx) }).toEqual({ xacts: 41, queries: 43, routeTx: 41 });
      // the 10 simple queries alone are 10 × 14 bytes from the client; every answer has at least a ReadyForQuery (6 bytes)
      expect(d((x) => x.up)).toBeGreaterThan(10 * 14 + 30 * 20);
      expect(d((x) => x.down)).toBeGreaterThan(43 * 6);
      // the database's totals: exactly the bytes the client wrote and read (nobody else used it meanwhile)
      expect({ received: d((x) => x.stats.received), sent: d((x) => x.stats.sent), routeUp: d((x) => x.routeUp) }).toEqual({ received: written, sent: readBytes, routeUp: written });
      // times: the transaction's 0.2 s query and 0.3 s idle in it are in its time; only the query in query time; none counted twice
      const xactUs = d((x) => x.stats.xactUs);
      const queryUs = d((x) => x.stats.queryUs);
      expect(queryUs).toBeGreaterThanOrEqual(200_000);
      expect(xactUs - queryUs).toBeGreaterThanOrEqual(250_000);
      expect(xactUs).toBeLessThanOrEqual(wallUs);
      expect(Math.abs(d((x) => x.routeXactSeconds) * 1e6 - xactUs)).toBeLessThan(2);
    }
  });

  it("SHOW STATS counts the proxy's own answers too: a statement the server connection already has is answered ParseComplete by the proxy, and those bytes are in total_sent", async () => {
    const one = await startProxy([primary.port], ['--pool-mode', 'transaction', '--pool-size', '1', '--relay', relay, ...common]);
    try {
      const sent = async () => Number((await psql(one.port, 'admin', PASSWORDS.admin, 'SHOW STATS', 'pgha')).stdout.split('\n').find((l) => l.startsWith('postgres|'))?.split('|')[4] ?? NaN);
      const first = client(one, 'plain_user');
      await first.connect();
      await first.query({ name: 'stats_fake', text: 'SELECT 7 AS n' });
      await first.end();
      // the same statement from another client on the pool's one server connection: its Parse is answered by the proxy
      const c = client(one, 'plain_user');
      await c.connect();
      const sock = (c as unknown as { connection: { stream: Socket } }).connection.stream;
      const before = await sent();
      const r0 = sock.bytesRead;
      expect((await c.query({ name: 'stats_fake', text: 'SELECT 7 AS n' })).rows[0].n).toBe(7);
      const readBytes = sock.bytesRead - r0;
      expect((await sent()) - before).toBe(readBytes);
      await c.end();
    } finally {
      await one.stop();
    }
  });

  it('the pool size holds: a third transaction waits for one of 2 server connections (cl_waiting in SHOW POOLS), then runs', async () => {
    const waitTotals = async () => {
      const m = await txn.metrics();
      const one = (name: string) => Number(new RegExp(`^${name}\\{database="postgres",user="md5_user"\\} ([0-9.e+-]+)$`, 'm').exec(m)?.[1] ?? 0);
      return { seconds: one('pgha_proxy_pool_wait_seconds_total'), count: one('pgha_proxy_pool_waits_total') };
    };
    const w0 = await waitTotals();
    const cs = await Promise.all([0, 1, 2].map(async () => {
      const c = client(txn, 'md5_user');
      await c.connect();
      return c;
    }));
    const busy = cs.slice(0, 2).map((c) => c.query('SELECT pg_sleep(1.5)'));
    await sleep(300);
    const started = Date.now();
    const third = cs[2].query('SELECT 42 AS x');
    let row: string[] = [];
    await waitFor(async () => (row = await poolRow(txn, 'md5_user'))[4] === '1', 5000, 'cl_waiting 1');
    // database, user, node, cl_active, cl_waiting, sv_active, sv_idle, sv_login, …
    expect(row.slice(3, 6)).toEqual(['2', '1', '2']);
    // the same pool in /status and /metrics, read while the two pg_sleeps hold both connections
    const [status, metrics] = await Promise.all([txn.status(), fetch(`${txn.admin}/metrics`).then((r) => r.text())]);
    expect(status.pool!.mode).toBe('transaction');
    const pool = status.pool!.pools.find((p) => p.user === 'md5_user')!;
    expect({ clActive: pool.clActive, svActive: pool.svActive, svIdle: pool.svIdle }).toEqual({ clActive: 2, svActive: 2, svIdle: 0 });
    const series = (name: string, state: string) => Number(new RegExp(`^${name}\\{database="postgres",user="md5_user",node="[^"]+",state="${state}"\\} (\\d+)`, 'm').exec(metrics)?.[1]);
    expect([series('pgha_proxy_pool_servers', 'active'), series('pgha_proxy_pool_servers', 'idle'), series('pgha_proxy_pool_clients', 'active')]).toEqual([2, 0, 2]);
    expect((await third).rows[0].x).toBe(42);
    expect(Date.now() - started).toBeGreaterThan(500);
    // its wait is in the pool's wait counters (PgBouncer's total_wait_time)
    const w1 = await waitTotals();
    expect(w1.count - w0.count).toBeGreaterThanOrEqual(1);
    expect(w1.seconds - w0.seconds).toBeGreaterThan(0.5);
    await Promise.all(busy);
    await Promise.all(cs.map((c) => c.end()));
  });

  it('transaction mode: named prepared statements follow each client to any server connection (node-postgres, pgbench -M prepared)', async () => {
    const clients = await Promise.all(Array.from({ length: 12 }, async () => {
      const c = client(txn, 'scram_user');
      await c.connect();
      return c;
    }));
    await Promise.all(clients.map(async (c, i) => {
      for (let r = 0; r < 6; r++) {
        // two statements with one name per client text, and one that differs per client
        expect((await c.query({ name: 'add', text: 'SELECT $1::int + 1 AS x', values: [i * 100 + r] })).rows[0].x).toBe(i * 100 + r + 1);
        expect((await c.query({ name: `mine-${i}`, text: `SELECT $1::text || '-${i}' AS s`, values: [String(r)] })).rows[0].s).toBe(`${r}-${i}`);
      }
    }));
    await Promise.all(clients.map((c) => c.end()));
    // the statements live on the server under the proxy's names, at most one copy per server connection
    const bench = join(primary.clientBinDir, 'pgbench');
    primary.pgbench(['-i', '-s', '1', '-q']);
    primary.psql('GRANT ALL ON ALL TABLES IN SCHEMA public TO plain_user');
    // one client per thread: pgbench prepares a client's statements with a blocking PQprepare, which
    // under any transaction pooler waits for a server connection that the thread's other clients,
    // idle in their transactions, hold (PgBouncer deadlocks the same way)
    const { stdout } = await run(bench, ['-h', '127.0.0.1', '-p', String(txn.port), '-U', 'plain_user', '-M', 'prepared', '-c', '6', '-j', '6', '-t', '50', 'postgres'], { env: { ...process.env, PGPASSWORD: PASSWORDS.plain_user } });
    expect(stdout).toMatch(/number of transactions actually processed: 300\/300/);
    expect(stdout).toMatch(/number of failed transactions: 0 /);
    for (const mode of ['simple', 'extended']) {
      const r = await run(bench, ['-h', '127.0.0.1', '-p', String(txn.port), '-U', 'plain_user', '-M', mode, '-S', '-c', '6', '-j', '2', '-t', '50', 'postgres'], { env: { ...process.env, PGPASSWORD: PASSWORDS.plain_user } });
      expect(r.stdout, mode).toMatch(/number of transactions actually processed: 300\/300/);
    }
  });

  it('transaction mode: a failed extended-protocol statement and a missing statement answer as the server does, and the client goes on', async () => {
    const c = client(txn, 'scram_user');
    await c.connect();
    const e1 = await errorOf(c.query({ name: 'bad', text: 'SELECT * FROM no_such_table' }));
    expect(e1.code).toBe('42P01');
    expect((await c.query({ name: 'good', text: 'SELECT 7 AS x' })).rows[0].x).toBe(7);
    const e2 = await errorOf(c.query({ text: 'SELECT 1/0' }));
    expect(e2.code).toBe('22012');
    expect((await c.query({ name: 'good', text: 'SELECT 7 AS x' })).rows[0].x).toBe(7);
    await c.end();
  });

  it('transaction mode: a pooled server connection ended by the server while idle (pg_terminate_backend) costs the client nothing', async () => {
    const c = client(txn, 'md5_user');
    await c.connect();
    const pid = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
    // every idle server connection of md5_user ended from the server's side
    await primary.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'md5_user'");
    await waitFor(async () => (await primary.sql('SELECT count(*) FROM pg_stat_activity WHERE pid = $1', [pid])) === '0', 10_000, 'the backend gone');
    for (let i = 0; i < 3; i++) {
      const r = (await c.query('SELECT pg_backend_pid() AS pid, 1 AS x')).rows[0];
      expect(r.x).toBe(1);
      expect(r.pid).not.toBe(pid);
    }
    await c.end();
  });

  it('transaction mode: LISTEN is refused with 0A000 (feature_not_supported); the client goes on', async () => {
    const c = client(txn, 'scram_user');
    await c.connect();
    const e = await errorOf(c.query('LISTEN some_channel'));
    expect(e.code).toBe('0A000');
    expect(e.message).toContain('transaction pool mode');
    expect((await c.query('SELECT 1 AS x')).rows[0].x).toBe(1);
    await c.end();
  });

  it('hostile bytes after login: a bad length is FATAL 08P01 naming the byte (the same words through both relays); the pool goes on', async () => {
    for (const [bytes, length] of [[[0x51, 0, 0, 0, 3], 3], [[0x42, 0x7f, 0xff, 0xff, 0xff], 0x7fffffff], [[0x50, 0xff, 0xff, 0xff, 0xf0], 0xfffffff0]] as const) {
      const c = client(txn, 'plain_user');
      await c.connect();
      expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
      const failed = new Promise<{ code?: string; message: string }>((resolve) => c.on('error', resolve));
      rawStream(c).write(Buffer.from(bytes));
      const e = await failed;
      expect(e.code).toBe('08P01');
      expect(e.message).toMatch(new RegExp(`^pgha-proxy: client: invalid message length ${length} for message type 0x${bytes[0].toString(16)} at byte \\d+ \\(expected 4\\.\\.\\d+\\)$`));
      const seen = hostileMessages.get(bytes[0]);
      if (seen === undefined) hostileMessages.set(bytes[0], e.message);
      else expect(e.message).toBe(seen);
    }
    const ok = client(txn, 'plain_user');
    await ok.connect();
    expect((await ok.query('SELECT 2 AS two')).rows[0].two).toBe(2);
    await ok.end();
  });

  it('large results to a client that stops reading, and COPY in and out (psql), come through whole', async () => {
    const c = client(txn, 'plain_user');
    await c.connect();
    // ~40 MB of rows while the client reads nothing for a while: both sockets fill up
    rawStream(c).pause();
    const big = c.query("SELECT i, repeat(md5(i::text), 25) AS pad FROM generate_series(1, 50000) i");
    await sleep(500);
    rawStream(c).resume();
    const r = await big;
    expect(r.rows.length).toBe(50000);
    expect(r.rows.reduce((n, row) => n + (row.pad as string).length, 0)).toBe(50000 * 800);
    expect((await c.query('SELECT 3 AS three')).rows[0].three).toBe(3);
    await c.end();
    // COPY FROM STDIN of ~20 MB and COPY TO STDOUT, through psql
    const dir = mkdtempSync(join(tmpdir(), 'pgha-pool-copy-'));
    const file = join(dir, 'rows.txt');
    writeFileSync(file, Array.from({ length: 100_000 }, (_, i) => `copied-${relay}-${i}\t${'y'.repeat(180)}`).join('\n') + '\n');
    primary.psql('CREATE TABLE IF NOT EXISTS copied (who text, pad text); GRANT ALL ON copied TO plain_user');
    const copyIn = await psql(txn.port, 'plain_user', PASSWORDS.plain_user, `\\copy copied FROM '${file}'`);
    expect(copyIn.stderr).toBe('');
    expect(copyIn.stdout).toBe('COPY 100000');
    const out = join(dir, 'out.txt');
    const copyOut = await psql(txn.port, 'plain_user', PASSWORDS.plain_user, `\\copy (SELECT * FROM copied WHERE who LIKE 'copied-${relay}-%' ORDER BY who) TO '${out}'`);
    expect(copyOut.stdout).toBe('COPY 100000');
    const { readFileSync } = await import('node:fs');
    expect(readFileSync(out, 'utf8').split('\n').length - 1).toBe(100_000);
  });

  it('a 64 MB query, a 64 MB parameter and a 64 MB row go through whole, sent on as they arrive (the proxy\'s peak memory grows by far less than one)', async () => {
    const p = await startProxy([primary.port], [...common, '--pool-mode', 'transaction', '--pool-size', '2', '--relay', relay]);
    // peak resident memory (VmHWM): what the proxy held at its fullest
    const peakKiB = () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${p.pid}/status`, 'utf8'))?.[1] ?? NaN);
    try {
      const c = client(p, 'plain_user');
      await c.connect();
      await c.query('SELECT 1');
      expect((await p.status()).pool?.native).toBe(relay === 'native' ? 1 : null);
      const before = peakKiB();
      const size = 64 << 20;
      const big = 'x'.repeat(size);
      // a simple Query, a Bind of the unnamed statement, a DataRow
      expect((await c.query(`SELECT length('${big}') AS n`)).rows[0].n).toBe(size);
      expect((await c.query('SELECT length($1::text) AS n', [big])).rows[0].n).toBe(size);
      const row = (await c.query(`SELECT repeat('y', ${size}) AS r`)).rows[0].r as string;
      expect(row.length).toBe(size);
      expect(row === 'y'.repeat(size)).toBe(true);
      // and the client goes on, on a connection left clean
      expect((await c.query('SELECT 2 AS two')).rows[0].two).toBe(2);
      const grewMiB = (peakKiB() - before) / 1024;
      console.log(`${relay}: the proxy's peak memory grew by ${grewMiB.toFixed(1)} MiB for 64 MiB messages`);
      // held whole, one message would be 64 MiB in the proxy's buffers (twice: read, then queued to
      // send; 206 MiB in all before the TypeScript pool streamed too). The TypeScript pool's ~37 MiB
      // are the chunks already relayed, freed at V8's next collection, not one message.
      expect(grewMiB).toBeLessThan(relay === 'native' ? 24 : 56);
      await c.end();
    } finally {
      await p.stop();
    }
  }, 60_000);

  it('a Query with an empty body (no terminating zero) is answered as PostgreSQL answers it, and the pool goes on', async () => {
    const answer = async (c: pg.Client) => {
      await c.connect();
      const failed = new Promise<{ code?: string; message: string }>((resolve) => c.on('error', resolve));
      rawStream(c).write(Buffer.from([0x51, 0, 0, 0, 4]));
      return failed;
    };
    const direct = await answer(new pg.Client({ host: '127.0.0.1', port: primary.port, user: 'postgres', database: 'postgres' }));
    const pooled = await answer(client(txn, 'plain_user'));
    expect(pooled.code).toBe(direct.code);
    expect(pooled.message).toBe(direct.message);
    const ok = client(txn, 'plain_user');
    await ok.connect();
    expect((await ok.query('SELECT 4 AS four')).rows[0].four).toBe(4);
    await ok.end();
  });

  it('a client that vanishes inside a transaction (socket closed, or Terminate, or half a message, short or long) leaves no lock and nothing committed behind', async () => {
    const tag = `vanish-${relay}`;
    const endings: Array<[string, (c: pg.Client) => Promise<void>]> = [
      ['closed', async (c) => void rawStream(c).destroy()],
      ['terminate', (c) => c.end()],
      ['half a message', async (c) => {
        rawStream(c).write(Buffer.from([0x51, 0, 0, 0, 100, 0x53, 0x45, 0x4c]));
        await sleep(50);
        rawStream(c).destroy();
      }],
      // long enough to be sent on as it arrives: the server connection has part of it
      ['a third of a 1 MB message', async (c) => {
        const head = Buffer.alloc(5 + 350_000, 0x20);
        head[0] = 0x51;
        head.writeInt32BE((1 << 20) + 4, 1);
        head.write('SELECT ', 5);
        rawStream(c).write(head);
        await sleep(100);
        rawStream(c).destroy();
      }],
    ];
    for (const [how, end] of endings) {
      const c = client(txn, 'plain_user');
      c.on('error', () => undefined);
      await c.connect();
      await c.query('BEGIN');
      await c.query('INSERT INTO pooled (who) VALUES ($1)', [`${tag}-${how}`]);
      await c.query('LOCK TABLE pooled IN ACCESS EXCLUSIVE MODE');
      await end(c);
      // the next client is not held up by the lock, and the insert was never committed
      const next = client(txn, 'plain_user', { query_timeout: 10_000 });
      await next.connect();
      await next.query('INSERT INTO pooled (who) VALUES ($1)', [`${tag}-after-${how}`]);
      expect(Number((await next.query('SELECT count(*) AS n FROM pooled WHERE who = $1', [`${tag}-${how}`])).rows[0].n), how).toBe(0);
      await next.end();
    }
    await waitFor(async () => Number(await primary.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'plain_user' AND state LIKE 'idle in transaction%'")) === 0, 10_000, 'no server session left in a transaction');
  });

  it("a client idle in a transaction past the server's idle_in_transaction_session_timeout hears the server's FATAL 25P03; its connection is replaced, the pool goes on", async () => {
    const c = client(txn, 'plain_user');
    // the server says it when the time is up, to a client that asked nothing (as it does directly)
    const told = new Promise<{ code?: string }>((r) => c.on('error', (err) => r(err as { code?: string })));
    await c.connect();
    await c.query('BEGIN');
    await c.query("SET LOCAL idle_in_transaction_session_timeout = '300ms'");
    const e = await Promise.race([told, sleep(10_000).then(() => ({ code: 'nothing within 10 s' }))]);
    expect(e.code).toBe('25P03');
    // the pool's other connection, and new ones, serve the next clients
    const next = client(txn, 'plain_user');
    await next.connect();
    for (let i = 0; i < 3; i++) expect((await next.query('SELECT $1::int AS i', [i])).rows[0].i).toBe(i);
    await next.end();
  });

  it('session mode: the next client on the same server connection finds it reset (settings, prepared statements, temporary tables)', async () => {
    const a = client(session, 'plain_user');
    await a.connect();
    expect((await session.status()).pool?.native).toBe(relay === 'native' ? 1 : null);
    const pidA = (await a.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    await a.query("SET work_mem = '77MB'");
    await a.query('PREPARE s AS SELECT 1');
    await a.query('CREATE TEMP TABLE leftover (x int)');
    await a.end();
    const b = client(session, 'plain_user');
    await b.connect();
    const r = (await b.query("SELECT pg_backend_pid() AS pid, current_setting('work_mem') AS wm, (SELECT count(*)::int FROM pg_prepared_statements) AS ps, to_regclass('pg_temp.leftover') IS NULL AS gone")).rows[0];
    expect(r.pid).toBe(pidA);
    // the server's own default, asked directly
    expect(r.wm).toBe(await primary.sql("SELECT current_setting('work_mem')"));
    expect(r.ps).toBe(0);
    expect(r.gone).toBe(true);
    // a session keeps its state while it lasts (LISTEN included)
    await b.query('LISTEN ch');
    await b.query('PREPARE t AS SELECT 2');
    expect((await b.query('EXECUTE t')).rows[0]['?column?']).toBe(2);
    await b.end();
  });

  it('session mode: with one server connection a second client waits for the first to leave, then gets it (reset); notifications reach a listening session', async () => {
    const a = client(session, 'md5_user');
    await a.connect();
    const pidA = (await a.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    await a.query("SET application_name = 'first-session'");
    // between transactions the connection is still a's: b waits for it
    const b = client(session, 'md5_user');
    await b.connect();
    const bGot = b.query("SELECT pg_backend_pid() AS pid, current_setting('application_name') AS app");
    await waitFor(async () => (await poolRow(session, 'md5_user'))[4] === '1', 10_000, 'b waiting (cl_waiting 1)');
    const heard = new Promise<pg.Notification>((resolve) => a.once('notification', resolve));
    await a.query('LISTEN pooled_channel');
    await primary.sql("NOTIFY pooled_channel, 'to the session'");
    expect((await heard).payload).toBe('to the session');
    await a.end();
    const r = (await bGot).rows[0];
    expect(r.pid).toBe(pidA);
    expect(r.app).toBe('');
    await b.end();
  });

  it('one full pool shared by a plain and a TLS client: the connection the native loop carries is given back for the TLS client, and the plain one gets it again', async () => {
    const certs = makeCerts();
    const p = await startProxy([primary.port], ['--pool-mode', 'transaction', '--pool-size', '1', '--relay', relay, '--tls-cert', certs.cert, '--tls-key', certs.key, ...common]);
    try {
      const plain = client(p, 'scram_user');
      await plain.connect();
      expect((await plain.query('SELECT 1 AS one')).rows[0].one).toBe(1);
      expect((await p.status()).pool?.native).toBe(relay === 'native' ? 1 : null);
      // the only server connection sits idle where the plain client left it
      const tls = client(p, 'scram_user', { ssl: { rejectUnauthorized: false } });
      await tls.connect();
      expect((await tls.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()')).rows[0].ssl).toBe(false);
      expect((await tls.query("SELECT 'over tls' AS t")).rows[0].t).toBe('over tls');
      // and back: the plain client's next transactions get the TypeScript pool's idle connection
      for (let i = 0; i < 3; i++) {
        expect((await plain.query('SELECT $1::int AS i', [i])).rows[0].i).toBe(i);
        expect((await tls.query('SELECT $1::int AS i', [i])).rows[0].i).toBe(i);
      }
      // the pool holds its one server connection, whichever side carries it now
      const row = await poolRow(p, 'scram_user');
      expect(Number(row[5]) + Number(row[6]) + Number(row[7])).toBe(1);
      await Promise.all([plain.end(), tls.end()]);
    } finally {
      await p.stop();
    }
  }, 60_000);

  it('session mode: a connection whose reset query fails is closed, not given to the next client', async () => {
    const p = await startProxy([primary.port], ['--pool-mode', 'session', '--pool-size', '1', '--relay', relay, '--server-reset-query', 'SELECT 1/0', ...common]);
    try {
      const a = client(p, 'scram_user');
      await a.connect();
      const pidA = (await a.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
      await a.end();
      const b = client(p, 'scram_user');
      await b.connect();
      expect((await b.query('SELECT pg_backend_pid() AS pid')).rows[0].pid).not.toBe(pidA);
      await b.end();
      await waitFor(async () => Number(await primary.sql(`SELECT count(*) FROM pg_stat_activity WHERE pid = ${pidA}`)) === 0, 10_000, "a's backend gone");
    } finally {
      await p.stop();
    }
  });

  it("session mode: a session whose server connection is terminated hears the server's FATAL and is closed; the next client gets a new connection", async () => {
    const a = client(session, 'md5_user');
    a.on('error', () => undefined);
    await a.connect();
    const pidA = (await a.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    const ended = new Promise<{ code?: string }>((resolve) => a.once('error', (e) => resolve(e as { code?: string })));
    // idle in its session, between transactions: its state is on that backend, so the session ends
    await primary.sql(`SELECT pg_terminate_backend(${pidA})`);
    expect((await ended).code).toBe('57P01');
    const b = client(session, 'md5_user');
    await b.connect();
    expect((await b.query('SELECT pg_backend_pid() AS pid')).rows[0].pid).not.toBe(pidA);
    await b.end();
  });

  it('session mode: a client that vanishes in a transaction leaves nothing behind, and its server connection is not given to the next', async () => {
    const a = client(session, 'md5_user');
    await a.connect();
    const pidA = (await a.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    await a.query('BEGIN');
    await a.query("INSERT INTO pooled (who) VALUES ('session-vanished')");
    await a.query('LOCK TABLE pooled IN ACCESS EXCLUSIVE MODE');
    a.on('error', () => undefined);
    rawStream(a).destroy();
    const b = client(session, 'md5_user');
    await b.connect();
    // the lock is gone (the table can be read), nothing was committed, another backend serves b
    const r = (await b.query("SELECT pg_backend_pid() AS pid, (SELECT count(*)::int FROM pooled WHERE who = 'session-vanished') AS n")).rows[0];
    expect(r.n).toBe(0);
    expect(r.pid).not.toBe(pidA);
    await waitFor(async () => Number(await primary.sql(`SELECT count(*) FROM pg_stat_activity WHERE pid = ${pidA}`)) === 0, 10_000, "a's backend gone");
    await b.end();
  });

  it('a CancelRequest with the key the proxy gave reaches the server the client is on, and its connection closes only once the server took it', async () => {
    const c = client(txn, 'plain_user');
    await c.connect();
    const q = c.query('SELECT pg_sleep(30)');
    const failed = errorOf(q);
    await waitFor(async () => (await primary.sql("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'")) === '1', 10_000, 'the query running on the server');
    const conn = c as unknown as { processID: number; secretKey: number };
    // while the postmaster is stopped nobody takes the forwarded request, so the client's cancel
    // connection must stay open (PostgreSQL closes it after signalling the backend): a client that
    // waits for the close and then moves on never outruns its cancel
    const postmaster = primary.pid!;
    process.kill(postmaster, 'SIGSTOP');
    let closed = false;
    const s = connect({ host: '127.0.0.1', port: txn.port });
    s.on('error', () => undefined);
    const gone = new Promise((r) => s.once('close', r)).then(() => (closed = true));
    try {
      await new Promise((r) => s.once('connect', r));
      s.end(serialize.cancel(conn.processID, conn.secretKey));
      s.resume();
      await sleep(1000);
    } finally {
      process.kill(postmaster, 'SIGCONT');
    }
    expect(closed, 'closed while the postmaster was stopped').toBe(false);
    await gone;
    const e = await failed;
    expect(e.code).toBe('57014');
    expect((await c.query('SELECT 1 AS x')).rows[0].x).toBe(1);
    await c.end();
  });

  it('--max-prepared-statements: a server connection keeps at most N statements, the least recently used closed and prepared again when a client comes back to it', async () => {
    const p = await startProxy([primary.port], ['--backend-sslmode', 'disable', '--auth-file', authFile, '--pool-mode', 'transaction', '--pool-size', '1', '--max-prepared-statements', '3', '--relay', relay]);
    try {
      const a = client(p, 'plain_user');
      const b = client(p, 'plain_user');
      await Promise.all([a.connect(), b.connect()]);
      // six statements over one server connection, twice round, from two clients taking turns
      for (let round = 0; round < 2; round++) {
        for (let i = 0; i < 6; i++) {
          const c = i % 2 ? b : a;
          const r = await c.query({ name: `st${i}`, text: `SELECT $1::int * ${i + 2} AS v`, values: [round + 1] });
          expect(r.rows[0].v).toBe((round + 1) * (i + 2));
        }
      }
      // what the server connection holds: never more than 3 of the pool's statements
      const held = (await a.query("SELECT count(*)::int AS n FROM pg_prepared_statements WHERE name LIKE 'pgha\\_%'")).rows[0].n;
      expect(held).toBeGreaterThan(0);
      expect(held).toBeLessThanOrEqual(3);
      // a client's statement closed meanwhile still answers under its name
      expect((await a.query({ name: 'st0', text: 'SELECT $1::int * 2 AS v', values: [21] })).rows[0].v).toBe(42);
      await Promise.all([a.end(), b.end()]);
    } finally {
      await p.stop();
    }
  });

  it('a full pool whose busy connection the server ends: the client waiting for it gets a new one', async () => {
    const p = await startProxy([primary.port], [...common, '--pool-mode', 'transaction', '--pool-size', '1', '--relay', relay]);
    try {
      const a = client(p, 'plain_user');
      const b = client(p, 'plain_user', { query_timeout: 15_000 });
      a.on('error', () => undefined);
      await Promise.all([a.connect(), b.connect()]);
      const busy = a.query('SELECT pg_sleep(30)').catch((e: { code?: string }) => e);
      await waitFor(async () => Number(await primary.sql("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'")) === 1, 10_000, 'the long query running');
      const waiting = b.query('SELECT 42 AS answer');
      await waitFor(async () => (await poolRow(p, 'plain_user'))[4] === '1', 10_000, 'b waiting (cl_waiting 1)');
      await primary.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'");
      expect(((await busy) as { code?: string }).code).toMatch(/^(57P01|08006)$/);
      expect((await waiting).rows[0].answer).toBe(42);
      await b.end();
    } finally {
      await p.stop();
    }
  });

  it('--pool-wait-timeout: a client that waits longer for a full or a paused pool hears 53300 query_wait_timeout and is closed; the holder and the pool go on', async () => {
    for (const mode of ['transaction', 'session'] as const) {
      const p = await startProxy([primary.port], [...common, '--pool-mode', mode, '--pool-size', '1', '--pool-wait-timeout', '700', '--relay', relay]);
      try {
        const a = client(p, 'plain_user');
        const b = client(p, 'plain_user');
        b.on('error', () => undefined);
        // one after the other: the TypeScript pool's first session-mode login keeps the connection it logs in with
        await a.connect();
        await b.connect();
        // both carried by the loop asked for: the loop's own deadline is what is tested there
        expect((await p.status()).pool?.native, mode).toBe(relay === 'native' ? 2 : null);
        // a holds the only server connection (in a transaction; in session mode, until it leaves)
        await a.query('BEGIN');
        await a.query('INSERT INTO pooled (who) VALUES ($1)', [`wait-timeout-${relay}-${mode}`]);
        const closed = new Promise<void>((r) => b.once('end', r));
        const started = Date.now();
        const e = await errorOf(b.query('SELECT 2'));
        expect(Date.now() - started, mode).toBeGreaterThanOrEqual(690);
        expect({ code: e.code, message: e.message }, mode).toEqual({ code: '53300', message: 'pgha-proxy: query_wait_timeout: no server connection became free within 700 ms' });
        await closed;
        // the holder lost nothing; once it is done, the next client gets the connection
        await a.query('COMMIT');
        expect(await primary.sql(`SELECT count(*) FROM pooled WHERE who = 'wait-timeout-${relay}-${mode}'`), mode).toBe('1');
        await a.end();
        const c = client(p, 'plain_user');
        await c.connect();
        expect((await c.query('SELECT 3 AS x')).rows[0].x).toBe(3);
        await c.end();
        // a paused pool: the same limit, then RESUME and the pool serves again
        const con = new pg.Client({ host: '127.0.0.1', port: p.port, user: 'admin', password: PASSWORDS.admin, database: 'pgha' });
        await con.connect();
        await con.query('PAUSE');
        const d = client(p, 'plain_user');
        d.on('error', () => undefined);
        await d.connect();
        const held = await errorOf(d.query('SELECT 4'));
        expect({ code: held.code, message: held.message }, `${mode} paused`).toEqual({ code: '53300', message: 'pgha-proxy: query_wait_timeout: no server connection became free within 700 ms' });
        await con.query('RESUME');
        await con.end();
        const f = client(p, 'plain_user');
        await f.connect();
        expect((await f.query('SELECT 5 AS x')).rows[0].x).toBe(5);
        await f.end();
        // both counted (the loop's own deadline and the paused pool's), and logged
        expect(await p.metrics(), mode).toMatch(/^pgha_proxy_pool_wait_timeouts_total\{database="postgres",user="plain_user"\} 2$/m);
        expect(p.log().match(/query_wait_timeout \(no server connection became free\)/g)?.length, mode).toBe(2);
      } finally {
        await p.stop();
      }
    }
  }, 60_000);

  it('--server-idle-timeout and --server-lifetime: the server sees old connections go, a busy one after its transaction; clients notice nothing, and a session keeps its own', async () => {
    const alive = async (pid: number) => (await primary.sql(`SELECT count(*) FROM pg_stat_activity WHERE pid = ${pid}`)) === '1';
    const pidOf = async (c: pg.Client) => (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
    const txnP = await startProxy([primary.port], [...common, '--pool-mode', 'transaction', '--pool-size', '2', '--server-idle-timeout', '1500', '--server-lifetime', '2500', '--relay', relay]);
    const sesP = await startProxy([primary.port], [...common, '--pool-mode', 'session', '--pool-size', '2', '--server-idle-timeout', '1000', '--server-lifetime', '0', '--relay', relay]);
    try {
      // transaction mode: the connection a transaction used goes once it has been idle 1.5 s
      const a = client(txnP, 'md5_user');
      await a.connect();
      const first = await pidOf(a);
      expect(await alive(first)).toBe(true);
      await waitFor(async () => !(await alive(first)), 10_000, 'the idle server connection closed');
      // a connection in use every 100 ms is never idle 1.5 s: it goes after its lifetime, between two transactions
      const seen: number[] = [];
      const started = Date.now();
      while (new Set(seen).size < 2 && Date.now() - started < 10_000) {
        seen.push(await pidOf(a));
        await sleep(100);
      }
      const distinct = [...new Set(seen)];
      expect(distinct.length, `backends used: ${distinct.join(', ')}`).toBeGreaterThanOrEqual(2);
      expect(distinct).not.toContain(first);
      expect(await alive(distinct[0])).toBe(false);
      expect((await txnP.status()).pool?.native).toBe(relay === 'native' ? 1 : null);
      await a.end();
      // session mode: a connected session keeps its connection however long it is quiet; the one a
      // session left goes after 1 s idle
      const b = client(sesP, 'md5_user');
      const c = client(sesP, 'md5_user');
      await b.connect();
      await c.connect();
      const bPid = await pidOf(b);
      const cPid = await pidOf(c);
      await c.end();
      await waitFor(async () => !(await alive(cPid)), 10_000, "the connection of the session that left closed");
      await sleep(1500);
      expect(await pidOf(b)).toBe(bPid);
      await b.end();
    } finally {
      await txnP.stop();
      await sesP.stop();
    }
  }, 60_000);

  it('--max-db-connections and --max-user-connections: the server never sees more connections of the database (all users) or of the user (all databases); a client held back waits, and a connection of another pool nobody waits for is closed to make room', async () => {
    for (const db of ['limit_db1', 'limit_db2']) {
      if ((await primary.sql(`SELECT count(*) FROM pg_database WHERE datname = '${db}'`)) === '0') primary.psql(`CREATE DATABASE ${db}`);
    }
    const on = (user: keyof typeof PASSWORDS, database: string, p: RunningProxy) => client(p, user, { database });
    /** the server's own count, sampled every 20 ms until stop(): the most it saw */
    const watch = (where: string) => {
      let max = 0;
      let stop = false;
      const done = (async () => {
        while (!stop) {
          max = Math.max(max, Number(await primary.sql(`SELECT count(*) FROM pg_stat_activity WHERE ${where}`)));
          await sleep(20);
        }
      })();
      return async () => {
        stop = true;
        await done;
        return max;
      };
    };
    // per database: 2 connections for plain_user's and md5_user's clients together
    const byDb = await startProxy([primary.port], ['--pool-mode', 'transaction', '--pool-size', '5', '--max-db-connections', '2', '--pool-wait-timeout', '15000', '--relay', relay, ...common]);
    try {
      const stopWatch = watch("datname = 'limit_db1'");
      const [a1, a2, b] = [on('plain_user', 'limit_db1', byDb), on('plain_user', 'limit_db1', byDb), on('md5_user', 'limit_db1', byDb)];
      await Promise.all([a1.connect(), a2.connect(), b.connect()]);
      const busy = [a1, a2].map((c) => c.query('SELECT pg_sleep(1)'));
      await waitFor(async () => (await primary.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'limit_db1' AND wait_event = 'PgSleep'")) === '2', 5000, "plain_user's two sleeps running");
      const started = Date.now();
      const third = b.query('SELECT 42 AS x');
      await waitFor(async () => (await psql(byDb.port, 'admin', PASSWORDS.admin, 'SHOW POOLS', 'pgha')).stdout.split('\n').some((l) => l.startsWith('limit_db1|md5_user|') && l.split('|')[4] === '1'), 5000, "md5_user's client waiting (cl_waiting 1)");
      expect((await third).rows[0].x).toBe(42);
      expect(Date.now() - started).toBeGreaterThan(300);
      await Promise.all(busy);
      // both users go on within the limit
      for (let i = 0; i < 5; i++) await Promise.all([a1, a2, b].map((c) => c.query('SELECT 1')));
      expect(await stopWatch()).toBe(2);
      // the console: SHOW DATABASES counts what the server has of the database, SHOW CONFIG the limit, SHOW VERSION the package's
      const dbRow = (await psql(byDb.port, 'admin', PASSWORDS.admin, 'SHOW DATABASES', 'pgha')).stdout.split('\n').find((l) => l.startsWith('limit_db1|'))?.split('|') ?? [];
      // name, host, port, database, node, pool_size, pool_mode, max_connections, current_connections, paused
      expect([dbRow[2], dbRow[5], dbRow[6], dbRow[7], dbRow[9]]).toEqual([String(primary.port), '5', 'transaction', '2', '0']);
      expect(Number(dbRow[8])).toBe(Number(await primary.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'limit_db1'")));
      const conf = (await psql(byDb.port, 'admin', PASSWORDS.admin, 'SHOW CONFIG', 'pgha')).stdout.split('\n');
      expect(conf).toEqual(expect.arrayContaining(['pool_mode|transaction|no', 'max_db_connections|2|no', 'max_user_connections|0|no', 'query_wait_timeout|15|no']));
      const version = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
      expect((await psql(byDb.port, 'admin', PASSWORDS.admin, 'SHOW VERSION', 'pgha')).stdout).toBe(`pgha-proxy ${version}`);
      await Promise.all([a1, a2, b].map((c) => c.end()));
    } finally {
      await byDb.stop();
    }
    // per user: 1 connection for plain_user's clients of two databases
    const byUser = await startProxy([primary.port], ['--pool-mode', 'transaction', '--pool-size', '5', '--max-user-connections', '1', '--pool-wait-timeout', '15000', '--relay', relay, ...common]);
    try {
      const stopWatch = watch("usename = 'plain_user' AND datname IN ('limit_db1', 'limit_db2')");
      const [x, y] = [on('plain_user', 'limit_db1', byUser), on('plain_user', 'limit_db2', byUser)];
      await Promise.all([x.connect(), y.connect()]);
      await x.query('BEGIN');
      await x.query('SELECT 1');
      let done = false;
      const other = y.query('SELECT current_database() AS d').then((r) => {
        done = true;
        return r;
      });
      await sleep(500);
      expect(done).toBe(false);
      await x.query('COMMIT');
      expect((await other).rows[0].d).toBe('limit_db2');
      for (let i = 0; i < 5; i++) await Promise.all([x, y].map((c) => c.query('SELECT 1')));
      expect(await stopWatch()).toBe(1);
      await Promise.all([x, y].map((c) => c.end()));
    } finally {
      await byUser.stop();
    }
  });

  it('RELOAD and SIGHUP read the auth file again: new entries log in, a bad file changes nothing, and the proxy stays up', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgha-pool-reload-'));
    const file = join(dir, 'userlist.txt');
    const write = (text: string) => writeFileSync(file, text, { mode: 0o600 });
    const base = `"plain_user" "${PASSWORDS.plain_user}"\n"admin" "${PASSWORDS.admin}"\n`;
    write(base);
    const p = await startProxy([primary.port], ['--backend-sslmode', 'disable', '--auth-file', file, '--admin-users', 'admin', '--pool-mode', 'transaction', '--relay', relay]);
    const logsIn = async (user: keyof typeof PASSWORDS) => {
      const c = client(p, user);
      try {
        await c.connect();
        return (await c.query('SELECT current_user AS u')).rows[0].u as string;
      } catch (e) {
        return (e as { code?: string }).code ?? (e as Error).message;
      } finally {
        await c.end().catch(() => undefined);
      }
    };
    const con = new pg.Client({ host: '127.0.0.1', port: p.port, user: 'admin', password: PASSWORDS.admin, database: 'pgha' });
    try {
      expect(await logsIn('scram_user')).toBe('28P01');
      write(`${base}"scram_user" "${PASSWORDS.scram_user}"\n`);
      await con.connect();
      await con.query('RELOAD');
      expect(await logsIn('scram_user')).toBe('scram_user');
      // a file that does not parse: ERROR F0000 naming the line, the entries read before still in use
      write(`${base}scram_user ${PASSWORDS.scram_user}\n`);
      const bad = await errorOf(con.query('RELOAD'));
      expect({ code: bad.code, message: bad.message }).toEqual({ code: 'F0000', message: `RELOAD: ${file}:3: expected "user" "password" (each in double quotes), got "scram_user ${PASSWORDS.scram_user}"` });
      expect(await logsIn('scram_user')).toBe('scram_user');
      // SIGHUP does the same: plain_user's entry changed to another password, scram_user's gone
      write(`"plain_user" "not-the-password"\n"admin" "${PASSWORDS.admin}"\n`);
      process.kill(p.pid, 'SIGHUP');
      await waitFor(async () => (await logsIn('scram_user')) === '28P01', 10_000, 'scram_user refused after SIGHUP');
      expect(await logsIn('plain_user')).toBe('28P01');
      expect(p.proc.exitCode).toBe(null);
      expect(p.log()).toMatch(/auth file reloaded/);
    } finally {
      await con.end().catch(() => undefined);
      await p.stop();
    }
  });

  it('--auth-query: a user missing from the auth file is looked up on the server (its SCRAM secret) and logs in to the server with the ClientKey of its proof', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgha-pool-aq-'));
    const file = join(dir, 'userlist.txt');
    writeFileSync(file, '"postgres" "unused-with-trust"\n', { mode: 0o600 });
    const p = await startProxy([primary.port], ['--backend-sslmode', 'disable', '--pool-mode', 'transaction', '--auth-file', file, '--auth-user', 'postgres', '--auth-query', "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = $1 AND rolcanlogin", '--relay', relay]);
    try {
      const c = client(p, 'scram_user');
      await c.connect();
      expect((await c.query('SELECT current_user AS u')).rows[0].u).toBe('scram_user');
      await c.end();
      const wrong = await errorOf(client(p, 'scram_user', { password: 'nope' }).connect());
      expect(wrong.code).toBe('28P01');
      const md5 = client(p, 'md5_user');
      await md5.connect();
      expect((await md5.query('SELECT current_user AS u')).rows[0].u).toBe('md5_user');
      await md5.end();
    } finally {
      await p.stop();
    }
  });

  it('bad pool configuration: one line on stderr, exit 2', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgha-pool-bad-'));
    const bad = join(dir, 'bad.txt');
    writeFileSync(bad, '"ok" "pw"\nuser-without-quotes pw\n');
    const badScram = join(dir, 'badscram.txt');
    writeFileSync(badScram, '"u" "SCRAM-SHA-256$4096:c2FsdA==$short:short"\n');
    const hashed = join(dir, 'hashed.txt');
    writeFileSync(hashed, `"postgres" "md5${'0'.repeat(32)}"\n`);
    const base = ['--listen', '127.0.0.1:0', '--backend', `127.0.0.1:${primary.port}`];
    const cases: Array<[string[], RegExp]> = [
      [['--pool-size', '5'], /^pgha-proxy: --pool-size needs --pool-mode session\|transaction$/],
      [['--max-db-connections', '5'], /^pgha-proxy: --max-db-connections needs --pool-mode session\|transaction$/],
      [['--pool-mode', 'transaction', '--auth-file', authFile, '--max-user-connections', '-1'], /^pgha-proxy: --max-user-connections must be an integer ≥ 0, got "-1"$/],
      [['--pool-mode', 'transaction'], /^pgha-proxy: --pool-mode needs --auth-file FILE/],
      [['--pool-mode', 'statement', '--auth-file', authFile], /^pgha-proxy: --pool-mode must be session or transaction, got "statement"$/],
      [['--pool-mode', 'session', '--auth-file', authFile, '--auth-type', 'plain'], /^pgha-proxy: --auth-type must be scram-sha-256 or md5, got "plain"$/],
      [['--pool-mode', 'session', '--auth-file', join(dir, 'missing.txt')], /^pgha-proxy: --auth-file .*missing\.txt: ENOENT$/],
      [['--pool-mode', 'session', '--auth-file', bad], new RegExp(`^pgha-proxy: ${bad.replace(/[.]/g, '\\.')}:2: expected "user" "password"`)],
      [['--pool-mode', 'session', '--auth-file', badScram], /:1: malformed SCRAM-SHA-256 secret/],
      [['--pool-mode', 'session', '--auth-file', authFile, '--auth-query', 'SELECT 1'], /^pgha-proxy: --auth-query needs --auth-user USER/],
      [['--pool-mode', 'session', '--auth-file', authFile, '--auth-user', 'ghost'], /^pgha-proxy: --auth-user ghost is not in --auth-file/],
      [['--pool-mode', 'session', '--auth-file', hashed, '--auth-user', 'postgres'], /^pgha-proxy: --auth-user postgres needs a plain password/],
      [['--pool-mode', 'session', '--auth-file', authFile, '--pool-size', '0'], /^pgha-proxy: --pool-size must be an integer ≥ 1, got "0"$/],
      [['--pool-mode', 'transaction', '--auth-file', authFile, '--max-prepared-statements', 'many'], /^pgha-proxy: --max-prepared-statements must be an integer ≥ 1, got "many"$/],
      [['--max-prepared-statements', '5'], /^pgha-proxy: --max-prepared-statements needs --pool-mode session\|transaction$/],
      [['--pool-mode', 'transaction', '--auth-file', authFile, '--pool-wait-timeout', '-1'], /^pgha-proxy: --pool-wait-timeout must be an integer ≥ 0, got "-1"$/],
      [['--pool-mode', 'transaction', '--auth-file', authFile, '--pool-wait-timeout', '4294967296'], /^pgha-proxy: --pool-wait-timeout must be at most 2147483647 ms, got 4294967296$/],
      [['--pool-wait-timeout', '10'], /^pgha-proxy: --pool-wait-timeout needs --pool-mode session\|transaction$/],
      [['--server-lifetime', '10'], /^pgha-proxy: --server-lifetime needs --pool-mode session\|transaction$/],
      [['--pool-mode', 'session', '--auth-file', authFile, '--server-idle-timeout', '1.5'], /^pgha-proxy: --server-idle-timeout must be an integer ≥ 0, got "1.5"$/],
    ];
    for (const [args, re] of cases) {
      let r: { code?: number; stderr?: string };
      try {
        await run(process.execPath, [PROXY_CLI, ...base, ...args], { timeout: 20_000 });
        r = { code: 0, stderr: '' };
      } catch (e) {
        r = e as { code?: number; stderr?: string };
      }
      const err = (r.stderr ?? '').trim();
      expect(r.code, args.join(' ')).toBe(2);
      expect(err.split('\n'), args.join(' ')).toHaveLength(1);
      expect(err, args.join(' ')).toMatch(re);
    }
  });

  it('the console: SHOW POOLS / CLIENTS / SERVERS for an admin user, refused to others; PAUSE holds new transactions until RESUME', async () => {
    const pools = await psql(txn.port, 'admin', PASSWORDS.admin, 'SHOW POOLS', 'pgha');
    expect(pools.stderr).toBe('');
    expect(pools.stdout).toMatch(new RegExp(`^postgres\\|plain_user\\|127\\.0\\.0\\.1:${primary.port}\\|`, 'm'));
    const c = client(txn, 'plain_user');
    await c.connect();
    const clients = await psql(txn.port, 'admin', PASSWORDS.admin, 'SHOW CLIENTS', 'pgha');
    expect(clients.stdout).toMatch(/^plain_user\|postgres\|idle\|/m);
    const servers = await psql(txn.port, 'admin', PASSWORDS.admin, 'SHOW SERVERS', 'pgha');
    // every server connection listed is one the server has, by its pid
    const pids = servers.stdout.split('\n').map((l) => Number(l.split('|')[4]));
    const real = new Set((await primary.rows<{ pid: number }>('SELECT pid FROM pg_stat_activity')).map((r) => r.pid));
    expect(pids.length).toBeGreaterThan(0);
    for (const p of pids) expect(real.has(p)).toBe(true);
    const refused = await psql(txn.port, 'plain_user', PASSWORDS.plain_user, 'SHOW POOLS', 'pgha');
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toContain('not allowed to connect to the console database');
    const bad = await psql(txn.port, 'admin', PASSWORDS.admin, 'SHOW NOTHING', 'pgha');
    expect(bad.stderr).toContain('unknown pgha console command');
    const help = await psql(txn.port, 'admin', PASSWORDS.admin, 'SHOW HELP', 'pgha');
    expect(help.stdout.split('\n')).toEqual(expect.arrayContaining(['SHOW POOLS', 'SHOW STATS', 'SHOW STATS_AVERAGES', 'SHOW DATABASES', 'SHOW VERSION', 'PAUSE', 'RESUME', 'RELOAD']));

    // PAUSE and RESUME through one console session
    const con = new pg.Client({ host: '127.0.0.1', port: txn.port, user: 'admin', password: PASSWORDS.admin, database: 'pgha' });
    await con.connect();
    await con.query('PAUSE');
    let done = false;
    const q = c.query('SELECT 5 AS x').then((r) => {
      done = true;
      return r;
    });
    // the transaction is seen held (waiting in SHOW CLIENTS) before it is asserted not done
    await waitFor(async () => /^plain_user\|postgres\|waiting\|/m.test((await psql(txn.port, 'admin', PASSWORDS.admin, 'SHOW CLIENTS', 'pgha')).stdout), 10_000, 'the client waiting while paused');
    expect(done).toBe(false);
    await con.query('RESUME');
    expect((await q).rows[0].x).toBe(5);
    await con.end();
    await c.end();
  });
});
