/** `pgha status|switchover|failover` against a proxy that is not there: exit 2 and one line naming what failed. */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { freePort, waitFor } from '../harness/cluster.js';
import { PGHA, pgha } from '../support/cli.js';

describe('pgha status / switchover / failover without a proxy', () => {
  it('exit 2 with the address and the reason, never "fetch failed"', async () => {
    const port = await freePort();
    for (const args of [['status'], ['switchover'], ['failover', '--to', '127.0.0.1:5432']]) {
      const r = await pgha([...args, '--proxy', `127.0.0.1:${port}`], { PGHA_TOKEN: 'x'.repeat(20) });
      expect(r.status, args[0]).toBe(2);
      const lines = r.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toBe(`pgha: error: cannot reach the pgha-proxy admin port at http://127.0.0.1:${port}/${args[0] === 'status' ? 'status' : args[0]}: ECONNREFUSED`);
    }
  });

  it('status --watch keeps asking until interrupted', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, [PGHA, 'status', '--proxy', `http://127.0.0.1:${port}`, '--watch', '0.2']);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const refreshes = () => out.match(/every 0\.2 s, Ctrl-C to stop/g)?.length ?? 0;
    await waitFor(async () => refreshes() >= 3, 15_000, 'three refreshes of pgha status --watch');
    child.kill('SIGINT');
    await new Promise((r) => child.once('close', r));
    expect(out.match(/every 0\.2 s, Ctrl-C to stop/g)!.length).toBeGreaterThanOrEqual(3);
    expect(out).toMatch(/ECONNREFUSED/);
  });

  it('--help of each says where the token comes from', async () => {
    for (const c of ['switchover', 'failover']) {
      const r = await pgha([c, '--help']);
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/--token-file, else \$PGHA_ADMIN_TOKEN, else \$PGHA_TOKEN/);
    }
  });
});
