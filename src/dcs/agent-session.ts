/**
 * A node agent's part in a cluster shared through etcd:
 *
 *  - it registers its node under `members/<name>` (PostgreSQL address, agent URL), bound to its
 *    lease, so a dead agent's entry expires;
 *  - while etcd's `primary` names its node and its server runs as a primary, it holds
 *    `primary-lease` (bound to the same lease, renewed every TTL/4);
 *  - when etcd's primary moves to another node, it fences its own server if that still runs as a
 *    primary, and only then releases the primary lease (the decider waits for that before it
 *    promotes);
 *  - **self-fencing**: when its lease can no longer be renewed (cut off from etcd) and the lease
 *    would be surely valid for less than `fenceMarginMs` more, it fences its own server — the same
 *    as POST node/fence (standby.signal + marker, then a stop bounded in time) — so that by the time
 *    etcd lets the lease expire and the decider promotes another node, this one takes no writes.
 *
 * The trade-off: a primary that cannot reach etcd for about TTL − margin stops, even when nothing
 * else is wrong (etcd itself down, a long network blip). A larger TTL tolerates longer blips and
 * makes a failover after a partition wait longer.
 */
import { EventEmitter } from 'node:events';
import { recordNames, type MemberRecord, type PrimaryLeaseRecord, type PrimaryRecord } from './keys.js';
import { LeaseKeeper } from './lease.js';
import { ClusterStore, type Unwatch } from './store.js';
import type { DcsLog } from './coordinator.js';

export interface AgentSessionOptions {
  endpoints: string[];
  cluster: string;
  ttlSeconds: number;
  member: Omit<MemberRecord, 'since'>;
  /**
   * does this node's server run as a primary right now — asked locally, so it answers while the
   * network is cut: true, false (stopped or in recovery), null (running, state not known)
   */
  runningAsPrimary(): Promise<boolean | null>;
  /** fence this node (standby.signal + marker, stop in bounded time) */
  fence(reason: string): Promise<unknown>;
  log?: DcsLog;
  /** start fencing this long before the lease may expire on etcd (default min(2 s, TTL/2)) */
  fenceMarginMs?: number;
}

export interface AgentSessionStatus {
  cluster: string;
  endpoints: string[];
  healthy: boolean;
  lease: string | null;
  leaseValidMs: number;
  registered: boolean;
  holdsPrimaryLease: boolean;
  primary: PrimaryRecord | null;
  selfFences: number;
  lastSelfFence: { at: string; reason: string } | null;
  lastError: string | null;
}

export class AgentSession extends EventEmitter {
  readonly store: ClusterStore;
  readonly lease: LeaseKeeper;
  /** etcd's primary as last seen */
  primary: PrimaryRecord | null = null;
  holdsPrimaryLease = false;
  registered = false;
  selfFences = 0;
  lastSelfFence: { at: string; reason: string } | null = null;
  private unwatch: Unwatch | null = null;
  private timer: NodeJS.Timeout | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  private reconciling = false;
  private again = false;
  private fencing: Promise<void> | null = null;
  private deadlineCheck: Promise<void> | null = null;
  private lastDeadlineCheck = 0;
  private stopped = false;
  readonly fenceMarginMs: number;

  constructor(readonly o: AgentSessionOptions) {
    super();
    this.store = new ClusterStore({ endpoints: o.endpoints, cluster: o.cluster, callTimeoutMs: Math.min(2000, o.ttlSeconds * 400) });
    this.lease = new LeaseKeeper(this.store, { ttlSeconds: o.ttlSeconds, log: o.log });
    this.fenceMarginMs = o.fenceMarginMs ?? Math.min(2000, Math.floor((o.ttlSeconds * 1000) / 2));
  }

  private get me(): { pg: string; member: string } {
    return { pg: this.o.member.pg, member: this.o.member.name };
  }

  /** etcd's primary is this node */
  get recordedPrimary(): boolean {
    return recordNames(this.primary, this.me);
  }

