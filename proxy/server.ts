/**
 * pgha-proxy: listeners (read-write, optional read-only), the health monitor, failover, the admin
 * endpoint. Ties sessions to backends so that when a backend stops being what its sessions need (the
 * primary moved, a node went down or was fenced) they are ended at once with a proper ErrorResponse.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { hostname } from 'node:os';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { FastifyInstance } from 'fastify';
import pino, { type Logger } from 'pino';
import { nativeProxyRelay, type ProxyRelay } from '../src/native/index.js';
import { addressText, type BackendAddress } from './backend/connect.js';
import type { ProxyConfig } from './config.js';
import { FailoverController, FailoverError, type FailoverReport } from './failover/failover.js';
import { startAdmin } from './admin/http.js';
import { ClusterManager } from './cluster/manager.js';
import { MemberDirectory } from './cluster/members.js';
import { HealthMonitor, type BackendState, type PrimaryChange, type SyncRecord } from './health/monitor.js';
import { proxyMetrics } from './admin/metrics.js';
import { CancelForwarder } from './cancel/forwarder.js';
import { ReaderRouter } from './router/reader.js';
import { errorResponse } from './protocol/backend-messages.js';
import { SQLSTATE } from './protocol/codes.js';
import { CancelRegistry } from './session/cancel-registry.js';
import { ClientSession, type PortKind } from './session/client-session.js';
import type { ProxyContext, ProxyStats } from './session/context.js';
import { Coordinator, type CoordinatorStatus, type DcsStatus } from '../src/dcs/coordinator.js';
import { rollForward } from './failover/roll-forward.js';
import { memberSlotsOnPrimary } from './cluster/plan.js';
import type { LeaderRecord } from '../src/dcs/keys.js';
import { Authenticator } from './pool/auth.js';
import { PooledClient } from './pool/client.js';
import { PoolManager, type PoolStat } from './pool/pool.js';

/**
 * Connections the proxy leaves free on every server below its client slots (max_connections −
 * superuser_reserved_connections): for an agent, an operator's psql, monitoring. Health checks run
 * as a superuser and use the reserved slots; WAL senders have their own (max_wal_senders).
 */
const SERVER_HEADROOM = 2;

export interface ProxyStatus {
  primary: string | null;
  timeline: number;
  systemId: string | null;
  autoFailover: boolean;
  failoverRunning: boolean;
  health: { intervalMs: number; timeoutMs: number; retries: number; retryDelayMs: number };
  backends: Array<
    Pick<
      BackendState,
      | 'name' | 'role' | 'reason' | 'timeline' | 'lsn' | 'receiveLsn' | 'replayLsn' | 'systemId' | 'failures' | 'lastCheck' | 'latencyMs' | 'lastError'
      | 'streaming' | 'upstream' | 'syncState' | 'lagBytes' | 'lagSeconds' | 'fenced' | 'slot' | 'applicationName'
    > & { sessions: number; capacity: number | null; agent: string | null; member: string }
  >;
  /** the primary's synchronous standbys at its last answer: who a zero-loss failover may promote */
  synchronous: { mode: ProxyConfig['synchronousMode']; record: SyncRecord | null };
  memberSlots: boolean;
  /** recent slot / synchronous-standby actions of the cluster manager */
  clusterActions: ClusterManager['recent'];
  clients: { rw: number; ro: number; accepted: { rw: number; ro: number }; nativeRelay: number };
  relay: 'native' | 'node';
  /** the native relay's loops in order: sessions each carries, CPU seconds of its thread (null: no native relay) */
  relayLoops: Array<{ sessions: number; cpuSeconds: number | null }> | null;
  failovers: FailoverController['history'];
  listen: { rw: string; ro: string | null; admin: string | null };
  /** with --etcd: this proxy's id, whether it leads, and the leader as etcd names it (null without --etcd) */
  leader: { id: string; isLeader: boolean; leader: LeaderRecord | null } | null;
  /** with --etcd: endpoints, whether etcd answers, the recorded primary, the members (null without --etcd) */
  etcd: CoordinatorStatus | null;
  /** with --etcd: reachable, cluster, revision, safe mode (etcd unreachable: routing to the last known primary, no decisions), the leader's id, the members (null without --etcd) */
  dcs: DcsStatus | null;
  /** with --pool-mode: the mode and every pool as SHOW POOLS shows it, pooled clients counted (null without pooling) */
  /** `native`: clients carried by the native transaction pool (null: the pool frames in Node) */
  pool: { mode: 'session' | 'transaction'; clients: number; native: number | null; pools: PoolStat[] } | null;
}

