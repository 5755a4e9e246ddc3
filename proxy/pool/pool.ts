/**
 * Server connections pooled per (user, database, node), at most --pool-size each, handed out in
 * FIFO order to the clients that wait for one. Idle connections are taken last-in first-out (the
 * warm ones), reset with --server-reset-query when a session-mode client lets one go. When the
 * primary moves, the old node's pools are drained: idle connections closed, waiters sent on to the
 * new primary; only a client with a transaction in flight there loses it.
 */
import { serialize } from 'pg-protocol';
import type { Logger } from 'pino';
import type { BackendAddress } from '../backend/connect.js';
import { looseModeWarning, type ProxyConfig } from '../config.js';
import type { BackendState, HealthMonitor, PrimaryChange } from '../health/monitor.js';
import { SQLSTATE } from '../protocol/codes.js';
import { Authenticator, type UserEntry } from './auth.js';
import { NativePool, type NativeView } from './native-pool.js';
import { ServerConn, ServerLoginError } from './server-conn.js';
import { addCounts, type Counts, type RouteTotals, StatsPeriods, zeroCounts } from './stats.js';

export interface PoolSettings {
  mode: 'session' | 'transaction';
  size: number;
  resetQuery: string;
  /** transaction mode: statements kept prepared per server connection (LRU) */
  maxPreparedStatements: number;
  adminUsers: string[];
  authType: 'scram-sha-256' | 'md5';
  /** how long a client may wait for a server connection of a full (or paused) pool; 0: no limit (PgBouncer's query_wait_timeout) */
  waitTimeoutMs: number;
  /** a server connection idle this long is closed; 0: never (PgBouncer's server_idle_timeout) */
  serverIdleTimeoutMs: number;
  /** a server connection connected this long is closed once no client uses it; 0: never (PgBouncer's server_lifetime) */
  serverLifetimeMs: number;
  /** server connections to one node per database (all users) and per user (all databases); 0: no limit (PgBouncer's max_db_connections, max_user_connections) */
  maxDbConnections: number;
  maxUserConnections: number;
  /** the --auth-file, read again by reloadAuth */
  authFile: string;
}

/** what a client that waited --pool-wait-timeout for a server connection is told before it is closed (both pools) */
export function waitTimeoutError(settings: Pick<PoolSettings, 'waitTimeoutMs' | 'size'>): AcquireError {
  return new AcquireError(
    SQLSTATE.tooManyConnections,
    `pgha-proxy: query_wait_timeout: no server connection became free within ${settings.waitTimeoutMs} ms`,
    `every server connection of the pool (--pool-size ${settings.size}) stayed in use, or the pool stayed paused`,
    undefined,
    'Raise --pool-size (within the server\'s max_connections) or --pool-wait-timeout, or look for long transactions.',
  );
}

/** a transaction could not get a server connection: what the client is told */
export class AcquireError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly detail?: string,
    readonly fields?: Record<string, string>,
    readonly hint?: string,
  ) {
    super(message);
  }
}

/** the waiter's pool was drained (failover): look for the primary again */
class Moved extends Error {}

/** how often idle server connections are checked against --server-idle-timeout and --server-lifetime */
const JANITOR_MS = 1000;

/** the waiter waited --pool-wait-timeout */
class WaitedTooLong extends Error {}

interface Waiter {
  resolve: (s: ServerConn) => void;
  reject: (e: Error) => void;
  since: number;
}

export class Pool {
  readonly all = new Set<ServerConn>();
  readonly idle: ServerConn[] = [];
  opening = 0;
  readonly waiters: Waiter[] = [];
  /** the parameters a login reported (sent to clients at their own login) */
  loginParams: Map<string, string> | null = null;
  drained = false;
  /** connections the native loop was asked to close for this pool's waiters (see wantRoom) */
  private askedOfNative = 0;
  /** connections of this pool to close for other pools' waiters held back by --max-db-connections / --max-user-connections */
  lend = 0;
  /** of this pool's waiters, how many had a connection of another pool asked to close for them */
  borrowed = 0;
  /** an entry of this pool's user: logs in connections opened when another pool made room */
  private lastEntry: UserEntry | null = null;

