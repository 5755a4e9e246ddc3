/**
 * A client workload through the proxy for failover tests and benchmarks: workers run short
 * transactions (INSERT a new row, UPDATE it, SELECT, DELETE an older row of their own) at a steady
 * rate, reconnecting after any error. Every COMMIT that returned success is an acknowledged write;
 * afterwards verify() checks each of them against the new primary.
 */
import pg from 'pg';
import { sleep } from '../harness/cluster.js';

export const LEDGER_DDL = 'CREATE TABLE IF NOT EXISTS ledger (id bigint PRIMARY KEY, v int NOT NULL, worker int NOT NULL)';
/** the chaos loop's counter: one row, incremented in the same transaction as every insert */
export const COUNTER_DDL = 'CREATE TABLE IF NOT EXISTS counter (id int PRIMARY KEY, n bigint NOT NULL); INSERT INTO counter VALUES (1, 0) ON CONFLICT DO NOTHING';

/** one acknowledged commit: when, and which server (port) acknowledged it */
export interface Ack {
  at: number;
  port: number;
}

export interface LoadReport {
  commits: number;
  errors: number;
  /** distinct error messages with counts */
  errorKinds: Record<string, number>;
  /** ms from `since` to the first commit acknowledged after it (null: none) */
  firstCommitAfter(since: number): number | null;
  /** longest gap between two acknowledged commits, ms */
  longestGap: number;
}

export interface Verification {
  ackedRows: number;
  ackedDeletes: number;
  /** acknowledged inserts/updates not on the server, or acknowledged deletes undone */
  lost: number;
  lostIds: number[];
}

export class WriteLoad {
  private running = false;
  private workers: Promise<void>[] = [];
  private readonly acked = new Map<number, number>(); // id -> v acknowledged
  private readonly ackedDeleted = new Set<number>();
  /** rows whose delete was in a transaction whose COMMIT got no answer */
  private readonly inDoubtDeletes = new Set<number>();
  private readonly commitTimes: number[] = [];
  /** every acknowledged commit with the server port that acknowledged it */
  readonly acks: Ack[] = [];
  private errors = 0;
  private readonly errorKinds: Record<string, number> = {};

  constructor(
    private readonly port: number,
    private readonly opts: {
      workers?: number;
      txPerSecond?: number;
      host?: string;
      /** insert + counter increment in one transaction, no deletes (counter = rows at the end) */
      counter?: boolean;
      /** number of the first worker (row ids are worker × 10⁹ + n): several loads on one table need distinct ranges */
      firstWorker?: number;
    } = {},
  ) {}

  start(): void {
    this.running = true;
    const n = this.opts.workers ?? 2;
    const period = (1000 * n) / (this.opts.txPerSecond ?? 100);
    const first = this.opts.firstWorker ?? 0;
    for (let w = first; w < first + n; w++) this.workers.push(this.worker(w, period));
  }

  async stop(): Promise<LoadReport> {
    this.running = false;
    await Promise.all(this.workers);
    const times = [...this.commitTimes].sort((a, b) => a - b);
    let longestGap = 0;
    for (let i = 1; i < times.length; i++) longestGap = Math.max(longestGap, times[i] - times[i - 1]);
    return {
      commits: times.length,
      errors: this.errors,
      errorKinds: { ...this.errorKinds },
      firstCommitAfter: (since) => {
        const t = times.find((x) => x > since);
        return t === undefined ? null : t - since;
      },
      longestGap,
    };
  }

  private noteError(e: unknown): void {
    this.errors++;
    const msg = String((e as Error).message ?? e).replace(/\d+/g, 'N').slice(0, 120);
    this.errorKinds[msg] = (this.errorKinds[msg] ?? 0) + 1;
  }

  private async worker(w: number, periodMs: number): Promise<void> {
    let client: pg.Client | null = null;
    let seq = 0;
    let port = 0;
    const mine: number[] = [];
    while (this.running) {
      const t0 = Date.now();
      try {
        if (!client) {
          client = new pg.Client({ host: this.opts.host ?? '127.0.0.1', port: this.port, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 15_000, query_timeout: 15_000 });
          client.on('error', () => undefined);
          await client.connect();
          port = Number((await client.query("SELECT current_setting('port') AS p")).rows[0].p);
        }
        const id = w * 1_000_000_000 + ++seq;
        const victim = !this.opts.counter && mine.length > 5 && seq % 4 === 0 ? mine.shift()! : null;
        await client.query('BEGIN');
        await client.query('INSERT INTO ledger (id, v, worker) VALUES ($1, 0, $2)', [id, w]);
        await client.query('UPDATE ledger SET v = v + 1 WHERE id = $1', [id]);
        if (this.opts.counter) await client.query('UPDATE counter SET n = n + 1 WHERE id = 1');
        else await client.query('SELECT count(*) FROM ledger WHERE worker = $1', [w]);
        if (victim !== null) await client.query('DELETE FROM ledger WHERE id = $1', [victim]);
        try {
          await client.query('COMMIT');
        } catch (e) {
          // the server may have committed before the connection broke: in doubt, neither
          // acknowledged nor known to be undone (its insert is not checked, its delete may have happened)
          if (victim !== null) {
            this.acked.delete(victim);
            mine.unshift(victim);
            this.inDoubtDeletes.add(victim);
          }
          throw e;
        }
        // acknowledged
        const at = Date.now();
        this.commitTimes.push(at);
        this.acks.push({ at, port });
        this.acked.set(id, 1);
        mine.push(id);
        if (victim !== null) {
          this.acked.delete(victim);
          this.ackedDeleted.add(victim);
        }
      } catch (e) {
        this.noteError(e);
        const c = client;
        client = null;
        c?.end().catch(() => undefined);
        await sleep(20);
        continue;
      }
      const left = periodMs - (Date.now() - t0);
      if (left > 0) await sleep(left);
    }
    await client?.end().catch(() => undefined);
  }

  /** compare every acknowledged effect with what `server` has */
  async verify(server: { rows<R extends Record<string, unknown>>(q: string, p?: unknown[]): Promise<R[]> }): Promise<Verification> {
    const rows = await server.rows<{ id: string; v: number }>('SELECT id::text AS id, v FROM ledger');
    const have = new Map(rows.map((r) => [Number(r.id), r.v]));
    const lostIds: number[] = [];
    for (const [id, v] of this.acked) {
      // a row a later in-doubt transaction may have deleted: gone is as right as present
      if (have.get(id) !== v && !(this.inDoubtDeletes.has(id) && !have.has(id))) lostIds.push(id);
    }
    for (const id of this.ackedDeleted) if (have.has(id)) lostIds.push(id);
    return { ackedRows: this.acked.size, ackedDeletes: this.ackedDeleted.size, lost: lostIds.length, lostIds: lostIds.slice(0, 20) };
  }
}
