#!/usr/bin/env node
/**
 * pgha-proxy: a PostgreSQL protocol-aware listener that follows the primary through failover.
 * Exit codes: 0 stopped by a signal, 2 bad configuration, 1 could not start (e.g. port in use).
 */
import { Command, Option } from 'commander';
import { loadProxyConfig, ProxyConfigError, type ProxyFlags } from './config.js';
import { ProxyServer } from './server.js';
import { setAgentCa } from '../src/ship/client.js';
import { createLogger, logFormat, LogFormatError, type LogFormat } from '../src/log/log.js';
import { packageVersion } from '../src/config/version.js';

const collect = (v: string, prev: string[] = []) => [...prev, v];

const program = new Command('pgha-proxy')
  .version(packageVersion())
  .description('PostgreSQL wire-protocol proxy: writes always reach the current primary; follows (or runs) failover')
  .option('--config <file>', 'YAML or JSON file: the cluster file (pgha init\'s; this proxy\'s part) or the options below as camelCase keys; flags win')
  .option('--name <name>', 'with a cluster config file: which of its proxies this is (needed when it lists several)')
  .option('--listen <host:port>', 'read-write listener: always the primary')
  .option('--backend <host:port>', 'a PostgreSQL server (repeat; any order, the primary is found)', collect)
  .option('--read-listen <host:port>', 'read-only listener: healthy standbys within --read-max-lag, else the primary')
  .option('--read-max-lag <bytes>', 'standbys further behind the primary are not used for reads (default 16777216)')
  .option('--admin <host:port>', 'HTTP admin: GET /status, /metrics, /sessions, /health')
  .option('--health-interval <ms>', 'period of health checks (default 1000)')
  .option('--health-timeout <ms>', 'a check not answered within this fails (default 2000)')
  .option('--health-retries <n>', 'consecutive failed checks before a backend is down (default 3)')
  .option('--health-retry-delay <ms>', 'delay before re-checking after a failure (default 100)')
  .option('--health-user <user>', 'role for health checks, promotion and re-pointing (default $PGUSER or postgres)')
  .option('--health-password <password>', 'its password (default $PGPASSWORD; prefer --health-password-file: a flag shows in ps)')
  .option('--health-password-file <file>', 'a file holding that password')
  .option('--health-database <db>', 'database for health checks (default postgres)')
  .option('--auto-failover', 'promote the best standby when the primary is down, fence the old one')
  .option('--agent <host:port=url>', 'node agent of a backend, used to promote and fence (repeat)', collect)
  .option('--token <token>', 'bearer token of the agents (default $PGHA_TOKEN; prefer --token-file or the environment: a flag shows in ps)')
  .option('--token-file <file>', 'a file holding the agents\' bearer token')
  .option('--agent-ca <file>', "CA the agents' HTTPS certificates are checked against (default $PGHA_AGENT_CA, else the system's)")
  .option('--migrate-slots', "on failover, have the new primary's agent carry logical slots over")
  .option('--tls-cert <file>', 'PEM certificate: clients may use TLS (sslmode=require…)')
  .option('--tls-key <file>', 'PEM private key for --tls-cert')
  .addOption(new Option('--backend-sslmode <mode>', 'TLS towards the servers (default prefer)').choices(['disable', 'prefer', 'require', 'verify-ca', 'verify-full']))
  .option('--backend-sslrootcert <file>', 'CA bundle for verify-ca/verify-full')
  .option('--backend-sslcert <file>', 'PEM certificate presented to the servers (for pg_hba cert / clientcert; with --backend-sslkey)')
  .option('--backend-sslkey <file>', 'PEM private key for --backend-sslcert')
  .option('--client-tls-ca <file>', "PEM CA: clients must present a certificate it signed whose CN is their user name, as pg_hba's cert method (needs --tls-cert)")
  .option('--startup-timeout <ms>', 'a client must send its startup packet within this (default 10000)')
  .option('--auth-timeout <ms>', 'authentication must finish within this, else the connection is dropped as the server would (default 15000)')
  .option('--connect-timeout <ms>', 'connecting to a server (default: the health timeout)')
  .option('--primary-wait <ms>', 'during a failover, new clients wait this long for a primary (default 10000)')
  .option('--max-clients <n>', 'client connections accepted at once (default 10000)')
  .addOption(new Option('--relay <who>', 'after startup, bytes are moved by the native relay (Rust, default when built) or by Node; TLS sessions always by Node').choices(['native', 'node']))
  .option('--relay-threads <n>', 'most threads (epoll loops) of the native relay: new sessions fill the first loop until it uses half a core, then spread (default: the number of cores, at most 4)')
  .option('--no-member-slots', 'do not manage a physical replication slot for every member on the primary')
  .addOption(new Option('--synchronous-mode <mode>', 'manage synchronous_standby_names: off (leave as configured), on (ANY k of the streaming standbys, none: asynchronous), strict (never acknowledge a write held by the primary alone)').choices(['off', 'on', 'strict']))
  .option('--synchronous-count <k>', 'with --synchronous-mode: commits wait for k standbys (default 1)')
  .option('--cluster-interval <ms>', 'period of slot and synchronous-standby management (default 2000)')
  .option('--admin-token-file <file>', 'a file holding the admin token')
  .option('--admin-token <token>', 'bearer token for the admin port\'s actions, POST /switchover and /failover (default $PGHA_ADMIN_TOKEN, else --token); without one they are refused')
  .option('--etcd <urls>', 'etcd endpoints (URL[,URL…]): share cluster state with other proxies and the agents; one leader decides (failover, switchover, cluster management), every proxy routes to the primary recorded there')
  .option('--cluster <name>', "with --etcd: the cluster's name there (keys under /pgha/NAME/)")
  .option('--etcd-ttl <seconds>', "with --etcd: the leader's lease; a follower takes over within it when the leader is gone (default 5)")
  .option('--pool-mode <mode>', 'pool server connections: session (one per client while it is connected) or transaction (one per transaction); the proxy then authenticates clients itself (default: no pooling, one server connection per client, authentication by the server)')
  .option('--pool-size <n>', 'with --pool-mode: server connections per (user, database, node) (default 20)')
  .option('--max-db-connections <n>', "with --pool-mode: server connections to one node per database, all users together; a client waits when it is reached and an idle connection of another user is closed to make room; 0: no limit (PgBouncer's max_db_connections; default 0)")
  .option('--max-user-connections <n>', "with --pool-mode: server connections to one node per user, all databases together, as --max-db-connections (PgBouncer's max_user_connections; default 0)")
  .option('--pool-wait-timeout <ms>', "with --pool-mode: a client that waits this long for a server connection of a full or paused pool is told so (SQLSTATE 53300, 'query_wait_timeout') and closed; 0: no limit (PgBouncer's query_wait_timeout; default 120000)")
  .option('--server-idle-timeout <ms>', "with --pool-mode: close a server connection idle this long; 0: never (PgBouncer's server_idle_timeout; default 600000)")
  .option('--server-lifetime <ms>', "with --pool-mode: close a server connection connected this long once no client uses it; 0: never (PgBouncer's server_lifetime, whose 0 means use once; default 3600000)")
  .option('--max-prepared-statements <n>', 'with --pool-mode transaction: named statements kept prepared per server connection, the least recently used closed first (PgBouncer\'s max_prepared_statements; default 200)')
  .option('--auth-file <file>', 'with --pool-mode: PgBouncer userlist.txt ("user" "password" per line: plain, md5… or SCRAM-SHA-256$… secret)')
  .option('--auth-query <sql>', "with --auth-user: look up users missing from --auth-file on the primary (default: SELECT usename, passwd FROM pg_shadow WHERE usename = $1)")
  .option('--auth-user <user>', 'with --pool-mode: run the auth query as this user (its plain password in --auth-file)')
  .option('--auth-type <method>', 'with --pool-mode: scram-sha-256 or md5, the method for users with a plain password (MD5 and SCRAM entries use their own; default scram-sha-256)')
  .option('--server-reset-query <sql>', "with --pool-mode session: run when a client lets its server connection go (default DISCARD ALL; '' for none)")
  .option('--admin-users <users>', 'with --pool-mode: users (comma-separated, in --auth-file) allowed on the console: psql -d pgha (SHOW POOLS, SHOW CLIENTS, SHOW SERVERS, PAUSE, RESUME)')
  .option('--log-level <level>', 'pino level: fatal, error, warn, info, debug (default info or $PGHA_LOG_LEVEL)')
  .option('--log-format <format>', 'json (one JSON object a line) or pretty (human); default: pretty on a terminal, else json (env PGHA_LOG_FORMAT)')
  .addHelpText(
    'after',
    `
Examples:
  pgha-proxy --listen 127.0.0.1:6432 --backend 10.0.0.1:5432 --backend 10.0.0.2:5432 --admin 127.0.0.1:8008
  pgha-proxy --config /etc/pgha/proxy.json --auto-failover \\
      --agent 10.0.0.1:5432=http://10.0.0.1:8010 --agent 10.0.0.2:5432=http://10.0.0.2:8010 --token $TOKEN
  pgha-proxy --config /etc/pgha/proxy.json --auto-failover --etcd http://10.0.0.9:2379 --cluster main
`,
  )
  .action(async (allFlags: ProxyFlags & { logFormat?: string }, cmd: Command) => {
    const { logFormat: logFormatFlag, ...flags } = allFlags;
    // a --no-… flag has a default of true: leave the config file's value alone unless it was given
    if (cmd.getOptionValueSource('memberSlots') === 'default') delete flags.memberSlots;
    let cfg;
    let format: LogFormat;
    try {
      try {
        format = logFormat(logFormatFlag);
      } catch (e) {
        throw e instanceof LogFormatError ? new ProxyConfigError(e.message) : e;
      }
      cfg = loadProxyConfig(flags);
      if (cfg.agentCa) {
        try {
          setAgentCa(cfg.agentCa);
        } catch (e) {
          throw new ProxyConfigError(`--agent-ca ${cfg.agentCa}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
        }
      }
    } catch (e) {
      if (e instanceof ProxyConfigError) {
        process.stderr.write(`pgha-proxy: ${e.message}\n`);
        process.exit(2);
      }
      throw e;
    }
    const proxy = new ProxyServer(cfg, createLogger({ level: cfg.logLevel, base: { svc: 'pgha-proxy' }, format }));
    try {
      await proxy.start();
    } catch (e) {
      process.stderr.write(`pgha-proxy: cannot start: ${(e as Error).message}\n`);
      process.exit(1);
    }
    const shutdown = (sig: string) => {
      proxy.log.info({ signal: sig }, 'stopping');
      void proxy.stop().finally(() => process.exit(0));
    };
    process.once('SIGINT', () => shutdown('SIGINT'));
    process.once('SIGTERM', () => shutdown('SIGTERM'));
    // (Node's default for SIGHUP is to exit: a `systemctl reload` must not stop the proxy)
    process.on('SIGHUP', () => proxy.reload());
  });

await program.parseAsync();