  constructor(
    private readonly mgr: PoolManager,
    readonly user: string,
    readonly database: string,
    readonly node: string,
    readonly address: BackendAddress,
  ) {}

  /** connections in use (`view`: what the native pool says of the ones it carries) */
  active(view: NativeView | null = null): number {
    let n = 0;
    for (const s of this.all) if (s.state === 'active' || (s.state === 'native' && view?.servers.get(s.id)?.state === 'active')) n++;
    return n;
  }

  idleCount(view: NativeView | null = null): number {
    let n = this.idle.length;
    if (view) for (const s of this.all) if (s.state === 'native' && view.servers.get(s.id)?.state === 'idle') n++;
    return n;
  }

  /** a connection now, once one is free or once one is opened; rejected with WaitedTooLong when none is free by `until` (ms epoch) */
  get(entry: UserEntry, until = Infinity): Promise<ServerConn> {
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const w: Waiter = {
        resolve: (s) => {
          clearTimeout(timer);
          resolve(s);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
        since: Date.now(),
      };
      this.waiters.push(w);
      this.pump(entry);
      // still in the queue (not served, not opening a connection of its own) at the deadline: gives up
      if (until !== Infinity && this.waiters.includes(w)) {
        timer = setTimeout(() => {
          const i = this.waiters.indexOf(w);
          if (i < 0) return;
          this.waiters.splice(i, 1);
          this.wantRoom(this.waiters.length);
          reject(new WaitedTooLong());
        }, Math.max(0, until - Date.now()));
      }
    });
  }

  /** a connection now or once opened; null when the pool is full (the native pool's clients then wait in its loop) */
  tryGet(entry: UserEntry, until = Infinity): Promise<ServerConn> | null {
    if (this.waiters.length === 0 && this.idle.length === 0 && this.all.size + this.opening >= this.mgr.settings.size) return null;
    return this.get(entry, until);
  }

  /**
   * the pool is full and `waiting` clients wait: connections the native loop carries never come back
   * here, so the loop is asked to close as many of its own as are (or go) idle, making room for
   * clients it does not carry (TLS) — which otherwise wait while the loop's connections sit idle
   */
  private wantRoom(waiting: number): void {
    const native = this.mgr.native;
    if (!native) return;
    const want = waiting + this.lend;
    const n = want > 0 ? Math.min(want, this.nativeCarried()) : 0;
    if (n === this.askedOfNative) return;
    this.askedOfNative = n;
    native.giveBack(this.user, this.database, this.node, n);
  }

  private pump(entry: UserEntry): void {
    this.lastEntry = entry;
    this.pumpWaiters(entry);
    this.wantRoom(this.waiters.length);
  }

  /** another pool on the node closed or put away a connection: this one's waiters may have room now */
  pumpFromNeighbour(): void {
    if (this.waiters.length > 0 && this.lastEntry && !this.drained) this.pump(this.lastEntry);
  }

  /** carried by the native loop now (connections it gives back close once idle) */
  nativeCarried(): number {
    let n = 0;
    for (const s of this.all) if (s.state === 'native') n++;
    return n;
  }

  /** close one connection for another pool's waiter: an idle one now, else one the native loop carries once it is idle; false: none to give */
  giveUpOne(): boolean {
    const s = this.idle.shift();
    if (s) {
      s.close();
      return true;
    }
    if (this.lend + this.waiters.length >= this.nativeCarried()) return false;
    this.lend++;
    this.wantRoom(this.waiters.length);
    return true;
  }

  private pumpWaiters(entry: UserEntry): void {
    while (this.waiters.length > 0) {
      const s = this.idle.pop();
      if (s) {
        s.state = 'active';
        this.waiters.shift()!.resolve(s);
        continue;
      }
      if (this.all.size + this.opening >= this.mgr.settings.size) return;
      // --max-db-connections / --max-user-connections: another pool's connection is closed to make room
      const full = this.mgr.sharedLimitReached(this);
      if (full) {
        this.borrowed = Math.min(this.borrowed, this.waiters.length);
        if (this.borrowed < this.waiters.length && this.mgr.makeRoom(this, full)) this.borrowed++;
        return;
      }
      if (this.borrowed > 0) this.borrowed--;
      const w = this.waiters.shift()!;
      this.opening++;
      ServerConn.open({ node: this.node, address: this.address, tls: this.mgr.cfg.backendTls, timeoutMs: this.mgr.cfg.connectTimeoutMs, entry, database: this.database }).then(
        (srv) => {
          this.opening--;
          if (this.drained) {
            srv.close();
            w.reject(new Moved());
            return;
          }
          this.loginParams ??= new Map(srv.params);
          this.all.add(srv);
          srv.onClosed = () => this.forget(srv, entry);
          srv.idleData = (chunk) => this.unexpected(srv, chunk);
          srv.state = 'active';
          w.resolve(srv);
        },
        (e: Error) => {
          this.opening--;
          w.reject(e);
          this.pump(entry);
        },
      );
    }
  }

  private forget(s: ServerConn, entry: UserEntry): void {
    this.all.delete(s);
    const i = this.idle.indexOf(s);
    if (i >= 0) this.idle.splice(i, 1);
    if (this.lend > 0) this.lend--;
    // one connection lost by the server's side: its idle neighbours on that node are suspect too
    if (s.lost) this.mgr.nodeTrouble(s.node, 'a pooled server connection was lost');
    this.pump(entry);
    this.mgr.connectionFreed(this);
  }

  /** close the idle connections (the node may be going away; new ones are opened as needed) */
  closeIdle(): number {
    const idle = this.idle.splice(0);
    for (const s of idle) s.close();
    return idle.length;
  }

  /** idle connections idle for --server-idle-timeout or connected for --server-lifetime: closed */
  expire(now: number): number {
    const { serverIdleTimeoutMs: idleMs, serverLifetimeMs: lifeMs } = this.mgr.settings;
    const old = this.idle.filter((s) => (idleMs > 0 && now - s.lastUsed >= idleMs) || (lifeMs > 0 && now - s.connectedAt >= lifeMs));
    for (const s of old) {
      this.idle.splice(this.idle.indexOf(s), 1);
      s.close();
    }
    return old.length;
  }

  /** a client is done with a server: reset (session mode) and back to the pool, or closed */
  put(s: ServerConn, entry: UserEntry, reusable: boolean, reset: boolean): void {
    if (s.native) return;
    s.client = null;
    s.lastUsed = Date.now();
    const lifeMs = this.mgr.settings.serverLifetimeMs;
    if (!reusable || s.state === 'closed' || this.drained || (lifeMs > 0 && s.lastUsed - s.connectedAt >= lifeMs)) {
      s.close();
      return;
    }
    s.onData = s.idleData;
    if (reset && this.mgr.settings.resetQuery) {
      s.state = 'idle';
      this.resetThenIdle(s, entry);
      return;
    }
    this.toIdle(s, entry);
  }

  private toIdle(s: ServerConn, entry: UserEntry): void {
    s.state = 'idle';
    this.idle.push(s);
    this.pump(entry);
    if (this.mgr.sharedLimits && this.idle.includes(s)) this.mgr.connectionFreed(this);
  }

  private resetThenIdle(s: ServerConn, entry: UserEntry): void {
    const f = s.framer;
    s.state = 'active';
    let failed = false;
    s.onData = (chunk) => {
      try {
        f.feed(chunk, (t, msg) => {
          if (t === 0x45) {
            // the session's state may be left: the connection is closed rather than given to another client
            failed = true;
            this.mgr.log.warn({ server: s.id, err: msg.subarray(5).toString('utf8').replace(/\0/g, ' ') }, 'server reset query failed: connection closed');
          }
          if (t === 0x5a) {
            s.txStatus = String.fromCharCode(msg[5]) as 'I';
            s.prepared.clear();
            s.onData = s.idleData;
            if (s.txStatus !== 'I' || failed || this.drained) s.close();
            else this.toIdle(s, entry);
          } else if (t === 0x53) {
            const body = msg.subarray(5).toString('utf8').split('\0');
            s.settings.set(body[0].toLowerCase(), body[1]);
          }
        });
      } catch {
        s.close();
      }
    };
    s.socket.write(serialize.query(this.mgr.settings.resetQuery));
  }

  /** an idle server said something (a FATAL before it closes): it is no longer usable */
  private unexpected(s: ServerConn, chunk: Buffer): void {
    this.mgr.log.info({ server: s.id, node: s.node, bytes: chunk.length }, 'idle server connection spoke: closed');
    s.close();
    this.mgr.nodeTrouble(s.node, 'an idle pooled server connection spoke (a FATAL before it closes)');
  }

  /** close idle connections; waiters go looking for the new primary */
  drain(): void {
    this.drained = true;
    for (const s of this.idle.splice(0)) s.close();
    for (const w of this.waiters.splice(0)) w.reject(new Moved());
  }

  maxWaitMs(): number {
    return this.waiters.length ? Date.now() - this.waiters[0].since : 0;
  }
}

