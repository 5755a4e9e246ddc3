#!/usr/bin/env node
/**
 * pgha — PostgreSQL HA node tooling: `pgha agent` (the node agent) and `pgha rejoin` (bring an old
 * primary back as a standby), and the cluster's other commands. Exit codes: 0 success, 1 refused
 * (nothing changed), 2 error. Only the wiring is here: each command is a module of ./commands/.
 */
import { Command, CommanderError } from 'commander';
import { describeError, EXIT_ERROR } from './output.js';
import { packageVersion } from '../config/version.js';
import { registerAgentCommand } from './commands/agent.js';
import { registerRejoinCommand } from './commands/rejoin.js';
import { registerClusterCommands } from './commands/cluster.js';
import { registerStatusCommand } from './commands/status.js';
import { registerDemoCommand } from './commands/demo.js';
import { registerInitCommand } from './commands/init.js';
import { registerBackupCommands } from './commands/backup.js';
import { registerArchiveCommands } from './commands/archive.js';
import { registerSlotsCommands } from './commands/slots.js';

function build(setExit: (c: number) => void): Command {
  const program = new Command('pgha').description('PostgreSQL high-availability node tooling').version(packageVersion()).exitOverride();
  program.configureOutput({ writeErr: (s) => process.stderr.write(s) });

  registerAgentCommand(program, setExit);
  registerRejoinCommand(program, setExit);
  registerStatusCommand(program, setExit);
  registerClusterCommands(program, setExit);
  registerDemoCommand(program, setExit);
  registerInitCommand(program, setExit);
  registerBackupCommands(program, setExit);
  registerArchiveCommands(program, setExit);
  registerSlotsCommands(program, setExit);
  return program;
}

// output piped into a reader that stops early (`| head`): stop quietly, as Unix tools do
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

let code = 0;
try {
  await build((c) => (code = c)).parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) code = e.exitCode === 0 ? 0 : EXIT_ERROR;
  else {
    process.stderr.write(`pgha: error: ${describeError(e)}\n`);
    if (process.env.PGHA_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
    code = EXIT_ERROR;
  }
}
if (code >= 0) process.stdout.write('', () => process.exit(code));
