import { afterAll, describe, expect, it } from 'vitest';
import { cleanupAll, PgCluster, processAlive } from './harness/cluster.js';

afterAll(cleanupAll);

describe('test harness', () => {
  it('runs a primary and a standby, promotes, kills -9, and leaves no process behind', async () => {
    const p = await PgCluster.init({ name: 'h1', walSegSizeMB: 1 });
    await p.start();
    expect(await p.sql('SELECT 1 + 1')).toBe('2');
    await p.sql('CREATE TABLE t(a int)');
    await p.sql('INSERT INTO t SELECT generate_series(1, 100)');
    const s = await p.createStandby({ name: 'h1s' });
    await p.waitForReplay(s);
    expect(await s.sql('SELECT count(*) FROM t')).toBe('100');
    await s.promote();
    expect(await s.sql('SELECT pg_is_in_recovery()')).toBe('false');
    const pids = [p.pid!, s.pid!];
    await p.kill9();
    expect(p.isRunning()).toBe(false);
    await s.cleanup();
    await p.cleanup();
    for (const pid of pids) expect(processAlive(pid)).toBe(false);
  });
});
