/**
 * The agent's closed loop: every few seconds (never overlapping, never while a job runs) look at
 * this node and at who is primary, decide — a pure function, decideAutoRejoin — and, when the node
 * should follow the primary, rejoin it as a job: stop it if it runs, make sure its physical slot
 * `pgha_<name>` exists on the primary, and run the same rejoin as `pgha rejoin`.
 *
 * Rules: rejoin when (a) the node is fenced and a primary other than this node is found; (b) the node
 * runs as a primary while another node is primary on a newer timeline (an old primary restarted by
 * hand); (c) the node is stopped, not fenced, not stopped on request, and a primary other than this
 * node is found on a timeline at least its own; (d) the node runs as a standby on an older timeline
 * than the primary's and has WAL past the point where the primary's history left that timeline (it
 * received or replayed WAL the promoted node never had — an asynchronous standby ahead of the
 * synchronous one that was promoted): PostgreSQL can never follow from there, so it is stopped and
 * rejoined (pg_rewind) — once two checks in a row, one interval apart, say so. Never start a node as
 * a primary; with no primary found do nothing.
 */
import type { FastifyBaseLogger } from 'fastify';
import { isFenced } from '../datadir/fence.js';
import { readNodeHistory } from '../datadir/node-state.js';
import { rejoin, RejoinRefused } from '../rejoin/execute.js';
import { AgentClient } from '../ship/client.js';
import { createPhysicalSlot, memberSlotName } from '../slots/member-slot.js';
import { withNodeSql } from '../pg/node-sql.js';
import { liveLsn, nodeState } from './node-status.js';
import type { AgentContext } from './server.js';

export interface FoundPrimary {
  name: string;
  /** its agent */
  url: string;
  timeline: number;
  /** how it was found */
  via: 'etcd' | 'proxy' | 'peers';
}

export interface AutoRejoinInputs {
  running: boolean;
  /** null when not running (or not known) */
  inRecovery: boolean | null;
  fenced: boolean;
  /** this node's timeline (from its files) */
  timeline: number;
  primary: FoundPrimary | null;
  /** the primary found is this very node */
  primaryIsSelf: boolean;
  /** stopped through the agent (DELETE instance/current): left alone until started again */
  stoppedOnRequest?: boolean;
  /** a running standby on an older timeline than the primary found: where its WAL ends, and whether that point is on the primary's history */
  standbyWal?: StandbyWalCheck | null;
}

export interface StandbyWalCheck {
  /** greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) on this node's timeline */
  endLsn: string;
  /** the primary's validLsn answer for (this node's timeline, endLsn) */
  onPrimaryHistory: boolean;
  /** checks in a row, this one included, that found the WAL off the primary's history */
  offHistoryChecks: number;
}

/** a running standby is rejoined after this many checks in a row found its WAL off the primary's history */
export const OFF_HISTORY_CHECKS = 2;

export interface AutoRejoinDecision {
  action: 'none' | 'rejoin';
  reason: string;
}

