/**
 * One pooled server connection: opened and logged in by the proxy with the credentials of the
 * user's entry (plain password: any method; MD5 hash: md5; SCRAM secret: SCRAM with the ClientKey a
 * client proved), its reported parameters, its BackendKeyData (for cancels), and the statements
 * the pool prepared on it.
 */
import type { Socket } from 'node:net';
import { serialize } from 'pg-protocol';
import { connectBackend, type BackendAddress, type BackendTls } from '../backend/connect.js';
import { noticeFields } from '../protocol/backend-messages.js';
import type { UserEntry } from './auth.js';
import type { NativePool } from './native-pool.js';
import { Framer } from './framer.js';
import { constantTimeEqual, hmac, md5Response, md5Secret, nonce, saltedPassword, scramAttributes, sha256, xor } from './secrets.js';

let nextServerId = 1;

/** the server refused the login (its ErrorResponse fields) */
export class ServerLoginError extends Error {
  constructor(
    readonly fields: Record<string, string>,
    message = fields.M ?? 'login refused',
  ) {
    super(message);
  }
}

/** native: carried by the native transaction pool, which knows whether it is idle or in use */
export type ServerState = 'login' | 'idle' | 'active' | 'native' | 'closed';

export class ServerConn {
  readonly id = nextServerId++;
  state: ServerState = 'login';
  readonly params = new Map<string, string>();
  /** settings as the pool believes they are on this server (lower-case names) */
  readonly settings = new Map<string, string>();
  /** statements prepared by the pool on this server (server-side names) */
  readonly prepared = new Set<string>();
  backendKey: { pid: number; key: Buffer } | null = null;
  readonly connectedAt = Date.now();
  lastUsed = Date.now();
  /** the native loop was told it is past --server-lifetime */
  retiring = false;
  /** a client is linked to this server (by the pool) */
  client: unknown = null;
  /** the transaction status of the last ReadyForQuery */
  txStatus: 'I' | 'T' | 'E' = 'I';
  /** bytes from the server: the linked client's relay, or the pool's while idle */
  onData: (chunk: Buffer) => void = () => undefined;
  /** the connection is gone (closed by the server, reset, or by us) */
  onGone: (why: string) => void = () => undefined;
  /** the pool's own note of the end */
  onClosed: () => void = () => undefined;
  /** what the pool does with bytes from this connection while it is idle (set once by the pool) */
  idleData: (chunk: Buffer) => void = () => undefined;
  /** the server's stream, framed (at a message boundary whenever no client is linked) */
  readonly framer: Framer;

  private constructor(
    readonly socket: Socket,
    readonly node: string,
    readonly address: BackendAddress,
    readonly user: string,
    readonly database: string,
  ) {
    this.framer = new Framer(`server ${node}`, 0x7fffffff);
  }

  static async open(o: { node: string; address: BackendAddress; tls: BackendTls; timeoutMs: number; entry: UserEntry; database: string; log?: (msg: string) => void }): Promise<ServerConn> {
    const socket = await connectBackend(o.address, o.tls, o.timeoutMs);
    const s = new ServerConn(socket, o.node, o.address, o.entry.user, o.database);
    try {
      await s.login(o.entry, o.timeoutMs);
    } catch (e) {
      socket.destroy();
      throw e;
    }
    s.state = 'idle';
    socket.on('data', (c: Buffer) => s.onData(c));
    socket.on('error', (e) => s.gone(e.message));
    socket.on('close', () => s.gone('connection closed'));
    socket.resume();
    return s;
  }

