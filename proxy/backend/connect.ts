/**
 * Open a connection to a PostgreSQL server the way libpq does for a given sslmode: TCP with
 * TCP_NODELAY, then SSLRequest and a TLS handshake when the mode asks for it.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { serialize } from 'pg-protocol';

export type BackendSslMode = 'disable' | 'prefer' | 'require' | 'verify-ca' | 'verify-full';
export const BACKEND_SSL_MODES: BackendSslMode[] = ['disable', 'prefer', 'require', 'verify-ca', 'verify-full'];

export interface BackendTls {
  mode: BackendSslMode;
  /** PEM CA bundle for verify-ca / verify-full */
  ca?: Buffer;
  /** PEM certificate and key presented to a server that asks for one (pg_hba `cert`, clientcert=…) */
  cert?: Buffer;
  key?: Buffer;
}

export interface BackendAddress {
  host: string;
  port: number;
}

export class BackendConnectError extends Error {
  constructor(
    message: string,
    readonly backend: string,
    /** ECONNREFUSED, ETIMEDOUT, … or SSL */
    readonly code: string,
  ) {
    super(message);
    this.name = 'BackendConnectError';
  }
}

export const addressText = (a: BackendAddress): string => (a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`);

function tcp(addr: BackendAddress, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect({ host: addr.host, port: addr.port, noDelay: true });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new BackendConnectError(`connect to ${addressText(addr)} timed out after ${timeoutMs} ms`, addressText(addr), 'ETIMEDOUT'));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new BackendConnectError(`connect to ${addressText(addr)}: ${e.message}`, addressText(addr), e.code ?? 'ECONNECT'));
    });
  });
}

/** one byte answer to SSLRequest */
function sslAnswer(s: Socket, addr: BackendAddress, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new BackendConnectError(`${addressText(addr)} did not answer SSLRequest in ${timeoutMs} ms`, addressText(addr), 'ETIMEDOUT')), timeoutMs);
    const onData = (b: Buffer) => {
      if (b.length !== 1) return done(new BackendConnectError(`${addressText(addr)} answered SSLRequest with ${b.length} bytes (expected 1)`, addressText(addr), 'EPROTO'));
      done(null, b[0]);
    };
    const onError = (e: Error) => done(new BackendConnectError(`${addressText(addr)}: ${e.message}`, addressText(addr), 'ECONNRESET'));
    const onClose = () => done(new BackendConnectError(`${addressText(addr)} closed the connection during SSLRequest`, addressText(addr), 'ECONNRESET'));
    function done(err: Error | null, v?: number) {
      clearTimeout(timer);
      s.off('data', onData);
      s.off('error', onError);
      s.off('close', onClose);
      s.pause();
      if (err) {
        s.destroy();
        reject(err);
      } else resolve(v!);
    }
    s.on('data', onData);
    s.once('error', onError);
    s.once('close', onClose);
    s.write(serialize.requestSsl());
  });
}

function handshake(s: Socket, addr: BackendAddress, tls: BackendTls, timeoutMs: number): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const verify = tls.mode === 'verify-ca' || tls.mode === 'verify-full';
    const t = tlsConnect({
      socket: s,
      servername: tls.mode === 'verify-full' && !/^[\d.:]+$/.test(addr.host) ? addr.host : undefined,
      ca: tls.ca,
      cert: tls.cert,
      key: tls.key,
      rejectUnauthorized: verify,
      // verify-ca checks the chain only; verify-full also the host name (Node's default check)
      checkServerIdentity: tls.mode === 'verify-full' ? undefined : () => undefined,
    });
    const timer = setTimeout(() => {
      t.destroy();
      reject(new BackendConnectError(`TLS handshake with ${addressText(addr)} timed out`, addressText(addr), 'ETIMEDOUT'));
    }, timeoutMs);
    t.once('secureConnect', () => {
      clearTimeout(timer);
      t.removeAllListeners('error');
      t.setNoDelay(true);
      resolve(t);
    });
    t.once('error', (e) => {
      clearTimeout(timer);
      t.destroy();
      reject(new BackendConnectError(`TLS with ${addressText(addr)}: ${e.message}`, addressText(addr), 'SSL'));
    });
  });
}

export async function connectBackend(addr: BackendAddress, tls: BackendTls, timeoutMs: number): Promise<Socket> {
  const s = await tcp(addr, timeoutMs);
  if (tls.mode === 'disable') return s;
  const answer = await sslAnswer(s, addr, timeoutMs);
  if (answer === 0x53) return handshake(s, addr, tls, timeoutMs);
  if (answer === 0x4e && tls.mode === 'prefer') return s;
  s.destroy();
  if (answer === 0x4e) throw new BackendConnectError(`${addressText(addr)} does not support SSL, but backend sslmode is ${tls.mode}`, addressText(addr), 'SSL');
  throw new BackendConnectError(`${addressText(addr)} answered SSLRequest with byte 0x${answer.toString(16)} (expected S or N)`, addressText(addr), 'EPROTO');
}
