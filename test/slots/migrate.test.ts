/**
 * A logical slot survives a kill -9 of the primary and a promote: synced to the standby ahead of
 * time, migrated, and a test_decoding consumer resumes on the new primary with nothing missing.
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startAgent, stopAgents } from '../support/agents.js';
import { editSlotState } from '../../src/formats/replslot.js';
import { cleanupAll, PgCluster } from '../harness/cluster.js';
import { pgha } from '../support/cli.js';

const TOKEN = 'slots-token-0123456789';
afterAll(async () => {
  await stopAgents();
  await cleanupAll();
});
const agentFor = (name: string, c: PgCluster) => startAgent(name, c, TOKEN);

/** consume everything the slot has; returns the committed xids in order */
async function consume(c: PgCluster, slot = 'cdc'): Promise<number[]> {
  const rows = await c.rows<{ data: string }>(`SELECT data FROM pg_logical_slot_get_changes('${slot}', NULL, NULL)`);
  return rows.map((r) => /^COMMIT (\d+)/.exec(r.data)).filter((m): m is RegExpExecArray => m !== null).map((m) => Number(m[1]));
}

/** the same through wal2json (format 2): commit actions carry the xid */
async function consumeJson(c: PgCluster, slot = 'cdcjson'): Promise<number[]> {
  const rows = await c.rows<{ data: string }>(`SELECT data FROM pg_logical_slot_get_changes('${slot}', NULL, NULL, 'format-version', '2', 'include-xids', '1')`);
  return rows.map((r) => JSON.parse(r.data) as { action: string; xid?: number }).filter((d) => d.action === 'C').map((d) => d.xid!);
}

function expectExactlyOnceOrTwice(seen: number[], committed: number[]): void {
  const counts = new Map<number, number>();
  for (const x of seen) counts.set(x, (counts.get(x) ?? 0) + 1);
  expect(committed.filter((x) => !counts.has(x))).toEqual([]);
  expect(Math.max(...counts.values())).toBeLessThanOrEqual(2);
}

