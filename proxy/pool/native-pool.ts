/**
 * Pooling in the native loop (native/src/pool_relay.rs), transaction or session mode. Node
 * authenticates clients and logs server connections in, as for the TypeScript pool; then a client
 * on plain TCP and the plain server connections it uses are handed over, and from there its
 * transactions run with no JavaScript in their path: the loop links a client to an idle connection
 * of its route on the primary, relays, and takes the connection back at ReadyForQuery `I`
 * (client.ts's rules, message by message) — in session mode when the client leaves, after the
 * reset query. Node hears only what the loop cannot decide alone: a client needs a connection and
 * none is idle (`acquire`: the pool opens one, or the client waits in the loop for one to come
 * back), and what ended (a client, a server connection, a transaction to cancel); and it asks the
 * loop to give connections back (`giveBack`) when its own clients wait for a pool full of them.
 *
 * Node keeps its own descriptors of the handed-over sockets (it stops reading them) until the
 * loop reports their end: the loop works on duplicates, so nothing closes before both let go.
 */
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { nativeProxyPool, type PoolEvent, type ProxyPool } from '../../src/native/index.js';
import { errorResponse } from '../protocol/backend-messages.js';
import { PQ_LARGE_MESSAGE_LIMIT } from '../protocol/codes.js';
import { socketHandle } from '../session/socket-handle.js';
import { type PoolSettings, waitTimeoutError } from './pool.js';
import type { ServerConn } from './server-conn.js';
import type { RouteTotals } from './stats.js';

/** why the loop closed a client that waited --pool-wait-timeout (pool_relay.rs expire_waiters) */
export const NATIVE_WAIT_TIMEOUT = 'waited --pool-wait-timeout for a server connection';

/** a client as the native pool sees it (client.ts implements it) */
export interface NativeClient {
  readonly id: number;
  /** the loop needs a server connection for this client */
  nativeAcquire(): void;
  /** the loop ended this client */
  nativeClosed(why: string): void;
}

/** a client or server connection as the loop last reported it (SHOW CLIENTS / SERVERS / POOLS) */
export interface NativeView {
  clients: Map<number, { state: 'active' | 'waiting' | 'idle'; server: number | null; transactions: number; statements: number; waitMs: number }>;
  servers: Map<number, { state: 'active' | 'idle'; client: number | null; prepared: number }>;
}

export class NativePool {
  private readonly clients = new Map<number, NativeClient>();
  readonly servers = new Map<number, ServerConn>();

  private constructor(
    private readonly loop: ProxyPool,
    private readonly log: Logger,
    private readonly onCancel: (s: ServerConn) => void,
  ) {}

  /** null without the addon */
  static create(settings: Pick<PoolSettings, 'mode' | 'maxPreparedStatements' | 'resetQuery' | 'waitTimeoutMs' | 'size'>, primary: string | null, log: Logger, onCancel: (s: ServerConn) => void): NativePool | null {
    let pool: NativePool | null = null;
    const w = waitTimeoutError(settings);
    const waitError = errorResponse({ severity: 'FATAL', code: w.code, message: w.message, detail: w.detail, hint: w.hint });
    const loop = nativeProxyPool((e) => pool?.onEvent(e), settings.mode, settings.maxPreparedStatements, settings.resetQuery || null, primary, settings.waitTimeoutMs, waitError);
    if (!loop) return null;
    pool = new NativePool(loop, log, onCancel);
    return pool;
  }

  /** clients the loop carries now */
  get clientCount(): number {
    return this.clients.size;
  }

  static route(user: string, database: string): string {
    return `${user}\0${database}`;
  }

  /**
   * hand a logged-in client over (its ReadyForQuery written, nothing buffered by Node either way);
   * false: it stays with the TypeScript pool
   */
  adoptClient(c: NativeClient, socket: Socket, user: string, database: string, settings: Array<{ name: string; value: string }>, offset: number): boolean {
    if (socket.readableLength > 0 || socket.writableLength > 0) return false;
    const h = socketHandle(socket);
    if (!h) return false;
    h.readStop();
    socket.pause();
    socket.removeAllListeners('data');
    const flat: string[] = [];
    for (const s of settings) flat.push(s.name, s.value);
    try {
      this.loop.addClient(c.id, h.fd, NativePool.route(user, database), flat, PQ_LARGE_MESSAGE_LIMIT, offset);
    } catch (e) {
      this.log.warn({ client: c.id, err: (e as Error).message }, 'native pool refused a client');
      socket.destroy();
      return true;
    }
    this.clients.set(c.id, c);
    return true;
  }

