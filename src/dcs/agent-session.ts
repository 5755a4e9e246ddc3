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
 *
 * **DCS failsafe** (`failsafe` given, `pgha agent --dcs-failsafe`; Patroni's failsafe_mode): once a
 * keep-alive is late, the primary's agent asks every other member's agent (`ask`) whether it sees
 * another primary. A member says "ok" only when it cannot reach etcd either, its own server does
 * not run as a primary, and the primary it last saw on etcd is the asker (or none) — and then it
 * promises not to be promoted for one TTL (`promotionBlocked`; the agent refuses node/promote). A
 * round in which every member said ok, sent at t, lets the primary keep taking writes until
 * t + TTL (each promise lasts at least that long), as an answered keep-alive does: it fences when
 * neither its lease nor its last full round covers the next `fenceMarginMs`. A primary cut off from
 * everything hears no member and fences as without failsafe; one cut off from etcd alone is told
 * "no" by members that still reach etcd and fences too (and the leader fails over as usual).
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
  /** DCS failsafe: keep a primary running while etcd is down as long as every member confirms */
  failsafe?: {
    /** the other members' agents: the configured peers (etcd's member list is added) */
    peers(): Array<{ name: string; url: string }>;
    /** ask one member's agent (POST dcs/failsafe), within timeoutMs */
    ask(url: string, req: FailsafeRequest, timeoutMs: number): Promise<FailsafeAnswer>;
  };
}

/** what a primary in failsafe asks every member */
export interface FailsafeRequest {
  member: string;
  pg: string;
}

/** a member's answer: ok (it sees no other primary and will not be promoted until `until`), or why not */
export interface FailsafeAnswer {
  ok: boolean;
  member: string;
  reason: string | null;
  /** Date.now() of the member until which it refuses a promotion */
  until: number | null;
}

export interface FailsafeStatus {
  enabled: boolean;
  /** the primary is kept running by its members' confirmations (its lease no longer covers it) */
  active: boolean;
  /** Date.now() until which the last full round covers writes (0: none) */
  until: number;
  lastRound: { at: string; ok: boolean; answers: Array<{ member: string; ok: boolean; reason: string | null }> } | null;
  rounds: number;
  /** this member promised a primary in failsafe not to be promoted, until (0: no promise) */
  promisedTo: string | null;
  promisedUntil: number;
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
  failsafe: FailsafeStatus;
}