export interface PoolHost {
  cfg: ProxyConfig;
  monitor: HealthMonitor;
  log: Logger;
  pickReader(): BackendState | null;
  sendCancel(target: BackendAddress, pid: number, key: Buffer): Promise<void>;
}

/** clients as the pool sees them (the client module implements it) */
export interface PoolClient {
  readonly id: number;
  readonly user: string;
  readonly database: string;
  readonly kind: 'rw' | 'ro';
  readonly cancelKey: { pid: number; key: number };
  server: ServerConn | null;
  /** the proxy ends this client (failover with a transaction in flight, shutdown) */
  terminate(code: string, message: string, hint?: string): void;
  /** the node of its server connection is no longer where transactions go: carry on elsewhere if nothing was lost, else end */
  failover(why: string): void;
  /** a request to cancel what this client runs; resolved once the server took it */
  cancel(): Promise<void>;
  describe(view?: NativeView | null): Record<string, string | number | null>;
  /** waiting for a server connection since (ms epoch), else 0 */
  waitingSince: number;
}

/** one pool as SHOW POOLS, /status and /metrics show it */
export interface PoolStat {
  database: string;
  user: string;
  node: string;
  /** clients on one of this pool's server connections now */
  clActive: number;
  /** clients waiting for one */
  clWaiting: number;
  svActive: number;
  svIdle: number;
  /** server connections logging in */
  svLogin: number;
  /** how long the oldest waiting client has waited */
  maxWaitMs: number;
  mode: 'session' | 'transaction';
  state: 'ok' | 'paused' | 'drained';
}

