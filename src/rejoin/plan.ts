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