describe('logical slot across a failover', () => {
  it('is synced, migrated after kill -9 + promote, and the consumer misses nothing', async () => {
    const p = await PgCluster.init({ name: 'sl-p', walSegSizeMB: 1 });
    await p.start();
    await p.sql('CREATE TABLE ev(id serial primary key, xid bigint)');
    await p.sql("SELECT pg_create_logical_replication_slot('cdc', 'test_decoding')");
    await p.sql("SELECT pg_create_logical_replication_slot('cdcjson', 'wal2json')"); // Debian postgresql-15-wal2json
    const s = await p.createStandby({ name: 'sl-s' });
    const pUrl = await agentFor('p', p);
    const sUrl = await agentFor('s', s);

    const sync = await pgha(['slots', 'sync', '--from', pUrl, '--to', sUrl, '--token', TOKEN, '--once', '--json']);
    expect(sync.status, sync.stderr).toBe(0);
    const sr = JSON.parse(sync.stdout);
    expect(sr.restartedStandby).toBe(true);
    expect(sr.slots.map((x: { name: string }) => x.name).sort()).toEqual(['cdc', 'cdcjson']);
    expect(await s.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cdc'")).toBe('1');
    expect(await p.sql(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = '${sr.physicalSlot}' AND active`)).toBe('1');

    const seen: number[] = [];
    const seenJson: number[] = [];
    const write = async (c: PgCluster, n: number) => {
      for (let i = 0; i < n; i++) await c.sql('INSERT INTO ev(xid) VALUES (txid_current())');
    };
    await write(p, 50);
    seen.push(...(await consume(p)));
    seenJson.push(...(await consumeJson(p)));
    await write(p, 30);
    await p.waitForReplay(s);
    // refresh the copy: it moves to the primary's confirmed position, capped at the standby's replay
    const sync2 = await pgha(['slots', 'sync', '--from', pUrl, '--to', sUrl, '--token', TOKEN, '--once', '--json']);
    expect(sync2.status, sync2.stderr).toBe(0);
    expect(JSON.parse(sync2.stdout).slots.map((x: { lagBytes: number }) => x.lagBytes)).toEqual([0, 0]);
    seen.push(...(await consume(p)));
    seenJson.push(...(await consumeJson(p)));
    await write(p, 20); // not consumed before the crash
    await p.waitForReplay(s);
    await p.kill9();
    // the failover path: promote through the agent, which migrates the slots right after
    const promoted = await fetch(`${sUrl}/api/pg/v1/node/promote`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ migrateSlotsFrom: p.dataDir }),
    });
    const pr = (await promoted.json()) as { s: string; slots: { slots: Array<{ name: string; live: unknown }> } };
    expect(promoted.status, JSON.stringify(pr)).toBe(200);
    expect(pr.s).toBe('single');
    expect(pr.slots.slots.map((x) => [x.name, x.live !== null]).sort()).toEqual([['cdc', true], ['cdcjson', true]]);

    const listed = await pgha(['slots', 'list', '--agent', sUrl, '--token', TOKEN, '--json']);
    expect(JSON.parse(listed.stdout).slots.find((x: { name: string }) => x.name === 'cdc').live).not.toBeNull();
    const mig = await pgha(['slots', 'migrate', '--from', p.dataDir, '--to', sUrl, '--token', TOKEN, '--json']);
    expect(mig.status, mig.stderr + mig.stdout).toBe(0);
    const mr = JSON.parse(mig.stdout);
    expect(mr.slots.map((x: { name: string; source: string; live: unknown }) => [x.name, x.source, x.live !== null]).sort()).toEqual([
      ['cdc', 'old-primary', true],
      ['cdcjson', 'old-primary', true],
    ]);

    // the consumer resumes on the new primary
    seen.push(...(await consume(s)));
    seenJson.push(...(await consumeJson(s)));
    await write(s, 25);
    seen.push(...(await consume(s)));
    seenJson.push(...(await consumeJson(s)));
    const committed = (await s.rows<{ xid: string }>('SELECT xid::text FROM ev ORDER BY id')).map((r) => Number(r.xid));
    expect(committed.length).toBe(125);
    // nothing missing; duplicates only for the window after the last confirmed position, at most twice
    expectExactlyOnceOrTwice(seen, committed);
    expectExactlyOnceOrTwice(seenJson, committed);
    expect(await s.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cdc'")).toBe('1');

    // refusals change nothing: corrupt file, different cluster, collision, WAL gone, catalog_xmin unprotected
    const fake = (name: string, mutate: (state: Buffer) => Buffer, control = join(p.dataDir, 'global', 'pg_control')) => {
      const dir = join(p.root, name);
      mkdirSync(join(dir, 'global'), { recursive: true });
      mkdirSync(join(dir, 'pg_replslot', 'cdc'), { recursive: true });
      copyFileSync(control, join(dir, 'global', 'pg_control'));
      writeFileSync(join(dir, 'pg_replslot', 'cdc', 'state'), mutate(readFileSync(join(p.dataDir, 'pg_replslot', 'cdc', 'state'))));
      return dir;
    };
    const before = await s.rows('SELECT slot_name, restart_lsn::text, confirmed_flush_lsn::text FROM pg_replication_slots ORDER BY 1');
    const refuse = async (from: string, re: RegExp) => {
      const r = await pgha(['slots', 'migrate', '--from', from, '--to', sUrl, '--token', TOKEN, '--json']);
      expect(r.status, r.stderr + r.stdout).toBe(1);
      expect(JSON.parse(r.stdout).reason).toMatch(re);
    };
    await refuse(fake('bad-crc', (b) => ((b[100] ^= 1), b)), /corrupt slot state.*checksum mismatch/);
    const stranger = await PgCluster.init({ name: 'sl-x', walSegSizeMB: 1 });
    await refuse(fake('stranger', (b) => b, join(stranger.dataDir, 'global', 'pg_control')), /different system identifier/);
    await refuse(fake('old-wal', (b) => editSlotState(b, { restartLsn: 0x100n, catalogXmin: 3 })), /not on|no longer protected/);
    await refuse(fake('xmin', (b) => editSlotState(b, { catalogXmin: 3 })), /catalog_xmin 3 is no longer protected/);
    await s.sql("SELECT pg_create_physical_replication_slot('other')");
    await refuse(
      fake('collide', (b) => {
        const other = Buffer.from(b);
        other.fill(0, 16, 16 + 64);
        other.write('other', 16);
        return editSlotState(other, {}, { allowBadChecksum: true });
      }),
      /a different slot of that name exists/,
    );
    expect(await s.rows('SELECT slot_name, restart_lsn::text, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name <> \'other\' ORDER BY 1')).toEqual(before);
  });

  it('a planned switchover loses nothing and repeats nothing', async () => {
    const p = await PgCluster.init({ name: 'sw-p', walSegSizeMB: 1 });
    await p.start();
    await p.sql('CREATE TABLE ev(id serial primary key, xid bigint)');
    await p.sql("SELECT pg_create_logical_replication_slot('cdc', 'test_decoding')");
    const s = await p.createStandby({ name: 'sw-s' });
    const pUrl = await agentFor('p2', p);
    const sUrl = await agentFor('s2', s);
    expect((await pgha(['slots', 'sync', '--from', pUrl, '--to', sUrl, '--token', TOKEN, '--once'])).status).toBe(0);
    const seen: number[] = [];
    for (let i = 0; i < 40; i++) await p.sql('INSERT INTO ev(xid) VALUES (txid_current())');
    seen.push(...(await consume(p)));
    await p.waitForReplay(s);
    p.stop('fast'); // switchover: the old primary's slot file is final
    await s.promote();
    const mig = await pgha(['slots', 'migrate', '--from', pUrl, '--to', sUrl, '--token', TOKEN, '--json']);
    // the old primary's agent still answers (its server is stopped, its files are readable)
    expect(mig.status, mig.stderr + mig.stdout).toBe(0);
    expect(JSON.parse(mig.stdout).slots[0]).toMatchObject({ name: 'cdc', source: 'old-primary' });
    for (let i = 0; i < 15; i++) await s.sql('INSERT INTO ev(xid) VALUES (txid_current())');
    seen.push(...(await consume(s)));
    const committed = (await s.rows<{ xid: string }>('SELECT xid::text FROM ev ORDER BY id')).map((r) => Number(r.xid));
    expect(seen).toEqual(committed);
  });
});
