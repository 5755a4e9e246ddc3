/**
 * One client of the pool: authenticated by the proxy (SCRAM-SHA-256 or MD5 against the auth
 * file's entry, failing as PostgreSQL fails: 28P01), then given a server connection for its
 * session (session mode) or for each transaction (transaction mode: back to the pool at
 * ReadyForQuery 'I' once nothing more is pending). Every message is framed both ways: settings the
 * client asked for at startup are SET on the server connection it lands on when they differ,
 * named prepared statements are carried across server connections (prepared.ts), and a
 * transaction in flight on a server that goes away ends the client with a clear SQLSTATE — while a
 * client between transactions notices nothing.
 */
import { randomBytes, randomInt } from 'node:crypto';
import type { Socket } from 'node:net';
import { errorResponse, noticeFields, errorSeverity } from '../protocol/backend-messages.js';
import { PQ_LARGE_MESSAGE_LIMIT, SQLSTATE } from '../protocol/codes.js';
import type { UserEntry } from './auth.js';
import { consoleQuery } from './console.js';
import { cstring, Framer, Out } from './framer.js';
import { AUTH_OK, authMd5, authSasl, authSaslContinue, authSaslFinal, backendKeyData, CLOSE_COMPLETE, parameterStatus, PARSE_COMPLETE, readyForQuery } from './messages.js';
import { NATIVE_WAIT_TIMEOUT, type NativeClient, type NativeView } from './native-pool.js';
import { AcquireError, type PoolClient, type PoolManager } from './pool.js';
import { bindOf, parseOf, renamedBind, renamedParse, renamedTarget, serverName, targetOf, type ClientStatement } from './prepared.js';
import { constantTimeEqual, hmac, md5Response, md5Secret, nonce, scramAttributes, scramKeysFromPassword, sha256, xor, type ScramKeys } from './secrets.js';
import type { ServerConn } from './server-conn.js';
import { type Counts, RequestClock } from './stats.js';

const SCRAM_ITERATIONS = 4096;
/** per user: a salt and the keys derived from a plain password (derived once, as a server stores them once) */
const plainKeys = new Map<string, ScramKeys & { password: string }>();
const mockSalt = randomBytes(16);

let nextClientId = 1;

/** reported settings a client may change with SET that follow it to the next server connection (transaction mode) */
const TRACKED = new Set(['client_encoding', 'datestyle', 'intervalstyle', 'timezone', 'standard_conforming_strings', 'application_name']);

/** startup parameters that are not settings */
const NOT_SETTINGS = new Set(['user', 'database', 'options', 'replication']);

/** one request sent to the server, and what to do with its answer */
interface Pending {
  /** the request's type: P B D E C S Q F */
  t: number;
  /** fwd: relay the answer; swallow: the proxy's own (drop it); fake: not sent, answer with `reply` when its turn comes */
  act: 'fwd' | 'swallow' | 'fake';
  /** a Parse the proxy sent: its server-side name (forgotten when the server skips it) */
  prepared?: string;
  /** a Close the proxy sent to make room: the statement it closes (kept when the server skips it) */
  evicted?: string;
  reply?: Buffer;
}

const T = {
  query: 0x51,
  parse: 0x50,
  bind: 0x42,
  describe: 0x44,
  execute: 0x45,
  close: 0x43,
  sync: 0x53,
  flush: 0x48,
  functionCall: 0x46,
  terminate: 0x58,
  password: 0x70,
} as const;

const NOOP = (): void => undefined;

/**
 * can the query text of a Query message start with one of these letters (either case)? false only
 * when its first character after white space is another letter or digit: a cheap test before a regex
 */
function mayStartWith(msg: Buffer, a: number, b: number): boolean {
  let i = 5;
  while (i < msg.length && (msg[i] === 0x20 || (msg[i] >= 0x09 && msg[i] <= 0x0d))) i++;
  const c = msg[i] & 0xdf;
  if (c === a || c === b) return true;
  // comments and anything that is not a plain letter: let the regex decide
  return !((c >= 0x41 && c <= 0x5a) || (msg[i] >= 0x30 && msg[i] <= 0x39));
}

/** a transaction's start, which changes nothing on the server before it is answered */
const BEGIN_RE = /^\s*(BEGIN|START\s+TRANSACTION)(\s+(TRANSACTION|WORK|ISOLATION\s+LEVEL|READ|WRITE|ONLY|COMMITTED|UNCOMMITTED|REPEATABLE|SERIALIZABLE|DEFERRABLE|NOT|,)+)*\s*;?\s*$/i;

const LISTEN_RE = /^(?:\s|--[^\n]*\n|\/\*[\s\S]*?\*\/)*(LISTEN)\b/i;

