/**
 * The demo's clients: a few `pg` connections through the proxy, each running one transaction after
 * another — INSERT a row of its own into demo_ledger and add one to demo_counter — and reconnecting
 * after any error. A COMMIT that returned success is an acknowledged write, recorded with its time
 * and the server (port) that acknowledged it; a COMMIT with no answer is in doubt (it may or may not
 * have happened) and is neither counted nor checked. Afterwards every node must have every
 * acknowledged row, and the counter must equal the rows.
 */
import pg from 'pg';
import { DB_USER } from './cluster.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface Ack {
  id: number;
  at: number;
  port: number;
}

/** a session the proxy opened: when, and on which server */
export interface Routed {
  at: number;
  port: number;
}

export interface NodeCheck {
  rows: number;
  counter: number;
  /** acknowledged rows this node does not have */
  missing: number;
  missingIds: number[];
}

export class Workload {
  private running = false;
  private readonly loops: Promise<void>[] = [];
  readonly acks: Ack[] = [];
  readonly routed: Routed[] = [];
  errors = 0;
  inDoubt = 0;
  readonly errorKinds = new Map<string, number>();

  constructor(
    private readonly proxyPort: number,
    private readonly writers = 4,
    /** pause between one worker's transactions, ms */
    private readonly pauseMs = 10,
  ) {}

  start(): void {
    this.running = true;
    for (let w = 1; w <= this.writers; w++) this.loops.push(this.worker(w));
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.race([Promise.all(this.loops), sleep(20_000)]);
  }

  acksAfter(t: number): Ack[] {
    return this.acks.filter((a) => a.at > t);
  }

  private note(e: unknown): void {
    this.errors++;
    const kind = String((e as Error)?.message ?? e).replace(/\d+/g, 'N').slice(0, 100);
    this.errorKinds.set(kind, (this.errorKinds.get(kind) ?? 0) + 1);
  }

  private async worker(w: number): Promise<void> {
    let client: pg.Client | null = null;
    let port = 0;
    let seq = 0;
    while (this.running) {
      try {
        if (!client) {
          const c = new pg.Client({ host: '127.0.0.1', port: this.proxyPort, user: DB_USER, database: 'postgres', connectionTimeoutMillis: 10_000, query_timeout: 10_000, application_name: `pgha-demo-writer-${w}` });
          c.on('error', () => undefined);
          client = c;
          await c.connect();
          port = Number((await c.query<{ p: string }>("SELECT current_setting('port') AS p")).rows[0].p);
          this.routed.push({ at: Date.now(), port });
        }
        const id = w * 1_000_000_000 + ++seq;
        await client.query('BEGIN');
        await client.query('INSERT INTO demo_ledger (id, worker) VALUES ($1, $2)', [id, w]);
        await client.query('UPDATE demo_counter SET n = n + 1 WHERE id = 1');
        try {
          await client.query('COMMIT');
        } catch (e) {
          this.inDoubt++;
          throw e;
        }
        this.acks.push({ id, at: Date.now(), port });
      } catch (e) {
        if (this.running) this.note(e);
        const c = client;
        client = null;
        c?.end().catch(() => undefined);
        await sleep(50);
        continue;
      }
      if (this.pauseMs > 0) await sleep(this.pauseMs);
    }
    await client?.end().catch(() => undefined);
  }

  /** every acknowledged row on the server at `port`, and its counter against its rows */
  async check(port: number): Promise<NodeCheck> {
    const c = new pg.Client({ host: '127.0.0.1', port, user: DB_USER, database: 'postgres', connectionTimeoutMillis: 5000, query_timeout: 30_000 });
    c.on('error', () => undefined);
    await c.connect();
    try {
      const rows = await c.query<{ id: string }>('SELECT id::text AS id FROM demo_ledger');
      const have = new Set(rows.rows.map((r) => Number(r.id)));
      const counter = Number((await c.query<{ n: string }>('SELECT n::text AS n FROM demo_counter WHERE id = 1')).rows[0]?.n ?? -1);
      const missingIds = this.acks.filter((a) => !have.has(a.id)).map((a) => a.id);
      return { rows: have.size, counter, missing: missingIds.length, missingIds: missingIds.slice(0, 10) };
    } finally {
      await c.end().catch(() => undefined);
    }
  }
}
