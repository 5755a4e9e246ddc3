/**
 * `pgha rejoin`: bring a stopped node back as a standby of the source, by the cheapest correct
 * path. Follow (standby config, missing history files, start), or rewind (lost-transaction report,
 * the WAL pg_rewind needs fetched from the source or peers, pg_rewind, start), or — only with
 * allowReclone — move the data directory aside and re-clone. Waits until the node streams.
 */
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { clearFence } from '../datadir/fence.js';
import { nodeLsn, walDir } from '../datadir/node-state.js';
import { formatLsn, historyFileName, segmentOf, walFileName, type Lsn } from '../formats/lsn.js';
import { parseHistory, timelineOfSegment, type TimelineHistory } from '../formats/timeline-history.js';
import { decodeRecord, recordEntries, streamMajor } from '../formats/wal/record.js';
import { configuredSetting, PgInstance, PgToolError } from '../pg/instance.js';
import { withNodeSql } from '../pg/node-sql.js';
import { AgentClient } from '../ship/client.js';
import { ownLikeDirectory } from '../ship/files.js';
import { activeImplementation } from '../native/index.js';
import { probeSegmentHeader, scanWalStream, type SegmentVisit } from '../wal/stream.js';
import { lostTransactions } from './lost-transactions.js';
import { parseToolProgress, progress, type Progress } from '../log/progress.js';
import { decide, describeStep, planRejoin, reclonePlan, rewindSegments, withTools, type RejoinPath, type RejoinPlan } from './plan.js';

export interface RejoinOptions {
  pgdata: string;
  /** the new primary's agent */
  source: string;
  token: string;
  binDir: string;
  /** other agents that may still have old WAL */
  peers?: string[];
  allowReclone?: boolean;
  dryRun?: boolean;
  /** application_name of the standby's WAL receiver (default: the data directory's name) */
  applicationName?: string;
  /** replication slot on the source to use (created by pg_basebackup on re-clone) */
  slot?: string;
  timeoutMs?: number;
  log?: (msg: string) => void;
  /** progress bars on stderr while WAL is fetched and pg_rewind or pg_basebackup copy (only when it is a terminal) */
  progress?: boolean;
}

export interface RejoinResult {
  path: RejoinPath | 'refused';
  reason: string;
  dryRun: boolean;
  forkLsn: string | null;
  lostTransactions: { count: number; report: string | null; xids: number[] };
  fetched: Array<{ name: string; from: string; size: number; sha256: string }>;
  streaming: boolean;
  movedAside?: string;
  /** the plan carried out (or, in a dry run, that would be), one line per step */
  steps: string[];
}

/** a bar fed by a PostgreSQL tool's --progress lines on stderr (created at the first report) */
function toolProgress(label: string, enabled: boolean): { onStderr: ((chunk: string) => void) | undefined; stop: () => void } {
  if (!enabled || !process.stderr.isTTY) return { onStderr: undefined, stop: () => undefined };
  let bar: Progress | null = null;
  return {
    onStderr: (chunk) => {
      const p = parseToolProgress(chunk);
      if (!p) return;
      bar ??= progress({ label, total: p.total, unit: 'kB' });
      bar.update(p.done, p.total);
    },
    stop: () => bar?.stop(),
  };
}

export class RejoinRefused extends Error {}

/** the node's own configuration, which pg_rewind and pg_basebackup would replace with the source's */
const FETCH_CONCURRENCY = 4;
const NODE_CONFIG_FILES = ['postgresql.conf', 'postgresql.auto.conf', 'pg_hba.conf', 'pg_ident.conf'];

interface SourceSystem {
  name: string;
  systemId: string;
  pgVersion: number;
  walSegmentSize: number;
  timeline: number;
  pgHost: string;
  pgPort: number;
  pgUser: string;
}

const conninfo = (s: SourceSystem, appName: string) => `host=${s.pgHost} port=${s.pgPort} user=${s.pgUser} application_name=${appName}`;

async function sourceHistory(client: AgentClient, sys: SourceSystem): Promise<TimelineHistory> {
  if (sys.timeline <= 1) return { timeline: 1, entries: [] };
  return parseHistory(await client.getText(`walFile/${historyFileName(sys.timeline)}`), sys.timeline, `${client.baseUrl} ${historyFileName(sys.timeline)}`);
}