export class PooledClient implements PoolClient, NativeClient {
  readonly id = nextClientId++;
  readonly startedAt = Date.now();
  readonly user: string;
  readonly database: string;
  readonly cancelKey = { pid: randomInt(1, 2 ** 31 - 1), key: randomInt(-(2 ** 31), 2 ** 31 - 1) };
  server: ServerConn | null = null;
  waitingSince = 0;
  phase: 'auth' | 'ready' | 'closed' = 'auth';
  txStatus: 'I' | 'T' | 'E' = 'I';
  /** settings asked for at startup (and changed since, as the server reported them) */
  private readonly settings = new Map<string, { name: string; value: string }>();
  private entry: UserEntry | null = null;
  private readonly framer = new Framer('client', PQ_LARGE_MESSAGE_LIMIT);
  /** per chunk from the server: what goes to the client, and whether the transaction ended */
  private serverOut = new Out();
  private serverRelease = false;
  private readonly onServerData = (c: Buffer) => this.fromServer(c);
  private readonly onServerGone = (why: string) => this.serverGone(why);
  private readonly onServerFrame = (type: number, msg: Buffer) => {
    const out = this.serverOut;
    if (this.onServerMessage(this.server!, type, msg, out)) this.serverRelease = true;
    // answers the proxy gives itself come when every answer before them has
    while (this.queue.length > 0 && this.queue[0].act === 'fake') out.add(this.queue.shift()!.reply!);
  };
  /** long messages from the linked server, as they arrive */
  private readonly serverStream = { start: (type: number, head: Buffer) => this.streamToClient(type, head), part: (b: Buffer) => this.clientWrite(b) };
  private readonly onClientFrame = (type: number, msg: Buffer) => {
    if (this.phase === 'auth') {
      if (!this.authStep) throw new Error(`message type ${String.fromCharCode(type)} before authentication was asked for`);
      return this.authStep(type, msg);
    }
    if (type === T.terminate) return this.close('client terminated');
    this.inbox.push(msg);
  };
  private authStep: ((type: number, msg: Buffer) => void) | null = null;
  private readonly inbox: Buffer[] = [];
  private acquiring = false;
  /** requests sent to the linked server whose answers have not all come (transaction mode tracks each) */
  private readonly queue: Pending[] = [];
  /** ReadyForQuery still to come from the linked server */
  private pendingReady = 0;
  /** extended-protocol messages sent since the last Sync: the server holds state for them */
  private partial = false;
  private serverSentFatal = false;
  /** the proxy's own SET on the linked server failed */
  private setFailed: Record<string, string> | null = null;
  private readonly statements = new Map<string, ClientStatement>();
  /**
   * what was sent on the linked server connection while it can still be sent again elsewhere:
   * only BEGIN / START TRANSACTION, nothing answered yet (null: not any more)
   */
  private replay: Buffer[] | null = null;
  private answered = false;
  private readonly console: boolean;
  transactions = 0;
  /** carried by the native pool loop since its login */
  private native = false;
  /** its (user, database)'s counters in the TypeScript pool, once logged in (not on the console) */
  private counts: Counts | null = null;
  private readonly clock = new RequestClock();

  constructor(
    private readonly mgr: PoolManager,
    private readonly socket: Socket,
    params: Record<string, string>,
    rest: Buffer,
    readonly kind: 'rw' | 'ro',
    readonly tls: boolean,
  ) {
    this.user = params.user;
    this.database = params.database || params.user;
    this.console = this.database === 'pgha';
    for (const [k, v] of Object.entries(params)) if (!NOT_SETTINGS.has(k)) this.settings.set(k.toLowerCase(), { name: k, value: v });
    mgr.register(this);
    this.framer.streamTo = { start: (type, head) => this.streamToServer(type, head), part: (b) => this.streamPart(b) };
    socket.setNoDelay?.(true);
    socket.on('data', (c: Buffer) => this.fromClient(c));
    socket.on('error', () => this.close('client error'));
    socket.on('close', () => this.close('client closed'));
    socket.on('end', () => this.close('client closed'));
    const authTimer = setTimeout(() => {
      if (this.phase === 'auth') {
        this.socket.destroy();
        this.close('authentication timeout');
      }
    }, mgr.cfg.authTimeoutMs);
    authTimer.unref();
    const opts = (params.options ?? '').trim();
    if (params.replication && params.replication !== 'false' && params.replication !== '0') {
      this.fatal(SQLSTATE.protocolViolation, 'pgha-proxy: replication connections are not pooled: connect to the server directly');
      return;
    }
    if (opts && !this.parseOptions(opts)) return;
    void this.startAuth()
      .catch((e) => this.fatal(SQLSTATE.invalidAuthorizationSpecification, `pgha-proxy: ${(e as Error).message}`))
      .finally(() => clearTimeout(authTimer));
    if (rest.length) this.fromClient(rest);
  }

  /** `-c name=value` and `--name=value` in the options startup parameter become settings */
  private parseOptions(opts: string): boolean {
    const words = opts.split(/\s+/);
    for (let i = 0; i < words.length; i++) {
      let kv: string | undefined;
      if (words[i] === '-c') kv = words[++i];
      else if (words[i].startsWith('-c')) kv = words[i].slice(2);
      else if (words[i].startsWith('--')) kv = words[i].slice(2);
      const eq = kv?.indexOf('=') ?? -1;
      if (!kv || eq <= 0) {
        this.fatal(SQLSTATE.featureNotSupported, `pgha-proxy: unsupported startup options "${opts}": only -c name=value and --name=value are carried to pooled server connections`);
        return false;
      }
      const name = kv.slice(0, eq).replace(/-/g, '_');
      this.settings.set(name.toLowerCase(), { name, value: kv.slice(eq + 1) });
    }
    return true;
  }

