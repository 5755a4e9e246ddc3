/**
 * SCRAM channel binding through a proxy that terminates TLS, with TLS on both sides. The client's
 * binding (tls-server-end-point) is the hash of the certificate the proxy presents, the server's is
 * the hash of its own: SCRAM-SHA-256-PLUS can only succeed when they are the same certificate, so
 * otherwise it is taken out of the server's offer and never tried.
 *
 * What remains is SCRAM's own downgrade check, which no proxy can pass: a client that supports
 * channel binding but is not offered it says so (gs2 flag `y`), and a server on TLS refuses that as
 * a possible man in the middle. libpq does that over TLS with its default channel_binding=prefer
 * (with sslmode=prefer it then retries without TLS and gets in), node-postgres whenever
 * enableChannelBinding is on.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import pg from 'pg';
import { serialize } from 'pg-protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, PgCluster } from '../harness/cluster.js';
import { startProxy, type RunningProxy } from '../support/proxy.js';
import { makeCerts, type TestCerts, serveTls } from '../support/tls.js';

let server: PgCluster;
let serverCerts: TestCerts;
/** its own certificate: not the server's */
let ownCert: RunningProxy;
/** the server's certificate and key */
let sameCert: RunningProxy;

const PASSWORD = 'cb-secret';

beforeAll(async () => {
  serverCerts = makeCerts();
  const proxyCerts = makeCerts();
  server = await PgCluster.init({ name: 'proxy-channel-binding' });
  serveTls(server, serverCerts);
  const hba = join(server.dataDir, 'pg_hba.conf');
  writeFileSync(hba, 'host all cb_user 127.0.0.1/32 scram-sha-256\n' + readFileSync(hba, 'utf8'));
  await server.start();
  server.psql(`SET password_encryption = 'scram-sha-256'; CREATE ROLE cb_user LOGIN PASSWORD '${PASSWORD}'`);
  const common = ['--backend-sslmode', 'require'];
  ownCert = await startProxy([server.port], [...common, '--tls-cert', proxyCerts.cert, '--tls-key', proxyCerts.key]);
  sameCert = await startProxy([server.port], [...common, '--tls-cert', serverCerts.cert, '--tls-key', serverCerts.key]);
}, 120_000);

afterAll(async () => {
  await ownCert?.stop();
  await sameCert?.stop();
  await cleanupAll();
});

/** the mechanisms of the AuthenticationSASL a client receives (over TLS when `tls`) */
async function offered(port: number, tls: boolean): Promise<string[]> {
  const raw = connect({ host: '127.0.0.1', port });
  await new Promise((r) => raw.once('connect', r));
  let s: Socket = raw;
  if (tls) {
    raw.write(serialize.requestSsl());
    const answer = await new Promise<Buffer>((r) => raw.once('data', r));
    expect(answer.toString()).toBe('S');
    const t = tlsConnect({ socket: raw, rejectUnauthorized: false });
    await new Promise((r) => t.once('secureConnect', r));
    s = t;
  }
  s.write(serialize.startup({ user: 'cb_user', database: 'postgres' }));
  let buf = Buffer.alloc(0);
  const msg = await new Promise<Buffer>((resolve) => {
    s.on('data', (b: Buffer) => {
      buf = Buffer.concat([buf, b]);
      if (buf.length >= 5 && buf.length >= 1 + buf.readInt32BE(1)) resolve(buf.subarray(0, 1 + buf.readInt32BE(1)));
    });
  });
  s.destroy();
  expect([String.fromCharCode(msg[0]), msg.readInt32BE(5)]).toEqual(['R', 10]);
  return msg.toString('utf8', 9, msg.length - 2).split('\0');
}

const conninfo = (p: RunningProxy, extra: string) => `host=127.0.0.1 port=${p.port} user=cb_user dbname=postgres ${extra}`;

function psql(conn: string, sql: string): { ok: boolean; out: string } {
  const r = spawnSync(join(server.clientBinDir, 'psql'), ['-X', '-At', '-d', conn, '-c', sql], { env: { ...process.env, PGPASSWORD: PASSWORD }, encoding: 'utf8' });
  return { ok: r.status === 0, out: (r.status === 0 ? r.stdout : r.stderr).trim() };
}

