/**
 * What the cluster should look like, as data: member slots on every node, each standby streaming
 * through its own slot, and (when pgha manages it) synchronous_standby_names on the primary.
 * Pure: from the monitor's view of the nodes to a list of actions; manager.ts carries them out.
 */
import { parseLsn } from '../../src/formats/lsn.js';
import type { SlotRow } from '../health/probe.js';
import { isMemberSlot } from './members.js';

export type SynchronousMode = 'off' | 'on' | 'strict';

export interface MemberView {
  /** backend name (host:port) */
  name: string;
  /** the member's slot on whichever node it follows */
  slot: string;
  role: 'primary' | 'standby' | 'down' | 'fenced' | 'unknown';
  /** answered its last check */
  healthy: boolean;
  /** standby: host:port its receiver streams from */
  upstream: string | null;
  streaming: boolean;
  /** standby: its primary_slot_name */
  primarySlotName: string | null;
  /** standby: host:port its primary_conninfo names (null: none, or unparsable) */
  conninfoTarget: string | null;
  applicationName: string | null;
  replayLsn: bigint | null;
  /** physical slots on this node */
  slots: SlotRow[];
  synchronousStandbyNames: string;
}

export type ClusterAction =
  | { kind: 'create-slot'; on: string; slot: string; why: string }
  | { kind: 'drop-slot'; on: string; slot: string; why: string }
  | { kind: 'advance-slot'; on: string; slot: string; to: bigint; why: string }
  | { kind: 'set-primary-slot'; on: string; slot: string; why: string }
  | { kind: 'repoint'; on: string; to: string; why: string }
  | { kind: 'set-synchronous-standby-names'; on: string; value: string; why: string };

export interface PlanOptions {
  memberSlots: boolean;
  synchronousMode: SynchronousMode;
  /** ANY k of the streaming standbys */
  synchronousCount: number;
}

const quoteName = (n: string) => `"${n.replace(/"/g, '""')}"`;

/** synchronous_standby_names for these standbys' application names */
export function synchronousNames(apps: string[], mode: SynchronousMode, count: number): string {
  const names = [...new Set(apps)].sort();
  if (names.length === 0) return mode === 'strict' ? '*' : '';
  return `ANY ${Math.min(count, names.length)} (${names.map(quoteName).join(', ')})`;
}

/**
 * What the leader records on etcd (`slots`): the member slots on the one healthy primary, as its
 * last check saw them, each with the backend whose slot it is. Null without exactly one.
 */
export function memberSlotsOnPrimary(members: MemberView[]): { primary: string; slots: Array<{ slot: string; member: string | null }> } | null {
  const primaries = members.filter((m) => m.role === 'primary' && m.healthy);
  if (primaries.length !== 1) return null;
  const [p] = primaries;
  const slots = p.slots
    .filter((s) => isMemberSlot(s.name))
    .map((s) => ({ slot: s.name, member: members.find((m) => m.slot === s.name)?.name ?? null }))
    .sort((a, b) => (a.slot < b.slot ? -1 : a.slot > b.slot ? 1 : 0));
  return { primary: p.name, slots };
}

export function planCluster(members: MemberView[], opts: PlanOptions): ClusterAction[] {
  const actions: ClusterAction[] = [];
  const primaries = members.filter((m) => m.role === 'primary' && m.healthy);
  if (primaries.length !== 1) return actions;
  const primary = primaries[0];
  const expected = new Map(members.map((m) => [m.name, m.slot]));
  const streamingFromPrimary = members.filter((m) => m.role === 'standby' && m.healthy && m.streaming && m.upstream === primary.name);

  // every standby follows the primary itself: one that was stopped during a failover (and so not
  // re-pointed), or points at a node that is no longer the primary, is pointed at it
  for (const m of members) {
    if (m.role !== 'standby' || !m.healthy || m.upstream === primary.name || m.conninfoTarget === primary.name) continue;
    actions.push({ kind: 'repoint', on: m.name, to: primary.name, why: `it follows ${m.upstream ?? m.conninfoTarget ?? 'nothing'}, not the primary` });
  }

  if (opts.memberSlots) {
    // the primary keeps a slot for every other member, down ones included (their WAL is kept until
    // they come back or are removed from the configuration)
    const onPrimary = new Set(primary.slots.map((s) => s.name));
    for (const m of members) {
      if (m === primary || onPrimary.has(m.slot)) continue;
      actions.push({ kind: 'create-slot', on: primary.name, slot: m.slot, why: `member ${m.name} streams through it` });
    }
    const wanted = new Set(members.filter((m) => m !== primary).map((m) => m.slot));
    for (const s of primary.slots) {
      if (isMemberSlot(s.name) && !wanted.has(s.name) && !s.active) actions.push({ kind: 'drop-slot', on: primary.name, slot: s.name, why: 'not the slot of a member' });
    }
    // a standby streams through its slot once the primary has it
    for (const m of members) {
      if (m.role !== 'standby' || !m.healthy || m.primarySlotName === m.slot) continue;
      if (m.upstream !== null && m.upstream !== primary.name) continue; // cascading: its upstream's business
      if (!onPrimary.has(m.slot)) continue; // created this round: pointed at it next round
      actions.push({ kind: 'set-primary-slot', on: m.name, slot: m.slot, why: `its slot on ${primary.name}` });
    }
    // standbys keep copies of the other members' slots, moved along with their replay, so that a
    // promoted standby already has them and an old primary's stale slots hold no WAL
    for (const m of members) {
      if (m.role !== 'standby' || !m.healthy) continue;
      const have = new Map(m.slots.map((s) => [s.name, s]));
      for (const o of members) {
        if (o === m) continue;
        const slot = expected.get(o.name)!;
        const s = have.get(slot);
        if (!s) actions.push({ kind: 'create-slot', on: m.name, slot, why: `copy for member ${o.name}, ready for a promotion` });
        else if (!s.active && m.replayLsn !== null) {
          const restart = s.restartLsn === null ? null : parseLsn(s.restartLsn);
          if (restart === null || restart < m.replayLsn) actions.push({ kind: 'advance-slot', on: m.name, slot, to: m.replayLsn, why: 'keep the copy at the replay position' });
        }
      }
      for (const s of m.slots) {
        if (isMemberSlot(s.name) && !s.active && (s.name === m.slot || ![...expected.values()].includes(s.name))) {
          actions.push({ kind: 'drop-slot', on: m.name, slot: s.name, why: s.name === m.slot ? 'its own slot' : 'not the slot of a member' });
        }
      }
    }
  }

  if (opts.synchronousMode !== 'off') {
    const value = synchronousNames(
      streamingFromPrimary.map((m) => m.applicationName).filter((a): a is string => a !== null),
      opts.synchronousMode,
      opts.synchronousCount,
    );
    if (value !== primary.synchronousStandbyNames) actions.push({ kind: 'set-synchronous-standby-names', on: primary.name, value, why: `${streamingFromPrimary.length} standby(s) streaming` });
  }
  return actions;
}
