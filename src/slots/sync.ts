/**
 * `pgha slots sync`: keep copies of the primary's logical slots on a standby so they survive a
 * promote. What the copy needs is set up first (a physical slot on the primary used as the standby's
 * primary_slot_name, hot_standby_feedback on the standby, so catalog rows and WAL the copies need are
 * kept); missing copies are installed from the primary's state files (after a CHECKPOINT, so the files
 * are current) with a standby restart — PostgreSQL 15 reads slot files only at start-up; existing
 * copies are moved forward with pg_replication_slot_advance, never past the standby's replay point.
 */
import { memberSlotName } from './member-slot.js';
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { withNodeSql } from '../pg/node-sql.js';
import { parseLsn, formatLsn } from '../formats/lsn.js';
import { parseSlotState } from '../formats/replslot.js';
import { AgentClient } from '../ship/client.js';
import { serverSyncSkip } from './migration-plan.js';

export interface NodeSystem {
  name: string;
  systemId: string;
  timeline: number;
  walSegmentSize: number;
  pgHost: string;
  pgPort: number;
  pgUser: string;
  running: boolean;
}

export interface SlotsListing {
  node: string;
  running: boolean;
  slots: Array<{
    name: string;
    file: null | { slotType: string; plugin: string | null; database: number; restartLsn: string; confirmedFlush: string; catalogXmin: number; checksumValid: boolean };
    fileError: string | null;
    live: null | Record<string, unknown>;
  }>;
}

/** SQL on a node through the address its agent reports */
export const withSql = <T>(sys: NodeSystem, fn: (c: pg.Client) => Promise<T>): Promise<T> => withNodeSql(sys, fn);

export interface SyncedSlot {
  name: string;
  installed: boolean;
  primaryConfirmedFlush: string;
  copyConfirmedFlush: string | null;
  /** bytes the copy trails the primary's confirmed_flush */
  lagBytes: number | null;
  /** not copied by us: PostgreSQL 17+'s own slot synchronisation keeps it (the reason) */
  skipped: string | null;
}

export interface SyncResult {
  physicalSlot: string;
  restartedStandby: boolean;
  slots: SyncedSlot[];
}

