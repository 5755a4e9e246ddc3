/**
 * `pgha demo` from start to end: bring the cluster up, write through the proxy, kill the primary's
 * postmaster with SIGKILL, watch the phases, check every acknowledged write on every node, stop
 * everything it started (by PID) and remove its temp dir. Interruptible at any point (interrupt()).
 */
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { ProxyStatus } from '../../proxy/server.js';
import { bringUp, notePostmasters, planCluster, PGHA_CLI, PROXY_CLI, sql, type DemoCluster, type DemoNode } from './cluster.js';
import { DemoError, descendants, pidsMentioning, postmasterPid, processAlive, ProcessSet, stopPids } from './processes.js';
import { SlotKeeper } from './slot.js';
import { PHASES, watchFailover, type Phase, type Timeline } from './timeline.js';
import { type Check, type DemoResult, type NodeReport } from './summary.js';
import { Workload, type NodeCheck } from './workload.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface DemoOptions {
  binDir: string;
  keep: boolean;
  writers: number;
  /** writes before the kill, ms */
  warmupMs: number;
  /** how long the phases may take after the kill, ms */
  timeoutMs: number;
  /** a progress line (the command sends it to stderr) */
  say: (line: string) => void;
}

export { DemoError };

const sinceKill = (ms: number) => `+${(ms / 1000).toFixed(3).padStart(6)} s`;

export class Demo {
  readonly procs = new ProcessSet();
  cluster: DemoCluster | null = null;
  interrupted: NodeJS.Signals | null = null;
  private workload: Workload | null = null;
  private slots: SlotKeeper | null = null;
  private cleaning: Promise<void> | null = null;
  private died: DemoError | null = null;
  /** PIDs of PostgreSQL processes seen at cleanup (postmasters and their children) */
  private readonly postgresPids = new Set<number>();
  private readonly started = Date.now();

  constructor(private readonly o: DemoOptions) {
    this.procs.onUnexpectedExit((t) => {
      this.died ??= new DemoError(`${t.name} (pid ${t.pid}) exited unexpectedly (${t.exit?.code ?? t.exit?.signal ?? 'no status'})`, t.logFile ?? undefined);
    });
  }

  private check(): void {
    if (this.interrupted) throw new DemoError(`interrupted by ${this.interrupted}`);
    if (this.died) throw this.died;
  }

  private async pause(ms: number): Promise<void> {
    const until = Date.now() + ms;
    while (Date.now() < until) {
      this.check();
      await sleep(Math.min(100, until - Date.now()));
    }
  }

