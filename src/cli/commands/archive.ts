/**
 * `pgha archive push|get`: PostgreSQL's archive_command and restore_command over a backup
 * repository. Exit codes: 0 done; 1 refused (push: a damaged, truncated or foreign segment, other
 * content under an archived name) or not in the archive (get); 2 an error (unreadable repository,
 * a stored file that fails its checksum).
 */
import type { Command } from 'commander';
import { EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK, printJson } from '../output.js';

export function registerArchiveCommands(program: Command, setExit: (c: number) => void): void {
  const archive = program
    .command('archive')
    .description("continuous WAL archiving into a backup repository: PostgreSQL's archive_command and restore_command")
    .addHelpText(
      'after',
      `
In postgresql.conf of every node (archive_mode = on, or always to archive from standbys too):
  archive_command = 'pgha archive push %p --repo /backups/main'
  restore_command = 'pgha archive get %f %p --repo /backups/main'   (pgha backup restore writes it)`,
    );
  archive
    .command('push')
    .description('archive one WAL segment, .partial, history or backup-history file (checked with pgwal\'s scanner first)')
    .argument('<path>', 'the file (%p)')
    .requiredOption('--repo <dir>', 'the backup repository')
    .option('--compress <codec>', 'gzip (default), brotli or none — only when this push creates the repository')
    .option('--compress-level <n>', 'compression level (gzip 1-9, brotli 0-11)')
    .option('--json', 'print {"name","status","key","size","sha256","storedSize"}')
    .action(async (path: string, o) => {
      const { Repository, RepoProblem } = await import('../../backup/repo.js');
      const { pushWal } = await import('../../backup/archive.js');
      const { parseCompression } = await import('../../backup/codec.js');
      try {
        const r = await pushWal(Repository.local(o.repo), path, {
          compression: o.compress ? parseCompression(o.compress) : undefined,
          level: o.compressLevel !== undefined ? Number(o.compressLevel) : undefined,
        });
        if (o.json) printJson(r);
        else if (r.status === 'already-archived') process.stderr.write(`pgha: ${r.name} is already archived with the same content\n`);
        setExit(EXIT_OK);
      } catch (e) {
        if (!(e instanceof RepoProblem)) throw e;
        process.stderr.write(`pgha: error: ${e.message}\n`);
        setExit(EXIT_NEGATIVE);
      }
    });
  archive
    .command('get')
    .description('fetch one archived file for recovery (restore_command), checked against its sha256')
    .argument('<name>', 'the file name PostgreSQL asks for (%f)')
    .argument('<dest>', 'where to write it (%p)')
    .requiredOption('--repo <dir>', 'the backup repository')
    .action(async (name: string, dest: string, o) => {
      const { Repository, RepoProblem } = await import('../../backup/repo.js');
      const { getWal, NotArchived } = await import('../../backup/archive.js');
      try {
        await getWal(Repository.local(o.repo), name, dest);
        setExit(EXIT_OK);
      } catch (e) {
        if (e instanceof NotArchived) {
          process.stderr.write(`pgha: ${e.message}\n`);
          return setExit(EXIT_NEGATIVE);
        }
        if (!(e instanceof RepoProblem)) throw e;
        process.stderr.write(`pgha: error: ${e.message}\n`);
        setExit(EXIT_ERROR);
      }
    });
}
