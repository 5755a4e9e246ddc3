/**
 * Several proxies on etcd: is the recorded decision carried out? A leader that recorded a new
 * primary (the compare-and-swap) and died before promoting it — or whose promotion was refused,
 * e.g. by a --dcs-failsafe promise — leaves etcd naming a standby: nobody routes writes anywhere.
 * The leader (a new one on taking over, and on every cycle) looks at the recorded node as data here
 * and finishes the decision (failover.ts: FailoverController.complete) or, when the recorded node is
 * gone, makes a new one (an ordinary failover from it: a new compare-and-swap and history entry).
 * No I/O here.
 */
import type { BackendState } from '../health/monitor.js';

export type RollForward =
  /** nothing to do (the recorded node is the primary, nothing is recorded, or it is not known yet) */
  | { action: 'none'; why: string }
  /** the recorded node is down: an ordinary failover away from it (a new decision) */
  | { action: 'failover'; from: string; why: string }
  /**
   * the recorded node is a healthy standby: promote it (the decision etcd holds). First fence
   * through their agents the other nodes that still answer as primaries (`fence`), then wait until
   * the primary lease is not held by another node (`leaseHolder`, null: nobody holds it).
   */
  | { action: 'promote'; target: string; fence: string[]; leaseHolder: string | null; why: string }
  /** the recorded node is a standby that cannot be promoted now (not answering yet, another system) */
  | { action: 'wait'; why: string };

export interface RollForwardInput {
  /** the backend etcd records as the primary (null: nothing recorded) */
  recorded: string | null;
  backends: BackendState[];
  clusterSystemId: string | null;
  /** the PostgreSQL address (host:port) of the node holding the primary lease, null when none does */
  leaseHolder: string | null;
}

export function rollForward(i: RollForwardInput): RollForward {
  if (i.recorded === null) return { action: 'none', why: 'no primary recorded on etcd' };
  const rec = i.backends.find((b) => b.name === i.recorded);
  if (!rec) return { action: 'none', why: `etcd records ${i.recorded}, which is not one of this proxy's backends` };
  if (rec.role === 'primary') return { action: 'none', why: `${rec.name} is the primary` };
  if (rec.role === 'down') return { action: 'failover', from: rec.name, why: `the recorded primary ${rec.name} does not answer` };
  if (rec.role === 'unknown' || rec.inRecovery === null) return { action: 'none', why: `${rec.name} has not been checked yet` };
  if (rec.inRecovery === false) return { action: 'none', why: `${rec.name} answers as a primary` };
  // a standby, recorded as the primary: the decision was not carried out
  if (rec.fenced || rec.role === 'fenced') return { action: 'wait', why: `the recorded primary ${rec.name} is fenced${rec.reason ? ` (${rec.reason})` : ''}` };
  if (rec.failures > 0) return { action: 'wait', why: `the recorded primary ${rec.name} is a standby that does not answer every check` };
  if (i.clusterSystemId !== null && rec.systemId !== i.clusterSystemId) return { action: 'wait', why: `the recorded primary ${rec.name} has system id ${rec.systemId}, not the cluster's ${i.clusterSystemId}` };
  // never two primaries: whatever else still answers as a primary is fenced first
  const fence = i.backends.filter((b) => b.name !== rec.name && b.inRecovery === false && b.failures === 0 && b.role !== 'down').map((b) => b.name);
  const holder = i.leaseHolder !== null && i.leaseHolder !== rec.name ? i.leaseHolder : null;
  return { action: 'promote', target: rec.name, fence, leaseHolder: holder, why: `etcd records ${rec.name} as the primary, and it is a standby: completing the promotion` };
}
