#!/usr/bin/env node
/**
 * pgwal — read PostgreSQL's own files: WAL segments, timeline history, replication slot state and
 * pg_control. Exit codes: 0 success, 1 a negative answer (invalid LSN, failed verification),
 * 2 an error (bad input, bad arguments). Errors are one line: file, offset, what was expected.
 */
import { Command, CommanderError, Option } from 'commander';
import { describeError, EXIT_ERROR } from './output.js';
import { packageVersion } from '../config/version.js';

// each command's module is loaded only when it runs: start-up time matters to scripts
const commands = {
  inspect: () => import('./commands/inspect.js'),
  validlsn: () => import('./commands/validlsn.js'),
  lsn: () => import('./commands/lsn.js'),
  slot: () => import('./commands/slot.js'),
  native: () => import('../native/index.js'),
};

function buildProgram(setExit: (code: number) => void): Command {
  const program = new Command('pgwal')
    .description('Read PostgreSQL WAL segments, timeline history, replication slot state and pg_control files directly.')
    .version(packageVersion())
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  program.configureOutput({ writeErr: (s) => process.stderr.write(s) });
  program.addHelpText(
    'after',
    `
Exit codes: 0 success, 1 negative answer (invalid LSN, failed verification), 2 error.
Environment: PGHA_NATIVE=0 forces the pure TypeScript implementation.`,
  );

  program
    .command('inspect')
    .description('detect and describe WAL segments, WAL directories, history, slot state or pg_control files')
    .argument('<path...>', 'files or directories (a directory of segments or a data directory)')
    .option('--json', 'print JSON (stable contract, see README)')
    .option('--stats', 'per-rmgr statistics like pg_waldump --stats (--stats=record: per record type)')
    .addOption(new Option('--stats-record').hideHelp())
    .option('--records', 'list records like pg_waldump')
    .option('--start <lsn>', 'first record: records whose start LSN >= start')
    .option('--end <lsn>', 'stop before records whose start LSN >= end')
    .option('--timeline <tli>', 'timeline to follow in a directory (default: the newest)')
    .option('--limit <n>', 'list at most n records')
    .option('--no-progress', 'no progress bar on stderr')
    .action(async (paths: string[], opts) => setExit(await (await commands.inspect()).inspectCommand(paths, opts)));

  program
    .command('validlsn')
    .description("is (TLI, LSN) on this node's timeline history, i.e. can a server stopped there follow without a rewind?")
    .argument('<tli>', 'timeline the other server was on')
    .argument('<lsn>', 'where it stopped (end of its valid WAL), X/Y')
    .option('--pgdata <dir>', "this node's data directory (uses pg_control and pg_wal/*.history)")
    .option('--history <file>', 'a timeline history file')
    .option('--json', 'print {"code":0|1,"msg":"Valid lsn"|"Invalid lsn","cnt":N}')
    .action(async (tli: string, lsn: string, opts) => setExit((await commands.validlsn()).validLsnCommand(tli, lsn, opts)));

  program
    .command('lsn')
    .description('checkpoint, redo point, timeline and end of valid WAL of a data directory (server may be stopped)')
    .requiredOption('--pgdata <dir>', 'data directory')
    .option('--json', 'print {"chkPoint","chkRedoPoint","walFile","timeLineID","lastLsn"}')
    .option('--verbose', 'with --json: also state and end-of-WAL reason')
    .action(async (opts) => setExit(await (await commands.lsn()).lsnCommand(opts)));

  const slot = program.command('slot').description('replication slot state files (pg_replslot/<slot>/state)');
  for (const action of ['show', 'verify'] as const) {
    slot
      .command(action)
      .description(action === 'show' ? 'print every field of a slot state file (or all slots of a data directory)' : 'check magic, version, length and CRC; exit 1 if any file is bad')
      .argument('<path>', 'a state file, a slot directory, pg_replslot or a data directory')
      .option('--json', 'print JSON')
      .action(async (path: string, opts) => setExit((await commands.slot()).slotCommand(action, path, opts)));
  }

  program
    .command('native')
    .description('show whether the native addon is loaded')
    .option('--json', 'print JSON')
    .action(async (opts) => {
      const st = (await commands.native()).nativeStatus();
      if (opts.json) process.stdout.write(JSON.stringify(st) + '\n');
      else process.stdout.write(st.native ? 'native addon loaded\n' : `native addon not loaded: ${st.reason}\n`);
      setExit(0);
    });
  return program;
}

export async function main(argv: string[]): Promise<number> {
  let code = 0;
  const program = buildProgram((c) => (code = c));
  try {
    // pg_waldump spells it --stats[=record]; an optional value would swallow the next path
    await program.parseAsync(argv.map((a) => (a === '--stats=record' ? '--stats-record' : a === '--stats=rmgr' ? '--stats' : a)));
    return code;
  } catch (e) {
    if (e instanceof CommanderError) {
      // help and version exit 0; usage errors were already printed by commander
      return e.exitCode === 0 ? 0 : EXIT_ERROR;
    }
    process.stderr.write(`pgwal: error: ${describeError(e)}\n`);
    if (process.env.PGHA_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
    return EXIT_ERROR;
  }
}

main(process.argv).then(
  (code) => {
    // exit as soon as stdout is flushed: waiting for the thread pool and finalizers costs time
    process.stdout.write('', () => process.exit(code));
  },
  (e) => {
    process.stderr.write(`pgwal: error: ${describeError(e)}\n`);
    process.exitCode = EXIT_ERROR;
  },
);
