/**
 * One client connection: the startup phase (SSLRequest/GSSENCRequest/CancelRequest/StartupMessage,
 * TLS termination) answered as PostgreSQL answers it, the choice and connection of a backend, then a
 * relay in both directions that passes chunks through untouched while following message boundaries,
 * the transaction status of every ReadyForQuery, and the server's BackendKeyData (for cancels).
 * Backpressure both ways: when one side's socket buffer is full the other side is paused. During
 * authentication the server's SASL offer loses SCRAM-SHA-256-PLUS when channel binding cannot work
 * through the proxy.
 */
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { TLSSocket, type PeerCertificate } from 'node:tls';
import { serialize } from 'pg-protocol';
import { connectBackend, type BackendAddress } from '../backend/connect.js';
import { BACKEND, FRONTEND, PQ_LARGE_MESSAGE_LIMIT, SQLSTATE } from '../protocol/codes.js';
import { ProtocolError } from '../protocol/errors.js';
import { backendFatal, errorResponse, errorResponseV2, SSL_ACCEPTED, SSL_REFUSED, type ErrorFields } from '../protocol/backend-messages.js';
import { MessageWalker } from '../protocol/message-walker.js';
import { SaslOfferFilter } from '../protocol/sasl-offer.js';
import { StartupReader, unsupportedProtocol, type StartupPacket } from '../protocol/startup.js';
import type { RelayEvent } from '../../src/native/index.js';
import type { ProxyContext } from './context.js';
import { peerVerifyError, socketHandle, tcpSocketUnder } from './socket-handle.js';

export type PortKind = 'rw' | 'ro';
type Phase = 'startup' | 'connecting' | 'relay' | 'closed';

let nextId = 1;

/** CopyInResponse, CopyBothResponse: from here the server reads COPY data from the client */
const COPY_IN = new Set([0x47, 0x57]);
/** CopyDone, CopyFail: the client's end of COPY data */
const COPY_END = new Set([0x63, 0x66]);

/** close with a TCP reset (under TLS: the TCP connection it runs on) */
function resetSocket(s: Socket): void {
  const tcp = tcpSocketUnder(s);
  try {
    if (tcp) {
      tcp.resetAndDestroy();
      s.destroy();
      return;
    }
  } catch {
    // not a TCP handle
  }
  s.destroy();
}

/** SQLSTATEs with which a server says it is going away: worth an immediate health check */
const SERVER_GOING_AWAY = new Set(['57P01', '57P02', '57P03', '58P01']);

export class ClientSession {
  readonly id = nextId++;
  readonly startedAt = Date.now();
  phase: Phase = 'startup';
  /** transaction status of the last ReadyForQuery: I idle, T in a transaction, E failed transaction */
  txStatus: 'I' | 'T' | 'E' | null = null;
  backendName: string | null = null;
  user: string | null = null;
  database: string | null = null;
  private client: Socket;
  private backend: Socket | null = null;
  private backendAddress: BackendAddress | null = null;
  private readonly reader = new StartupReader();
  private tls = false;
  /** an SSLRequest / GSSENCRequest has been answered: PostgreSQL takes another one for a bad protocol code */
  private sslDone = false;
  private gssDone = false;
  /** the server's authentication messages on their way to the client, while they may offer SCRAM-SHA-256-PLUS */
  private saslFilter: SaslOfferFilter | null = null;
  private startupTimer: NodeJS.Timeout | null;
  private backendSentFatal = false;
  /** the client sent Terminate: the server closing next is the normal end */
  private clientTerminated = false;
  /** --client-tls-ca: the client presented a certificate the CA signed */
  private clientCertValid = false;
  /** the client's connection failed (reset): the server's is reset too, as it would be directly */
  private clientFailed = false;
  /** the client closed its side without Terminate: so has the proxy towards the server, which ends the session */
  private clientGone = false;
  /** a cancel request went out for this session's running query */
  private cancelSent = false;
  /**
   * the server waits for COPY data (CopyInResponse seen, no CopyDone/CopyFail or ReadyForQuery
   * since): a client that vanishes now is seen by the server itself, nothing to cancel
   */
  private copyIn = false;
  private cancelId: string | null = null;
  private backendKey: { pid: number; key: Buffer } | null = null;
  private clientMessagesAtReady = 0;
  /** a ReadyForQuery has been relayed: authentication is over */
  private readySeen = false;
  private authTimer: NodeJS.Timeout | null = null;
  /** the session's bytes are moved by the native relay (native/src/relay.rs) */
  native = false;
  /** the native relay has been told to finish this session */
  private nativeFinished = false;
  private readonly clientWalker: MessageWalker;
  private readonly backendWalker: MessageWalker;

