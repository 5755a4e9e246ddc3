/** What the agent reports about its node: state, LSNs, recovery — live when running, from files when stopped. */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { nodeLsn, type NodeLsn } from '../datadir/node-state.js';
import { activeImplementation } from '../native/index.js';
import type { PgInstance } from '../pg/instance.js';

export type NodeStateName = 'single' | 'master' | 'slave' | 'inactive' | 'recovery';

export async function nodeState(pg: PgInstance): Promise<NodeStateName> {
  if (!pg.isRunning()) return 'inactive';
  const [r] = await pg.query<{ rec: boolean; standbys: string }>(
    'SELECT pg_is_in_recovery() AS rec, (SELECT count(*) FROM pg_stat_replication) AS standbys',
  );
  if (r.rec) return existsSync(join(pg.pgdata, 'standby.signal')) ? 'slave' : 'recovery';
  return Number(r.standbys) > 0 ? 'master' : 'single';
}

export async function liveLsn(pg: PgInstance): Promise<NodeLsn> {
  if (!pg.isRunning()) return (await nodeLsn(pg.pgdata, activeImplementation())).json;
  const [r] = await pg.query<Record<string, string>>(`
    SELECT c.checkpoint_lsn::text AS chk, c.redo_lsn::text AS redo, c.redo_wal_file AS walfile, c.timeline_id::text AS ctli,
           pg_is_in_recovery() AS rec,
           CASE WHEN pg_is_in_recovery()
                THEN greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text
                ELSE pg_current_wal_lsn()::text END AS last,
           CASE WHEN pg_is_in_recovery()
                THEN coalesce((SELECT received_tli::text FROM pg_stat_wal_receiver), c.timeline_id::text)
                ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int::text END AS tli
      FROM pg_control_checkpoint() c`);
  return { chkPoint: r.chk, chkRedoPoint: r.redo, walFile: r.walfile, timeLineID: r.tli, lastLsn: r.last };
}