  /** a server connection's descriptor for the loop, Node no longer reading it; null: TLS or not a socket Node can hand over */
  private takeServer(s: ServerConn): number | null {
    if ('encrypted' in s.socket || s.socket.readableLength > 0 || s.socket.writableLength > 0 || !s.framer.atBoundary) return null;
    const h = socketHandle(s.socket);
    if (!h) return null;
    h.readStop();
    s.socket.pause();
    s.socket.removeAllListeners('data');
    s.native = this;
    s.state = 'native';
    this.servers.set(s.id, s);
    return h.fd;
  }

  private serverArgs(s: ServerConn): [string, string, string[], string[]] {
    const settings: string[] = [];
    for (const [k, v] of s.settings) settings.push(k, v);
    return [NativePool.route(s.user, s.database), s.node, settings, [...s.prepared]];
  }

  /** a server connection for a client that asked; false when it cannot be handed over (TLS) */
  giveServer(client: number, s: ServerConn): boolean {
    const fd = this.takeServer(s);
    if (fd === null) return false;
    this.loop.giveServer(client, s.id, fd, ...this.serverArgs(s));
    return true;
  }

  /** a logged-in connection nobody waits for: idle in the loop; false: it stays with Node */
  addIdle(s: ServerConn): boolean {
    const fd = this.takeServer(s);
    if (fd === null) return false;
    this.loop.addIdleServer(s.id, fd, ...this.serverArgs(s));
    return true;
  }

  wait(client: number): void {
    this.loop.wait(client);
  }

  fail(client: number, code: string, message: string, detail?: string, hint?: string): void {
    this.loop.failClient(client, errorResponse({ severity: 'FATAL', code, message, detail, hint }));
  }

  setPrimary(node: string | null): void {
    this.loop.setPrimary(node);
  }

  drainNode(node: string, why: string): void {
    this.loop.drainNode(node, why);
  }

  closeIdle(node: string): void {
    this.loop.closeIdle(node);
  }

  /** JavaScript's pool of (user, database, node) is full and `n` of its own clients wait: the loop closes up to `n` of its connections there as they are or go idle (0: none wait) */
  giveBack(user: string, database: string, node: string, n: number): void {
    this.loop.giveBack(NativePool.route(user, database), node, n);
  }

  /** per (user, database): what the loop's clients did (transactions, queries, bytes, time, waits) */
  routeTotals(): RouteTotals[] {
    return this.loop.routeStats().map(({ route, ...c }) => {
      const [user, database] = route.split('\0');
      return { user, database, ...c };
    });
  }

  /** close the loop's connections idle for `idleMs` or longer (null: keep them); `retire`: past their lifetime, closed once idle */
  expire(idleMs: number | null, retire: number[]): void {
    this.loop.expire(idleMs, retire);
  }

  closeServer(id: number): void {
    this.loop.closeServer(id);
  }

  setPaused(paused: boolean): void {
    this.loop.setPaused(paused);
  }

  linkedServer(client: number): ServerConn | null {
    const id = this.loop.linkedServer(client);
    return id == null ? null : (this.servers.get(id) ?? null);
  }

  view(): NativeView {
    const raw = JSON.parse(this.loop.snapshot()) as { clients: Array<[number, 'active' | 'waiting' | 'idle', number | null, number, number, number]>; servers: Array<[number, 'active' | 'idle', number | null, number]> };
    const v: NativeView = { clients: new Map(), servers: new Map() };
    for (const [id, state, server, transactions, statements, waitMs] of raw.clients) v.clients.set(id, { state, server, transactions, statements, waitMs });
    for (const [id, state, client, prepared] of raw.servers) v.servers.set(id, { state, client, prepared });
    return v;
  }

  stop(): void {
    this.loop.stop();
  }

  private onEvent(e: PoolEvent): void {
    switch (e.kind) {
      case 'acquire':
        return this.clients.get(e.client)?.nativeAcquire();
      case 'client-closed': {
        const c = this.clients.get(e.client);
        this.clients.delete(e.client);
        return c?.nativeClosed(e.detail);
      }
      case 'server-closed': {
        const s = this.servers.get(e.server);
        this.servers.delete(e.server);
        this.log.debug({ server: e.server, lost: e.lost, why: e.detail }, 'pooled server connection closed');
        return s?.nativeClosed(e.lost, e.detail);
      }
      case 'cancel': {
        const s = this.servers.get(e.server);
        if (s) this.onCancel(s);
        return;
      }
      case 'failed':
        // a bug in the loop: its clients would hang. Exit so that the supervisor (systemd,
        // Docker) starts a fresh proxy, as for any crash; clients reconnect.
        this.log.fatal({ err: e.detail }, 'the native pool stopped on an internal error: exiting');
        process.exit(70);
    }
  }
}
