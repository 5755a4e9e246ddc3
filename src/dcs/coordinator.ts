/**
 * A pgha-proxy's part in a cluster shared through etcd: it campaigns for leadership (election.ts),
 * follows the recorded primary (watched), knows the registered members, and — as leader only —
 * writes the primary: the first one (create-only) and every change as a compare-and-swap guarded by
 * its own leader key, with the history entry in the same transaction. Before a promotion it waits
 * until the old primary's agent no longer holds the primary lease (it released it, or the lease
 * expired: the node fenced itself or can take no writes that count).
 */
import { EventEmitter } from 'node:events';
import { LeaderElection } from './election.js';
import { recordNames, type HistoryRecord, type LeaderRecord, type MemberRecord, type PrimaryLeaseRecord, type PrimaryRecord, type SlotsRecordView, type SyncRecordView } from './keys.js';
import { LeaseKeeper } from './lease.js';
import { ClusterStore, processId, type Unwatch } from './store.js';

export type DcsLog = (level: 'info' | 'warn' | 'error', msg: string, fields?: object) => void;

export interface CoordinatorOptions {
  endpoints: string[];
  cluster: string;
  ttlSeconds: number;
  /** default: host name and pid */
  id?: string;
  /** this proxy's admin URL (for the leader record) */
  admin: string | null;
  log?: DcsLog;
}

/** a decision refused by etcd (another decider acted, or this one is no longer the leader) */
export class DcsRefused extends Error {}

export interface CoordinatorStatus {
  endpoints: string[];
  cluster: string;
  ttlSeconds: number;
  /** etcd answered within the TTL */
  healthy: boolean;
  lastError: string | null;
  primary: PrimaryRecord | null;
  primaryLease: PrimaryLeaseRecord | null;
  members: MemberRecord[];
}

/**
 * What a proxy tells about etcd in /status (`dcs`). `safeMode`: etcd does not answer this proxy (no
 * call answered within two lease renewals, TTL/2) or its own lease is not surely valid — it
 * keeps routing to the last primary it read there and decides nothing (no failover, no switchover):
 * only the leader decides, and a leader steps down when its lease is in doubt.
 */
export interface DcsStatus {
  reachable: boolean;
  cluster: string;
  /** the highest etcd revision seen ('0': none yet) */
  revision: string;
  safeMode: boolean;
  /** the id of the deciding proxy as etcd names it (this one included), null when none is known */
  leader: string | null;
  /** this proxy's id, and whether it is the leader */
  id: string;
  isLeader: boolean;
  /** the members registered on etcd (agents), as last read */
  members: MemberRecord[];
  /** the member slots on the primary the leader manages (etcd's `slots`), as last read */
  slots: SlotsRecordView | null;
  /** the primary's synchronous standbys (etcd's `sync`: synchronous_standby_names, who was sync), as last read */
  sync: SyncRecordView | null;
  lastError: string | null;
}

export class Coordinator extends EventEmitter {
  readonly store: ClusterStore;
  readonly lease: LeaseKeeper;
  readonly election: LeaderElection;
  readonly id: string;
  /** the recorded primary (null: none recorded yet) */
  primary: PrimaryRecord | null = null;
  primaryRaw: string | null = null;
  /** the primary key was read at least once */
  primaryKnown = false;
  members: MemberRecord[] = [];
  primaryLease: PrimaryLeaseRecord | null = null;
  /** etcd's `slots` and `sync`, watched */
  slots: SlotsRecordView | null = null;
  sync: SyncRecordView | null = null;
  private lastSlots = '';
  private unwatch: Unwatch[] = [];
  private lastSync = '';
  private safeModeTimer: NodeJS.Timeout | null = null;
  private wasSafe = true;

  constructor(readonly o: CoordinatorOptions) {
    super();
    this.id = o.id ?? processId();
    this.store = new ClusterStore({ endpoints: o.endpoints, cluster: o.cluster, callTimeoutMs: Math.min(2000, o.ttlSeconds * 400) });
    // the leader steps down a quarter of the TTL (at most 1 s) before its lease could expire on
    // etcd: the watchdog's 50 ms and a busy event loop must not let it decide past that point
    this.lease = new LeaseKeeper(this.store, { ttlSeconds: o.ttlSeconds, log: o.log, safetyMs: Math.min(1000, (o.ttlSeconds * 1000) / 4) });
    this.election = new LeaderElection(this.store, this.lease, { id: this.id, admin: o.admin, log: o.log });
    this.election.on('leader', (on: boolean) => this.emit('leader', on));
  }

