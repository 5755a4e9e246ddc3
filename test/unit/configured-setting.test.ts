/** Settings read from a data directory's own configuration files (what rejoin and the agent use when the server is down). */
import { chmodSync, chownSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { configuredSetting, serverLogFile } from '../../src/pg/instance.js';

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

describe('serverLogFile', () => {
  it('beside the data directory when its owner may write there, else inside it', () => {
    const parent = mkdtempSync(join(tmpdir(), 'pgha-log-'));
    const data = join(parent, 'main');
    mkdirSync(data);
    expect(serverLogFile(data)).toBe(join(parent, 'main.server.log'));
    if (process.getuid?.() === 0) {
      // a parent only root may write to, a data directory owned by someone else: inside
      chmodSync(parent, 0o755);
      chownSync(data, 65534, 65534);
      expect(serverLogFile(data)).toBe(join(data, 'pgha-server.log'));
    }
  });
});
