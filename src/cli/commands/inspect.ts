import { readdirSync, statSync } from 'node:fs';
import { readControlBytes, readHistoryBytes, readSlotStateBytes } from '../../wal/bounded-read.js';
import { majorFromPageMagic as majorOf } from '../../formats/versions.js';
import { basename, join } from 'node:path';
import { parseControlFile } from '../../formats/control.js';
import { WalFormatError } from '../../formats/errors.js';
import { formatLsn, isValidSegmentSize, parseLsn, parseWalFileName, segmentOf, type Lsn } from '../../formats/lsn.js';
import { parseSlotState } from '../../formats/replslot.js';
import { parseHistory } from '../../formats/timeline-history.js';
import { detect } from '../../inspect/detect.js';
import { formatRecordLine, recordViews, type RecordView } from '../../inspect/records.js';
import { controlView, historyView, recordTypeStats, rmgrStats, slotView, walView } from '../../inspect/views.js';
import { activeImplementation } from '../../native/index.js';
import { selectSegments, type SegmentFile } from '../../wal/segments.js';
import { probeSegmentHeader, scanWalStream, type StreamScanSummary } from '../../wal/stream.js';
import { EXIT_OK, keyValues, printJson, table, UsageError } from '../output.js';

export interface InspectOptions {
  json?: boolean;
  stats?: boolean;
  statsRecord?: boolean;
  records?: boolean;
  start?: string;
  end?: string;
  timeline?: string;
  limit?: string;
  progress?: boolean;
}

export async function inspectCommand(paths: string[], opts: InspectOptions): Promise<number> {
  const results: unknown[] = [];
  for (const path of paths) results.push(await inspectOne(path, opts));
  if (opts.json) printJson(results.length === 1 ? results[0] : results);
  return EXIT_OK;
}

async function inspectOne(path: string, opts: InspectOptions): Promise<unknown> {
  const d = detect(path);
  switch (d.kind) {
    case 'slot': {
      const view = slotView(path, parseSlotState(readSlotStateBytes(path), { file: path }));
      if (!opts.json) process.stdout.write(`${path}: replication slot state (PostgreSQL ${view.possibleVersions.join('/')} layout)\n` + keyValues(view));
      return view;
    }
    case 'control': {
      const view = controlView(path, parseControlFile(readControlBytes(path), { file: path }));
      if (!opts.json) process.stdout.write(`${path}: pg_control (PostgreSQL ${view.pgVersion})\n` + keyValues(view));
      return view;
    }
    case 'history': {
      const info = parseWalFileName(basename(path));
      const view = historyView(path, parseHistory(readHistoryBytes(path), info?.kind === 'history' ? info.tli : undefined, path));
      if (!opts.json) {
        process.stdout.write(`${path}: timeline history of timeline ${view.timeline}\n`);
        process.stdout.write(
          table(
            view.entries.map((e) => [e.parentTimeline, e.switchpoint, e.reason]),
            ['parent TLI', 'switchpoint', 'reason'],
          ),
        );
      }
      return view;
    }
    case 'segment':
    case 'wal-dir':
    case 'datadir':
      return inspectWal(d.kind === 'datadir' ? join(path, 'pg_wal') : path, d.kind === 'segment', opts);
  }
}