  describe(view: NativeView | null = null): Record<string, string | number | null> {
    const nv = this.native ? view?.clients.get(this.id) : undefined;
    if (nv) {
      const s = nv.server === null ? null : (this.mgr.native?.servers.get(nv.server) ?? null);
      return {
        id: this.id,
        user: this.user,
        database: this.database,
        state: nv.state,
        addr: this.socket.remoteAddress ?? null,
        port: this.socket.remotePort ?? null,
        connect_time: new Date(this.startedAt).toISOString(),
        wait_ms: nv.waitMs,
        server: nv.server,
        node: s?.node ?? null,
        tls: 'no',
        transactions: nv.transactions,
        prepared_statements: nv.statements,
      };
    }
    return {
      id: this.id,
      user: this.user,
      database: this.database,
      state: this.phase === 'auth' ? 'login' : this.waitingSince ? 'waiting' : this.server ? 'active' : 'idle',
      addr: this.socket.remoteAddress ?? null,
      port: this.socket.remotePort ?? null,
      connect_time: new Date(this.startedAt).toISOString(),
      wait_ms: this.waitingSince ? Date.now() - this.waitingSince : 0,
      server: this.server?.id ?? null,
      node: this.server?.node ?? null,
      tls: this.tls ? 'yes' : 'no',
      transactions: this.transactions,
      prepared_statements: this.statements.size,
    };
  }

  // ---------------------------------------------------------------- authentication

  private async startAuth(): Promise<void> {
    const s = this.mgr.settings;
    if (this.console && !s.adminUsers.includes(this.user)) {
      // PgBouncer says the same for a user not allowed on its console
      return this.fatal(SQLSTATE.invalidAuthorizationSpecification, `pgha-proxy: not allowed to connect to the console database "pgha" as ${this.user} (--admin-users)`);
    }
    const entry = await this.mgr.auth.lookup(this.user, this.console ? 'postgres' : this.database);
    if (this.phase !== 'auth') return;
    this.entry = entry;
    const kind = entry?.secret.kind;
    if (kind === 'md5' || (kind !== 'scram' && s.authType === 'md5')) this.md5Auth(entry);
    else this.scramAuth(entry);
  }

  private authFailed(): void {
    this.fatal('28P01', `password authentication failed for user "${this.user}"`);
  }

  private md5Auth(entry: UserEntry | null): void {
    const salt = randomBytes(4);
    const secret = entry ? (entry.secret.kind === 'md5' ? entry.secret.hash : entry.secret.kind === 'plain' ? md5Secret(entry.secret.password, this.user) : null) : null;
    this.authStep = (type, msg) => {
      if (type !== T.password) return this.fatal(SQLSTATE.protocolViolation, `expected password response, got message type ${type}`);
      const [answer] = cstring(msg, 5);
      if (!secret || !constantTimeEqual(answer, md5Response(secret, salt))) return this.authFailed();
      this.authenticated();
    };
    this.socket.write(authMd5(salt));
  }

  private scramKeys(entry: UserEntry | null): ScramKeys | null {
    if (!entry) return null;
    if (entry.secret.kind === 'scram') return entry.secret.keys;
    if (entry.secret.kind !== 'plain') return null;
    let k = plainKeys.get(this.user);
    if (!k || k.password !== entry.secret.password) {
      k = { ...scramKeysFromPassword(entry.secret.password, randomBytes(16), SCRAM_ITERATIONS), password: entry.secret.password };
      plainKeys.set(this.user, k);
    }
    return k;
  }

  private scramAuth(entry: UserEntry | null): void {
    // an unknown user goes through the exchange too and fails at its end, as PostgreSQL's mock authentication does
    const keys = this.scramKeys(entry) ?? { iterations: SCRAM_ITERATIONS, salt: sha256(Buffer.concat([mockSalt, Buffer.from(this.user)])).subarray(0, 16), storedKey: randomBytes(32), serverKey: randomBytes(32) };
    let first: { bare: string; serverFirst: string; nonce: string; gs2: string } | null = null;
    this.authStep = (type, msg) => {
      if (type !== T.password) return this.fatal(SQLSTATE.protocolViolation, `expected SASL response, got message type ${type}`);
      if (!first) {
        const [mech, at] = cstring(msg, 5);
        if (mech !== 'SCRAM-SHA-256') return this.fatal(SQLSTATE.protocolViolation, `client selected an invalid SASL authentication mechanism "${mech}" (pgha-proxy offers SCRAM-SHA-256)`);
        const len = msg.readInt32BE(at);
        const text = msg.toString('utf8', at + 4, at + 4 + Math.max(0, len));
        const m = /^([ny]),([^,]*),(.*)$/.exec(text);
        if (!m) return this.fatal(SQLSTATE.protocolViolation, 'malformed SCRAM message (channel binding requested, or not a client-first-message)');
        const cnonce = scramAttributes(m[3]).get('r');
        if (!cnonce) return this.fatal(SQLSTATE.protocolViolation, 'malformed SCRAM message (no nonce)');
        const full = cnonce + nonce();
        const serverFirst = `r=${full},s=${keys.salt.toString('base64')},i=${keys.iterations}`;
        first = { bare: m[3], serverFirst, nonce: full, gs2: `${m[1]},${m[2]},` };
        this.socket.write(authSaslContinue(serverFirst));
        return;
      }
      const text = msg.toString('utf8', 5);
      const pAt = text.lastIndexOf(',p=');
      const a = scramAttributes(text);
      if (pAt < 0 || a.get('r') !== first.nonce || a.get('c') !== Buffer.from(first.gs2).toString('base64')) return this.fatal(SQLSTATE.protocolViolation, 'malformed SCRAM message (nonce or channel binding data do not match)');
      const authMessage = `${first.bare},${first.serverFirst},${text.slice(0, pAt)}`;
      const proof = Buffer.from(a.get('p') ?? '', 'base64');
      if (proof.length !== 32) return this.authFailed();
      const clientKey = xor(proof, hmac(keys.storedKey, authMessage));
      if (!entry || !constantTimeEqual(sha256(clientKey), keys.storedKey)) return this.authFailed();
      if (entry.secret.kind === 'scram') entry.clientKey = clientKey;
      this.socket.write(authSaslFinal(`v=${hmac(keys.serverKey, authMessage).toString('base64')}`));
      this.authenticated();
    };
    this.socket.write(authSasl(['SCRAM-SHA-256']));
  }