export class ProxyServer implements ProxyContext {
  readonly monitor: HealthMonitor;
  readonly cancels = new CancelRegistry();
  readonly log: Logger;
  readonly secureContext: SecureContext | null;
  readonly stats: ProxyStats = { bytesFromClients: 0, bytesToClients: 0, terminated: 0, protocolErrors: 0, cancelsForwarded: 0, cancelsUnknown: 0, ready: 0, readyIdle: 0 };
  readonly sessions = new Set<ClientSession>();
  readonly accepted = { rw: 0, ro: 0 };
  readonly failover: FailoverController;
  readonly members: MemberDirectory;
  readonly cluster: ClusterManager;
  readonly relay: ProxyRelay | null;
  readonly nativeSessions = new Map<number, ClientSession>();
  /** --pool-mode: the pool, which takes clients after their startup packet (null: one server connection per client) */
  readonly pool: (PoolManager & NonNullable<ProxyContext['pool']>) | null;
  private readonly byBackend = new Map<string, Set<ClientSession>>();
  /** places held by sessions still connecting, per backend */
  private readonly pending = new Map<string, number>();
  private servers: Server[] = [];
  private admin: FastifyInstance | null = null;
  private readonly metrics: ReturnType<typeof proxyMetrics>;
  private readonly readers: ReaderRouter;
  private readonly cancelForwarder: CancelForwarder;
  /** the last automatic failover that promoted no one, and which standbys answered then */
  private failedAttempt: { from: string; standbys: string } | null = null;
  /** with --etcd: leadership, the recorded primary, members (started once the admin port is bound) */
  dcs: Coordinator | null = null;
  private recordingFirst = false;
  /** with --etcd: the leader checks every cycle that the recorded primary is one (rollForwardCheck) */
  private rollTimer: NodeJS.Timeout | null = null;
  /** a completion that failed (e.g. refused by a --dcs-failsafe promise) is tried again from then on */
  private rollRetryAt = 0;
  readonly addresses: { rw: BackendAddress | null; ro: BackendAddress | null; admin: BackendAddress | null } = { rw: null, ro: null, admin: null };