async function inspectWal(path: string, single: boolean, opts: InspectOptions): Promise<unknown> {
  const start: Lsn | undefined = opts.start !== undefined ? parseLsn(opts.start) : undefined;
  const end: Lsn | undefined = opts.end !== undefined ? parseLsn(opts.end) : undefined;
  if (start !== undefined && end !== undefined && end <= start) throw new UsageError(`--end ${opts.end} must be after --start ${opts.start}`);
  const limit = opts.limit !== undefined ? Number(opts.limit) : Infinity;
  let files: SegmentFile[];
  let segmentSize: number;
  if (single) {
    const h = probeSegmentHeader(path);
    if (!isValidSegmentSize(h.segmentSize)) {
      throw new WalFormatError('invalid segment size in long page header', { file: path, offset: 32, expected: 'a power of two from 1 MiB to 1 GiB', got: String(h.segmentSize) });
    }
    segmentSize = h.segmentSize;
    // identity from the content: the long header's pageaddr and TLI, not the file name
    files = [{ path, name: basename(path), tli: h.tli, segno: segmentOf(h.pageaddr, segmentSize), size: statSync(path).size, partial: path.endsWith('.partial') }];
  } else {
    // the first segment file that is a regular file (a FIFO named like a segment would block the probe)
    const first = readdirSync(path)
      .filter((n) => /^[0-9A-F]{24}(\.partial)?$/.test(n))
      .sort()
      .find((n) => {
        try {
          return statSync(join(path, n)).isFile();
        } catch {
          return false;
        }
      });
    if (!first) throw new WalFormatError('no WAL segment files in directory', { file: path, expected: 'files named like 000000010000000000000001' });
    segmentSize = probeSegmentHeader(join(path, first)).segmentSize;
    const timeline = opts.timeline !== undefined ? Number(opts.timeline) : undefined;
    const sel = selectSegments(path, segmentSize, {
      timeline,
      fromSegno: start !== undefined ? segmentOf(start, segmentSize) : undefined,
    });
    files = sel.files;
    if (files.length === 0) {
      throw new WalFormatError('no WAL segment files for the requested timeline/start', {
        file: path,
        expected: start !== undefined ? `a segment containing ${formatLsn(start)}` : `segments of timeline ${sel.timeline}`,
      });
    }
  }
  const statsLevel = opts.statsRecord ? 'record' : opts.stats ? 'rmgr' : null;
  const list: RecordView[] = [];
  let shown = 0;
  // progress only for people watching a terminal (loaded lazily: start-up time matters in scripts)
  const bar =
    opts.progress !== false && process.stderr.isTTY && files.length > 4 && !opts.records
      ? await (async () => {
          const { default: cliProgress } = await import('cli-progress');
          return new cliProgress.SingleBar({ format: 'scanning WAL [{bar}] {value}/{total} segments', stream: process.stderr }, cliProgress.Presets.shades_classic);
        })()
      : null;
  bar?.start(files.length, 0);
  const impl = activeImplementation();
  let summary: StreamScanSummary;
  try {
    summary = await scanWalStream({
      files,
      segmentSize,
      mode: opts.records ? 'records' : 'stats',
      start,
      end,
      impl,
      onProgress: (done) => bar?.update(done),
      onSegment: opts.records
        ? (visit) => {
            if (shown >= limit) return;
            const major = visit.result.carry.pageMagic ? (majorOf(visit.result.carry.pageMagic) ?? 15) : 15;
            for (const r of recordViews(visit, major, visit.result.carry.blockSize || 8192)) {
              if (shown >= limit) break;
              shown++;
              if (opts.json) list.push(r);
              else process.stdout.write(formatRecordLine(r) + '\n');
            }
          }
        : undefined,
    });
  } finally {
    bar?.stop();
  }
  const view: Record<string, unknown> = walView(path, summary, files.slice(0, summary.filesScanned).map((f) => f.name));
  if (statsLevel) {
    view.stats = rmgrStats(summary.stats);
    if (statsLevel === 'record') view.statsByRecordType = recordTypeStats(summary.stats, summary.pgVersion ?? 15);
  }
  if (opts.records) view.recordList = list;
  if (!opts.json) printWalText(view, summary, statsLevel);
  return view;
}


function printWalText(view: Record<string, unknown>, s: StreamScanSummary, statsLevel: 'rmgr' | 'record' | null): void {
  const out = process.stdout;
  out.write(
    keyValues({
      path: view.path,
      kind: 'WAL',
      pgVersion: view.pgVersion,
      systemId: view.systemId,
      timeline: view.timeline,
      segmentSize: view.segmentSize,
      blockSize: view.blockSize,
      files: `${s.filesScanned} (${(view.files as string[])[0] ?? '-'} .. ${(view.files as string[]).at(-1) ?? '-'})`,
      records: view.records,
      firstRecordLsn: view.firstRecordLsn,
      lastRecordLsn: view.lastRecordLsn,
      endLsn: view.endLsn,
      endReason: view.endReason,
      endDetail: `${view.endMessage}${view.endFile ? ` (${view.endFile}, offset ${view.endOffset})` : ''}`,
    }),
  );
  if (statsLevel) {
    const stats = (statsLevel === 'record' ? view.statsByRecordType : view.stats) as Record<string, { count: number; recordBytes: number; fpiBytes: number; combinedBytes: number }>;
    const rows = Object.entries(stats).map(([k, v]) => [k, v.count, v.recordBytes, v.fpiBytes, v.combinedBytes]);
    const total = Object.values(stats).reduce(
      (a, v) => [a[0] + v.count, a[1] + v.recordBytes, a[2] + v.fpiBytes, a[3] + v.combinedBytes],
      [0, 0, 0, 0],
    );
    rows.push(['Total', ...total]);
    out.write('\n' + table(rows, [statsLevel === 'record' ? 'Type' : 'Rmgr', 'N', 'Record size', 'FPI size', 'Combined size']));
  }
}
