/**
 * Which archived file holds each segment on one timeline's history (XLogFileReadAnyTLI's rule over
 * the repository's listing): for a segment, the newest timeline on the path whose span covers it.
 */
import { segmentOf, walFileName } from '../formats/lsn.js';
import { timelineSpans, type TimelineHistory } from '../formats/timeline-history.js';
import type { WalEntry } from './repo.js';

export interface PathStep {
  tli: number;
  beginSegno: bigint;
  /** the segment holding the switch to the next timeline (null: the tip) */
  endSegno: bigint | null;
}

/** newest first */
export function pathSteps(history: TimelineHistory | undefined, tli: number, segmentSize: number): PathStep[] {
  if (!history) return [{ tli, beginSegno: 0n, endSegno: null }];
  return timelineSpans(history).map((s) => ({ tli: s.tli, beginSegno: segmentOf(s.begin, segmentSize), endSegno: s.end === null ? null : segmentOf(s.end, segmentSize) }));
}

export function onPath(steps: PathStep[], tli: number, segno: bigint): boolean {
  return steps.some((s) => s.tli === tli && segno >= s.beginSegno && (s.endSegno === null || segno <= s.endSegno));
}

export class SegmentIndex {
  private readonly bySegno = new Map<bigint, WalEntry[]>();
  constructor(entries: WalEntry[]) {
    for (const e of entries) {
      if ((e.kind !== 'segment' && e.kind !== 'partial') || e.segno === undefined) continue;
      const list = this.bySegno.get(e.segno) ?? [];
      list.push(e);
      this.bySegno.set(e.segno, list);
    }
  }

  /** the file for `segno` on this path; a .partial only when `partial` allows it and no complete file is there */
  pick(steps: PathStep[], segno: bigint, partial = false): WalEntry | undefined {
    const candidates = this.bySegno.get(segno);
    if (!candidates) return undefined;
    for (const s of steps) {
      if (segno < s.beginSegno || (s.endSegno !== null && segno > s.endSegno)) continue;
      const hit = candidates.find((c) => c.tli === s.tli && c.kind === 'segment') ?? (partial ? candidates.find((c) => c.tli === s.tli && c.kind === 'partial') : undefined);
      if (hit) return hit;
    }
    return undefined;
  }

  /** the name recovery would ask for at `segno` on this path (the newest timeline covering it) */
  expectedName(steps: PathStep[], segno: bigint, segmentSize: number): string {
    const s = steps.find((x) => segno >= x.beginSegno && (x.endSegno === null || segno <= x.endSegno)) ?? steps[0];
    return walFileName(s.tli, segno, segmentSize);
  }

  /** the lowest segment number at or after `from` that has a file on this path */
  nextOnPath(steps: PathStep[], from: bigint): bigint | undefined {
    const segnos = [...this.bySegno.keys()].filter((s) => s >= from).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    return segnos.find((s) => this.pick(steps, s, true) !== undefined);
  }

  segnosOf(tli: number): bigint[] {
    const out: bigint[] = [];
    for (const [segno, list] of this.bySegno) if (list.some((e) => e.tli === tli)) out.push(segno);
    return out.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }
}