  constructor(
    private readonly ctx: ProxyContext,
    socket: Socket,
    readonly kind: PortKind,
  ) {
    this.client = socket;
    socket.setNoDelay(true);
    this.clientWalker = new MessageWalker({
      peer: `client ${socket.remoteAddress}:${socket.remotePort}`,
      maxLength: PQ_LARGE_MESSAGE_LIMIT,
      wanted: (t) => t === FRONTEND.terminate || COPY_END.has(t),
      onMessage: (t) => {
        if (t === FRONTEND.terminate) this.clientTerminated = true;
        else this.copyIn = false;
      },
    });
    this.backendWalker = new MessageWalker({
      peer: 'backend',
      maxLength: 0x7fffffff,
      wanted: (t) => t === BACKEND.readyForQuery || t === BACKEND.backendKeyData || t === BACKEND.errorResponse || COPY_IN.has(t),
      maxCollect: 64 * 1024,
      onMessage: (t, body) => this.onBackendMessage(t, body),
    });
    // PostgreSQL's authentication_timeout in this phase ends the connection without a word
    this.startupTimer = setTimeout(
      () => this.fail(new ProtocolError(`no complete startup packet within ${ctx.cfg.startupTimeoutMs} ms`, this.reader.buffered, SQLSTATE.protocolViolation, 'none'), 'startup timeout'),
      ctx.cfg.startupTimeoutMs,
    );
    this.attachStartup(socket);
  }

  get inTransaction(): boolean {
    return this.txStatus === 'T' || this.txStatus === 'E';
  }

  describe() {
    return {
      id: this.id,
      port: this.kind,
      phase: this.phase,
      backend: this.backendName,
      user: this.user,
      database: this.database,
      txStatus: this.native ? (this.ctx.relay!.txStatus(this.id) ?? this.txStatus) : this.txStatus,
      relay: this.native ? 'native' : 'node',
      tls: this.tls,
      client: `${this.client.remoteAddress}:${this.client.remotePort}`,
    };
  }

  // ---------------------------------------------------------------- startup phase

  private readonly onStartupData = (chunk: Buffer) => {
    this.reader.push(chunk);
    this.drainStartup();
  };

  private attachStartup(s: Socket): void {
    s.on('data', this.onStartupData);
    s.on('error', (e) => {
      this.clientFailed = true;
      this.close(`client error: ${e.message}`);
    });
    s.on('close', () => {
      // as PostgreSQL: logged ("incomplete startup packet"), nothing to answer
      if (this.phase === 'startup' && this.reader.buffered > 0) this.ctx.log.info({ session: this.id, client: this.client.remoteAddress, bytes: this.reader.buffered }, 'incomplete startup packet');
      this.close('client closed');
    });
  }

  private drainStartup(): void {
    try {
      for (;;) {
        const p = this.reader.next();
        if (!p) return;
        if (this.handleStartupPacket(p)) return;
      }
    } catch (e) {
      this.fail(e as Error, 'bad startup packet');
    }
  }

