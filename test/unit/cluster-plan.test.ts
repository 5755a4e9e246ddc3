/**
 * The HA decisions as data, without clusters: which standby a failover may promote (timeline,
 * received LSN, synchronous quorum rules) and what the cluster manager does with member slots and
 * synchronous_standby_names.
 */
import { describe, expect, it } from 'vitest';
import { chooseCandidate, rankStandbys } from '../../proxy/failover/candidates.js';
import { rollForward } from '../../proxy/failover/roll-forward.js';
import { unknownBackend, type BackendState, type SyncRecord } from '../../proxy/health/monitor.js';
import { memberSlotName } from '../../proxy/cluster/members.js';
import { planCluster, synchronousNames, type MemberView } from '../../proxy/cluster/plan.js';
import { conninfoTarget } from '../../proxy/cluster/manager.js';

function node(name: string, over: Partial<BackendState> = {}): BackendState {
  // a healthy streaming-less standby on timeline 2 at 0/5000000, then the test's own changes
  return {
    ...unknownBackend({ host: name.split(':')[0], port: Number(name.split(':')[1] ?? 5432) }),
    name,
    role: 'standby',
    inRecovery: true,
    timeline: 2,
    lsn: '0/5000000',
    receiveLsn: '0/5000000',
    replayLsn: '0/5000000',
    systemId: '42',
    latencyMs: 1,
    streaming: false,
    ...over,
  };
}

const OLD = node('h:1', { role: 'down', inRecovery: false, timeline: 2, failures: 3 });

