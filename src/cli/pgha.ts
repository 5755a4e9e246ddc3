#!/usr/bin/env node
/**
 * pgha — PostgreSQL HA node tooling: `pgha agent` (the node agent) and `pgha rejoin` (bring an old
 * primary back as a standby). Exit codes: 0 success, 1 refused (nothing changed), 2 error.
 */
import { Command, CommanderError } from 'commander';
import { describeError, EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK, printJson } from './output.js';
import { packageVersion } from './version.js';
import { registerClusterCommands } from './commands/cluster.js';
import { registerStatusCommand } from './commands/status.js';
import { registerDemoCommand } from './commands/demo.js';
import { registerInitCommand } from './commands/init.js';
import { resolveToken, TOKEN_HELP } from '../ship/token.js';

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function build(setExit: (c: number) => void): Command {
  const program = new Command('pgha').description('PostgreSQL high-availability node tooling').version(packageVersion()).exitOverride();
  program.configureOutput({ writeErr: (s) => process.stderr.write(s) });

  program
    .command('agent')
    .description('run the node agent: REST API under /api/pg/v1 beside one data directory')
    .option('--config <file>', 'YAML or JSON: the cluster file (with --name: that node\'s part) or the agent\'s own settings; the environment and flags override it')
    .option('--pgdata <dir>', 'data directory (env PGDATA)')
    .option('--listen <host:port>', 'listen address (env PGHA_LISTEN, default 127.0.0.1:8079)')
    .option('--name <name>', 'this node\'s name (env PGHA_NODE_NAME); with a cluster config file, the node whose part it takes')
    .option('--token <token>', 'shared bearer token, at least 16 characters (env PGHA_TOKEN; visible in ps: prefer --token-file)')
    .option('--token-file <file>', 'file holding the token (wins over --token, PGHA_TOKEN and the config file; mode 600)')
    .option('--peer <name=url>', 'another node\'s agent (repeatable; env PGHA_PEERS="a=url,b=url")', collect)
    .option('--pg-port <n>', 'PostgreSQL port (env PGHA_PG_PORT; default from postgresql.conf)')
    .option('--pg-host <host>', 'address peers use to reach this PostgreSQL (env PGHA_PG_HOST)')
    .option('--pg-bin <dir>', 'PostgreSQL bin directory (env PGHA_PG_BIN)')
    .option('--repl-user <user>', 'database user for replication and SQL (env PGHA_REPL_USER)')
    .option('--tls-cert <file>', 'serve HTTPS with this PEM certificate (env PGHA_TLS_CERT); the token then never crosses the network in clear')
    .option('--tls-key <file>', 'its PEM private key (env PGHA_TLS_KEY)')
    .option('--agent-ca <file>', "CA the other agents' certificates are checked against (env PGHA_AGENT_CA; CLI commands read PGHA_AGENT_CA too)")
    .option('--no-auto-rejoin', 'do not rejoin this node by itself when it is fenced or stopped and a primary is found (env PGHA_AUTO_REJOIN=0)')
    .option('--auto-rejoin-reclone', 'let the automatic rejoin re-clone (data directory moved aside) when no rewind is possible (env PGHA_AUTO_REJOIN_RECLONE=1)')
    .option('--proxy <url>', 'a pgha-proxy admin base URL, asked (GET /status) for the primary before the peers (repeatable; env PGHA_PROXIES="url,url")', collect)
    .option('--etcd <urls>', 'etcd endpoints URL[,URL…] (env PGHA_ETCD): register this node, hold the primary lease while it is the recorded primary, fence it when cut off from etcd')
    .option('--cluster <name>', "with --etcd: the cluster's name there, as the proxies' --cluster (env PGHA_CLUSTER)")
    .option('--etcd-ttl <seconds>', 'with --etcd: the agent\'s lease; a primary that cannot renew it fences itself before it expires (env PGHA_ETCD_TTL, default 5)')
    .option('--dcs-failsafe', 'with --etcd: while etcd does not answer, a primary keeps running as long as every other member\'s agent confirms it sees no other primary (and then refuses to be promoted for one TTL); else it fences (env PGHA_DCS_FAILSAFE=1)')
    .option('--log-format <format>', 'json (one JSON object a line) or pretty (human); default: pretty on a terminal, else json (env PGHA_LOG_FORMAT)')
    .option('--log-level <level>', 'fatal, error, warn, info, debug (env PGHA_LOG_LEVEL, default info); the proxies\' and peers\' polls are logged at debug')
    .action(async (flags) => {
      const { loadAgentConfig } = await import('../agent/config.js');
      const { buildAgent } = await import('../agent/server.js');
      const { createLogger, logFormat } = await import('../log/log.js');
      const cfg = loadAgentConfig(flags);
      const log = createLogger({ level: flags.logLevel, base: { svc: 'pgha-agent', node: cfg.name }, format: logFormat(flags.logFormat) });
      const { app } = buildAgent(cfg, { loggerInstance: log });
      await app.listen({ host: cfg.host, port: cfg.port });
      log.info({ name: cfg.name, pgdata: cfg.pgdata, pgPort: cfg.pgPort ?? null, peers: Object.keys(cfg.peers ?? {}), autoRejoin: cfg.autoRejoin !== false, etcd: cfg.etcd ?? null, tls: Boolean(cfg.tlsCert) }, 'pgha agent started');
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
      const { rejoin, RejoinRefused } = await import('../rejoin/execute.js');
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
  registerStatusCommand(program, setExit);
  registerClusterCommands(program, setExit);
  registerDemoCommand(program, setExit);
  registerInitCommand(program, setExit);
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
      const { listSlots } = await import('../slots/list.js');
      const listing = await listSlots(o.agent ? { ...o, token: resolveToken(o) } : o);
      if (o.json) printJson(listing);
      else {
        const { table } = await import('./output.js');
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
      const { syncOnce } = await import('../slots/sync.js');
      const token = resolveToken(o);
      const pass = async () => {
        const r = await syncOnce(o.from, o.to, token, o.json ? undefined : (m) => process.stderr.write(m + '\n'));
        if (o.json) printJson(r);
        else for (const x of r.slots) process.stdout.write(`${x.name}: primary ${x.primaryConfirmedFlush}, copy ${x.copyConfirmedFlush ?? '-'} (${x.lagBytes ?? '?'} bytes behind)${x.installed ? ', installed' : ''}\n`);
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
      const { migrateSlots, allLive, SlotMigrationRefused } = await import('../slots/migrate.js');
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