  private login(entry: UserEntry, timeoutMs: number): Promise<void> {
    const sock = this.socket;
    const framer = new Framer(`server ${this.node}`, 1 << 24);
    return new Promise<void>((resolve, reject) => {
      let scram: { clientNonce: string; firstBare: string; serverSignature?: Buffer } | null = null;
      const timer = setTimeout(() => done(new Error(`login to ${this.node} not finished within ${timeoutMs} ms`)), timeoutMs);
      const done = (err: Error | null) => {
        clearTimeout(timer);
        sock.off('data', onData);
        sock.off('error', onError);
        sock.off('close', onClose);
        sock.pause();
        if (err) reject(err);
        else resolve();
      };
      const onError = (e: Error) => done(new Error(`${this.node}: ${e.message}`));
      const onClose = () => done(new Error(`${this.node} closed the connection during login`));
      const password = entry.secret.kind === 'plain' ? entry.secret.password : null;
      const onMessage = (type: number, msg: Buffer) => {
        const body = msg.subarray(5);
        switch (type) {
          case 0x52: {
            const code = body.readInt32BE(0);
            if (code === 0) return;
            if (code === 3) {
              if (password === null) throw new Error(`${this.node} asks ${entry.user} for a clear-text password, but the auth file holds only a hash`);
              sock.write(serialize.password(password));
            } else if (code === 5) {
              const secret = password !== null ? md5Secret(password, entry.user) : entry.secret.kind === 'md5' ? entry.secret.hash : null;
              if (!secret) throw new Error(`${this.node} asks ${entry.user} for an MD5 password, but the auth file holds a SCRAM secret (give the plain password, or the MD5 hash)`);
              sock.write(serialize.password(md5Response(secret, body.subarray(4, 8))));
            } else if (code === 10) {
              const mechs = body.subarray(4).toString('utf8').split('\0').filter(Boolean);
              if (!mechs.includes('SCRAM-SHA-256')) throw new Error(`${this.node} offers ${mechs.join(', ')}: the pool logs in with SCRAM-SHA-256 only`);
              if (password === null && !entry.clientKey) {
                throw new Error(
                  entry.secret.kind === 'md5'
                    ? `${this.node} asks ${entry.user} for SCRAM, but the auth file holds an MD5 hash (give the plain password or the server's SCRAM secret)`
                    : `${this.node} asks ${entry.user} for SCRAM: with a SCRAM secret in the auth file the pool logs in once a client of ${entry.user} has (its proof gives the ClientKey)`,
                );
              }
              const clientNonce = nonce();
              const firstBare = `n=*,r=${clientNonce}`;
              scram = { clientNonce, firstBare };
              sock.write(serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', `n,,${firstBare}`));
            } else if (code === 11) {
              if (!scram) throw new Error(`${this.node}: SASLContinue before SASL`);
              const serverFirst = body.toString('utf8', 4);
              const a = scramAttributes(serverFirst);
              const r = a.get('r') ?? '';
              const salt = Buffer.from(a.get('s') ?? '', 'base64');
              const iterations = Number(a.get('i'));
              if (!r.startsWith(scram.clientNonce) || !salt.length || !(iterations > 0)) throw new Error(`${this.node}: malformed SCRAM server-first-message`);
              let clientKey: Buffer;
              let serverKey: Buffer | null = null;
              if (password !== null) {
                const sp = saltedPassword(password, salt, iterations);
                clientKey = hmac(sp, 'Client Key');
                serverKey = hmac(sp, 'Server Key');
              } else {
                clientKey = entry.clientKey!;
                if (entry.secret.kind === 'scram') {
                  if (!entry.secret.keys.salt.equals(salt) || entry.secret.keys.iterations !== iterations) throw new Error(`${this.node}: ${entry.user}'s SCRAM secret on the server differs from the auth file's (salt or iterations)`);
                  serverKey = entry.secret.keys.serverKey;
                }
              }
              const finalBare = `c=biws,r=${r}`;
              const authMessage = `${scram.firstBare},${serverFirst},${finalBare}`;
              const proof = xor(clientKey, hmac(sha256(clientKey), authMessage));
              scram.serverSignature = serverKey ? hmac(serverKey, authMessage) : undefined;
              sock.write(serialize.sendSCRAMClientFinalMessage(`${finalBare},p=${proof.toString('base64')}`));
            } else if (code === 12) {
              const v = scramAttributes(body.toString('utf8', 4)).get('v');
              if (!scram?.serverSignature || !v || !constantTimeEqual(Buffer.from(v, 'base64'), scram.serverSignature)) throw new Error(`${this.node}: the server's SCRAM signature does not match`);
            } else throw new Error(`${this.node} asks for authentication method ${code}: the pool logs in with password, MD5 or SCRAM-SHA-256`);
            return;
          }
          case 0x53: {
            const [k, v] = body.toString('utf8').split('\0');
            this.params.set(k, v);
            this.settings.set(k.toLowerCase(), v);
            return;
          }
          case 0x4b:
            this.backendKey = { pid: body.readInt32BE(0), key: Buffer.from(body.subarray(4)) };
            return;
          case 0x5a:
            return done(null);
          case 0x45:
            return done(new ServerLoginError(noticeFields(body)));
          default:
            return;
        }
      };
      const onData = (chunk: Buffer) => {
        try {
          framer.feed(chunk, onMessage);
        } catch (e) {
          done(e as Error);
        }
      };
      sock.on('data', onData);
      sock.once('error', onError);
      sock.once('close', onClose);
      sock.write(serialize.startup({ user: entry.user, database: this.database }));
      sock.resume();
    });
  }

  /** the server (or the network) ended the connection, not the pool */
  lost = false;
  /** the native pool carries this connection (Node no longer reads it) */
  native: NativePool | null = null;

  /** the native pool closed this connection (`lost`: the server or the network ended it) */
  nativeClosed(lost: boolean, why: string): void {
    this.gone(why, lost);
  }

  private gone(why: string, lost = true): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.lost = lost;
    this.socket.destroy();
    this.onGone(why);
    this.onClosed();
  }

  close(): void {
    if (this.state === 'closed') return;
    // the native pool writes Terminate and reports the end (nativeClosed)
    if (this.native) return this.native.closeServer(this.id);
    this.state = 'closed';
    this.onGone('closed by the pool');
    this.onClosed();
    if (!this.socket.destroyed) this.socket.end(serialize.end());
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }
}
