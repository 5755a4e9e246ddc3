#!/usr/bin/env node
/**
 * pgha — PostgreSQL HA node tooling: `pgha agent` (the node agent) and `pgha rejoin` (bring an old
 * primary back as a standby). Exit codes: 0 success, 1 refused (nothing changed), 2 error.
 */
import { Command, CommanderError } from 'commander';
import { describeError, EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK, printJson } from './output.js';

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function build(setExit: (c: number) => void): Command {
  const program = new Command('pgha').description('PostgreSQL high-availability node tooling').version('0.1.0').exitOverride();
  program.configureOutput({ writeErr: (s) => process.stderr.write(s) });

  program
    .command('agent')
    .description('run the node agent: REST API under /api/pg/v1 beside one data directory')
    .option('--config <file>', 'JSON config file (flags and environment override it)')
    .option('--pgdata <dir>', 'data directory (env PGDATA)')
    .option('--listen <host:port>', 'listen address (env PGHA_LISTEN, default 127.0.0.1:8079)')
    .option('--name <name>', 'this node\'s name (env PGHA_NODE_NAME)')
    .option('--token <token>', 'shared bearer token, at least 16 characters (env PGHA_TOKEN)')
    .option('--peer <name=url>', 'another node\'s agent (repeatable; env PGHA_PEERS="a=url,b=url")', collect)
    .option('--pg-port <n>', 'PostgreSQL port (env PGHA_PG_PORT; default from postgresql.conf)')
    .option('--pg-host <host>', 'address peers use to reach this PostgreSQL (env PGHA_PG_HOST)')
    .option('--pg-bin <dir>', 'PostgreSQL bin directory (env PGHA_PG_BIN)')
    .option('--repl-user <user>', 'database user for replication and SQL (env PGHA_REPL_USER)')
    .action(async (flags) => {
      const { loadAgentConfig } = await import('../agent/config.js');
      const { buildAgent } = await import('../agent/server.js');
      const cfg = loadAgentConfig(flags);
      const { app } = buildAgent(cfg);
      await app.listen({ host: cfg.host, port: cfg.port });
      const stop = async () => {
        await app.close();
        process.exit(0);
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
      setExit(-1); // keep running
    });

  program
    .command('rejoin')
    .description('rejoin a stopped node to the source\'s timeline: follow, pg_rewind, or (with --allow-reclone) re-clone')
    .requiredOption('--pgdata <dir>', 'the stopped node\'s data directory')
    .requiredOption('--source <url>', 'agent URL of the new primary')
    .requiredOption('--token <token>', 'bearer token of the agents')
    .option('--peer <url>', 'another agent that may still have old WAL (repeatable)', collect)
    .option('--pg-bin <dir>', 'PostgreSQL bin directory', '/usr/lib/postgresql/15/bin')
    .option('--slot <name>', 'replication slot on the source')
    .option('--allow-reclone', 'when no rewind is possible, move the data directory aside and re-clone')
    .option('--dry-run', 'print the plan and change nothing')
    .option('--json', 'print {"path","reason","lostTransactions":{"count","report"},"fetched",…}')
    .action(async (o) => {
      const { rejoin, RejoinRefused } = await import('../rejoin/execute.js');
      try {
        const r = await rejoin({
          pgdata: o.pgdata,
          source: o.source,
          token: o.token,
          binDir: o.pgBin,
          peers: o.peer,
          slot: o.slot,
          allowReclone: o.allowReclone === true,
          dryRun: o.dryRun === true,
          log: o.json ? undefined : (m) => process.stderr.write(m + '\n'),
        });
        if (o.json) printJson(r);
        else {
          process.stdout.write(`${r.dryRun ? 'plan' : 'rejoined'}: ${r.path} — ${r.reason}\n`);
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
  return program;
}

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
