/**
 * `pgha switchover`, `pgha failover`: thin shells over a pgha-proxy's admin port (`pgha status` is
 * status.ts). Exit codes: 0 done, 1 refused or not reached, 2 the proxy could not be asked.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { FailoverReport } from '../../../proxy/failover/failover.js';
import { EXIT_NEGATIVE, EXIT_OK, printJson } from '../output.js';

export const proxyUrl = (p: string) => `${/^https?:\/\//.test(p) ? p : `http://${p}`}`.replace(/\/+$/, '');

/** the admin token: --token-file, else $PGHA_ADMIN_TOKEN, else $PGHA_TOKEN (never on the command line) */
function adminToken(o: { tokenFile?: string }): string | undefined {
  if (o.tokenFile) return readFileSync(o.tokenFile, 'utf8').trim();
  return process.env.PGHA_ADMIN_TOKEN ?? process.env.PGHA_TOKEN;
}

export async function askProxy<T>(url: string, path: string, init: RequestInit = {}, timeoutMs = 10_000): Promise<{ status: number; body: T }> {
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

export function registerClusterCommands(program: Command, setExit: (c: number) => void): void {
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
