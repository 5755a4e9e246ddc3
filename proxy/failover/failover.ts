/**
 * Failover and switchover, the actions. Which standby to promote is decided in candidates.ts; here
 * it is carried out: fence the old primary in the proxy, give the target a slot for every other
 * member, re-point the other standbys at it (they cascade from it while it promotes, then follow
 * its new timeline), promote it through its agent (else pg_promote()), fence the old primary
 * through its agent. A switchover first holds new transactions, stops the old primary cleanly and
 * waits until the target has replayed everything, so nothing acknowledged is lost.
 */
import type { Logger } from 'pino';
import { AgentClient } from '../../src/ship/client.js';
import { formatLsn, parseLsn } from '../../src/formats/lsn.js';
import { ensurePhysicalSlot, setAndReload, withServer, type AdminSqlOptions } from '../backend/admin-sql.js';
import type { BackendTls } from '../backend/connect.js';
import { retarget } from '../backend/conninfo.js';
import type { HealthCredentials } from '../health/probe.js';
import { lsnOrNull, type BackendState, type HealthMonitor } from '../health/monitor.js';
import type { MemberDirectory } from '../cluster/members.js';
import { synchronousNames, type SynchronousMode } from '../cluster/plan.js';
import { chooseCandidate } from './candidates.js';

export interface FailoverOptions {
  monitor: HealthMonitor;
  members: MemberDirectory;
  token?: string;
  credentials: HealthCredentials;
  tls: BackendTls;
  log: Logger;
  /** ask the new primary's agent to carry logical slots over from the old primary's agent */
  migrateSlots?: boolean;
  /** give the target a slot for every member before anyone is pointed at it */
  memberSlots: boolean;
  synchronousMode: SynchronousMode;
  synchronousCount: number;
  promoteTimeoutMs?: number;
  /**
   * Several proxies sharing etcd: `claim` records the target as the primary (a compare-and-swap:
   * throws when another decider acted or this proxy no longer leads) before anything is promoted,
   * `released` waits until the old primary no longer holds its primary lease.
   */
  coordinate?: {
    claim(kind: 'failover' | 'switchover', trigger: 'auto' | 'manual', from: BackendState, to: BackendState): Promise<void>;
    released(from: BackendState): Promise<void>;
  };
}

export interface FailoverReport {
  kind: 'failover' | 'switchover';
  /** automatic (the primary went down) or asked for (pgha failover/switchover) */
  trigger: 'auto' | 'manual';
  from: string;
  to: string | null;
  startedAt: string;
  promotedAt: string | null;
  ms: number;
  via: 'agent' | 'sql' | null;
  fenced: 'agent' | 'proxy-only' | 'stopped';
  repointed: string[];
  /** slots created on the target for the members that will stream from it */
  slots: string[];
  /** zero loss was required: only a synchronous standby could be chosen */
  zeroLoss: boolean;
  candidates: string[];
  /** switchover: how long new transactions were held */
  pauseMs: number | null;
  /** switchover: transactions the old primary had that the new one lacks (0 when it went right) */
  lostTransactions: number | null;
  /** switchover: the old primary streams from the new one */
  oldPrimaryStreaming: boolean | null;
  error: string | null;
  /** a decision recorded on etcd by an earlier leader, carried out by this one (no new compare-and-swap) */
  resumed?: boolean;
  /**
   * where the time went, in order: each phase's name and milliseconds. A failover: detect (first
   * failed health check of the old primary → failover start), confirm (re-check, ask its agent),
   * fence, prepare (slots on the target), promote, reroute (the proxy routes to the new primary),
   * repoint (the other standbys), fence-old. A switchover: prepare, stop (old primary stopped
   * cleanly), catch-up (target replayed everything), promote, reroute, repoint, rejoin-old.
   */
  phases: Array<{ name: string; ms: number }>;
}

/** marks the end of each phase of a report, measured from the end of the one before */
function phaseClock(report: FailoverReport, from = Date.now()): (name: string) => void {
  let last = from;
  return (name) => {
    const now = Date.now();
    report.phases.push({ name, ms: now - last });
    last = now;
  };
}