/** what to do, from data only */
export function decideAutoRejoin(i: AutoRejoinInputs): AutoRejoinDecision {
  const p = i.primary;
  if (p && i.primaryIsSelf) return { action: 'none', reason: 'this node is the primary' };
  const other = p && !i.primaryIsSelf ? p : null;
  if (i.fenced) {
    if (other) return { action: 'rejoin', reason: `fenced, and ${other.name} is the primary (timeline ${other.timeline}): rejoin it as a standby` };
    return { action: 'none', reason: i.running ? 'fenced, no primary found: waiting for one' : 'fenced and stopped, no primary found: stays stopped' };
  }
  if (i.running && i.inRecovery === false) {
    if (other && other.timeline > i.timeline) {
      return { action: 'rejoin', reason: `running as a primary on timeline ${i.timeline} while ${other.name} is the primary on timeline ${other.timeline}: stop and rejoin it` };
    }
    if (other) return { action: 'none', reason: `running as a primary; ${other.name} is also a primary, on timeline ${other.timeline} (not newer than ${i.timeline}): not acting` };
    return { action: 'none', reason: 'running as a primary' };
  }
  const w = i.standbyWal;
  if (i.running && i.inRecovery && other && w && !w.onPrimaryHistory) {
    const why = `running as a standby on timeline ${i.timeline} with WAL up to ${w.endLsn}, past the point where ${other.name}'s history (timeline ${other.timeline}) left timeline ${i.timeline}: it cannot follow`;
    if (w.offHistoryChecks >= OFF_HISTORY_CHECKS) return { action: 'rejoin', reason: `${why}; stop and rejoin it` };
    return { action: 'none', reason: `${why}; check ${w.offHistoryChecks} of ${OFF_HISTORY_CHECKS} before acting` };
  }
  if (i.running) return { action: 'none', reason: i.inRecovery ? 'running in recovery' : 'running, state not known' };
  if (i.stoppedOnRequest) return { action: 'none', reason: 'stopped on request (DELETE instance/current): left stopped' };
  if (!other) return { action: 'none', reason: 'stopped, no primary found: stays stopped' };
  if (other.timeline < i.timeline) {
    return { action: 'none', reason: `stopped; ${other.name} is a primary on timeline ${other.timeline}, older than this node's ${i.timeline}: not following it` };
  }
  return { action: 'rejoin', reason: `stopped and not fenced, and ${other.name} is the primary (timeline ${other.timeline}): rejoin it as a standby` };
}

/** the physical slot this node streams through (the proxy's member slot of the same name) */
export const slotNameFor = memberSlotName;

interface PeerSystem {
  name: string;
  timeline: number;
  pgHost: string;
  pgPort: number;
  pgUser: string;
  fenced?: boolean;
}

interface ProxyStatusView {
  primary: string | null;
  backends: Array<{ name: string; agent: string | null; timeline: number | null; fenced?: boolean }>;
}

