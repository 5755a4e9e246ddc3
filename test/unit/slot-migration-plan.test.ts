/**
 * The slot migration decision as data, without clusters: advanced, installed, already current or
 * refused (with the reason), decided before anything changes on the new primary.
 */
import { describe, expect, it } from 'vitest';
import type { SlotState } from '../../src/formats/replslot.js';
import type { TimelineHistory } from '../../src/formats/timeline-history.js';
import { planSlotMigration, serverSyncSkip, type LiveSlot, type SlotMigrationFacts } from '../../src/slots/migration-plan.js';

/** the new primary left timeline 1 at 0/3000060 */
const history: TimelineHistory = { timeline: 2, entries: [{ parentTimeline: 1, switchpoint: 0x3000060n, reason: 'promoted' }] };

function slot(name: string, over: Partial<SlotState> = {}): { state: SlotState; bytes: Buffer } {
  const state = { name, kind: 'logical', plugin: 'test_decoding', database: 5, catalogXmin: 740, restartLsn: 0x2000100n, confirmedFlush: 0x2000200n, ...over } as SlotState;
  return { state, bytes: Buffer.from(name) };
}
const physical: LiveSlot = { slot_name: 'pgha_n1', plugin: null, datoid: null, slot_type: 'physical', catalog_xmin: '735', restart_lsn: '0/3000100', confirmed_flush_lsn: null };
const live = (name: string, confirmed: string, over: Partial<LiveSlot> = {}): LiveSlot => ({ slot_name: name, plugin: 'test_decoding', datoid: 5, slot_type: 'logical', catalog_xmin: '738', restart_lsn: '0/2000000', confirmed_flush_lsn: confirmed, ...over });

const facts = (over: Partial<SlotMigrationFacts>): SlotMigrationFacts => ({ targetName: 'n2', history, old: { timeline: 1, slots: [] }, live: [physical], walPresent: new Set(), replace: false, ...over });