  private authenticated(): void {
    this.authStep = null;
    this.socket.write(AUTH_OK);
    if (this.console) {
      this.phase = 'ready';
      this.socket.write(Buffer.concat([parameterStatus('server_version', '15.0 (pgha-proxy console)'), parameterStatus('client_encoding', 'UTF8'), parameterStatus('server_encoding', 'UTF8'), parameterStatus('standard_conforming_strings', 'on'), backendKeyData(this.cancelKey.pid, this.cancelKey.key), readyForQuery('I')]));
      return;
    }
    void this.finishLogin();
  }

  /** the server parameters, the key, ReadyForQuery: from a login of this user on the node (one is made when none is known) */
  private async finishLogin(): Promise<void> {
    let params = this.mgr.loginParams(this.user, this.database, this.kind);
    if (!params) {
      this.socket.pause();
      let s: ServerConn;
      try {
        s = await this.mgr.acquire(this, this.entry!);
      } catch (e) {
        const ae = e instanceof AcquireError ? e : null;
        return this.fatal(ae?.code ?? SQLSTATE.connectionFailure, (e as Error).message, ae?.detail, ae?.hint);
      }
      if (this.phase === 'closed') {
        this.mgr.release(s, this.entry!, true, false);
        return;
      }
      params = new Map(s.params);
      // session mode keeps this connection for the session, unless the native loop is to carry the
      // client: it then gets one from the loop (this one, as the loop asks) at its first message
      if (this.mgr.settings.mode === 'session' && !this.canGoNative()) {
        this.link(s);
      } else this.mgr.release(s, this.entry!, true, false);
      this.socket.resume();
    }
    if (this.phase === 'closed') return;
    const out: Buffer[] = [];
    for (const [k, v] of params) out.push(parameterStatus(k, this.settings.get(k.toLowerCase())?.value ?? v));
    out.push(backendKeyData(this.cancelKey.pid, this.cancelKey.key), readyForQuery('I'));
    this.counts = this.mgr.countersFor(this.user, this.database);
    this.phase = 'ready';
    this.socket.write(Buffer.concat(out));
    if (!this.canGoNative()) return this.pump();
    // once the chunk being framed now (the last authentication message, when the login did not
    // wait for a server) is done: the framer's offset counts it then, and anything the client sent
    // with it is in the inbox (such a client stays with the TypeScript pool)
    queueMicrotask(() => {
      if (this.phase !== 'ready') return;
      if (this.inbox.length === 0 && this.framer.atBoundary && !this.server && !this.acquiring) {
        const settings = [...this.settings.values()];
        this.native = this.mgr.native!.adoptClient(this, this.socket, this.user, this.database, settings, this.framer.offset);
        if (this.native) return;
      }
      this.pump();
    });
  }

  // ---------------------------------------------------------------- the native pool

  /** the native loop there (either pool mode), a client on plain TCP of the read-write port */
  private canGoNative(): boolean {
    return this.mgr.native !== null && this.kind === 'rw' && !this.tls && !this.console;
  }

  /** the native loop has no idle connection for this client: one from the pool, or wait in the loop for one */
  nativeAcquire(): void {
    if (this.acquiring || this.phase === 'closed') return;
    const native = this.mgr.native!;
    this.acquiring = true;
    this.waitingSince = Date.now();
    this.mgr.acquire(this, this.entry!, true).then(
      (s) => {
        this.acquiring = false;
        this.waitingSince = 0;
        if (s === null) return native.wait(this.id);
        s.client = null;
        if (this.phase === 'closed') {
          if (native.addIdle(s)) this.mgr.handedToNative(s);
          else this.mgr.release(s, this.entry!, true, false);
          return;
        }
        if (native.giveServer(this.id, s)) this.mgr.handedToNative(s);
        else {
          this.mgr.release(s, this.entry!, true, false);
          native.fail(this.id, SQLSTATE.connectionFailure, `pgha-proxy: the server connection to ${s.node} uses TLS, which the native pool does not carry: run pgha-proxy with --relay node or --backend-sslmode disable`);
        }
      },
      (e: Error) => {
        this.acquiring = false;
        this.waitingSince = 0;
        const ae = e instanceof AcquireError ? e : null;
        native.fail(this.id, ae?.code ?? SQLSTATE.connectionFailure, e.message, ae?.detail, ae?.hint);
      },
    );
  }

  /** the native loop ended this client */
  nativeClosed(why: string): void {
    if (this.phase === 'closed') return;
    if (why === NATIVE_WAIT_TIMEOUT) this.mgr.waitedTooLong(this);
    if (why.startsWith('client protocol violation')) this.mgr.log.warn({ client: this.id, err: why }, 'client protocol violation');
    this.phase = 'closed';
    this.mgr.unregister(this);
    this.socket.destroy();
    this.mgr.log.debug({ client: this.id, why }, 'pooled client closed');
  }

