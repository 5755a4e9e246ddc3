/**
 * Rejoin of a diverged old primary at pgbench scale 50: pg_rewind through `rejoin` vs a re-clone by
 * pg_basebackup (what the re-clone path runs), each until the node streams from the new primary.
 *   npx tsx bench/rejoin-vs-reclone.ts [scale=50] [seconds of diverging pgbench=2]
 */
import { chownSync, cpSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { buildAgent } from '../src/agent/server.js';
import { rejoin } from '../src/rejoin/execute.js';
import { cleanupAll, PgCluster, waitFor } from '../test/harness/cluster.js';

const scale = Number(process.argv[2] ?? 50);
/** seconds of pgbench on the old primary after the promote (its diverged WAL) */
const divergeSecs = Number(process.argv[3] ?? 2);
const TOKEN = 'bench-token-0123456789';
try {
  const p = await PgCluster.init({ name: 'bench-p', conf: { max_wal_size: '4GB', wal_keep_size: '1GB', checkpoint_timeout: '30min' } });
  await p.start();
  p.pgbench(['-i', '-s', String(scale), '-q']);
  await p.checkpoint();
  const s = await p.createStandby({ name: 'bench-s' });
  await p.waitForReplay(s);
  await s.promote();
  p.pgbench(['-c', '2', '-T', String(divergeSecs)]); // the old primary diverges
  p.stop('fast');
  await s.checkpoint();
  const { app } = buildAgent({ name: 's', host: '127.0.0.1', port: 0, pgdata: s.dataDir, token: TOKEN, peers: {}, pgBin: s.binDir, pgPort: s.port, pgHost: '127.0.0.1', replUser: 'postgres' }, { logger: false });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const addr = app.server.address();
  const url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  const size = await s.sql('SELECT pg_size_pretty(pg_database_size(current_database()))');

  // a copy of the diverged node for the re-clone run
  const q = p.ownedDir('reclone-target');
  let t = performance.now();
  const t0 = performance.now();
  const r = await rejoin({ pgdata: p.dataDir, source: url, token: TOKEN, binDir: p.binDir, log: (m) => console.error(`[${((performance.now() - t0) / 1000).toFixed(2)}s] ${m}`) });
  const rewindSecs = (performance.now() - t) / 1000;
  if (r.path !== 'rewind' || !r.streaming) throw new Error(`expected a rewind that streams, got ${JSON.stringify(r)}`);
  p.stop('fast');

  t = performance.now();
  const target = join(q, 'data');
  p.run('pg_basebackup', ['-D', target, '-h', '127.0.0.1', '-p', String(s.port), '-U', 'postgres', '-R', '-X', 'stream', '-c', 'fast']);
  cpSync(join(p.dataDir, 'postgresql.conf'), join(target, 'postgresql.conf'));
  const owner = statSync(target);
  chownSync(join(target, 'postgresql.conf'), owner.uid, owner.gid);
  p.run('pg_ctl', ['-D', target, '-l', join(q, 'log'), '-w', 'start']);
  await waitFor(async () => (await s.sql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")) === '1', 120_000, 'clone streaming');
  const recloneSecs = (performance.now() - t) / 1000;
  p.run('pg_ctl', ['-D', target, '-m', 'fast', '-w', 'stop']);
  console.log(`RESULT rejoin | pgbench scale ${scale} (${size}), ${divergeSecs} s diverged, ${r.forkLsn} .. |  rewind ${rewindSecs.toFixed(1)} s (lost transactions ${r.lostTransactions.count}) | re-clone ${recloneSecs.toFixed(1)} s | re-clone / rewind ${(recloneSecs / rewindSecs).toFixed(1)}x`);
  await app.close();
} finally {
  await cleanupAll();
}
