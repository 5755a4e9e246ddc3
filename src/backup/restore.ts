/**
 * `pgha backup restore`: the plan (which backup, which timeline, which WAL range) and carrying it
 * out — the backup's tar stream unpacked into a new data directory with every file checked against
 * the manifest, owned like the directory it is made in, then the recovery settings
 * (restore_command through `pgha archive get`, recovery_target_*) and recovery.signal, or
 * standby.signal and primary_conninfo for a new standby of the cluster.
 */
import { createHash } from 'node:crypto';
import { chown, mkdir, open, readdir, rm, stat, writeFile, appendFile } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import tarStream from 'tar-stream';
import { formatLsn, parseLsn, segmentOf, segmentStartLsn, walFileName, type Lsn } from '../formats/lsn.js';
import { decompressStream, HashingStream } from './codec.js';
import { RepoProblem, type BackupManifest, type Repository } from './repo.js';
import { onPath, pathSteps, SegmentIndex } from './walpath.js';

export interface RestoreTarget {
  /** recovery_target_time as given (passed to PostgreSQL unchanged) */
  time?: string;
  lsn?: string;
  name?: string;
  /** a timeline ID or 'latest' (default) */
  timeline?: number | 'latest';
}

export interface RestorePlan {
  backup: BackupManifest;
  timeline: number;
  target: RestoreTarget;
  wal: {
    /** first segment recovery reads from the archive (the backup's start) */
    firstSegment: string;
    startLsn: string;
    /** the last segment it can read without a gap on the path (null: none archived yet) */
    lastSegment: string | null;
    /** where that archived WAL ends */
    endLsn: string;
    segments: number;
    /** the missing segment that ends the usable range early, if any */
    gap: string | null;
  };
}

