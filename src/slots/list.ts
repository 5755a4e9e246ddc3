/** `pgha slots list`: slot files beside pg_replication_slots, from a data directory or an agent. */
import { slotView } from '../inspect/views.js';
import { PgInstance } from '../pg/instance.js';
import { AgentClient } from '../ship/client.js';
import { readSlotFiles } from './files.js';
import type { SlotsListing } from './sync.js';

export async function listSlots(o: { pgdata?: string; agent?: string; token?: string; pgBin?: string }): Promise<SlotsListing> {
  if (!!o.pgdata === !!o.agent) throw new Error('give exactly one of --pgdata DIR or --agent URL');
  if (o.agent) {
    if (!o.token) throw new Error('--agent needs --token');
    return new AgentClient(o.agent, o.token).get<SlotsListing>('slots');
  }
  return slotsListing(o.pgdata!, new PgInstance({ pgdata: o.pgdata!, binDir: o.pgBin ?? '/usr/lib/postgresql/15/bin' }), o.pgdata!);
}

/** the slot files of `pgdata` beside pg_replication_slots (when the server runs) */
export async function slotsListing(pgdata: string, pg: PgInstance, node: string): Promise<SlotsListing> {
  const live = pg.isRunning()
    ? await pg.query<Record<string, unknown>>(
        `SELECT slot_name, plugin, slot_type, datoid::int AS datoid, database, temporary, active, xmin::text AS xmin,
                catalog_xmin::text AS catalog_xmin, restart_lsn::text AS restart_lsn,
                confirmed_flush_lsn::text AS confirmed_flush_lsn, wal_status, two_phase
           FROM pg_replication_slots ORDER BY slot_name`,
      )
    : null;
  const files = readSlotFiles(pgdata);
  const names = new Set([...files.map((f) => f.name), ...(live ?? []).map((r) => String(r.slot_name))]);
  return {
    node,
    running: live !== null,
    slots: [...names].sort().map((name) => {
      const f = files.find((x) => x.name === name);
      return { name, file: f?.state ? slotView(f.path, f.state) : null, fileError: f?.error ?? null, live: live?.find((r) => r.slot_name === name) ?? null };
    }),
  };
}
