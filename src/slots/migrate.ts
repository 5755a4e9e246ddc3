/**
 * `pgha slots migrate`: bring the logical slots of an old primary live on the new one. The newest
 * verified state of each slot is used — the old primary's own file when it can still be read (its
 * data directory, or its agent), else the copy `slots sync` placed on the new primary — after checks
 * that change nothing when they fail: same system id, the slot's restart_lsn on the new primary's
 * history (at or before the fork) with its WAL present there, its catalog_xmin still protected there,
 * and no unrelated slot of that name (unless --replace). A copy already loaded on the new primary is
 * advanced; a slot with no copy is installed (a restart of the new primary: slots are read at start-up).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { readControl } from '../datadir/node-state.js';
import { formatLsn, parseLsn, parseWalFileName, type Lsn } from '../formats/lsn.js';
import { parseHistory, switchpointOf, type TimelineHistory } from '../formats/timeline-history.js';
import { parseSlotState, type SlotState } from '../formats/replslot.js';
import { AgentClient } from '../ship/client.js';
import { readSlotFiles } from './files.js';
import { waitUp, withSql, type NodeSystem, type SlotsListing } from './sync.js';

export class SlotMigrationRefused extends Error {}

export interface MigrateOptions {
  /** old primary: a data directory, or an agent URL */
  from: string;
  /** new primary's agent */
  to: string;
  token: string;
  replace?: boolean;
  dryRun?: boolean;
  log?: (m: string) => void;
}

export interface MigratedSlot {
  name: string;
  source: 'old-primary' | 'synced-copy';
  action: 'advanced' | 'installed' | 'already-current';
  restartLsn: string;
  confirmedFlush: string;
  live: { restartLsn: string; confirmedFlush: string; walStatus: string } | null;
}

export interface MigrateResult {
  dryRun: boolean;
  restartedTarget: boolean;
  slots: MigratedSlot[];
}

interface OldSlots {
  systemId: string | null;
  timeline: number | null;
  slots: Array<{ state: SlotState; bytes: Buffer }>;
  problems: string[];
}

async function readOld(from: string, token: string): Promise<OldSlots> {
  const problems: string[] = [];
  if (!/^https?:\/\//.test(from)) {
    if (!existsSync(from) || !statSync(from).isDirectory()) throw new Error(`${from}: not a data directory or agent URL`);
    const control = readControl(from);
    const slots = [];
    for (const f of readSlotFiles(from)) {
      if (!f.state || !f.state.checksumValid) {
        problems.push(f.error ?? `${f.path}: offset 4: checksum mismatch for replication slot file`);
        continue;
      }
      if (f.state.kind === 'logical') slots.push({ state: f.state, bytes: readFileSync(f.path) });
    }
    return { systemId: control.systemId.toString(), timeline: control.checkpoint.thisTimeLineID, slots, problems };
  }
  const client = new AgentClient(from, token, 10_000);
  const sys = await client.get<NodeSystem>('system');
  const listing = await client.get<SlotsListing>('slots');
  const slots = [];
  for (const s of listing.slots) {
    if (s.fileError) {
      problems.push(s.fileError);
      continue;
    }
    if (s.file?.slotType !== 'logical') continue;
    const bytes = await client.getBytes(`slotFile/${s.name}`);
    try {
      slots.push({ state: parseSlotState(bytes, { file: `${from} slot ${s.name}` }), bytes });
    } catch (e) {
      problems.push((e as Error).message);
    }
  }
  return { systemId: sys.systemId, timeline: sys.timeline, slots, problems };
}

