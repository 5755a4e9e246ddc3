/**
 * What happens after the primary's postmaster is killed, phase by phase, each as ms since the kill:
 *
 * - detect: the proxy's /status no longer has the old primary as primary (down, fenced, or no
 *   primary), or its failover report has started — whichever is seen first;
 * - promote: the failover report's promotedAt (the new primary accepts writes);
 * - reroute: the proxy routes to the new primary (/status names it, or a client session lands on it);
 * - firstWrite: the first commit acknowledged by the new primary;
 * - rejoin: the old primary is a streaming standby of the new one in /status (its agent's automatic
 *   rejoin; the path comes from the agent's GET /api/pg/v1/jobs);
 * - slot: the logical slot is on the new primary with a confirmed_flush_lsn.
 */
import { AgentClient } from '../ship/client.js';
import type { FailoverReport } from '../../proxy/failover/failover.js';
import type { ProxyStatus } from '../../proxy/server.js';
import { notePostmasters, sql, type DemoCluster, type DemoNode } from './cluster.js';
import type { DemoError, ProcessSet } from './processes.js';
import type { Workload } from './workload.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const PHASES = ['detect', 'promote', 'reroute', 'firstWrite', 'rejoin', 'slot'] as const;
export type Phase = (typeof PHASES)[number];

export interface SlotState {
  name: string;
  node: string | null;
  onNewPrimary: boolean;
  confirmedFlush: string | null;
  restartLsn: string | null;
  walStatus: string | null;
}

export interface Timeline {
  killedAt: number;
  /** ms since the kill; null: not seen before the timeout */
  ms: Record<Phase, number | null>;
  newPrimary: DemoNode | null;
  failover: Pick<FailoverReport, 'from' | 'to' | 'via' | 'zeroLoss' | 'fenced' | 'ms' | 'error' | 'candidates'> | null;
  rejoin: { path: string | null; job: string | null; lostTransactions: number | null; reason: string | null };
  slot: SlotState;
  /** commits acknowledged by the old primary after the kill (in flight at that moment) */
  lateAcksOnOld: number;
}

export interface WatchOptions {
  c: DemoCluster;
  procs: ProcessSet;
  old: DemoNode;
  killedAt: number;
  workload: Workload;
  timeoutMs: number;
  say: (phase: Phase, ms: number, text: string) => void;
  /** a process died: stop watching with this error */
  failed: () => DemoError | null;
}

interface JobView {
  id: string;
  kind: string;
  state: string;
  startedAt: string;
  result?: { rejoin?: { path?: string; reason?: string; lostTransactions?: { count?: number } } };
}

async function status(admin: string): Promise<ProxyStatus | null> {
  try {
    const res = await fetch(`${admin}/status`, { signal: AbortSignal.timeout(1000) });
    return res.ok ? ((await res.json()) as ProxyStatus) : null;
  } catch {
    return null;
  }
}