  start(): void {
    this.lease.on('granted', () => {
      this.registered = false;
      this.holdsPrimaryLease = false;
      void this.reconcile();
    });
    this.lease.on('lost', () => {
      this.registered = false;
      this.holdsPrimaryLease = false;
    });
    this.lease.start();
    const watch = async () => {
      while (!this.stopped && !this.unwatch) {
        try {
          this.unwatch = await this.store.watch<PrimaryRecord>(this.store.keys.primary, (v) => {
            this.primary = v.value;
            void this.reconcile();
          });
        } catch (e) {
          this.store.noteError(e);
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    };
    void watch();
    this.timer = setInterval(() => void this.reconcile(), this.lease.renewEveryMs);
    this.timer.unref?.();
    this.watchdog = setInterval(() => this.checkDeadline(), 50);
    this.watchdog.unref?.();
  }

  /** bring etcd in line with this node: registered, primary lease held or released */
  async reconcile(): Promise<void> {
    if (this.stopped) return;
    if (this.reconciling) {
      this.again = true;
      return;
    }
    this.reconciling = true;
    try {
      do {
        this.again = false;
        // one round never holds the next ones up for long (a call etcd never answers)
        await Promise.race([this.reconcileOnce(), new Promise<void>((_, reject) => setTimeout(() => reject(new Error('reconcile took over 5 s')), 5000).unref())]);
      } while (this.again && !this.stopped);
    } catch (e) {
      this.store.noteError(e);
    } finally {
      this.reconciling = false;
    }
  }

  private async reconcileOnce(): Promise<void> {
    const id = this.lease.id;
    if (id === null || !this.lease.valid || this.fencing) return;
    const keys = this.store.keys;
    const client = this.store.client;
    if (!this.registered) {
      const rec: MemberRecord = { ...this.o.member, since: new Date().toISOString() };
      await this.store.call(() => client.put(keys.member(this.o.member.name)).value(JSON.stringify(rec)).lease(id).exec());
      this.registered = true;
      this.o.log?.('info', 'registered on etcd', { member: this.o.member.name, lease: id });
    }
    const running = await this.o.runningAsPrimary();
    if (this.recordedPrimary) {
      if (running === true && !this.holdsPrimaryLease) {
        const rec: PrimaryLeaseRecord = { member: this.me.member, pg: this.me.pg, since: new Date().toISOString() };
        const res = await this.store.call(() =>
          client.if(keys.primaryLease, 'Create', '==', 0).then(client.put(keys.primaryLease).value(JSON.stringify(rec)).lease(id)).else(client.get(keys.primaryLease)).commit(),
        );
        if (res.succeeded && this.lease.id === id) {
          this.holdsPrimaryLease = true;
          this.o.log?.('warn', 'holding the primary lease', { member: this.me.member, lease: id });
        }
        // else: held by a lease of ours from before (an agent restart) or someone else: it expires
      }
      return;
    }
    // nothing recorded yet (the leader records the first primary): nothing to give up
    if (this.primary === null) return;
    // etcd names another node: a server of ours that may still run as a primary is fenced first,
    // and the primary lease is released only once it surely takes no writes
    if (running !== false) {
      if (running === null && !this.holdsPrimaryLease) return;
      await this.selfFence(`etcd records ${this.primary.backend} as the primary`);
      if ((await this.o.runningAsPrimary()) !== false) return;
    }
    if (this.holdsPrimaryLease) {
      const res = await this.store.call(() => client.if(keys.primaryLease, 'Lease', '==', id).then(client.delete().key(keys.primaryLease)).commit());
      this.holdsPrimaryLease = false;
      this.o.log?.('warn', 'released the primary lease', { member: this.me.member, deleted: res.succeeded, primary: this.primary.backend });
    }
  }

  /** cut off from etcd: fence before the lease can expire there */
  private checkDeadline(): void {
    if (this.stopped || this.fencing || this.deadlineCheck) return;
    if (!this.holdsPrimaryLease && !this.recordedPrimary) return;
    // etcd never answered since start: there is no lease to lose
    if (this.lease.lastRenewal === 0) return;
    const left = this.lease.valid ? this.lease.validUntil - Date.now() : 0;
    if (left > this.fenceMarginMs) return;
    // at most one look at the server every 500 ms while the lease is in doubt
    if (Date.now() - this.lastDeadlineCheck < 500) return;
    this.lastDeadlineCheck = Date.now();
    this.deadlineCheck = (async () => {
      try {
        const running = await this.o.runningAsPrimary().catch(() => null);
        // nothing takes writes here: the lease (if any) expires on etcd by itself
        if (running === false) return;
        await this.selfFence(`etcd lease not renewed in time (${left} ms left of its ${this.lease.grantedTtl} s TTL): fencing before it can expire`);
      } finally {
        this.deadlineCheck = null;
      }
    })();
  }

  private selfFence(reason: string): Promise<void> {
    if (this.fencing) return this.fencing;
    const t0 = Date.now();
    this.o.log?.('error', 'self-fencing', { reason });
    this.fencing = (async () => {
      try {
        await this.o.fence(reason);
        this.selfFences++;
        this.lastSelfFence = { at: new Date().toISOString(), reason };
        this.o.log?.('warn', 'self-fenced', { reason, ms: Date.now() - t0 });
        this.emit('fenced', reason);
      } catch (e) {
        this.o.log?.('error', 'self-fence failed', { err: (e as Error).message });
      } finally {
        this.fencing = null;
      }
    })();
    return this.fencing;
  }

  status(): AgentSessionStatus {
    return {
      cluster: this.store.cluster,
      endpoints: this.store.endpoints,
      healthy: this.lease.valid,
      lease: this.lease.id,
      leaseValidMs: this.lease.remainingMs(),
      registered: this.registered,
      holdsPrimaryLease: this.holdsPrimaryLease,
      primary: this.primary,
      selfFences: this.selfFences,
      lastSelfFence: this.lastSelfFence,
      lastError: this.store.health.lastError,
    };
  }

  /** the member registered under that name (its agent URL), null when none */
  async memberOf(name: string): Promise<MemberRecord | null> {
    return (await this.store.read<MemberRecord>(this.store.keys.member(name))).value;
  }

  /**
   * Stop: the member entry goes now; a primary lease we hold is left to expire (the decider must
   * still wait out the TTL: nothing fences this node once the agent is gone).
   */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.watchdog) clearInterval(this.watchdog);
    await this.unwatch?.();
    await this.fencing;
    const holds = this.holdsPrimaryLease;
    if (this.registered) await this.store.call(() => this.store.client.delete().key(this.store.keys.member(this.o.member.name)).exec()).catch(() => undefined);
    await this.lease.stop(!holds);
    await this.store.close();
  }
}
