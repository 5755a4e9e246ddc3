/**
 * `pgha agent`: the node agent daemon (REST API under /api/pg/v1 beside one data directory). Its
 * settings come from a config file, the environment and these flags (src/agent/config.ts); it runs
 * until SIGTERM or SIGINT.
 */
import type { Command } from 'commander';
import { collect } from '../options.js';

export function registerAgentCommand(program: Command, setExit: (c: number) => void): void {
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
      const { loadAgentConfig } = await import('../../agent/config.js');
      const { buildAgent } = await import('../../agent/server.js');
      const { createLogger, logFormat } = await import('../../log/log.js');
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
}
