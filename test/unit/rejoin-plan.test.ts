/**
 * The rejoin plan as data, without clusters: which path, which files come from where, what runs in
 * what order, and what happens when pg_rewind fails — decided before anything is touched.
 */
import { describe, expect, it } from 'vitest';
import type { TimelineHistory } from '../../src/formats/timeline-history.js';
import { decide, describeStep, planRejoin, reclonePlan, rewindSegments, withTools } from '../../src/rejoin/plan.js';

const MB16 = 16 * 1024 * 1024;
const tl1: TimelineHistory = { timeline: 1, entries: [] };
/** the source promoted at 0/3000060 onto timeline 2 */
const tl2: TimelineHistory = { timeline: 2, entries: [{ parentTimeline: 1, switchpoint: 0x3000060n, reason: 'no recovery target specified' }] };
const local = { systemId: 7n, pgVersion: 15, timeline: 1, history: tl1, endLsn: 0x5000100n };
const facts = { allowReclone: false, slot: 'pgha_n1', missingHistories: ['00000002.history'], controlState: 'shut down' };

describe('rejoin plan', () => {
  it('follows without a rewind when the node stopped before the switch', () => {
    const plan = planRejoin(decide({ ...local, endLsn: 0x3000000n }, { systemId: 7n, pgVersion: 15, history: tl2, valid: true }), facts);
    expect(plan.path).toBe('follow');
    expect(plan.refusal).toBeNull();
    expect(plan.steps.map((s) => s.step)).toEqual(['fetch-history', 'write-standby-config', 'start-and-stream']);
    expect(plan.steps[1]).toEqual({ step: 'write-standby-config', slot: 'pgha_n1' });
  });

  it('rewinds a node that wrote past the fork: lost transactions first, then the WAL pg_rewind reads, then pg_rewind', () => {
    const decision = decide(local, { systemId: 7n, pgVersion: 15, history: tl2, valid: false });
    expect(decision).toMatchObject({ path: 'rewind', forkLsn: 0x3000060n, forkTimeline: 1 });
    const plan = planRejoin(decision, { ...facts, missingWal: ['000000010000000000000002'], walSources: ['https://s2:8008', 'https://s3:8008'] });
    expect(plan.steps.map((s) => s.step)).toEqual([
      'report-lost-transactions',
      'fetch-history',
      'fetch-wal',
      'checkpoint-source',
      'pg_rewind',
      'write-standby-config',
      'start-and-stream',
    ]);
    expect(plan.steps[2]).toEqual({ step: 'fetch-wal', names: ['000000010000000000000002'], from: ['https://s2:8008', 'https://s3:8008'] });
    expect(plan.onRewindFailure).toBe('refuse');
    expect(planRejoin(decision, { ...facts, allowReclone: true }).onRewindFailure).toBe('reclone');
  });

  it('recovers a node that crashed before pg_rewind reads it, and fetches nothing already here', () => {
    const decision = decide(local, { systemId: 7n, pgVersion: 15, history: tl2, valid: false });
    const plan = planRejoin(decision, { ...facts, missingHistories: [], controlState: 'in production', missingWal: [] });
    expect(plan.steps.map((s) => s.step)).toEqual(['report-lost-transactions', 'checkpoint-source', 'crash-recovery', 'pg_rewind', 'write-standby-config', 'start-and-stream']);
    expect(describeStep(plan.steps[2])).toMatch(/pg_control says in production/);
  });

  it('re-clones another cluster only when allowed, and says how to allow it', () => {
    const decision = decide(local, { systemId: 8n, pgVersion: 15, history: tl2, valid: false });
    const refused = planRejoin(decision, facts);
    expect(refused.path).toBe('reclone');
    expect(refused.refusal).toMatch(/different system identifier.*run again with --allow-reclone/);
    const allowed = planRejoin(decision, { ...facts, allowReclone: true });
    expect(allowed.refusal).toBeNull();
    expect(allowed.steps.map((s) => s.step)).toEqual(['move-aside', 'base-backup', 'write-standby-config', 'start-and-stream']);
    expect(reclonePlan('no WAL', { allowReclone: true, slot: null }).steps[1]).toEqual({ step: 'base-backup', slot: null });
  });

  it('pg_rewind reads from the earlier of the checkpoint before the fork and pg_control\'s REDO point to the end', () => {
    expect(rewindSegments({ checkpointRedo: 0x2000028n, controlRedo: 0x4000028n, endLsn: 0x5000100n, segmentSize: MB16 })).toEqual([2n, 3n, 4n, 5n]);
    expect(rewindSegments({ checkpointRedo: 0x2000028n, controlRedo: 0x1000028n, endLsn: 0x2ffffffn, segmentSize: MB16 })).toEqual([1n, 2n]);
  });

  it('a build without pg_rewind (embedded PostgreSQL 16-18): a one-line refusal naming the tool, or a re-clone when allowed and pg_basebackup is there', () => {
    const decision = decide(local, { systemId: 7n, pgVersion: 15, history: tl2, valid: false });
    const bin = '/opt/pg18/bin';
    const only = (...tools: string[]) => (t: string) => tools.includes(t);
    const refused = withTools(planRejoin(decision, { ...facts, missingWal: [] }), bin, only('postgres', 'pg_ctl', 'initdb'), facts);
    expect(refused.path).toBe('rewind');
    expect(refused.refusal).toMatch(/^a rewind is needed \(.+\) but pg_rewind is not in \/opt\/pg18\/bin \(this PostgreSQL build ships without it\): install it or point --pg-bin at a directory that has it$/);
    expect(refused.refusal).not.toContain('\n');
    const allow = { ...facts, allowReclone: true };
    const recloned = withTools(planRejoin(decision, { ...allow, missingWal: [] }), bin, only('pg_basebackup'), allow);
    expect([recloned.path, recloned.refusal]).toEqual(['reclone', null]);
    const neither = withTools(planRejoin(decision, { ...allow, missingWal: [] }), bin, only(), allow);
    expect(neither.refusal).toMatch(/^a re-clone is needed \(a rewind is needed .*pg_rewind is not in .*\) but pg_basebackup is not in \/opt\/pg18\/bin/);
    // the follow path needs neither tool
    const follow = planRejoin(decide(local, { systemId: 7n, pgVersion: 15, history: tl2, valid: true }), facts);
    expect(withTools(follow, bin, only(), facts)).toBe(follow);
  });
});
