/**
 * Which standby a failover may promote, as data: healthy standbys of this cluster on the old
 * primary's timeline, ranked by WAL received (what promotion will replay), then replayed. When the
 * old primary acknowledged commits through synchronous standbys, only those may be promoted, and
 * only when enough of them answer that the best one is sure to hold every acknowledged commit
 * (FIRST: any one of them; ANY k of n: n − k + 1 of them).
 */
import { lsnOrNull, type BackendState, type SyncRecord } from '../health/monitor.js';

export interface CandidateChoice {
  target: BackendState | null;
  /** zero loss was required (the old primary had synchronous standbys) */
  zeroLoss: boolean;
  /** why there is no target */
  refusal: string | null;
  candidates: string[];
}

const received = (s: BackendState) => lsnOrNull(s.receiveLsn) ?? lsnOrNull(s.replayLsn) ?? 0n;

export function rankStandbys(standbys: BackendState[]): BackendState[] {
  return [...standbys].sort((a, b) => {
    const d = received(b) - received(a);
    if (d !== 0n) return d > 0n ? 1 : -1;
    const r = (lsnOrNull(b.replayLsn) ?? 0n) - (lsnOrNull(a.replayLsn) ?? 0n);
    return r > 0n ? 1 : r < 0n ? -1 : 0;
  });
}

export function chooseCandidate(old: BackendState, backends: BackendState[], clusterSystemId: string | null, sync: SyncRecord | null, to?: string): CandidateChoice {
  const eligible = backends.filter(
    (b) => b.name !== old.name && b.role === 'standby' && b.failures === 0 && b.systemId === clusterSystemId && (b.timeline ?? 0) >= (old.timeline ?? 0),
  );
  const candidates = eligible.map((b) => b.name);
  if (to) {
    const t = eligible.find((b) => b.name === to);
    if (!t) {
      const b = backends.find((x) => x.name === to);
      const why = !b ? 'not a backend of this proxy' : b.role !== 'standby' ? `it is ${b.role}` : b.failures > 0 ? 'it does not answer' : `it is on timeline ${b.timeline}, behind the primary's ${old.timeline}`;
      return { target: null, zeroLoss: sync !== null, refusal: `${to} cannot be promoted: ${why}`, candidates };
    }
    return { target: t, zeroLoss: sync !== null, refusal: null, candidates };
  }
  if (!sync) {
    const [best] = rankStandbys(eligible);
    return { target: best ?? null, zeroLoss: false, refusal: best ? null : 'no healthy standby to promote', candidates };
  }
  const members = eligible.filter((b) => sync.members.includes(b.name));
  // FIRST k: every sync standby has every acknowledged commit, so one answering is enough — unless
  // one of them stopped acknowledging and the others have not caught up with it yet: then, as for
  // ANY k of n, n − k + 1 must answer for the best of them to hold everything
  const needed = sync.method === 'priority' && (sync.retiring ?? []).length === 0 ? 1 : Math.max(1, sync.members.length - sync.k + 1);
  if (members.length < needed) {
    return {
      target: null,
      zeroLoss: true,
      refusal: `zero-loss failover impossible: ${members.length} of the ${sync.members.length} synchronous standbys (${sync.members.join(', ')}; ${sync.synchronousStandbyNames}) answer, ${needed} needed to be sure one holds every acknowledged commit`,
      candidates,
    };
  }
  return { target: rankStandbys(members)[0], zeroLoss: true, refusal: null, candidates };
}