  // ---------------------------------------------------------------- client → server

  private fromClient(chunk: Buffer): void {
    if (this.phase === 'closed') return;
    if (this.counts) this.counts.bytesFromClients += chunk.length;
    try {
      this.framer.feed(chunk, this.onClientFrame);
    } catch (e) {
      this.mgr.log.warn({ client: this.id, err: (e as Error).message }, 'client protocol violation');
      return this.fatal(SQLSTATE.protocolViolation, `pgha-proxy: ${(e as Error).message}`);
    }
    this.pump();
  }

  /** no server connection is idle: wait for one (the client is not read meanwhile), then go on */
  private acquireThenPump(): void {
    if (this.acquiring) return;
    this.acquiring = true;
    this.waitingSince = Date.now();
    this.socket.pause();
    this.mgr.acquire(this, this.entry!).then(
      (s) => {
        this.acquiring = false;
        if (this.counts) {
          this.counts.waitUs += (Date.now() - this.waitingSince) * 1000;
          this.counts.waits++;
        }
        this.waitingSince = 0;
        if (this.phase === 'closed') return this.mgr.release(s, this.entry!, true, false);
        this.link(s);
        this.socket.resume();
        this.pump();
      },
      (e: Error) => {
        this.acquiring = false;
        this.waitingSince = 0;
        const ae = e instanceof AcquireError ? e : null;
        this.fatal(ae?.code ?? SQLSTATE.connectionFailure, e.message, ae?.detail, ae?.hint);
      },
    );
  }

