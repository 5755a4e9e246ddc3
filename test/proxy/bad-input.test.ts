/**
 * Hostile and broken clients and backends: each gets PostgreSQL's answer or a clean close, the proxy
 * stays up, a witness session opened before them all keeps working, and memory stays bounded. The
 * cases that reach the relay phase run through both relays (native and Node).
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import pg from 'pg';
import { serialize } from 'pg-protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, PgCluster, sleep, waitFor } from '../harness/cluster.js';
import { startProxy, type RunningProxy } from '../support/proxy.js';
import { makeCerts } from '../support/tls.js';
import { rawSession } from '../support/raw-client.js';

type Relay = 'native' | 'node';
const RELAYS: Relay[] = ['native', 'node'];

let primary: PgCluster;
/** one proxy per relay, each with a witness session opened before everything else */
const proxies = {} as Record<Relay, RunningProxy>;
const witnesses = {} as Record<Relay, pg.Client>;
const rssAtStart = {} as Record<Relay, number>;
/** the startup-phase cases never reach a relay */
let proxy: RunningProxy;

beforeAll(async () => {
  primary = await PgCluster.init({ name: 'proxy-bad-input', conf: { max_connections: 400 } });
  await primary.start();
  const certs = makeCerts();
  for (const relay of RELAYS) {
    proxies[relay] = await startProxy([primary.port], ['--startup-timeout', '1000', '--backend-sslmode', 'disable', '--tls-cert', certs.cert, '--tls-key', certs.key, '--relay', relay]);
    witnesses[relay] = new pg.Client({ host: '127.0.0.1', port: proxies[relay].port, user: 'postgres', database: 'postgres' });
    await witnesses[relay].connect();
    rssAtStart[relay] = proxies[relay].rssKiB();
  }
  proxy = proxies.native;
}, 120_000);

afterAll(async () => {
  for (const relay of RELAYS) {
    await witnesses[relay]?.end().catch(() => undefined);
    await proxies[relay]?.stop();
  }
  await cleanupAll();
});

/** send bytes, collect everything until the proxy closes (or timeoutMs) */
async function exchange(port: number, bytes: Buffer | null, timeoutMs = 5000): Promise<{ data: Buffer; closed: boolean; ms: number }> {
  const s = connect({ host: '127.0.0.1', port });
  await new Promise((r) => s.once('connect', r));
  const started = Date.now();
  const chunks: Buffer[] = [];
  s.on('data', (b) => chunks.push(b));
  s.on('error', () => undefined);
  const closed = new Promise<boolean>((resolve) => {
    s.once('close', () => resolve(true));
    setTimeout(() => resolve(false), timeoutMs);
  });
  if (bytes) s.write(bytes);
  const c = await closed;
  s.destroy();
  return { data: Buffer.concat(chunks), closed: c, ms: Date.now() - started };
}

/** the fields of the first ErrorResponse in `data` */
function errorFields(data: Buffer): Record<string, string> {
  const at = data.indexOf(0x45);
  expect(at, `an ErrorResponse in ${data.toString('hex').slice(0, 80)}`).toBeGreaterThanOrEqual(0);
  const len = data.readInt32BE(at + 1);
  const body = data.subarray(at + 5, at + 1 + len);
  const out: Record<string, string> = {};
  let i = 0;
  while (i < body.length && body[i] !== 0) {
    const end = body.indexOf(0, i + 1);
    out[String.fromCharCode(body[i])] = body.toString('utf8', i + 1, end);
    i = end + 1;
  }
  return out;
}

const startupPacket = (len: number, code: number, rest: Buffer = Buffer.alloc(0)) => {
  const b = Buffer.alloc(8);
  b.writeInt32BE(len, 0);
  b.writeInt32BE(code, 4);
  return Buffer.concat([b, rest]);
};

async function stillServing(relay: Relay = 'native'): Promise<void> {
  expect((await witnesses[relay].query('SELECT 42 AS answer')).rows).toEqual([{ answer: 42 }]);
  const s = await proxies[relay].status();
  expect(s.primary).toBe(`127.0.0.1:${primary.port}`);
}


