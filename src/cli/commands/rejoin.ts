/**
 * `pgha rejoin`: bring a stopped node back as a standby of the source's timeline — follow, pg_rewind
 * or (with --allow-reclone) re-clone. Exit codes: 0 rejoined and streaming (or a dry run), 1 refused
 * (nothing changed), 2 an error or started but not streaming.
 */
import type { Command } from 'commander';
import { EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK, printJson } from '../output.js';
import { collect } from '../options.js';
import { resolveToken, TOKEN_HELP } from '../../ship/token.js';

export function registerRejoinCommand(program: Command, setExit: (c: number) => void): void {
  program
    .command('rejoin')
    .description('rejoin a stopped node to the source\'s timeline: follow, pg_rewind, or (with --allow-reclone) re-clone')
    .requiredOption('--pgdata <dir>', 'the stopped node\'s data directory')
    .requiredOption('--source <url>', 'agent URL of the new primary')
    .option('--token-file <file>', 'file holding the agents\' bearer token (first choice; mode 600)')
    .option('--token <token>', 'bearer token of the agents, when neither --token-file nor $PGHA_TOKEN gives one (visible in ps)')
    .addHelpText('after', `\n${TOKEN_HELP}`)
    .option('--peer <url>', 'another agent that may still have old WAL (repeatable)', collect)
    .option('--pg-bin <dir>', 'PostgreSQL bin directory', '/usr/lib/postgresql/15/bin')
    .option('--slot <name>', 'replication slot on the source')
    .option('--allow-reclone', 'when no rewind is possible, move the data directory aside and re-clone')
    .option('--dry-run', 'print the plan and change nothing')
    .option('--json', 'print {"path","reason","lostTransactions":{"count","report"},"fetched",…}')
    .action(async (o) => {
      const { rejoin, RejoinRefused } = await import('../../rejoin/execute.js');
      const token = resolveToken(o);
      try {
        const r = await rejoin({
          pgdata: o.pgdata,
          source: o.source,
          token,
          binDir: o.pgBin,
          peers: o.peer,
          slot: o.slot,
          allowReclone: o.allowReclone === true,
          dryRun: o.dryRun === true,
          log: o.json ? undefined : (m) => process.stderr.write(m + '\n'),
          progress: !o.json,
        });
        if (o.json) printJson(r);
        else {
          process.stdout.write(`${r.dryRun ? 'plan' : 'rejoined'}: ${r.path} — ${r.reason}\n`);
          if (r.dryRun) r.steps.forEach((s, i) => process.stdout.write(`  ${i + 1}. ${s}\n`));
          process.stdout.write(`lost transactions: ${r.lostTransactions.count}${r.lostTransactions.report ? ` (report ${r.lostTransactions.report})` : ''}\n`);
          for (const f of r.fetched) process.stdout.write(`fetched ${f.name} from ${f.from}${f.size ? ` (${f.size} bytes)` : ''}\n`);
          if (!r.dryRun) process.stdout.write(r.streaming ? 'streaming from the source\n' : 'started, but not streaming yet\n');
        }
        setExit(r.dryRun || r.streaming ? EXIT_OK : EXIT_ERROR);
      } catch (e) {
        if (e instanceof RejoinRefused) {
          if (o.json) printJson({ path: 'refused', reason: e.message });
          else process.stderr.write(`pgha: refused: ${e.message}\n`);
          setExit(EXIT_NEGATIVE);
          return;
        }
        throw e;
      }
    });
}