  /**
   * The start of a long client message (Framer.streamTo): sent on to the server as it arrives when
   * it passes unchanged — in session mode any message, in transaction mode a Query that is not
   * LISTEN (its first word in sight), a Bind of the unnamed statement, COPY data (the native
   * loop's rule, pool_protocol.rs streamable) — and nothing before it waits. Without a server
   * connection one is taken if idle, else waited for (the message is then held until it comes).
   */
  private streamToServer(type: number, head: Buffer): boolean {
    if (this.phase !== 'ready' || this.console || this.inbox.length > 0) return false;
    const txn = this.mgr.settings.mode === 'transaction';
    if (txn) {
      if (type === T.query) {
        // the first word in sight (no leading comment), and not LISTEN
        const start = head.toString('latin1', 5, Math.min(head.length, 5 + 256));
        if (!/^\s*[A-Za-z(]/.test(start) || LISTEN_RE.test(start)) return false;
      } else if (type === T.bind) {
        const [, at] = cstring(head, 5);
        if (cstring(head, at)[0] !== '') return false;
      } else if (type !== 0x64) return false;
    }
    if (!this.server && !this.acquiring) {
      const now = this.mgr.acquireNow(this);
      if (now) this.link(now);
      else this.acquireThenPump();
    }
    const s = this.server;
    if (!s) return false;
    this.replay = null;
    this.countRequest(type);
    if (txn && (type === T.query || type === T.bind)) this.queue.push({ t: type, act: 'fwd' });
    this.clock.sent();
    this.streamPart(head);
    return true;
  }

  /**
   * what a message sent on unchanged leaves the server owing: a ReadyForQuery (Query, Sync,
   * FunctionCall), or extended-protocol state until the next Sync (pool_relay.rs count_request)
   */
  private countRequest(type: number): void {
    if (type === T.query || type === T.sync) {
      this.pendingReady++;
      this.partial = false;
    } else if (type === T.functionCall) this.pendingReady++;
    else if (type === T.parse || type === T.bind || type === T.describe || type === T.execute || type === T.close) this.partial = true;
  }

  /** more of a long client message on its way to the server */
  private streamPart(bytes: Buffer): void {
    const s = this.server;
    if (!s) return this.fatal(SQLSTATE.connectionFailure, 'pgha-proxy: the server connection went away in the middle of a message of this client');
    if (!s.socket.write(bytes) && !this.socket.isPaused()) {
      this.socket.pause();
      s.socket.once('drain', () => this.phase !== 'closed' && this.socket.resume());
    }
  }

  /** the start of a long DataRow or COPY data from the server: sent on to the client as it arrives (what came before it first) */
  private streamToClient(type: number, head: Buffer): boolean {
    if ((type !== 0x44 && type !== 0x64) || this.queue[0]?.act === 'swallow') return false;
    const before = this.serverOut.take();
    if (before) this.clientWrite(before);
    this.answered = true;
    this.clientWrite(head);
    return true;
  }

  /** bytes for the client from the linked server: the server is not read while the client does not keep up */
  private clientWrite(b: Buffer): void {
    if (this.counts) this.counts.bytesToClients += b.length;
    const s = this.server;
    if (!this.socket.write(b) && s && !s.socket.isPaused()) {
      s.socket.pause();
      this.socket.once('drain', () => s.socket.resume());
    }
  }

  private pump(): void {
    if (this.phase !== 'ready' || this.inbox.length === 0) return;
    if (this.console) return void this.consolePump();
    if (!this.server && !this.acquiring) {
      const now = this.mgr.acquireNow(this);
      if (now) this.link(now);
    }
    if (!this.server) return this.acquireThenPump();
    const s = this.server;
    const out = new Out();
    const n = this.inbox.length;
    for (let i = 0; i < n; i++) this.toServer(this.inbox[i], out);
    this.inbox.length = 0;
    this.clock.sent();
    const b = out.take();
    if (b && !s.socket.write(b) && !this.socket.isPaused()) {
      this.socket.pause();
      s.socket.once('drain', () => this.phase !== 'closed' && this.socket.resume());
    }
    this.flushFakes();
  }

  private link(s: ServerConn): void {
    this.server = s;
    this.transactions++;
    s.onData = this.onServerData;
    s.onGone = this.onServerGone;
    s.framer.streamTo = this.serverStream;
    this.replay = [];
    this.answered = false;
    // settings the client asked for that the server connection does not have
    const sets: string[] = [];
    for (const [k, { name, value }] of this.settings) {
      if (s.settings.get(k) === value) continue;
      sets.push(`SET ${quoteIdent(name)} = ${quoteLiteral(value)}`);
      s.settings.set(k, value);
    }
    if (sets.length > 0) {
      this.queue.push({ t: T.query, act: 'swallow' });
      this.pendingReady++;
      s.socket.write(queryMessage(sets.join('; ')));
    }
  }

  private toServer(msg: Buffer, out: Out): void {
    const type = msg[0];
    if (this.replay !== null) {
      if (type === T.query && mayStartWith(msg, 0x42, 0x53) && BEGIN_RE.test(msg.toString('utf8', 5, msg.length - 1))) this.replay.push(msg);
      else this.replay = null;
    }
    const txn = this.mgr.settings.mode === 'transaction';
    switch (type) {
      case T.query: {
        this.countRequest(type);
        if (txn) {
          this.queue.push({ t: type, act: 'fwd' });
          if (mayStartWith(msg, 0x4c, 0x4c) && LISTEN_RE.test(msg.toString('utf8', 5, msg.length - 1))) return out.add(queryMessage(notSupported('LISTEN')));
        }
        return out.add(msg);
      }
      case T.sync:
      case T.functionCall:
        this.countRequest(type);
        if (txn) this.queue.push({ t: type, act: 'fwd' });
        return out.add(msg);
      case T.flush:
        return out.add(msg);
    }
    if (!txn) {
      this.countRequest(type);
      return out.add(msg);
    }
    const s = this.server!;
    switch (type) {
      case T.parse: {
        this.partial = true;
        const { name, rest } = parseOf(msg);
        if (name === '') {
          this.queue.push({ t: type, act: 'fwd' });
          return out.add(msg);
        }
        const query = cstring(rest, 0)[0];
        if (LISTEN_RE.test(query)) {
          this.queue.push({ t: type, act: 'fwd' });
          return out.add(renamedParse('', Buffer.concat([Buffer.from(`${notSupported('LISTEN')}\0`), rest.subarray(Buffer.byteLength(query) + 1)])));
        }
        const srv = serverName(rest);
        const parse = renamedParse(srv, rest);
        this.statements.set(name, { server: srv, parse });
        if (s.prepared.has(srv)) {
          touch(s.prepared, srv);
          this.queue.push({ t: type, act: 'fake', reply: PARSE_COMPLETE });
          return;
        }
        this.makeRoom(s, out);
        s.prepared.add(srv);
        this.queue.push({ t: type, act: 'fwd', prepared: srv });
        return out.add(parse);
      }
      case T.bind: {
        this.partial = true;
        const b = bindOf(msg);
        const st = b.statement ? this.statements.get(b.statement) : undefined;
        if (st) {
          this.ensurePrepared(st, out);
          msg = renamedBind(b.portal, st.server, b.rest);
        }
        this.queue.push({ t: type, act: 'fwd' });
        return out.add(msg);
      }
      case T.describe:
      case T.close: {
        this.partial = true;
        const tgt = targetOf(msg);
        const st = tgt.kind === 0x53 && tgt.name ? this.statements.get(tgt.name) : undefined;
        if (st && type === T.close) {
          // kept prepared on the server for others; the client's name is gone
          this.statements.delete(tgt.name);
          this.queue.push({ t: type, act: 'fake', reply: CLOSE_COMPLETE });
          return;
        }
        if (st) {
          this.ensurePrepared(st, out);
          msg = renamedTarget(type, tgt.kind, st.server);
        }
        this.queue.push({ t: type, act: 'fwd' });
        return out.add(msg);
      }
      case T.execute:
        this.partial = true;
        this.queue.push({ t: type, act: 'fwd' });
        return out.add(msg);
      default:
        // CopyData, CopyDone, CopyFail: answered as part of the Query / Execute that started the COPY
        return out.add(msg);
    }
  }

  private ensurePrepared(st: ClientStatement, out: Out): void {
    const s = this.server!;
    if (s.prepared.has(st.server)) return touch(s.prepared, st.server);
    this.makeRoom(s, out);
    s.prepared.add(st.server);
    this.queue.push({ t: T.parse, act: 'swallow', prepared: st.server });
    out.add(st.parse);
  }

  /**
   * before one more statement is prepared on `s`: close the least recently used ones beyond
   * --max-prepared-statements (PgBouncer's max_prepared_statements), so a server connection that
   * lives for months does not collect every statement text an application ever sent. A client's
   * statement closed here is prepared again when the client uses it on this connection.
   */
  private makeRoom(s: ServerConn, out: Out): void {
    while (s.prepared.size >= this.mgr.settings.maxPreparedStatements) {
      const lru = s.prepared.values().next().value as string;
      s.prepared.delete(lru);
      this.queue.push({ t: T.close, act: 'swallow', evicted: lru });
      out.add(renamedTarget(T.close, 0x53, lru));
    }
  }

  /** answers the proxy gives itself, once every answer before them has gone to the client */
  private flushFakes(): void {
    let out: Buffer[] | null = null;
    while (this.queue.length > 0 && this.queue[0].act === 'fake') (out ??= []).push(this.queue.shift()!.reply!);
    if (out) this.clientWrite(out.length === 1 ? out[0] : Buffer.concat(out));
  }

  // ---------------------------------------------------------------- server → client

  private fromServer(chunk: Buffer): void {
    const s = this.server;
    if (!s || this.phase === 'closed') return;
    const out = this.serverOut;
    this.serverRelease = false;
    try {
      s.framer.feed(chunk, this.onServerFrame);
    } catch (e) {
      out.take();
      if (e instanceof SetFailed) {
        return this.fatal(e.fields.C ?? SQLSTATE.protocolViolation, `pgha-proxy: a startup setting of this client failed on the server: ${e.fields.M ?? ''}`);
      }
      return this.fatal(SQLSTATE.protocolViolation, `pgha-proxy: ${(e as Error).message}`);
    }
    const b = out.take();
    if (b) {
      this.answered = true;
      this.clientWrite(b);
    }
    if (this.serverRelease && this.server === s) this.unlink(true);
  }

  /** one server message: relayed, dropped (the proxy's own request) or acted on; true: the transaction is over */
  private onServerMessage(s: ServerConn, type: number, msg: Buffer, out: Out): boolean {
    const head = this.queue[0];
    const txn = this.mgr.settings.mode === 'transaction';
    switch (type) {
      case 0x5a: {
        // ReadyForQuery
        const st = String.fromCharCode(msg[5]) as 'I' | 'T' | 'E';
        s.txStatus = st;
        this.pendingReady--;
        if (head) {
          this.queue.shift();
          if (head.act === 'swallow') {
            if (this.setFailed) throw new SetFailed(this.setFailed);
            return false;
          }
        }
        this.txStatus = st;
        out.add(msg);
        if (this.counts) this.clock.ready(this.counts, st === 'I', this.pendingReady === 0);
        return txn && st === 'I' && this.pendingReady === 0 && !this.partial && this.queue.length === 0;
      }
      case 0x53: {
        // ParameterStatus: the server's value now (a SET by the client, or by the proxy)
        if (head?.act === 'swallow' && head.t === T.query) return false;
        const [k, v] = msg.toString('utf8', 5, msg.length - 1).split('\0');
        const lk = k.toLowerCase();
        s.settings.set(lk, v);
        if (txn && TRACKED.has(lk)) this.settings.set(lk, { name: k, value: v });
        out.add(msg);
        return false;
      }
      case 0x4e:
      case 0x41:
        // notices and notifications belong to no request
        if (!(head?.act === 'swallow' && head.t === T.query)) out.add(msg);
        return false;
      case 0x45: {
        const f = noticeFields(msg.subarray(5));
        const sev = errorSeverity(f);
        if (sev === 'FATAL' || sev === 'PANIC') {
          // the server is going away before it answered a BEGIN: sent again elsewhere, the client never knows
          if (this.replay !== null && this.replay.length > 0 && !this.answered) return false;
          this.serverSentFatal = true;
        }
        if (!head) {
          out.add(msg);
          return false;
        }
        if (head.t === T.query || head.t === T.functionCall) {
          if (head.act === 'swallow') this.setFailed = f;
          else out.add(msg);
          return false;
        }
        // extended protocol: the server skips everything up to the Sync
        out.add(msg);
        while (this.queue.length > 0 && this.queue[0].t !== T.sync) {
          const p = this.queue.shift()!;
          if (p.prepared) s.prepared.delete(p.prepared);
          if (p.evicted) s.prepared.add(p.evicted);
        }
        return false;
      }
    }
    if (!head) {
      out.add(msg);
      return false;
    }
    if (head.act !== 'swallow') out.add(msg);
    if (completes(type, head.t)) this.queue.shift();
    return false;
  }

  private unlink(reusable: boolean): void {
    const s = this.server;
    if (!s) return;
    this.server = null;
    s.onData = NOOP;
    s.onGone = NOOP;
    s.framer.streamTo = null;
    if (s.socket.isPaused()) s.socket.resume();
    const clean = reusable && this.pendingReady === 0 && !this.partial && s.txStatus === 'I' && this.queue.length === 0 && s.framer.atBoundary && this.framer.atBoundary;
    if (!clean && s.state !== 'closed' && this.pendingReady > 0) void this.mgr.sendCancelTo(s);
    this.queue.length = 0;
    this.pendingReady = 0;
    this.partial = false;
    this.mgr.release(s, this.entry!, clean, this.mgr.settings.mode === 'session');
  }

  private serverGone(why: string): void {
    const s = this.server;
    if (!s || this.phase === 'closed') return;
    this.server = null;
    if (this.replay !== null && this.replay.length > 0 && !this.answered && !this.serverSentFatal) {
      // nothing but BEGIN went there and nothing came back: begin again on a server connection that works
      this.mgr.log.info({ client: this.id, node: s.node, why }, 'server connection lost before BEGIN was answered: sent again');
      this.inbox.unshift(...this.replay);
      this.replay = null;
      this.queue.length = 0;
      this.pendingReady = 0;
      this.partial = false;
      this.transactions--;
      return this.pump();
    }
    if (this.serverSentFatal) return this.close(`server ended the session: ${why}`);
    const state = this.mgr.host.monitor.state(s.node);
    const moved = this.kind === 'rw' && state && state.role !== 'primary';
    this.mgr.host.monitor.suspect(s.node, `pooled server connection lost: ${why}`);
    if (moved) this.terminate(SQLSTATE.adminShutdown, `terminating connection because of failover: ${s.node} is no longer the primary`, 'The transaction in flight was lost; reconnect and retry it: new transactions go to the current primary.');
    else this.terminate(SQLSTATE.connectionFailure, `pgha-proxy: lost the server connection to ${s.node} with a transaction in flight: ${why}`);
  }

  // ---------------------------------------------------------------- console

  private consoling = false;

  private async consolePump(): Promise<void> {
    if (this.consoling) return;
    this.consoling = true;
    try {
      while (this.inbox.length > 0 && this.phase === 'ready') {
        const msg = this.inbox.shift()!;
        if (msg[0] !== T.query) {
          this.socket.write(Buffer.concat([errorResponse({ severity: 'ERROR', code: SQLSTATE.featureNotSupported, message: 'the pgha console takes simple queries only (SHOW POOLS, SHOW CLIENTS, SHOW SERVERS, PAUSE, RESUME)' }), msg[0] === T.sync ? readyForQuery('I') : Buffer.alloc(0)]));
          continue;
        }
        this.socket.write(await consoleQuery(this.mgr, msg.toString('utf8', 5, msg.length - 1)));
      }
    } finally {
      this.consoling = false;
    }
  }

  // ---------------------------------------------------------------- endings

  cancel(): Promise<void> {
    const s = this.native ? this.mgr.native!.linkedServer(this.id) : this.server;
    return s ? this.mgr.sendCancelTo(s) : Promise.resolve();
  }

  failover(why: string): void {
    // (the native loop fails its own clients over: PoolManager.drainNode tells it)
    const s = this.server;
    if (!s || this.phase === 'closed') return;
    if (this.replay !== null && this.replay.length > 0 && !this.answered && !this.serverSentFatal) {
      s.onGone = NOOP;
      s.close();
      return this.serverGone(`failover: ${why}`);
    }
    this.terminate(SQLSTATE.adminShutdown, `terminating connection because of failover: ${why}`, 'The transaction in flight was lost; reconnect and retry it: new transactions go to the current primary.');
  }

  /** end the client from the proxy's side with a FATAL (failover with a transaction in flight, shutdown) */
  terminate(code: string, message: string, hint?: string): void {
    if (this.phase === 'closed') return;
    if (this.native) return this.mgr.native!.fail(this.id, code, message, undefined, hint);
    const s = this.server;
    if (s) {
      this.server = null;
      s.onGone = () => undefined;
      s.close();
    }
    this.fatal(code, message, undefined, hint);
  }

  private fatal(code: string, message: string, detail?: string, hint?: string): void {
    if (this.phase === 'closed') return;
    if (!this.socket.destroyed && this.framer.atBoundary) {
      this.socket.end(errorResponse({ severity: 'FATAL', code, message, detail, hint }));
      setTimeout(() => this.socket.destroy(), 1000).unref();
    } else this.socket.destroy();
    this.close(message);
  }

  close(why: string): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    if (this.server) this.unlink(true);
    this.mgr.unregister(this);
    if (!this.socket.destroyed && !this.socket.writableEnded) this.socket.end();
    this.mgr.log.debug({ client: this.id, why }, 'pooled client closed');
  }
}

