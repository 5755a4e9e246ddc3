/**
 * pgha-proxy against direct PostgreSQL and PgBouncer (session mode, Debian package) on the same
 * cluster in one run: pgbench select-only and tpcb-like in -M simple / extended / prepared, pgbench -C
 * (a new connection per transaction), and RSS at 1000 idle clients.
 *   npx tsx bench/proxy.ts [seconds per pgbench run=8] [rounds=2]
 * Rounds interleave the targets; the median TPS of the rounds is reported. Writes bench/results/proxy.json.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serialize } from 'pg-protocol';
import { cleanupAll, PgCluster, sleep, waitFor } from '../test/harness/cluster.js';
import { startProxy } from '../test/support/proxy.js';
import { rawSession } from '../test/support/raw-client.js';
import { cpuMs, pgbouncerBin, startPgbouncer, stopPgbouncers } from './support/pgbouncer.js';

const secs = Number(process.argv[2] ?? 8);
const rounds = Number(process.argv[3] ?? 2);
const here = dirname(fileURLToPath(import.meta.url));

const rssKiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);

/** pgha-proxy through the tests' helper (child process, admin port, ready once it routes to the primary) */
const proxyFor = (pgPort: number, relay: 'native' | 'node', extra: string[] = []) => startProxy([pgPort], ['--backend-sslmode', 'disable', '--relay', relay, '--log-level', 'warn', ...extra]);


async function idleClients(port: number, n: number, what: string): Promise<Socket[]> {
  const out: Socket[] = [];
  for (let i = 0; i < n; i += 50) {
    out.push(
      ...(await Promise.all(
        Array.from({ length: Math.min(50, n - i) }, async () => {
          let timer: NodeJS.Timeout | undefined;
          const timeout = new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`${what}: a client of batch ${out.length / 50 + 1} got no ReadyForQuery in 20 s`)), 20_000);
          });
          const s = await Promise.race([rawSession(port), timeout]).finally(() => clearTimeout(timer));
          // one query each, so a pooler has really given the client a server connection
          s.write(serialize.query('SELECT 1'));
          await sleep(5);
          return s;
        }),
      )),
    );
  }
  await sleep(500);
  return out;
}

/** every process this bench starts, killed by PID at the end whatever happens */
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