export class PoolManager {
  readonly pools = new Map<string, Pool>();
  readonly clients = new Set<PoolClient>();
  private readonly byCancelKey = new Map<string, PoolClient>();
  paused = false;
  private resumeWaiters: Array<() => void> = [];
  /** clients closed by --pool-wait-timeout, per (user, database) */
  readonly waitTimeouts = new Map<string, { user: string; database: string; count: number }>();
  /** what the TypeScript pool's clients did, per (user, database) (the native loop keeps its own) */
  private readonly routeCounters = new Map<string, RouteTotals>();
  /** SHOW STATS' averages over the last stats period */
  readonly periods = new StatsPeriods();
  /** closes what --server-idle-timeout and --server-lifetime say is old (every second) */
  private readonly janitor: NodeJS.Timeout;
  readonly log: Logger;
  readonly cfg: ProxyConfig;
  /** with the native relay: clients on plain TCP of the read-write port are carried by the native loop (either mode) */
  readonly native: NativePool | null;

  constructor(
    readonly host: PoolHost,
    readonly settings: PoolSettings,
    readonly auth: Authenticator,
  ) {
    this.cfg = host.cfg;
    this.log = host.log.child({ part: 'pool' });
    this.native = this.cfg.relay === 'native' ? NativePool.create(settings, host.monitor.primary?.name ?? null, this.log, (s) => void this.sendCancelTo(s)) : null;
    host.monitor.on('primary', (c: PrimaryChange) => {
      this.native?.setPrimary(c.to?.name ?? null);
      if (c.from) this.drainNode(c.from.name, c.to ? `the primary moved from ${c.from.name} to ${c.to.name}` : `the primary ${c.from.name} is unavailable (${c.reason})`);
    });
    host.monitor.on('change', () => {
      for (const b of host.monitor.backends) if (b.role === 'down' || b.role === 'fenced') this.drainNode(b.name, `${b.name} is ${b.role}`, true);
    });
    this.janitor = setInterval(() => {
      this.expireOld();
      this.retryHeldBack();
      this.periods.tick(Date.now(), () => this.routeTotals());
    }, JANITOR_MS);
    this.janitor.unref();
  }