  /**
   * true when the startup reader must stop (socket upgraded or handed on). Answers as
   * ProcessStartupPacket() does: a second SSLRequest (or GSSENCRequest) is an unknown protocol
   * code, bytes already sent behind a request the proxy answers are refused (they were not
   * encrypted), a CancelRequest gets no answer whatever its size.
   */
  private handleStartupPacket(p: StartupPacket): boolean {
    switch (p.kind) {
      case 'ssl-request': {
        if (this.sslDone) throw unsupportedProtocol(1234, 5679, 0);
        this.sslDone = true;
        const unencrypted = this.reader.buffered > 0;
        if (!this.ctx.secureContext) {
          this.client.write(SSL_REFUSED);
          if (unencrypted) throw new ProtocolError('received unencrypted data after SSL request', 8);
          return false;
        }
        this.client.write(SSL_ACCEPTED);
        // PostgreSQL says so once TLS is up, inside it
        if (unencrypted) this.reader.takeRest();
        this.upgradeToTls(null, unencrypted);
        return true;
      }
      case 'direct-tls':
        // neither PostgreSQL 15 (a bad length) nor 17 without TLS (a rejected direct TLS) answers this
        if (this.tls) throw new ProtocolError('TLS handshake inside TLS', 0, SQLSTATE.protocolViolation, 'none');
        if (!this.ctx.secureContext) throw new ProtocolError('direct TLS connection, but the proxy has no --tls-cert/--tls-key', 0, SQLSTATE.protocolViolation, 'none');
        this.upgradeToTls(this.reader.takeRest());
        return true;
      case 'gssenc-request':
        if (this.gssDone) throw unsupportedProtocol(1234, 5680, 0);
        this.gssDone = true;
        this.client.write(SSL_REFUSED);
        if (this.reader.buffered > 0) throw new ProtocolError('received unencrypted data after GSSAPI encryption request', 8);
        return false;
      case 'cancel':
        // as the postmaster: the connection closes once the server has taken the request, so a
        // client that waits for that (libpq's PQcancel does) knows its query has been signalled
        this.client.off('data', this.onStartupData);
        // a client that closes its side at once still gets its connection closed only then
        this.client.allowHalfOpen = true;
        if (p.key) void this.ctx.cancelFor(p.pid, p.key).finally(() => this.close('cancel request handled'));
        else this.close('cancel request handled');
        return true;
      case 'startup': {
        this.client.off('data', this.onStartupData);
        this.client.pause();
        const certRefusal = this.clientCertRefusal(p.params.user);
        if (certRefusal) {
          this.ctx.log.info({ session: this.id, client: this.client.remoteAddress, user: p.params.user }, certRefusal);
          this.refuse({ severity: 'FATAL', code: SQLSTATE.invalidAuthorizationSpecification, message: certRefusal });
          return true;
        }
        if (this.ctx.pool) {
          this.toPool(p, this.reader.takeRest());
          return true;
        }
        void this.connect(p, this.reader.takeRest());
        return true;
      }
    }
  }

  /** --pool-mode: the pool authenticates the client and gives it server connections; this session is done */
  private toPool(p: Extract<StartupPacket, { kind: 'startup' }>, rest: Buffer): void {
    const c = this.client;
    for (const ev of ['data', 'close', 'error', 'end']) c.removeAllListeners(ev);
    if (this.startupTimer) clearTimeout(this.startupTimer);
    this.startupTimer = null;
    this.phase = 'closed';
    this.ctx.detach(this);
    this.ctx.pool!.adopt(c, p.params, rest, this.kind, this.tls);
    c.resume();
  }