export async function migrateSlots(opts: MigrateOptions): Promise<MigrateResult> {
  const log = opts.log ?? (() => undefined);
  const target = new AgentClient(opts.to, opts.token);
  const tsys = await target.get<NodeSystem>('system');
  let old: OldSlots;
  try {
    old = await readOld(opts.from, opts.token);
  } catch (e) {
    // the old primary is gone: the copies on the new primary are the newest state there is
    log(`slots: old primary unreadable (${(e as Error).message}); using the synced copies on ${tsys.name}`);
    old = { systemId: null, timeline: null, slots: [], problems: [] };
  }
  if (old.problems.length) throw new SlotMigrationRefused(`corrupt slot state: ${old.problems.join('; ')}`);
  if (old.systemId !== null && old.systemId !== tsys.systemId) {
    throw new SlotMigrationRefused(`different system identifier: old primary ${old.systemId}, target ${tsys.systemId}`);
  }
  const history: TimelineHistory =
    tsys.timeline > 1
      ? parseHistory(await target.getText(`walFile/${tsys.timeline.toString(16).toUpperCase().padStart(8, '0')}.history`), tsys.timeline)
      : { timeline: 1, entries: [] };
  const live = await withSql(tsys, async (c) => {
    const rec = (await c.query('SELECT pg_is_in_recovery() AS r')).rows[0].r as boolean;
    if (rec) throw new SlotMigrationRefused(`${opts.to} is still in recovery: promote it first`);
    return (
      await c.query<{ slot_name: string; plugin: string | null; datoid: number | null; slot_type: string; catalog_xmin: string | null; restart_lsn: string | null; confirmed_flush_lsn: string | null }>(
        'SELECT slot_name, plugin, datoid::int AS datoid, slot_type, catalog_xmin::text AS catalog_xmin, restart_lsn::text AS restart_lsn, confirmed_flush_lsn::text AS confirmed_flush_lsn FROM pg_replication_slots',
      )
    ).rows;
  });
  const protectedXmins = live.filter((r) => r.catalog_xmin !== null).map((r) => Number(r.catalog_xmin));

  // decide everything before changing anything
  type Plan = { name: string; source: MigratedSlot['source']; action: MigratedSlot['action']; state: SlotState | null; bytes: Buffer | null; target: Lsn; restart: Lsn };
  const plans: Plan[] = [];
  const refusals: string[] = [];
  const names = new Set([...old.slots.map((s) => s.state.name), ...(old.systemId === null ? live.filter((r) => r.slot_type === 'logical').map((r) => r.slot_name) : [])]);
  for (const name of names) {
    const o = old.slots.find((s) => s.state.name === name);
    const existing = live.find((r) => r.slot_name === name);
    if (!o) {
      // only the synced copy is known: it is already live
      plans.push({ name, source: 'synced-copy', action: 'already-current', state: null, bytes: null, target: parseLsn(existing!.confirmed_flush_lsn ?? '0/0'), restart: parseLsn(existing!.restart_lsn ?? '0/0') });
      continue;
    }
    const st = o.state;
    const oldTli = old.timeline ?? history.timeline;
    const sp = switchpointOf(history, oldTli);
    if (sp === undefined) {
      refusals.push(`${name}: the old primary's timeline ${oldTli} is not on ${tsys.name}'s history`);
      continue;
    }
    if (sp !== null && st.restartLsn > sp) {
      refusals.push(`${name}: restart_lsn ${formatLsn(st.restartLsn)} is past the fork point ${formatLsn(sp)}: that WAL is not on the new timeline`);
      continue;
    }
    const sameSlot = existing && existing.slot_type === 'logical' && existing.plugin === st.plugin && (existing.datoid ?? 0) === st.database;
    if (existing && !sameSlot && !opts.replace) {
      refusals.push(`${name}: a different slot of that name exists on ${tsys.name} (${existing.slot_type}${existing.plugin ? `, ${existing.plugin}` : ''}); use --replace`);
      continue;
    }
    if (!(protectedXmins.some((x) => x <= st.catalogXmin) || (sameSlot && Number(existing!.catalog_xmin) <= st.catalogXmin))) {
      refusals.push(`${name}: catalog_xmin ${st.catalogXmin} is no longer protected on ${tsys.name} (no slot there holds catalog rows that old)`);
      continue;
    }
    // the consumer may have confirmed past the fork on the old primary: those positions do not exist here
    const wanted = sp !== null && st.confirmedFlush > sp ? sp : st.confirmedFlush;
    if (sameSlot) {
      const current = parseLsn(existing!.confirmed_flush_lsn ?? '0/0');
      plans.push({ name, source: 'old-primary', action: current < wanted ? 'advanced' : 'already-current', state: st, bytes: o.bytes, target: wanted, restart: st.restartLsn });
    } else {
      // installing: the WAL from restart_lsn must be on the target
      const files = await target.get<{ files: Array<{ name: string }> }>(`walFiles/${oldTli}/${formatLsn(st.restartLsn)}`);
      const seg = st.restartLsn / BigInt(tsys.walSegmentSize);
      const present = files.files.some((f) => parseWalFileName(f.name.replace(/\.partial$/, ''), tsys.walSegmentSize)?.segno === seg);
      if (!present) {
        refusals.push(`${name}: WAL from restart_lsn ${formatLsn(st.restartLsn)} (segment ${seg}) is not on ${tsys.name}`);
        continue;
      }
      plans.push({ name, source: 'old-primary', action: 'installed', state: st, bytes: o.bytes, target: wanted, restart: st.restartLsn });
    }
  }
  if (refusals.length) throw new SlotMigrationRefused(refusals.join('; '));
  const result: MigrateResult = { dryRun: opts.dryRun === true, restartedTarget: false, slots: [] };
  if (!opts.dryRun) {
    const installs = plans.filter((p) => p.action === 'installed');
    if (installs.length) {
      await target.delete('instance/current');
      try {
        for (const p of installs) await target.put(`slotFile/${p.name}`, p.bytes!, createHash('sha256').update(p.bytes!).digest('hex'));
      } finally {
        await target.post('instance/current');
        result.restartedTarget = true;
      }
      await waitUp(tsys);
    }
    await withSql(tsys, async (c) => {
      for (const p of plans.filter((x) => x.action === 'advanced')) {
        await c.query('SELECT pg_replication_slot_advance($1, $2::pg_lsn)', [p.name, formatLsn(p.target)]);
        log(`slots: ${p.name} advanced to ${formatLsn(p.target)} on ${tsys.name}`);
      }
    });
  }
  const after = await withSql(tsys, (c) =>
    c.query<{ slot_name: string; restart_lsn: string; confirmed_flush_lsn: string; wal_status: string }>(
      'SELECT slot_name, restart_lsn::text, confirmed_flush_lsn::text, wal_status FROM pg_replication_slots',
    ),
  );
  for (const p of plans) {
    const row = after.rows.find((r) => r.slot_name === p.name);
    result.slots.push({
      name: p.name,
      source: p.source,
      action: p.action,
      restartLsn: formatLsn(p.restart),
      confirmedFlush: formatLsn(p.target),
      live: row ? { restartLsn: row.restart_lsn, confirmedFlush: row.confirmed_flush_lsn, walStatus: row.wal_status } : null,
    });
  }
  return result;
}

/** every slot is live with at least the expected confirmed_flush and its WAL reserved */
export function allLive(r: MigrateResult): boolean {
  return r.slots.every((s) => s.live !== null && s.live.walStatus !== 'lost' && parseLsn(s.live.confirmedFlush) >= parseLsn(s.confirmedFlush));
}