  constructor(
    readonly cfg: ProxyConfig,
    log?: Logger,
  ) {
    this.log = log ?? pino({ level: cfg.logLevel, base: { svc: 'pgha-proxy' } });
    // with --client-tls-ca clients are asked for a certificate it signed (checked by the session)
    this.secureContext = cfg.tls ? createSecureContext({ cert: cfg.tls.cert, key: cfg.tls.key, ca: cfg.clientTlsCa ?? undefined }) : null;
    this.monitor = new HealthMonitor({
      backends: cfg.backends,
      intervalMs: cfg.healthIntervalMs,
      timeoutMs: cfg.healthTimeoutMs,
      retries: cfg.healthRetries,
      retryDelayMs: cfg.healthRetryDelayMs,
      credentials: cfg.health,
      tls: cfg.backendTls,
      log: this.log.child({ part: 'health' }),
      recorded: cfg.etcd !== null,
    });
    this.members = new MemberDirectory(cfg.agents, cfg.token);
    this.failover = new FailoverController({
      monitor: this.monitor,
      members: this.members,
      token: cfg.token,
      credentials: cfg.health,
      tls: cfg.backendTls,
      log: this.log.child({ part: 'failover' }),
      migrateSlots: cfg.migrateSlots,
      memberSlots: cfg.memberSlots,
      synchronousMode: cfg.synchronousMode,
      synchronousCount: cfg.synchronousCount,
      coordinate: cfg.etcd ? { claim: (kind, trigger, from, to) => this.claim(kind, trigger, from, to), released: (from) => this.released(from) } : undefined,
    });
    this.cluster = new ClusterManager({
      monitor: this.monitor,
      members: this.members,
      sql: { credentials: cfg.health, tls: cfg.backendTls, timeoutMs: Math.max(cfg.healthTimeoutMs, 5000) },
      log: this.log.child({ part: 'cluster' }),
      intervalMs: cfg.clusterIntervalMs,
      memberSlots: cfg.memberSlots,
      synchronousMode: cfg.synchronousMode,
      synchronousCount: cfg.synchronousCount,
      // with etcd only the leader manages the cluster
      busy: () => this.failover.running || !this.isDecider(),
      // with etcd the leader records the member slots on the primary (`slots`)
      onRound: cfg.etcd && cfg.memberSlots
        ? (view) => {
            const rec = memberSlotsOnPrimary(view);
            if (rec) void this.dcs?.publishSlots(rec);
          }
        : undefined,
    });
    this.relay = cfg.relay === 'native' ? nativeProxyRelay((e) => this.nativeSessions.get(e.id)?.onRelayEvent(e), cfg.relayThreads) : null;
    if (cfg.relay === 'native' && !this.relay) this.log.warn('native relay unavailable (addon not built): relaying in Node');
    this.pool = cfg.pool ? this.makePool(cfg.pool) : null;
    this.readers = new ReaderRouter({ primary: () => this.monitor.primary, backends: () => this.monitor.backends, sessionsOn: (n) => this.sessionsOn(n) }, cfg.readMaxLagBytes);
    this.cancelForwarder = new CancelForwarder({ registry: this.cancels, backendTls: cfg.backendTls, connectTimeoutMs: cfg.connectTimeoutMs, log: this.log, stats: this.stats, pool: () => this.pool });
    this.metrics = proxyMetrics(this);
    this.monitor.onCheck = (name, seconds, ok) => this.metrics.healthLatency.observe({ backend: name, ok: String(ok) }, seconds);
    this.monitor.on('primary', (c: PrimaryChange) => this.onPrimaryChange(c));
    this.monitor.on('change', () => {
      this.endSessionsOnLostBackends();
      this.retryFailover();
      this.publishSync();
    });
    this.monitor.on('unrecorded', (s: BackendState) => void this.recordFirstPrimary(s));
    this.monitor.on('down', (s: BackendState) => void this.onDown(s));
    // a primary left behind on an older timeline (someone promoted a standby by hand): fence it
    // through its agent too, so it cannot take writes from clients that bypass the proxy
    this.monitor.on('fenced', (s: BackendState) => {
      if (!this.failover.running && this.isDecider()) void this.failover.fenceOld(s.name, this.monitor.primary?.name ?? 'the newest timeline');
    });
  }

  private makePool(pc: NonNullable<ProxyConfig['pool']>): NonNullable<ProxyServer['pool']> {
    const auth = new Authenticator(pc.users, pc.authQuery ? { ...pc.authQuery, target: () => this.monitor.primary?.address ?? null, ssl: this.cfg.backendTls.mode !== 'disable' && this.cfg.backendTls.mode !== 'prefer', timeoutMs: this.cfg.connectTimeoutMs } : null);
    const host = { cfg: this.cfg, monitor: this.monitor, log: this.log, pickReader: () => this.pickReader(), sendCancel: (t: BackendAddress, pid: number, key: Buffer) => this.cancelForwarder.send(t, pid, key) };
    const mgr = new PoolManager(host, { mode: pc.mode, size: pc.size, resetQuery: pc.resetQuery, maxPreparedStatements: pc.maxPreparedStatements, adminUsers: pc.adminUsers, authType: pc.authType, waitTimeoutMs: pc.waitTimeoutMs, serverIdleTimeoutMs: pc.serverIdleTimeoutMs, serverLifetimeMs: pc.serverLifetimeMs, maxDbConnections: pc.maxDbConnections, maxUserConnections: pc.maxUserConnections, authFile: pc.authFile }, auth);
    return Object.assign(mgr, { adopt: (socket: Socket, params: Record<string, string>, rest: Buffer, kind: PortKind, tls: boolean) => void new PooledClient(mgr, socket, params, rest, kind, tls) });
  }

