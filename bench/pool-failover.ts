/**
 * Failover under load with transaction pooling: three PostgreSQL 15 nodes with synchronous
 * replication (ANY 1), their agents, pgha-proxy --auto-failover --pool-mode transaction. 50
 * node-postgres clients, mostly idle: each commits one INSERT transaction, then waits 200–800 ms,
 * over and over. kill -9 of the primary's postmaster. Reported: client errors (and how many of them
 * had a transaction in flight at the kill), write-unavailability (kill → first commit acknowledged
 * after it), acknowledged commits missing on the new primary.
 *   npx tsx bench/pool-failover.ts [runs=1] [clients=50]
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { cleanupAll, sleep, waitFor } from '../test/harness/cluster.js';
import { stopAgentProcesses } from '../test/support/agents.js';
import { HaCluster } from '../test/support/ha-cluster.js';

const runs = Number(process.argv[2] ?? 1);
const clientsN = Number(process.argv[3] ?? 50);
const PASSWORD = 'bench-pool-failover';

interface RunResult {
  clients: number;
  acked: number;
  errors: number;
  errorCodes: Record<string, number>;
  inFlightAtKill: number;
  /** errors of transactions that began after the kill (the target: 0) */
  errorsStartedAfterKill: number;
  writeUnavailableMs: number | null;
  lost: number;
  waitedMaxMs: number;
}

async function once(run: number): Promise<RunResult> {
  const dir = mkdtempSync(join(tmpdir(), 'pgha-bench-pool-fo-'));
  const authFile = join(dir, 'userlist.txt');
  writeFileSync(authFile, `"postgres" "${PASSWORD}"\n`, { mode: 0o600 });
  const ha = await HaCluster.start({ name: `bpfo${run}`, nodes: 3, sync: true, proxyArgs: ['--pool-mode', 'transaction', '--pool-size', '10', '--auth-file', authFile, '--primary-wait', '30000', '--backend-sslmode', 'disable', '--log-level', 'warn'] });
  try {
    await ha.waitHealthy(60_000, 'initial cluster');
    const first = await ha.primary();
    await first.pg.sql('CREATE TABLE acked (id bigint PRIMARY KEY, client int NOT NULL)');
    let stop = false;
    let killedAt = 0;
    const acks: Array<{ id: number; at: number }> = [];
    const errors: Array<{ code: string; startedBeforeKill: boolean }> = [];
    let inFlight = 0;
    let inFlightAtKill = 0;
    let waitedMax = 0;
    let nextId = 1;
    const workers = Array.from({ length: clientsN }, async (_, i) => {
      let c: pg.Client | null = null;
      let startedBeforeKill = false;
      while (!stop) {
        try {
          if (!c) {
            c = new pg.Client({ host: '127.0.0.1', port: ha.proxy.port, user: 'postgres', password: PASSWORD, database: 'postgres' });
            c.on('error', () => undefined);
            await c.connect();
          }
          await sleep(200 + Math.random() * 600);
          if (stop) break;
          const id = nextId++;
          inFlight++;
          const t0 = Date.now();
          startedBeforeKill = killedAt === 0;
          try {
            await c.query('BEGIN');
            await c.query('INSERT INTO acked (id, client) VALUES ($1, $2)', [id, i]);
            await c.query('COMMIT');
          } finally {
            inFlight--;
          }
          acks.push({ id, at: Date.now() });
          if (killedAt && !startedBeforeKill) waitedMax = Math.max(waitedMax, Date.now() - t0);
        } catch (e) {
          errors.push({ code: (e as { code?: string }).code ?? (e as Error).message, startedBeforeKill });
          startedBeforeKill = false;
          await c?.end().catch(() => undefined);
          c = null;
        }
      }
      await c?.end().catch(() => undefined);
    });
    await sleep(4000);
    killedAt = Date.now();
    inFlightAtKill = inFlight;
    await first.pg.kill9({ waitOrphans: false });
    await waitFor(async () => {
      const p = (await ha.status()).primary;
      return p !== null && p !== first.address;
    }, 60_000, 'new primary');
    await sleep(4000);
    stop = true;
    await Promise.all(workers);
    const s = await ha.status();
    const winner = ha.node(s.primary!);
    const present = new Set((await winner.pg.rows<{ id: string }>('SELECT id::text FROM acked')).map((r) => Number(r.id)));
    const lost = acks.filter((a) => !present.has(a.id)).length;
    // the longest time without an acknowledged commit, from just before the kill on
    const times = [killedAt, ...acks.filter((a) => a.at > killedAt).map((a) => a.at)].sort((a, b) => a - b);
    let gap = 0;
    for (let i = 1; i < times.length; i++) gap = Math.max(gap, times[i] - times[i - 1]);
    const codes: Record<string, number> = {};
    for (const e of errors) codes[e.code] = (codes[e.code] ?? 0) + 1;
    return { clients: clientsN, acked: acks.length, errors: errors.length, errorCodes: codes, inFlightAtKill, errorsStartedAfterKill: errors.filter((e) => !e.startedBeforeKill).length, writeUnavailableMs: times.length > 1 ? gap : null, lost, waitedMaxMs: waitedMax };
  } finally {
    await ha.stop();
    await stopAgentProcesses();
  }
}

try {
  const results: RunResult[] = [];
  for (let r = 0; r < runs; r++) {
    const x = await once(r);
    results.push(x);
    console.error(JSON.stringify(x));
  }
  console.log('| run | clients | acknowledged commits | transactions in flight at the kill | client errors (codes) | of them begun after the kill | longest time without a commit from the kill, ms | acknowledged commits lost |');
  console.log('|---|---:|---:|---:|---|---:|---:|---:|');
  results.forEach((x, i) => console.log(`| ${i + 1} | ${x.clients} | ${x.acked} | ${x.inFlightAtKill} | ${x.errors} ${JSON.stringify(x.errorCodes)} | ${x.errorsStartedAfterKill} | ${x.writeUnavailableMs ?? '—'} | ${x.lost} |`));
} finally {
  await cleanupAll();
}
process.exit(0);