async function nodePg(p: RunningProxy, cfg: pg.ClientConfig): Promise<string> {
  const c = new pg.Client({ host: '127.0.0.1', port: p.port, user: 'cb_user', password: PASSWORD, database: 'postgres', ...cfg });
  c.on('error', () => undefined);
  try {
    await c.connect();
    const r = await c.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
    await c.end();
    return `ok ssl-to-server=${r.rows[0].ssl}`;
  } catch (e) {
    c.end().catch(() => undefined);
    return `error: ${(e as Error).message}`;
  }
}

const TLS_IN_USE = 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()';

describe('SCRAM channel binding through the TLS-terminating proxy', () => {
  it('the server offers SCRAM-SHA-256-PLUS; the proxy passes it on only with the server\'s own certificate', async () => {
    expect(await offered(server.port, true)).toEqual(['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256']);
    expect(await offered(ownCert.port, true)).toEqual(['SCRAM-SHA-256']);
    expect(await offered(ownCert.port, false)).toEqual(['SCRAM-SHA-256']);
    expect(await offered(sameCert.port, true)).toEqual(['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256']);
    // a client without TLS to the proxy can never bind a channel
    expect(await offered(sameCert.port, false)).toEqual(['SCRAM-SHA-256']);
  });

  it('psql through a proxy with its own certificate: channel_binding=require fails with libpq\'s own error, the rest get in', async () => {
    expect(psql(conninfo(ownCert, 'sslmode=require channel_binding=require'), 'SELECT 1')).toEqual({
      ok: false,
      out: expect.stringMatching(/channel binding is required, but server did not offer an authentication method that supports channel binding/),
    });
    expect(psql(conninfo(ownCert, 'sslmode=require channel_binding=disable'), TLS_IN_USE)).toEqual({ ok: true, out: 't' });
    // libpq's defaults (sslmode=prefer, channel_binding=prefer): SCRAM's downgrade check refuses the
    // attempt over TLS, libpq retries without TLS and gets in
    expect(psql(conninfo(ownCert, ''), 'SELECT current_user')).toEqual({ ok: true, out: 'cb_user' });
    // without TLS to the proxy: plain SCRAM-SHA-256 (PLUS used to be offered here, and libpq refused it)
    expect(psql(conninfo(ownCert, 'sslmode=disable channel_binding=prefer'), 'SELECT current_user')).toEqual({ ok: true, out: 'cb_user' });
    // the limit no proxy can pass: TLS required, channel binding supported but not offered
    expect(psql(conninfo(ownCert, 'sslmode=require channel_binding=prefer'), 'SELECT 1')).toEqual({ ok: false, out: expect.stringMatching(/SCRAM channel binding negotiation error/) });
  });

  it('psql through a proxy with the server\'s certificate: channel binding works end to end', async () => {
    expect(psql(conninfo(sameCert, 'sslmode=require channel_binding=require'), 'SELECT current_user')).toEqual({ ok: true, out: 'cb_user' });
    expect(psql(conninfo(sameCert, 'sslmode=require channel_binding=prefer'), 'SELECT current_user')).toEqual({ ok: true, out: 'cb_user' });
  });

  it('node-postgres over TLS', async () => {
    const tls = { ssl: { rejectUnauthorized: false } };
    expect(await nodePg(ownCert, tls)).toBe('ok ssl-to-server=true');
    expect(await nodePg(sameCert, tls)).toBe('ok ssl-to-server=true');
    expect(await nodePg(sameCert, { ...tls, enableChannelBinding: true })).toBe('ok ssl-to-server=true');
    // not offered PLUS, node-postgres says it supports binding: the server's downgrade check (it
    // used to pick PLUS and fail on the certificate hash)
    expect(await nodePg(ownCert, { ...tls, enableChannelBinding: true })).toMatch(/SCRAM channel binding negotiation error/);
  });
});
