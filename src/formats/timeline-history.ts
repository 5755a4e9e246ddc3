/**
 * Timeline history files (`pg_wal/%08X.history`), parsed with readTimeLineHistory's rules
 * (src/backend/access/transam/timeline.c): leading whitespace skipped, blank and `#` lines ignored,
 * `sscanf("%u\t%X/%X")` per line (whitespace runs match the tab, the rest is the reason), parent TLIs
 * strictly increasing and below the file's own TLI. Anything else is a HistoryFormatError.
 */
import { HistoryFormatError } from './errors.js';
import { formatLsn, parseLsn, type Lsn } from './lsn.js';

export interface HistoryEntry {
  /** the timeline that was in use up to the switchpoint */
  parentTimeline: number;
  /** LSN where the next timeline begins */
  switchpoint: Lsn;
  /** free text written by the server (recovery stop reason) */
  reason: string;
}

export interface TimelineHistory {
  /** the file's own timeline (the tip); from the file name when known, else last parent + 1 */
  timeline: number;
  /** oldest first, as in the file */
  entries: HistoryEntry[];
}

/** One timeline's span in a history, as readTimeLineHistory builds it: [begin, end), end 0n = open. */
export interface TimelineSpan {
  tli: number;
  begin: Lsn;
  end: Lsn | null;
}

const UINT32_MAX = 0xffffffff;

/** Parse the text of a history file. `timeline` is the file's own TLI (from its name) when known. */
export function parseHistory(text: string | Uint8Array, timeline?: number, file?: string): TimelineHistory {
  const buf = typeof text === 'string' ? Buffer.from(text, 'utf8') : Buffer.from(text.buffer, text.byteOffset, text.byteLength);
  if (buf.includes(0)) {
    throw new HistoryFormatError('not a timeline history file: contains NUL bytes', { file, offset: buf.indexOf(0), expected: 'text' });
  }
  const content = buf.toString('latin1');
  const entries: HistoryEntry[] = [];
  let lineNo = 0;
  let offset = 0;
  for (const raw of content.split('\n')) {
    lineNo++;
    const lineOffset = offset;
    offset += raw.length + 1;
    const line = raw.replace(/^[ \t\r\f\v]+/, '');
    if (line === '' || line.startsWith('#')) continue;
    const m = /^(\d+)[ \t\r\f\v]+([0-9A-Fa-f]+)\/([0-9A-Fa-f]+)(.*)$/s.exec(line);
    if (!m) {
      throw new HistoryFormatError('syntax error in history file', {
        file,
        line: lineNo,
        offset: lineOffset,
        expected: '"<parentTLI>\\t<X/X>\\t<reason>"',
        got: JSON.stringify(raw.slice(0, 60)),
      });
    }
    const tli = Number(m[1]);
    const hi = parseInt(m[2], 16);
    const lo = parseInt(m[3], 16);
    if (!Number.isSafeInteger(tli) || tli > UINT32_MAX || tli === 0 || m[2].length > 8 || m[3].length > 8) {
      throw new HistoryFormatError('value out of range in history file', { file, line: lineNo, offset: lineOffset, got: JSON.stringify(raw.slice(0, 60)) });
    }
    const prev = entries[entries.length - 1];
    if (prev && tli <= prev.parentTimeline) {
      throw new HistoryFormatError('timeline IDs must be in increasing sequence', {
        file,
        line: lineNo,
        offset: lineOffset,
        expected: `> ${prev.parentTimeline}`,
        got: String(tli),
      });
    }
    const switchpoint = (BigInt(hi) << 32n) | BigInt(lo);
    entries.push({ parentTimeline: tli, switchpoint, reason: m[4].replace(/^[ \t]+/, '').replace(/\r$/, '') });
  }
  const last = entries[entries.length - 1];
  const own = timeline ?? (last ? last.parentTimeline + 1 : 1);
  if (last && last.parentTimeline >= own) {
    throw new HistoryFormatError('timeline IDs must be less than child timeline\'s ID', {
      file,
      expected: `< ${own}`,
      got: String(last.parentTimeline),
    });
  }
  return { timeline: own, entries };
}

/** writeTimeLineHistory's format for appending one switch to a parent history. */
export function formatHistory(history: TimelineHistory): string {
  // the server copies the parent file, then writes "\n" (if there was a parent file) and the new line
  let out = '';
  history.entries.forEach((e, i) => {
    if (i > 0) out += '\n';
    out += `${e.parentTimeline}\t${formatLsn(e.switchpoint)}\t${e.reason}\n`;
  });
  return out;
}

/** The spans of every timeline in the history, newest first (readTimeLineHistory's list). */
export function timelineSpans(history: TimelineHistory): TimelineSpan[] {
  const spans: TimelineSpan[] = [];
  let begin = 0n;
  for (const e of history.entries) {
    spans.push({ tli: e.parentTimeline, begin, end: e.switchpoint });
    begin = e.switchpoint;
  }
  spans.push({ tli: history.timeline, begin, end: null });
  return spans.reverse();
}

