/**
 * `pgha demo`: the operator's path in one command — a 3-node synchronous cluster with agents and a
 * proxy on loopback, a write workload, a kill -9 of the primary, and every phase of the automatic
 * failover and rejoin shown as it happens, then checked. Exit codes: 0 every check holds, 1 a check
 * failed (named), 2 an error (one line: what failed and where).
 */
import type { Command } from 'commander';
import { describeError, EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK, printJson } from '../output.js';

const HELP = `
What it does (everything on 127.0.0.1, under a new temp dir, nothing else touched):
  1. n1: initdb with HA settings (wal_level=logical, wal_log_hints=on, hot_standby,
     synchronous_standby_names='ANY 1 (*)', a loopback pg_hba); n2, n3: pg_basebackup -R;
     a \`pgha agent\` beside each node (automatic rejoin on) and a pgha-proxy with
     --auto-failover --migrate-slots and 200 ms health checks; free ports chosen at run time,
     a random token passed to them in PGHA_TOKEN (never on a command line)
  2. a logical slot (test_decoding) on n1; \`pgha slots sync\` keeps copies on n2 and n3 while
     a consumer reads it (only up to what every standby has replayed)
  3. a few clients write through the proxy: INSERT a row + counter + 1 per transaction,
     reconnecting on errors; every acknowledged COMMIT is recorded with its time
  4. after a few seconds: kill -9 of n1's postmaster, then one line per phase, with the time
     since the kill: detection, promotion, re-routing, first acknowledged write, the old
     primary's automatic rejoin (and its path), the slot live on the new primary
  5. stops the writers, checks every acknowledged write on every node (counter = rows), prints
     a summary; stops every process it started (by PID) and removes the temp dir

Progress goes to stderr; the summary (or, with --json, only the JSON object) to stdout.
Ctrl-C or SIGTERM at any point stops everything it started and removes the temp dir.

JSON (--json): {ok, acknowledged, lost, phases: {detectMs, promoteMs, rerouteMs, firstWriteMs,
rejoinMs, slotMs}, failover, rejoin: {path, lostTransactions, job}, slot: {name, node,
confirmedFlush, onNewPrimary, decodedAcknowledged}, writes, checks: [{name, ok, detail}],
nodes: [{name, role, pgPort, rows, counter, missing, pids: {postgres, agent}}], proxy,
pids: {postgres, agents, proxy, all}, tempDir, kept, logs, durationMs}.

Exit codes: 0 every check holds; 1 a check failed (named; the logs are kept, the data removed);
2 an error (one line naming the log of what failed; the logs are kept); 130/143 interrupted.

Needs: PostgreSQL 15 (initdb, postgres, pg_ctl, pg_basebackup, pg_rewind; found in $PG_BINDIR,
/usr/lib/postgresql/15/bin or by pg_config, or --pg-bin DIR); run as root, PostgreSQL runs as
the \`postgres\` user (PGHA_DEMO_PGUSER to change it).

Examples:
  pgha demo
  pgha demo --json > demo.json
  pgha demo --keep --warmup 10
`;

function positiveNumber(what: string, v: string, min: number): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < min) throw new Error(`${what} must be a number ≥ ${min}, got "${v}"`);
  return n;
}

export function registerDemoCommand(program: Command, setExit: (c: number) => void): void {
  program
    .command('demo')
    .description('show automatic failover end to end: 3 nodes, agents and a proxy on loopback, a write load, kill -9 of the primary; every phase timed, nothing lost')
    .option('--pg-bin <dir>', 'PostgreSQL 15 bin directory (default: $PG_BINDIR, /usr/lib/postgresql/15/bin, pg_config --bindir)')
    .option('--json', 'print the result as one JSON object on stdout (progress still on stderr)')
    .option('--keep', 'leave the temp dir (data directories and logs) and print where it is')
    .option('--writers <n>', 'concurrent clients writing through the proxy', '4')
    .option('--warmup <seconds>', 'seconds of writes before the primary is killed', '3')
    .option('--timeout <seconds>', 'how long the phases may take after the kill', '90')
    .addHelpText('after', HELP)
    .action(async (o: { pgBin?: string; json?: boolean; keep?: boolean; writers: string; warmup: string; timeout: string }) => {
      const { Demo, DemoError } = await import('../../demo/run.js');
      const { renderSummary } = await import('../../demo/summary.js');
      const { pg15BinDir } = await import('../../demo/cluster.js');
      const say = (line: string) => process.stderr.write(`${line}\n`);
      let writers: number, warmup: number, timeout: number;
      try {
        writers = Math.floor(positiveNumber('--writers', o.writers, 1));
        warmup = positiveNumber('--warmup', o.warmup, 0);
        timeout = positiveNumber('--timeout', o.timeout, 5);
      } catch (e) {
        process.stderr.write(`pgha demo: error: ${(e as Error).message}\n`);
        return setExit(EXIT_ERROR);
      }
      const demo = new Demo({ binDir: o.pgBin ?? pg15BinDir(), keep: o.keep === true, writers, warmupMs: warmup * 1000, timeoutMs: timeout * 1000, say });

      let interrupting: Promise<void> | null = null;
      const onSignal = (sig: NodeJS.Signals) => {
        if (interrupting) {
          // a second Ctrl-C: no more waiting for clean shutdowns
          demo.procs.killAllSync();
          process.exit(sig === 'SIGINT' ? 130 : 143);
        }
        say(`pgha demo: ${sig}: stopping every process it started…`);
        interrupting = demo.interrupt(sig).then(
          () => {
            const dir = demo.cluster?.root;
            const left = demo.leftovers();
            say(`pgha demo: interrupted; ${left.length ? `still alive: ${left.join(' ')}` : 'every process it started is stopped'}${dir ? (o.keep ? `; kept ${dir}` : `; removed ${dir}`) : ''}`);
            process.exit(sig === 'SIGINT' ? 130 : 143);
          },
          (e: unknown) => {
            say(`pgha demo: error while stopping: ${describeError(e)}`);
            process.exit(EXIT_ERROR);
          },
        );
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);

      try {
        const r = await demo.run();
        if (o.json) printJson(r);
        else process.stdout.write(renderSummary(r));
        if (r.kept && !o.json) say(`logs: ${Object.entries(r.logs).map(([k, v]) => `${k}: ${v}`).join(', ')}`);
        setExit(r.ok ? EXIT_OK : EXIT_NEGATIVE);
      } catch (e) {
        if (demo.interrupted) {
          await interrupting;
          await new Promise(() => undefined); // the signal handler ends the process
        }
        const msg = describeError(e);
        const where = e instanceof DemoError && e.where ? e.where : null;
        await demo.cleanup({ logsOnly: true }).catch(() => undefined);
        const dir = demo.cluster?.root;
        if (o.json) printJson({ ok: false, error: msg, where, tempDir: dir ?? null, logs: demo.logs() });
        process.stderr.write(`pgha demo: error: ${msg}${where ? ` (see ${where})` : ''}${dir && !o.keep ? `; logs kept in ${dir}` : ''}\n`);
        setExit(EXIT_ERROR);
      }
    });
}
