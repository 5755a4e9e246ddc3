/**
 * `pgha backup create|list|verify|restore|expire|status` over a backup repository (src/backup).
 * Exit codes: 0 done / verified; 1 a finding or refusal (verify found a gap or damage, no backup
 * fits the target, a corrupt manifest); 2 bad usage or an error.
 */
import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { EXIT_NEGATIVE, EXIT_OK, printJson, table, UsageError } from '../output.js';

const PG_BIN = '/usr/lib/postgresql/15/bin';

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** a progress bar on stderr, only for someone watching a terminal */
async function progressBar(enabled: boolean, format: string): Promise<{ update: (v: number, total: number) => void; stop: () => void }> {
  if (!enabled || !process.stderr.isTTY) return { update: () => undefined, stop: () => undefined };
  const { default: cliProgress } = await import('cli-progress');
  const bar = new cliProgress.SingleBar({ format, stream: process.stderr, hideCursor: true }, cliProgress.Presets.shades_classic);
  let started = false;
  return {
    update: (v, total) => {
      if (!started) {
        bar.start(total, 0);
        started = true;
      }
      bar.setTotal(Math.max(total, v));
      bar.update(v);
    },
    stop: () => started && bar.stop(),
  };
}

const mib = (n: number) => `${(n / (1 << 20)).toFixed(1)} MiB`;