describe('failover candidates', () => {
  it('ranks by received LSN, then replayed', () => {
    const a = node('h:2', { receiveLsn: '0/6000000', replayLsn: '0/5000000' });
    const b = node('h:3', { receiveLsn: '0/6000000', replayLsn: '0/5800000' });
    const c = node('h:4', { receiveLsn: '0/7000000', replayLsn: '0/4000000' });
    expect(rankStandbys([a, b, c]).map((x) => x.name)).toEqual(['h:4', 'h:3', 'h:2']);
  });

  it('asynchronous: the standby with the most WAL received on the old primary\'s timeline, never one left on an older timeline', () => {
    const behindTli = node('h:2', { timeline: 1, receiveLsn: '0/9000000' });
    const good = node('h:3', { timeline: 2, receiveLsn: '0/6000000' });
    const other = node('h:4', { timeline: 2, receiveLsn: '0/5000000' });
    const c = chooseCandidate(OLD, [OLD, behindTli, good, other], '42', null);
    expect(c).toMatchObject({ zeroLoss: false, refusal: null, candidates: ['h:3', 'h:4'] });
    expect(c.target?.name).toBe('h:3');
  });

  it('skips standbys that fail their checks, are fenced, or belong to another cluster', () => {
    const failing = node('h:2', { failures: 1, receiveLsn: '0/9000000' });
    const fenced = node('h:3', { role: 'fenced', receiveLsn: '0/9000000' });
    const foreign = node('h:4', { systemId: '7', receiveLsn: '0/9000000' });
    const ok = node('h:5');
    expect(chooseCandidate(OLD, [OLD, failing, fenced, foreign, ok], '42', null).target?.name).toBe('h:5');
    expect(chooseCandidate(OLD, [OLD, failing, fenced, foreign], '42', null)).toMatchObject({ target: null, refusal: 'no healthy standby to promote' });
  });

  it('FIRST k (priority): only a sync standby may be promoted, and one answering suffices', () => {
    const sync: SyncRecord = { method: 'priority', k: 1, members: ['h:2'], synchronousStandbyNames: 'FIRST 1 (s2, s3)', at: '', retiring: [] };
    const s2 = node('h:2', { receiveLsn: '0/5000000' });
    const s3 = node('h:3', { receiveLsn: '0/6000000' }); // potential: more WAL, but not what commits waited for
    const c = chooseCandidate(OLD, [OLD, s2, s3], '42', sync);
    expect(c).toMatchObject({ zeroLoss: true, refusal: null });
    expect(c.target?.name).toBe('h:2');
    const gone = chooseCandidate(OLD, [OLD, node('h:2', { failures: 3, role: 'down' }), s3], '42', sync);
    expect(gone.target).toBeNull();
    expect(gone.refusal).toMatch(/zero-loss failover impossible: 0 of the 1 synchronous standbys/);
  });

  it('FIRST k with a sync standby that just left: the one that took over may lack its commits, so both must answer', () => {
    const sync: SyncRecord = { method: 'priority', k: 1, members: ['h:3', 'h:2'], synchronousStandbyNames: 'FIRST 1 (s2, s3)', at: '', retiring: ['h:2'] };
    const s3 = node('h:3', { receiveLsn: '0/5000000' });
    const gone = chooseCandidate(OLD, [OLD, node('h:2', { role: 'down', failures: 3 }), s3], '42', sync);
    expect(gone.target).toBeNull();
    expect(gone.refusal).toMatch(/1 of the 2 synchronous standbys .* 2 needed/);
    expect(chooseCandidate(OLD, [OLD, node('h:2', { receiveLsn: '0/5000100' }), s3], '42', sync).target?.name).toBe('h:2');
  });

  it('ANY k of n (quorum): needs n − k + 1 members answering, then the one with most WAL', () => {
    const sync: SyncRecord = { method: 'quorum', k: 1, members: ['h:2', 'h:3'], synchronousStandbyNames: 'ANY 1 (*)', at: '', retiring: [] };
    const s2 = node('h:2', { receiveLsn: '0/5000000' });
    const s3 = node('h:3', { receiveLsn: '0/5000100' });
    expect(chooseCandidate(OLD, [OLD, s2, s3], '42', sync).target?.name).toBe('h:3');
    // one of the two gone: the other may lack a commit only the missing one acknowledged
    const c = chooseCandidate(OLD, [OLD, s2, node('h:3', { role: 'down', failures: 3 })], '42', sync);
    expect(c.target).toBeNull();
    expect(c.refusal).toMatch(/1 of the 2 synchronous standbys .* 2 needed/);
    // ANY 2 of 3: two answering are enough
    const sync2: SyncRecord = { method: 'quorum', k: 2, members: ['h:2', 'h:3', 'h:4'], synchronousStandbyNames: 'ANY 2 (*)', at: '', retiring: [] };
    expect(chooseCandidate(OLD, [OLD, s2, s3, node('h:4', { role: 'down', failures: 3 })], '42', sync2).target?.name).toBe('h:3');
  });

  it('an operator may name the target; a bad name is refused with the reason', () => {
    const s2 = node('h:2', { receiveLsn: '0/5000000' });
    const s3 = node('h:3', { receiveLsn: '0/6000000' });
    expect(chooseCandidate(OLD, [OLD, s2, s3], '42', null, 'h:2').target?.name).toBe('h:2');
    expect(chooseCandidate(OLD, [OLD, s2, s3], '42', null, 'h:9').refusal).toMatch(/h:9 cannot be promoted: not a backend/);
    expect(chooseCandidate(OLD, [OLD, s2, node('h:3', { timeline: 1 })], '42', null, 'h:3').refusal).toMatch(/timeline 1, behind the primary's 2/);
  });
});

function member(name: string, over: Partial<MemberView> = {}): MemberView {
  return {
    name,
    slot: memberSlotName(name.replace(':', '_')),
    role: 'standby',
    healthy: true,
    upstream: 'p:1',
    streaming: true,
    primarySlotName: null,
    conninfoTarget: 'p:1',
    applicationName: name.replace(':', ''),
    replayLsn: 0x5000000n,
    slots: [],
    synchronousStandbyNames: '',
    ...over,
  };
}

describe('cluster plan', () => {
  const OPTS = { memberSlots: true, synchronousMode: 'off' as const, synchronousCount: 1 };

  it('reads where a primary_conninfo points', () => {
    expect(conninfoTarget("host=10.0.0.1 port=5433 user=rep application_name='n2'")).toBe('10.0.0.1:5433');
    expect(conninfoTarget('user=rep host=db1')).toBe('db1:5432');
    expect(conninfoTarget('postgresql://rep@[::1]:6000/postgres')).toBe('::1:6000');
    expect(conninfoTarget('')).toBeNull();
    expect(conninfoTarget('user=rep')).toBeNull();
    expect(conninfoTarget("host='unterminated")).toBeNull();
  });

  it('slot names are what PostgreSQL accepts', () => {
    expect(memberSlotName('n1')).toBe('pgha_n1');
    expect(memberSlotName('Node-7.example')).toBe('pgha_node_7_example');
    expect(memberSlotName('x'.repeat(100))).toHaveLength(63);
  });

  it('creates member slots on the primary first, points standbys at them the round after', () => {
    const p = member('p:1', { role: 'primary', upstream: null, streaming: false });
    const a = member('a:2');
    const first = planCluster([p, a], OPTS);
    expect(first).toContainEqual(expect.objectContaining({ kind: 'create-slot', on: 'p:1', slot: 'pgha_a_2' }));
    expect(first.find((x) => x.kind === 'set-primary-slot')).toBeUndefined();
    const second = planCluster([{ ...p, slots: [{ name: 'pgha_a_2', active: false, restartLsn: '0/5000000' }] }, a], OPTS);
    expect(second).toContainEqual(expect.objectContaining({ kind: 'set-primary-slot', on: 'a:2', slot: 'pgha_a_2' }));
  });

  it('keeps slots of down members, drops inactive slots of removed ones, never an active one or a foreign name', () => {
    const p = member('p:1', {
      role: 'primary',
      upstream: null,
      slots: [
        { name: 'pgha_a_2', active: true, restartLsn: '0/5000000' },
        { name: 'pgha_down_3', active: false, restartLsn: '0/1000000' },
        { name: 'pgha_removed', active: false, restartLsn: '0/1000000' },
        { name: 'pgha_removed_active', active: true, restartLsn: '0/1000000' },
        { name: 'cdc_physical', active: false, restartLsn: '0/1000000' },
      ],
    });
    const plan = planCluster([p, member('a:2', { primarySlotName: 'pgha_a_2' }), member('down:3', { role: 'down', healthy: false })], OPTS).filter((x) => x.on === 'p:1');
    expect(plan).toEqual([expect.objectContaining({ kind: 'drop-slot', slot: 'pgha_removed' })]);
  });

  it('standbys keep copies of the other members\' slots at their replay position, and drop their own', () => {
    const p = member('p:1', { role: 'primary', upstream: null, slots: [{ name: 'pgha_a_2', active: true, restartLsn: '0/5000000' }] });
    const a = member('a:2', {
      primarySlotName: 'pgha_a_2',
      replayLsn: 0x6000000n,
      slots: [
        { name: 'pgha_p_1', active: false, restartLsn: '0/1000000' },
        { name: 'pgha_a_2', active: false, restartLsn: '0/1000000' },
      ],
    });
    const plan = planCluster([p, a], OPTS).filter((x) => x.on === 'a:2');
    expect(plan).toEqual([
      expect.objectContaining({ kind: 'advance-slot', slot: 'pgha_p_1', to: 0x6000000n }),
      expect.objectContaining({ kind: 'drop-slot', slot: 'pgha_a_2' }),
    ]);
  });

  it('synchronous mode: ANY k of the standbys streaming from the primary; none: asynchronous (on) or blocked (strict)', () => {
    expect(synchronousNames(['s2', 's1', 's1'], 'on', 1)).toBe('ANY 1 ("s1", "s2")');
    expect(synchronousNames(['we"ird'], 'on', 2)).toBe('ANY 1 ("we""ird")');
    expect(synchronousNames([], 'on', 1)).toBe('');
    expect(synchronousNames([], 'strict', 1)).toBe('*');
    const p = member('p:1', { role: 'primary', upstream: null, synchronousStandbyNames: 'ANY 1 ("a2", "b3")' });
    const a = member('a:2');
    const b = member('b:3', { streaming: false });
    const plan = planCluster([p, a, b], { memberSlots: false, synchronousMode: 'on', synchronousCount: 1 });
    expect(plan).toEqual([expect.objectContaining({ kind: 'set-synchronous-standby-names', on: 'p:1', value: 'ANY 1 ("a2")' })]);
    expect(planCluster([{ ...p, synchronousStandbyNames: 'ANY 1 ("a2")' }, a, b], { memberSlots: false, synchronousMode: 'on', synchronousCount: 1 })).toEqual([]);
  });

  it('points a standby that follows another node (stopped during a failover) at the primary', () => {
    const p = member('p:1', { role: 'primary', upstream: null, conninfoTarget: null });
    const stale = member('a:2', { upstream: null, streaming: false, conninfoTarget: 'old:9' });
    const cascading = member('b:3', { upstream: 'a:2', conninfoTarget: 'a:2' });
    const waiting = member('c:4', { upstream: null, streaming: false, conninfoTarget: 'p:1' });
    const plan = planCluster([p, stale, cascading, waiting], { memberSlots: false, synchronousMode: 'off', synchronousCount: 1 });
    expect(plan).toEqual([
      expect.objectContaining({ kind: 'repoint', on: 'a:2', to: 'p:1' }),
      expect.objectContaining({ kind: 'repoint', on: 'b:3', to: 'p:1' }),
    ]);
  });

  it('does nothing without exactly one healthy primary', () => {
    expect(planCluster([member('a:2'), member('b:3')], { ...OPTS, synchronousMode: 'on' })).toEqual([]);
    expect(planCluster([member('p:1', { role: 'primary' }), member('q:2', { role: 'primary' })], OPTS)).toEqual([]);
  });
});

describe('roll forward a recorded decision (several proxies on etcd)', () => {
  const P = node('h:1', { role: 'primary', inRecovery: false });
  const S2 = node('h:2');
  const S3 = node('h:3');
  const base = { clusterSystemId: '42', leaseHolder: null };

  it('nothing to do when the recorded node is the primary, nothing is recorded, or it is unknown', () => {
    expect(rollForward({ ...base, recorded: 'h:1', backends: [P, S2, S3] })).toMatchObject({ action: 'none' });
    expect(rollForward({ ...base, recorded: null, backends: [P, S2, S3] })).toMatchObject({ action: 'none', why: 'no primary recorded on etcd' });
    expect(rollForward({ ...base, recorded: 'h:9', backends: [P, S2] }).action).toBe('none');
    expect(rollForward({ ...base, recorded: 'h:2', backends: [node('h:2', { role: 'unknown', inRecovery: null })] }).action).toBe('none');
  });

  it('a recorded standby (the decider died before promoting it) is promoted; the lease holder and live primaries are named', () => {
    const deadOld = node('h:1', { role: 'down', inRecovery: false, failures: 3 });
    expect(rollForward({ ...base, recorded: 'h:2', backends: [deadOld, S2, S3] })).toMatchObject({ action: 'promote', target: 'h:2', fence: [], leaseHolder: null });
    // the old primary still holds its primary lease: named, to be waited for
    expect(rollForward({ ...base, recorded: 'h:2', backends: [deadOld, S2, S3], leaseHolder: 'h:1' })).toMatchObject({ action: 'promote', leaseHolder: 'h:1' });
    // the recorded node itself named as holder blocks nothing
    expect(rollForward({ ...base, recorded: 'h:2', backends: [deadOld, S2, S3], leaseHolder: 'h:2' })).toMatchObject({ action: 'promote', leaseHolder: null });
    // the old primary still answers as one (the proxy fenced it, it did not stop): it is fenced first
    const liveOld = node('h:1', { role: 'fenced', fenced: true, inRecovery: false });
    expect(rollForward({ ...base, recorded: 'h:2', backends: [liveOld, S2, S3], leaseHolder: 'h:1' })).toMatchObject({ action: 'promote', fence: ['h:1'], leaseHolder: 'h:1' });
  });

  it('a recorded standby that fails checks, is fenced or is of another system waits', () => {
    expect(rollForward({ ...base, recorded: 'h:2', backends: [node('h:2', { failures: 1 }), S3] }).action).toBe('wait');
    expect(rollForward({ ...base, recorded: 'h:2', backends: [node('h:2', { role: 'fenced', fenced: true, reason: 'operator' }), S3] })).toMatchObject({ action: 'wait', why: 'the recorded primary h:2 is fenced (operator)' });
    expect(rollForward({ ...base, recorded: 'h:2', backends: [node('h:2', { systemId: '7' }), S3] }).action).toBe('wait');
  });

  it('a recorded node that is down gets an ordinary failover (a new decision)', () => {
    expect(rollForward({ ...base, recorded: 'h:2', backends: [node('h:1', { role: 'down', failures: 3 }), node('h:2', { role: 'down', failures: 3 }), S3] })).toMatchObject({ action: 'failover', from: 'h:2' });
  });
});