export class FailoverError extends Error {
  constructor(
    message: string,
    readonly status = 409,
  ) {
    super(message);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** how long a switchover waits for its target standby to be streaming before it refuses */
const SWITCHOVER_STREAM_WAIT_MS = 10_000;

export class FailoverController {
  running = false;
  /** every failover and switchover, the running one included (its report fills in as it goes) */
  readonly history: FailoverReport[] = [];

  constructor(private readonly o: FailoverOptions) {}

  private get sql(): AdminSqlOptions {
    return { credentials: this.o.credentials, tls: this.o.tls, timeoutMs: this.o.promoteTimeoutMs ?? 60_000 };
  }

  private agent(name: string, timeoutMs = this.o.promoteTimeoutMs ?? 60_000): AgentClient | null {
    const url = this.o.members.agentOf(name);
    return url ? new AgentClient(url, this.o.token ?? '', timeoutMs) : null;
  }

  private newReport(kind: FailoverReport['kind'], trigger: FailoverReport['trigger'], from: string): FailoverReport {
    return {
      kind,
      trigger,
      from,
      to: null,
      startedAt: new Date().toISOString(),
      promotedAt: null,
      ms: 0,
      via: null,
      fenced: 'proxy-only',
      repointed: [],
      slots: [],
      zeroLoss: false,
      candidates: [],
      pauseMs: null,
      lostTransactions: null,
      oldPrimaryStreaming: null,
      error: null,
      phases: [],
    };
  }

  /** promoted: the time of it, the new primary checked at once and the write path released to it */
  private async reroute(report: FailoverReport, target: BackendState, phase: (name: string) => void): Promise<void> {
    report.promotedAt = new Date().toISOString();
    phase('promote');
    await this.o.monitor.checkNow([target.name]);
    this.o.monitor.hold(false);
    phase('reroute');
  }

  /** take the controller for one failover: false (the report says why) when another operation runs */
  private begin(report: FailoverReport): boolean {
    if (this.running) {
      report.error = 'a failover or switchover is already running';
      return false;
    }
    this.running = true;
    this.history.push(report);
    this.o.monitor.hold(true);
    return true;
  }

  /**
   * The primary is gone (automatic), or an operator says so (`to` given: promote that standby even
   * if the old primary still answers — it is fenced through its agent first).
   */
  async run(old: BackendState, opts: { to?: string; trigger?: 'auto' | 'manual' } = {}): Promise<FailoverReport> {
    const { monitor, log } = this.o;
    const started = Date.now();
    const report = this.newReport('failover', opts.trigger ?? 'auto', old.name);
    if (!this.begin(report)) return report;
    const failing = monitor.failingSince(old.name);
    if (report.trigger === 'auto' && failing !== null && failing <= started) report.phases.push({ name: 'detect', ms: started - failing });
    const phase = phaseClock(report, started);
    try {
      await monitor.checkNow(monitor.backends.filter((b) => b.name !== old.name).map((b) => b.name));
      const now = monitor.state(old.name);
      if (now && now.role === 'primary' && report.trigger === 'auto') {
        report.error = `${old.name} answers again: failover abandoned`;
        log.warn(report.error);
        return report;
      }
      // what the proxy cannot see may be the network between them: ask the node's own agent whether
      // its server answers (pg_isready's sense); an agent that cannot be reached confirms nothing
      if (report.trigger === 'auto') {
        const alive = await this.askAlive(old.name);
        if (alive?.answers) {
          report.error = `${old.name}'s agent says its server answers (${alive.detail ?? 'connected'}): failover abandoned`;
          log.warn(report.error);
          return report;
        }
      }
      const choice = chooseCandidate(old, monitor.backends, monitor.clusterSystemId, monitor.syncRecord, opts.to);
      phase('confirm');
      report.zeroLoss = choice.zeroLoss;
      report.candidates = choice.candidates;
      if (!choice.target) {
        report.error = choice.refusal;
        log.error({ from: old.name, sync: monitor.syncRecord }, report.error ?? 'no target');
        return report;
      }
      const target = choice.target;
      report.to = target.name;
      // the decision is recorded (etcd) before anything changes: a second decider cannot also win
      await this.o.coordinate?.claim('failover', report.trigger, old, target);
      // fence in the proxy first: from here on nothing is routed to the old primary
      monitor.fence(old.name, `failed over to ${target.name}`);
      if (now && now.role !== 'down' && now.failures === 0) {
        // an operator's failover while the old primary still answers: it must stop before the promotion
        report.fenced = await this.fenceOld(old.name, target.name);
        if (report.fenced !== 'agent') throw new FailoverError(`${old.name} still answers and could not be fenced through its agent: not promoting beside it`);
      }
      phase('fence');
      log.warn({ from: old.name, to: target.name, receiveLsn: target.receiveLsn, replayLsn: target.replayLsn, zeroLoss: report.zeroLoss }, 'failover: promoting');
      const others = monitor.backends.filter((s) => s.name !== target.name && s.name !== old.name && s.role === 'standby' && s.failures === 0);
      report.slots = await this.prepareTarget(target, [...others.map((s) => s.name), old.name]);
      phase('prepare');
      // the other standbys are re-pointed at the target while it promotes: they cascade from it until
      // the promotion and then follow its new timeline (recovery_target_timeline = latest)
      const repointing = this.repoint(target, others);
      repointing.catch(() => undefined);
      // never two primaries: the old one fenced itself or gave up its primary lease first
      await this.o.coordinate?.released(old);
      report.via = await this.promote(target, old.name);
      await this.reroute(report, target, phase);
      report.ms = Date.now() - started;
      log.warn({ from: old.name, to: target.name, ms: report.ms, phases: report.phases }, 'failover: promoted');
      // after the write path is back: fence the old node through its agent, re-point standbys
      report.repointed = await repointing;
      await this.synchronousAfterPromotion(target, others);
      phase('repoint');
      if (report.fenced !== 'agent') {
        report.fenced = await this.fenceOld(old.name, target.name);
        phase('fence-old');
      }
      return report;
    } catch (e) {
      report.error = (e as Error).message;
      log.error({ err: report.error }, 'failover failed');
      return report;
    } finally {
      monitor.hold(false);
      report.ms ||= Date.now() - started;
      this.running = false;
    }
  }

  /**
   * Roll forward a decision etcd holds but nobody carried out (roll-forward.ts decided it): the
   * recorded primary `target` is a standby. The same safety steps as a failover, without a new
   * compare-and-swap: what still answers as a primary is fenced through its agent (else nothing is
   * promoted), the primary lease must not be held by another node (released or expired), then slots,
   * re-pointing, the promotion (a node already promoted is taken as done), re-routing. The report
   * goes into the history with `resumed: true`.
   */
  async complete(target: BackendState, opts: { fence: string[]; leaseHolder: string | null; from?: string | null }): Promise<FailoverReport> {
    const { monitor, log } = this.o;
    const started = Date.now();
    const report: FailoverReport = { ...this.newReport('failover', 'auto', opts.from ?? opts.leaseHolder ?? opts.fence[0] ?? ''), to: target.name, resumed: true };
    if (!this.begin(report)) return report;
    const phase = phaseClock(report, started);
    try {
      for (const name of opts.fence) {
        monitor.fence(name, `etcd records ${target.name} as the primary`);
        if ((await this.fenceOld(name, target.name)) !== 'agent') throw new FailoverError(`${name} still answers as a primary and could not be fenced through its agent: not promoting ${target.name} beside it`);
        report.fenced = 'agent';
      }
      phase('fence');
      const old = opts.leaseHolder ? (monitor.state(opts.leaseHolder) ?? { ...target, name: opts.leaseHolder }) : null;
      if (old) await this.o.coordinate?.released(old);
      log.warn({ to: target.name, fenced: opts.fence, leaseHolder: opts.leaseHolder }, 'etcd records a standby as the primary: completing the promotion');
      const others = monitor.backends.filter((s) => s.name !== target.name && s.role === 'standby' && s.failures === 0);
      report.slots = await this.prepareTarget(target, monitor.backends.filter((b) => b.name !== target.name).map((b) => b.name));
      phase('prepare');
      const repointing = this.repoint(target, others);
      repointing.catch(() => undefined);
      await monitor.checkNow([target.name]);
      if (monitor.state(target.name)?.inRecovery !== false) report.via = await this.promote(target, report.from);
      await this.reroute(report, target, phase);
      report.ms = Date.now() - started;
      log.warn({ to: target.name, ms: report.ms, phases: report.phases }, 'recorded primary promoted (decision rolled forward)');
      report.repointed = await repointing;
      await this.synchronousAfterPromotion(target, others);
      phase('repoint');
      return report;
    } catch (e) {
      report.error = (e as Error).message;
      log.error({ err: report.error, to: target.name }, 'completing the recorded promotion failed (tried again next cycle)');
      return report;
    } finally {
      monitor.hold(false);
      report.ms ||= Date.now() - started;
      this.running = false;
    }
  }

  /**
   * Planned switchover: hold new transactions, stop the old primary cleanly (its WAL senders send
   * everything up to the shutdown checkpoint), wait until the target has replayed that, promote it,
   * re-point the others, and rejoin the old primary as a standby of the new one.
   */
  async switchover(opts: { to?: string; timeoutMs?: number } = {}): Promise<FailoverReport> {
    const { monitor, log } = this.o;
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const started = Date.now();
    const old = monitor.primary;
    const report = this.newReport('switchover', 'manual', old?.name ?? '');
    if (!old) throw new FailoverError('no primary: nothing to switch over from (use pgha failover --to)');
    if (this.running) throw new FailoverError('a failover or switchover is already running');
    const oldAgent = this.agent(old.name, timeoutMs);
    if (!oldAgent) throw new FailoverError(`${old.name} has no agent: a switchover must stop it cleanly (give --agent ${old.name}=URL)`);
    this.running = true;
    this.history.push(report);
    const phase = phaseClock(report, started);
    let heldAt: number | null = null;
    try {
      // a switchover waits for the target to replay everything: any streaming standby will do, the
      // one furthest ahead (or the one asked for) is quickest. A standby between two connections of
      // its WAL receiver (a rejoined node's restart, a re-pointed primary_conninfo) is given a few
      // seconds to stream again before the switchover is refused; nothing is held meanwhile.
      const streamDeadline = Date.now() + Math.min(timeoutMs, SWITCHOVER_STREAM_WAIT_MS);
      let target: BackendState;
      for (;;) {
        await monitor.checkNow();
        const choice = chooseCandidate(old, monitor.backends, monitor.clusterSystemId, null, opts.to);
        const streaming = opts.to ? choice.target : (monitor.backends.filter((b) => choice.candidates.includes(b.name) && b.streaming).sort((a, b) => (a.lagBytes ?? 0) - (b.lagBytes ?? 0))[0] ?? null);
        report.candidates = choice.candidates;
        if (streaming?.streaming) {
          target = streaming;
          break;
        }
        if (Date.now() >= streamDeadline) {
          if (!streaming) throw new FailoverError(choice.refusal ?? 'no streaming standby to switch over to');
          throw new FailoverError(`${streaming.name} is not streaming: it cannot be sure to receive everything`);
        }
        await sleep(250);
      }
      report.to = target.name;
      report.slots = await this.prepareTarget(target, monitor.backends.filter((b) => b.name !== target.name).map((b) => b.name));
      phase('prepare');
      // hold: new clients wait for a primary (--primary-wait); sessions on the old primary end when it stops
      heldAt = Date.now();
      monitor.hold(true);
      monitor.fence(old.name, `switchover to ${target.name}`);
      log.warn({ from: old.name, to: target.name }, 'switchover: stopping the old primary cleanly');
      await oldAgent.delete('instance/current');
      report.fenced = 'stopped';
      phase('stop');
      // the shutdown checkpoint is the last record the old primary wrote
      const lsn = await oldAgent.get<Record<string, { chkPoint: string; lastLsn: string }>>('lsn/current');
      const last = Object.values(lsn)[0];
      const end = parseLsn(last.lastLsn);
      await this.waitReplayed(target, end, timeoutMs);
      phase('catch-up');
      if (this.o.coordinate) {
        await this.o.coordinate.claim('switchover', 'manual', old, target);
        await this.o.coordinate.released(old);
      }
      const others = monitor.backends.filter((s) => s.name !== target.name && s.name !== old.name && s.role === 'standby' && s.failures === 0);
      const repointing = this.repoint(target, others);
      repointing.catch(() => undefined);
      report.via = await this.promote(target, old.name);
      await this.reroute(report, target, phase);
      report.pauseMs = Date.now() - heldAt;
      report.ms = Date.now() - started;
      log.warn({ from: old.name, to: target.name, pauseMs: report.pauseMs }, 'switchover: promoted');
      report.repointed = await repointing;
      await this.synchronousAfterPromotion(target, others);
      phase('repoint');
      // the old primary follows the new one: its WAL ends at the shutdown checkpoint, which the new
      // primary replayed, so the rejoin takes the follow path and throws nothing away
      const rejoined = await this.rejoinOld(old.name, timeoutMs);
      phase('rejoin-old');
      report.lostTransactions = rejoined.lost;
      report.oldPrimaryStreaming = rejoined.streaming;
      if (!rejoined.streaming) report.error = `the old primary ${old.name} did not come back as a standby: ${rejoined.error ?? 'not streaming'}`;
      return report;
    } catch (e) {
      report.error = (e as Error).message;
      log.error({ err: report.error }, 'switchover failed');
      if (heldAt !== null && report.pauseMs === null) report.pauseMs = Date.now() - heldAt;
      return report;
    } finally {
      monitor.hold(false);
      report.ms ||= Date.now() - started;
      this.running = false;
    }
  }

  private async waitReplayed(target: BackendState, end: bigint, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const replayed = await withServer(target.address, this.sql, async (c) => {
        const { rows } = await c.query<{ r: string | null }>('SELECT pg_last_wal_replay_lsn()::text AS r');
        return rows[0].r;
      });
      if (replayed && parseLsn(replayed) >= end) return;
      if (Date.now() > deadline) throw new FailoverError(`${target.name} replayed only ${replayed ?? 'nothing'} of the old primary's WAL up to ${formatLsn(end)} within ${timeoutMs} ms`);
      await sleep(20);
    }
  }

  private async promote(target: BackendState, oldName: string): Promise<'agent' | 'sql'> {
    const agent = this.agent(target.name);
    if (agent) {
      const oldAgent = this.o.members.agentOf(oldName);
      await agent.post('node/promote', this.o.migrateSlots && oldAgent ? { migrateSlotsFrom: oldAgent } : {});
      return 'agent';
    }
    await withServer(target.address, this.sql, (c) => c.query('SELECT pg_promote(true, $1)', [Math.ceil((this.o.promoteTimeoutMs ?? 60_000) / 1000)]));
    return 'sql';
  }

  /**
   * slots for the members that will stream from the target, made before anyone is pointed at it:
   * each member's `pgha_<name>`, or without member slots the primary_slot_name a standby already
   * uses (set by hand or by `pgha slots sync`), so a re-pointed standby never loops on a missing slot
   */
  private async prepareTarget(target: BackendState, members: string[]): Promise<string[]> {
    const slots = members
      .map((m) => (this.o.memberSlots ? this.o.members.slotOf(m) : this.o.monitor.state(m)?.slot ?? null))
      .filter((x): x is string => x !== null);
    if (slots.length === 0) return [];
    const made: string[] = [];
    try {
      await withServer(target.address, this.sql, async (c) => {
        for (const slot of slots) {
          await ensurePhysicalSlot(c, slot);
          made.push(slot);
        }
      });
    } catch (e) {
      this.o.log.error({ backend: target.name, err: (e as Error).message }, 'could not create member slots on the new primary');
    }
    return made;
  }

  /** with pgha managing synchronous_standby_names, the new primary waits only for standbys it has */
  private async synchronousAfterPromotion(target: BackendState, standbys: BackendState[]): Promise<void> {
    if (this.o.synchronousMode === 'off') return;
    const apps = standbys.map((s) => s.applicationName).filter((a): a is string => a !== null);
    const value = synchronousNames(apps, this.o.synchronousMode, this.o.synchronousCount);
    try {
      await withServer(target.address, this.sql, (c) => setAndReload(c, 'synchronous_standby_names', value));
    } catch (e) {
      this.o.log.error({ backend: target.name, err: (e as Error).message }, 'could not set synchronous_standby_names on the new primary');
    }
  }

  private async rejoinOld(name: string, timeoutMs: number): Promise<{ streaming: boolean; lost: number | null; error: string | null }> {
    const agent = this.agent(name, timeoutMs);
    if (!agent) return { streaming: false, lost: null, error: 'no agent' };
    let lost: number | null = null;
    let error: string | null = null;
    try {
      const r = await agent.post<{ rejoin?: { lostTransactions?: { count: number }; streaming?: boolean } }>('instance/slave', {});
      lost = r.rejoin?.lostTransactions?.count ?? 0;
    } catch (e) {
      // the agent's own automatic rejoin may have started first: wait for the node to stream instead
      error = (e as Error).message;
    }
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      await this.o.monitor.checkNow([name]);
      const s = this.o.monitor.state(name);
      if (s?.role === 'standby' && s.streaming) return { streaming: true, lost: lost ?? 0, error: null };
      await sleep(200);
    }
    return { streaming: false, lost, error };
  }