class SetFailed extends Error {
  constructor(readonly fields: Record<string, string>) {
    super(fields.M ?? 'SET failed');
  }
}

/** does a server message of this type end the answer to a request of type `t`? */
/** a statement used now: last in line to be closed (a Set keeps insertion order) */
function touch(prepared: Set<string>, name: string): void {
  prepared.delete(name);
  prepared.add(name);
}

function completes(type: number, t: number): boolean {
  switch (type) {
    case 0x31: // ParseComplete
      return t === T.parse;
    case 0x32: // BindComplete
      return t === T.bind;
    case 0x33: // CloseComplete
      return t === T.close;
    case 0x6e: // NoData
      return t === T.describe;
    case 0x54: // RowDescription: the end of a Describe, part of a Query's answer
      return t === T.describe;
    case 0x43: // CommandComplete
    case 0x49: // EmptyQueryResponse
    case 0x73: // PortalSuspended
      return t === T.execute;
    default:
      return false;
  }
}

function queryMessage(text: string): Buffer {
  const body = Buffer.from(`${text}\0`, 'utf8');
  const b = Buffer.allocUnsafe(5 + body.length);
  b[0] = 0x51;
  b.writeInt32BE(body.length + 4, 1);
  body.copy(b, 5);
  return b;
}

/** SQL that makes the server itself raise the error (so aborting a transaction works as for any error) */
function notSupported(what: string): string {
  const msg = `pgha-proxy: ${what} is not supported in transaction pool mode (a server connection serves other clients between transactions): use --pool-mode session, or connect to the server directly`;
  return `DO $pgha$BEGIN RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', MESSAGE = ${quoteLiteral(msg)}; END$pgha$`;
}

export const quoteLiteral = (v: string): string => `'${v.replace(/'/g, "''")}'`;
const quoteIdent = (v: string): string => (/^[a-z_][a-z0-9_]*$/i.test(v) ? v : `"${v.replace(/"/g, '""')}"`);
