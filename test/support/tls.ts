/** A throwaway CA and a server certificate for localhost/127.0.0.1, made with the openssl CLI. */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PgCluster } from '../harness/cluster.js';

export interface TestCerts {
  dir: string;
  caCert: string;
  cert: string;
  key: string;
}

export function makeCerts(cn = 'localhost'): TestCerts {
  const dir = mkdtempSync(join(tmpdir(), 'pgha-tls-'));
  const ossl = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  ossl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=pgha test CA', '-keyout', 'ca.key', '-out', 'ca.crt']);
  ossl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-keyout', 'server.key', '-out', 'server.csr']);
  writeFileSync(join(dir, 'san.ext'), `subjectAltName=DNS:${cn},IP:127.0.0.1\n`);
  ossl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'san.ext', '-out', 'server.crt']);
  return { dir, caCert: join(dir, 'ca.crt'), cert: join(dir, 'server.crt'), key: join(dir, 'server.key') };
}

/** give a (stopped) cluster this certificate and key, owned by the server's user, and turn ssl on */
export function serveTls(cluster: PgCluster, certs: Pick<TestCerts, 'dir'>): void {
  for (const f of ['server.crt', 'server.key']) {
    const dst = join(cluster.dataDir, f);
    copyFileSync(join(certs.dir, f), dst);
    chmodSync(dst, 0o600);
    const st = statSync(cluster.dataDir);
    chownSync(dst, st.uid, st.gid);
  }
  cluster.writeConf({ ssl: 'on', ssl_cert_file: 'server.crt', ssl_key_file: 'server.key' });
}
