/**
 * `pgha slots list|sync|migrate`: logical replication slots across a promote — every slot's file
 * beside the live view, copies kept on a standby, the slots brought live on a new primary.
 * Exit codes: 0 ok; 1 a damaged slot file (list) or a refused migration; 2 an error or a slot not live.
 */
import type { Command } from 'commander';
import { describeError, EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK, printJson } from '../output.js';
import { resolveToken, TOKEN_HELP } from '../../ship/token.js';

export function registerSlotsCommands(program: Command, setExit: (c: number) => void): void {
  const slots = program.command('slots').description('logical replication slots across a promote: list, sync copies to a standby, migrate to a new primary');
  slots
    .command('list')
    .description('every slot: state-file fields beside pg_replication_slots when the server is up')
    .option('--pgdata <dir>', 'a data directory')
    .option('--agent <url>', 'an agent')
    .option('--token-file <file>', 'file holding the bearer token (with --agent; first choice)')
    .option('--token <token>', 'bearer token (with --agent), when neither --token-file nor $PGHA_TOKEN gives one (visible in ps)')
    .addHelpText('after', `\n${TOKEN_HELP}`)
    .option('--pg-bin <dir>', 'PostgreSQL bin directory', '/usr/lib/postgresql/15/bin')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const { listSlots } = await import('../../slots/list.js');
      const listing = await listSlots(o.agent ? { ...o, token: resolveToken(o) } : o);
      if (o.json) printJson(listing);
      else {
        const { table } = await import('../output.js');
        process.stdout.write(
          table(
            listing.slots.map((x) => [x.name, x.file?.slotType ?? String(x.live?.slot_type ?? '?'), x.file?.plugin ?? '', x.file?.restartLsn ?? '-', x.file?.confirmedFlush ?? '-', String(x.live?.restart_lsn ?? '-'), String(x.live?.confirmed_flush_lsn ?? '-'), x.fileError ? 'BAD' : x.file?.checksumValid ? 'ok' : '-']),
            ['slot', 'type', 'plugin', 'file restart', 'file confirmed', 'live restart', 'live confirmed', 'file'],
          ),
        );
      }
      setExit(listing.slots.some((x) => x.fileError !== null) ? EXIT_NEGATIVE : EXIT_OK);
    });
  slots
    .command('sync')
    .description("copy the primary's logical slots to a standby and keep the copies moving")
    .requiredOption('--from <url>', "the primary's agent")
    .requiredOption('--to <url>', "the standby's agent")
    .option('--token-file <file>', 'file holding the bearer token (first choice; mode 600)')
    .option('--token <token>', 'bearer token, when neither --token-file nor $PGHA_TOKEN gives one (visible in ps)')
    .addHelpText('after', `\n${TOKEN_HELP}`)
    .option('--interval <ms>', 'how often to refresh the copies', '5000')
    .option('--once', 'one pass, then exit')
    .option('--json', 'print each pass as JSON')
    .action(async (o) => {
      const { syncOnce } = await import('../../slots/sync.js');
      const token = resolveToken(o);
      const pass = async () => {
        const r = await syncOnce(o.from, o.to, token, o.json ? undefined : (m) => process.stderr.write(m + '\n'));
        if (o.json) printJson(r);
        else for (const x of r.slots) process.stdout.write(`${x.name}: primary ${x.primaryConfirmedFlush}, copy ${x.copyConfirmedFlush ?? '-'} (${x.lagBytes ?? '?'} bytes behind)${x.installed ? ', installed' : ''}${x.skipped ? `, skipped: ${x.skipped}` : ''}\n`);
      };
      await pass();
      if (o.once) return setExit(EXIT_OK);
      const interval = Math.max(200, Number(o.interval));
      for (;;) {
        await new Promise((r) => setTimeout(r, interval));
        try {
          await pass();
        } catch (e) {
          process.stderr.write(`pgha: slots sync: ${describeError(e)}\n`);
        }
      }
    });
  slots
    .command('migrate')
    .description('bring the logical slots live on the new primary after a promote')
    .requiredOption('--from <url|dir>', "the old primary's agent or data directory")
    .requiredOption('--to <url>', "the new primary's agent")
    .option('--token-file <file>', 'file holding the bearer token (first choice; mode 600)')
    .option('--token <token>', 'bearer token, when neither --token-file nor $PGHA_TOKEN gives one (visible in ps)')
    .addHelpText('after', `\n${TOKEN_HELP}`)
    .option('--replace', 'replace an unrelated slot of the same name on the target')
    .option('--dry-run', 'check and plan, change nothing')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const { migrateSlots, allLive, SlotMigrationRefused } = await import('../../slots/migrate.js');
      try {
        const r = await migrateSlots({ from: o.from, to: o.to, token: resolveToken(o), replace: o.replace === true, dryRun: o.dryRun === true, log: o.json ? undefined : (m) => process.stderr.write(m + '\n'), progress: !o.json });
        if (o.json) printJson(r);
        else for (const x of r.slots) process.stdout.write(`${x.name}: ${x.action} from the ${x.source}; live: ${x.live ? `restart ${x.live.restartLsn}, confirmed ${x.live.confirmedFlush}, ${x.live.walStatus}` : 'no'}\n`);
        setExit(r.dryRun || allLive(r) ? EXIT_OK : EXIT_ERROR);
      } catch (e) {
        if (e instanceof SlotMigrationRefused) {
          if (o.json) printJson({ refused: true, reason: e.message });
          else process.stderr.write(`pgha: refused: ${e.message}\n`);
          return setExit(EXIT_NEGATIVE);
        }
        throw e;
      }
    });
}