  async run(): Promise<DemoResult> {
    const { o } = this;
    for (const tool of ['initdb', 'postgres', 'pg_basebackup', 'pg_ctl', 'pg_rewind']) {
      if (!existsSync(join(o.binDir, tool))) throw new DemoError(`no ${tool} in ${o.binDir}: give PostgreSQL 15's bin directory with --pg-bin DIR (or PG_BINDIR)`);
    }
    for (const cli of [PGHA_CLI, PROXY_CLI]) if (!existsSync(cli)) throw new DemoError(`${cli} is missing: build first (npx tsc -p tsconfig.json)`);

    const c = (this.cluster = await planCluster(o.binDir));
    o.say(`pgha demo: 3 PostgreSQL 15 nodes, their agents and a pgha-proxy on 127.0.0.1, under ${c.root}`);
    await bringUp(c, this.procs, (line) => {
      this.check();
      o.say(`  ${line}`);
    });
    this.check();
    const [n1, n2, n3] = c.nodes;

    // the write workload through the proxy, the slot's consumer and copies kept moving
    const workload = (this.workload = new Workload(c.proxy.port, o.writers));
    const slots = (this.slots = new SlotKeeper(c));
    workload.start();
    slots.start(n1, [n2, n3]);
    o.say(`  workload: ${o.writers} clients through the proxy, each: BEGIN; INSERT a row; counter + 1; COMMIT (every acknowledged commit recorded)`);
    await this.pause(o.warmupMs);
    await slots.stop();
    this.check();

    // the fault
    const victim = postmasterPid(n1.dataDir);
    if (victim === null || !processAlive(victim)) throw new DemoError('n1 is not running before the kill', n1.serverLog);
    const beforeKill = workload.acks.length;
    o.say(`${sinceKill(0)}  kill -9      n1's postmaster (pid ${victim}); ${beforeKill} writes acknowledged so far, slot copies synced ${slots.passes} times`);
    const killedAt = Date.now();
    process.kill(victim, 'SIGKILL');

    const t = await watchFailover({
      c,
      procs: this.procs,
      old: n1,
      killedAt,
      workload,
      timeoutMs: o.timeoutMs,
      failed: () => this.died ?? (this.interrupted ? new DemoError(`interrupted by ${this.interrupted}`) : null),
      say: (_p, ms, text) => o.say(`${sinceKill(ms)}  ${text}`),
    });
    this.check();
    // a moment of writes on the healed cluster, then stop and compare
    await this.pause(500);
    await workload.stop();
    this.check();
    o.say(`  workload stopped: ${workload.acks.length} writes acknowledged (${workload.acks.length - beforeKill} after the kill), ${workload.inDoubt} in doubt, ${workload.errors} client errors`);
    const verified = await this.verify(t);
    this.check();
    o.say(`  checked every acknowledged write on ${c.nodes.map((n) => n.name).join(', ')}; stopping everything`);
    const r = this.result(t, verified, beforeKill);
    // a failed check keeps the logs (not the data) for a look
    await this.cleanup({ logsOnly: !r.ok });
    return { ...r, pids: this.pidsReport(), kept: this.o.keep || !r.ok, durationMs: Date.now() - this.started };
  }

  /** every PID the demo started or adopted (postmasters an agent started, their children at the end) */
  pidsReport(): DemoResult['pids'] {
    const c = this.cluster;
    return {
      postgres: [...new Set([...(c?.nodes.flatMap((n) => [...n.postmasters]) ?? []), ...this.postgresPids])].sort((a, b) => a - b),
      agents: (c?.nodes ?? []).map((n) => n.agent?.pid).filter((p): p is number => typeof p === 'number'),
      proxy: c?.proxy.proc?.pid ?? null,
      all: [...new Set([...this.procs.everStarted, ...this.postgresPids])].sort((a, b) => a - b),
    };
  }

  /** replay caught up everywhere, then every node against the acknowledged writes; the slot read to the end */
  private async verify(t: Timeline): Promise<{ perNode: Map<string, NodeCheck | string>; status: ProxyStatus | null; decoded: number }> {
    const c = this.cluster!;
    const workload = this.workload!;
    let status: ProxyStatus | null = null;
    try {
      status = (await (await fetch(`${c.proxy.admin}/status`, { signal: AbortSignal.timeout(3000) })).json()) as ProxyStatus;
    } catch {
      // reported as unknown roles
    }
    const primary = c.nodes.find((n) => n.address === status?.primary) ?? t.newPrimary;
    const perNode = new Map<string, NodeCheck | string>();
    if (!primary) {
      for (const n of c.nodes) perNode.set(n.name, 'no primary to compare with');
      return { perNode, status, decoded: 0 };
    }
    const [{ lsn }] = await sql<{ lsn: string }>(primary.port, 'SELECT pg_current_wal_lsn()::text AS lsn');
    for (const n of c.nodes) {
      try {
        if (n !== primary) {
          const deadline = Date.now() + 30_000;
          for (;;) {
            const [r] = await sql<{ ok: boolean }>(n.port, 'SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false) AS ok', [lsn]);
            if (r.ok) break;
            if (Date.now() > deadline) throw new Error(`has not replayed up to ${lsn} within 30 s`);
            await sleep(100);
          }
        }
        perNode.set(n.name, await workload.check(n.port));
      } catch (e) {
        perNode.set(n.name, (e as Error).message);
      }
    }
    // the consumer reads what is left on the slot of the final primary
    if (t.slot.onNewPrimary) {
      try {
        await this.slots!.consume(primary.port, false);
      } catch {
        // counted below: writes not decoded
      }
    }
    const decoded = workload.acks.filter((a) => this.slots!.decoded.has(a.id)).length;
    return { perNode, status, decoded };
  }