function writeStandbyConfig(pgdata: string, sys: SourceSystem, appName: string, slot?: string): void {
  const auto = join(pgdata, 'postgresql.auto.conf');
  const keep = existsSync(auto)
    ? readFileSync(auto, 'utf8')
        .split('\n')
        .filter((l) => !/^\s*(primary_conninfo|primary_slot_name|recovery_target_timeline)\s*=/.test(l))
        .join('\n')
    : '';
  const lines = [`primary_conninfo = '${conninfo(sys, appName).replace(/'/g, "''")}'`, "recovery_target_timeline = 'latest'"];
  if (slot) lines.push(`primary_slot_name = '${slot}'`);
  writeFileSync(auto, keep.replace(/\n*$/, '\n') + '# written by pgha rejoin\n' + lines.join('\n') + '\n');
  writeFileSync(join(pgdata, 'standby.signal'), '');
  for (const f of [auto, join(pgdata, 'standby.signal')]) ownLikeDirectory(f, pgdata);
}

async function sourceHasSlot(sys: SourceSystem, slot: string): Promise<boolean> {
  return withNodeSql(sys, async (c) => (await c.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [slot])).rowCount! > 0, 10_000);
}

async function waitStreaming(local: PgInstance, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const [r] = await local.query<{ status: string | null }>("SELECT (SELECT status FROM pg_stat_wal_receiver) AS status");
      if (r.status === 'streaming') return true;
    } catch {
      // still starting up
    }
    await new Promise((res) => setTimeout(res, 200));
  }
  return false;
}

/** the checkpoint records of one segment that start before `before`, with their REDO pointers */
async function checkpointsIn(path: string, segno: bigint, segmentSize: number, before: Lsn): Promise<Array<{ lsn: Lsn; redo: Lsn }>> {
  const found: Array<{ lsn: Lsn; redo: Lsn }> = [];
  const st = statSync(path);
  const h = probeSegmentHeader(path);
  await scanWalStream({
    files: [{ path, name: basename(path), tli: h.tli, segno, size: st.size, partial: false }],
    segmentSize,
    mode: 'records',
    impl: activeImplementation(),
    onSegment: (v: SegmentVisit) => {
      const major = streamMajor(v.result.carry);
      for (const entry of recordEntries(v.result)) {
        // XLOG_CHECKPOINT_SHUTDOWN (0x00) and XLOG_CHECKPOINT_ONLINE (0x10) of RM_XLOG_ID: main data is a CheckPoint, redo first
        const info = entry.info & 0xf0;
        if (entry.rmid !== 0 || (info !== 0x00 && info !== 0x10) || entry.lsn >= before) continue;
        const rec = decodeRecord([{ buf: v.buf, bufLsn: v.bufLsn }], entry, major, v.result.carry.blockSize);
        if (rec && rec.mainDataLength >= 8) {
          found.push({ lsn: entry.lsn, redo: new DataView(rec.mainData.buffer, rec.mainData.byteOffset, 8).getBigUint64(0, true) });
        }
      }
    },
  });
  return found;
}

