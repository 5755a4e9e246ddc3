/**
 * What a (stopped or running) data directory says about itself from its files alone: pg_control,
 * the newest timeline history in pg_wal, and the end of valid WAL found by scanning pg_wal from the
 * latest checkpoint's REDO segment. This is `pgwal lsn` and, later, the agent's view of a stopped node.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseControlFile, type ControlFile } from '../formats/control.js';
import { formatLsn, historyFileName, parseWalFileName, segmentOf, walFileNameForLsn, type Lsn } from '../formats/lsn.js';
import { parseHistory, type TimelineHistory } from '../formats/timeline-history.js';
import { listSegmentFiles, selectSegments } from '../wal/segments.js';
import { FormatError } from '../formats/errors.js';
import { readControlBytes, readHistoryBytes } from '../wal/bounded-read.js';
import { scanWalStream, type ScanImplementation, type StreamScanSummary } from '../wal/stream.js';

export function controlFilePath(pgdata: string): string {
  return join(pgdata, 'global', 'pg_control');
}

export function walDir(pgdata: string): string {
  return join(pgdata, 'pg_wal');
}

export function readControl(pgdata: string): ControlFile {
  const path = controlFilePath(pgdata);
  return parseControlFile(readControlBytes(path), { file: path });
}

/**
 * The node's timeline history. Its timeline is the highest one that has WAL segment files in pg_wal
 * (a promoted node writes the new timeline's first segment at once; a standby streams it), and at
 * least pg_control's; a history file alone does not count: a stopped old primary may have been given
 * the new primary's history file without ever being on that timeline.
 *
 * A history file of a timeline above pg_control's that cannot be read as one (not a regular file,
 * too large, not a history of that timeline) is passed over — pg_control does not refer to it — and
 * reported through `onSkip`; the next lower candidate is taken. pg_control's own timeline's history
 * must be good: its FormatError (file, offset) is thrown.
 */
export function readNodeHistory(
  pgdata: string,
  control: ControlFile = readControl(pgdata),
  opts: { onSkip?: (file: string, error: FormatError) => void } = {},
): TimelineHistory {
  const dir = walDir(pgdata);
  const segmentTlis = new Set<number>();
  const historyTlis = new Set<number>();
  for (const name of readdirSync(dir)) {
    const info = parseWalFileName(name);
    if (info?.kind === 'history') historyTlis.add(info.tli);
    else if (info?.kind === 'segment' || info?.kind === 'partial') segmentTlis.add(info.tli);
  }
  const own = control.checkpoint.thisTimeLineID;
  const candidates = [...segmentTlis].filter((t) => t > own && historyTlis.has(t)).sort((a, b) => b - a);
  for (const tli of candidates) {
    const path = join(dir, historyFileName(tli));
    try {
      return parseHistory(readHistoryBytes(path), tli, path);
    } catch (e) {
      if (!(e instanceof FormatError)) throw e;
      opts.onSkip?.(path, e.withFile(path));
    }
  }
  if (own <= 1) return { timeline: own, entries: [] };
  const path = join(dir, historyFileName(own));
  return parseHistory(readHistoryBytes(path), own, path);
}

export interface NodeLsn {
  chkPoint: string;
  chkRedoPoint: string;
  walFile: string;
  timeLineID: string;
  lastLsn: string;
}

export interface NodeLsnDetail {
  control: ControlFile;
  history: TimelineHistory;
  scan: StreamScanSummary;
  lastLsn: Lsn;
  json: NodeLsn;
}

/** `pgwal lsn --pgdata`: pg_control plus a scan of pg_wal for the end of valid WAL. */
export async function nodeLsn(pgdata: string, impl: ScanImplementation): Promise<NodeLsnDetail> {
  const control = readControl(pgdata);
  const history = readNodeHistory(pgdata, control);
  const segSize = control.walSegmentSize;
  const redo = control.checkpoint.redo;
  // from the REDO point's segment; if that one is gone (recycled, or removed by hand), from the
  // first segment after it that is still here: the end of WAL is what matters
  let sel = selectSegments(walDir(pgdata), segSize, { timeline: history.timeline, fromSegno: segmentOf(redo, segSize) });
  if (sel.files.length === 0) {
    const later = listSegmentFiles(walDir(pgdata), segSize)
      .filter((f) => !f.partial && f.segno > segmentOf(redo, segSize) && f.tli <= history.timeline)
      .map((f) => f.segno);
    if (later.length) sel = selectSegments(walDir(pgdata), segSize, { timeline: history.timeline, fromSegno: later.reduce((a, b) => (a < b ? a : b)) });
  }
  const scan = await scanWalStream({ files: sel.files, segmentSize: segSize, mode: 'stats', impl });
  const lastLsn = scan.lastRecordLsn === null ? control.checkpointLsn : scan.endLsn;
  const tli = control.checkpoint.thisTimeLineID;
  return {
    control,
    history,
    scan,
    lastLsn,
    json: {
      chkPoint: formatLsn(control.checkpointLsn),
      chkRedoPoint: formatLsn(redo),
      walFile: walFileNameForLsn(tli, redo, segSize),
      timeLineID: String(history.timeline),
      lastLsn: formatLsn(lastLsn),
    },
  };
}