describe('slot migration plan', () => {
  it('advances a synced copy that is behind, leaves a current one, installs a missing one (restarting the target)', () => {
    const plan = planSlotMigration(
      facts({
        old: { timeline: 1, slots: [slot('behind'), slot('current'), slot('missing')] },
        live: [physical, live('behind', '0/2000100'), live('current', '0/2000200')],
        walPresent: new Set(['missing']),
      }),
    );
    expect(plan.refusals).toEqual([]);
    expect(plan.slots.map((s) => [s.name, s.action, s.source])).toEqual([
      ['behind', 'advanced', 'old-primary'],
      ['current', 'already-current', 'old-primary'],
      ['missing', 'installed', 'old-primary'],
    ]);
    expect(plan.slots[2].bytes).toEqual(Buffer.from('missing'));
    expect(plan.restartTarget).toBe(true);
  });

  it('a consumer that confirmed past the fork is brought back to the fork point', () => {
    const plan = planSlotMigration(facts({ old: { timeline: 1, slots: [slot('s', { confirmedFlush: 0x3000500n })] }, live: [physical, live('s', '0/2000100')] }));
    expect(plan.slots[0]).toMatchObject({ action: 'advanced', target: 0x3000060n });
  });

  it('refuses, naming each reason, and then plans nothing to restart', () => {
    const plan = planSlotMigration(
      facts({
        old: { timeline: 1, slots: [slot('pastfork', { restartLsn: 0x3000100n }), slot('nowal'), slot('xmin', { catalogXmin: 700 }), slot('other')] },
        live: [physical, live('other', '0/2000100', { plugin: 'wal2json' })],
      }),
    );
    expect(plan.refusals).toEqual([
      'pastfork: restart_lsn 0/3000100 is past the fork point 0/3000060: that WAL is not on the new timeline',
      'nowal: WAL from restart_lsn 0/2000100 is not on n2',
      'xmin: catalog_xmin 700 is no longer protected on n2 (no slot there holds catalog rows that old)',
      'other: a different slot of that name exists on n2 (logical, wal2json); use --replace',
    ]);
    expect(plan.restartTarget).toBe(false);
  });

  it('refuses an old primary whose timeline is not on the new primary\'s history', () => {
    const plan = planSlotMigration(facts({ old: { timeline: 7, slots: [slot('s')] } }));
    expect(plan.refusals).toEqual(["s: the old primary's timeline 7 is not on n2's history"]);
  });

  it('with the old primary unreadable, the synced copies on the new primary are taken as they are', () => {
    const plan = planSlotMigration(facts({ old: null, live: [physical, live('copy', '0/2000300')] }));
    expect(plan.slots).toEqual([{ name: 'copy', source: 'synced-copy', action: 'already-current', bytes: null, target: 0x2000300n, restart: 0x2000000n }]);
  });

  it('a slot PostgreSQL 17+ synced itself (synced = true) is the server\'s: already current, never installed over, even without its WAL listed', () => {
    const plan = planSlotMigration(
      facts({
        old: { timeline: 1, slots: [slot('fo', { confirmedFlush: 0x2000200n })] },
        live: [physical, live('fo', '0/2000200', { failover: true, synced: true })],
      }),
    );
    expect(plan.refusals).toEqual([]);
    expect(plan.slots).toEqual([{ name: 'fo', source: 'server-synced', action: 'already-current', bytes: null, target: 0x2000200n, restart: 0x2000000n }]);
    expect(plan.restartTarget).toBe(false);
  });

  it('a server-synced slot behind the old primary\'s confirmed_flush is advanced (to the fork point at most); with the old primary unreadable it is taken as it is', () => {
    const behind = planSlotMigration(facts({ old: { timeline: 1, slots: [slot('fo', { confirmedFlush: 0x3000100n })] }, live: [physical, live('fo', '0/2000180', { failover: true, synced: true })] }));
    expect(behind.slots.map((s) => [s.name, s.source, s.action, s.target])).toEqual([['fo', 'server-synced', 'advanced', 0x3000060n]]);
    const gone = planSlotMigration(facts({ old: null, live: [physical, live('fo', '0/2000180', { failover: true, synced: true })] }));
    expect(gone.slots.map((s) => [s.name, s.source, s.action])).toEqual([['fo', 'server-synced', 'already-current']]);
  });

  it('a failover slot that was not synced by the server (synced = false) goes the old way: installed from the old primary', () => {
    const plan = planSlotMigration(facts({ old: { timeline: 1, slots: [slot('fo')] }, walPresent: new Set(['fo']) }));
    expect(plan.slots.map((s) => [s.name, s.source, s.action])).toEqual([['fo', 'old-primary', 'installed']]);
  });
});

describe('slots sync: PostgreSQL 17+ slot synchronisation preferred where the standby has it', () => {
  it('skips a failover slot when the standby runs sync_replication_slots, and any slot the server synced', () => {
    expect(serverSyncSkip({ name: 'fo', failover: true }, { syncReplicationSlots: true }, null)).toBe(
      "fo: a failover slot and the standby runs sync_replication_slots: the server's slotsync worker keeps it",
    );
    expect(serverSyncSkip({ name: 'fo', failover: true }, { syncReplicationSlots: false }, { synced: true })).toBe('fo: synced by the server (pg_replication_slots.synced on the standby)');
  });
  it('copies a slot ourselves on 15/16 (no failover column), a non-failover slot, or when the standby does not sync', () => {
    expect(serverSyncSkip({ name: 'a', failover: null }, { syncReplicationSlots: false }, null)).toBeNull();
    expect(serverSyncSkip({ name: 'b', failover: false }, { syncReplicationSlots: true }, { synced: false })).toBeNull();
    expect(serverSyncSkip({ name: 'c', failover: true }, { syncReplicationSlots: false }, null)).toBeNull();
  });
});
