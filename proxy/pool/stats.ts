/**
 * What the pooled clients of each (user, database) did: PgBouncer's SHOW STATS. Both pools count
 * the same things at the same points — the TypeScript pool in a `RouteTotals` per route, the
 * native loop in its `RouteStats` (pool_relay.rs) — and `StatsPeriods` turns the totals into
 * PgBouncer's averages over its stats period.
 */

/** totals of one (user, database) since the proxy started */
export interface RouteTotals {
  user: string;
  database: string;
  /** ReadyForQuery `I` relayed: transactions, autocommit statements included */
  xacts: number;
  /** ReadyForQuery relayed: one per simple Query or extended-protocol Sync answered */
  queries: number;
  bytesFromClients: number;
  bytesToClients: number;
  /** µs from a transaction's first message sent to the server to its ReadyForQuery `I` (idle in transaction included) */
  xactUs: number;
  /** µs from a request sent to the server to the ReadyForQuery that answers everything sent */
  queryUs: number;
  /** µs clients waited for a server connection of a full (or paused) pool, and how many such waits */
  waitUs: number;
  waits: number;
}

export type Counts = Omit<RouteTotals, 'user' | 'database'>;

const FIELDS = ['xacts', 'queries', 'bytesFromClients', 'bytesToClients', 'xactUs', 'queryUs', 'waitUs', 'waits'] as const;

export const zeroCounts = (): Counts => ({ xacts: 0, queries: 0, bytesFromClients: 0, bytesToClients: 0, xactUs: 0, queryUs: 0, waitUs: 0, waits: 0 });

export function addCounts(into: Counts, x: Counts): Counts {
  for (const f of FIELDS) into[f] += x[f];
  return into;
}

/** one client's clocks: started when something goes to the server, stopped at the ReadyForQuery answering it all */
export class RequestClock {
  private xactStart = 0;
  private queryStart = 0;

  /** messages went to the server */
  sent(): void {
    if (this.queryStart) return;
    this.queryStart = performance.now();
    if (!this.xactStart) this.xactStart = this.queryStart;
  }

  /** a ReadyForQuery was relayed: `allAnswered` nothing sent is still unanswered */
  ready(into: Counts, idle: boolean, allAnswered: boolean): void {
    into.queries++;
    if (idle) into.xacts++;
    if (!allAnswered) return;
    const now = performance.now();
    if (this.queryStart) into.queryUs += Math.round((now - this.queryStart) * 1000);
    this.queryStart = 0;
    if (idle && this.xactStart) {
      into.xactUs += Math.round((now - this.xactStart) * 1000);
      this.xactStart = 0;
    }
  }
}

/** PgBouncer's stats_period (60 s): the averages are those of the last whole period */
export const STATS_PERIOD_MS = 60_000;

export interface DatabaseAverages {
  database: string;
  /** per second over the period */
  xactsPerSecond: number;
  queriesPerSecond: number;
  receivedPerSecond: number;
  sentPerSecond: number;
  /** µs per transaction, per query, per wait, over the period */
  xactUs: number;
  queryUs: number;
  waitUs: number;
}

/** per database, summed over its users */
export function byDatabase(totals: RouteTotals[]): Map<string, Counts> {
  const out = new Map<string, Counts>();
  for (const t of totals) {
    const d = out.get(t.database) ?? zeroCounts();
    addCounts(d, t);
    out.set(t.database, d);
  }
  return out;
}

/** the totals per database at the start of the last two periods: the averages are their difference */
export class StatsPeriods {
  private last: { at: number; dbs: Map<string, Counts> } | null = null;
  private averages = new Map<string, DatabaseAverages>();

  constructor(private readonly periodMs = STATS_PERIOD_MS) {}

  /** called often (the pool's janitor): takes a sample once a period has passed since the last */
  tick(now: number, totals: () => RouteTotals[]): void {
    if (this.last && now - this.last.at < this.periodMs) return;
    const dbs = byDatabase(totals());
    if (this.last) {
      const secs = (now - this.last.at) / 1000;
      const avg = new Map<string, DatabaseAverages>();
      for (const [database, c] of dbs) {
        const p = this.last.dbs.get(database) ?? zeroCounts();
        const d = (f: (typeof FIELDS)[number]) => c[f] - p[f];
        avg.set(database, {
          database,
          xactsPerSecond: Math.round(d('xacts') / secs),
          queriesPerSecond: Math.round(d('queries') / secs),
          receivedPerSecond: Math.round(d('bytesFromClients') / secs),
          sentPerSecond: Math.round(d('bytesToClients') / secs),
          xactUs: d('xacts') ? Math.round(d('xactUs') / d('xacts')) : 0,
          queryUs: d('queries') ? Math.round(d('queryUs') / d('queries')) : 0,
          waitUs: d('waits') ? Math.round(d('waitUs') / d('waits')) : 0,
        });
      }
      this.averages = avg;
    }
    this.last = { at: now, dbs };
  }

  average(database: string): DatabaseAverages {
    return this.averages.get(database) ?? { database, xactsPerSecond: 0, queriesPerSecond: 0, receivedPerSecond: 0, sentPerSecond: 0, xactUs: 0, queryUs: 0, waitUs: 0 };
  }
}
