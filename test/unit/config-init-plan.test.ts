/**
 * `pgha init`'s planner (src/init/plan.ts) as pure data: what it refuses, the settings and
 * pg_hba lines it gives the nodes, the roles, slots and daemons — no cluster needed.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadClusterConfig } from '../../src/config/load.js';
import { planInit, PWFILE, type DirState } from '../../src/init/plan.js';

const dir = mkdtempSync(join(tmpdir(), 'pgha-plan-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

function plan(yaml: string, dirState: Record<string, DirState> = {}, localAddresses: string[] = ['127.0.0.1', '10.0.0.1', '10.0.0.2']) {
  const f = join(dir, `p${++n}.yaml`);
  writeFileSync(f, yaml);
  const cluster = loadClusterConfig(f);
  return planInit({ cluster, configFile: f, dirState, localAddresses, pgha: { argv: ['/x/node', '/x/pgha.js'], shown: 'pgha' }, proxy: { argv: ['/x/node', '/x/proxy.js'], shown: 'pgha-proxy' } });
}

const nodes = (hosts: string[]) =>
  `nodes:\n${hosts.map((h, i) => `  - { name: n${i + 1}, dataDir: /srv/pg/n${i + 1}, host: "${h}", pgPort: ${5432 + i}, agent: { listen: "${h}:${8010 + i}" } }`).join('\n')}\n`;

const TRUST = `postgres: { auth: trust }\n${nodes(['127.0.0.1', '127.0.0.1', '127.0.0.1'])}proxies:\n  - { name: p1, listen: "127.0.0.1:6432", admin: "127.0.0.1:8008" }\n`;
const SCRAM = `postgres:
  auth: scram-sha-256
  superuserPasswordFile: /etc/pgha/su
  replication: { user: replicator, passwordFile: /etc/pgha/repl }
  dataChecksums: true
  walLevel: replica
  parameters: { max_connections: 300, hot_standby_feedback: false }
  hba: ["host all all 10.9.0.0/16 scram-sha-256"]
  primary: n2
${nodes(['10.0.0.1', '10.0.0.2'])}`;

describe('init plan', () => {
  it('trust on loopback: HA settings, loopback pg_hba, slots for the standbys, the daemons from the file', () => {
    const p = plan(TRUST);
    expect(p.refusals).toEqual([]);
    expect(p.nodes.map((x) => [x.name, x.role, x.slot])).toEqual([['n1', 'primary', 'pgha_n1'], ['n2', 'standby', 'pgha_n2'], ['n3', 'standby', 'pgha_n3']]);
    expect(p.settings).toMatchObject({ wal_level: 'logical', wal_log_hints: 'on', hot_standby: 'on', max_wal_senders: 10, max_replication_slots: 10 });
    expect(p.settings).not.toHaveProperty('password_encryption');
    expect(p.nodes[1].nodeSettings).toEqual({ port: 5433, listen_addresses: '127.0.0.1', cluster_name: 'n2', unix_socket_directories: '/srv/pg' });
    expect(p.initdbArgs).toEqual(['-D', '/srv/pg/n1', '-U', 'postgres', '-E', 'UTF8', '--locale=C', '--auth=trust']);
    expect(p.hba.slice(1)).toEqual([
      'local   all          all            trust',
      'local   replication  all            trust',
      'host    all          all          127.0.0.1/32  trust',
      'host    replication  postgres  127.0.0.1/32  trust',
      'host    all          all          ::1/128  trust',
      'host    replication  postgres  ::1/128  trust',
    ]);
    expect(p.slots).toEqual(['pgha_n2', 'pgha_n3']);
    expect(p.sql).toEqual([]);
    expect(p.daemons.map((d) => [d.unit, d.argv.join(' ')])).toEqual([
      ['pgha-agent@n1.service', `/x/node /x/pgha.js agent --config ${p.configFile} --name n1`],
      ['pgha-agent@n2.service', `/x/node /x/pgha.js agent --config ${p.configFile} --name n2`],
      ['pgha-agent@n3.service', `/x/node /x/pgha.js agent --config ${p.configFile} --name n3`],
      ['pgha-proxy@p1.service', `/x/node /x/proxy.js --config ${p.configFile} --name p1`],
    ]);
    expect(p.daemons[3].command).toBe(`pgha-proxy --config ${p.configFile} --name p1`);
  });

  it('passwords, a replication role of its own, data checksums, the primary chosen, the operator\'s parameters win', () => {
    const p = plan(SCRAM);
    expect(p.refusals).toEqual([]);
    expect(p.primary).toBe('n2');
    expect(p.nodes.map((x) => x.name)).toEqual(['n2', 'n1']);
    expect(p.initdbArgs).toEqual(['-D', '/srv/pg/n2', '-U', 'postgres', '-E', 'UTF8', '--locale=C', '--auth=trust', `--pwfile=${PWFILE}`, '--data-checksums']);
    expect(p.settings).not.toHaveProperty('wal_log_hints');
    expect(p.settings).toMatchObject({ wal_level: 'replica', password_encryption: 'scram-sha-256', max_connections: 300, hot_standby_feedback: 'off' });
    expect(p.nodes[0].nodeSettings.listen_addresses).toBe('10.0.0.2,127.0.0.1');
    expect(p.sql).toEqual(['CREATE ROLE "replicator" WITH LOGIN REPLICATION']);
    expect(p.hba).toContain('local   all          all            peer');
    expect(p.hba).toContain('host    replication  replicator  10.0.0.1/32  scram-sha-256');
    expect(p.hba).toContain('host    replication  postgres  10.0.0.2/32  scram-sha-256');
    expect(p.hba).toContain('host    all          all          10.0.0.1/32  scram-sha-256');
    expect(p.hba[p.hba.length - 1]).toBe('host all all 10.9.0.0/16 scram-sha-256');
    expect(p.hba.join('\n')).not.toMatch(/trust/);
    expect(p.notes.join('\n')).toMatch(/~postgres\/\.pgpass/);
    expect(p.slots).toEqual(['pgha_n1']);
  });

  it('refuses a data directory in use and a node on another machine', () => {
    const p = plan(SCRAM, { '/srv/pg/n1': 'not-empty', '/srv/pg/n2': 'empty' }, ['127.0.0.1', '10.0.0.2']);
    expect(p.refusals).toEqual([
      'nodes[0] n1: data directory /srv/pg/n1 exists and is not empty',
      'nodes[0] n1: 10.0.0.1 is not an address of this machine (pgha init builds every node here, where all the data directories are)',
    ]);
    expect(plan(TRUST, { '/srv/pg/n3': 'not-a-directory' }).refusals).toEqual(['nodes[2] n3: /srv/pg/n3 exists and is not a directory']);
  });

  it('refuses two names that make one slot', () => {
    const p = plan(`postgres: { auth: trust }\nnodes:\n  - { name: db-1, dataDir: /a, pgPort: 1, agent: { listen: "127.0.0.1:2" } }\n  - { name: db_1, dataDir: /b, pgPort: 3, agent: { listen: "127.0.0.1:4" } }\n`);
    expect(p.refusals).toEqual(['nodes db-1 and db_1 would stream through the same slot pgha_db_1: give them names that differ in more than case and punctuation']);
  });
});