export async function rejoin(opts: RejoinOptions): Promise<RejoinResult> {
  const log = opts.log ?? (() => undefined);
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const local = new PgInstance({ pgdata: opts.pgdata, binDir: opts.binDir });
  if (local.isRunning()) throw new RejoinRefused(`PostgreSQL is running in ${opts.pgdata}: stop it before a rejoin`);

  // 1. what both sides say: the decision (plan.ts, pure)
  const client = new AgentClient(opts.source, opts.token);
  const sys = await client.get<SourceSystem>('system');
  const impl = activeImplementation();
  const lsn = await nodeLsn(opts.pgdata, impl);
  const control = lsn.control;
  const localTli = lsn.history.timeline;
  const endLsn = lsn.lastLsn;
  const valid = await client.get<{ code: number; msg: string; cnt: number }>(`validLsn/${localTli}/${formatLsn(endLsn)}`); // validLsn/TLI/X/Y
  const srcHistory = await sourceHistory(client, sys);
  const decision = decide(
    { systemId: control.systemId, pgVersion: control.pgVersion, timeline: localTli, history: lsn.history, endLsn },
    { systemId: BigInt(sys.systemId), pgVersion: sys.pgVersion, history: srcHistory, valid: valid.code === 0 },
  );
  log(`rejoin: ${decision.path}: ${decision.reason}`);
  const pgwal = walDir(opts.pgdata);
  const segSize = control.walSegmentSize;
  const peers = [opts.source, ...(opts.peers ?? [])];
  const result: RejoinResult = {
    path: decision.path,
    reason: decision.reason,
    dryRun: opts.dryRun === true,
    forkLsn: decision.forkLsn === null ? null : formatLsn(decision.forkLsn),
    lostTransactions: { count: 0, report: null, xids: [] },
    fetched: [],
    streaming: false,
    steps: [],
  };
  // a dry run fetches into a scratch directory (to find the checkpoint pg_rewind will start from
  // and to prove the WAL is to be had) and leaves the data directory untouched
  const scratch = opts.dryRun && decision.path === 'rewind' ? mkdtempSync(join(tmpdir(), 'pgha-rejoin-plan-')) : null;
  const here = (name: string) => existsSync(join(pgwal, name)) || (scratch !== null && existsSync(join(scratch, name)));
  const fetchWal = async (name: string, from: string[]): Promise<string> => {
    if (existsSync(join(pgwal, name))) return join(pgwal, name);
    if (scratch && existsSync(join(scratch, name))) return join(scratch, name);
    for (const url of from) {
      try {
        const d = await new AgentClient(url, opts.token).download(name, scratch ?? pgwal);
        result.fetched.push({ name, from: url, size: d.size, sha256: d.sha256 });
        // with a progress bar on the terminal the bar says it, file by file lines would break it
        if (scratch || !(opts.progress === true && process.stderr.isTTY)) log(`rejoin: ${scratch ? 'would fetch' : 'fetched'} ${name} (${d.size} bytes) from ${url}, sha256 verified`);
        return join(scratch ?? pgwal, name);
      } catch {
        // try the next peer
      }
    }
    throw new RejoinRefused(`WAL segment ${name} needed by pg_rewind is missing here and on every agent asked (${from.join(', ')})`);
  };

  try {
    // 2. a rewind needs to know where pg_rewind will start reading: the last checkpoint before the
    // fork, searched backwards through the old timeline's WAL (fetched where it was recycled)
    let plan: RejoinPlan;
    const facts = {
      allowReclone: opts.allowReclone === true,
      slot: opts.slot ?? null,
      missingHistories: srcHistory.entries.map((e) => historyFileName(e.parentTimeline + 1)).filter((n) => !existsSync(join(pgwal, n))),
      controlState: control.state,
    };
    if (decision.path === 'rewind') {
      try {
        const forkLsn = decision.forkLsn!;
        let checkpointRedo: Lsn | null = null;
        for (let seg = segmentOf(forkLsn, segSize), steps = 0; seg >= 0n && steps < 256 && checkpointRedo === null; seg--, steps++) {
          const cps = await checkpointsIn(await fetchWal(walFileName(timelineOfSegment(lsn.history, seg, segSize), seg, segSize), peers), seg, segSize, forkLsn);
          if (cps.length) checkpointRedo = cps[cps.length - 1].redo;
        }
        if (checkpointRedo === null) throw new RejoinRefused(`no checkpoint found before the fork point ${formatLsn(forkLsn)} in the old timeline's WAL`);
        const needed = rewindSegments({ checkpointRedo, controlRedo: control.checkpoint.redo, endLsn, segmentSize: segSize }).map((s) => walFileName(timelineOfSegment(lsn.history, s, segSize), s, segSize));
        plan = planRejoin(decision, { ...facts, missingWal: needed.filter((n) => !here(n)), walSources: peers });
      } catch (e) {
        // no rewind is possible without that WAL: a re-clone (only when allowed) or a refusal
        if (!(e instanceof RejoinRefused)) throw e;
        plan = reclonePlan(e.message, facts);
      }
    } else {
      plan = planRejoin(decision, facts);
    }
    // a build without pg_rewind / pg_basebackup: said before anything changes, in one line
    plan = withTools(plan, opts.binDir, (tool) => existsSync(join(opts.binDir, tool)), facts);
    result.path = plan.path;
    result.reason = plan.reason;
    if (plan.refusal) throw new RejoinRefused(plan.refusal);
    // 3. carry it out
    return await carryOut(plan, { opts, sys, local, control, localTli, client, result, log, timeoutMs, fetchWal, scratch });
  } finally {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  }
}

