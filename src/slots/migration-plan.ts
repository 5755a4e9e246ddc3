/**
 * The slot migration decision, pure: from the old primary's slot states, the new primary's history,
 * its live slots and which WAL it holds, decide for every logical slot whether it is advanced,
 * installed or already current (and where its state comes from), or why the migration is refused —
 * before anything changes. migrate.ts gathers these facts and carries the plan out.
 */
import { formatLsn, parseLsn, type Lsn } from '../formats/lsn.js';
import type { SlotState } from '../formats/replslot.js';
import { switchpointOf, type TimelineHistory } from '../formats/timeline-history.js';

/** a row of the new primary's pg_replication_slots */
export interface LiveSlot {
  slot_name: string;
  plugin: string | null;
  datoid: number | null;
  slot_type: string;
  catalog_xmin: string | null;
  restart_lsn: string | null;
  confirmed_flush_lsn: string | null;
  /** PostgreSQL 17+: the slot is a failover slot (its changes wait for synchronized_standby_slots) */
  failover?: boolean | null;
  /** PostgreSQL 17+: the server's slotsync worker made and keeps this copy (stays true after a promote) */
  synced?: boolean | null;
}

export interface SlotMigrationFacts {
  /** the new primary's name, for messages */
  targetName: string;
  /** the new primary's timeline history */
  history: TimelineHistory;
  /** the old primary's logical slots (null: the old primary could not be read; its timeline unknown) */
  old: { timeline: number | null; slots: Array<{ state: SlotState; bytes: Buffer }> } | null;
  live: LiveSlot[];
  /** names of the old slots whose WAL from restart_lsn is on the new primary */
  walPresent: ReadonlySet<string>;
  /** replace an unrelated slot of the same name */
  replace: boolean;
}

export interface SlotPlan {
  name: string;
  /** server-synced: PostgreSQL 17+'s own slot synchronisation kept this copy (pg_replication_slots.synced) */
  source: 'old-primary' | 'synced-copy' | 'server-synced';
  action: 'advanced' | 'installed' | 'already-current';
  /** the state file to install (action installed) */
  bytes: Buffer | null;
  /** confirmed_flush to reach: the old one, or the fork point when the consumer confirmed past it */
  target: Lsn;
  restart: Lsn;
}

export interface SlotMigrationPlan {
  slots: SlotPlan[];
  /** non-empty: nothing is done, these are the reasons */
  refusals: string[];
  /** installing a state file needs a restart of the new primary (slots are read at start-up) */
  restartTarget: boolean;
}