  private result(t: Timeline, v: Awaited<ReturnType<Demo['verify']>>, beforeKill: number): DemoResult {
    const c = this.cluster!;
    const workload = this.workload!;
    const acked = workload.acks.length;
    const missingIds = new Set<number>();
    const nodes: NodeReport[] = c.nodes.map((n) => {
      const r = v.perNode.get(n.name);
      const ok = r && typeof r === 'object' ? r : null;
      return {
        name: n.name,
        role: v.status?.backends.find((b) => b.name === n.address)?.role ?? 'unknown',
        pgPort: n.port,
        agent: n.agentUrl,
        dataDir: n.dataDir,
        rows: ok?.rows ?? null,
        counter: ok?.counter ?? null,
        missing: ok?.missing ?? null,
        pids: { postgres: [...n.postmasters].filter((p) => p > 0), agent: n.agent?.pid ?? null },
      };
    });
    // lost: acknowledged writes missing on at least one node (ids are re-read per node)
    let lost = 0;
    for (const n of c.nodes) {
      const r = v.perNode.get(n.name);
      if (r && typeof r === 'object') lost = Math.max(lost, r.missing);
      if (r && typeof r === 'object') for (const id of r.missingIds) missingIds.add(id);
    }
    const ms = t.ms;
    const missingPhases = PHASES.filter((p) => ms[p] === null);
    const order: Phase[] = ['detect', 'promote', 'reroute', 'firstWrite'];
    const inOrder = order.every((p, i) => i === 0 || ms[p] === null || ms[order[i - 1]] === null || ms[order[i - 1]]! <= ms[p]!);
    const unreadable = c.nodes.filter((n) => typeof v.perNode.get(n.name) !== 'object');
    const checks: Check[] = [
      { name: 'every phase seen', ok: missingPhases.length === 0, detail: missingPhases.length === 0 ? 'detect, promote, reroute, first write, rejoin, slot' : `not seen within ${this.o.timeoutMs / 1000} s: ${missingPhases.join(', ')}` },
      { name: 'phases in order', ok: inOrder, detail: order.map((p) => `${p} ${ms[p] ?? '-'} ms`).join(' ≤ ') },
      {
        name: 'no acknowledged write lost',
        ok: lost === 0 && unreadable.length === 0 && acked > 0,
        detail: unreadable.length ? unreadable.map((n) => `${n.name}: ${v.perNode.get(n.name)}`).join('; ') : `${acked} acknowledged, ${lost} missing on some node${missingIds.size ? ` (ids ${[...missingIds].slice(0, 5).join(', ')})` : ''}`,
      },
      {
        name: 'counter = rows on every node',
        ok: nodes.every((n) => n.rows !== null && n.rows === n.counter),
        detail: nodes.map((n) => `${n.name} ${n.rows ?? '?'}/${n.counter ?? '?'}`).join(', '),
      },
      { name: 'rejoin without a re-clone', ok: t.rejoin.path === 'follow' || t.rejoin.path === 'rewind', detail: `path ${t.rejoin.path ?? 'not seen'}` },
      { name: 'slot on the new primary', ok: t.slot.onNewPrimary && t.slot.confirmedFlush !== null, detail: t.slot.onNewPrimary ? `${t.slot.name} on ${t.slot.node}, confirmed_flush_lsn ${t.slot.confirmedFlush}` : `${t.slot.name} not found live on ${t.newPrimary?.name ?? 'a new primary'}` },
      { name: 'every acknowledged write decoded from the slot', ok: v.decoded === acked, detail: `${v.decoded} of ${acked}` },
    ];
    const oldNode = c.nodes[0];
    return {
      ok: checks.every((x) => x.ok),
      acknowledged: acked,
      lost,
      phases: { detectMs: ms.detect, promoteMs: ms.promote, rerouteMs: ms.reroute, firstWriteMs: ms.firstWrite, rejoinMs: ms.rejoin, slotMs: ms.slot },
      failover: { ...(t.failover ?? { from: oldNode.address, to: null, via: null, zeroLoss: false, fenced: 'proxy-only', ms: 0, error: null, candidates: [] }), fromNode: oldNode.name, toNode: t.newPrimary?.name ?? null },
      rejoin: { ...t.rejoin, node: oldNode.name },
      slot: { ...t.slot, plugin: 'test_decoding', decodedAcknowledged: v.decoded, syncPasses: this.slots?.passes ?? 0 },
      writes: { acknowledged: acked, beforeKill, afterKill: acked - beforeKill, inDoubt: workload.inDoubt, clientErrors: workload.errors, lateAcksOnOldPrimary: t.lateAcksOnOld },
      checks,
      nodes,
      proxy: { listen: `127.0.0.1:${c.proxy.port}`, admin: c.proxy.admin, pid: c.proxy.proc?.pid ?? null },
      pids: this.pidsReport(),
      tempDir: c.root,
      kept: this.o.keep,
      logs: this.logs(),
      durationMs: Date.now() - this.started,
    };
  }