try {
  const c = await PgCluster.init({ name: 'bench-proxy', conf: { max_connections: 1200, shared_buffers: '256MB', fsync: 'off', synchronous_commit: 'off' } });
  await c.start();
  const pgbench = (port: number, args: string[]) => execFileSync(join(c.clientBinDir, 'pgbench'), ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', ...args, 'postgres'], { encoding: 'utf8', maxBuffer: 1 << 26 });
  pgbench(c.port, ['-i', '-s', '10', '-q']);
  const bouncer = await startPgbouncer(c.port, 'session', null, 1100);
  const proxy = await proxyFor(c.port, 'native');
  // variants for the select-only cases: the proxy with its Node relay only (what the Rust relay
  // buys), and with one relay thread (PgBouncer's shape) instead of up to one per core
  const nodeRelay = await proxyFor(c.port, 'node');
  const oneThread = await proxyFor(c.port, 'native', ['--relay-threads', '1']);
  const VARIANTS = ['pgha-proxy node relay', 'pgha-proxy 1 relay thread'];
  const targets: Array<[string, number]> = [['direct', c.port], ['pgbouncer', bouncer.port], ['pgha-proxy', proxy.port], ['pgha-proxy node relay', nodeRelay.port], ['pgha-proxy 1 relay thread', oneThread.port]];
  const tps: Record<string, number[]> = {};
  /** CPU µs per transaction of the proxy process itself (pgha-proxy, PgBouncer) */
  const cpuPerTx: Record<string, number[]> = {};
  const bouncerPid0 = bouncer.pid;
  const pidOf: Record<string, number | null> = { direct: null, pgbouncer: bouncerPid0, 'pgha-proxy': proxy.pid, 'pgha-proxy node relay': nodeRelay.pid, 'pgha-proxy 1 relay thread': oneThread.pid };
  const cases: Array<[string, string[]]> = [];
  for (const mode of ['simple', 'extended', 'prepared']) {
    cases.push([`select-only ${mode}`, ['-S', '-M', mode, '-c', '16', '-j', '2']]);
    cases.push([`tpcb-like ${mode}`, ['-M', mode, '-c', '16', '-j', '2']]);
  }
  cases.push(['select-only simple -C', ['-S', '-M', 'simple', '-C', '-c', '16', '-j', '2']]);
  for (let r = 0; r < rounds; r++) {
    for (const [label, args] of cases) {
      for (const [t, port] of r % 2 ? [...targets].reverse() : targets) {
        if (VARIANTS.includes(t) && !/^select-only (simple|prepared)$/.test(label)) continue;
        const pid = pidOf[t];
        const cpu0 = pid ? cpuMs(pid) : 0;
        const out = pgbench(port, [...args, '-T', String(secs), '-n']);
        const v = Number(/tps = ([\d.]+)/.exec(out)?.[1]);
        const txs = Number(/actually processed: (\d+)/.exec(out)?.[1]);
        if (pid && txs > 0) (cpuPerTx[`${label}|${t}`] ??= []).push(((cpuMs(pid) - cpu0) * 1000) / txs);
        const failed = /number of failed transactions: (\d+)/.exec(out)?.[1];
        if (failed && failed !== '0') console.error(`${t} ${label}: ${failed} failed transactions`);
        (tps[`${label}|${t}`] ??= []).push(v);
        console.error(`round ${r + 1} ${label.padEnd(24)} ${t.padEnd(10)} ${v.toFixed(0)} tps`);
      }
    }
  }
  // RSS with 1000 idle clients (a failure here is reported, the throughput figures stand)
  const proxyRssStart = rssKiB(proxy.pid);
  const bouncerPid = bouncerPid0;
  const bouncerRssStart = rssKiB(bouncerPid);
  let proxyRss1000 = NaN;
  let bouncerRss1000 = NaN;
  let idleError: string | null = null;
  try {
    const viaProxy = await idleClients(proxy.port, 1000, 'pgha-proxy');
    proxyRss1000 = rssKiB(proxy.pid);
    for (const s of viaProxy) s.destroy();
    // the proxy's 1000 server sessions must be gone before PgBouncer opens its own (max_connections)
    await waitFor(async () => Number(await c.sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")) < 20, 60_000, 'server sessions of the proxy phase gone');
    const viaBouncer = await idleClients(bouncer.port, 1000, 'PgBouncer');
    bouncerRss1000 = rssKiB(bouncerPid);
    for (const s of viaBouncer) s.destroy();
  } catch (e) {
    idleError = (e as Error).message;
    console.error(`idle clients: ${idleError}`);
  }

  const rows = cases.map(([label]) => {
    const d = median(tps[`${label}|direct`]);
    const b = median(tps[`${label}|pgbouncer`]);
    const p = median(tps[`${label}|pgha-proxy`]);
    const cpu = (t: string) => median(cpuPerTx[`${label}|${t}`] ?? [NaN]);
    const variant = (t: string) => (tps[`${label}|${t}`] ? { tps: median(tps[`${label}|${t}`]), cpuUsPerTx: cpu(t) } : null);
    return {
      nodeRelay: variant('pgha-proxy node relay'),
      oneRelayThread: variant('pgha-proxy 1 relay thread'),
      case: label, direct: d, pgbouncer: b, proxy: p, proxyVsDirect: p / d, pgbouncerVsDirect: b / d, proxyVsPgbouncer: p / b, cpuUsPerTx: { pgbouncer: cpu('pgbouncer'), proxy: cpu('pgha-proxy') } };
  });
  const result = {
    date: new Date().toISOString(),
    command: `npx tsx bench/proxy.ts ${secs} ${rounds}`,
    machine: `${execFileSync('nproc', { encoding: 'utf8' }).trim()} cores, PostgreSQL ${c.psql('SHOW server_version').trim()}, PgBouncer ${execFileSync(pgbouncerBin(), ['--version'], { encoding: 'utf8' }).split('\n')[0]}`,
    pgbench: 'scale 10, -c 16 -j 2, TCP 127.0.0.1',
    relayThreads: 'pgha-proxy: default (up to one per core, at most 4, sessions fill the first loop until it uses half a core); variant: --relay-threads 1',
    rows,
    rss: { proxyStartKiB: proxyRssStart, proxy1000IdleKiB: proxyRss1000, pgbouncerStartKiB: bouncerRssStart, pgbouncer1000IdleKiB: bouncerRss1000, error: idleError },
  };
  mkdirSync(join(here, 'results'), { recursive: true });
  writeFileSync(join(here, 'results', 'proxy.json'), JSON.stringify(result, null, 2) + '\n');
  console.log(`| case (median TPS of ${rounds}) | direct | PgBouncer session | pgha-proxy | proxy/direct | PgBouncer/direct | proxy/PgBouncer | CPU µs/tx PgBouncer | CPU µs/tx proxy |`);
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.case} | ${r.direct.toFixed(0)} | ${r.pgbouncer.toFixed(0)} | ${r.proxy.toFixed(0)} | ${r.proxyVsDirect.toFixed(2)} | ${r.pgbouncerVsDirect.toFixed(2)} | ${r.proxyVsPgbouncer.toFixed(2)} | ${r.cpuUsPerTx.pgbouncer.toFixed(1)} | ${r.cpuUsPerTx.proxy.toFixed(1)} |`);
  for (const r of rows) if (r.nodeRelay) console.log(`${r.case}: pgha-proxy with --relay node ${r.nodeRelay.tps.toFixed(0)} tps, ${r.nodeRelay.cpuUsPerTx.toFixed(1)} CPU µs/tx`);
  for (const r of rows) if (r.oneRelayThread) console.log(`${r.case}: pgha-proxy with --relay-threads 1 ${r.oneRelayThread.tps.toFixed(0)} tps (${(r.oneRelayThread.tps / r.pgbouncer).toFixed(2)}× PgBouncer), ${r.oneRelayThread.cpuUsPerTx.toFixed(1)} CPU µs/tx`);
  console.log(`\nRSS: pgha-proxy ${(proxyRssStart / 1024).toFixed(0)} MiB at start, ${(proxyRss1000 / 1024).toFixed(0)} MiB with 1000 idle clients; PgBouncer ${(bouncerRssStart / 1024).toFixed(1)} MiB, ${(bouncerRss1000 / 1024).toFixed(1)} MiB`);
  await proxy.stop();
  await nodeRelay.stop();
  await oneThread.stop();
  bouncer.proc.kill('SIGTERM');
  process.kill(bouncerPid, 'SIGTERM');
} finally {
  stopPgbouncers();
  await cleanupAll();
}
process.exit(0);