  /** the TypeScript pool's counters of (user, database), taken once per client */
  countersFor(user: string, database: string): Counts {
    const key = `${user}\0${database}`;
    let r = this.routeCounters.get(key);
    if (!r) this.routeCounters.set(key, (r = { user, database, ...zeroCounts() }));
    return r;
  }

  /** per (user, database): what its clients did in both pools since the start (SHOW STATS, /metrics) */
  routeTotals(): RouteTotals[] {
    const out = new Map<string, RouteTotals>();
    for (const r of [...this.routeCounters.values(), ...(this.native?.routeTotals() ?? [])]) {
      const key = `${r.user}\0${r.database}`;
      const t = out.get(key);
      if (t) addCounts(t, r);
      else out.set(key, { ...r });
    }
    return [...out.values()];
  }

  /** a client waited --pool-wait-timeout (here, or in the native loop): counted, logged; the error it is told */
  waitedTooLong(c: { id: number; user: string; database: string }): AcquireError {
    const key = `${c.user}\0${c.database}`;
    const t = this.waitTimeouts.get(key);
    if (t) t.count++;
    else this.waitTimeouts.set(key, { user: c.user, database: c.database, count: 1 });
    this.log.info({ client: c.id, user: c.user, database: c.database, waitTimeoutMs: this.settings.waitTimeoutMs }, 'client closed: query_wait_timeout (no server connection became free)');
    return waitTimeoutError(this.settings);
  }

  /** the auth file read again (console RELOAD, SIGHUP): its entries for logins from now on; AuthFileError and nothing changed when it is bad */
  reloadAuth(): number {
    const n = this.auth.reload(this.settings.authFile);
    const loose = looseModeWarning(this.settings.authFile, '--auth-file');
    if (loose) this.log.warn(loose);
    this.log.info({ file: this.settings.authFile, users: n }, 'auth file reloaded');
    return n;
  }

  /** server connections past --server-idle-timeout (idle ones) or --server-lifetime (closed once idle) */
  private expireOld(): void {
    const { serverIdleTimeoutMs: idleMs, serverLifetimeMs: lifeMs } = this.settings;
    if (idleMs === 0 && lifeMs === 0) return;
    const now = Date.now();
    let closed = 0;
    for (const p of this.pools.values()) closed += p.expire(now);
    if (this.native && this.native.servers.size > 0) {
      const retire: number[] = [];
      if (lifeMs > 0) for (const s of this.native.servers.values()) if (!s.retiring && now - s.connectedAt >= lifeMs) {
        s.retiring = true;
        retire.push(s.id);
      }
      this.native.expire(idleMs > 0 ? idleMs : null, retire);
    }
    if (closed > 0) this.log.debug({ closed }, 'closed idle server connections past --server-idle-timeout or --server-lifetime');
  }

  /** what both pools relayed since the start, all routes together (the proxy's throughput in /metrics) */
  trafficTotals(): Counts {
    const all = zeroCounts();
    for (const t of this.routeTotals()) addCounts(all, t);
    return all;
  }

  /** what the native loop says of the clients and connections it carries (null without it) */
  nativeView(): NativeView | null {
    return this.native ? this.native.view() : null;
  }