  get isLeader(): boolean {
    return this.election.isLeader;
  }

  get leader(): LeaderRecord | null {
    return this.election.leader;
  }

  /** start campaigning and watching; keeps trying in the background when etcd does not answer yet */
  async start(): Promise<void> {
    await this.election.start();
    await this.watchAll();
    // 'safe-mode' (true/false) on every change: a leader back from safe mode looks again at what it
    // may have missed meanwhile (a primary that went down while it could not decide)
    this.safeModeTimer = setInterval(() => {
      const safe = this.safeMode;
      if (safe !== this.wasSafe) {
        this.wasSafe = safe;
        this.o.log?.(safe ? 'warn' : 'info', safe ? 'safe mode: etcd does not answer — routing to the last recorded primary, deciding nothing' : 'etcd answers: out of safe mode');
        this.emit('safe-mode', safe);
      }
    }, 250);
    this.safeModeTimer.unref?.();
  }

  private async watchAll(): Promise<void> {
    const keys = this.store.keys;
    const tryWatch = async (): Promise<boolean> => {
      try {
        this.unwatch.push(
          await this.store.watch<PrimaryRecord>(keys.primary, (v) => {
            const changed = v.raw !== this.primaryRaw || !this.primaryKnown;
            this.primary = v.value;
            this.primaryRaw = v.raw;
            this.primaryKnown = true;
            if (changed) this.emit('primary', v.value);
          }),
        );
        this.unwatch.push(await this.store.watch(keys.members, () => void this.refreshMembers(), { prefix: true }));
        this.unwatch.push(
          await this.store.watch<PrimaryLeaseRecord>(keys.primaryLease, (v) => {
            this.primaryLease = v.value;
          }),
        );
        this.unwatch.push(await this.store.watch<SlotsRecordView>(keys.slots, (v) => void (this.slots = v.value)));
        this.unwatch.push(await this.store.watch<SyncRecordView>(keys.sync, (v) => void (this.sync = v.value)));
        return true;
      } catch (e) {
        this.store.noteError(e);
        for (const u of this.unwatch.splice(0)) await u();
        return false;
      }
    };
    if (await tryWatch()) return;
    // etcd not reachable at start: keep trying
    const retry = async () => {
      while (!(await tryWatch())) await new Promise((r) => setTimeout(r, 500));
    };
    void retry();
  }

  private async refreshMembers(): Promise<void> {
    try {
      this.members = await this.store.members();
    } catch {
      // next change
    }
  }

  /** the member registered with this PostgreSQL address */
  memberByPg(addr: string): MemberRecord | null {
    return this.members.find((m) => m.pg === addr) ?? null;
  }

  /** the same, read from etcd when not known yet (a record written right after start names it too) */
  async memberFor(addr: string): Promise<MemberRecord | null> {
    const known = this.memberByPg(addr);
    if (known) return known;
    await this.refreshMembers();
    return this.memberByPg(addr);
  }

  private guardOrThrow(): { key: string; raw: string } {
    const g = this.election.guard();
    if (!g) throw new DcsRefused('this pgha-proxy is not the leader');
    return g;
  }

  /** the leader records the first primary (nothing recorded yet); false when one was recorded meanwhile */
  async bootstrap(to: Pick<PrimaryRecord, 'backend' | 'member' | 'timeline'>): Promise<boolean> {
    const next: PrimaryRecord = { ...to, since: new Date().toISOString(), by: this.id };
    const r = await this.store.swapPrimary(null, next, { kind: 'bootstrap', trigger: null, from: null }, this.guardOrThrow());
    if (r.ok) this.o.log?.('warn', 'recorded the primary on etcd', { primary: to.backend, member: to.member });
    return r.ok;
  }

