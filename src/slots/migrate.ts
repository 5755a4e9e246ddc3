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
import { formatLsn, parseLsn, parseWalFileName } from '../formats/lsn.js';
import { parseHistory, type TimelineHistory } from '../formats/timeline-history.js';
import { parseSlotState, type SlotState } from '../formats/replslot.js';
import { AgentClient } from '../ship/client.js';
import { readSlotFiles } from './files.js';
import { planSlotMigration, type LiveSlot } from './migration-plan.js';
import { waitUp, withSql, type NodeSystem, type SlotsListing } from './sync.js';
import { progress } from '../log/progress.js';

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
  /** a progress bar on stderr over the slots copied and advanced (only when it is a terminal) */
  progress?: boolean;
}

export interface MigratedSlot {
  name: string;
  source: 'old-primary' | 'synced-copy' | 'server-synced';
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
      await c.query<LiveSlot>(
        // failover and synced exist from PostgreSQL 17 on: read through to_jsonb so 15 and 16 give null
        "SELECT slot_name, plugin, datoid::int AS datoid, slot_type, catalog_xmin::text AS catalog_xmin, restart_lsn::text AS restart_lsn, confirmed_flush_lsn::text AS confirmed_flush_lsn, (to_jsonb(s)->>'failover')::boolean AS failover, (to_jsonb(s)->>'synced')::boolean AS synced FROM pg_replication_slots s",
      )
    ).rows;
  });
  // which old slots' WAL (from restart_lsn on) the new primary holds, for the ones that would be installed
  const walPresent = new Set<string>();
  const oldTli = old.timeline ?? history.timeline;
  for (const { state } of old.slots) {
    if (live.some((r) => r.slot_name === state.name)) continue;
    const files = await target.get<{ files: Array<{ name: string }> }>(`walFiles/${oldTli}/${formatLsn(state.restartLsn)}`);
    const seg = state.restartLsn / BigInt(tsys.walSegmentSize);
    if (files.files.some((f) => parseWalFileName(f.name.replace(/\.partial$/, ''), tsys.walSegmentSize)?.segno === seg)) walPresent.add(state.name);
  }

  // decide everything before changing anything (migration-plan.ts, pure)
  const plan = planSlotMigration({ targetName: tsys.name, history, old: old.systemId === null ? null : old, live, walPresent, replace: opts.replace === true });
  if (plan.refusals.length) throw new SlotMigrationRefused(plan.refusals.join('; '));
  const plans = plan.slots;
  const result: MigrateResult = { dryRun: opts.dryRun === true, restartedTarget: false, slots: [] };
  if (!opts.dryRun) {
    const installs = plans.filter((p) => p.action === 'installed');
    const bar = progress({ label: 'slots: copying', total: installs.length + plans.filter((x) => x.action === 'advanced').length, unit: 'slots', enabled: opts.progress === true });
    if (plan.restartTarget) {
      await target.delete('instance/current');
      try {
        for (const p of installs) {
          await target.put(`slotFile/${p.name}`, p.bytes!, createHash('sha256').update(p.bytes!).digest('hex'));
          bar.increment();
        }
      } finally {
        await target.post('instance/current');
        result.restartedTarget = true;
      }
      await waitUp(tsys);
    }
    await withSql(tsys, async (c) => {
      for (const p of plans.filter((x) => x.action === 'advanced')) {
        await c.query('SELECT pg_replication_slot_advance($1, $2::pg_lsn)', [p.name, formatLsn(p.target)]);
        bar.increment();
        log(`slots: ${p.name} advanced to ${formatLsn(p.target)} on ${tsys.name}`);
      }
    });
    bar.stop();
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

