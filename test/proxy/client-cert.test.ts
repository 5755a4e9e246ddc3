/**
 * Client certificate authentication through pgha-proxy, against a real PostgreSQL 15 with `ssl=on`,
 * `ssl_ca_file` and `hostssl all all 127.0.0.1/32 cert map=pgha`. The proxy terminates TLS, so the
 * server authenticates the proxy's own certificate (--backend-sslcert, CN pgha-proxy, mapped in
 * pg_ident.conf to the roles it may log in as), and the proxy checks the client's certificate
 * itself (--client-tls-ca) as the cert method does: a client whose certificate's CN is its user gets
 * in; one with another CN, or without a certificate, is refused with PostgreSQL's own SQLSTATE and
 * message — compared with what the server answers the same client directly.
 */
import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, PgCluster } from '../harness/cluster.js';
import { startProxy, type RunningProxy } from '../support/proxy.js';
import { makeCerts, serveTls, type TestCerts } from '../support/tls.js';

const run = promisify(execFile);

let server: PgCluster;
let certs: TestCerts;
let proxy: RunningProxy;
/** a CA of its own with a client certificate CN=alice: not the server's nor the proxy's CA */
let stranger: TestCerts;

/** a client certificate and key signed by `ca`'s CA, CN `cn` (key mode 0600: libpq insists) */
function clientCert(ca: TestCerts, cn: string): { cert: string; key: string } {
  const ossl = (args: string[]) => execFileSync('openssl', args, { cwd: ca.dir, stdio: ['ignore', 'pipe', 'pipe'] });
  ossl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-keyout', `${cn}.key`, '-out', `${cn}.csr`]);
  ossl(['x509', '-req', '-in', `${cn}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-out', `${cn}.crt`]);
  chmodSync(join(ca.dir, `${cn}.key`), 0o600);
  return { cert: join(ca.dir, `${cn}.crt`), key: join(ca.dir, `${cn}.key`) };
}

let alice: { cert: string; key: string };
let mallory: { cert: string; key: string };
let proxyCert: { cert: string; key: string };
let strangerAlice: { cert: string; key: string };

beforeAll(async () => {
  certs = makeCerts();
  alice = clientCert(certs, 'alice');
  mallory = clientCert(certs, 'mallory');
  proxyCert = clientCert(certs, 'pgha-proxy');
  stranger = makeCerts();
  strangerAlice = clientCert(stranger, 'alice');
  server = await PgCluster.init({ name: 'proxy-client-cert' });
  serveTls(server, certs);
  const ca = join(server.dataDir, 'root.crt');
  copyFileSync(certs.caCert, ca);
  const st = statSync(server.dataDir);
  chownSync(ca, st.uid, st.gid);
  server.writeConf({ ssl_ca_file: 'root.crt' });
  writeFileSync(join(server.dataDir, 'pg_hba.conf'), 'local all all trust\nhostssl all all 127.0.0.1/32 cert map=pgha\n');
  // each client's CN is its own role; the proxy's certificate may log in as the roles behind it
  writeFileSync(join(server.dataDir, 'pg_ident.conf'), 'pgha alice alice\npgha mallory mallory\npgha pgha-proxy alice\npgha pgha-proxy postgres\n');
  await server.start();
  server.psql('CREATE ROLE alice LOGIN; CREATE ROLE mallory LOGIN');
  proxy = await startProxy(
    [server.port],
    ['--tls-cert', certs.cert, '--tls-key', certs.key, '--client-tls-ca', certs.caCert, '--backend-sslmode', 'verify-ca', '--backend-sslrootcert', certs.caCert, '--backend-sslcert', proxyCert.cert, '--backend-sslkey', proxyCert.key],
  );
}, 120_000);

afterAll(async () => {
  await proxy?.stop();
  await cleanupAll();
});

/** psql -c as `user` with this certificate (none: a path that does not exist, so libpq sends none) */
async function psql(port: number, user: string, cert: { cert: string; key: string } | null, sslmode = 'require', sql = 'select current_user'): Promise<{ ok: boolean; out: string }> {
  const c = cert ?? { cert: join(certs.dir, 'none.crt'), key: join(certs.dir, 'none.key') };
  const conninfo = `host=127.0.0.1 port=${port} user=${user} dbname=postgres sslmode=${sslmode} sslcert=${c.cert} sslkey=${c.key} sslrootcert=${certs.caCert}`;
  try {
    const { stdout } = await run(join(server.clientBinDir, 'psql'), ['-X', '-At', '-d', conninfo, '-c', sql], { env: { ...process.env, HOME: certs.dir } });
    return { ok: true, out: stdout.trim() };
  } catch (e) {
    // psql: error: connection to server at "127.0.0.1", port N failed: FATAL:  …
    const err = String((e as { stderr?: string }).stderr ?? e);
    return { ok: false, out: err.replace(/^psql: error: connection to server at "[^"]*", port \d+ failed: /, '').trim() };
  }
}

/** node-postgres as `user`: the server's SQLSTATE and message, or the user it got in as */
async function nodePg(port: number, user: string, cert: { cert: string; key: string } | null): Promise<{ code?: string; message: string }> {
  const c = new pg.Client({
    host: '127.0.0.1',
    port,
    user,
    database: 'postgres',
    ssl: { ca: readFileSync(certs.caCert), rejectUnauthorized: false, ...(cert ? { cert: readFileSync(cert.cert), key: readFileSync(cert.key) } : {}) },
  });
  c.on('error', () => undefined);
  try {
    await c.connect();
    const r = await c.query('select current_user as u');
    return { message: r.rows[0].u };
  } catch (e) {
    return { code: (e as { code?: string }).code, message: (e as Error).message };
  } finally {
    await c.end().catch(() => undefined);
  }
}

describe('client certificates through pgha-proxy (--client-tls-ca, --backend-sslcert)', () => {
  it('a client whose certificate CN is its user gets in, directly and through the proxy (psql and node-postgres)', async () => {
    expect(await psql(server.port, 'alice', alice)).toEqual({ ok: true, out: 'alice' });
    expect(await psql(proxy.port, 'alice', alice)).toEqual({ ok: true, out: 'alice' });
    expect(await nodePg(proxy.port, 'alice', alice)).toEqual({ message: 'alice' });
    // what the server saw: alice's certificate directly, the proxy's (mapped to alice) through it
    const dn = 'select client_dn from pg_stat_ssl where pid = pg_backend_pid()';
    expect(await psql(server.port, 'alice', alice, 'require', dn)).toEqual({ ok: true, out: '/CN=alice' });
    expect(await psql(proxy.port, 'alice', alice, 'require', dn)).toEqual({ ok: true, out: '/CN=pgha-proxy' });
  });

  it('a certificate with another CN is refused as PostgreSQL refuses it: same SQLSTATE, same message', async () => {
    const direct = await psql(server.port, 'alice', mallory);
    const proxied = await psql(proxy.port, 'alice', mallory);
    expect(direct.ok).toBe(false);
    expect(direct.out).toMatch(/certificate authentication failed for user "alice"/);
    expect(proxied).toEqual(direct);
    const d = await nodePg(server.port, 'alice', mallory);
    expect(d.code).toBe('28000');
    expect(await nodePg(proxy.port, 'alice', mallory)).toEqual(d);
    // mallory as mallory is fine with the server, but not through the proxy: the server sees the
    // proxy's certificate, which is not mapped to mallory — the proxy checked her certificate first
    expect(await psql(server.port, 'mallory', mallory)).toEqual({ ok: true, out: 'mallory' });
    expect(await psql(proxy.port, 'mallory', mallory)).toEqual({ ok: false, out: 'FATAL:  certificate authentication failed for user "mallory"' });
  });

  it('a client without a certificate is refused as PostgreSQL refuses it', async () => {
    const direct = await psql(server.port, 'alice', null);
    const proxied = await psql(proxy.port, 'alice', null);
    expect(direct.ok).toBe(false);
    expect(direct.out).toMatch(/connection requires a valid client certificate/);
    expect(proxied).toEqual(direct);
    const d = await nodePg(server.port, 'alice', null);
    expect(d.code).toBe('28000');
    expect(await nodePg(proxy.port, 'alice', null)).toEqual(d);
  });

  it('without TLS the proxy refuses too (28000, the same words); a certificate from another CA ends the connection in TLS', async () => {
    const plain = await psql(proxy.port, 'alice', null, 'disable');
    expect(plain.ok).toBe(false);
    expect(plain.out).toBe((await psql(server.port, 'alice', null)).out);
    const foreign = await psql(proxy.port, 'alice', strangerAlice);
    expect(foreign.ok, foreign.out).toBe(false);
    expect(foreign.out).not.toMatch(/FATAL/);
    // PostgreSQL fails that handshake too
    expect((await psql(server.port, 'alice', strangerAlice)).ok).toBe(false);
    expect(proxy.log()).toMatch(/client certificate refused/);
  });
});

describe('configuration', () => {
  it('--client-tls-ca without --tls-cert, --backend-sslcert without its key or with sslmode disable: one line, exit 2', async () => {
    const cli = join(process.cwd(), 'dist', 'proxy', 'cli.js');
    const bad = async (args: string[]) => {
      try {
        await run(process.execPath, [cli, '--listen', '127.0.0.1:0', '--backend', '127.0.0.1:1', ...args]);
        return { code: 0, err: '' };
      } catch (e) {
        return { code: (e as { code?: number }).code, err: String((e as { stderr?: string }).stderr).trim() };
      }
    };
    expect(await bad(['--client-tls-ca', certs.caCert])).toEqual({ code: 2, err: 'pgha-proxy: --client-tls-ca needs --tls-cert and --tls-key (client certificates come over TLS)' });
    expect(await bad(['--backend-sslcert', proxyCert.cert])).toEqual({ code: 2, err: 'pgha-proxy: --backend-sslcert and --backend-sslkey go together' });
    expect(await bad(['--backend-sslcert', proxyCert.cert, '--backend-sslkey', proxyCert.key, '--backend-sslmode', 'disable'])).toEqual({
      code: 2,
      err: 'pgha-proxy: --backend-sslcert needs TLS towards the servers: --backend-sslmode is disable',
    });
    expect(await bad(['--tls-cert', certs.cert, '--tls-key', certs.key, '--client-tls-ca', join(certs.dir, 'missing.crt')])).toEqual({ code: 2, err: `pgha-proxy: --client-tls-ca ${join(certs.dir, 'missing.crt')}: ENOENT` });
    // the same keys in a config file
    const file = join(certs.dir, 'proxy.json');
    writeFileSync(file, JSON.stringify({ listen: '127.0.0.1:0', backend: ['127.0.0.1:1'], clientTlsCa: certs.caCert, backendSslcert: proxyCert.cert, backendSslkey: proxyCert.key }));
    expect(await bad(['--config', file])).toEqual({ code: 2, err: 'pgha-proxy: --client-tls-ca needs --tls-cert and --tls-key (client certificates come over TLS)' });
  });
});