  /**
   * The decision, before any promotion: etcd's primary becomes `to` if it still is `from` (or
   * nothing, or already `to` — a retry), guarded by this proxy's leadership. Throws DcsRefused.
   */
  async claim(kind: HistoryRecord['kind'], trigger: HistoryRecord['trigger'], from: string, to: Pick<PrimaryRecord, 'backend' | 'member' | 'timeline'>): Promise<PrimaryRecord> {
    const guard = this.guardOrThrow();
    const cur = await this.store.primary();
    if (cur.value?.backend === to.backend) return cur.value;
    if (cur.value && cur.value.backend !== from) throw new DcsRefused(`etcd records ${cur.value.backend} as the primary, not ${from}: not promoting ${to.backend}`);
    const next: PrimaryRecord = { ...to, since: new Date().toISOString(), by: this.id };
    const r = await this.store.swapPrimary(cur.raw, next, { kind, trigger, from: cur.value }, guard);
    if (!r.ok) throw new DcsRefused(`etcd refused the change of primary to ${to.backend}: ${r.reason}`);
    // fault-injection point (tests only, read nowhere else): the decider dies right after recording
    // the decision, before promoting anything — what the next leader must roll forward
    if (process.env.PGHA_TEST_CRASH_AFTER_RECORD === '1') process.exit(70);
    this.o.log?.('warn', 'etcd: primary changed', { from, to: to.backend, history: r.history, kind });
    return next;
  }

  /**
   * Wait until the old primary's agent holds the primary lease no more (released after it saw the
   * change, or expired: it could not renew, so it fenced itself). True when released in time.
   */
  async waitReleased(old: { pg: string; member: string | null }, timeoutMs: number): Promise<{ released: boolean; waitedMs: number; held: boolean }> {
    const t0 = Date.now();
    const now = await this.store.primaryLease();
    if (!now.value || !recordNames(now.value, old)) return { released: true, waitedMs: 0, held: false };
    this.o.log?.('warn', 'waiting for the old primary to give up its primary lease (released by its agent, or expired)', { member: now.value.member, pg: now.value.pg });
    const released = await this.store.waitFor<PrimaryLeaseRecord>(this.store.keys.primaryLease, (v) => !v || !recordNames(v, old), timeoutMs);
    return { released, waitedMs: Date.now() - t0, held: true };
  }

  /** the leader publishes the synchronous record (written only when it changed) */
  async publishSync(rec: SyncRecordView | null): Promise<void> {
    if (!this.isLeader) return;
    const text = JSON.stringify(rec ? { ...rec, at: undefined } : null);
    if (text === this.lastSync) return;
    this.lastSync = text;
    await this.store.putSync(rec).catch((e) => {
      this.lastSync = '';
      this.store.noteError(e);
    });
  }

  /** the leader records the member slots on the primary (written only when they changed) */
  async publishSlots(rec: SlotsRecordView | null): Promise<void> {
    if (!this.isLeader) return;
    const text = JSON.stringify(rec);
    if (text === this.lastSlots) return;
    this.lastSlots = text;
    await this.store.putSlots(rec ? { ...rec, at: new Date().toISOString() } : null).catch((e) => {
      this.lastSlots = '';
      this.store.noteError(e);
    });
  }

  status(): CoordinatorStatus {
    return {
      endpoints: this.store.endpoints,
      cluster: this.store.cluster,
      ttlSeconds: this.o.ttlSeconds,
      healthy: this.store.healthy(this.o.ttlSeconds * 1000),
      lastError: this.store.health.lastError,
      primary: this.primary,
      primaryLease: this.primaryLease,
      members: this.members,
    };
  }

  /** etcd answered this proxy within two lease renewals (it renews every TTL/4) */
  get reachable(): boolean {
    return this.store.answeredWithin(Math.max(1000, this.lease.renewEveryMs * 2));
  }

  get safeMode(): boolean {
    return !this.reachable || !this.lease.valid;
  }

  dcsStatus(): DcsStatus {
    const reachable = this.reachable;
    return {
      reachable,
      cluster: this.store.cluster,
      revision: this.store.revision,
      safeMode: !reachable || !this.lease.valid,
      leader: this.election.leader?.id ?? null,
      id: this.id,
      isLeader: this.isLeader,
      members: this.members,
      slots: this.slots,
      sync: this.sync,
      lastError: this.store.health.lastError,
    };
  }

  async stop(): Promise<void> {
    if (this.safeModeTimer) clearInterval(this.safeModeTimer);
    await this.election.stop();
    for (const u of this.unwatch.splice(0)) await u();
    await this.lease.stop(true);
    await this.store.close();
  }
}
