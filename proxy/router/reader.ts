/**
 * The read-only port's router: which standby a new read-only session goes to. Standbys that answer
 * and are no further behind the primary than --read-max-lag-bytes; the one with the fewest sessions,
 * ties taking turns; the primary when no standby qualifies.
 */
import { lsnOrNull, type BackendState } from '../health/monitor.js';

/** what the router reads: the backends as the health monitor sees them, and the sessions on each */
export interface ReaderSource {
  primary(): BackendState | null;
  backends(): readonly BackendState[];
  sessionsOn(name: string): number;
}

export class ReaderRouter {
  private turn = 0;

  constructor(
    private readonly src: ReaderSource,
    private readonly maxLagBytes: number,
  ) {}

  pick(): BackendState | null {
    const primary = this.src.primary();
    const primaryLsn = lsnOrNull(primary?.lsn ?? null);
    const ok = this.src.backends().filter((b) => {
      if (b.role !== 'standby' || b.failures > 0) return false;
      if (primaryLsn === null) return true;
      const replay = lsnOrNull(b.replayLsn) ?? 0n;
      return primaryLsn - replay <= BigInt(this.maxLagBytes);
    });
    if (ok.length === 0) return primary;
    // fewest sessions first; ties take turns
    const sessions = (b: BackendState) => this.src.sessionsOn(b.name);
    ok.sort((a, b) => sessions(a) - sessions(b));
    const least = ok.filter((b) => sessions(b) === sessions(ok[0]));
    return least[this.turn++ % least.length];
  }
}