const proxyBase = (u: string) => (/^https?:\/\//.test(u) ? u : `http://${u}`).replace(/\/+$/, '');

/**
 * Who is primary: with --etcd the primary recorded there (the decider's word; its agent from the
 * member entry, else the peer of that name), else each configured proxy's GET /status (its
 * primary's agent), else the peers' agents (a peer answering master/single that is not fenced; the
 * highest timeline wins).
 */
export async function findPrimaryForRejoin(ctx: AgentContext, timeoutMs = 3000): Promise<FoundPrimary | null> {
  const { cfg } = ctx;
  const recorded = ctx.dcs?.primary;
  if (ctx.dcs && recorded) {
    // etcd's record is the one word on who is primary: nothing else is followed while there is one
    if (!recorded.member || recorded.member === cfg.name) return null;
    try {
      const url = (await ctx.dcs.memberOf(recorded.member))?.agent ?? cfg.peers[recorded.member] ?? null;
      if (!url) return null;
      const agent = new AgentClient(url, cfg.token, timeoutMs);
      const sys = await agent.get<PeerSystem>('system');
      // promoted already (a standby named there a moment before its promotion is not followed yet)
      const state = await agent.get<Record<string, string>>('instance/current');
      const s = state[sys.name] ?? Object.values(state)[0];
      if (sys.fenced || (s !== 'master' && s !== 'single')) return null;
      return { name: sys.name, url: url.replace(/\/+$/, ''), timeline: sys.timeline, via: 'etcd' };
    } catch {
      return null;
    }
  }
  for (const proxy of cfg.proxies ?? []) {
    try {
      const res = await fetch(`${proxyBase(proxy)}/status`, { signal: AbortSignal.timeout(timeoutMs) });
      if (!res.ok) continue;
      const s = (await res.json()) as ProxyStatusView;
      if (!s.primary) continue;
      const b = s.backends.find((x) => x.name === s.primary);
      if (!b?.agent || b.fenced) continue;
      const sys = await new AgentClient(b.agent, cfg.token, timeoutMs).get<PeerSystem>('system');
      if (sys.fenced) continue;
      return { name: sys.name, url: b.agent.replace(/\/+$/, ''), timeline: b.timeline ?? sys.timeline, via: 'proxy' };
    } catch {
      // this proxy does not answer: the next one, then the peers
    }
  }
  const found = await Promise.all(
    Object.entries(cfg.peers).map(async ([name, url]): Promise<FoundPrimary | null> => {
      try {
        const client = new AgentClient(url, cfg.token, timeoutMs);
        const s = await client.get<Record<string, string>>('instance/current');
        const state = s[name] ?? Object.values(s)[0];
        if (state !== 'master' && state !== 'single') return null;
        const sys = await client.get<PeerSystem>('system');
        if (sys.fenced) return null;
        return { name: sys.name ?? name, url, timeline: sys.timeline, via: 'peers' };
      } catch {
        return null;
      }
    }),
  );
  let best: FoundPrimary | null = null;
  for (const f of found) if (f && (!best || f.timeline > best.timeline)) best = f;
  return best;
}

/** create the physical slot on the source primary unless it is there */
export async function ensurePhysicalSlot(sys: PeerSystem, slot: string): Promise<'created' | 'exists'> {
  return withNodeSql(sys, async (c) => ((await createPhysicalSlot(c, slot)) ? 'created' : 'exists'), 10_000);
}

export interface AutoRejoinOptions {
  intervalMs?: number;
  /** longest pause after failed attempts (the pause doubles from intervalMs) */
  maxBackoffMs?: number;
}

/** the loop: started on the agent's ready, stopped on close */
export class AutoRejoinLoop {
  private timer: NodeJS.Timeout | null = null;
  private ticking: Promise<void> | null = null;
  private stopped = true;
  private lastDecision = '';
  private failures = 0;
  private notBefore = 0;
  /** consecutive checks that found this running standby's WAL off the primary's history */
  private offHistoryChecks = 0;
  readonly intervalMs: number;
  private readonly maxBackoffMs: number;

  constructor(
    private readonly ctx: AgentContext,
    private readonly log: FastifyBaseLogger,
    opts: AutoRejoinOptions = {},
  ) {
    this.intervalMs = opts.intervalMs ?? 2000;
    this.maxBackoffMs = opts.maxBackoffMs ?? 60_000;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.log.info({ intervalMs: this.intervalMs, reclone: this.ctx.cfg.autoRejoinReclone === true, proxies: this.ctx.cfg.proxies ?? [] }, 'automatic rejoin on');
    this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.ticking;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.ticking = this.tick()
        .catch((e) => this.log.warn({ err: (e as Error).message }, 'automatic rejoin: check failed'))
        .finally(() => {
          this.ticking = null;
          this.schedule();
        });
    }, this.intervalMs);
    this.timer.unref?.();
  }

  /** gather the inputs of the decision */
  async inputs(): Promise<AutoRejoinInputs | null> {
    const { cfg, pg: inst } = this.ctx;
    const running = inst.isRunning();
    let inRecovery: boolean | null = null;
    if (running) {
      try {
        const [r] = await inst.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec');
        inRecovery = r.rec;
      } catch {
        return null; // starting up or shutting down: look again next time
      }
    }
    let timeline = 0;
    try {
      timeline = readNodeHistory(cfg.pgdata).timeline;
    } catch {
      // no readable pg_control/history: 0 (any primary is newer)
    }
    const primary = await findPrimaryForRejoin(this.ctx);
    const primaryIsSelf = primary !== null && primary.name === cfg.name;
    let standbyWal: StandbyWalCheck | null = null;
    if (running && inRecovery === true && primary && !primaryIsSelf && primary.timeline > timeline) {
      standbyWal = await this.standbyWalCheck(primary, timeline);
    }
    this.offHistoryChecks = standbyWal ? standbyWal.offHistoryChecks : 0;
    return {
      running,
      inRecovery,
      fenced: isFenced(cfg.pgdata),
      timeline,
      primary,
      primaryIsSelf,
      stoppedOnRequest: this.ctx.lifecycle.stoppedOnRequest,
      standbyWal,
    };
  }

  /**
   * Is this running standby's WAL (received or replayed, on its timeline) on the primary's history?
   * The primary's agent answers (validLsn); null when either side cannot tell right now.
   */
  private async standbyWalCheck(primary: FoundPrimary, timeline: number): Promise<StandbyWalCheck | null> {
    let endLsn: string | null;
    try {
      // the greatest of received and replayed; a WAL receiver that flushed WAL of a newer timeline
      // is past the switch: nothing to check
      const live = await liveLsn(this.ctx.pg);
      endLsn = Number(live.timeLineID) <= timeline ? live.lastLsn : null;
    } catch {
      return null;
    }
    if (!endLsn) return null;
    try {
      const v = await new AgentClient(primary.url, this.ctx.cfg.token, 3000).get<{ code: number }>(`validLsn/${timeline}/${endLsn}`);
      const onPrimaryHistory = v.code === 0;
      return { endLsn, onPrimaryHistory, offHistoryChecks: onPrimaryHistory ? 0 : this.offHistoryChecks + 1 };
    } catch {
      return null;
    }
  }

  async tick(): Promise<void> {
    if (this.stopped || this.ctx.jobs.busy()) return;
    const i = await this.inputs();
    if (!i || this.stopped || this.ctx.jobs.busy()) return;
    const d = decideAutoRejoin(i);
    const key = `${d.action}: ${d.reason}`;
    if (key !== this.lastDecision) {
      this.lastDecision = key;
      const fields = { action: d.action, reason: d.reason, primary: i.primary?.name ?? null, via: i.primary?.via ?? null, fenced: i.fenced, running: i.running, timeline: i.timeline };
      if (d.action === 'rejoin') this.log.warn(fields, 'automatic rejoin: decision changed');
      else this.log.info(fields, 'automatic rejoin: decision changed');
    }
    if (d.action !== 'rejoin' || !i.primary) return;
    if (Date.now() < this.notBefore) return;
    this.run(i.primary, d.reason);
  }

  private run(primary: FoundPrimary, reason: string): void {
    const { cfg, pg: inst, jobs, metrics } = this.ctx;
    const slot = slotNameFor(cfg.name);
    const { done } = jobs.start('auto-rejoin', async (log) => {
      const both = (m: string) => {
        log(m);
        this.log.info({ job: 'auto-rejoin' }, m);
      };
      both(`automatic rejoin: ${reason}`);
      if (inst.isRunning()) {
        const how = await inst.stop();
        both(`stopped PostgreSQL (${how})`);
      }
      const source = new AgentClient(primary.url, cfg.token, 10_000);
      const sys = await source.get<PeerSystem>('system');
      const made = await ensurePhysicalSlot(sys, slot);
      both(`replication slot ${slot} on ${sys.name}: ${made}`);
      const r = await rejoin({
        pgdata: cfg.pgdata,
        applicationName: cfg.name,
        source: primary.url,
        token: cfg.token,
        binDir: cfg.pgBin,
        peers: Object.values(cfg.peers).filter((u) => u.replace(/\/+$/, '') !== primary.url),
        allowReclone: cfg.autoRejoinReclone === true,
        slot,
        log: both,
      });
      if (!r.streaming) throw new Error(`rejoin (${r.path}) done, but the node does not stream from ${sys.name} yet`);
      return { [cfg.name]: await nodeState(inst), primary: primary.name, via: primary.via, slot, reason, rejoin: r };
    });
    done.then(
      (r) => {
        this.failures = 0;
        this.notBefore = 0;
        metrics.rejoins.inc({ result: 'succeeded' });
        this.log.warn({ primary: primary.name, path: r.rejoin.path, lostTransactions: r.rejoin.lostTransactions.count }, 'automatic rejoin: node streams from the primary');
      },
      (e: unknown) => {
        this.failures++;
        const pause = Math.min(this.maxBackoffMs, this.intervalMs * 2 ** Math.min(this.failures, 10));
        this.notBefore = Date.now() + pause;
        metrics.rejoins.inc({ result: e instanceof RejoinRefused ? 'refused' : 'failed' });
        this.log.error({ primary: primary.name, err: (e as Error).message, retryInMs: pause }, 'automatic rejoin failed');
      },
    );
  }
}