function parseTime(text: string): number {
  const t = Date.parse(text.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00'));
  if (Number.isNaN(t)) throw new RepoProblem(`bad --target-time "${text}": expected a timestamp such as 2026-12-03 05:49:22.123+00`);
  return t;
}

export async function planRestore(repo: Repository, target: RestoreTarget, backupLabel?: string): Promise<RestorePlan> {
  const cfg = await repo.config();
  if (!cfg) throw new RepoProblem(`${repo.location} is not a backup repository (no pgha-repo.json)`);
  const segSize = cfg.segmentSize;
  const entries = await repo.walEntries();
  const listing = await repo.backups();
  const timelines = entries.map((e) => e.tli);
  const timeline = target.timeline === undefined || target.timeline === 'latest' ? Math.max(1, ...timelines, ...listing.flatMap((b) => (b.manifest ? [b.manifest.stopTimeline] : []))) : target.timeline;
  const history = await repo.history(timeline, entries);
  if (timeline > 1 && !history) throw new RepoProblem(`timeline ${timeline}: no ${timeline.toString(16).toUpperCase().padStart(8, '0')}.history in the archive`);
  const steps = pathSteps(history, timeline, segSize);
  const targetLsn = target.lsn !== undefined ? parseLsn(target.lsn) : undefined;
  const targetTime = target.time !== undefined ? parseTime(target.time) : undefined;
  let candidates: BackupManifest[];
  if (backupLabel) {
    const b = listing.find((x) => x.label === backupLabel);
    if (!b) throw new RepoProblem(`no backup ${backupLabel} in ${repo.location}`);
    if (!b.manifest) throw new RepoProblem(b.problem!);
    candidates = [b.manifest];
  } else {
    const bad = listing.filter((b) => !b.manifest);
    candidates = listing.flatMap((b) => (b.manifest ? [b.manifest] : []));
    if (candidates.length === 0) throw new RepoProblem(bad.length ? bad[0].problem! : `no backup in ${repo.location}`);
  }
  const usable = candidates.filter(
    (b) =>
      b.systemId === cfg.systemId &&
      onPath(steps, b.timeline, segmentOf(parseLsn(b.startLsn), segSize)) &&
      onPath(steps, b.stopTimeline, segmentOf(parseLsn(b.stopLsn), segSize)) &&
      (targetLsn === undefined || parseLsn(b.stopLsn) <= targetLsn) &&
      (targetTime === undefined || Date.parse(b.stopTime) <= targetTime),
  );
  const backup = usable[usable.length - 1];
  if (!backup) {
    const what = targetLsn !== undefined ? ` that ends before ${target.lsn}` : targetTime !== undefined ? ` that ends before ${target.time}` : '';
    throw new RepoProblem(`no backup on timeline ${timeline}'s history${what} in ${repo.location} (${candidates.length} backup(s): ${candidates.map((b) => `${b.label} timeline ${b.timeline} ${b.startLsn}-${b.stopLsn} ${b.stopTime}`).join(', ')})`);
  }
  const index = new SegmentIndex(entries);
  const from = segmentOf(parseLsn(backup.startLsn), segSize);
  const lastWanted = targetLsn !== undefined ? segmentOf(targetLsn, segSize) : null;
  let last: bigint | null = null;
  let gap: string | null = null;
  let count = 0;
  for (let s = from; lastWanted === null || s <= lastWanted; s++) {
    const e = index.pick(steps, s);
    if (!e) {
      if (index.nextOnPath(steps, s + 1n) !== undefined || (lastWanted !== null && s <= lastWanted)) gap = index.expectedName(steps, s, segSize);
      break;
    }
    last = s;
    count++;
  }
  const name = (s: bigint) => index.expectedName(steps, s, segSize);
  return {
    backup,
    timeline,
    target,
    wal: {
      firstSegment: name(from),
      startLsn: backup.startLsn,
      lastSegment: last === null ? null : name(last),
      endLsn: formatLsn(last === null ? parseLsn(backup.stopLsn) : segmentStartLsn(last + 1n, segSize)),
      segments: count,
      gap,
    },
  };
}

export interface RestoreOptions {
  repo: Repository;
  to: string;
  target: RestoreTarget;
  backup?: string;
  /** the shell command PostgreSQL runs to fetch WAL (`… archive get %f "%p" --repo …`) */
  restoreCommand: string;
  /** primary_conninfo: the restored node comes up as a standby of that server */
  standbyOf?: string;
  /** recovery_target_action (default promote) */
  targetAction?: 'promote' | 'pause' | 'shutdown';
  /** keep archive_mode as the backup has it (default: off, so a test restore never writes into the archive) */
  keepArchiving?: boolean;
  /** more settings for postgresql.auto.conf (port, unix_socket_directories…) */
  settings?: Record<string, string>;
  dryRun?: boolean;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

export interface RestoreReport {
  dryRun: boolean;
  to: string;
  backup: { label: string; startLsn: string; stopLsn: string; timeline: number; stopTime: string };
  timeline: number;
  wal: RestorePlan['wal'];
  target: RestoreTarget;
  signal: 'recovery.signal' | 'standby.signal';
  settings: Record<string, string>;
  files: number;
  bytes: number;
}

const quoteConf = (v: string) => `'${v.replace(/'/g, "''")}'`;

export async function restoreBackup(o: RestoreOptions): Promise<RestoreReport> {
  const targets = [o.target.time, o.target.lsn, o.target.name].filter((x) => x !== undefined);
  if (targets.length > 1) throw new RepoProblem('give at most one of --target-time, --target-lsn, --target-name');
  if (o.standbyOf && targets.length) throw new RepoProblem('a standby (--standby-of) follows its primary: no recovery target');
  const plan = await planRestore(o.repo, o.target, o.backup);
  const to = resolve(o.to);
  const settings: Record<string, string> = { restore_command: o.restoreCommand };
  if (o.target.time !== undefined) settings.recovery_target_time = o.target.time;
  if (o.target.lsn !== undefined) settings.recovery_target_lsn = formatLsn(parseLsn(o.target.lsn));
  if (o.target.name !== undefined) settings.recovery_target_name = o.target.name;
  settings.recovery_target_timeline = o.target.timeline === undefined || o.target.timeline === 'latest' ? 'latest' : String(o.target.timeline);
  if (targets.length) settings.recovery_target_action = o.targetAction ?? 'promote';
  if (o.standbyOf) settings.primary_conninfo = o.standbyOf;
  if (!o.keepArchiving) settings.archive_mode = 'off';
  Object.assign(settings, o.settings ?? {});
  const signal = o.standbyOf ? 'standby.signal' : 'recovery.signal';
  const b = plan.backup;
  const report: RestoreReport = {
    dryRun: o.dryRun === true,
    to,
    backup: { label: b.label, startLsn: b.startLsn, stopLsn: b.stopLsn, timeline: b.timeline, stopTime: b.stopTime },
    timeline: plan.timeline,
    wal: plan.wal,
    target: o.target,
    signal,
    settings,
    files: 0,
    bytes: 0,
  };
  // the target directory: absent or empty (never over a data directory)
  let created = false;
  try {
    const st = await stat(to);
    if (!st.isDirectory()) throw new RepoProblem(`${to} exists and is not a directory`);
    if ((await readdir(to)).length > 0) throw new RepoProblem(`${to} is not empty: restore only into a new or empty directory`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    created = true;
  }
  if (o.dryRun) return report;
  const owner = process.getuid?.() === 0 ? await stat(dirname(to)) : null;
  await mkdir(to, { recursive: true, mode: 0o700 });
  try {
    const counts = await unpack(o.repo, b, to, o.onProgress);
    report.files = counts.files;
    report.bytes = counts.bytes;
    for (const f of ['postmaster.pid', 'postmaster.opts', 'recovery.signal', 'standby.signal']) await rm(join(to, f), { force: true });
    const lines = [`# written by pgha backup restore of ${b.label} (${new Date().toISOString()})`, ...Object.entries(settings).map(([k, v]) => `${k} = ${quoteConf(v)}`)];
    await appendFile(join(to, 'postgresql.auto.conf'), `\n${lines.join('\n')}\n`);
    await writeFile(join(to, signal), '');
    if (owner && (owner.uid !== 0 || owner.gid !== 0)) await chownTree(to, owner.uid, owner.gid);
  } catch (e) {
    if (created) await rm(to, { recursive: true, force: true });
    else for (const n of await readdir(to).catch(() => [] as string[])) await rm(join(to, n), { recursive: true, force: true });
    throw e;
  }
  return report;
}

async function chownTree(dir: string, uid: number, gid: number): Promise<void> {
  await chown(dir, uid, gid);
  for (const d of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, d.name);
    if (d.isDirectory()) await chownTree(p, uid, gid);
    else await chown(p, uid, gid);
  }
}

/** unpack the backup's tar stream into `to`, every file checked against the manifest */
async function unpack(repo: Repository, m: BackupManifest, to: string, onProgress?: (done: number, total: number) => void): Promise<{ files: number; bytes: number }> {
  const where = `${repo.location}/${m.object.key}`;
  const want = new Map([...m.files, ...m.walFiles].map((f) => [f.path, f]));
  const seen = new Set<string>();
  const raw = new HashingStream((n) => onProgress?.(n, m.object.size));
  const extract = tarStream.extract();
  let files = 0;
  const root = to.endsWith(sep) ? to : to + sep;
  const entries = (async () => {
    for await (const entry of extract) {
      const name = entry.header.name.replace(/^\.\//, '').replace(/\/$/, '');
      const path = resolve(to, name);
      if (name === '' || !path.startsWith(root)) throw new RepoProblem(`${where}: refuses the entry ${JSON.stringify(entry.header.name)} (outside the target)`);
      if (entry.header.type === 'directory') {
        await mkdir(path, { recursive: true, mode: 0o700 });
        entry.resume();
        continue;
      }
      if (entry.header.type !== 'file') throw new RepoProblem(`${where}: ${entry.header.type} ${name}: only files and directories are restored`);
      await mkdir(dirname(path), { recursive: true, mode: 0o700 });
      const fh = await open(path, 'wx', (entry.header.mode ?? 0o600) & 0o700 || 0o600);
      const h = createHash('sha256');
      let size = 0;
      try {
        for await (const c of entry as AsyncIterable<Buffer>) {
          h.update(c);
          size += c.length;
          for (let off = 0; off < c.length; ) off += (await fh.write(c, off, c.length - off)).bytesWritten;
        }
        // no fsync per file: a restored directory starts with backup_label, and PostgreSQL syncs
        // the whole data directory before it begins recovery (SyncDataDirectory)
      } finally {
        await fh.close();
      }
      files++;
      const f = want.get(name);
      const sha = h.digest('hex');
      if (!f) throw new RepoProblem(`${where}: holds ${name}, which the manifest does not list`);
      if (f.size !== size || f.sha256 !== sha) throw new RepoProblem(`${where}: ${name} does not match the manifest (sha256:${sha}, expected sha256:${f.sha256})`);
      seen.add(name);
    }
  })();
  try {
    await Promise.all([pipeline(await repo.storage.get(m.object.key), decompressStream(m.object.compression), raw, extract), entries]);
  } catch (e) {
    if (e instanceof RepoProblem) throw e;
    throw new RepoProblem(`${where}: cannot be restored (${(e as Error).message})`);
  }
  if (raw.sha256 !== m.object.sha256) throw new RepoProblem(`${where}: checksum mismatch (expected sha256:${m.object.sha256}, got sha256:${raw.sha256})`);
  const missing = [...want.keys()].filter((k) => !seen.has(k));
  if (missing.length) throw new RepoProblem(`${where}: lacks ${missing.length} file(s) the manifest lists, first ${missing[0]}`);
  return { files, bytes: raw.bytes };
}

export const segmentName = (tli: number, lsn: Lsn, segmentSize: number): string => walFileName(tli, segmentOf(lsn, segmentSize), segmentSize);
