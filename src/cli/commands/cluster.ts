/**
 * `pgha status`, `pgha switchover`, `pgha failover`: thin shells over a pgha-proxy's admin port.
 * Exit codes: 0 done (status: a primary is routed), 1 refused or not reached (status: no primary),
 * 2 the proxy could not be asked.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { ProxyStatus } from '../../../proxy/server.js';
import type { FailoverReport } from '../../../proxy/failover/failover.js';
import { EXIT_NEGATIVE, EXIT_OK, printJson, table } from '../output.js';

const proxyUrl = (p: string) => `${/^https?:\/\//.test(p) ? p : `http://${p}`}`.replace(/\/+$/, '');

/** the admin token: --token-file, else $PGHA_ADMIN_TOKEN, else $PGHA_TOKEN (never on the command line) */
function adminToken(o: { tokenFile?: string }): string | undefined {
  if (o.tokenFile) return readFileSync(o.tokenFile, 'utf8').trim();
  return process.env.PGHA_ADMIN_TOKEN ?? process.env.PGHA_TOKEN;
}

async function askProxy<T>(url: string, path: string, init: RequestInit = {}, timeoutMs = 10_000): Promise<{ status: number; body: T }> {
  let res: Response;
  try {
    res = await fetch(`${url}${path}`, { ...init, signal: AbortSignal.timeout(timeoutMs) });
  } catch (e) {
    // fetch's own message is only "fetch failed": say what failed underneath
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    const why = cause?.code ?? cause?.message ?? (e as Error).message;
    throw new Error(`cannot reach the pgha-proxy admin port at ${url}${path}: ${(e as Error).name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : why}`);
  }
  const text = await res.text();
  let body: T;
  try {
    body = JSON.parse(text) as T;
  } catch {
    throw new Error(`${url}${path}: HTTP ${res.status}: ${text.slice(0, 200)}`);
  }
  return { status: res.status, body };
}

