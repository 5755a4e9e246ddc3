/**
 * Which segment files make up one WAL stream: for a directory (pg_wal or an archive), pick per
 * segment number the file of the newest timeline on the target timeline's history whose start is
 * at or before that segment (XLogFileReadAnyTLI's rule), and stop at the first gap.
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { historyFileName, parseWalFileName, segmentOf } from '../formats/lsn.js';
import { parseHistory, timelineSpans, type TimelineHistory } from '../formats/timeline-history.js';
import { readHistoryBytes } from './bounded-read.js';

export interface SegmentFile {
  path: string;
  name: string;
  tli: number;
  segno: bigint;
  size: number;
  partial: boolean;
}

export interface SegmentSelection {
  files: SegmentFile[];
  timeline: number;
  history?: TimelineHistory;
  /** segment number after the last file, when the directory has a gap (or simply ends) */
  firstMissingSegno: bigint;
}

/** All WAL segment files (and .partial files) in a directory, parsed. */
export function listSegmentFiles(dir: string, segmentSize: number): SegmentFile[] {
  const out: SegmentFile[] = [];
  for (const name of readdirSync(dir)) {
    const info = parseWalFileName(name, segmentSize);
    if (!info || (info.kind !== 'segment' && info.kind !== 'partial') || info.segno === undefined) continue;
    const path = join(dir, name);
    const st = statSync(path);
    if (!st.isFile()) continue;
    out.push({ path, name, tli: info.tli, segno: info.segno, size: st.size, partial: info.kind === 'partial' });
  }
  return out.sort((a, b) => (a.segno === b.segno ? a.tli - b.tli : a.segno < b.segno ? -1 : 1));
}

/** Read `dir/%08X.history` when it exists (a regular file of at most 1 MiB, else a FormatError). */
export function readHistoryFor(dir: string, tli: number): TimelineHistory | undefined {
  if (tli <= 1) return undefined;
  const path = join(dir, historyFileName(tli));
  try {
    return parseHistory(readHistoryBytes(path), tli, path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

export interface SelectOptions {
  /** timeline to follow (default: the highest timeline with segment files) */
  timeline?: number;
  /** first segment to include (default: the lowest available on the path) */
  fromSegno?: bigint;
  /** include `.partial` files when no complete file exists for that segment */
  includePartial?: boolean;
}

export function selectSegments(dir: string, segmentSize: number, opts: SelectOptions = {}): SegmentSelection {
  const all = listSegmentFiles(dir, segmentSize);
  const complete = all.filter((f) => !f.partial);
  const pool = opts.includePartial ? all : complete;
  const timeline = opts.timeline ?? (complete.length ? Math.max(...complete.map((f) => f.tli)) : Math.max(0, ...all.map((f) => f.tli)));
  const history = readHistoryFor(dir, timeline);
  // newest first: {tli, beginSegno}
  const path = history
    ? timelineSpans(history).map((s) => ({ tli: s.tli, beginSegno: segmentOf(s.begin, segmentSize) }))
    : [{ tli: timeline, beginSegno: 0n }];
  const bySegno = new Map<bigint, SegmentFile[]>();
  for (const f of pool) {
    const list = bySegno.get(f.segno) ?? [];
    list.push(f);
    bySegno.set(f.segno, list);
  }
  const pick = (segno: bigint): SegmentFile | undefined => {
    const candidates = bySegno.get(segno);
    if (!candidates) return undefined;
    for (const step of path) {
      if (segno < step.beginSegno) continue;
      const hit = candidates.find((c) => c.tli === step.tli && !c.partial) ?? candidates.find((c) => c.tli === step.tli);
      if (hit) return hit;
    }
    return undefined;
  };
  const segnos = [...bySegno.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  let segno = opts.fromSegno ?? segnos.find((s) => pick(s) !== undefined);
  const files: SegmentFile[] = [];
  if (segno !== undefined) {
    for (;;) {
      const f = pick(segno);
      if (!f) break;
      files.push(f);
      segno++;
    }
  }
  return { files, timeline, history, firstMissingSegno: segno ?? 0n };
}