/** tliOfPointInHistory: the timeline in use at `lsn` on this history, or undefined. */
export function timelineAt(history: TimelineHistory, lsn: Lsn): number | undefined {
  for (const s of timelineSpans(history)) {
    if (lsn >= s.begin && (s.end === null || lsn < s.end)) return s.tli;
  }
  return undefined;
}

/**
 * The timeline whose file holds WAL segment `segno` on this history (pg_rewind's
 * SimpleXLogPageRead rule): the one in use at the segment's last byte, since a promotion copies the
 * segment it happens in into the new timeline's file. A segment wholly before a switch is read from
 * the parent timeline's file: a node's older segments keep their timeline's name.
 */
export function timelineOfSegment(history: TimelineHistory, segno: bigint, segmentSize: number): number {
  return timelineAt(history, (segno + 1n) * BigInt(segmentSize) - 1n) ?? history.timeline;
}

/** tliSwitchPoint: where `tli` ends on this history (null = it is the tip), undefined if absent. */
export function switchpointOf(history: TimelineHistory, tli: number): Lsn | null | undefined {
  const span = timelineSpans(history).find((s) => s.tli === tli);
  return span === undefined ? undefined : span.end;
}

export interface ValidLsnAnswer {
  valid: boolean;
  /** number of timeline switches in this history at or after `lsn` */
  switchesAfter: number;
  /** the switchpoint of `tli` on this history (null if it is the tip, undefined if absent) */
  switchpoint: Lsn | null | undefined;
  reason: string;
}

/**
 * Could a server that stopped at (tli, lsn) follow a node with this history without a rewind?
 * Yes iff `tli` is in the history and lsn ≤ switchpoint(tli) (equality is fine: the new timeline
 * starts exactly there). The walsender's rule: "requested starting point X on timeline T is not in
 * this server's history" when switchpoint < X.
 */
export function validLsn(history: TimelineHistory, tli: number, lsn: Lsn): ValidLsnAnswer {
  const switchesAfter = history.entries.filter((e) => e.switchpoint >= lsn).length;
  const switchpoint = switchpointOf(history, tli);
  if (switchpoint === undefined) {
    return { valid: false, switchesAfter, switchpoint, reason: `timeline ${tli} is not in this server's history` };
  }
  if (switchpoint !== null && lsn > switchpoint) {
    return {
      valid: false,
      switchesAfter,
      switchpoint,
      reason: `requested starting point ${formatLsn(lsn)} on timeline ${tli} is not in this server's history; it forked from timeline ${tli} at ${formatLsn(switchpoint)}`,
    };
  }
  // the point must also not lie before the timeline began on this history
  const span = timelineSpans(history).find((s) => s.tli === tli)!;
  if (lsn < span.begin) {
    return { valid: false, switchesAfter, switchpoint, reason: `timeline ${tli} begins at ${formatLsn(span.begin)} on this history, after ${formatLsn(lsn)}` };
  }
  return {
    valid: true,
    switchesAfter,
    switchpoint,
    reason: switchpoint === null ? `timeline ${tli} is this server's current timeline` : `timeline ${tli} switched at ${formatLsn(switchpoint)} on this history`,
  };
}

/**
 * The validLsn answer as the REST design spells it (`GET validLsn/:tli/:lsn`, `pgwal validlsn --json`):
 * `{"code":0,"msg":"Valid lsn","cnt":N}` or code 1 / "Invalid lsn"; `answer` has the reason.
 */
export function validLsnAnswer(history: TimelineHistory, tli: number, lsnText: string) {
  const answer = validLsn(history, tli, parseLsn(lsnText));
  return {
    json: { code: answer.valid ? 0 : 1, msg: answer.valid ? 'Valid lsn' : 'Invalid lsn', cnt: answer.switchesAfter },
    answer,
  };
}

/**
 * pg_rewind's findCommonAncestorTimeline: walk both histories oldest-first while the timeline and
 * its begin point agree; the divergence point is min(end) of the last common span.
 */
export function forkPoint(a: TimelineHistory, b: TimelineHistory): { tli: number; lsn: Lsn | null } | undefined {
  const sa = timelineSpans(a).reverse();
  const sb = timelineSpans(b).reverse();
  let i = 0;
  while (i < sa.length && i < sb.length && sa[i].tli === sb[i].tli && sa[i].begin === sb[i].begin) i++;
  if (i === 0) return undefined;
  const ea = sa[i - 1].end;
  const eb = sb[i - 1].end;
  const lsn = ea === null ? eb : eb === null ? ea : ea < eb ? ea : eb;
  return { tli: sa[i - 1].tli, lsn };
}