export async function waitUp(sys: NodeSystem, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await withSql(sys, (c) => c.query('SELECT 1'));
      return;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

export async function syncOnce(fromUrl: string, toUrl: string, token: string, log: (m: string) => void = () => undefined): Promise<SyncResult> {
  const from = new AgentClient(fromUrl, token);
  const to = new AgentClient(toUrl, token);
  const [psys, ssys] = await Promise.all([from.get<NodeSystem>('system'), to.get<NodeSystem>('system')]);
  if (psys.systemId !== ssys.systemId) throw new Error(`${fromUrl} and ${toUrl} are different clusters (system ids ${psys.systemId} and ${ssys.systemId})`);
  const physical = memberSlotName(ssys.name);

  // protection: a physical slot for the standby on the primary, used by the standby, with feedback
  await withSql(psys, async (c) => {
    const r = await c.query('SELECT pg_is_in_recovery() AS rec');
    if (r.rows[0].rec) throw new Error(`${fromUrl} is in recovery: sync copies slots from a primary`);
    await c.query(`SELECT pg_create_physical_replication_slot($1, true) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, [physical]);
  });
  await withSql(ssys, async (c) => {
    const r = await c.query("SELECT current_setting('hot_standby_feedback') AS f, current_setting('primary_slot_name') AS s, pg_is_in_recovery() AS rec");
    if (!r.rows[0].rec) throw new Error(`${toUrl} is not a standby`);
    if (r.rows[0].f !== 'on' || r.rows[0].s !== physical) {
      await c.query('ALTER SYSTEM SET hot_standby_feedback = on');
      await c.query(`ALTER SYSTEM SET primary_slot_name = '${physical}'`);
      await c.query('SELECT pg_reload_conf()');
      log(`slots: ${ssys.name}: hot_standby_feedback = on, primary_slot_name = ${physical}`);
    }
  });

  // PostgreSQL 17+: failover slots the standby's slotsync worker keeps (sync_replication_slots) are the
  // server's; a copy of ours would be a same-named slot the worker did not create, which it refuses
  const primaryFailover = await withSql(psys, (c) =>
    c.query<{ slot_name: string; failover: boolean | null }>("SELECT slot_name, (to_jsonb(s)->>'failover')::boolean AS failover FROM pg_replication_slots s WHERE slot_type = 'logical'"),
  );
  const standbyServerSync = await withSql(ssys, async (c) => ({
    on: (await c.query<{ v: string | null }>("SELECT current_setting('sync_replication_slots', true) AS v")).rows[0].v === 'on',
    synced: (await c.query<{ slot_name: string; synced: boolean | null }>("SELECT slot_name, (to_jsonb(s)->>'synced')::boolean AS synced FROM pg_replication_slots s")).rows,
  }));
  const skip = new Map<string, string>();
  for (const p of primaryFailover.rows) {
    const reason = serverSyncSkip({ name: p.slot_name, failover: p.failover }, { syncReplicationSlots: standbyServerSync.on }, standbyServerSync.synced.find((r) => r.slot_name === p.slot_name) ?? null);
    if (reason !== null) {
      skip.set(p.slot_name, reason);
      log(`slots: skipped ${reason}`);
    }
  }

  const primarySlots = (await from.get<SlotsListing>('slots')).slots.filter((s) => s.live?.slot_type === 'logical' && !skip.has(s.name));
  const standbySlots = (await to.get<SlotsListing>('slots')).slots;
  const missing = primarySlots.filter((p) => !standbySlots.some((s) => s.name === p.name && s.live));
  let restarted = false;
  if (missing.length) {
    // the files on disk are as of the last checkpoint: make them current first
    await withSql(psys, (c) => c.query('CHECKPOINT'));
    const files = await Promise.all(missing.map(async (m) => ({ name: m.name, bytes: await from.getBytes(`slotFile/${m.name}`) })));
    // the standby needs the WAL from each copy's restart_lsn (a standby cloned after the slot was
    // made does not have it); the primary keeps it for the slot: ship what is missing, then load
    const need = new Map<string, { sha256: string; size: number }>();
    for (const f of files) {
      const st = parseSlotState(f.bytes, { file: `${fromUrl} slot ${f.name}` });
      const listed = await from.get<{ files: Array<{ name: string; sha256: string; size: number }> }>(`walFiles/${psys.timeline}/${formatLsn(st.restartLsn)}`);
      for (const w of listed.files) if (/^[0-9A-F]{24}$/.test(w.name)) need.set(w.name, w);
    }
    await to.delete('instance/current');
    try {
      // listed after the stop: the shutdown restartpoint may just have recycled old segments
      const have = new Set((await to.get<{ files: Array<{ name: string }> }>(`walFiles/${psys.timeline}/${formatLsn(0n)}`)).files.map((w) => w.name));
      for (const [name, w] of need) {
        if (have.has(name)) continue;
        await to.put(`walFile/${name}`, await from.getBytes(`walFile/${name}`), w.sha256);
        log(`slots: shipped ${name} to ${ssys.name} (a copied slot needs it)`);
      }
      for (const f of files) {
        await to.put(`slotFile/${f.name}`, f.bytes, createHash('sha256').update(f.bytes).digest('hex'));
        log(`slots: copied ${f.name} to ${ssys.name}`);
      }
    } finally {
      await to.post('instance/current');
      restarted = true;
    }
    await waitUp(ssys);
  }

  // move every copy forward to the primary's confirmed_flush, capped at the standby's replay LSN
  const primaryLive = await withSql(psys, (c) =>
    c.query<{ slot_name: string; confirmed_flush_lsn: string }>("SELECT slot_name, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_type = 'logical'"),
  );
  const result: SyncedSlot[] = [];
  await withSql(ssys, async (c) => {
    const replay = parseLsn((await c.query('SELECT pg_last_wal_replay_lsn()::text AS l')).rows[0].l);
    for (const p of primaryLive.rows) {
      const target = parseLsn(p.confirmed_flush_lsn) < replay ? parseLsn(p.confirmed_flush_lsn) : replay;
      if (skip.has(p.slot_name)) {
        const c2 = (await c.query<{ c: string | null }>('SELECT confirmed_flush_lsn::text AS c FROM pg_replication_slots WHERE slot_name = $1', [p.slot_name])).rows[0];
        const copyLsn = c2?.c ?? null;
        result.push({ name: p.slot_name, installed: false, primaryConfirmedFlush: p.confirmed_flush_lsn, copyConfirmedFlush: copyLsn, lagBytes: copyLsn === null ? null : Number(parseLsn(p.confirmed_flush_lsn) - parseLsn(copyLsn)), skipped: skip.get(p.slot_name)! });
        continue;
      }
      const copy = (await c.query<{ c: string | null }>('SELECT confirmed_flush_lsn::text AS c FROM pg_replication_slots WHERE slot_name = $1', [p.slot_name])).rows[0];
      let copyLsn = copy?.c ?? null;
      if (copy && copyLsn !== null && parseLsn(copyLsn) < target) {
        await c.query('SELECT pg_replication_slot_advance($1, $2::pg_lsn)', [p.slot_name, formatLsn(target)]);
        copyLsn = (await c.query<{ c: string }>('SELECT confirmed_flush_lsn::text AS c FROM pg_replication_slots WHERE slot_name = $1', [p.slot_name])).rows[0].c;
      }
      result.push({
        name: p.slot_name,
        installed: missing.some((m) => m.name === p.slot_name),
        primaryConfirmedFlush: p.confirmed_flush_lsn,
        copyConfirmedFlush: copyLsn,
        lagBytes: copyLsn === null ? null : Number(parseLsn(p.confirmed_flush_lsn) - parseLsn(copyLsn)),
        skipped: null,
      });
    }
  });
  return { physicalSlot: physical, restartedStandby: restarted, slots: result };
}