  private upgradeToTls(unread: Buffer | null, unencryptedData = false): void {
    const raw = this.client;
    raw.off('data', this.onStartupData);
    raw.removeAllListeners('close');
    raw.removeAllListeners('error');
    raw.on('error', () => undefined);
    let carrier: Socket | Duplex = raw;
    if (unread) {
      // direct TLS: the ClientHello is already read, hand it to the TLS layer first
      const d = new Duplex({
        read: () => raw.resume(),
        write: (chunk, _enc, cb) => raw.write(chunk, cb),
        final: (cb) => raw.end(cb),
        destroy: (err, cb) => {
          raw.destroy();
          cb(err);
        },
      });
      d.push(unread);
      raw.on('data', (b) => {
        if (!d.push(b)) raw.pause();
      });
      raw.on('end', () => d.push(null));
      raw.on('close', () => d.destroy());
      // the TLS layer above decides when our side ends (a client may half-close after Terminate)
      raw.allowHalfOpen = true;
      carrier = d;
    }
    const t = new TLSSocket(carrier as Socket, {
      isServer: true,
      secureContext: this.ctx.secureContext!,
      ALPNProtocols: unread ? ['postgresql'] : undefined,
      // --client-tls-ca: ask for a certificate; none is refused after the startup packet, as
      // PostgreSQL's cert method does, and one the CA did not sign ends the connection here
      requestCert: this.ctx.cfg.clientTlsCa !== null,
      rejectUnauthorized: false,
    });
    this.tls = true;
    this.sslDone = this.gssDone = true;
    this.client = t;
    t.on('secure', () => {
      t.setNoDelay?.(true);
      if (this.ctx.cfg.clientTlsCa && t.getPeerCertificate()?.raw) {
        // (a TLSSocket made without a tls.Server does not set .authorized: ask OpenSSL's verdict)
        const verify = peerVerifyError(t);
        if (verify) {
          // PostgreSQL fails the TLS handshake itself for a certificate its ssl_ca_file did not sign
          this.ctx.log.info({ session: this.id, client: this.client.remoteAddress, err: verify.code ?? verify.message }, 'client certificate refused');
          t.destroy();
          return this.close('client certificate refused');
        }
        this.clientCertValid = true;
      }
      if (unencryptedData) this.fail(new ProtocolError('received unencrypted data after SSL request', 8), 'unencrypted data after SSL request');
    });
    this.attachStartup(t);
  }

  // ---------------------------------------------------------------- backend

  private async connect(p: Extract<StartupPacket, { kind: 'startup' }>, rest: Buffer): Promise<void> {
    this.phase = 'connecting';
    this.user = p.params.user;
    this.database = p.params.database ?? p.params.user;
    if (this.startupTimer) clearTimeout(this.startupTimer);
    this.startupTimer = null;
    const { cfg, monitor, log } = this.ctx;
    const deadline = Date.now() + cfg.primaryWaitMs;
    let lastError = '';
    for (;;) {
      if (this.phase !== 'connecting') return;
      const target = this.kind === 'rw' ? await monitor.waitForPrimary(Math.max(0, deadline - Date.now())) : this.ctx.pickReader();
      if (this.phase !== 'connecting') return;
      if (!target) {
        const noPrimary = this.kind === 'rw' ? 'no primary is available' : 'no backend is available';
        return this.refuse({
          severity: 'FATAL',
          code: SQLSTATE.cannotConnectNow,
          message: `pgha-proxy: ${noPrimary}${lastError ? ` (${lastError})` : ''}`,
          detail: `waited ${cfg.primaryWaitMs} ms; backends: ${monitor.backends.map((b) => `${b.name} ${b.role}`).join(', ')}`,
        });
      }
      if (!this.ctx.reserve(target.name)) {
        // as the server itself would say once full, before it is: the proxy never exhausts a server
        // (its health checks and agent must still get in)
        return this.refuse({
          severity: 'FATAL',
          code: SQLSTATE.tooManyConnections,
          message: 'sorry, too many clients already',
          detail: `pgha-proxy: ${target.name} already has ${this.ctx.sessionsOn(target.name)} client sessions, all its max_connections − superuser_reserved_connections leave to clients but a little headroom`,
        });
      }
      try {
        const b = await connectBackend(target.address, cfg.backendTls, cfg.connectTimeoutMs);
        if (this.phase !== 'connecting') {
          this.ctx.release(target.name);
          b.destroy();
          return;
        }
        this.backend = b;
        this.backendName = target.name;
        this.backendAddress = target.address;
        break;
      } catch (e) {
        this.ctx.release(target.name);
        lastError = (e as Error).message;
        monitor.suspect(target.name, lastError);
        if (Date.now() >= deadline || this.kind === 'ro') {
          return this.refuse({ severity: 'FATAL', code: SQLSTATE.connectionFailure, message: `pgha-proxy: could not connect to ${target.name}: ${lastError}` });
        }
        await new Promise((r) => setTimeout(r, Math.min(100, cfg.healthRetryDelayMs || 100)));
      }
    }
    this.ctx.attach(this);
    log.debug({ session: this.id, backend: this.backendName, user: this.user, db: this.database }, 'session connected');
    this.startRelay(p.raw, rest);
  }

