/**
 * `pgha demo` as an operator runs it: the built CLI as a child process. One full run with --json
 * (exit 0, nothing lost, every phase timed and in order, the old primary rejoined by follow or
 * rewind, the logical slot live on the new primary, and afterwards no process it started alive and
 * its temp dir gone); one run interrupted by SIGINT while it is bringing the cluster up, which must
 * leave nothing behind either.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { childPids, processAlive } from '../../src/pg/instance.js';
import { PGHA, pgha } from '../support/cli.js';

interface DemoJson {
  ok: boolean;
  acknowledged: number;
  lost: number;
  phases: { detectMs: number; promoteMs: number; rerouteMs: number; firstWriteMs: number; rejoinMs: number; slotMs: number };
  failover: { fromNode: string; toNode: string; via: string };
  rejoin: { path: string; node: string };
  slot: { name: string; node: string; onNewPrimary: boolean; confirmedFlush: string | null; decodedAcknowledged: number };
  writes: { beforeKill: number; afterKill: number };
  checks: Array<{ name: string; ok: boolean; detail: string }>;
  nodes: Array<{ name: string; role: string; rows: number; counter: number; missing: number; pids: { postgres: number[]; agent: number } }>;
  proxy: { pid: number };
  pids: { postgres: number[]; agents: number[]; proxy: number; all: number[] };
  tempDir: string;
  kept: boolean;
}

/** processes still alive whose command line names `dir` (zombies count as dead) */
function mentioning(dir: string): number[] {
  return readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e))
    .map(Number)
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir) && processAlive(pid);
      } catch {
        return false;
      }
    });
}

function tree(pid: number): number[] {
  const out: number[] = [];
  const queue = [pid];
  while (queue.length) for (const c of childPids(queue.shift()!)) out.push(c), queue.push(c);
  return out;
}

describe('pgha demo', () => {
  it('fails over, rejoins, keeps every acknowledged write and the slot, and leaves nothing behind', async () => {
    const t0 = Date.now();
    const r = await pgha(['demo', '--json']);
    const took = Date.now() - t0;
    expect(r.status, `${r.stderr}\n${r.stdout}`).toBe(0);
    const d = JSON.parse(r.stdout) as DemoJson;
    console.log(`pgha demo: ${took} ms; phases ${JSON.stringify(d.phases)}; ${d.acknowledged} acknowledged; rejoin ${d.rejoin.path}`);

    expect(d.ok).toBe(true);
    expect(d.checks.filter((c) => !c.ok)).toEqual([]);
    expect(d.lost).toBe(0);
    expect(d.acknowledged).toBeGreaterThan(100);
    expect(d.writes.beforeKill).toBeGreaterThan(0);
    expect(d.writes.afterKill).toBeGreaterThan(0);

    const p = d.phases;
    for (const [k, v] of Object.entries(p)) {
      expect(typeof v, k).toBe('number');
      expect(v, k).toBeGreaterThan(0);
    }
    expect(p.detectMs).toBeLessThanOrEqual(p.promoteMs);
    expect(p.promoteMs).toBeLessThanOrEqual(p.rerouteMs);
    expect(p.rerouteMs).toBeLessThanOrEqual(p.firstWriteMs);
    expect(p.rejoinMs).toBeGreaterThanOrEqual(p.promoteMs);
    expect(p.slotMs).toBeGreaterThanOrEqual(p.promoteMs);

    expect(d.failover.fromNode).toBe('n1');
    expect(['n2', 'n3']).toContain(d.failover.toNode);
    expect(['follow', 'rewind']).toContain(d.rejoin.path);
    expect(d.slot).toMatchObject({ name: 'demo_cdc', node: d.failover.toNode, onNewPrimary: true });
    expect(d.slot.confirmedFlush).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    expect(d.slot.decodedAcknowledged).toBe(d.acknowledged);

    // the end state: the new primary, the other two streaming standbys, every row on each
    expect(d.nodes.map((n) => [n.name, n.role])).toEqual(['n1', 'n2', 'n3'].map((n) => [n, n === d.failover.toNode ? 'primary' : 'standby']));
    for (const n of d.nodes) {
      expect(n.missing, n.name).toBe(0);
      expect(n.counter, n.name).toBe(n.rows);
      expect(n.rows, n.name).toBeGreaterThanOrEqual(d.acknowledged);
    }

    // nothing it started is alive, the temp dir is gone
    const reported = [...d.pids.all, ...d.pids.postgres, ...d.pids.agents, d.pids.proxy, d.proxy.pid, ...d.nodes.flatMap((n) => [...n.pids.postgres, n.pids.agent])];
    expect(d.pids.postgres.length).toBeGreaterThanOrEqual(4); // 3 started by the demo, n1 again by its agent
    expect(d.pids.agents).toHaveLength(3);
    expect(reported.filter((pid) => typeof pid !== 'number' || pid <= 0)).toEqual([]);
    expect(reported.filter(processAlive)).toEqual([]);
    expect(d.kept).toBe(false);
    expect(existsSync(d.tempDir)).toBe(false);
    expect(mentioning(d.tempDir)).toEqual([]);
  }, 90_000);

  it('on SIGINT mid-way stops every process it started and removes its temp dir', async () => {
    const child = spawn(process.execPath, [PGHA, 'demo', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    // mid-way: the proxy is up and the slot copies are being installed (standbys restarted by their agents)
    const midway = new Promise<void>((resolve, reject) => {
      child.stderr.on('data', (b: Buffer) => {
        stderr += b.toString();
        if (/pgha-proxy: clients on/.test(stderr)) resolve();
      });
      void exited.then(() => reject(new Error(`the demo ended before the proxy was up: ${stderr}`)));
    });
    await midway;
    const dir = /under (\S+)/.exec(stderr)?.[1];
    expect(dir, stderr).toMatch(/pgha-demo-/);
    // what is running now: the demo's process tree and the postmasters its data directories name
    const postmasters = ['n1', 'n2', 'n3']
      .map((n) => join(dir!, n, 'data', 'postmaster.pid'))
      .filter(existsSync)
      .map((f) => Number(readFileSync(f, 'utf8').split('\n')[0]));
    const before = [...new Set([...tree(child.pid!), ...postmasters, ...postmasters.flatMap(tree)])];
    expect(before.length).toBeGreaterThan(6);

    const t0 = Date.now();
    child.kill('SIGINT');
    const end = await exited;
    console.log(`SIGINT: the demo exited ${end.code ?? end.signal} after ${Date.now() - t0} ms; ${before.length} processes were running`);
    expect(end.code, stderr).toBe(130);
    expect(stdout).toBe('');
    expect(stderr).toMatch(/interrupted; every process it started is stopped; removed /);
    expect(before.filter(processAlive)).toEqual([]);
    expect(existsSync(dir!)).toBe(false);
    expect(mentioning(dir!)).toEqual([]);
  }, 60_000);
});