  /** every pool with connections or clients (drained pools until their last connection is gone) */
  stats(): PoolStat[] {
    const out: PoolStat[] = [];
    const view = this.nativeView();
    for (const p of this.pools.values()) {
      if (p.drained && p.all.size === 0) continue;
      let clActive = 0;
      let clWaiting = 0;
      for (const c of this.clients) {
        if (c.user !== p.user || c.database !== p.database) continue;
        const nv = view?.clients.get(c.id);
        if (nv) {
          const sv = nv.server === null ? undefined : this.native!.servers.get(nv.server);
          if (sv && p.all.has(sv)) clActive++;
          else if (nv.state === 'waiting' && !p.drained && p.node === this.host.monitor.primary?.name) clWaiting++;
        } else if (c.server && p.all.has(c.server)) clActive++;
        else if (c.waitingSince && !p.drained) clWaiting++;
      }
      out.push({
        database: p.database,
        user: p.user,
        node: p.node,
        clActive,
        clWaiting,
        svActive: p.active(view),
        svIdle: p.idleCount(view),
        svLogin: p.opening,
        maxWaitMs: p.maxWaitMs(),
        mode: this.settings.mode,
        state: p.drained ? 'drained' : this.paused ? 'paused' : 'ok',
      });
    }
    return out;
  }

  register(c: PoolClient): void {
    this.clients.add(c);
    this.byCancelKey.set(`${c.cancelKey.pid}:${c.cancelKey.key}`, c);
  }

  unregister(c: PoolClient): void {
    this.clients.delete(c);
    this.byCancelKey.delete(`${c.cancelKey.pid}:${c.cancelKey.key}`);
  }

  /**
   * a CancelRequest with one of the pool's keys: sent to the server the client is on now; resolved
   * once that server took it (closed the cancel connection), so the client's cancel connection is
   * closed no earlier than PostgreSQL would close it. null: not one of the pool's keys.
   */
  cancel(pid: number, key: Buffer): Promise<void> | null {
    if (key.length !== 4) return null;
    const c = this.byCancelKey.get(`${pid}:${key.readInt32BE(0)}`);
    if (!c) return null;
    return c.cancel();
  }

  sendCancelTo(s: ServerConn): Promise<void> {
    if (!s.backendKey) return Promise.resolve();
    return this.host.sendCancel(s.address, s.backendKey.pid, s.backendKey.key).catch((e) => this.log.warn({ server: s.id, err: (e as Error).message }, 'could not forward cancel request'));
  }

  private poolFor(user: string, database: string, b: BackendState): Pool {
    const key = `${user}\0${database}\0${b.name}`;
    let p = this.pools.get(key);
    if (!p || p.drained) {
      p = new Pool(this, user, database, b.name, b.address);
      this.pools.set(key, p);
    }
    return p;
  }

  /** --max-db-connections or --max-user-connections is set */
  get sharedLimits(): boolean {
    return this.settings.maxDbConnections > 0 || this.settings.maxUserConnections > 0;
  }

  /**
   * --max-db-connections / --max-user-connections: which limit keeps `pool` from opening one more
   * connection on its node (null: neither) — its database's or its user's connections there, all pools
   */
  sharedLimitReached(pool: Pool): 'database' | 'user' | null {
    if (!this.sharedLimits) return null;
    const { maxDbConnections: maxDb, maxUserConnections: maxUser } = this.settings;
    let db = 0;
    let user = 0;
    for (const p of this.pools.values()) {
      if (p.node !== pool.node) continue;
      const n = p.all.size + p.opening;
      if (p.database === pool.database) db += n;
      if (p.user === pool.user) user += n;
    }
    if (maxDb > 0 && db >= maxDb) return 'database';
    if (maxUser > 0 && user >= maxUser) return 'user';
    return null;
  }

  /** the other pools on `pool`'s node under the same limit (its database's, or its user's) */
  private neighbours(pool: Pool, limit: 'database' | 'user'): Pool[] {
    return [...this.pools.values()].filter((p) => p !== pool && p.node === pool.node && (limit === 'database' ? p.database === pool.database : p.user === pool.user));
  }

  /** a waiter of `pool` is held back by a shared limit: one connection of a neighbour that nobody waits for is closed (PgBouncer evicts an idle one); false: none to close now */
  makeRoom(pool: Pool, limit: 'database' | 'user'): boolean {
    const others = this.neighbours(pool, limit).filter((p) => p.waiters.length === 0);
    // an idle connection first, then one the native loop carries (closed once idle)
    for (const p of others) if (p.idle.length > 0 && p.giveUpOne()) return this.logRoom(pool, p, limit);
    for (const p of others) if (p.giveUpOne()) return this.logRoom(pool, p, limit);
    return false;
  }