  private async askAlive(name: string): Promise<{ running: boolean; answers: boolean; detail: string | null } | null> {
    // the agent waits up to 1.5 s for its server; a node cut off the network costs this much more
    const agent = this.agent(name, 2500);
    if (!agent) return null;
    try {
      return await agent.get('alive');
    } catch {
      return null;
    }
  }

  async fenceOld(name: string, to: string): Promise<'agent' | 'proxy-only'> {
    const agent = this.agent(name, 30_000);
    if (!agent) {
      this.o.log.warn({ backend: name }, 'no agent for the old primary: fenced in the proxy only');
      return 'proxy-only';
    }
    try {
      await agent.post('node/fence', { reason: `pgha-proxy failed over to ${to}` });
      this.o.log.warn({ backend: name }, 'old primary fenced through its agent');
      return 'agent';
    } catch (e) {
      this.o.log.error({ backend: name, err: (e as Error).message }, 'could not fence the old primary through its agent: fenced in the proxy only');
      return 'proxy-only';
    }
  }

  /** point standbys at the new primary (only host and port of primary_conninfo change) and at their slot there */
  async repoint(primary: BackendState, standbys: BackendState[]): Promise<string[]> {
    const done: string[] = [];
    await Promise.all(
      standbys.map(async (s) => {
        try {
          await withServer(s.address, this.sql, async (c) => {
            const { rows } = await c.query<{ setting: string }>("SELECT setting FROM pg_settings WHERE name = 'primary_conninfo'");
            const next = retarget(rows[0]?.setting ?? '', primary.address.host, primary.address.port);
            await c.query(`ALTER SYSTEM SET primary_conninfo = ${c.escapeLiteral(next)}`);
            if (this.o.memberSlots) await c.query(`ALTER SYSTEM SET primary_slot_name = ${c.escapeLiteral(this.o.members.slotOf(s.name))}`);
            await c.query('SELECT pg_reload_conf()');
          });
          done.push(s.name);
          this.o.log.info({ backend: s.name, primary: primary.name }, 'standby re-pointed at the new primary');
        } catch (e) {
          this.o.log.error({ backend: s.name, err: (e as Error).message }, 'could not re-point standby');
        }
      }),
    );
    return done;
  }
}

export { lsnOrNull };