  /**
   * --client-tls-ca: what PostgreSQL's cert method answers (auth.c, FATAL 28000) when the client has
   * no valid certificate, or one whose CN is not the user it logs in as (compared as strcmp does;
   * no user name map); null when it may go on
   */
  private clientCertRefusal(user: string): string | null {
    if (!this.ctx.cfg.clientTlsCa) return null;
    const t = this.client;
    const cert = t instanceof TLSSocket && this.clientCertValid ? t.getPeerCertificate() : null;
    if (!cert?.raw) return 'connection requires a valid client certificate';
    const cn = cert.subject?.CN as string | string[] | undefined;
    const name = Array.isArray(cn) ? cn[0] : cn;
    if (!name || name !== user) return `certificate authentication failed for user "${user}"`;
    return null;
  }

  private startRelay(startup: Buffer, rest: Buffer): void {
    const c = this.client;
    const b = this.backend!;
    const stats = this.ctx.stats;
    this.phase = 'relay';
    // a client that starts authenticating and stops answering holds a server connection: as the
    // server's authentication_timeout does, drop it (PostgreSQL closes without a reply too)
    this.authTimer = setTimeout(() => {
      if (this.readySeen || this.phase !== 'relay') return;
      this.ctx.log.info({ session: this.id, backend: this.backendName, user: this.user }, 'authentication not finished in time: closed');
      this.backend?.destroy();
      this.client.destroy();
      this.close('authentication timeout');
    }, this.ctx.cfg.authTimeoutMs);
    if (!this.channelBindingPassesThrough()) this.saslFilter = new SaslOfferFilter();
    // a client may close its side after Terminate and still read the server's last answer
    c.allowHalfOpen = true;
    b.write(startup);
    if (rest.length > 0) this.fromClient(rest);
    c.on('data', (chunk: Buffer) => this.fromClient(chunk));
    c.on('end', () => this.clientEnded());
    b.on('data', (chunk: Buffer) => {
      if (this.phase !== 'relay') return;
      // the filter's framing is given up only between chunks, once authentication is over
      const filter = this.readySeen ? (this.saslFilter = null) : this.saslFilter;
      try {
        this.backendWalker.feed(chunk);
      } catch (e) {
        return this.terminate({ severity: 'FATAL', code: SQLSTATE.protocolViolation, message: `pgha-proxy: ${(e as Error).message}` }, 'backend protocol violation', true);
      }
      stats.bytesToClients += chunk.length;
      const out = filter ? filter.feed(chunk) : chunk;
      if (out.length === 0) return;
      if (!c.write(out)) this.pauseUntilDrain(b, c);
      else if (this.readySeen && this.ctx.relay) this.handOver();
    });
    b.on('error', (e) => this.backendGone(e.message));
    b.on('close', () => this.backendGone('connection closed'));
    b.resume();
    c.resume();
  }

  /**
   * SCRAM-SHA-256-PLUS binds the client's TLS channel to the server's: through a proxy that
   * terminates TLS it can only succeed when the proxy presents the server's own certificate (both
   * sides then hash the same one for tls-server-end-point). Otherwise it is not offered.
   */
  private channelBindingPassesThrough(): boolean {
    const b = this.backend;
    if (!this.tls || !(b instanceof TLSSocket) || !(this.client instanceof TLSSocket)) return false;
    const mine = this.client.getCertificate() as PeerCertificate | null;
    const theirs = b.getPeerCertificate();
    return Boolean(mine?.raw && theirs?.raw && mine.raw.equals(theirs.raw));
  }