  private logRoom(pool: Pool, from: Pool, limit: 'database' | 'user'): true {
    this.log.debug({ for: `${pool.user}@${pool.database}`, from: `${from.user}@${from.database}`, node: pool.node, limit }, `--max-${limit === 'database' ? 'db' : 'user'}-connections reached: a connection of another pool closed to make room`);
    return true;
  }

  /** a connection the TypeScript pool opened or kept is carried by the native loop from now on: a neighbour's waiter may ask for it back */
  handedToNative(s: ServerConn): void {
    const pool = this.pools.get(`${s.user}\0${s.database}\0${s.node}`);
    if (pool) this.connectionFreed(pool);
  }

  /**
   * waiters held back by a shared limit for a janitor's round: asked for room again (what was
   * asked of a neighbour may have been spent elsewhere, or the neighbour had nothing to give then,
   * its connection still opening)
   */
  private retryHeldBack(): void {
    if (!this.sharedLimits) return;
    for (const p of this.pools.values()) {
      if (p.maxWaitMs() < JANITOR_MS) continue;
      p.borrowed = 0;
      p.pumpFromNeighbour();
    }
  }

  /** a connection of `pool` closed or went idle: waiters of the pools sharing a limit with it may go on */
  connectionFreed(pool: Pool): void {
    if (!this.sharedLimits) return;
    const { maxDbConnections: maxDb, maxUserConnections: maxUser } = this.settings;
    for (const p of this.pools.values()) {
      if (p === pool || p.node !== pool.node || p.waiters.length === 0) continue;
      // after what runs now (a pool making room closes a connection from inside its own pump)
      if ((maxDb > 0 && p.database === pool.database) || (maxUser > 0 && p.user === pool.user)) queueMicrotask(() => p.pumpFromNeighbour());
    }
  }

  /** the parameters a login of this user reports on the node a transaction would use now, if known */
  loginParams(user: string, database: string, kind: 'rw' | 'ro'): Map<string, string> | null {
    const b = kind === 'rw' ? this.host.monitor.primary : null;
    return b ? (this.pools.get(`${user}\0${database}\0${b.name}`)?.loginParams ?? null) : null;
  }

  /** an idle server connection on the primary at once, when one is there and nobody waits for it (no promise, no pause) */
  acquireNow(c: PoolClient): ServerConn | null {
    if (this.paused || c.kind !== 'rw') return null;
    const b = this.host.monitor.primary;
    if (!b) return null;
    const p = this.pools.get(`${c.user}\0${c.database}\0${b.name}`);
    if (!p || p.drained || p.waiters.length > 0) return null;
    const s = p.idle.pop();
    if (!s) return null;
    s.state = 'active';
    s.client = c;
    return s;
  }

