/**
 * pgha-proxy's session relay (no pooling) with its default loops (up to one per core, sessions
 * filling the first until it uses half a core) and with one loop,
 * against PgBouncer in session mode, taking turns (order reversed every other round), on one
 * PostgreSQL 15 (scale 10, fsync off): `pgbench -S -c 16 -j 2` per mode, TPS and CPU per
 * transaction of each proxy process (all its threads), medians over the rounds.
 *   npx tsx bench/relay-loops.ts [seconds per run=15] [rounds=6] [modes=simple,extended,prepared] [fresh] [syscalls] [segments]
 * Runs are long by default: without pooling every run's 16 clients get 16 new backends through the
 * relay, while PgBouncer's session pool keeps its server connections (and their backends' warm
 * caches and page tables) from one run to the next, which shows in short runs. `fresh` adds
 * PgBouncer with new backends for every run (its server connections terminated before it), to
 * measure that. `syscalls` counts, with `perf stat` on each proxy process through each run, its
 * system calls, epoll_wait and recvfrom+sendto calls and context switches per transaction.
 * `segments` counts, with nstat, the machine's TCP segments sent and pure ACKs per transaction
 * through each run (both hops: pgbench to the proxy, the proxy to PostgreSQL).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { cleanupAll } from '../test/harness/cluster.js';
import { startProxy } from '../test/support/proxy.js';
import { benchCluster, cpuMs, startPgbouncer, stopPgbouncers } from './support/pgbouncer.js';

const secs = Number(process.argv[2] ?? 15);
const rounds = Number(process.argv[3] ?? 6);
const modes = (process.argv[4] ?? 'simple,extended,prepared').split(',');
const flags = process.argv.slice(5);
const fresh = flags.includes('fresh');
const syscalls = flags.includes('syscalls');
const segments = flags.includes('segments');

/** the machine's TCP counters since the last call (nstat keeps its own history) */
function tcpCounters(): Map<string, number> {
  const out = execFileSync('nstat', ['-z', 'TcpOutSegs', 'TcpExtTCPPureAcks'], { encoding: 'utf8' });
  return new Map(out.split('\n').map((l) => l.trim().split(/\s+/)).filter((f) => f.length >= 2 && /^\d+$/.test(f[1])).map((f) => [f[0], Number(f[1])]));
}
const PERF_EVENTS = ['raw_syscalls:sys_enter', 'syscalls:sys_enter_epoll_wait', 'syscalls:sys_enter_recvfrom', 'syscalls:sys_enter_sendto', 'context-switches'];