export async function watchFailover(o: WatchOptions): Promise<Timeline> {
  const { c, old, killedAt } = o;
  const at: Record<Phase, number | null> = { detect: null, promote: null, reroute: null, firstWrite: null, rejoin: null, slot: null };
  const t: Timeline = {
    killedAt,
    ms: { detect: null, promote: null, reroute: null, firstWrite: null, rejoin: null, slot: null },
    newPrimary: null,
    failover: null,
    rejoin: { path: null, job: null, lostTransactions: null, reason: null },
    slot: { name: c.slot, node: null, onNewPrimary: false, confirmedFlush: null, restartLsn: null, walStatus: null },
    lateAcksOnOld: 0,
  };
  const since = (x: number) => Math.max(0, x - killedAt);
  const reach = (p: Phase, when: number, text: string) => {
    if (at[p] !== null) return;
    at[p] = when;
    o.say(p, since(when), text);
  };
  const oldAgent = new AgentClient(old.agentUrl, c.token, 2000);
  const byAddress = (a: string | null | undefined) => c.nodes.find((n) => n.address === a) ?? null;
  let rejoinSeenAt: number | null = null;
  let lastSlotLook = 0;
  let lastJobsLook = 0;
  const deadline = killedAt + o.timeoutMs;

  while (PHASES.some((p) => at[p] === null) && Date.now() < deadline) {
    const err = o.failed();
    if (err) throw err;
    notePostmasters(c, o.procs);
    const now = Date.now();
    const s = await status(c.proxy.admin);
    if (s) {
      const oldB = s.backends.find((b) => b.name === old.address);
      const report = [...s.failovers].reverse().find((f) => f.kind === 'failover' && f.from === old.address && Date.parse(f.startedAt) >= killedAt - 1000);
      // detection: the first sign that the proxy knows (its failover report starts at the detection)
      if (at.detect === null) {
        const started = report ? Date.parse(report.startedAt) : Infinity;
        const seen = s.primary !== old.address || oldB?.role === 'down' || oldB?.role === 'fenced' ? now : Infinity;
        const when = Math.min(started, seen);
        if (when !== Infinity) reach('detect', Math.max(killedAt, when), `detected     the proxy sees ${old.name} down${s.primary ? '' : ', no primary'}${report ? ' and starts a failover' : ''}`);
      } else if (report && Date.parse(report.startedAt) < at.detect) {
        at.detect = Math.max(killedAt, Date.parse(report.startedAt));
      }
      if (report?.to && report.promotedAt && at.promote === null) {
        t.newPrimary = byAddress(report.to);
        t.failover = { from: report.from, to: report.to, via: report.via, zeroLoss: report.zeroLoss, fenced: report.fenced, ms: report.ms, error: report.error, candidates: report.candidates };
        reach('promote', Date.parse(report.promotedAt), `promoted     ${t.newPrimary?.name ?? report.to} (through its agent${report.zeroLoss ? '; a synchronous standby: nothing acknowledged is lost' : ''})`);
      }
      if (report && t.failover) t.failover = { ...t.failover, fenced: report.fenced, ms: report.ms, error: report.error };
      const neu = t.newPrimary;
      if (neu) {
        if (at.reroute === null) {
          const session = o.workload.routed.find((r) => r.at > killedAt && r.port === neu.port);
          const seen = s.primary === neu.address ? now : Infinity;
          const when = Math.min(session?.at ?? Infinity, seen);
          if (when !== Infinity) reach('reroute', when, `re-routed    the proxy sends clients to ${neu.name} (127.0.0.1:${neu.port})`);
        }
        if (at.firstWrite === null) {
          const first = o.workload.acks.find((a) => a.at > killedAt && a.port === neu.port);
          if (first) reach('firstWrite', first.at, `first write  acknowledged by ${neu.name}`);
        }
        // the old primary back as a streaming standby of the new one
        if (rejoinSeenAt === null && oldB && oldB.role === 'standby' && oldB.streaming && !oldB.fenced && oldB.upstream === neu.address) rejoinSeenAt = now;
        if (rejoinSeenAt !== null && at.rejoin === null && now - lastJobsLook > 300) {
          lastJobsLook = now;
          try {
            const { jobs } = await oldAgent.get<{ jobs: JobView[] }>('jobs');
            const job = jobs.find((j) => (j.kind === 'auto-rejoin' || j.kind === 'rejoin') && j.state === 'succeeded' && Date.parse(j.startedAt) >= killedAt);
            if (job?.result?.rejoin?.path) {
              t.rejoin = { path: job.result.rejoin.path, job: job.id, lostTransactions: job.result.rejoin.lostTransactions?.count ?? null, reason: job.result.rejoin.reason ?? null };
              reach('rejoin', rejoinSeenAt, `rejoined     ${old.name} streams from ${neu.name} again (its agent's automatic rejoin: ${t.rejoin.path}${t.rejoin.lostTransactions !== null ? `, ${t.rejoin.lostTransactions} transactions thrown away` : ''})`);
            }
          } catch {
            // the agent is busy or restarting: next time
          }
        }
        if (at.slot === null && now - lastSlotLook > 200) {
          lastSlotLook = now;
          try {
            const [r] = await sql<{ c: string | null; r: string | null; w: string | null }>(
              neu.port,
              'SELECT confirmed_flush_lsn::text AS c, restart_lsn::text AS r, wal_status AS w FROM pg_replication_slots WHERE slot_name = $1 AND NOT pg_is_in_recovery()',
              [c.slot],
            );
            if (r?.c) {
              t.slot = { name: c.slot, node: neu.name, onNewPrimary: true, confirmedFlush: r.c, restartLsn: r.r, walStatus: r.w };
              reach('slot', Date.now(), `slot         ${c.slot} is on ${neu.name}, confirmed_flush_lsn ${r.c} (carried over by the failover)`);
            }
          } catch {
            // restarting (a slot installed by the migration needs a restart): next time
          }
        }
      }
    }
    await sleep(50);
  }
  for (const p of PHASES) t.ms[p] = at[p] === null ? null : since(at[p]!);
  t.lateAcksOnOld = o.workload.acksAfter(killedAt).filter((a) => a.port === old.port).length;
  return t;
}
