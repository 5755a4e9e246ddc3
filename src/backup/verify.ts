/**
 * `pgha backup verify`: every timeline of the archive scanned with pgwal's scanner — from the start
 * of the earliest backup on its history (or its first archived segment) to its last archived
 * segment, following history files across timeline switches; every page header and record CRC is
 * checked, every file's sha256 against its key. Every backup's manifest, and (unless skipped) its
 * data: the stored object's sha256 and every file in it against the manifest. The first gap or
 * damaged record is named with its file and LSN.
 */
import { createHash } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import tarStream from 'tar-stream';
import { formatLsn, parseLsn, segmentOf, segmentStartLsn, type Lsn } from '../formats/lsn.js';
import type { ScanCarry } from '../formats/wal/contract.js';
import { activeImplementation } from '../native/index.js';
import { decompressStream, HashingStream } from './codec.js';
import { RepoProblem, type BackupManifest, type Repository, type WalEntry } from './repo.js';
import { onPath, pathSteps, SegmentIndex, type PathStep } from './walpath.js';

export type ProblemKind = 'gap' | 'damaged' | 'checksum' | 'history' | 'manifest' | 'backup' | 'conflict' | 'foreign';

export interface VerifyProblem {
  kind: ProblemKind;
  timeline: number | null;
  /** the repository key (or the missing segment's name) */
  file: string | null;
  lsn: string | null;
  message: string;
}

export interface TimelineReport {
  timeline: number;
  backups: string[];
  firstSegment: string | null;
  lastSegment: string | null;
  startLsn: string | null;
  /** end of valid WAL reached (the end of the last segment scanned, or where a .partial's WAL ends) */
  endLsn: string | null;
  segments: number;
  records: number;
  ok: boolean;
}

export interface BackupReport {
  label: string;
  ok: boolean;
  dataChecked: boolean;
  problem: string | null;
}

export interface VerifyReport {
  ok: boolean;
  repo: string;
  systemId: string | null;
  backups: BackupReport[];
  timelines: TimelineReport[];
  problems: VerifyProblem[];
}

export interface VerifyOptions {
  /** do not read the backups' data (manifests are still checked) */
  skipBackupData?: boolean;
  onProgress?: (done: number, total: number, what: string) => void;
}

