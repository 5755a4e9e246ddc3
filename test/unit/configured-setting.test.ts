/** Settings read from a data directory's own configuration files (what rejoin and the agent use when the server is down). */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { configuredSetting } from '../../src/pg/instance.js';

describe('configuredSetting', () => {
  it('postgresql.auto.conf wins, the last line wins, quotes and comments as PostgreSQL reads them', () => {
    const d = mkdtempSync(join(tmpdir(), 'pgha-conf-'));
    writeFileSync(join(d, 'postgresql.conf'), "port = 5433\n#cluster_name = 'commented'\ncluster_name = 'n''1' # the node\ncluster_name = 'n2'\nlisten_addresses = '*'\n");
    writeFileSync(join(d, 'postgresql.auto.conf'), '# Do not edit\nport=6000\n');
    expect(configuredSetting(d, 'port')).toBe('6000');
    expect(configuredSetting(d, 'cluster_name')).toBe('n2');
    expect(configuredSetting(d, 'listen_addresses')).toBe('*');
    expect(configuredSetting(d, 'wal_level')).toBeNull();
    writeFileSync(join(d, 'postgresql.conf'), "cluster_name = 'it''s'\n");
    expect(configuredSetting(d, 'cluster_name')).toBe("it's");
    expect(configuredSetting(mkdtempSync(join(tmpdir(), 'pgha-conf-')), 'port')).toBeNull();
  });
});
