/**
 * What a (stopped or running) data directory says about itself from its files alone: pg_control,
 * the newest timeline history in pg_wal, and the end of valid WAL found by scanning pg_wal from the
 * latest checkpoint's REDO segment. This is `pgwal lsn` and, later, the agent's view of a stopped node.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseControlFile, type ControlFile } from '../formats/control.js';
import { formatLsn, parseWalFileName, segmentOf, walFileNameForLsn, type Lsn } from '../formats/lsn.js';
import { parseHistory, type TimelineHistory } from '../formats/timeline-history.js';
import { listSegmentFiles, selectSegments } from '../wal/segments.js';
import { scanWalStream, type ScanImplementation, type StreamScanSummary } from '../wal/stream.js';

export function controlFilePath(pgdata: string): string {
  return join(pgdata, 'global', 'pg_control');
}

export function walDir(pgdata: string): string {
  return join(pgdata, 'pg_wal');
}

export function readControl(pgdata: string): ControlFile {
  const path = controlFilePath(pgdata);
  return parseControlFile(readFileSync(path), { file: path });
}

/**
 * The node's timeline history. Its timeline is the highest one that has WAL segment files in pg_wal
 * (a promoted node writes the new timeline's first segment at once; a standby streams it), and at
 * least pg_control's; a history file alone does not count: a stopped old primary may have been given
 * the new primary's history file without ever being on that timeline.
 */
export function readNodeHistory(pgdata: string, control: ControlFile = readControl(pgdata)): TimelineHistory {
  const dir = walDir(pgdata);
  const segmentTlis = new Set<number>();
  const historyTlis = new Set<number>();
  for (const name of readdirSync(dir)) {
    const info = parseWalFileName(name);
    if (info?.kind === 'history') historyTlis.add(info.tli);
    else if (info?.kind === 'segment' || info?.kind === 'partial') segmentTlis.add(info.tli);
  }
  let tli = control.checkpoint.thisTimeLineID;
  for (const t of segmentTlis) if (t > tli && historyTlis.has(t)) tli = t;
  if (tli <= 1) return { timeline: tli, entries: [] };
  const path = join(dir, `${tli.toString(16).toUpperCase().padStart(8, '0')}.history`);
  return parseHistory(readFileSync(path), tli, path);
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
