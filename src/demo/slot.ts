/**
 * The demo's logical slot: before the failover a loop keeps the standbys' copies moving (`pgha
 * slots sync`'s pass) and plays a careful CDC consumer on the primary — it reads only up to what
 * every standby has replayed, so it never confirms a change a promoted standby could lack. After
 * the failover the same consumer reads from the slot on the new primary; every acknowledged write
 * should have come through it once.
 */
import { connect, syncSlot, type DemoCluster, type DemoNode } from './cluster.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const INSERT = /^table public\.demo_ledger: INSERT: id\[bigint\]:(\d+)/;

export class SlotKeeper {
  /** demo_ledger ids the consumer has decoded */
  readonly decoded = new Set<number>();
  passes = 0;
  syncErrors = 0;
  lastError: string | null = null;
  /** the standbys' copies as the last sync pass left them */
  copies: Record<string, string | null> = {};
  private running = false;
  private loop: Promise<void> | null = null;

  constructor(
    private readonly c: DemoCluster,
    private readonly intervalMs = 1000,
  ) {}

  /** consume what the slot has on the server at `port`; `safe`: only up to every standby's replay position */
  async consume(port: number, safe: boolean): Promise<number> {
    const conn = await connect(port);
    try {
      const upto = safe ? "(SELECT min(replay_lsn) FROM pg_stat_replication WHERE state = 'streaming')" : 'NULL';
      const r = await conn.query<{ data: string }>(`SELECT data FROM pg_logical_slot_get_changes($1, ${upto}, NULL)`, [this.c.slot]);
      let n = 0;
      for (const row of r.rows) {
        const m = INSERT.exec(row.data);
        if (m) {
          this.decoded.add(Number(m[1]));
          n++;
        }
      }
      return n;
    } finally {
      await conn.end().catch(() => undefined);
    }
  }

  /** from `primary`: consume (safely), then refresh each standby's copy, every intervalMs */
  start(primary: DemoNode, standbys: DemoNode[]): void {
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        try {
          await this.consume(primary.port, true);
          for (const s of standbys) {
            const r = await syncSlot(this.c, primary, s, 1);
            this.copies[s.name] = r.slots.find((x) => x.name === this.c.slot)?.copyConfirmedFlush ?? null;
          }
          this.passes++;
        } catch (e) {
          this.syncErrors++;
          this.lastError = (e as Error).message;
        }
        const until = Date.now() + this.intervalMs;
        while (this.running && Date.now() < until) await sleep(50);
      }
    })();
  }

  /** stop and wait for the pass under way (nothing touches a copy while a failover promotes it) */
  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }
}