/** perf stat on a process until stop(): its events' counts */
function perfStat(pid: number): { stop: () => Promise<Map<string, number>> } {
  const p = spawn('perf', ['stat', '-x', ',', '-e', PERF_EVENTS.join(','), '-p', String(pid)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr.on('data', (d: Buffer) => (err += d.toString()));
  return {
    stop: () =>
      new Promise((resolve) => {
        p.once('close', () => resolve(new Map(err.trim().split('\n').map((l) => l.split(',')).filter((f) => f.length > 2).map((f) => [f[2], Number(f[0])]))));
        p.kill('SIGINT');
      }),
  };
}
const PASSWORD = 'bench-relay-secret';

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

try {
  const { c, userlist, pgbenchBin: bench } = await benchCluster('bench-relay-loops', PASSWORD);
  const bouncer = await startPgbouncer(c.port, 'session', userlist);
  const two = await startProxy([c.port], ['--backend-sslmode', 'disable', '--log-level', 'warn']);
  const one = await startProxy([c.port], ['--backend-sslmode', 'disable', '--log-level', 'warn', '--relay-threads', '1']);
  const targets = [
    { name: 'PgBouncer session', port: bouncer.port, pid: bouncer.pid, fresh: false },
    ...(fresh ? [{ name: 'PgBouncer, fresh backends', port: bouncer.port, pid: bouncer.pid, fresh: true }] : []),
    { name: 'relay, default loops', port: two.port, pid: two.pid, fresh: false },
    { name: 'relay, 1 loop', port: one.port, pid: one.pid, fresh: false },
  ];
  const table: string[] = syscalls
    ? ['| mode | target | median TPS | median CPU µs/tx | syscalls/tx | epoll_wait/tx | recvfrom+sendto/tx | context switches/tx | runs (kTPS) |', '|---|---|---:|---:|---:|---:|---:|---:|---|']
    : ['| mode | target | median TPS | median CPU µs/tx | runs (kTPS) |', '|---|---|---:|---:|---|'];
  if (segments) {
    table[0] = table[0].replace('| runs (kTPS) |', '| TCP segments/tx | pure ACKs/tx | runs (kTPS) |');
    table[1] = table[1].replace(/\|---\|$/, '|---:|---:|---|');
  }
  for (const mode of modes) {
    const got = new Map<string, Array<{ tps: number; cpu: number; perf: number[]; tcp: number[] }>>();
    for (let r = 0; r < rounds; r++) {
      for (const t of r % 2 ? [...targets].reverse() : targets) {
        // PgBouncer's idle server connections ended: its next run logs in new backends, as the relay's runs do
        if (t.fresh) c.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()");
        const cpu0 = cpuMs(t.pid);
        const perf = syscalls ? perfStat(t.pid) : null;
        // (perf attaches before the first transaction)
        if (perf) await new Promise((r) => setTimeout(r, 300));
        if (segments) tcpCounters();
        const out = spawnSync(bench, ['-h', '127.0.0.1', '-p', String(t.port), '-U', 'postgres', '-S', '-M', mode, '-c', '16', '-j', '2', '-T', String(secs), '-n', 'postgres'], { encoding: 'utf8', env: { ...process.env, PGPASSWORD: PASSWORD } }).stdout;
        const txs = Number(/actually processed: (\d+)/.exec(out)?.[1] ?? 0);
        const tps = Number(/tps = ([\d.]+)/.exec(out)?.[1] ?? NaN);
        const cpu = txs > 0 ? ((cpuMs(t.pid) - cpu0) * 1000) / txs : NaN;
        const tcp = segments ? tcpCounters() : new Map<string, number>();
        const tcpPerTx = [(tcp.get('TcpOutSegs') ?? NaN) / txs, (tcp.get('TcpExtTCPPureAcks') ?? 0) / txs];
        const counts = perf ? await perf.stop() : new Map<string, number>();
        const per = (e: string) => (counts.get(e) ?? NaN) / txs;
        const perfPerTx = [per(PERF_EVENTS[0]), per(PERF_EVENTS[1]), per(PERF_EVENTS[2]) + per(PERF_EVENTS[3]), per(PERF_EVENTS[4])];
        console.error(`${mode.padEnd(9)} ${t.name.padEnd(22)} ${tps.toFixed(0)} tps, ${cpu.toFixed(1)} CPU µs/tx${perf ? `, per tx: ${perfPerTx.map((x) => x.toFixed(2)).join(' / ')}` : ''}${segments ? `, TCP segments/tx ${tcpPerTx[0].toFixed(2)}, pure ACKs/tx ${tcpPerTx[1].toFixed(3)}` : ''}`);
        got.set(t.name, [...(got.get(t.name) ?? []), { tps, cpu, perf: perfPerTx, tcp: tcpPerTx }]);
      }
    }
    for (const t of targets) {
      const runs = got.get(t.name)!;
      const perfCols = syscalls ? [0, 1, 2, 3].map((i) => ` ${median(runs.map((x) => x.perf[i])).toFixed(2)} |`).join('') : '';
      const tcpCols = segments ? ` ${median(runs.map((x) => x.tcp[0])).toFixed(2)} | ${median(runs.map((x) => x.tcp[1])).toFixed(3)} |` : '';
      table.push(`| ${mode} | ${t.name} | ${median(runs.map((x) => x.tps)).toFixed(0)} | ${median(runs.map((x) => x.cpu)).toFixed(1)} |${perfCols}${tcpCols} ${runs.map((x) => (x.tps / 1000).toFixed(1)).join(', ')} |`);
    }
  }
  console.log(`${execFileSync('nproc', { encoding: 'utf8' }).trim()} cores; pgbench -S -c 16 -j 2, ${secs} s per run, ${rounds} rounds\n`);
  console.log(table.join('\n'));
  await two.stop();
  await one.stop();
} finally {
  stopPgbouncers();
  await cleanupAll();
}
process.exit(0);