  /**
   * the client closed its side (Node relay). As on a direct connection the server sees its side
   * closed — never a Terminate the client did not send — and what it still answers goes to the
   * client until it closes (a client may half-close after Terminate and still read).
   */
  private clientEnded(): void {
    if (this.phase !== 'relay' || this.native) return;
    const b = this.backend;
    if (!b || b.destroyed) return this.close('client closed');
    if (!this.clientTerminated) {
      this.clientGone = true;
      this.cancelIfVanishedMidQuery();
    }
    b.end();
  }

  /**
   * a client that vanished (no Terminate) while its query runs: cancel the query so it does not run
   * on for nobody — not while the server reads COPY data from it (it sees the client go itself)
   */
  private cancelIfVanishedMidQuery(busy = this.clientWalker.messages > this.clientMessagesAtReady && !this.copyIn): void {
    if (this.cancelSent || this.clientTerminated || !busy || !this.backendKey || !this.backend || this.backend.destroyed) return;
    this.cancelSent = true;
    void this.ctx.cancelFor(this.backendKey.pid, this.backendKey.key);
  }

  private fromClient(chunk: Buffer): void {
    if (this.phase !== 'relay') return;
    try {
      this.clientWalker.feed(chunk);
    } catch (e) {
      return this.fail(e as Error, 'client protocol violation');
    }
    this.ctx.stats.bytesFromClients += chunk.length;
    if (!this.backend!.write(chunk)) this.pauseUntilDrain(this.client, this.backend!);
  }

  private pauseUntilDrain(from: Socket, to: Socket): void {
    if (from.isPaused()) return;
    from.pause();
    to.once('drain', () => {
      // never after a hand-over: Node must not read a socket the native relay owns
      if (this.phase === 'relay' && !this.native) from.resume();
    });
  }

  private onBackendMessage(type: number, body: Buffer): void {
    if (COPY_IN.has(type)) this.copyIn = true;
    else if (type === BACKEND.readyForQuery) {
      this.copyIn = false;
      // queries and transactions answered (the first ReadyForQuery only ends the startup)
      if (this.readySeen) {
        this.ctx.stats.ready++;
        if (body[0] === 0x49) this.ctx.stats.readyIdle++;
      }
      this.readySeen = true;
      if (this.authTimer) clearTimeout(this.authTimer);
      this.authTimer = null;
      this.txStatus = String.fromCharCode(body[0]) as 'I' | 'T' | 'E';
      this.clientMessagesAtReady = this.clientWalker.messages;
    } else if (type === BACKEND.backendKeyData && body.length >= 8) {
      this.backendKey = { pid: body.readInt32BE(0), key: Buffer.from(body.subarray(4)) };
      this.cancelId = this.ctx.cancels.add(this.backendKey.pid, this.backendKey.key, this.backendAddress!);
    } else if (type === BACKEND.errorResponse) {
      // V (never translated) decides, else S: the rule of the native relay too
      const fatal = backendFatal(body);
      if (fatal) {
        this.backendSentFatal = true;
        if (fatal.code && SERVER_GOING_AWAY.has(fatal.code)) this.ctx.monitor.suspect(this.backendName!, `${fatal.code} ${fatal.message}`);
      }
    }
  }

  // ---------------------------------------------------------------- native relay