interface Carrying {
  opts: RejoinOptions;
  sys: SourceSystem;
  local: PgInstance;
  control: Awaited<ReturnType<typeof nodeLsn>>['control'];
  localTli: number;
  client: AgentClient;
  result: RejoinResult;
  log: (msg: string) => void;
  timeoutMs: number;
  fetchWal: (name: string, from: string[]) => Promise<string>;
  scratch: string | null;
}

/** Carry out a plan, step by step; a dry run stops before anything in the data directory changes. */
async function carryOut(plan: RejoinPlan, c: Carrying): Promise<RejoinResult> {
  const { opts, sys, result, log } = c;
  const pgwal = walDir(opts.pgdata);
  // the name synchronous_standby_names matches: the node's own (agents pass theirs), else its
  // cluster_name (what its WAL receiver would use anyway), else its directory's
  const appName = opts.applicationName ?? (configuredSetting(opts.pgdata, 'cluster_name') || basename(opts.pgdata));
  let node = c.local;
  result.steps = plan.steps.map(describeStep);
  // no rewind without the WAL it reads or when pg_rewind fails: a re-clone (only when allowed) or a refusal
  const fallBack = (why: string, allowReclone: boolean): Promise<RejoinResult> => {
    const fallback = reclonePlan(why, { allowReclone, slot: opts.slot ?? null });
    result.path = fallback.path;
    result.reason = why;
    if (fallback.refusal) throw new RejoinRefused(fallback.refusal);
    return carryOut(fallback, c);
  };
  for (const step of plan.steps) {
    switch (step.step) {
      case 'fetch-history':
        if (opts.dryRun) {
          result.fetched.push({ name: step.name, from: opts.source, size: 0, sha256: '' });
          break;
        }
        {
          const d = await c.client.download(step.name, pgwal);
          result.fetched.push({ name: step.name, from: opts.source, size: d.size, sha256: d.sha256 });
        }
        break;
      case 'report-lost-transactions':
        await reportLost(step.forkLsn, c);
        break;
      case 'fetch-wal': {
        const bar = progress({ label: 'rejoin: fetching WAL', total: step.names.length, unit: 'files', enabled: opts.progress === true && !opts.dryRun });
        try {
          // in parallel: a receiving agent is bound by hashing and copying on one core
          const queue = [...step.names];
          await Promise.all(Array.from({ length: FETCH_CONCURRENCY }, async () => {
            for (let n = queue.shift(); n !== undefined; n = queue.shift()) {
              await c.fetchWal(n, step.from);
              bar.increment();
            }
          }));
        } catch (e) {
          if (!(e instanceof RejoinRefused)) throw e;
          return fallBack(e.message, opts.allowReclone === true);
        } finally {
          bar.stop();
        }
        break;
      }
      case 'checkpoint-source':
        if (opts.dryRun) return result;
        await withNodeSql(sys, (q) => q.query('CHECKPOINT'), 10_000);
        break;
      case 'crash-recovery':
        // pg_rewind needs a cleanly shut down target. Its own crash recovery would end with a checkpoint
        // that removes the very WAL it is about to read (everything before the new REDO point): recover
        // here instead, in single-user mode, keeping all WAL, then run pg_rewind without that step.
        log(`rejoin: ${opts.pgdata} was not shut down cleanly (${step.state}): crash recovery in single-user mode, keeping its WAL`);
        // a fenced node has standby.signal, and a single-user server refuses standby mode ("standby
        // mode is not supported by single-user servers"): this is crash recovery only; the standby
        // configuration is written again after pg_rewind
        for (const f of ['standby.signal', 'recovery.signal']) rmSync(join(opts.pgdata, f), { force: true });
        await node.run('postgres', ['--single', '-F', '-c', 'wal_keep_size=1TB', '-c', 'archive_mode=off', '-D', opts.pgdata, 'template1'], { timeoutMs: c.timeoutMs });
        break;
      case 'pg_rewind': {
        // pg_rewind copies every non-relation file from the source, configuration included (the node
        // would come up with the source's port and settings): keep this node's own and put them back
        const saved = new Map(NODE_CONFIG_FILES.filter((f) => existsSync(join(opts.pgdata, f))).map((f) => [f, readFileSync(join(opts.pgdata, f))]));
        const bar = toolProgress('rejoin: pg_rewind copying', opts.progress === true);
        try {
          await node.run('pg_rewind', ['--target-pgdata', opts.pgdata, '--source-server', `${conninfo(sys, appName)} dbname=postgres`, '--write-recovery-conf', '--no-ensure-shutdown', '--progress'], { timeoutMs: c.timeoutMs, onStderr: bar.onStderr });
        } catch (e) {
          if (!(e instanceof PgToolError)) throw e;
          return fallBack(`pg_rewind failed: ${e.stderr.split('\n').filter(Boolean).slice(-2).join(' | ')}`, plan.onRewindFailure === 'reclone');
        } finally {
          bar.stop();
        }
        for (const [f, bytes] of saved) writeFileSync(join(opts.pgdata, f), bytes);
        break;
      }
      case 'move-aside': {
        if (opts.dryRun) return result;
        const aside = `${opts.pgdata}.pgha-old-${new Date().toISOString().replace(/[:.]/g, '-')}`;
        renameSync(opts.pgdata, aside);
        result.movedAside = aside;
        log(`rejoin: data directory moved aside to ${aside}; cloning from ${sys.name}`);
        break;
      }
      case 'base-backup': {
        const aside = result.movedAside!;
        const cloner = new PgInstance({ pgdata: aside, binDir: opts.binDir });
        const args = ['-D', opts.pgdata, '-d', conninfo(sys, appName), '-R', '-X', 'stream', '-c', 'fast'];
        // the slot is created by pg_basebackup unless it is there already (the agent makes it first)
        if (step.slot) args.push('-S', step.slot, ...((await sourceHasSlot(sys, step.slot)) ? [] : ['-C']));
        const bar = toolProgress('rejoin: pg_basebackup', opts.progress === true);
        if (opts.progress === true) args.push('--progress');
        try {
          await cloner.run('pg_basebackup', args, { onStderr: bar.onStderr });
        } finally {
          bar.stop();
        }
        // the clone carries the source's configuration: this node keeps its own (port, hba, settings)
        for (const f of NODE_CONFIG_FILES.filter((f) => f !== 'postgresql.auto.conf')) {
          if (existsSync(join(aside, f))) writeFileSync(join(opts.pgdata, f), readFileSync(join(aside, f)));
        }
        node = new PgInstance({ pgdata: opts.pgdata, binDir: opts.binDir });
        break;
      }
      case 'write-standby-config':
        if (opts.dryRun) return result;
        writeStandbyConfig(opts.pgdata, sys, appName, step.slot ?? undefined);
        break;
      case 'start-and-stream':
        await node.start();
        result.streaming = await waitStreaming(node, c.timeoutMs);
        // once the node streams from the source it follows the new primary: it is no longer fenced
        if (result.streaming && clearFence(opts.pgdata)) log(`rejoin: fence marker removed from ${opts.pgdata}`);
        break;
    }
  }
  return result;
}

/** the lost-transaction report, written beside the data directory (not in a dry run) */
async function reportLost(forkLsn: Lsn, c: Carrying): Promise<void> {
  const { opts, result, log } = c;
  try {
    const r = await lostTransactions(walDir(opts.pgdata), c.control.walSegmentSize, c.localTli, forkLsn, activeImplementation());
    result.lostTransactions = { count: r.transactions.length, report: null, xids: r.transactions.map((t) => t.xid) };
    if (!opts.dryRun) {
      const path = join(dirname(opts.pgdata), `${basename(opts.pgdata)}.lost-transactions.${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
      writeFileSync(path, JSON.stringify({ ...r, dataDirectory: opts.pgdata, source: opts.source }, null, 2) + '\n');
      result.lostTransactions.report = path;
    }
    log(`rejoin: ${r.transactions.length} transaction(s) committed on timeline ${c.localTli} after ${formatLsn(forkLsn)} will be discarded${result.lostTransactions.report ? ` (report: ${result.lostTransactions.report})` : ''}`);
  } catch (e) {
    log(`rejoin: could not decode the lost transactions: ${(e as Error).message}`);
  }
}
