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
import { parseHistory, type TimelineHistory } from '../formats/timeline-history.js';
import { decodeRecord, recordEntries, streamMajor } from '../formats/wal/record.js';
import { configuredSetting, PgInstance, PgToolError } from '../pg/instance.js';
import { withNodeSql } from '../pg/node-sql.js';
import { AgentClient } from '../ship/client.js';
import { ownLikeDirectory } from '../ship/files.js';
import { walImplementation } from '../wal/implementation.js';
import { probeSegmentHeader, scanWalStream, type SegmentVisit } from '../wal/stream.js';
import { lostTransactions, type LostTransactionReport } from './lost-transactions.js';
import { decide, type RejoinPath } from './plan.js';

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
    impl: walImplementation(),
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
  const client = new AgentClient(opts.source, opts.token);
  const sys = await client.get<SourceSystem>('system');
  const impl = walImplementation();
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
  const result: RejoinResult = {
    path: decision.path,
    reason: decision.reason,
    dryRun: opts.dryRun === true,
    forkLsn: decision.forkLsn === null ? null : formatLsn(decision.forkLsn),
    lostTransactions: { count: 0, report: null, xids: [] },
    fetched: [],
    streaming: false,
  };
  const pgwal = walDir(opts.pgdata);
  // the name synchronous_standby_names matches: the node's own (agents pass theirs), else its
  // cluster_name (what its WAL receiver would use anyway), else its directory's
  const appName = opts.applicationName ?? (configuredSetting(opts.pgdata, 'cluster_name') || basename(opts.pgdata));
  // once the node streams from the source it follows the new primary: it is no longer fenced
  const unfence = () => {
    if (clearFence(opts.pgdata)) log(`rejoin: fence marker removed from ${opts.pgdata}`);
  };

  // history files the node will need to follow the source's timeline
  const fetchHistories = async () => {
    for (const e of srcHistory.entries) {
      const names = [historyFileName(e.parentTimeline + 1)].filter((n) => !existsSync(join(pgwal, n)));
      for (const n of names) {
        if (opts.dryRun) {
          result.fetched.push({ name: n, from: opts.source, size: 0, sha256: '' });
          continue;
        }
        const d = await client.download(n, pgwal);
        result.fetched.push({ name: n, from: opts.source, size: d.size, sha256: d.sha256 });
      }
    }
  };

  const report = async (forkLsn: Lsn): Promise<LostTransactionReport | null> => {
    try {
      const r = await lostTransactions(pgwal, control.walSegmentSize, localTli, forkLsn, impl);
      result.lostTransactions = { count: r.transactions.length, report: null, xids: r.transactions.map((t) => t.xid) };
      if (!opts.dryRun) {
        const path = join(dirname(opts.pgdata), `${basename(opts.pgdata)}.lost-transactions.${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
        writeFileSync(path, JSON.stringify({ ...r, dataDirectory: opts.pgdata, source: opts.source }, null, 2) + '\n');
        result.lostTransactions.report = path;
      }
      log(`rejoin: ${r.transactions.length} transaction(s) committed on timeline ${localTli} after ${formatLsn(forkLsn)} will be discarded${result.lostTransactions.report ? ` (report: ${result.lostTransactions.report})` : ''}`);
      return r;
    } catch (e) {
      log(`rejoin: could not decode the lost transactions: ${(e as Error).message}`);
      return null;
    }
  };

  const reclone = async (why: string): Promise<RejoinResult> => {
    if (!opts.allowReclone) {
      throw new RejoinRefused(`${why}; a re-clone would be needed: run again with --allow-reclone (the data directory is moved aside, never deleted)`);
    }
    result.path = 'reclone';
    result.reason = why;
    if (opts.dryRun) return result;
    const aside = `${opts.pgdata}.pgha-old-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    renameSync(opts.pgdata, aside);
    result.movedAside = aside;
    log(`rejoin: data directory moved aside to ${aside}; cloning from ${sys.name}`);
    const cloner = new PgInstance({ pgdata: aside, binDir: opts.binDir });
    const args = ['-D', opts.pgdata, '-d', conninfo(sys, appName), '-R', '-X', 'stream', '-c', 'fast'];
    // the slot is created by pg_basebackup unless it is there already (the agent makes it first)
    if (opts.slot) args.push('-S', opts.slot, ...((await sourceHasSlot(sys, opts.slot)) ? [] : ['-C']));
    await cloner.run('pg_basebackup', args);
    // the clone carries the source's configuration: this node keeps its own (port, hba, settings)
    for (const f of NODE_CONFIG_FILES.filter((f) => f !== 'postgresql.auto.conf')) {
      if (existsSync(join(aside, f))) writeFileSync(join(opts.pgdata, f), readFileSync(join(aside, f)));
    }
    writeStandbyConfig(opts.pgdata, sys, appName, opts.slot);
    const clone = new PgInstance({ pgdata: opts.pgdata, binDir: opts.binDir });
    await clone.start();
    result.streaming = await waitStreaming(clone, timeoutMs);
    if (result.streaming) unfence();
    return result;
  };

  if (decision.path === 'reclone') return reclone(decision.reason);

  if (decision.path === 'follow') {
    await fetchHistories();
    if (opts.dryRun) return result;
    writeStandbyConfig(opts.pgdata, sys, appName, opts.slot);
    await local.start();
    result.streaming = await waitStreaming(local, timeoutMs);
    if (result.streaming) unfence();
    return result;
  }

  // rewind
  const forkLsn = decision.forkLsn!;
  await report(forkLsn);
  await fetchHistories();
  // pg_rewind reads this node's WAL back from the fork point to the last checkpoint before it, then
  // forward to its end: make sure those segments are here (fetched from the source or a peer)
  const segSize = control.walSegmentSize;
  const peers = [opts.source, ...(opts.peers ?? [])];
  // a dry run fetches into a scratch directory (to find the checkpoint pg_rewind will start from)
  // and leaves the data directory untouched
  const scratch = opts.dryRun ? mkdtempSync(join(tmpdir(), 'pgha-rejoin-plan-')) : null;
  const ensure = async (segno: bigint): Promise<string> => {
    const name = walFileName(localTli, segno, segSize);
    const path = join(pgwal, name);
    if (existsSync(path)) return path;
    for (const url of peers) {
      try {
        const d = await new AgentClient(url, opts.token).download(name, scratch ?? pgwal);
        result.fetched.push({ name, from: url, size: d.size, sha256: d.sha256 });
        log(`rejoin: ${scratch ? 'would fetch' : 'fetched'} ${name} (${d.size} bytes) from ${url}, sha256 verified`);
        return join(scratch ?? pgwal, name);
      } catch {
        // try the next peer
      }
    }
    throw new RejoinRefused(`WAL segment ${name} needed by pg_rewind is missing here and on every agent asked (${peers.join(', ')})`);
  };
  try {
    const forkSeg = segmentOf(forkLsn, segSize);
    let redoSeg: bigint | null = null;
    for (let seg = forkSeg, steps = 0; seg >= 0n && steps < 256; seg--, steps++) {
      const cps = await checkpointsIn(await ensure(seg), seg, segSize, forkLsn);
      if (cps.length) {
        redoSeg = segmentOf(cps[cps.length - 1].redo, segSize);
        break;
      }
    }
    if (redoSeg === null) throw new RejoinRefused(`no checkpoint found before the fork point ${formatLsn(forkLsn)} in the old timeline's WAL`);
    // crash recovery (if the node did not shut down cleanly) replays from pg_control's checkpoint
    const controlRedoSeg = segmentOf(control.checkpoint.redo, segSize);
    if (controlRedoSeg < redoSeg) redoSeg = controlRedoSeg;
    // the rest in parallel: a receiving agent is bound by hashing and copying on one core
    const rest: bigint[] = [];
    for (let seg = redoSeg; seg <= segmentOf(endLsn, segSize); seg++) rest.push(seg);
    await Promise.all(Array.from({ length: FETCH_CONCURRENCY }, async () => {
      for (let seg = rest.shift(); seg !== undefined; seg = rest.shift()) await ensure(seg);
    }));
  } catch (e) {
    // no rewind is possible without that WAL: a re-clone (only with allowReclone) or a refusal
    if (e instanceof RejoinRefused) return reclone(e.message);
    throw e;
  } finally {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  }
  if (opts.dryRun) return result;

  // a freshly promoted source must have checkpointed onto its new timeline before pg_rewind reads it
  await withNodeSql(sys, (c) => c.query('CHECKPOINT'), 10_000);
  // pg_rewind needs a cleanly shut down target. Its own crash recovery would end with a checkpoint
  // that removes the very WAL it is about to read (everything before the new REDO point): recover
  // here instead, in single-user mode, keeping all WAL, then run pg_rewind without that step.
  if (control.state !== 'shut down' && control.state !== 'shut down in recovery') {
    log(`rejoin: ${opts.pgdata} was not shut down cleanly (${control.state}): crash recovery in single-user mode, keeping its WAL`);
    // a fenced node has standby.signal, and a single-user server refuses standby mode ("standby
    // mode is not supported by single-user servers"): this is crash recovery only; the standby
    // configuration is written again after pg_rewind
    for (const f of ['standby.signal', 'recovery.signal']) rmSync(join(opts.pgdata, f), { force: true });
    await local.run('postgres', ['--single', '-F', '-c', 'wal_keep_size=1TB', '-c', 'archive_mode=off', '-D', opts.pgdata, 'template1'], { timeoutMs });
  }
  // pg_rewind copies every non-relation file from the source, configuration included (the node
  // would come up with the source's port and settings): keep this node's own and put them back
  const savedConfig = new Map(NODE_CONFIG_FILES.filter((f) => existsSync(join(opts.pgdata, f))).map((f) => [f, readFileSync(join(opts.pgdata, f))]));
  try {
    await local.run('pg_rewind', ['--target-pgdata', opts.pgdata, '--source-server', `${conninfo(sys, appName)} dbname=postgres`, '--write-recovery-conf', '--no-ensure-shutdown', '--progress'], { timeoutMs });
  } catch (e) {
    if (e instanceof PgToolError) return reclone(`pg_rewind failed: ${e.stderr.split('\n').filter(Boolean).slice(-2).join(' | ')}`);
    throw e;
  }
  for (const [f, bytes] of savedConfig) writeFileSync(join(opts.pgdata, f), bytes);
  writeStandbyConfig(opts.pgdata, sys, appName, opts.slot);
  await local.start();
  result.streaming = await waitStreaming(local, timeoutMs);
  if (result.streaming) unfence();
  return result;
}