  /**
   * Hand the two sockets to the native relay once authentication is over. Only at a quiet point:
   * both streams between messages, nothing buffered by Node in either direction, plain TCP on both
   * sides (TLS stays in Node). Node stops reading the sockets but keeps them open; the relay works
   * on duplicates of the descriptors, so nothing is closed until both sides have let go.
   */
  private handOver(): void {
    const c = this.client;
    const b = this.backend!;
    if (this.native || this.phase !== 'relay' || this.tls || 'encrypted' in b) return;
    if (!this.clientWalker.atBoundary || !this.backendWalker.atBoundary) return;
    if (c.writableLength > 0 || b.writableLength > 0 || c.readableLength > 0 || b.readableLength > 0) return;
    const ch = socketHandle(c);
    const bh = socketHandle(b);
    if (!ch || !bh) return;
    ch.readStop();
    bh.readStop();
    c.pause();
    b.pause();
    c.removeAllListeners('data');
    b.removeAllListeners('data');
    c.removeAllListeners('drain');
    b.removeAllListeners('drain');
    try {
      this.ctx.relay!.add(this.id, ch.fd, bh.fd, PQ_LARGE_MESSAGE_LIMIT);
    } catch (e) {
      this.ctx.log.warn({ session: this.id, err: (e as Error).message }, 'native relay refused the session');
      return this.terminate({ severity: 'FATAL', code: SQLSTATE.connectionFailure, message: `pgha-proxy: ${(e as Error).message}` }, 'native relay refused');
    }
    this.native = true;
    this.ctx.nativeSessions.set(this.id, this);
  }

  /** what the native relay reports about this session */
  onRelayEvent(e: RelayEvent): void {
    if (this.phase === 'closed') return;
    if (e.kind === 'backend-fatal') {
      this.backendSentFatal = true;
      if (e.sqlstate && SERVER_GOING_AWAY.has(e.sqlstate)) this.ctx.monitor.suspect(this.backendName!, `${e.sqlstate} from the server`);
      return;
    }
    this.clientTerminated ||= e.clientTerminated;
    this.backendSentFatal ||= Boolean(e.sqlstate);
    switch (e.kind) {
      case 'client-eof':
        // the client closed its side without Terminate; the relay closed ours towards the server
        // (no Terminate) and still relays what it answers until it closes: the end of the session.
        // A client that said goodbye did not vanish mid-query, nor one the server reads COPY data
        // from (busy is false then): nothing to cancel
        this.clientGone = true;
        if (e.busy) this.cancelIfVanishedMidQuery(true);
        return;
      case 'client-error':
        if (e.busy) this.cancelIfVanishedMidQuery(true);
        // the relay resets the server's connection, as the client's was
        this.finishNative(null, null);
        return this.close(`client error: ${e.detail}`);
      case 'backend-eof':
      case 'backend-error':
        return this.backendGone(e.kind === 'backend-eof' ? 'connection closed' : e.detail);
      case 'client-protocol':
        this.ctx.stats.protocolErrors++;
        this.ctx.log.warn({ session: this.id, client: this.client.remoteAddress, err: e.detail }, 'client protocol violation');
        return this.terminate({ severity: 'FATAL', code: SQLSTATE.protocolViolation, message: `pgha-proxy: client: ${e.detail}` }, 'client protocol violation');
      default:
        return this.terminate({ severity: 'FATAL', code: SQLSTATE.protocolViolation, message: `pgha-proxy: backend: ${e.detail}` }, 'backend protocol violation', true);
    }
  }

  private finishNative(toClient: Buffer | null, toBackend: Buffer | null): void {
    if (!this.native || this.nativeFinished) return;
    this.nativeFinished = true;
    this.ctx.relay!.finish(this.id, toClient, toBackend);
  }

  // ---------------------------------------------------------------- endings

  private backendGone(why: string): void {
    if (this.phase === 'closed') return;
    if (this.clientTerminated || this.clientGone) return this.close(this.clientTerminated ? 'client terminated' : 'client closed');
    const name = this.backendName!;
    const state = this.ctx.monitor.state(name);
    if (!this.backendSentFatal) this.ctx.monitor.suspect(name, `session lost its backend: ${why}`);
    const moved = this.kind === 'rw' && state && state.role !== 'primary';
    this.terminate(
      moved
        ? { severity: 'FATAL', code: SQLSTATE.adminShutdown, message: `terminating connection because of failover: ${name} is no longer the primary`, hint: 'Reconnect: new connections go to the current primary.' }
        : { severity: 'FATAL', code: SQLSTATE.connectionFailure, message: `pgha-proxy: lost the connection to backend ${name}: ${why}` },
      `backend gone: ${why}`,
      this.backendSentFatal,
    );
  }