export function planSlotMigration(f: SlotMigrationFacts): SlotMigrationPlan {
  const slots: SlotPlan[] = [];
  const refusals: string[] = [];
  const oldSlots = f.old?.slots ?? [];
  const protectedXmins = f.live.filter((r) => r.catalog_xmin !== null).map((r) => Number(r.catalog_xmin));
  // with the old primary gone, the synced copies already live on the new primary are the newest state
  const names = new Set([...oldSlots.map((s) => s.state.name), ...(f.old === null ? f.live.filter((r) => r.slot_type === 'logical').map((r) => r.slot_name) : [])]);
  for (const name of names) {
    const o = oldSlots.find((s) => s.state.name === name);
    const existing = f.live.find((r) => r.slot_name === name);
    if (!o) {
      slots.push({ name, source: existing!.synced === true ? 'server-synced' : 'synced-copy', action: 'already-current', bytes: null, target: parseLsn(existing!.confirmed_flush_lsn ?? '0/0'), restart: parseLsn(existing!.restart_lsn ?? '0/0') });
      continue;
    }
    const st = o.state;
    // PostgreSQL 17+ kept this slot itself (sync_replication_slots): it is already live and the server's
    // own; it is only moved forward when the old primary's consumer confirmed further (never installed)
    if (existing?.synced === true && existing.slot_type === 'logical' && existing.plugin === st.plugin) {
      const oldTliS = f.old?.timeline ?? f.history.timeline;
      const spS = switchpointOf(f.history, oldTliS);
      const wantedS = spS !== null && spS !== undefined && st.confirmedFlush > spS ? spS : st.confirmedFlush;
      const current = parseLsn(existing.confirmed_flush_lsn ?? '0/0');
      slots.push({ name, source: 'server-synced', action: current < wantedS ? 'advanced' : 'already-current', bytes: null, target: current < wantedS ? wantedS : current, restart: parseLsn(existing.restart_lsn ?? '0/0') });
      continue;
    }
    const oldTli = f.old?.timeline ?? f.history.timeline;
    const sp = switchpointOf(f.history, oldTli);
    if (sp === undefined) {
      refusals.push(`${name}: the old primary's timeline ${oldTli} is not on ${f.targetName}'s history`);
      continue;
    }
    if (sp !== null && st.restartLsn > sp) {
      refusals.push(`${name}: restart_lsn ${formatLsn(st.restartLsn)} is past the fork point ${formatLsn(sp)}: that WAL is not on the new timeline`);
      continue;
    }
    const sameSlot = existing !== undefined && existing.slot_type === 'logical' && existing.plugin === st.plugin && (existing.datoid ?? 0) === st.database;
    if (existing && !sameSlot && !f.replace) {
      refusals.push(`${name}: a different slot of that name exists on ${f.targetName} (${existing.slot_type}${existing.plugin ? `, ${existing.plugin}` : ''}); use --replace`);
      continue;
    }
    if (!(protectedXmins.some((x) => x <= st.catalogXmin) || (sameSlot && Number(existing!.catalog_xmin) <= st.catalogXmin))) {
      refusals.push(`${name}: catalog_xmin ${st.catalogXmin} is no longer protected on ${f.targetName} (no slot there holds catalog rows that old)`);
      continue;
    }
    // the consumer may have confirmed past the fork on the old primary: those positions do not exist here
    const wanted = sp !== null && st.confirmedFlush > sp ? sp : st.confirmedFlush;
    if (sameSlot) {
      const current = parseLsn(existing!.confirmed_flush_lsn ?? '0/0');
      slots.push({ name, source: 'old-primary', action: current < wanted ? 'advanced' : 'already-current', bytes: o.bytes, target: wanted, restart: st.restartLsn });
    } else if (!f.walPresent.has(name)) {
      refusals.push(`${name}: WAL from restart_lsn ${formatLsn(st.restartLsn)} is not on ${f.targetName}`);
    } else {
      slots.push({ name, source: 'old-primary', action: 'installed', bytes: o.bytes, target: wanted, restart: st.restartLsn });
    }
  }
  return { slots, refusals, restartTarget: refusals.length === 0 && slots.some((s) => s.action === 'installed') };
}

/** a standby's PostgreSQL 17+ slot synchronisation, as `slots sync` sees it */
export interface ServerSlotSync {
  /** the standby's sync_replication_slots (false on 15/16, where the setting does not exist) */
  syncReplicationSlots: boolean;
}

/**
 * `slots sync`'s choice for one primary logical slot: copy it ourselves, or leave it to the server.
 * A failover slot on a standby running sync_replication_slots is the slotsync worker's: a copy we made
 * would be a same-named slot it did not create, which it refuses to sync (and a synced copy cannot be
 * advanced by us). Returns null to copy, or the reason to skip.
 */
export function serverSyncSkip(primary: { name: string; failover?: boolean | null }, standby: ServerSlotSync, standbyCopy: { synced?: boolean | null } | null): string | null {
  if (standbyCopy?.synced === true) return `${primary.name}: synced by the server (pg_replication_slots.synced on the standby)`;
  if (primary.failover === true && standby.syncReplicationSlots) return `${primary.name}: a failover slot and the standby runs sync_replication_slots: the server's slotsync worker keeps it`;
  return null;
}