/** how long a member asked by a primary in failsafe waits for etcd before it counts it as unreachable */
const FAILSAFE_PROBE_MS = 300;

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
  /** members as last read from etcd (the failsafe asks them too) */
  private knownMembers: MemberRecord[] = [];
  /** failsafe: the send time of the last round every member confirmed, + TTL */
  private failsafeUntil = 0;
  private failsafeRound: Promise<void> | null = null;
  private failsafeRounds = 0;
  private lastRound: FailsafeStatus['lastRound'] = null;
  private lastRoundAt = 0;
  private promise: { to: string; until: number } | null = null;

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
    if (this.o.failsafe) this.knownMembers = await this.store.members().catch(() => this.knownMembers);
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

  /** ms the lease (or, with failsafe, the last full round) still surely covers writes here */
  private coveredMs(): number {
    const lease = this.lease.valid ? this.lease.validUntil - Date.now() : 0;
    return Math.max(lease, this.failsafeUntil - Date.now(), 0);
  }

  /** cut off from etcd: fence before the lease can expire there */
  private checkDeadline(): void {
    if (this.stopped || this.fencing || this.deadlineCheck) return;
    if (!this.holdsPrimaryLease && !this.recordedPrimary) return;
    // etcd never answered since start: there is no lease to lose
    if (this.lease.lastRenewal === 0) return;
    // failsafe: a keep-alive is late — ask the members (every 500 ms while in doubt)
    if (this.o.failsafe && !this.failsafeRound && Date.now() - this.lastRoundAt >= 500) {
      const late = !this.lease.valid || this.lease.validUntil - Date.now() < this.lease.grantedTtl * 1000 - this.lease.renewEveryMs - 250 || !this.store.answeredWithin(this.lease.renewEveryMs + 500);
      if (late) {
        this.failsafeRound = this.runFailsafeRound()
          .catch((e) => this.o.log?.('error', 'DCS failsafe round failed', { err: (e as Error).message }))
          .finally(() => (this.failsafeRound = null));
      }
    }
    const left = this.coveredMs();
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

  /** one failsafe round: every member asked at once; all ok → writes covered until sent + TTL */
  private async runFailsafeRound(): Promise<void> {
    const fs = this.o.failsafe!;
    const sent = Date.now();
    this.lastRoundAt = sent;
    // a server that surely takes no writes needs no cover
    if ((await this.o.runningAsPrimary().catch(() => null)) === false) return;
    const peers = new Map<string, string>();
    for (const p of fs.peers()) if (p.name !== this.o.member.name) peers.set(p.name, p.url);
    for (const m of this.knownMembers) if (m.name !== this.o.member.name && m.agent && !peers.has(m.name)) peers.set(m.name, m.agent);
    const timeoutMs = Math.min(1000, Math.max(300, this.fenceMarginMs / 2));
    const req: FailsafeRequest = { member: this.me.member, pg: this.me.pg };
    const answers = await Promise.all(
      [...peers].map(async ([name, url]) => {
        try {
          const a = await fs.ask(url, req, timeoutMs);
          return { member: name, ok: a.ok === true && a.member === name, reason: a.ok ? null : (a.reason ?? 'refused') };
        } catch (e) {
          return { member: name, ok: false, reason: `no answer: ${(e as Error).message}` };
        }
      }),
    );
    const ok = answers.every((a) => a.ok);
    this.failsafeRounds++;
    this.lastRound = { at: new Date(sent).toISOString(), ok, answers };
    if (ok) {
      const was = this.failsafeUntil > Date.now();
      this.failsafeUntil = Math.max(this.failsafeUntil, sent + this.o.ttlSeconds * 1000);
      if (!was) this.o.log?.('warn', 'DCS failsafe: etcd does not answer; every member confirms no other primary: keeping the primary running', { members: answers.map((a) => a.member) });
    } else {
      this.o.log?.('warn', 'DCS failsafe: not every member confirms', { answers: answers.filter((a) => !a.ok) });
    }
  }

  /**
   * A primary in failsafe asks: this member says ok only when it cannot reach etcd either, its own
   * server is not a primary, and etcd's primary as it last saw it is the asker (or none); an ok is a
   * promise not to be promoted for one TTL.
   */
  async answerFailsafe(req: FailsafeRequest): Promise<FailsafeAnswer> {
    const no = (reason: string): FailsafeAnswer => ({ ok: false, member: this.o.member.name, reason, until: null });
    if (req.member === this.o.member.name) return no('asked by itself');
    // does etcd answer this member now? (a short look: a slow answer counts as none, which is safe —
    // the promise below is what keeps a second primary away)
    const probe = await Promise.race([
      this.store.read<PrimaryRecord>(this.store.keys.primary).then(
        (v) => ({ answered: true as const, value: v.value }),
        () => null,
      ),
      new Promise<null>((r) => setTimeout(() => r(null), FAILSAFE_PROBE_MS).unref()),
    ]);
    if (probe) return no(`etcd answers this member${probe.value ? ` (it records ${probe.value.backend} as the primary)` : ''}: the primary must renew its lease there`);
    if (this.primary && !recordNames(this.primary, { pg: req.pg, member: req.member })) return no(`etcd records ${this.primary.backend} as the primary, not ${req.member}`);
    const running = await this.o.runningAsPrimary().catch(() => null);
    if (running !== false) return no(running === true ? 'this member runs as a primary' : "this member's server state is not known");
    const until = Date.now() + this.o.ttlSeconds * 1000;
    this.promise = { to: req.member, until: Math.max(until, this.promise?.until ?? 0) };
    return { ok: true, member: this.o.member.name, reason: null, until };
  }

  /** while a failsafe promise holds: why this member must not be promoted (null: it may) */
  promotionBlocked(): string | null {
    const p = this.promise;
    if (!p || Date.now() >= p.until) return null;
    return `this member confirmed to ${p.to} (a primary in DCS failsafe mode, etcd unreachable) that it sees no other primary: no promotion for ${p.until - Date.now()} ms more`;
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
      failsafe: {
        enabled: Boolean(this.o.failsafe),
        active: this.failsafeUntil > Date.now() && !(this.lease.valid && this.lease.validUntil >= this.failsafeUntil),
        until: this.failsafeUntil,
        lastRound: this.lastRound,
        rounds: this.failsafeRounds,
        promisedTo: this.promise && this.promise.until > Date.now() ? this.promise.to : null,
        promisedUntil: this.promise && this.promise.until > Date.now() ? this.promise.until : 0,
      },
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
