/**
 * `pgha backup status`: what an alert needs — the age of the newest backup, the newest archived
 * segment and when it arrived, and (with a source server) how far the archive is behind it in
 * bytes and what pg_stat_archiver says. Also as Prometheus text.
 */
import { formatLsn, parseLsn, segmentStartLsn } from '../formats/lsn.js';
import type { Repository } from './repo.js';
import { psqlRow, redactConninfo } from './tools.js';

export interface BackupStatus {
  repo: string;
  systemId: string | null;
  backups: number;
  lastBackup: { label: string; stopTime: string; ageSeconds: number; timeline: number; stopLsn: string } | null;
  archive: { segments: number; timelines: number[]; lastSegment: string | null; lastSegmentEndLsn: string | null; lastArchivedAt: string | null; ageSeconds: number | null };
  source: {
    conninfo: string;
    inRecovery: boolean;
    currentLsn: string;
    timeline: number;
    /** bytes of WAL the server has that the archive does not (from the end of the newest archived segment) */
    archiveLagBytes: number;
    archivedCount: number;
    failedCount: number;
    lastFailedWal: string | null;
  } | null;
}

export async function backupStatus(repo: Repository, opts: { source?: string; binDir?: string; now?: number } = {}): Promise<BackupStatus> {
  const now = opts.now ?? Date.now();
  const cfg = await repo.config();
  const listing = await repo.backups();
  const good = listing.flatMap((b) => (b.manifest ? [b.manifest] : [])).sort((a, b) => Date.parse(a.stopTime) - Date.parse(b.stopTime));
  const last = good[good.length - 1];
  const segs = (await repo.walEntries()).filter((e) => e.kind === 'segment' && e.segno !== undefined);
  let newest = segs[0];
  for (const e of segs) if (e.segno! > newest.segno! || (e.segno === newest.segno && e.tli > newest.tli)) newest = e;
  const lastArrived = segs.reduce((m, e) => Math.max(m, e.mtimeMs), 0);
  const endLsn = newest && cfg ? segmentStartLsn(newest.segno! + 1n, cfg.segmentSize) : null;
  const status: BackupStatus = {
    repo: repo.location,
    systemId: cfg?.systemId ?? null,
    backups: good.length,
    lastBackup: last ? { label: last.label, stopTime: last.stopTime, ageSeconds: Math.round((now - Date.parse(last.stopTime)) / 1000), timeline: last.stopTimeline, stopLsn: last.stopLsn } : null,
    archive: {
      segments: segs.length,
      timelines: [...new Set(segs.map((e) => e.tli))].sort((a, b) => a - b),
      lastSegment: newest?.name ?? null,
      lastSegmentEndLsn: endLsn === null ? null : formatLsn(endLsn),
      lastArchivedAt: segs.length ? new Date(lastArrived).toISOString() : null,
      ageSeconds: segs.length ? Math.round((now - lastArrived) / 1000) : null,
    },
    source: null,
  };
  if (opts.source) {
    const [rec, lsn, tli, archived, failed, lastFailed] = await psqlRow(
      opts.binDir ?? '/usr/lib/postgresql/15/bin',
      opts.source,
      'SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END, (SELECT timeline_id FROM pg_control_checkpoint()), archived_count, failed_count, coalesce(last_failed_wal, \'\') FROM pg_stat_archiver',
    );
    const current = parseLsn(lsn);
    status.source = {
      conninfo: redactConninfo(opts.source),
      inRecovery: rec === 't',
      currentLsn: lsn,
      timeline: Number(tli),
      archiveLagBytes: endLsn === null ? Number(current) : Math.max(0, Number(current - endLsn)),
      archivedCount: Number(archived),
      failedCount: Number(failed),
      lastFailedWal: lastFailed || null,
    };
  }
  return status;
}

/** Prometheus text exposition of the status */
export function statusMetrics(s: BackupStatus): string {
  const lines: string[] = [];
  const metric = (name: string, help: string, value: number | null) => {
    if (value === null) return;
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name} ${value}`);
  };
  metric('pgha_backup_count', 'complete backups in the repository', s.backups);
  metric('pgha_backup_last_age_seconds', 'seconds since the newest backup ended', s.lastBackup?.ageSeconds ?? null);
  metric('pgha_archive_segments', 'archived WAL segments', s.archive.segments);
  metric('pgha_archive_last_age_seconds', 'seconds since the newest archived segment arrived', s.archive.ageSeconds);
  metric('pgha_archive_lag_bytes', 'WAL bytes the source server has beyond the end of the newest archived segment', s.source?.archiveLagBytes ?? null);
  metric('pgha_archive_failed_count', "the source server's pg_stat_archiver.failed_count", s.source?.failedCount ?? null);
  return lines.join('\n') + '\n';
}
