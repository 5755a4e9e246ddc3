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
import { selectSegments } from '../wal/segments.js';
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

/** The node's timeline history: the highest `N.history` in pg_wal at or above pg_control's TLI. */
export function readNodeHistory(pgdata: string, control: ControlFile = readControl(pgdata)): TimelineHistory {
  const dir = walDir(pgdata);
  let best = 0;
  for (const name of readdirSync(dir)) {
    const info = parseWalFileName(name);
    if (info?.kind === 'history' && info.tli > best) best = info.tli;
  }
  const controlTli = control.checkpoint.thisTimeLineID;
  if (best < controlTli) {
    if (controlTli <= 1) return { timeline: controlTli, entries: [] };
    const own = join(dir, `${controlTli.toString(16).toUpperCase().padStart(8, '0')}.history`);
    return parseHistory(readFileSync(own), controlTli, own);
  }
  const path = join(dir, `${best.toString(16).toUpperCase().padStart(8, '0')}.history`);
  return parseHistory(readFileSync(path), best, path);
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
  const sel = selectSegments(walDir(pgdata), segSize, { timeline: history.timeline, fromSegno: segmentOf(redo, segSize) });
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
