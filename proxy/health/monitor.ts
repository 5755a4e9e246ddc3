/**
 * Health of every backend and the election of the one primary the proxy routes writes to.
 *
 * Each backend is checked every `interval` ms (a failed check is retried after `retryDelay`); after
 * `retries` consecutive failures it is `down`. Sessions report trouble (a reset, a 57P0x error, a
 * refused connect) through suspect(), which checks at once instead of waiting for the period.
 *
 * Split-brain guard: the cluster is the system identifier of the first primary seen; a node with
 * another one is fenced, and so is a node that answers as a primary on a timeline older than the
 * newest timeline seen on any node. Fenced stays fenced until the node shows up in recovery.
 *
 * With a recorded primary (`recorded`: several proxies sharing etcd) the monitor never elects a
 * primary from health checks: it routes to the node etcd names, once that node answers as a
 * primary, and to nothing else (setRecorded); while nothing is recorded it proposes the node it
 * would have elected ('unrecorded') for the leader to record.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { parseLsn } from '../../src/formats/lsn.js';
import type { SyncRecordView } from '../../src/dcs/keys.js';
import { addressText, type BackendAddress, type BackendTls } from '../backend/connect.js';
import { probe as defaultProbe, ServerAnsweredError, type HealthCredentials, type ProbeResult } from './probe.js';

export type Role = 'primary' | 'standby' | 'down' | 'fenced' | 'unknown';

export interface BackendState {
  name: string;
  address: BackendAddress;
  role: Role;
  /** why the node is fenced or down */
  reason: string | null;
  inRecovery: boolean | null;
  timeline: number | null;
  lsn: string | null;
  receiveLsn: string | null;
  replayLsn: string | null;
  systemId: string | null;
  failures: number;
  lastCheck: string | null;
  latencyMs: number | null;
  lastError: string | null;
  /** standby: its WAL receiver is streaming */
  streaming: boolean | null;
  /** standby: host:port its WAL receiver streams from */
  upstream: string | null;
  /** standby: as the primary's pg_stat_replication says (sync, quorum, potential, async), null when not connected */
  syncState: 'sync' | 'quorum' | 'potential' | 'async' | null;
  /** standby: WAL bytes the primary has written that it has not replayed */
  lagBytes: number | null;
  /** standby: seconds since its last replayed commit while it has WAL left to replay, else 0 */
  lagSeconds: number | null;
  /** fenced by the proxy, an operator or the split-brain guard */
  fenced: boolean;
  /** standby: the physical replication slot it streams through (primary_slot_name) */
  slot: string | null;
  /** standby: the application_name its WAL receiver uses (what synchronous_standby_names matches) */
  applicationName: string | null;
}

/**
 * who acknowledged commits on the primary at its last answer: what a zero-loss failover must respect
 * (the same record the leader publishes on etcd, without the primary's name)
 */
export type SyncRecord = Omit<SyncRecordView, 'primary'>;

export interface MonitorOptions {
  backends: BackendAddress[];
  intervalMs: number;
  timeoutMs: number;
  retries: number;
  retryDelayMs: number;
  credentials: HealthCredentials;
  tls: BackendTls;
  log: Logger;
  probe?: typeof defaultProbe;
  /** route only to the primary recorded on etcd (setRecorded) */
  recorded?: boolean;
}

interface Node {
  state: BackendState;
  fenced: boolean;
  inFlight: boolean;
  again: boolean;
  timer: NodeJS.Timeout | null;
  /** last successful probe */
  last: ProbeResult | null;
  /** the newest timeline this node was seen on (a standby whose receiver stopped keeps it) */
  knownTimeline: number;
  /** when a fenced node was last reported answering as a primary */
  fencedPrimarySeenAt: number;
  /** when the first of its current run of failed checks began (ms), null while it answers */
  failingSince?: number | null;
}

export interface PrimaryChange {
  from: BackendState | null;
  to: BackendState | null;
  reason: string;
}