  logs(): Record<string, string> {
    const c = this.cluster;
    if (!c) return {};
    const out: Record<string, string> = { proxy: c.proxy.log };
    for (const n of c.nodes) {
      out[`${n.name} postgres`] = n.serverLog;
      out[`${n.name} agent`] = n.agentLog;
    }
    return out;
  }

  /**
   * Stop everything this demo started, by PID, in an order that starts nothing again: the clients,
   * the proxy (no failover), the agents (no rejoin; and whatever tool they were running), then the
   * PostgreSQL servers (fast shutdown, SIGKILL after 10 s) — the ones the demo started and the ones
   * an agent started since, as each data directory's postmaster.pid names them. Then the temp dir
   * goes, unless kept (`--keep`; `logsOnly`: keep the logs, remove the data directories).
   */
  cleanup(opts: { logsOnly?: boolean } = {}): Promise<void> {
    this.cleaning ??= (async () => {
      const c = this.cluster;
      this.procs.closing = true;
      const clients = this.workload?.stop();
      const slots = this.slots?.stop();
      if (c) notePostmasters(c, this.procs);
      const isProxy = (name: string) => name === 'pgha-proxy';
      await this.procs.stop((t) => isProxy(t.name), 'SIGTERM', 5000);
      await this.procs.stop((t) => t.name.startsWith('agent '), 'SIGTERM', 5000);
      await Promise.race([Promise.all([clients, slots]), sleep(3000)]);
      if (c) {
        notePostmasters(c, this.procs);
        const postmasters = [...new Set(c.nodes.flatMap((n) => [...n.postmasters]))].filter(processAlive);
        for (const p of postmasters) {
          this.postgresPids.add(p);
          for (const k of descendants(p)) this.postgresPids.add(k);
        }
        // SIGINT: PostgreSQL's fast shutdown
        await stopPids(postmasters, 'SIGINT', 10_000);
        await stopPids([...this.postgresPids], 'SIGKILL', 0);
      }
      // tool runs still going (initdb, pg_basebackup) and the runuser wrappers
      await this.procs.stop(() => true, 'SIGTERM', 3000);
      if (c) {
        // anything left that names the demo's directory on its command line
        const left = pidsMentioning(c.root);
        for (const p of left) this.postgresPids.add(p);
        await stopPids(left, 'SIGKILL', 0);
        if (!this.o.keep) {
          if (opts.logsOnly) {
            for (const n of c.nodes) rmSync(n.dataDir, { recursive: true, force: true });
            for (const f of readdirSync(c.root)) if (f.startsWith('.s.PGSQL')) rmSync(join(c.root, f), { force: true });
          } else rmSync(c.root, { recursive: true, force: true });
        }
      }
    })();
    return this.cleaning;
  }

  /** Ctrl-C / SIGTERM: stop everything (the run in progress fails with "interrupted") */
  interrupt(sig: NodeJS.Signals): Promise<void> {
    this.interrupted ??= sig;
    return this.cleanup();
  }

  /** the PIDs the demo started that are still alive (should be none after cleanup) */
  leftovers(): number[] {
    return [...this.procs.everStarted, ...this.postgresPids].filter(processAlive);
  }
}

export type { DemoNode };