  /**
   * End the session from the proxy's side. The error goes to the client only at a message boundary
   * (never inside a half-relayed message) and only when the server has not already said FATAL.
   */
  terminate(fields: ErrorFields, why: string, quietToClient = false): void {
    if (this.phase === 'closed') return;
    if (this.native) {
      // the relay writes the error only between two server messages, Terminate only between two client messages
      if (!quietToClient) this.ctx.stats.terminated++;
      this.finishNative(quietToClient ? null : errorResponse(fields), serialize.end());
      return this.close(why);
    }
    const b = this.backend;
    if (b) {
      b.removeAllListeners('data');
      if (!b.destroyed) {
        if (this.clientWalker.atBoundary) b.end(serialize.end());
        b.destroy();
      }
    }
    if (!quietToClient && this.backendWalker.atBoundary && !this.client.destroyed) {
      this.client.end(errorResponse(fields));
      this.ctx.stats.terminated++;
    } else {
      this.client.end();
    }
    this.close(why);
  }

  /**
   * the client broke the protocol or timed out: say why (a FATAL with the error's SQLSTATE) and close
   * — or, where PostgreSQL only logs it (a bad startup length, a timeout), close without a word
   */
  private fail(e: Error, why: string): void {
    if (this.phase === 'closed') return;
    const pe = e instanceof ProtocolError ? e : null;
    this.ctx.log.warn({ session: this.id, client: this.client.remoteAddress, err: e.message }, why);
    this.ctx.stats.protocolErrors++;
    if (pe?.reply === 'none') {
      this.client.destroy();
      this.backend?.destroy();
      return this.close(why);
    }
    const fields: ErrorFields = { severity: 'FATAL', code: pe?.sqlstate ?? SQLSTATE.protocolViolation, message: `pgha-proxy: ${e.message}` };
    this.refuse(fields, pe?.reply === 'fatal-v2' ? errorResponseV2(e.message) : undefined);
  }

  private refuse(fields: ErrorFields, bytes = errorResponse(fields)): void {
    if (this.phase === 'closed') return;
    if (!this.client.destroyed && this.clientWalker.atBoundary && this.backendWalker.atBoundary) {
      this.client.end(bytes);
      // a client that never reads must not keep the socket
      setTimeout(() => this.client.destroy(), 1000).unref();
    } else this.client.destroy();
    this.backend?.destroy();
    this.close(fields.message);
  }

  private close(why: string): void {
    if (this.phase === 'closed') return;
    const wasRelay = this.phase === 'relay';
    this.phase = 'closed';
    if (this.startupTimer) clearTimeout(this.startupTimer);
    if (this.authTimer) clearTimeout(this.authTimer);
    if (wasRelay && !this.native) this.cancelIfVanishedMidQuery();
    if (this.cancelId) this.ctx.cancels.remove(this.cancelId);
    if (this.native) {
      // only close our descriptors: a shutdown() here would cut the relay's duplicates too
      this.finishNative(null, null);
      this.ctx.nativeSessions.delete(this.id);
      this.backend?.destroy();
      this.client.destroy();
      this.ctx.detach(this);
      this.ctx.log.debug({ session: this.id, backend: this.backendName, why }, 'session closed');
      return;
    }
    // the client went without Terminate (a Terminate of its own has been relayed already): the server
    // sees what it would see directly, its connection closed — or reset, when the client's was —
    // never a Terminate it was not sent (inside COPY that is a protocol error)
    if (this.backend && !this.backend.destroyed) {
      if (this.clientFailed) resetSocket(this.backend);
      else this.backend.end();
    }
    if (!this.client.destroyed && !this.client.writableEnded) this.client.end();
    this.ctx.detach(this);
    this.ctx.log.debug({ session: this.id, backend: this.backendName, why }, 'session closed');
  }
}
