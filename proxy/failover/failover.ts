/**
 * Automatic failover, the pgpool-II model: when the primary is down after N failed checks, promote
 * the standby that has received the most WAL, fence the old primary, and point the other standbys at
 * the new one. Promotion and fencing go through the node agents when configured (`pgha agent`),
 * else promotion is `pg_promote()` over SQL; standbys are re-pointed by rewriting only host and port
 * of their primary_conninfo (ALTER SYSTEM + pg_reload_conf(), no restart).
 */
import pg from 'pg';
import type { Logger } from 'pino';
import { AgentClient } from '../../src/ship/client.js';
import type { BackendTls } from '../backend/connect.js';
import { healthClient, type HealthCredentials } from '../health/probe.js';
import { lsnOrNull, type BackendState, type HealthMonitor } from '../health/monitor.js';
import { retarget } from './conninfo.js';

export interface FailoverOptions {
  monitor: HealthMonitor;
  /** backend name (host:port) → agent base URL */
  agents: Map<string, string>;
  token?: string;
  credentials: HealthCredentials;
  tls: BackendTls;
  log: Logger;
  /** ask the new primary's agent to carry logical slots over from the old primary's agent */
  migrateSlots?: boolean;
  promoteTimeoutMs?: number;
}

export interface FailoverReport {
  from: string;
  to: string | null;
  startedAt: string;
  promotedAt: string | null;
  ms: number;
  via: 'agent' | 'sql' | null;
  fenced: 'agent' | 'proxy-only';
  repointed: string[];
  error: string | null;
}

async function withClient<T>(b: BackendState, o: FailoverOptions, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = healthClient(b.address, o.credentials, o.tls, o.promoteTimeoutMs ?? 60_000);
  c.on('error', () => undefined);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** received LSN first (what promotion will replay), then replayed */
function bestStandby(standbys: BackendState[]): BackendState | null {
  const key = (s: BackendState) => lsnOrNull(s.receiveLsn) ?? lsnOrNull(s.replayLsn) ?? 0n;
  const sorted = [...standbys].sort((a, b) => {
    const d = key(b) - key(a);
    if (d !== 0n) return d > 0n ? 1 : -1;
    const r = (lsnOrNull(b.replayLsn) ?? 0n) - (lsnOrNull(a.replayLsn) ?? 0n);
    return r > 0n ? 1 : r < 0n ? -1 : 0;
  });
  return sorted[0] ?? null;
}

export class FailoverController {
  running = false;
  readonly history: FailoverReport[] = [];

  constructor(private readonly o: FailoverOptions) {}

  private agent(name: string): AgentClient | null {
    const url = this.o.agents.get(name);
    return url ? new AgentClient(url, this.o.token ?? '', this.o.promoteTimeoutMs ?? 60_000) : null;
  }

  async run(old: BackendState): Promise<FailoverReport> {
    const { monitor, log } = this.o;
    const started = Date.now();
    const report: FailoverReport = {
      from: old.name,
      to: null,
      startedAt: new Date(started).toISOString(),
      promotedAt: null,
      ms: 0,
      via: null,
      fenced: 'proxy-only',
      repointed: [],
      error: null,
    };
    this.running = true;
    monitor.hold(true);
    try {
      const others = monitor.backends.filter((b) => b.name !== old.name).map((b) => b.name);
      await monitor.checkNow(others);
      const now = monitor.state(old.name);
      if (now && now.role === 'primary') {
        report.error = `${old.name} answers again: failover abandoned`;
        log.warn(report.error);
        return report;
      }
      // candidates: healthy standbys of this cluster that follow the old primary's timeline (a standby
      // left on an older timeline may show a high LSN of WAL that is not on the current history)
      const standbys = monitor.backends.filter(
        (b) => b.role === 'standby' && b.failures === 0 && b.systemId === monitor.clusterSystemId && (b.timeline ?? 0) >= (old.timeline ?? 0),
      );
      const target = bestStandby(standbys);
      if (!target) {
        report.error = 'no healthy standby to promote';
        log.error({ from: old.name }, report.error);
        return report;
      }
      report.to = target.name;
      // fence in the proxy first: from here on nothing is routed to the old primary
      monitor.fence(old.name, `failed over to ${target.name}`);
      log.warn({ from: old.name, to: target.name, receiveLsn: target.receiveLsn, replayLsn: target.replayLsn }, 'failover: promoting');
      // the other standbys are re-pointed at the target while it promotes: they cascade from it until
      // the promotion and then follow its new timeline (recovery_target_timeline = latest)
      const repointing = this.repoint(target, standbys.filter((s) => s.name !== target.name));
      repointing.catch(() => undefined);
      const agent = this.agent(target.name);
      if (agent) {
        const oldAgent = this.o.agents.get(old.name);
        await agent.post('node/promote', this.o.migrateSlots && oldAgent ? { migrateSlotsFrom: oldAgent } : {});
        report.via = 'agent';
      } else {
        await withClient(target, this.o, (c) => c.query('SELECT pg_promote(true, $1)', [Math.ceil((this.o.promoteTimeoutMs ?? 60_000) / 1000)]));
        report.via = 'sql';
      }
      report.promotedAt = new Date().toISOString();
      await monitor.checkNow([target.name]);
      monitor.hold(false);
      report.ms = Date.now() - started;
      log.warn({ from: old.name, to: target.name, ms: report.ms }, 'failover: promoted');
      // after the write path is back: fence the old node through its agent, re-point standbys
      report.repointed = await repointing;
      report.fenced = await this.fenceOld(old.name, target.name);
      return report;
    } catch (e) {
      report.error = (e as Error).message;
      log.error({ err: report.error }, 'failover failed');
      return report;
    } finally {
      monitor.hold(false);
      report.ms ||= Date.now() - started;
      this.history.push(report);
      this.running = false;
    }
  }

  async fenceOld(name: string, to: string): Promise<'agent' | 'proxy-only'> {
    const agent = this.agent(name);
    if (!agent) {
      this.o.log.warn({ backend: name }, 'no agent for the old primary: fenced in the proxy only');
      return 'proxy-only';
    }
    try {
      await new AgentClient(agent.baseUrl, this.o.token ?? '', 15_000).post('node/fence', { reason: `pgha-proxy failed over to ${to}` });
      this.o.log.warn({ backend: name }, 'old primary fenced through its agent');
      return 'agent';
    } catch (e) {
      this.o.log.error({ backend: name, err: (e as Error).message }, 'could not fence the old primary through its agent: fenced in the proxy only');
      return 'proxy-only';
    }
  }

  /** point standbys at the new primary: only host and port of primary_conninfo change */
  async repoint(primary: BackendState, standbys: BackendState[]): Promise<string[]> {
    const done: string[] = [];
    await Promise.all(
      standbys.map(async (s) => {
        try {
          await withClient(s, this.o, async (c) => {
            const { rows } = await c.query<{ setting: string }>("SELECT setting FROM pg_settings WHERE name = 'primary_conninfo'");
            const next = retarget(rows[0]?.setting ?? '', primary.address.host, primary.address.port);
            await c.query(`ALTER SYSTEM SET primary_conninfo = ${c.escapeLiteral(next)}`);
            await c.query('SELECT pg_reload_conf()');
          });
          done.push(s.name);
          this.o.log.info({ backend: s.name, primary: primary.name }, 'standby re-pointed at the new primary');
        } catch (e) {
          this.o.log.error({ backend: s.name, err: (e as Error).message }, 'could not re-point standby');
        }
      }),
    );
    return done;
  }
}
