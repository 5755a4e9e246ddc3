/**
 * PostgreSQL 17+'s own slot synchronisation preferred where the server has it (embedded 17 and 18):
 * the standby runs sync_replication_slots = on (hot_standby_feedback, its physical slot on the primary,
 * synchronized_standby_slots there). `pgha slots sync` leaves the failover slot to the server's
 * slotsync worker (skipped, with the reason) and still copies a slot without failover itself; after
 * kill -9 of the primary and a promote, `pgha slots migrate` finds the server's copy (synced) already
 * current, and a test_decoding consumer continues on the new primary without missing a change.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { cleanupAll, PgCluster, waitFor } from '../harness/cluster.js';
import { embeddedPostgres } from '../harness/embedded.js';
import { startAgent, stopAgents } from '../support/agents.js';
import { pgha } from '../support/cli.js';

const TOKEN = 'slotsync18-token-0123456789';
/** the majors to run (default 17 and 18, the ones with slot synchronisation) */
const MAJORS = (process.env.PGHA_SLOTSYNC_MAJORS ?? '17,18').split(',').map(Number);
afterAll(async () => {
  await stopAgents();
  await cleanupAll();
});

async function consume(c: PgCluster, slot: string): Promise<number[]> {
  const rows = await c.rows<{ data: string }>(`SELECT data FROM pg_logical_slot_get_changes('${slot}', NULL, NULL)`);
  return rows.map((r) => /^COMMIT (\d+)/.exec(r.data)).filter((m): m is RegExpExecArray => m !== null).map((m) => Number(m[1]));
}

function expectNoneMissing(seen: number[], committed: number[]): void {
  const counts = new Map<number, number>();
  for (const x of seen) counts.set(x, (counts.get(x) ?? 0) + 1);
  expect(committed.filter((x) => !counts.has(x))).toEqual([]);
  expect(Math.max(...counts.values())).toBeLessThanOrEqual(2);
}

for (const MAJOR of MAJORS) describe(`PostgreSQL ${MAJOR}'s own slot synchronisation`, () => {
  it('sync skips the server-synced failover slot, migrate reports it already current, the consumer misses nothing after kill -9 + promote', async () => {
    const e = embeddedPostgres(MAJOR);
    const p = await PgCluster.init({ name: `ss${MAJOR}-p`, binDir: e.binDir, libDir: e.libDir, walSegSizeMB: 1 });
    await p.start();
    await p.sql('CREATE TABLE ev(id serial primary key, xid bigint)');
    await p.sql("SELECT pg_create_physical_replication_slot('pgha_s', true)");
    p.stop('fast');
    const s = await p.coldStandby({ name: `ss${MAJOR}-s`, slot: 'pgha_s', conf: { sync_replication_slots: 'on', hot_standby_feedback: 'on' } });
    p.writeConf({ synchronized_standby_slots: 'pgha_s' });
    await p.start();
    await s.start();
    await p.sql("SELECT pg_create_logical_replication_slot('cdc', 'test_decoding', false, false, true)"); // failover = true
    await p.sql("SELECT pg_create_logical_replication_slot('plain', 'test_decoding')");
    // the server's slotsync worker makes its copy (persistent once the standby has caught up with it)
    await waitFor(async () => (await s.sql("SELECT synced AND NOT temporary FROM pg_replication_slots WHERE slot_name = 'cdc'")) === 'true', 60_000, 'cdc synced by the server');

    const pUrl = await startAgent('p', p, TOKEN);
    const sUrl = await startAgent('s', s, TOKEN);
    const seen: number[] = [];
    const seenPlain: number[] = [];
    const write = async (c: PgCluster, n: number) => {
      for (let i = 0; i < n; i++) await c.sql('INSERT INTO ev(xid) VALUES (txid_current())');
    };
    await write(p, 30);
    seen.push(...(await consume(p, 'cdc')));
    seenPlain.push(...(await consume(p, 'plain')));
    await p.waitForReplay(s);

    const sync = await pgha(['slots', 'sync', '--from', pUrl, '--to', sUrl, '--token', TOKEN, '--once', '--json']);
    expect(sync.status, sync.stderr).toBe(0);
    const sr = JSON.parse(sync.stdout) as { slots: Array<{ name: string; installed: boolean; skipped: string | null }> };
    const byName = Object.fromEntries(sr.slots.map((x) => [x.name, x]));
    expect(byName.cdc).toMatchObject({ installed: false, skipped: "cdc: synced by the server (pg_replication_slots.synced on the standby)" });
    expect(byName.plain).toMatchObject({ installed: true, skipped: null });
    // the server still owns its copy; ours is an ordinary slot
    expect(await s.rows("SELECT slot_name, synced FROM pg_replication_slots WHERE slot_type = 'logical' ORDER BY 1")).toEqual([
      { slot_name: 'cdc', synced: true },
      { slot_name: 'plain', synced: false },
    ]);
    // the text output says why it was skipped
    const text = await pgha(['slots', 'sync', '--from', pUrl, '--to', sUrl, '--token', TOKEN, '--once']);
    expect(text.status, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/^cdc: .*, skipped: cdc: synced by the server/m);

    await write(p, 20);
    seen.push(...(await consume(p, 'cdc')));
    seenPlain.push(...(await consume(p, 'plain')));
    await write(p, 10); // not consumed before the crash
    await p.waitForReplay(s);
    const confirmed = await p.sql("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'cdc'");
    await waitFor(async () => (await s.sql(`SELECT confirmed_flush_lsn >= '${confirmed}'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'cdc'`)) === 'true', 60_000, 'the server-synced copy reaches the primary\'s confirmed_flush');
    await p.kill9();
    await s.promote();

    const mig = await pgha(['slots', 'migrate', '--from', p.dataDir, '--to', sUrl, '--token', TOKEN, '--json']);
    expect(mig.status, mig.stderr + mig.stdout).toBe(0);
    const mr = JSON.parse(mig.stdout) as { restartedTarget: boolean; slots: Array<{ name: string; source: string; action: string; live: unknown }> };
    expect(mr.slots.find((x) => x.name === 'cdc')).toMatchObject({ source: 'server-synced', action: 'already-current' });
    expect(mr.slots.find((x) => x.name === 'plain')).toMatchObject({ source: 'old-primary' });
    expect(mr.restartedTarget).toBe(false);

    seen.push(...(await consume(s, 'cdc')));
    seenPlain.push(...(await consume(s, 'plain')));
    await write(s, 15);
    seen.push(...(await consume(s, 'cdc')));
    seenPlain.push(...(await consume(s, 'plain')));
    const committed = (await s.rows<{ xid: string }>('SELECT xid::text FROM ev ORDER BY id')).map((r) => Number(r.xid));
    expect(committed.length).toBe(75);
    expectNoneMissing(seen, committed);
    expectNoneMissing(seenPlain, committed);
  }, 180_000);
});
