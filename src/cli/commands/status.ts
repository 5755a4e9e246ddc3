/**
 * `pgha status` (also `pgha list`): the cluster as a pgha-proxy sees it — per node its role,
 * timeline, streaming, sync state, lag and fencing; the leader proxy (with etcd); the last
 * failovers with where their time went. `--watch` refreshes, `--json` prints the proxy's /status.
 * Exit codes: 0 a primary is routed, 1 no primary, 2 the proxy could not be asked.
 */
import type { Command } from 'commander';
import type { ProxyStatus } from '../../../proxy/server.js';
import type { FailoverReport } from '../../../proxy/failover/failover.js';
import { EXIT_NEGATIVE, EXIT_OK, printJson, table } from '../output.js';
import { askProxy, proxyUrl } from './cluster.js';

const fmtBytes = (n: number | null) => (n === null ? '-' : n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`);
const fmtMs = (ms: number) => (ms < 10_000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`);

/** how many of the newest failovers and switchovers are shown */
const LAST_FAILOVERS = 5;

/** one line per phase of a failover: "detect 612 ms · confirm 40 ms · …" */
export function phasesText(f: Pick<FailoverReport, 'phases'>): string {
  return (f.phases ?? []).map((p) => `${p.name} ${fmtMs(p.ms)}`).join(' · ');
}

export function renderStatus(s: ProxyStatus): string {
  const out: string[] = [];
  out.push(`primary: ${s.primary ?? 'NONE'}   timeline: ${s.timeline}   system: ${s.systemId ?? '-'}   auto-failover: ${s.autoFailover ? 'on' : 'off'}${s.failoverRunning ? '   FAILOVER RUNNING' : ''}`);
  const sync = s.synchronous?.record;
  out.push(
    `clients: ${s.clients.rw} read-write, ${s.clients.ro} read-only   synchronous: ${sync ? `${sync.method} ${sync.k} of ${sync.members.join(', ')}` : 'none'}${s.synchronous?.mode && s.synchronous.mode !== 'off' ? ` (managed: ${s.synchronous.mode})` : ''}`,
  );
  // several proxies on etcd: who decides
  if (s.dcs?.safeMode) out.push(`SAFE MODE: etcd does not answer this proxy (${s.dcs.reachable ? 'its lease is in doubt' : 'unreachable'}): it keeps routing to the last recorded primary and decides nothing`);
  if (s.leader && s.etcd) {
    const l = s.leader.leader;
    out.push(
      `leader: ${l ? `${l.id}${l.admin ? ` (${l.admin})` : ''}` : 'NONE'}   this proxy: ${s.leader.id} (${s.leader.isLeader ? 'leader' : 'follower'})   etcd: ${s.etcd.endpoints.join(',')} cluster ${s.etcd.cluster} ${s.etcd.healthy ? 'healthy' : `UNREACHABLE${s.etcd.lastError ? ` (${s.etcd.lastError})` : ''}`}   recorded primary: ${s.etcd.primary?.backend ?? 'none'}`,
    );
  }
  if (s.dcs) {
    const d = s.dcs;
    out.push('');
    out.push(
      table(
        [
          ['leader proxy', d.leader ?? 'NONE'],
          ['this proxy', `${d.id} (${d.isLeader ? 'leader' : 'follower'})`],
          ['safe mode', d.safeMode ? `YES (etcd ${d.reachable ? 'answers, the lease is in doubt' : 'unreachable'})` : 'no'],
          ['etcd', `cluster ${d.cluster}, revision ${d.revision}, ${d.reachable ? 'reachable' : 'UNREACHABLE'}${d.lastError && !d.reachable ? ` (${d.lastError})` : ''}`],
          ['members', d.members.map((m) => `${m.name}=${m.pg}`).join(', ') || '-'],
          ['member slots', d.slots ? `on ${d.slots.primary}: ${d.slots.slots.map((x) => x.slot).join(', ') || 'none'}` : '-'],
          ['synchronous', d.sync ? `on ${d.sync.primary}: '${d.sync.synchronousStandbyNames}' (${d.sync.members.join(', ') || 'none'})` : '-'],
        ],
        ['dcs', 'value'],
      ).trimEnd(),
    );
  }
  out.push('');
  out.push(
    table(
      s.backends.map((b) => [
        b.name,
        b.member ?? '',
        b.role,
        b.timeline ?? '-',
        b.lsn ?? '-',
        b.role === 'standby' ? (b.streaming ? `streaming${b.upstream && b.upstream !== s.primary ? ` from ${b.upstream}` : ''}` : 'NOT STREAMING') : '-',
        b.syncState ?? '-',
        b.role === 'standby' ? `${fmtBytes(b.lagBytes)} / ${b.lagSeconds === null ? '-' : `${b.lagSeconds.toFixed(1)} s`}` : '-',
        b.fenced || b.role === 'fenced' ? 'FENCED' : '-',
        b.slot ?? '-',
        b.sessions,
        b.latencyMs === null ? '-' : `${b.latencyMs} ms`,
        b.reason ?? b.lastError ?? '',
      ]),
      ['backend', 'member', 'role', 'timeline', 'lsn', 'replication', 'sync', 'lag', 'fence', 'slot', 'sessions', 'check', 'note'],
    ).trimEnd(),
  );
  const recent = s.failovers.slice(-LAST_FAILOVERS).reverse();
  if (recent.length > 0) {
    out.push('');
    out.push(`last failovers (${recent.length} of ${s.failovers.length}, newest first):`);
    for (const f of recent) {
      const result = f.error ? `FAILED: ${f.error}` : f.promotedAt ? 'promoted' : 'running';
      out.push(
        `  ${f.kind ?? 'failover'} (${f.trigger ?? 'auto'}) ${f.startedAt}: ${f.from} -> ${f.to ?? '-'} ${result} in ${fmtMs(f.ms)} via ${f.via ?? '-'}, old primary ${f.fenced}${f.pauseMs !== null && f.pauseMs !== undefined ? `, writes paused ${f.pauseMs} ms` : ''}`,
      );
      const phases = phasesText(f);
      if (phases) out.push(`    ${phases}`);
    }
  }
  return out.join('\n') + '\n';
}

export function registerStatusCommand(program: Command, setExit: (c: number) => void): void {
  program
    .command('status')
    .alias('list')
    .description("the cluster as a pgha-proxy sees it: each node's role, timeline, streaming, sync state, lag and fencing; the leader proxy (etcd); the last failovers with their phase timings")
    .requiredOption('--proxy <url>', 'admin address of the proxy (its --admin), e.g. http://127.0.0.1:8008')
    .option('--json', "print the proxy's /status JSON (with --watch: one JSON document per refresh)")
    .option('--watch [seconds]', 'print it again every N seconds (default 2) until interrupted')
    .addHelpText('after', '\nExit codes: 0 a primary is routed, 1 no primary, 2 the proxy could not be asked.\nThe same page, refreshed in a browser: the proxy\'s admin address itself (GET /).')
    .action(async (o) => {
      const url = proxyUrl(o.proxy);
      const once = async (): Promise<boolean> => {
        const { status, body } = await askProxy<ProxyStatus>(url, '/status');
        if (status !== 200) throw new Error(`${url}/status: HTTP ${status}`);
        // --json: the /status document; with etcd the deciding proxy and safe mode also at the top
        if (o.json) printJson(body.dcs ? { ...body, leaderProxy: body.dcs.leader, safeMode: body.dcs.safeMode } : body);
        else process.stdout.write(renderStatus(body));
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
}