export async function verifyRepository(repo: Repository, o: VerifyOptions = {}): Promise<VerifyReport> {
  const cfg = await repo.config();
  const report: VerifyReport = { ok: true, repo: repo.location, systemId: cfg?.systemId ?? null, backups: [], timelines: [], problems: [] };
  const problem = (p: VerifyProblem) => {
    report.ok = false;
    report.problems.push(p);
  };
  const entries = await repo.walEntries();
  const listing = await repo.backups();
  if (!cfg) {
    if (entries.length || listing.length) problem({ kind: 'manifest', timeline: null, file: 'pgha-repo.json', lsn: null, message: `${repo.location}: no pgha-repo.json, yet the repository holds files` });
    return report;
  }
  const segSize = cfg.segmentSize;
  // two contents under one name
  const byName = new Map<string, WalEntry[]>();
  for (const e of entries) byName.set(e.name, [...(byName.get(e.name) ?? []), e]);
  for (const [name, list] of byName) {
    if (new Set(list.map((e) => e.sha256)).size > 1) problem({ kind: 'conflict', timeline: list[0].tli, file: name, lsn: null, message: `${name} is archived with ${list.length} different contents` });
  }
  const backups: BackupManifest[] = [];
  for (const b of listing) {
    if (!b.manifest) {
      report.backups.push({ label: b.label, ok: false, dataChecked: false, problem: b.problem });
      problem({ kind: 'manifest', timeline: null, file: `backups/${b.label}/manifest.json`, lsn: null, message: b.problem! });
      continue;
    }
    if (b.manifest.systemId !== cfg.systemId) {
      const message = `backup ${b.label} is of database system ${b.manifest.systemId}, the repository of ${cfg.systemId}`;
      report.backups.push({ label: b.label, ok: false, dataChecked: false, problem: message });
      problem({ kind: 'foreign', timeline: b.manifest.timeline, file: `backups/${b.label}/manifest.json`, lsn: null, message });
      continue;
    }
    backups.push(b.manifest);
  }

  const index = new SegmentIndex(entries);
  const timelines = [...new Set(entries.filter((e) => e.kind === 'segment' || e.kind === 'partial').map((e) => e.tli))].sort((a, b) => a - b);
  const plans: Array<{ tli: number; steps: PathStep[]; from: bigint; to: bigint; backups: BackupManifest[] }> = [];
  for (const tli of timelines) {
    let history;
    try {
      history = await repo.history(tli, entries);
    } catch (e) {
      problem({ kind: 'history', timeline: tli, file: `${tli.toString(16).toUpperCase().padStart(8, '0')}.history`, lsn: null, message: (e as Error).message });
      continue;
    }
    if (tli > 1 && !history) {
      problem({ kind: 'history', timeline: tli, file: `${tli.toString(16).toUpperCase().padStart(8, '0')}.history`, lsn: null, message: `timeline ${tli} has WAL in the archive but no history file` });
      continue;
    }
    const steps = pathSteps(history, tli, segSize);
    const own = index.segnosOf(tli);
    const to = own[own.length - 1];
    const on = backups.filter((b) => onPath(steps, b.timeline, segmentOf(parseLsn(b.startLsn), segSize)) && segmentOf(parseLsn(b.startLsn), segSize) <= to);
    const from = on.length ? on.map((b) => segmentOf(parseLsn(b.startLsn), segSize)).reduce((a, b) => (a < b ? a : b)) : index.nextOnPath(steps, 0n);
    if (from === undefined) continue;
    plans.push({ tli, steps, from, to, backups: on });
  }
  const totalSegments = plans.reduce((n, p) => n + Number(p.to - p.from + 1n), 0) + (o.skipBackupData ? 0 : backups.length);
  let done = 0;
  const impl = activeImplementation();
  for (const p of plans) {
    const t: TimelineReport = { timeline: p.tli, backups: p.backups.map((b) => b.label), firstSegment: null, lastSegment: null, startLsn: formatLsn(segmentStartLsn(p.from, segSize)), endLsn: null, segments: 0, records: 0, ok: true };
    report.timelines.push(t);
    const fail = (x: Omit<VerifyProblem, 'timeline'>) => {
      t.ok = false;
      problem({ ...x, timeline: p.tli, message: `timeline ${p.tli}: ${x.message}` });
    };
    let carry: ScanCarry | null = null;
    for (let segno = p.from; segno <= p.to; segno++) {
      o.onProgress?.(++done, totalSegments, `timeline ${p.tli}`);
      const e = index.pick(p.steps, segno, segno === p.to);
      const at = segmentStartLsn(segno, segSize);
      if (!e) {
        const name = index.expectedName(p.steps, segno, segSize);
        const next = index.nextOnPath(p.steps, segno + 1n);
        fail({
          kind: 'gap',
          file: name,
          lsn: formatLsn(at),
          message: `WAL segment ${name} is missing from the archive (WAL ${formatLsn(at)} to ${formatLsn(at + BigInt(segSize))})${next !== undefined && next <= p.to ? `; the archive goes on at ${index.expectedName(p.steps, next, segSize)}` : ''}`,
        });
        break;
      }
      let bytes: Buffer;
      let checksumOk: boolean;
      try {
        ({ bytes, checksumOk } = await repo.readWal(e, segSize, { allowMismatch: true }));
      } catch (err) {
        if (!(err instanceof RepoProblem)) throw err;
        fail({ kind: 'checksum', file: e.key, lsn: formatLsn(at), message: err.message });
        break;
      }
      t.firstSegment ??= e.name;
      t.lastSegment = e.name;
      t.segments++;
      if (bytes.length !== segSize) {
        fail({ kind: 'damaged', file: e.key, lsn: formatLsn(at + BigInt(bytes.length)), message: `${e.name}: ${bytes.length} bytes, expected ${segSize}` });
        break;
      }
      if (carry === null && bytes.readBigUInt64LE(24) !== BigInt(cfg.systemId)) {
        fail({ kind: 'foreign', file: e.key, lsn: formatLsn(at), message: `${e.name} is WAL of database system ${bytes.readBigUInt64LE(24)}, the repository of ${cfg.systemId}` });
        break;
      }
      const r = await impl.scanWalAsync(bytes, { bufLsn: at, carry, mode: 'stats' });
      carry = r.carry;
      t.records += r.count;
      const sumNote = checksumOk ? '' : `its content does not match the sha256 in its key (sha256:${e.sha256}); `;
      if (r.end && !(e.kind === 'partial' && segno === p.to)) {
        fail({ kind: 'damaged', file: e.key, lsn: formatLsn(r.end.lsn), message: `${e.name}: ${sumNote}damaged WAL at ${formatLsn(r.end.lsn)} (offset ${Number(r.end.lsn - at)}): ${r.end.reason}: ${r.end.message}` });
        break;
      }
      if (!checksumOk) {
        fail({ kind: 'checksum', file: e.key, lsn: formatLsn(at), message: `${e.name}: ${sumNote.replace(/; $/, '')}` });
        break;
      }
      t.endLsn = formatLsn(r.end ? r.end.lsn : at + BigInt(segSize));
    }
  }

  for (const b of backups) {
    const br: BackupReport = { label: b.label, ok: true, dataChecked: false, problem: null };
    report.backups.push(br);
    if (o.skipBackupData) continue;
    o.onProgress?.(++done, totalSegments, `backup ${b.label}`);
    try {
      await checkBackupData(repo, b);
      br.dataChecked = true;
    } catch (e) {
      if (!(e instanceof RepoProblem)) throw e;
      br.ok = false;
      br.problem = e.message;
      problem({ kind: 'backup', timeline: b.timeline, file: b.object.key, lsn: null, message: e.message });
    }
  }
  return report;
}