  async start(): Promise<void> {
    for (const w of this.cfg.warnings) this.log.warn(w);
    this.monitor.start();
    if (this.cfg.memberSlots || this.cfg.synchronousMode !== 'off') this.cluster.start();
    this.addresses.rw = await this.listen(this.cfg.listen, 'rw');
    if (this.cfg.readListen) this.addresses.ro = await this.listen(this.cfg.readListen, 'ro');
    if (this.cfg.admin) this.addresses.admin = await this.startAdmin(this.cfg.admin);
    if (this.cfg.etcd) this.startDcs();
    this.log.info(
      { listen: addressText(this.addresses.rw), read: this.addresses.ro && addressText(this.addresses.ro), admin: this.addresses.admin && addressText(this.addresses.admin), backends: this.cfg.backends.map(addressText), autoFailover: this.cfg.autoFailover, tls: Boolean(this.secureContext) },
      'pgha-proxy listening',
    );
  }

  /** SIGHUP: the pool's auth file read again (the only file the proxy re-reads; other settings need a restart) */
  reload(): void {
    if (!this.pool) {
      this.log.info('SIGHUP: nothing to reload (no --pool-mode; other settings need a restart)');
      return;
    }
    try {
      this.pool.reloadAuth();
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'SIGHUP: the auth file was not reloaded; the entries read before are still in use');
    }
  }

  async stop(): Promise<void> {
    this.monitor.stop();
    this.cluster.stop();
    if (this.rollTimer) clearInterval(this.rollTimer);
    // resign: another proxy leads at once instead of after the TTL
    await this.dcs?.stop().catch((e) => this.log.warn({ err: (e as Error).message }, 'etcd: could not resign'));
    // stop accepting, end the sessions (close() only calls back once they are gone), then wait
    const closed = Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    for (const s of [...this.sessions]) s.terminate({ severity: 'FATAL', code: SQLSTATE.adminShutdown, message: 'terminating connection because pgha-proxy is shutting down' }, 'proxy stopping');
    this.pool?.stop();
    // a client that never closes its side must not hold the shutdown
    await Promise.race([closed, new Promise((r) => setTimeout(r, 2000).unref())]);
    await this.admin?.close();
  }

  private listen(addr: BackendAddress, kind: PortKind): Promise<BackendAddress> {
    const server = createServer({ noDelay: true }, (socket) => this.accept(socket, kind));
    this.servers.push(server);
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(addr.port, addr.host, () => {
        server.off('error', reject);
        server.on('error', (e) => this.log.error({ err: e.message }, 'listener error'));
        const a = server.address();
        resolve({ host: addr.host, port: typeof a === 'object' && a ? a.port : addr.port });
      });
    });
  }

  private accept(socket: Socket, kind: PortKind): void {
    this.accepted[kind]++;
    if (this.sessions.size + (this.pool?.clients.size ?? 0) >= this.cfg.maxClients) {
      // as PostgreSQL does past max_connections: say so, then close
      socket.on('error', () => undefined);
      socket.end(errorResponse({ severity: 'FATAL', code: SQLSTATE.tooManyConnections, message: `sorry, too many clients already (pgha-proxy --max-clients ${this.cfg.maxClients})` }));
      setTimeout(() => socket.destroy(), 1000).unref();
      return;
    }
    const s = new ClientSession(this, socket, kind);
    this.sessions.add(s);
  }

  // ---------------------------------------------------------------- ProxyContext

  reserve(name: string): boolean {
    const cap = this.capacity(name);
    const pending = this.pending.get(name) ?? 0;
    if (this.sessionsOn(name) + pending >= cap) return false;
    this.pending.set(name, pending + 1);
    return true;
  }

  release(name: string): void {
    const pending = this.pending.get(name) ?? 0;
    if (pending > 0) this.pending.set(name, pending - 1);
  }

  /** client sessions a backend can take: what its server leaves to ordinary clients, minus headroom */
  capacity(name: string): number {
    const slots = this.monitor.probeOf(name)?.clientSlots;
    return slots === undefined ? Infinity : Math.max(1, slots - SERVER_HEADROOM);
  }

  attach(s: ClientSession): void {
    this.release(s.backendName!);
    let set = this.byBackend.get(s.backendName!);
    if (!set) this.byBackend.set(s.backendName!, (set = new Set()));
    set.add(s);
  }

  detach(s: ClientSession): void {
    this.sessions.delete(s);
    if (s.backendName) this.byBackend.get(s.backendName)?.delete(s);
  }

  sessionsOn(name: string): number {
    return this.byBackend.get(name)?.size ?? 0;
  }

  cancelFor(pid: number, key: Buffer): Promise<void> {
    return this.cancelForwarder.forward(pid, key);
  }

  pickReader(): BackendState | null {
    return this.readers.pick();
  }

  // ---------------------------------------------------------------- following the primary

  private onPrimaryChange(c: PrimaryChange): void {
    if (c.to) this.failedAttempt = null;
    if (c.from && c.to) this.metrics.failovers.inc({ result: 'followed' });
    if (c.from) this.endSessions(c.from.name, 'rw', c.to ? `the primary moved from ${c.from.name} to ${c.to.name}` : `the primary ${c.from.name} is unavailable (${c.reason})`);
  }

  /** sessions on a backend that is down or fenced end now, on both ports */
  private endSessionsOnLostBackends(): void {
    for (const b of this.monitor.backends) {
      if ((b.role === 'down' || b.role === 'fenced') && this.sessionsOn(b.name) > 0) this.endSessions(b.name, null, `${b.name} is ${b.role}${b.reason ? ` (${b.reason})` : ''}`);
    }
  }

  private endSessions(name: string, kind: PortKind | null, why: string): void {
    const set = this.byBackend.get(name);
    if (!set || set.size === 0) return;
    let n = 0;
    for (const s of [...set]) {
      if (kind && s.kind !== kind) continue;
      n++;
      s.terminate(
        { severity: 'FATAL', code: SQLSTATE.adminShutdown, message: `terminating connection because of failover: ${why}`, hint: 'Reconnect: new connections go to the current primary.' },
        `failover: ${why}`,
      );
    }
    if (n > 0) this.log.warn({ backend: name, sessions: n, why }, 'ended sessions');
  }

  private async onDown(s: BackendState): Promise<void> {
    if (!this.cfg.autoFailover || this.failover.running || !this.isDecider()) return;
    // only the primary's loss triggers a failover ('down' is emitted before the election drops it)
    if (this.monitor.primary?.name !== s.name) return;
    await this.runFailover(s);
  }

  private async runFailover(s: BackendState): Promise<void> {
    this.failedAttempt = null;
    const report = await this.failover.run(s);
    this.metrics.failovers.inc({ result: report.error ? 'failed' : 'promoted' });
    if (report.error && !report.promotedAt) this.failedAttempt = { from: s.name, standbys: this.healthyStandbys() };
  }

  private healthyStandbys(): string {
    return this.monitor.backends.filter((b) => b.role === 'standby' && b.failures === 0).map((b) => b.name).sort().join(',');
  }

  /**
   * An automatic failover that found no standby it could promote is tried again when the standbys
   * that answer change (one came back), as long as the old primary is still gone and nobody else
   * promoted a node.
   */
  private retryFailover(): void {
    const f = this.failedAttempt;
    if (!f || !this.cfg.autoFailover || this.failover.running || this.monitor.primary || !this.isDecider()) return;
    const old = this.monitor.state(f.from);
    if (!old || (old.role !== 'down' && old.role !== 'fenced')) return;
    if (this.healthyStandbys() === f.standbys) return;
    this.log.warn({ from: f.from, standbys: this.healthyStandbys() }, 'standbys changed since the failed failover: trying again');
    void this.runFailover(old);
  }

  // ---------------------------------------------------------------- several proxies: etcd

  /** without etcd this proxy decides alone; with it, only while it is the leader */
  isDecider(): boolean {
    return this.cfg.etcd === null || ((this.dcs?.isLeader ?? false) && !this.dcs!.safeMode);
  }

  private startDcs(): void {
    const e = this.cfg.etcd!;
    const a = this.addresses.admin;
    const admin = a ? `http://${a.host === '0.0.0.0' || a.host === '::' ? hostname() : a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}` : null;
    const log = this.log.child({ part: 'etcd' });
    const dcs = new Coordinator({ endpoints: e.endpoints, cluster: e.cluster, ttlSeconds: e.ttlSeconds, admin, log: (level, msg, fields) => log[level](fields ?? {}, msg) });
    this.dcs = dcs;
    dcs.on('primary', (rec: { backend: string } | null) => this.monitor.setRecorded(rec?.backend ?? null));
    dcs.on('leader', (on: boolean) => {
      if (on) void this.onLeadership().catch((err) => log.error({ err: (err as Error).message }, 'taking over as leader failed'));
    });
    // a leader back from safe mode: what went down meanwhile is handled now
    dcs.on('safe-mode', (safe: boolean) => {
      if (!safe && dcs.isLeader) void this.onLeadership().catch((err) => log.error({ err: (err as Error).message }, 'leaving safe mode failed'));
    });
    // etcd not answering yet must not hold the proxy's start: it keeps trying in the background,
    // and routes nowhere until it has read the recorded primary
    void dcs.start().catch((err) => log.error({ err: (err as Error).message }, 'etcd: could not start'));
    this.rollTimer = setInterval(() => void this.rollForwardCheck('cycle').catch((err) => log.error({ err: (err as Error).message }, 'roll-forward check failed')), Math.max(500, this.cfg.healthIntervalMs));
    this.rollTimer.unref?.();
  }

  /** the agent's node name of a backend: registered on etcd, else learnt from its agent, else null */
  private async memberName(backend: string): Promise<string | null> {
    const m = (await this.dcs?.memberFor(backend).catch(() => null))?.name;
    if (m) return m;
    const n = this.members.nameOf(backend);
    return n === backend.replace(/[^A-Za-z0-9]/g, '_') ? null : n;
  }

  /** nothing recorded yet: the leader records the primary its health checks found */
  private async recordFirstPrimary(s: BackendState): Promise<void> {
    const dcs = this.dcs;
    if (!dcs || !dcs.isLeader || !dcs.primaryKnown || dcs.primary || this.recordingFirst) return;
    this.recordingFirst = true;
    try {
      await dcs.bootstrap({ backend: s.name, member: await this.memberName(s.name), timeline: s.timeline });
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'etcd: could not record the first primary');
    } finally {
      this.recordingFirst = false;
    }
  }

  /** just elected: take over what the previous leader may have left (the recorded primary down) */
  private async onLeadership(): Promise<void> {
    const dcs = this.dcs!;
    try {
      const sync = await dcs.store.sync();
      if (sync && sync.primary === this.monitor.recorded) this.monitor.adoptSyncRecord({ method: sync.method, k: sync.k, members: sync.members, retiring: sync.retiring, synchronousStandbyNames: sync.synchronousStandbyNames, at: sync.at });
    } catch {
      // this proxy's own record will do
    }
    await this.monitor.checkNow();
    await this.rollForwardCheck('new leader');
  }

  /**
   * The leader, on taking over and every cycle: is the recorded primary a primary? A standby
   * recorded by a leader that died (or was refused) before promoting it is promoted now; a recorded
   * node that is down gets an ordinary failover (roll-forward.ts decides, failover.ts acts).
   */
  private async rollForwardCheck(when: string): Promise<void> {
    const dcs = this.dcs;
    if (!dcs || !dcs.primaryKnown || !this.isDecider() || this.failover.running || this.monitor.primary) return;
    const d = rollForward({ recorded: this.monitor.recorded, backends: this.monitor.backends, clusterSystemId: this.monitor.clusterSystemId, leaseHolder: dcs.primaryLease?.pg ?? null });
    if (d.action === 'failover') {
      // a failover that found no standby is tried again by retryFailover when the standbys change
      if (!this.cfg.autoFailover || this.failedAttempt?.from === d.from) return;
      this.log.warn({ primary: d.from, when }, 'the recorded primary is down: failing over');
      await this.runFailover(this.monitor.state(d.from)!);
    } else if (d.action === 'promote') {
      if (Date.now() < this.rollRetryAt) return;
      this.log.warn({ primary: d.target, fence: d.fence, leaseHolder: d.leaseHolder, when }, d.why);
      // the primary the recorded decision moved away from (its history entry), for the report
      const from = (await dcs.store.history().catch(() => [])).filter((h) => h.to.backend === d.target).at(-1)?.from?.backend ?? null;
      if (this.failover.running || !this.isDecider()) return;
      const report = await this.failover.complete(this.monitor.state(d.target)!, { fence: d.fence, leaseHolder: d.leaseHolder, from });
      this.metrics.failovers.inc({ result: report.error ? 'failed' : 'promoted' });
      this.rollRetryAt = report.error ? Date.now() + Math.max(1000, (this.cfg.etcd?.ttlSeconds ?? 2) * 500) : 0;
    }
  }

  private publishSync(): void {
    const p = this.monitor.primary;
    const r = this.monitor.syncRecord;
    if (!this.dcs?.isLeader || !p) return;
    void this.dcs.publishSync(r ? { primary: p.name, method: r.method, k: r.k, members: r.members, synchronousStandbyNames: r.synchronousStandbyNames, at: r.at } : null);
  }

  private async claim(kind: 'failover' | 'switchover', trigger: 'auto' | 'manual', from: BackendState, to: BackendState): Promise<void> {
    if (!this.dcs) throw new FailoverError('etcd is not connected yet: not deciding');
    try {
      await this.dcs.claim(kind, trigger, from.name, { backend: to.name, member: await this.memberName(to.name), timeline: to.timeline });
    } catch (e) {
      throw new FailoverError((e as Error).message);
    }
  }

  private async released(from: BackendState): Promise<void> {
    const e = this.cfg.etcd!;
    // the old agent releases at once when it can; cut off, its lease expires within the TTL; a fence
    // that stops a server in bounded time (≤ ~10 s) is waited for too
    const r = await this.dcs!.waitReleased({ pg: from.name, member: await this.memberName(from.name) }, e.ttlSeconds * 2000 + 15_000);
    if (!r.released) throw new FailoverError(`${from.name} still holds its primary lease on etcd after ${r.waitedMs} ms: not promoting beside it`);
    if (r.held) this.log.warn({ from: from.name, waitedMs: r.waitedMs }, 'the old primary no longer holds its primary lease');
  }

  private notLeader(): FailoverError {
    const l = this.dcs?.leader;
    return new FailoverError(l ? `this pgha-proxy is not the leader: ask the leader ${l.id}${l.admin ? ` at ${l.admin}` : ''}` : 'this pgha-proxy is not the leader, and no leader is known right now: try again in a few seconds', 409);
  }

  // ---------------------------------------------------------------- admin

  status(): ProxyStatus {
    const p = this.monitor.primary;
    let rw = 0;
    let ro = 0;
    for (const s of this.sessions) s.kind === 'rw' ? rw++ : ro++;
    return {
      primary: p?.name ?? null,
      timeline: this.monitor.timeline,
      systemId: this.monitor.clusterSystemId,
      autoFailover: this.cfg.autoFailover,
      failoverRunning: this.failover.running,
      health: { intervalMs: this.cfg.healthIntervalMs, timeoutMs: this.cfg.healthTimeoutMs, retries: this.cfg.healthRetries, retryDelayMs: this.cfg.healthRetryDelayMs },
      backends: this.monitor.backends.map((b) => ({
        name: b.name,
        role: b.role,
        reason: b.reason,
        timeline: b.timeline,
        lsn: b.lsn,
        receiveLsn: b.receiveLsn,
        replayLsn: b.replayLsn,
        systemId: b.systemId,
        failures: b.failures,
        lastCheck: b.lastCheck,
        latencyMs: b.latencyMs,
        lastError: b.lastError,
        streaming: b.streaming,
        upstream: b.upstream,
        syncState: b.syncState,
        lagBytes: b.lagBytes,
        lagSeconds: b.lagSeconds,
        fenced: b.fenced,
        slot: b.slot,
        applicationName: b.applicationName,
        sessions: this.sessionsOn(b.name),
        capacity: Number.isFinite(this.capacity(b.name)) ? this.capacity(b.name) : null,
        agent: this.cfg.agents.get(b.name) ?? null,
        member: this.members.nameOf(b.name),
      })),
      synchronous: { mode: this.cfg.synchronousMode, record: this.monitor.syncRecord },
      memberSlots: this.cfg.memberSlots,
      clusterActions: this.cluster.recent,
      clients: { rw, ro, accepted: { ...this.accepted }, nativeRelay: this.nativeSessions.size },
      failovers: this.failover.history,
      relay: this.relay ? 'native' : 'node',
      relayLoops: this.relay ? this.relay.loops().map(([sessions, cpuSeconds]) => ({ sessions, cpuSeconds: Number.isFinite(cpuSeconds) ? cpuSeconds : null })) : null,
      listen: {
        rw: this.addresses.rw ? addressText(this.addresses.rw) : addressText(this.cfg.listen),
        ro: this.addresses.ro && addressText(this.addresses.ro),
        admin: this.addresses.admin && addressText(this.addresses.admin),
      },
      leader: this.dcs ? { id: this.dcs.id, isLeader: this.dcs.isLeader, leader: this.dcs.leader } : null,
      etcd: this.dcs ? this.dcs.status() : null,
      dcs: this.dcs ? this.dcs.dcsStatus() : null,
      pool: this.pool ? { mode: this.pool.settings.mode, clients: this.pool.clients.size, native: this.pool.native?.clientCount ?? null, pools: this.pool.stats() } : null,
    };
  }

  private async startAdmin(addr: BackendAddress): Promise<BackendAddress> {
    const { app, address } = await startAdmin(addr, {
      status: () => this.status(),
      sessions: () => [...this.sessions].map((s) => s.describe()),
      primaryName: () => this.monitor.primary?.name ?? null,
      registry: this.metrics.registry,
      adminToken: this.cfg.adminToken,
      switchover: (to) => this.switchover(to),
      failover: (to) => this.manualFailover(to),
      log: this.log.child({ part: 'admin' }),
    });
    this.admin = app;
    return address;
  }

  /** a planned switchover (pgha switchover) */
  async switchover(to: string | undefined): Promise<FailoverReport> {
    if (!this.isDecider()) throw this.notLeader();
    const report = await this.failover.switchover({ to });
    this.metrics.failovers.inc({ result: report.error ? 'switchover-failed' : 'switchover' });
    return report;
  }

  /** an operator's failover to a named standby (pgha failover --to): the primary is gone or must not be waited for */
  async manualFailover(to: string): Promise<FailoverReport> {
    if (!this.isDecider()) throw this.notLeader();
    const old = this.monitor.primary ?? [...this.monitor.backends].filter((b) => b.role === 'down' || b.role === 'fenced').sort((a, b) => (b.timeline ?? 0) - (a.timeline ?? 0))[0];
    if (!old) throw new FailoverError('no primary and no failed node to fail over from');
    const report = await this.failover.run(old, { to, trigger: 'manual' });
    this.metrics.failovers.inc({ result: report.error ? 'failed' : 'promoted' });
    return report;
  }
}