export function registerBackupCommands(program: Command, setExit: (c: number) => void): void {
  const backup = program.command('backup').description('base backups, retention, verification and point-in-time restore (a repository directory; WAL through `pgha archive`)');

  /** run an action; a RepoProblem is one line on stderr and exit 1 */
  const guarded = (fn: (...args: any[]) => Promise<void>) => async (...args: any[]) => {
    const { RepoProblem } = await import('../../backup/repo.js');
    try {
      await fn(...args);
    } catch (e) {
      if (!(e instanceof RepoProblem)) throw e;
      process.stderr.write(`pgha: error: ${e.message}\n`);
      setExit(EXIT_NEGATIVE);
    }
  };

  backup
    .command('create')
    .description('take a base backup with pg_basebackup into the repository (checked against PostgreSQL\'s backup_manifest as it streams)')
    .requiredOption('--repo <dir>', 'the backup repository (created on first use)')
    .option('--source <conninfo>', 'libpq conninfo of a server to copy (repeatable: candidates in order)', collect)
    .option('--prefer-standby', 'copy a streaming standby among the sources when there is one, else the primary')
    .option('--label <label>', 'backup label (default: the UTC time, 20261203T054922Z)')
    .option('--compress <codec>', 'gzip (default), brotli or none — only when this backup creates the repository')
    .option('--compress-level <n>', 'compression level')
    .option('--pg-bin <dir>', 'PostgreSQL bin directory (pg_basebackup, psql)', PG_BIN)
    .option('--no-progress', 'no progress bar on stderr')
    .option('--json', 'print the backup\'s manifest (without the file list)')
    .action(
      guarded(async (o) => {
        const { Repository } = await import('../../backup/repo.js');
        const { createBackup } = await import('../../backup/create.js');
        const { parseCompression } = await import('../../backup/codec.js');
        if (!o.source?.length) throw new UsageError('give --source CONNINFO (repeatable)');
        const bar = await progressBar(o.progress !== false && !o.json, 'backup [{bar}] {percentage}% {value}/{total} bytes');
        let m;
        try {
          m = await createBackup({
            repo: Repository.local(o.repo),
            sources: o.source,
            preferStandby: o.preferStandby === true,
            binDir: o.pgBin,
            label: o.label,
            compression: o.compress ? parseCompression(o.compress) : undefined,
            level: o.compressLevel !== undefined ? Number(o.compressLevel) : undefined,
            onProgress: (done, total) => bar.update(done, total ?? done),
            log: o.json ? undefined : (msg) => process.stderr.write(`${msg}\n`),
          });
        } finally {
          bar.stop();
        }
        const { files, walFiles, ...rest } = m;
        if (o.json) printJson({ ...rest, fileCount: files.length, walFileCount: walFiles.length });
        else process.stdout.write(`backup ${m.label}: timeline ${m.timeline}, ${m.startLsn} - ${m.stopLsn}, ${files.length} files, ${mib(m.object.size)} (${mib(m.object.storedSize)} stored) from ${m.source.standby ? 'a standby' : 'the primary'}\n`);
        setExit(EXIT_OK);
      }),
    );

  backup
    .command('list')
    .description('the backups in the repository, oldest first')
    .requiredOption('--repo <dir>', 'the backup repository')
    .option('--json', 'print {"backups":[{label,startLsn,stopLsn,timeline,startTime,stopTime,size,storedSize,problem}]}')
    .action(
      guarded(async (o) => {
        const { Repository } = await import('../../backup/repo.js');
        const listing = await Repository.local(o.repo).backups();
        const rows = listing.map((b) =>
          b.manifest
            ? { label: b.label, ok: true, timeline: b.manifest.timeline, startLsn: b.manifest.startLsn, stopLsn: b.manifest.stopLsn, startTime: b.manifest.startTime, stopTime: b.manifest.stopTime, fromStandby: b.manifest.source.standby, size: b.manifest.object.size, storedSize: b.manifest.object.storedSize, problem: null }
            : { label: b.label, ok: false, problem: b.problem },
        );
        if (o.json) printJson({ backups: rows });
        else
          process.stdout.write(
            table(
              listing.map((b) => (b.manifest ? [b.label, b.manifest.timeline, b.manifest.startLsn, b.manifest.stopLsn, b.manifest.stopTime, mib(b.manifest.object.size), mib(b.manifest.object.storedSize), b.manifest.source.standby ? 'standby' : 'primary'] : [b.label, '-', '-', '-', '-', '-', '-', `BAD: ${b.problem}`])),
              ['label', 'timeline', 'start', 'stop', 'ended', 'size', 'stored', 'from'],
            ),
          );
        setExit(listing.some((b) => !b.manifest) ? EXIT_NEGATIVE : EXIT_OK);
      }),
    );

  backup
    .command('verify')
    .description("scan the archive with pgwal's scanner (continuity from every backup's start on every timeline, page headers, record CRCs, sha256) and check every backup")
    .requiredOption('--repo <dir>', 'the backup repository')
    .option('--skip-backup-data', "check the backups' manifests only, not their data")
    .option('--no-progress', 'no progress bar on stderr')
    .option('--json', 'print {"ok","timelines":[…],"backups":[…],"problems":[{kind,timeline,file,lsn,message}]}')
    .action(
      guarded(async (o) => {
        const { Repository } = await import('../../backup/repo.js');
        const { verifyRepository } = await import('../../backup/verify.js');
        const bar = await progressBar(o.progress !== false && !o.json, 'verify [{bar}] {value}/{total}');
        let r;
        try {
          r = await verifyRepository(Repository.local(o.repo), { skipBackupData: o.skipBackupData === true, onProgress: (d, t) => bar.update(d, t) });
        } finally {
          bar.stop();
        }
        if (o.json) printJson(r);
        else {
          for (const t of r.timelines) process.stdout.write(`timeline ${t.timeline}: ${t.ok ? 'ok' : 'FAILED'}, ${t.segments} segments ${t.firstSegment ?? '-'} .. ${t.lastSegment ?? '-'}, ${t.records} records, WAL ${t.startLsn ?? '-'} - ${t.endLsn ?? '-'}${t.backups.length ? ` (backups ${t.backups.join(', ')})` : ''}\n`);
          for (const b of r.backups) process.stdout.write(`backup ${b.label}: ${b.ok ? (b.dataChecked ? 'ok' : 'manifest ok') : `FAILED: ${b.problem}`}\n`);
        }
        if (!r.ok) process.stderr.write(`pgha: verify failed: ${r.problems[0].message}\n`);
        setExit(r.ok ? EXIT_OK : EXIT_NEGATIVE);
      }),
    );

  backup
    .command('restore')
    .description('restore a backup into a new data directory, with recovery to a target (or as a standby)')
    .requiredOption('--repo <dir>', 'the backup repository')
    .requiredOption('--to <dir>', 'the new data directory (absent or empty); owned like its parent directory when run as root')
    .option('--target-time <time>', 'recovery_target_time: stop before the first commit after it')
    .option('--target-lsn <lsn>', 'recovery_target_lsn')
    .option('--target-name <name>', 'recovery_target_name (a pg_create_restore_point)')
    .option('--target-timeline <tli>', "a timeline ID or 'latest' (default)", 'latest')
    .option('--target-action <action>', 'recovery_target_action once the target is reached: promote (default), pause, shutdown', 'promote')
    .option('--backup <label>', 'this backup (default: the newest that fits the target and timeline)')
    .option('--standby-of <conninfo>', 'come up as a standby of this server (standby.signal, primary_conninfo) instead of recovering to a target')
    .option('--set <key=value>', 'another setting for postgresql.auto.conf (repeatable), e.g. port=5433', collect)
    .option('--keep-archiving', 'keep archive_mode from the backup (default: off, so the restored server does not write into the archive)')
    .option('--restore-command <cmd>', 'restore_command to write (default: this pgha\'s `archive get %f "%p" --repo DIR`)')
    .option('--dry-run', 'print the backup and the WAL range that would be used; write nothing')
    .option('--no-progress', 'no progress bar on stderr')
    .option('--json', 'print {"dryRun","to","backup","timeline","wal":{firstSegment,lastSegment,startLsn,endLsn,segments,gap},"settings",…}')
    .action(
      guarded(async (o) => {
        const { Repository } = await import('../../backup/repo.js');
        const { restoreBackup } = await import('../../backup/restore.js');
        const tl = o.targetTimeline === 'latest' ? 'latest' : /^\d+$/.test(o.targetTimeline) && Number(o.targetTimeline) >= 1 ? Number(o.targetTimeline) : null;
        if (tl === null) throw new UsageError(`bad --target-timeline "${o.targetTimeline}": a timeline ID or 'latest'`);
        if (!['promote', 'pause', 'shutdown'].includes(o.targetAction)) throw new UsageError(`bad --target-action "${o.targetAction}": promote, pause or shutdown`);
        const settings: Record<string, string> = {};
        for (const kv of (o.set as string[] | undefined) ?? []) {
          const m = /^([a-z_][a-z0-9_.]*)=(.*)$/i.exec(kv);
          if (!m) throw new UsageError(`bad --set "${kv}": expected name=value`);
          settings[m[1]] = m[2];
        }
        const repoDir = resolve(o.repo);
        const script = realpathSync(process.argv[1]);
        const restoreCommand = o.restoreCommand ?? `${shellQuote(process.execPath)} ${shellQuote(script)} archive get %f "%p" --repo ${shellQuote(repoDir)}`;
        const bar = await progressBar(o.progress !== false && !o.json && !o.dryRun, 'restore [{bar}] {percentage}% {value}/{total} bytes');
        let r;
        try {
          r = await restoreBackup({
            repo: Repository.local(repoDir),
            to: o.to,
            target: { time: o.targetTime, lsn: o.targetLsn, name: o.targetName, timeline: tl },
            backup: o.backup,
            restoreCommand,
            standbyOf: o.standbyOf,
            targetAction: o.targetAction,
            keepArchiving: o.keepArchiving === true,
            settings,
            dryRun: o.dryRun === true,
            onProgress: (d, t) => bar.update(d, t),
          });
        } finally {
          bar.stop();
        }
        if (o.json) printJson(r);
        else {
          const target = r.target.time ? `time ${r.target.time}` : r.target.lsn ? `LSN ${r.target.lsn}` : r.target.name ? `restore point ${r.target.name}` : o.standbyOf ? 'standby' : 'the end of the archive';
          process.stdout.write(`${r.dryRun ? 'would restore' : 'restored'} backup ${r.backup.label} (timeline ${r.backup.timeline}, ${r.backup.startLsn} - ${r.backup.stopLsn}, ended ${r.backup.stopTime}) to ${r.to}\n`);
          process.stdout.write(`recovery to ${target} on timeline ${r.timeline === undefined ? 'latest' : r.timeline}: WAL from ${r.wal.firstSegment} (${r.wal.startLsn}) to ${r.wal.lastSegment ?? '(none archived yet)'} (${r.wal.endLsn}), ${r.wal.segments} segment(s) in the archive${r.wal.gap ? `; stops at the gap: ${r.wal.gap} is missing` : ''}\n`);
          if (!r.dryRun) process.stdout.write(`${r.files} files, ${mib(r.bytes)}; ${r.signal} written; start it with pg_ctl -D ${r.to} start\n`);
        }
        setExit(EXIT_OK);
      }),
    );

  backup
    .command('expire')
    .description('remove backups by a retention rule, and the WAL only they needed')
    .requiredOption('--repo <dir>', 'the backup repository')
    .option('--keep <n>', 'keep the N newest backups')
    .option('--retention <age>', 'keep what restores to any moment of the last AGE (5d, 12h, 30m): every backup inside the window and the newest before it')
    .option('--dry-run', 'print what would go; remove nothing')
    .option('--json', 'print {"keep","remove","walRemoved","dryRun"}')
    .action(
      guarded(async (o) => {
        const { Repository } = await import('../../backup/repo.js');
        const { expire, parseRetention } = await import('../../backup/expire.js');
        if (o.keep === undefined && o.retention === undefined) throw new UsageError('give --keep N or --retention AGE');
        if (o.keep !== undefined && !/^\d+$/.test(o.keep)) throw new UsageError(`bad --keep "${o.keep}": a whole number`);
        const r = await expire(Repository.local(o.repo), { keep: o.keep !== undefined ? Number(o.keep) : undefined, windowMs: o.retention !== undefined ? parseRetention(o.retention) : undefined }, { dryRun: o.dryRun === true });
        if (o.json) printJson(r);
        else {
          process.stdout.write(`${r.dryRun ? 'would keep' : 'kept'}: ${r.keep.join(', ') || '-'}\n${r.dryRun ? 'would remove' : 'removed'}: ${r.remove.join(', ') || '-'}\n`);
          process.stdout.write(`WAL ${r.dryRun ? 'to remove' : 'removed'}: ${r.walRemoved.length} file(s)${r.walRemoved.length ? ` (${r.walRemoved[0]} .. ${r.walRemoved[r.walRemoved.length - 1]})` : ''}\n`);
        }
        setExit(EXIT_OK);
      }),
    );

  backup
    .command('status')
    .description('for alerts: age of the newest backup, newest archived segment, and the archive lag behind a server')
    .requiredOption('--repo <dir>', 'the backup repository')
    .option('--source <conninfo>', 'a server to measure the archive lag against (pg_current_wal_lsn, pg_stat_archiver)')
    .option('--pg-bin <dir>', 'PostgreSQL bin directory (psql)', PG_BIN)
    .option('--prometheus', 'print Prometheus text exposition')
    .option('--json', 'print {"lastBackup":{ageSeconds,…},"archive":{lastSegment,ageSeconds,…},"source":{archiveLagBytes,…}}')
    .action(
      guarded(async (o) => {
        const { Repository } = await import('../../backup/repo.js');
        const { backupStatus, statusMetrics } = await import('../../backup/status.js');
        const s = await backupStatus(Repository.local(o.repo), { source: o.source, binDir: o.pgBin });
        if (o.json) printJson(s);
        else if (o.prometheus) process.stdout.write(statusMetrics(s));
        else {
          process.stdout.write(`backups: ${s.backups}; newest: ${s.lastBackup ? `${s.lastBackup.label}, ended ${s.lastBackup.stopTime} (${s.lastBackup.ageSeconds} s ago)` : 'none'}\n`);
          process.stdout.write(`archive: ${s.archive.segments} segments on timelines ${s.archive.timelines.join(', ') || '-'}; newest ${s.archive.lastSegment ?? '-'}${s.archive.ageSeconds !== null ? ` (arrived ${s.archive.ageSeconds} s ago)` : ''}\n`);
          if (s.source) process.stdout.write(`source at ${s.source.currentLsn} (timeline ${s.source.timeline}): archive lag ${s.source.archiveLagBytes} bytes, ${s.source.failedCount} failed archive attempts${s.source.lastFailedWal ? ` (last ${s.source.lastFailedWal})` : ''}\n`);
        }
        setExit(s.lastBackup ? EXIT_OK : EXIT_NEGATIVE);
      }),
    );
}