  /**
   * a server connection for the client's next transaction (or session): on the primary (the
   * read-only port: a standby), waiting for one while there is none, up to --primary-wait.
   * `orFull`: null instead of waiting when the pool is full (a native client waits in the loop)
   */
  async acquire(c: PoolClient, entry: UserEntry): Promise<ServerConn>;
  async acquire(c: PoolClient, entry: UserEntry, orFull: true): Promise<ServerConn | null>;
  async acquire(c: PoolClient, entry: UserEntry, orFull = false): Promise<ServerConn | null> {
    const { monitor } = this.host;
    const deadline = Date.now() + this.cfg.primaryWaitMs;
    // --pool-wait-timeout counts from here: a paused pool, a full one (and a failover's wait for a primary between them)
    const waitUntil = this.settings.waitTimeoutMs > 0 ? Date.now() + this.settings.waitTimeoutMs : Infinity;
    let lastError = '';
    for (;;) {
      if (this.paused && !(await this.resumed(waitUntil))) throw this.waitedTooLong(c);
      const target = c.kind === 'rw' ? (monitor.primary ?? (await monitor.waitForPrimary(Math.max(0, deadline - Date.now())))) : this.host.pickReader();
      if (!target) {
        throw new AcquireError(SQLSTATE.cannotConnectNow, `pgha-proxy: ${c.kind === 'rw' ? 'no primary is available' : 'no backend is available'}${lastError ? ` (${lastError})` : ''}`, `waited ${this.cfg.primaryWaitMs} ms; backends: ${monitor.backends.map((b) => `${b.name} ${b.role}`).join(', ')}`);
      }
      const pool = this.poolFor(c.user, c.database, target);
      try {
        const got = orFull ? pool.tryGet(entry, waitUntil) : pool.get(entry, waitUntil);
        if (!got) return null;
        const s = await got;
        s.client = c;
        return s;
      } catch (e) {
        if (e instanceof WaitedTooLong) throw this.waitedTooLong(c);
        if (e instanceof ServerLoginError) {
          const f = e.fields;
          // a server shutting down or starting refuses logins with 57P0x: wait for it or the next primary
          if (!/^57P0/.test(f.C ?? '')) throw new AcquireError(f.C ?? SQLSTATE.connectionFailure, f.M ?? e.message, f.D, f);
        }
        if (!(e instanceof Moved)) {
          lastError = (e as Error).message;
          monitor.suspect(target.name, lastError);
        }
        if (Date.now() >= deadline || (c.kind === 'ro' && !(e instanceof Moved))) throw new AcquireError(SQLSTATE.connectionFailure, `pgha-proxy: could not connect to ${target.name}: ${lastError}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  release(s: ServerConn, entry: UserEntry, reusable: boolean, reset: boolean): void {
    if (s.native) return;
    const pool = this.pools.get(`${s.user}\0${s.database}\0${s.node}`);
    if (!pool || !pool.all.has(s)) {
      s.close();
      return;
    }
    pool.put(s, entry, reusable, reset);
  }

  /** the node is no longer where transactions go: close what is idle there, end transactions in flight */
  drainNode(node: string, why: string, onlyIfAny = false): void {
    this.native?.drainNode(node, why);
    let n = 0;
    for (const p of this.pools.values()) {
      if (p.node !== node || p.drained) continue;
      n += p.all.size;
      p.drain();
    }
    let ended = 0;
    for (const c of [...this.clients]) {
      if (c.server?.node !== node) continue;
      ended++;
      c.failover(why);
    }
    if (n > 0 || ended > 0 || !onlyIfAny) this.log.warn({ node, serverConnections: n, clientsEnded: ended, why }, 'pool drained');
  }

  /**
   * a server connection on this node ended from the server's side: close the node's other idle
   * connections before a transaction is sent to one that is about to go the same way (a postmaster
   * killed: its backends exit one by one), and have the node checked now
   */
  nodeTrouble(node: string, why: string): void {
    let n = 0;
    for (const p of this.pools.values()) if (p.node === node) n += p.closeIdle();
    this.native?.closeIdle(node);
    if (n > 0) this.log.info({ node, closed: n, why }, 'closed the idle pooled connections of a node in trouble');
    this.host.monitor.suspect(node, why);
  }

  pause(): void {
    this.paused = true;
    this.native?.setPaused(true);
  }

  /** resolves once no server connection is in use (PAUSE answers then) */
  async whenQuiet(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let busy = 0;
      const view = this.nativeView();
      for (const p of this.pools.values()) busy += p.active(view);
      if (busy === 0) return true;
      if (Date.now() > deadline) return false;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** resolves true once the pool is resumed, false at `until` (ms epoch) if it is still paused */
  private resumed(until: number): Promise<boolean> {
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      this.resumeWaiters.push(done);
      if (until !== Infinity)
        timer = setTimeout(() => {
          const i = this.resumeWaiters.indexOf(done);
          if (i >= 0) this.resumeWaiters.splice(i, 1);
          resolve(false);
        }, Math.max(0, until - Date.now()));
    });
  }

  resume(): void {
    this.paused = false;
    this.native?.setPaused(false);
    for (const r of this.resumeWaiters.splice(0)) r();
  }

  stop(): void {
    clearInterval(this.janitor);
    for (const c of [...this.clients]) c.terminate(SQLSTATE.adminShutdown, 'terminating connection because pgha-proxy is shutting down');
    for (const p of this.pools.values()) {
      p.drain();
      for (const s of p.all) s.close();
    }
    // the loop writes the FATALs and Terminates queued above before it stops
    const native = this.native;
    if (native) setTimeout(() => native.stop(), 200).unref();
  }
}