const fmtBytes = (n: number | null) => (n === null ? '-' : n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`);

export function printStatus(s: ProxyStatus): void {
  process.stdout.write(`primary: ${s.primary ?? 'NONE'}   timeline: ${s.timeline}   system: ${s.systemId ?? '-'}   auto-failover: ${s.autoFailover ? 'on' : 'off'}${s.failoverRunning ? '   FAILOVER RUNNING' : ''}\n`);
  const sync = s.synchronous?.record;
  process.stdout.write(
    `clients: ${s.clients.rw} read-write, ${s.clients.ro} read-only   synchronous: ${sync ? `${sync.method} ${sync.k} of ${sync.members.join(', ')}` : 'none'}${s.synchronous?.mode && s.synchronous.mode !== 'off' ? ` (managed: ${s.synchronous.mode})` : ''}\n`,
  );
  // several proxies on etcd: who decides
  if (s.leader && s.etcd) {
    const l = s.leader.leader;
    process.stdout.write(
      `leader: ${l ? `${l.id}${l.admin ? ` (${l.admin})` : ''}` : 'NONE'}   this proxy: ${s.leader.id} (${s.leader.isLeader ? 'leader' : 'follower'})   etcd: ${s.etcd.endpoints.join(',')} cluster ${s.etcd.cluster} ${s.etcd.healthy ? 'healthy' : `UNREACHABLE${s.etcd.lastError ? ` (${s.etcd.lastError})` : ''}`}   recorded primary: ${s.etcd.primary?.backend ?? 'none'}\n`,
    );
  }
  process.stdout.write('\n');
  process.stdout.write(
    table(
      s.backends.map((b) => [
        b.name,
        b.member ?? '',
        b.role,
        b.timeline ?? '-',
        b.lsn ?? '-',
        b.role === 'standby' ? (b.streaming ? 'streaming' : 'NOT STREAMING') : '-',
        b.syncState ?? '-',
        b.role === 'standby' ? `${fmtBytes(b.lagBytes)} / ${b.lagSeconds === null ? '-' : `${b.lagSeconds.toFixed(1)} s`}` : '-',
        b.slot ?? '-',
        b.sessions,
        b.latencyMs === null ? '-' : `${b.latencyMs} ms`,
        b.fenced ? `FENCED: ${b.reason ?? ''}` : (b.reason ?? b.lastError ?? ''),
      ]),
      ['backend', 'member', 'role', 'timeline', 'lsn', 'replication', 'sync', 'lag', 'slot', 'sessions', 'check', 'note'],
    ),
  );
  for (const f of s.failovers) {
    process.stdout.write(
      `${f.kind ?? 'failover'} ${f.startedAt}: ${f.from} -> ${f.to ?? '-'} in ${f.ms} ms via ${f.via ?? '-'}, fenced ${f.fenced}${f.pauseMs !== null && f.pauseMs !== undefined ? `, writes paused ${f.pauseMs} ms` : ''}${f.error ? `, ERROR ${f.error}` : ''}\n`,
    );
  }
}

export function registerClusterCommands(program: Command, setExit: (c: number) => void): void {
  program
    .command('status')
    .description("the cluster as a pgha-proxy sees it: each backend's role, timeline, replication, lag, slot and fencing; failovers")
    .requiredOption('--proxy <url>', 'admin address of the proxy (its --admin), e.g. http://127.0.0.1:8008')
    .option('--json', "print the proxy's /status JSON")
    .option('--watch [seconds]', 'print it again every N seconds (default 2) until interrupted')
    .addHelpText('after', '\nExit codes: 0 a primary is routed, 1 no primary, 2 the proxy could not be asked.')
    .action(async (o) => {
      const url = proxyUrl(o.proxy);
      const once = async (): Promise<boolean> => {
        const { status, body } = await askProxy<ProxyStatus>(url, '/status');
        if (status !== 200) throw new Error(`${url}/status: HTTP ${status}`);
        if (o.json) printJson(body);
        else printStatus(body);
        return body.primary !== null;
      };
      if (o.watch === undefined) return setExit((await once()) ? EXIT_OK : EXIT_NEGATIVE);
      const seconds = o.watch === true ? 2 : Number(o.watch);
      if (!(seconds > 0)) throw new Error(`--watch: "${o.watch}" is not a number of seconds`);
      for (;;) {
        if (!o.json && process.stdout.isTTY) process.stdout.write('\x1b[2J\x1b[H');
        if (!o.json) process.stdout.write(`${new Date().toISOString()}  (every ${seconds} s, Ctrl-C to stop)\n`);
        try {
          await once();
        } catch (e) {
          process.stdout.write(`${(e as Error).message}\n`);
        }
        await new Promise((r) => setTimeout(r, seconds * 1000));
      }
    });

  const act = async (o: { proxy: string; to?: string; json?: boolean; tokenFile?: string; timeout: string }, path: '/switchover' | '/failover') => {
    const url = proxyUrl(o.proxy);
    const token = adminToken(o);
    const { status, body } = await askProxy<FailoverReport & { error?: string; message?: string }>(
      url,
      path,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify(o.to ? { to: o.to } : {}),
      },
      Number(o.timeout),
    );
    if (status === 401 || status === 403 || (status >= 400 && !('kind' in body))) {
      if (o.json) printJson(body);
      else process.stderr.write(`pgha: ${path.slice(1)} refused by ${url}: ${body.message ?? body.error ?? `HTTP ${status}`}\n`);
      return setExit(EXIT_NEGATIVE);
    }
    const r = body as FailoverReport;
    if (o.json) printJson(r);
    else {
      process.stdout.write(`${r.kind}: ${r.from} -> ${r.to ?? '-'}${r.error ? ` FAILED: ${r.error}` : ''}\n`);
      if (r.pauseMs !== null) process.stdout.write(`writes paused: ${r.pauseMs} ms\n`);
      if (r.lostTransactions !== null) process.stdout.write(`lost transactions: ${r.lostTransactions}\n`);
      process.stdout.write(`promoted via ${r.via ?? '-'}; old primary ${r.fenced}; re-pointed: ${r.repointed.join(', ') || '-'}\n`);
    }
    setExit(r.error ? EXIT_NEGATIVE : EXIT_OK);
  };
  const tokenHelp = '\nThe admin token is read from --token-file, else $PGHA_ADMIN_TOKEN, else $PGHA_TOKEN.\nExit codes: 0 done, 1 refused or failed (the JSON says why), 2 the proxy could not be asked.';

  program
    .command('switchover')
    .description('planned switchover, nothing lost: hold new transactions, stop the primary cleanly, let the target replay everything, promote it, rejoin the old primary as its standby')
    .requiredOption('--proxy <url>', 'admin address of the pgha-proxy')
    .option('--to <host:port>', 'the standby to promote (default: the streaming standby least behind)')
    .option('--token-file <file>', 'file holding the admin token')
    .option('--timeout <ms>', 'give up after this long', '120000')
    .option('--json', 'print {from, to, pauseMs, lostTransactions, …}')
    .addHelpText('after', tokenHelp)
    .action((o) => act(o, '/switchover'));

  program
    .command('failover')
    .description('promote a named standby now, when the primary is gone or must not be waited for (a live old primary is fenced through its agent first)')
    .requiredOption('--proxy <url>', 'admin address of the pgha-proxy')
    .requiredOption('--to <host:port>', 'the standby to promote')
    .option('--token-file <file>', 'file holding the admin token')
    .option('--timeout <ms>', 'give up after this long', '120000')
    .option('--json', 'print the failover report')
    .addHelpText('after', tokenHelp)
    .action((o) => act(o, '/failover'));
}
