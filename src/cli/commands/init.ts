/**
 * `pgha init --config FILE`: bootstrap the cluster a config file describes, on this machine.
 * Exit codes: 0 done (or the dry run's plan), 1 refused (nothing touched) or failed (named step),
 * 2 a bad config file or bad arguments.
 */
import { realpathSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK, printJson } from '../output.js';

const HELP = `
What it does (every node's data directory is on this machine):
  1. checks first, touching nothing: every data directory absent or empty, every port free,
     PostgreSQL's tools in pgBin, the owner (postgres.osUser) there; else exit 1 with the reasons
  2. the primary (postgres.primary, default the first node): initdb (--data-checksums, or
     wal_log_hints=on), postgresql.conf (wal_level, max_wal_senders, max_replication_slots,
     hot_standby, listen_addresses, port, cluster_name, postgres.parameters), pg_hba.conf (the
     members and loopback: replication and SQL, postgres.auth; then postgres.hba), started
  3. the replication role when it is not the superuser, its password from its file; a member
     slot pgha_<node> for every standby
  4. every standby at once: pg_basebackup -R through its slot (standby.signal, primary_conninfo,
     primary_slot_name), its own port and cluster_name, started; then waits until each streams
  5. prints the daemons' command lines (pgha agent --config FILE --name NODE, pgha-proxy
     --config FILE --name PROXY); --systemd DIR writes a hardened unit file for each
PostgreSQL's tools run as the data directories' owner (runuser when pgha init runs as root).
A failure part way stops the servers it started and leaves the directories for a look.

JSON (--json): {ok, plan: {refusals, notes, nodes, settings, hba, sql, slots, steps, daemons},
result: {primary, nodes: [{name, role, dataDir, pgPort, streaming, slot}], daemons, units,
durationMs} | null, error?}.

Examples:
  pgha init --config /etc/pgha/pgha.yaml --dry-run
  pgha init --config /etc/pgha/pgha.yaml --systemd /etc/systemd/system
`;

/** dist/src/cli/commands → dist/ */
const DIST = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** how this installation's CLIs are run: exact argv, and as a person types them */
function clis(): { pgha: { argv: string[]; shown: string }; proxy: { argv: string[]; shown: string } } {
  const pghaJs = realpathSync(join(DIST, 'src', 'cli', 'pgha.js'));
  const proxyJs = realpathSync(join(DIST, 'proxy', 'cli.js'));
  // run through the installed `pgha` command: show the commands by name
  const byName = basename(process.argv[1] ?? '') === 'pgha';
  return {
    pgha: { argv: [process.execPath, pghaJs], shown: byName ? 'pgha' : `node ${pghaJs}` },
    proxy: { argv: [process.execPath, proxyJs], shown: byName ? 'pgha-proxy' : `node ${proxyJs}` },
  };
}

export function registerInitCommand(program: Command, setExit: (c: number) => void): void {
  program
    .command('init')
    .description('bootstrap the cluster a config file describes, on this machine: initdb of the primary with what HA needs, member slots, base backups of the standbys; prints how to start the daemons')
    .requiredOption('--config <file>', 'the cluster config file (YAML or JSON)')
    .option('--systemd <dir>', 'also write a hardened systemd unit file for every agent and proxy into DIR')
    .option('--dry-run', 'print the plan; touch nothing')
    .option('--json', 'print {ok, plan, result} as JSON (progress still on stderr)')
    .addHelpText('after', HELP)
    .action(async (o: { config: string; systemd?: string; dryRun?: boolean; json?: boolean }) => {
      const { loadClusterConfig, ConfigFileError } = await import('../../config/load.js');
      const { planInit } = await import('../../init/plan.js');
      const { dirStates, executeInit, localAddresses, InitRefused, InitFailed, renderUnits } = await import('../../init/execute.js');
      const configFile = resolve(o.config);
      let cluster;
      try {
        cluster = loadClusterConfig(configFile);
      } catch (e) {
        if (e instanceof ConfigFileError) {
          if (o.json) printJson({ ok: false, error: e.message });
          process.stderr.write(`pgha init: ${e.message}\n`);
          return setExit(EXIT_ERROR);
        }
        throw e;
      }
      const cli = clis();
      const plan = planInit({ cluster, configFile, dirState: dirStates(cluster), localAddresses: localAddresses(), pgha: cli.pgha, proxy: cli.proxy });
      const say = (line: string) => process.stderr.write(`${line}\n`);
      const systemdDir = o.systemd ? resolve(o.systemd) : null;

      if (o.dryRun || plan.refusals.length) {
        const ok = plan.refusals.length === 0;
        if (o.json) printJson({ ok, dryRun: true, plan, units: systemdDir ? Object.keys(renderUnits(plan, cluster, plan.osUser, { pghaArgv: cli.pgha.argv, proxyArgv: cli.proxy.argv })).map((f) => join(systemdDir, f)) : [], result: null });
        else {
          if (!ok) process.stderr.write(`pgha init: refused (nothing touched): ${plan.refusals.join('; ')}\n`);
          process.stdout.write(`plan for ${configFile}${ok ? '' : ' (refused: nothing is touched)'}:\n`);
          plan.steps.forEach((s, i) => process.stdout.write(`  ${i + 1}. ${s}\n`));
          if (systemdDir) process.stdout.write(`  ${plan.steps.length + 1}. unit files in ${systemdDir}: ${plan.daemons.map((d) => d.unit).join(', ')}\n`);
          for (const n of plan.notes) process.stdout.write(`note: ${n}\n`);
          process.stdout.write(`then start the daemons:\n${plan.daemons.map((d) => `  ${d.command}`).join('\n')}\n`);
        }
        return setExit(ok ? EXIT_OK : EXIT_NEGATIVE);
      }

      try {
        const result = await executeInit(plan, cluster, { systemdDir, pghaArgv: cli.pgha.argv, proxyArgv: cli.proxy.argv, log: say });
        if (o.json) printJson({ ok: true, dryRun: false, plan, result });
        else {
          process.stdout.write(`cluster ready: ${result.primary} primary, ${result.nodes.filter((n) => n.role === 'standby').map((n) => `${n.name} streaming`).join(', ') || 'no standbys'} (${(result.durationMs / 1000).toFixed(1)} s)\n`);
          for (const n of plan.notes) process.stdout.write(`note: ${n}\n`);
          process.stdout.write(`start the daemons (as ${plan.osUser} or root; each stays in the foreground):\n${plan.daemons.map((d) => `  ${d.command}`).join('\n')}\n`);
          if (result.units.length)
            process.stdout.write(`or with systemd: copy ${result.units.join(', ')} to /etc/systemd/system, then\n  systemctl daemon-reload && systemctl enable --now ${plan.daemons.map((d) => d.unit).join(' ')}\n`);
        }
        setExit(EXIT_OK);
      } catch (e) {
        if (e instanceof InitRefused || e instanceof InitFailed) {
          const refused = e instanceof InitRefused;
          if (o.json) printJson({ ok: false, dryRun: false, plan, result: null, error: e.message, refused });
          if (refused) process.stderr.write(`pgha init: refused (nothing touched): ${e.reasons.join('; ')}\n`);
          else process.stderr.write(`pgha init: failed: ${e.message}\n`);
          return setExit(EXIT_NEGATIVE);
        }
        throw e;
      }
    });
}