describe('pgha-proxy under bad input: the startup phase', () => {
  it('garbage instead of a startup packet: closed without a reply, as PostgreSQL does (and logged)', async () => {
    const r = await exchange(proxy.port, Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    expect(r.closed).toBe(true);
    expect(r.data.length).toBe(0);
    await waitFor(async () => /invalid length of startup packet: 1195725856/.test(proxy.log()), 5000, 'the bad length logged');
    await stillServing();
  });

  it('startup length below 8 or above 10004: closed at once without a reply, without waiting for the bytes', async () => {
    for (const len of [0, 4, 7, -1, 10005, 0x7fffffff]) {
      const r = await exchange(proxy.port, startupPacket(len, 196608));
      expect(r.closed, `length ${len}`).toBe(true);
      expect(r.ms, `length ${len}`).toBeLessThan(900);
      expect(r.data.length, `length ${len}`).toBe(0);
    }
    await stillServing();
  });

  it('unsupported protocol, missing user, bad layout, extra bytes after SSLRequest', async () => {
    // a protocol-2 client gets its error in protocol 2, as PostgreSQL 15 answers it
    expect((await exchange(proxy.port, startupPacket(9, 2 << 16, Buffer.from([0])))).data.toString('latin1')).toMatch(/^EFATAL: {2}unsupported frontend protocol 2\.0: .*\n\0$/);
    expect(errorFields((await exchange(proxy.port, startupPacket(12, 4 << 16, Buffer.from([0, 0, 0, 0])))).data)).toMatchObject({ C: '0A000', M: expect.stringMatching(/unsupported frontend protocol 4\.0/) });
    expect(errorFields((await exchange(proxy.port, startupPacket(20, 196608, Buffer.from('database\0x\0\0')))).data)).toMatchObject({ C: '28000', M: expect.stringMatching(/no PostgreSQL user name/) });
    expect(errorFields((await exchange(proxy.port, startupPacket(13, 196608, Buffer.from('user\0')))).data).M).toMatch(/invalid startup packet layout/);
    // data behind the SSLRequest: 'S', and the 08P01 comes inside TLS (test/proxy/startup-parity.test.ts);
    // a client that never starts TLS is closed after --startup-timeout
    const sslThenData = Buffer.concat([startupPacket(8, 80877103), Buffer.from('hello')]);
    const r = await exchange(proxy.port, sslThenData);
    expect([r.data.toString('latin1'), r.closed]).toEqual(['S', true]);
    // SSLRequest answered S, then something that is not a TLS ClientHello: closed
    const t = connect({ host: '127.0.0.1', port: proxy.port });
    t.on('error', () => undefined);
    await new Promise((r) => t.once('connect', r));
    t.write(startupPacket(8, 80877103));
    const answer = await new Promise<Buffer>((r) => t.once('data', r));
    expect(answer.toString()).toBe('S');
    const closed = new Promise((r) => t.once('close', r));
    t.write(Buffer.from('this is not a TLS ClientHello, not at all\r\n'));
    await closed;
    await stillServing();
  });

  it('half a startup packet, then silence: closed after --startup-timeout without a reply (authentication_timeout in PostgreSQL)', async () => {
    const r = await exchange(proxy.port, startupPacket(40, 196608, Buffer.from('user\0post')), 8000);
    expect(r.closed).toBe(true);
    expect(r.ms).toBeGreaterThanOrEqual(900);
    expect(r.ms).toBeLessThan(5000);
    expect(r.data.length).toBe(0);
    await waitFor(async () => /no complete startup packet within 1000 ms/.test(proxy.log()), 5000, 'the timeout logged');
    // no packet at all: the same
    const silent = await exchange(proxy.port, null, 8000);
    expect(silent.closed).toBe(true);
    await stillServing();
  });

});

/** the cases that reach the relay phase, run through one relay */
function relayPhase(relay: Relay): void {
  const p = () => proxies[relay];

  it('sessions here are carried by this relay', async () => {
    const s = await rawSession(p().port);
    const sessions = (await (await fetch(`${p().admin}/sessions`)).json()) as Array<{ relay: string; phase: string }>;
    expect(sessions.filter((x) => x.phase === 'relay').map((x) => x.relay)).toContain(relay);
    s.end(serialize.end());
  });

  it('a message length of 2 GiB (and of 3) after startup: 08P01, the server session is ended', async () => {
    // client sessions only: the proxy's own health checks come and go on their own schedule
    const count = async () => Number(await primary.sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND application_name <> 'pgha-proxy health check'"));
    const base = await count();
    for (const len of [0x80000000, 3, 0x40000000]) {
      const s = await rawSession(p().port);
      expect(await count()).toBe(base + 1);
      const got: Buffer[] = [];
      s.on('data', (b) => got.push(b));
      const closed = new Promise((r) => s.once('close', r));
      const head = Buffer.alloc(5);
      head[0] = 0x51; // 'Q'
      head.writeUInt32BE(len >>> 0, 1);
      s.write(head);
      await closed;
      const e = errorFields(Buffer.concat(got));
      expect([e.C, e.M]).toEqual(['08P01', expect.stringMatching(new RegExp(`invalid message length ${len >>> 0} for message type 0x51`))]);
      await waitFor(async () => (await count()) === base, 10_000, 'server session gone');
    }
    await stillServing(relay);
  });

  it('1000 connections opened and dropped (some mid-startup, some after login): sessions and memory come back', async () => {
    const proxy = p();
    const before = proxy.rssKiB();
    for (let batch = 0; batch < 10; batch++) {
      const socks = await Promise.all(
        Array.from({ length: 100 }, async (_, i) => {
          const s = connect({ host: '127.0.0.1', port: proxy.port });
          s.on('error', () => undefined);
          await new Promise((r) => s.once('connect', r));
          if (i % 3 === 1) s.write(startupPacket(40, 196608, Buffer.from('us')));
          return s;
        }),
      );
      for (const s of socks) (batch % 2 ? s.resetAndDestroy() : s.destroy());
    }
    // and 100 real logins dropped without Terminate
    const logged = await Promise.all(Array.from({ length: 100 }, () => rawSession(proxy.port)));
    for (const s of logged) s.resetAndDestroy();
    await waitFor(async () => (await proxy.status()).clients.rw === 1, 30_000, 'only the witness left').catch(async (e) => {
      throw new Error(`${(e as Error).message}: ${JSON.stringify((await proxy.status()).clients)}`);
    });
    // the two witnesses (one per relay's proxy) and the query asking
    await waitFor(async () => Number(await primary.sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND application_name <> 'pgha-proxy health check'")) <= 3, 15_000, 'server sessions gone');
    const after = proxy.rssKiB();
    console.log(`${relay} relay: 1000 connections opened and dropped + 100 logins reset: proxy RSS ${rssAtStart[relay]} KiB at start, ${before} before, ${after} after`);
    expect(after - rssAtStart[relay]).toBeLessThan(64 * 1024);
    await stillServing(relay);
  });

  it('client reset mid-query: the query is cancelled on the server, the proxy goes on', async () => {
    const s = await rawSession(p().port);
    s.write(serialize.query(`SELECT pg_sleep(20) /* reset-me-${relay} */`));
    const running = `SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%reset-me-${relay}%' AND state = 'active' AND pid <> pg_backend_pid()`;
    await waitFor(async () => (await primary.sql(running)) === '1', 10_000, 'query running');
    s.resetAndDestroy();
    await waitFor(async () => (await primary.sql(running)) === '0', 5000, 'query cancelled');
    await stillServing(relay);
  });

  it('backend reset mid-query: the client gets an ErrorResponse (08006), not a hang; other sessions go on', async () => {
    // a TCP relay between a second proxy and PostgreSQL that can reset the server side of sessions
    const links: Array<{ toProxy: Socket; toPg: Socket; at: number }> = [];
    const tcpRelay: Server = createServer((toProxy) => {
      const toPg = connect({ host: '127.0.0.1', port: primary.port });
      toProxy.on('error', () => undefined);
      toPg.on('error', () => undefined);
      toProxy.pipe(toPg).pipe(toProxy);
      links.push({ toProxy, toPg, at: Date.now() });
    });
    await new Promise<void>((r) => tcpRelay.listen(0, '127.0.0.1', () => r()));
    const relayPort = (tcpRelay.address() as { port: number }).port;
    const p2 = await startProxy([relayPort], ['--backend-sslmode', 'disable', '--health-interval', '5000', '--relay', relay]);
    try {
      const victim = new pg.Client({ host: '127.0.0.1', port: p2.port, user: 'postgres', database: 'postgres' });
      victim.on('error', () => undefined);
      await victim.connect();
      const other = new pg.Client({ host: '127.0.0.1', port: p2.port, user: 'postgres', database: 'postgres' });
      await other.connect();
      const victimPid = (await victim.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
      const q = victim.query('SELECT pg_sleep(20)').then(
        () => null,
        (e: Error & { code?: string }) => e,
      );
      await sleep(300);
      // the relay link carrying the victim: its PostgreSQL-side port is the victim backend's client_port
      const port = Number(await primary.sql('SELECT client_port FROM pg_stat_activity WHERE pid = $1', [victimPid]));
      const victimLink = links.find((l) => l.toPg.localPort === port)!;
      expect(victimLink).toBeDefined();
      victimLink.toProxy.resetAndDestroy();
      victimLink.toPg.destroy();
      const err = await q;
      // the cut link leaves its server process in pg_sleep (PostgreSQL notices a lost client only
      // when it next reads or writes): end it, so that later counts of server sessions hold
      await primary.sql('SELECT pg_terminate_backend($1)', [victimPid]);
      expect(err?.code).toBe('08006');
      expect(err?.message).toMatch(/lost the connection to backend/);
      expect((await other.query('SELECT 7 AS seven')).rows).toEqual([{ seven: 7 }]);
      await other.end();
      const again = new pg.Client({ host: '127.0.0.1', port: p2.port, user: 'postgres', database: 'postgres' });
      await again.connect();
      expect((await again.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
      await again.end();
    } finally {
      await p2.stop();
      tcpRelay.close();
      for (const l of links) {
        l.toProxy.destroy();
        l.toPg.destroy();
      }
    }
    await stillServing(relay);
    console.log(`bad input done (${relay} relay): proxy RSS ${rssAtStart[relay]} KiB at start, ${p().rssKiB()} KiB at the end`);
  });
}

for (const relay of RELAYS) describe(`pgha-proxy under bad input: the relay phase through the ${relay} relay`, () => relayPhase(relay));