/** a backend before its first check: nothing known */
export function unknownBackend(address: BackendAddress): BackendState {
  return {
    name: addressText(address),
    address,
    role: 'unknown',
    reason: null,
    inRecovery: null,
    timeline: null,
    lsn: null,
    receiveLsn: null,
    replayLsn: null,
    systemId: null,
    failures: 0,
    lastCheck: null,
    latencyMs: null,
    lastError: null,
    streaming: null,
    upstream: null,
    syncState: null,
    lagBytes: null,
    lagSeconds: null,
    fenced: false,
    slot: null,
    applicationName: null,
  };
}

/** an LSN as the health check reports it (null when the server has none, e.g. no WAL received yet) */
export const lsnOrNull = (t: string | null): bigint | null => (t ? parseLsn(t) : null);

export class HealthMonitor extends EventEmitter {
  private readonly nodes: Node[];
  private primaryName: string | null = null;
  private systemId: string | null = null;
  private newestTimeline = 0;
  private stopped = false;
  /** set while a failover runs: elect() does not pick a primary by itself meanwhile */
  private holdElection = false;
  /** the primary's synchronous standbys at its last answer (null: asynchronous) */
  private sync: SyncRecord | null = null;
  /** standbys that left the synchronous set, until the others have flushed past this LSN */
  private readonly retiring = new Map<string, bigint>();
  /** completes when every node has been checked once */
  readonly firstRound: Promise<void>;
  private firstRoundDone!: () => void;
  private unchecked: Set<string>;
  /** observer for health-check latency (metrics) */
  onCheck: (name: string, seconds: number, ok: boolean) => void = () => undefined;
  /** with `recorded`: the backend etcd names as the primary (null: none recorded yet) */
  private recordedPrimary: string | null = null;

  constructor(private readonly opts: MonitorOptions) {
    super();
    this.nodes = opts.backends.map((address) => ({
      state: unknownBackend(address),
      fenced: false,
      inFlight: false,
      again: false,
      timer: null,
      last: null,
      knownTimeline: 0,
      fencedPrimarySeenAt: 0,
    }));
    this.unchecked = new Set(this.nodes.map((n) => n.state.name));
    this.firstRound = new Promise((r) => (this.firstRoundDone = r));
  }

  start(): void {
    for (const n of this.nodes) void this.check(n);
  }

  stop(): void {
    this.stopped = true;
    for (const n of this.nodes) if (n.timer) clearTimeout(n.timer);
  }

  get primary(): BackendState | null {
    return this.nodes.find((n) => n.state.name === this.primaryName)?.state ?? null;
  }

  get backends(): BackendState[] {
    return this.nodes.map((n) => n.state);
  }

  get timeline(): number {
    return this.newestTimeline;
  }

  get clusterSystemId(): string | null {
    return this.systemId;
  }

  /** the primary's synchronous standbys as last seen (null when replication was asynchronous) */
  get syncRecord(): SyncRecord | null {
    return this.sync;
  }

  /** the last successful probe of a backend (replication rows, slots, settings) */
  probeOf(name: string): ProbeResult | null {
    return this.nodes.find((n) => n.state.name === name)?.last ?? null;
  }

  state(name: string): BackendState | undefined {
    return this.nodes.find((n) => n.state.name === name)?.state;
  }

  /** when the first of a backend's current run of failed checks started (epoch ms), null while it answers */
  failingSince(name: string): number | null {
    return this.nodes.find((n) => n.state.name === name)?.failingSince ?? null;
  }

  /** a session saw trouble on this backend: check it now */
  suspect(name: string, why: string): void {
    const n = this.nodes.find((x) => x.state.name === name);
    if (!n || this.stopped) return;
    this.opts.log.info({ backend: name, why }, 'session reported trouble: checking now');
    void this.check(n);
  }

  /** check these nodes (default: all) now and wait for the answers */
  async checkNow(names?: string[]): Promise<void> {
    await Promise.all(this.nodes.filter((n) => !names || names.includes(n.state.name)).map((n) => this.check(n, true)));
  }

