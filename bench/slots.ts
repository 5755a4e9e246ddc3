/**
 * Slot migration figures: time from promote to the slot being live on the new primary, how far the
 * synced copy trails the primary's confirmed_flush under a pgbench load, and the extra WAL the copy
 * keeps on the standby.
 *   npx tsx bench/slots.ts [pgbench seconds=20]
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { buildAgent } from '../src/agent/server.js';
import { migrateSlots } from '../src/slots/migrate.js';
import { syncOnce } from '../src/slots/sync.js';
import { cleanupAll, PgCluster } from '../test/harness/cluster.js';

const seconds = Number(process.argv[2] ?? 20);
const TOKEN = 'bench-token-0123456789';
const walBytes = (c: PgCluster) => readdirSync(c.walDir).filter((n) => /^[0-9A-F]{24}$/.test(n)).reduce((a, n) => a + statSync(join(c.walDir, n)).size, 0);
try {
  const p = await PgCluster.init({ name: 'bs-p', conf: { checkpoint_timeout: '30s', max_wal_size: '1GB' } });
  await p.start();
  p.pgbench(['-i', '-s', '10', '-q']);
  await p.sql("SELECT pg_create_logical_replication_slot('cdc', 'test_decoding')");
  const s = await p.createStandby({ name: 'bs-s' });
  const agent = async (name: string, c: PgCluster) => {
    const { app } = buildAgent({ name, host: '127.0.0.1', port: 0, pgdata: c.dataDir, token: TOKEN, peers: {}, pgBin: c.binDir, pgPort: c.port, pgHost: '127.0.0.1', replUser: 'postgres' }, { logger: false });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const a = app.server.address();
    return `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
  };
  const pUrl = await agent('p', p);
  const sUrl = await agent('s', s);
  const walBefore = walBytes(s);
  await syncOnce(pUrl, sUrl, TOKEN);
  // load: pgbench in the background, a consumer confirming every 200 ms, the copy refreshed every second
  const { spawn } = await import('node:child_process');
  const bench = spawn('runuser', ['-u', 'postgres', '--', join(p.binDir, 'pgbench'), '-h', p.socketDir, '-p', String(p.port), '-c', '2', '-T', String(seconds), 'postgres'], { stdio: 'ignore' });
  let running = true;
  bench.on('exit', (code) => {
    running = false;
    console.error(`pgbench exited ${code}`);
  });
  const deadline = Date.now() + (seconds + 30) * 1000;
  const lags: number[] = [];
  const pinned: number[] = [];
  const consumer = (async () => {
    while (running && Date.now() < deadline) {
      await p.sql("SELECT count(*) FROM pg_logical_slot_get_changes('cdc', NULL, NULL)");
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  while (running && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 1000));
    // just before the refresh: how far the copy trails the primary's slot, and the WAL it pins
    const primaryConfirmed = (await p.sql("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'cdc'"))!;
    const [copy] = await s.rows<{ lag: string; pinned: string }>(
      `SELECT ('${primaryConfirmed}'::pg_lsn - confirmed_flush_lsn)::bigint::text AS lag, (pg_last_wal_replay_lsn() - restart_lsn)::bigint::text AS pinned
         FROM pg_replication_slots WHERE slot_name = 'cdc'`,
    );
    lags.push(Number(copy.lag));
    pinned.push(Number(copy.pinned));
    await syncOnce(pUrl, sUrl, TOKEN);
  }
  await consumer;
  const walWithCopy = walBytes(s);
  lags.sort((a, b) => a - b);
  pinned.sort((a, b) => a - b);
  await p.kill9();
  const t0 = performance.now();
  await s.promote();
  const mig = await migrateSlots({ from: p.dataDir, to: sUrl, token: TOKEN });
  const liveMs = performance.now() - t0;
  const pct = (xs: number[], q: number) => xs[Math.min(xs.length - 1, Math.floor(q * xs.length))];
  const kib = (b: number) => `${(b / 1024).toFixed(0)} KiB`;
  console.log(`RESULT slots | promote to slot live: ${liveMs.toFixed(0)} ms (promote + migrate, ${mig.slots[0].action})`);
  console.log(`RESULT slots | copy trails the primary's confirmed_flush before each 1 s refresh, pgbench -c 2 for ${seconds} s, consumer confirming every 200 ms (${lags.length} samples): median ${kib(pct(lags, 0.5))}, p90 ${kib(pct(lags, 0.9))}, max ${kib(lags[lags.length - 1])}`);
  console.log(`RESULT slots | WAL the copy pins on the standby (replay LSN - copy restart_lsn): median ${kib(pct(pinned, 0.5))}, max ${kib(pinned[pinned.length - 1])}; standby pg_wal ${(walBefore / 2 ** 20).toFixed(0)} MiB before, ${(walWithCopy / 2 ** 20).toFixed(0)} MiB after the load (checkpoint_timeout 30 s, max_wal_size 1 GB)`);
} finally {
  await cleanupAll();
}