/** read a backup's object: its sha256, and every file in it against the manifest */
export async function checkBackupData(repo: Repository, m: BackupManifest): Promise<void> {
  const where = `${repo.location}/${m.object.key}`;
  const want = new Map([...m.files, ...m.walFiles].map((f) => [f.path, f]));
  const seen = new Set<string>();
  const raw = new HashingStream();
  const extract = tarStream.extract();
  const entries = (async () => {
    for await (const entry of extract) {
      const name = entry.header.name.replace(/^\.\//, '').replace(/\/$/, '');
      const h = createHash('sha256');
      let size = 0;
      for await (const c of entry as AsyncIterable<Buffer>) {
        h.update(c);
        size += c.length;
      }
      const f = want.get(name);
      if (entry.header.type !== 'file') continue;
      if (!f) throw new RepoProblem(`${where}: holds ${name}, which the manifest does not list`);
      const sha = h.digest('hex');
      if (f.size !== size || f.sha256 !== sha) throw new RepoProblem(`${where}: ${name} does not match the manifest (size ${size}, expected ${f.size}; sha256:${sha}, expected sha256:${f.sha256})`);
      seen.add(name);
    }
  })();
  try {
    await Promise.all([pipeline(await repo.storage.get(m.object.key), decompressStream(m.object.compression), raw, extract), entries]);
  } catch (e) {
    if (e instanceof RepoProblem) throw e;
    throw new RepoProblem(`${where}: cannot be read back (${(e as Error).message})`);
  }
  if (raw.sha256 !== m.object.sha256 || raw.bytes !== m.object.size) {
    throw new RepoProblem(`${where}: checksum mismatch (expected sha256:${m.object.sha256} over ${m.object.size} bytes, got sha256:${raw.sha256} over ${raw.bytes})`);
  }
  const missing = [...want.keys()].filter((k) => !seen.has(k));
  if (missing.length) throw new RepoProblem(`${where}: lacks ${missing.length} file(s) the manifest lists, first ${missing[0]}`);
}

export const lsnOf = (l: string): Lsn => parseLsn(l);