  /** resolves with the primary, or null after timeoutMs */
  waitForPrimary(timeoutMs: number): Promise<BackendState | null> {
    const p = this.primary;
    if (p) return Promise.resolve(p);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.off('primary', onPrimary);
        resolve(null);
      }, timeoutMs);
      const onPrimary = (c: PrimaryChange) => {
        if (!c.to) return;
        clearTimeout(timer);
        this.off('primary', onPrimary);
        resolve(c.to);
      };
      this.on('primary', onPrimary);
    });
  }

  /** the primary recorded on etcd changed (only with the `recorded` option) */
  setRecorded(name: string | null): void {
    if (!this.opts.recorded || name === this.recordedPrimary) return;
    this.recordedPrimary = name;
    if (name && !this.nodes.some((n) => n.state.name === name)) this.opts.log.error({ recorded: name, backends: this.nodes.map((n) => n.state.name) }, 'etcd records a primary that is not one of this proxy\'s backends');
    this.elect();
  }

  get recorded(): string | null {
    return this.recordedPrimary;
  }

  /** a synchronous record kept elsewhere (etcd) for the current primary, adopted when this monitor has none */
  adoptSyncRecord(r: SyncRecord): void {
    if (!this.sync && r.members.length) this.sync = r;
  }

  /** failover control: while held, no primary is elected from health checks alone */
  hold(on: boolean): void {
    this.holdElection = on;
    if (!on) this.elect();
  }

  /** mark a node fenced (by a failover or an operator); sticky until it is seen in recovery */
  fence(name: string, reason: string): void {
    const n = this.nodes.find((x) => x.state.name === name);
    if (!n) return;
    n.fenced = true;
    n.state.role = 'fenced';
    n.state.reason = reason;
    if (this.primaryName === name) this.setPrimary(null, reason);
    this.emit('change');
  }

  private schedule(n: Node, ms: number): void {
    if (this.stopped) return;
    if (n.timer) clearTimeout(n.timer);
    n.timer = setTimeout(() => {
      n.timer = null;
      void this.check(n);
    }, ms);
  }

  private async check(n: Node, wait = false): Promise<void> {
    if (this.stopped) return;
    if (n.inFlight) {
      n.again = true;
      if (wait) await new Promise<void>((r) => this.once(`checked:${n.state.name}`, () => r()));
      return;
    }
    n.inFlight = true;
    if (n.timer) {
      clearTimeout(n.timer);
      n.timer = null;
    }
    const started = process.hrtime.bigint();
    let ok = false;
    let answered = false;
    try {
      const r = await (this.opts.probe ?? defaultProbe)(n.state.address, this.opts.credentials, this.opts.tls, this.opts.timeoutMs);
      ok = true;
      if (n.last && n.last.systemId !== r.systemId) n.knownTimeline = 0;
      n.last = r;
      // a standby's timeline is what its receiver gets; when the receiver is gone (its upstream died)
      // it stays on the newest timeline it was seen on, at least pg_control's
      n.knownTimeline = Math.max(r.inRecovery ? n.knownTimeline : 0, r.timeline ?? 0, r.inRecovery ? r.controlTimeline : 0);
      Object.assign(n.state, {
        inRecovery: r.inRecovery,
        timeline: n.knownTimeline || null,
        lsn: r.lsn,
        receiveLsn: r.receiveLsn,
        replayLsn: r.replayLsn,
        systemId: r.systemId,
        failures: 0,
        lastError: null,
      });
      n.failingSince = null;
      // a routine poll: debug
      this.opts.log.debug({ backend: n.state.name, ms: Number(process.hrtime.bigint() - started) / 1e6, inRecovery: r.inRecovery, lsn: r.lsn }, 'health check');
    } catch (e) {
      if (e instanceof ServerAnsweredError) {
        // alive but refusing this check (e.g. 53300 too many clients): not a step toward a failover
        if (n.state.lastError !== e.message) this.opts.log.warn({ backend: n.state.name, err: e.message }, 'health check refused by a server that answers: alive');
        ok = true;
        answered = true;
        n.state.lastError = e.message;
        n.state.failures = 0;
        n.failingSince = null;
      } else {
        if (n.state.failures === 0) n.failingSince = Number(started / 1_000_000n) - Number(process.hrtime.bigint() / 1_000_000n) + Date.now();
        n.state.failures++;
        n.state.lastError = (e as Error).message;
        if (n.state.failures === 1 || n.state.failures === this.opts.retries) {
          this.opts.log.warn({ backend: n.state.name, failures: n.state.failures, err: n.state.lastError }, 'health check failed');
        }
      }
    } finally {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      n.state.latencyMs = Math.round(seconds * 1e4) / 10;
      n.state.lastCheck = new Date().toISOString();
      n.inFlight = false;
      this.onCheck(n.state.name, seconds, ok);
    }
    // a server that answered with an error keeps the role its last full answer gave it
    if (!answered || n.last) {
      this.classify(n, ok);
      this.elect(ok && !answered ? n : null);
    }
    if (this.unchecked.delete(n.state.name) && this.unchecked.size === 0) this.firstRoundDone();
    this.emit(`checked:${n.state.name}`);
    if (n.again) {
      n.again = false;
      this.schedule(n, 0);
    } else {
      this.schedule(n, ok || n.state.failures >= this.opts.retries ? this.opts.intervalMs : this.opts.retryDelayMs);
    }
  }

  /** role of one node from its own answer (fencing by timeline is elect()'s) */
  private classify(n: Node, ok: boolean): void {
    const s = n.state;
    if (!ok) {
      if (s.failures >= this.opts.retries && s.role !== 'down' && !n.fenced) {
        s.role = 'down';
        s.reason = s.lastError;
        this.opts.log.error({ backend: s.name, err: s.lastError }, `backend down after ${s.failures} failed checks`);
        this.emit('down', s);
      }
      return;
    }
    if (s.inRecovery && n.fenced) {
      this.opts.log.info({ backend: s.name }, 'fenced node is back as a standby: no longer fenced');
      n.fenced = false;
    }
    if (n.fenced) {
      s.role = 'fenced';
      // a fenced node of this cluster answering as a primary (its agent could not be reached when it
      // was fenced, e.g. it was cut off the network): say so again, every few seconds, until it stops
      if (!s.inRecovery && s.systemId === this.systemId && Date.now() - n.fencedPrimarySeenAt > 3000) {
        n.fencedPrimarySeenAt = Date.now();
        this.opts.log.warn({ backend: s.name, timeline: s.timeline }, 'fenced node answers as a primary');
        this.emit('fenced', s);
      }
      return;
    }
    s.reason = null;
    s.fenced = false;
    s.role = s.inRecovery ? 'standby' : 'primary';
  }

  private elect(checked: Node | null = null): void {
    this.electPrimary();
    this.derive(checked);
    this.emit('change');
  }

  private electPrimary(): void {
    const live = this.nodes.filter((n) => n.last && n.state.failures === 0);
    if (!this.systemId) {
      const first = live.find((n) => !n.state.inRecovery) ?? live[0];
      if (first) this.systemId = first.state.systemId;
    }
    for (const n of live) {
      if (n.state.systemId !== this.systemId) {
        if (!n.fenced) this.opts.log.error({ backend: n.state.name, systemId: n.state.systemId, cluster: this.systemId }, 'backend belongs to another cluster: fenced');
        n.fenced = true;
        n.state.role = 'fenced';
        n.state.reason = `system identifier ${n.state.systemId} is not the cluster's ${this.systemId}`;
        continue;
      }
      if (n.state.timeline !== null && n.state.timeline > this.newestTimeline) this.newestTimeline = n.state.timeline;
    }
    const claims = live.filter((n) => n.state.role === 'primary');
    for (const n of claims) {
      if ((n.state.timeline ?? 0) < this.newestTimeline) {
        this.opts.log.error({ backend: n.state.name, timeline: n.state.timeline, newest: this.newestTimeline }, 'primary on an older timeline: fenced');
        n.fenced = true;
        n.state.role = 'fenced';
        n.state.reason = `primary on timeline ${n.state.timeline}, older than the newest timeline ${this.newestTimeline}`;
        this.emit('fenced', n.state);
      }
    }
    const candidates = claims.filter((n) => n.state.role === 'primary');
    const current = this.nodes.find((n) => n.state.name === this.primaryName);
    if (this.opts.recorded) {
      this.electRecorded(candidates, current ?? null);
      return;
    }
    // a node promoted elsewhere (another proxy's switchover or failover, an operator) answers on a
    // newer timeline than the current primary's, which has not answered since (its checks failing,
    // not yet called down): the newer timeline wins — were it fenced as a second primary, it would
    // stay fenced for good, the old primary coming back as a standby. The old one, answering again
    // as a primary on its older timeline, is fenced by the rule above.
    const promoted = current ? candidates.find((n) => n !== current && (n.state.timeline ?? 0) > (current.state.timeline ?? 0)) : undefined;
    if (current && current.state.role === 'primary' && !promoted) {
      for (const n of candidates) {
        if (n !== current) {
          n.fenced = true;
          n.state.role = 'fenced';
          n.state.reason = `a second primary on timeline ${n.state.timeline} beside ${current.state.name}`;
          this.opts.log.error({ backend: n.state.name }, n.state.reason);
        }
      }
      return;
    }
    if (current && promoted) this.setPrimary(null, `${promoted.state.name} answers as a primary on timeline ${promoted.state.timeline}, newer than ${current.state.name}'s ${current.state.timeline}`);
    else if (current) this.setPrimary(null, `${current.state.name} is ${current.state.role}${current.state.reason ? `: ${current.state.reason}` : ''}`);
    if (this.holdElection || candidates.length === 0) {
      return;
    }
    candidates.sort((a, b) => {
      const la = lsnOrNull(a.state.lsn) ?? 0n;
      const lb = lsnOrNull(b.state.lsn) ?? 0n;
      return (b.state.timeline ?? 0) - (a.state.timeline ?? 0) || (lb > la ? 1 : lb < la ? -1 : 0);
    });
    const [winner, ...rest] = candidates;
    for (const n of rest) {
      n.fenced = true;
      n.state.role = 'fenced';
      n.state.reason = `a second primary on timeline ${n.state.timeline} beside ${winner.state.name}`;
      this.opts.log.error({ backend: n.state.name }, n.state.reason);
    }
    this.setPrimary(winner.state, current ? 'new primary elected' : 'primary found');
  }

  /**
   * Routing by etcd's record: the recorded node once it answers as a primary, nothing else. Other
   * nodes answering as primaries are shown fenced (not sticky: the record may name them next) and
   * are never routed to; with nothing recorded the node the health checks would elect is proposed.
   */
  private electRecorded(candidates: Node[], current: Node | null): void {
    const recorded = this.recordedPrimary === null ? null : (this.nodes.find((n) => n.state.name === this.recordedPrimary) ?? null);
    for (const n of candidates) {
      if (n === recorded) continue;
      n.state.role = recorded ? 'fenced' : 'unknown';
      n.state.reason = recorded ? `answers as a primary, but etcd records ${recorded.state.name} as the primary` : 'answers as a primary; no primary recorded on etcd yet';
    }
    if (current && current !== recorded) this.setPrimary(null, recorded ? `etcd records ${recorded.state.name} as the primary` : 'no primary recorded on etcd');
    else if (current && current.state.role !== 'primary') this.setPrimary(null, `${current.state.name} is ${current.state.role}${current.state.reason ? `: ${current.state.reason}` : ''}`);
    if (recorded && recorded.state.role === 'primary' && this.primaryName !== recorded.state.name) this.setPrimary(recorded.state, 'recorded on etcd');
    if (this.recordedPrimary === null && candidates.length > 0 && !this.holdElection) {
      const [winner] = [...candidates].sort((a, b) => {
        const la = lsnOrNull(a.state.lsn) ?? 0n;
        const lb = lsnOrNull(b.state.lsn) ?? 0n;
        return (b.state.timeline ?? 0) - (a.state.timeline ?? 0) || (lb > la ? 1 : lb < la ? -1 : 0);
      });
      this.emit('unrecorded', winner.state);
    }
  }

  /** what the standbys look like from the primary: streaming, sync state, lag; who acknowledged commits */
  private derive(checked: Node | null): void {
    const primary = this.primary;
    const pr = primary ? this.nodes.find((n) => n.state.name === primary.name)?.last ?? null : null;
    const primaryLsn = lsnOrNull(primary?.lsn ?? null);
    for (const n of this.nodes) {
      const s = n.state;
      s.fenced = n.fenced;
      const r = n.last;
      if (!r || !r.inRecovery || s.failures > 0) {
        s.streaming = r && !r.inRecovery && s.failures === 0 ? null : s.role === 'down' || s.role === 'fenced' ? false : s.streaming;
        if (!r?.inRecovery) Object.assign(s, { upstream: null, syncState: null, lagBytes: null, lagSeconds: null, slot: null, applicationName: null });
        continue;
      }
      s.streaming = r.receiverStatus === 'streaming';
      s.upstream = r.receiverSender;
      s.slot = r.primarySlotName;
      s.applicationName = r.applicationName;
      s.lagSeconds = r.replayDelaySeconds;
      const replay = lsnOrNull(r.replayLsn);
      s.lagBytes = primaryLsn !== null && replay !== null ? Number(primaryLsn > replay ? primaryLsn - replay : 0n) : null;
      const rows = pr?.replication.filter((x) => x.app === r.applicationName) ?? [];
      const state = rows.length === 1 && s.streaming ? rows[0].syncState : null;
      s.syncState = state === 'sync' || state === 'quorum' || state === 'potential' || state === 'async' ? state : null;
    }
    // the record changes only on a fresh answer of the primary itself: once it stops answering, the
    // last record is what a failover must respect
    if (pr && primary && checked?.state.name === primary.name) {
      const syncRows = pr.replication.filter((x) => x.syncState === 'sync' || x.syncState === 'quorum');
      const apps = new Set(syncRows.map((x) => x.app));
      const current = this.nodes.filter((n) => n.state.name !== primary.name && n.state.applicationName !== null && apps.has(n.state.applicationName)).map((n) => n.state.name);
      // a standby that stops acknowledging may hold commits the others have not flushed yet: it stays
      // in the record until every remaining member has flushed past the primary's position when it left
      for (const name of this.sync?.members ?? []) {
        if (!current.includes(name) && !this.retiring.has(name) && primaryLsn !== null) this.retiring.set(name, primaryLsn);
      }
      const flushed = syncRows.map((x) => lsnOrNull(x.flushLsn) ?? 0n);
      const minFlushed = flushed.length ? flushed.reduce((a, b) => (a < b ? a : b)) : null;
      for (const [name, until] of this.retiring) {
        if (current.includes(name) || (minFlushed !== null && minFlushed >= until)) this.retiring.delete(name);
      }
      const members = [...current, ...[...this.retiring.keys()].filter((x) => !current.includes(x))];
      if (members.length === 0) this.sync = null;
      else {
        const any = /^\s*ANY\s+(\d+)\s*\(/i.exec(pr.synchronousStandbyNames);
        this.sync = {
          method: syncRows.some((x) => x.syncState === 'quorum') || any ? 'quorum' : 'priority',
          k: any ? Number(any[1]) : 1,
          members,
          retiring: members.filter((x) => !current.includes(x)),
          synchronousStandbyNames: pr.synchronousStandbyNames,
          at: new Date().toISOString(),
        };
      }
    }
  }

  private setPrimary(to: BackendState | null, reason: string): void {
    const from = this.primary;
    if ((from?.name ?? null) === (to?.name ?? null)) return;
    this.primaryName = to?.name ?? null;
    // the synchronous record belongs to one primary: kept while there is none (a failover needs it)
    if (to) {
      this.sync = null;
      this.retiring.clear();
    }
    this.opts.log.warn({ from: from?.name ?? null, to: to?.name ?? null, timeline: to?.timeline ?? null, reason }, to ? 'routing writes to a new primary' : 'no primary');
    this.emit('primary', { from, to, reason } satisfies PrimaryChange);
  }
}
