/**
 * Carries out the cluster plan (plan.ts) every few health periods: member slots on every node,
 * standbys pointed at their slot, synchronous_standby_names on the primary when pgha manages it.
 * Never while a failover or switchover runs; one action failing does not stop the others.
 */
import type { Logger } from 'pino';
import { lsnOrNull, type HealthMonitor } from '../health/monitor.js';
import { ensurePhysicalSlot, setAndReload, withServer, type AdminSqlOptions } from '../backend/admin-sql.js';
import { formatLsn } from '../../src/formats/lsn.js';
import { parseConninfo, retarget } from '../backend/conninfo.js';
import type { MemberDirectory } from './members.js';
import { planCluster, type ClusterAction, type MemberView, type PlanOptions } from './plan.js';

export interface ManagerOptions extends PlanOptions {
  monitor: HealthMonitor;
  members: MemberDirectory;
  sql: AdminSqlOptions;
  log: Logger;
  intervalMs: number;
  /** true while a failover or switchover runs */
  busy: () => boolean;
  /** after each round this manager ran (not busy): the nodes as it last saw them (the leader records them on etcd) */
  onRound?: (view: MemberView[]) => void;
}

export interface ActionResult {
  action: string;
  on: string;
  detail: string;
  error: string | null;
  at: string;
}

export class ClusterManager {
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private stopped = false;
  /** the most recent actions (newest last), for /status */
  readonly recent: ActionResult[] = [];

  constructor(private readonly o: ManagerOptions) {}

  start(): void {
    const tick = async () => {
      if (this.stopped) return;
      await this.round().catch((e) => this.o.log.error({ err: (e as Error).message }, 'cluster round failed'));
      if (!this.stopped) this.timer = setTimeout(tick, this.o.intervalMs);
    };
    this.timer = setTimeout(tick, Math.min(this.o.intervalMs, 500));
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  /** the nodes as the plan sees them */
  view(): MemberView[] {
    const { monitor, members } = this.o;
    return monitor.backends.map((b) => {
      const p = monitor.probeOf(b.name);
      return {
        name: b.name,
        slot: members.slotOf(b.name),
        role: b.role,
        healthy: b.failures === 0 && p !== null,
        upstream: b.upstream,
        streaming: b.streaming === true,
        primarySlotName: p?.primarySlotName ?? null,
        conninfoTarget: conninfoTarget(p?.primaryConninfo ?? null),
        applicationName: b.applicationName,
        replayLsn: lsnOrNull(b.replayLsn),
        slots: p?.slots ?? [],
        synchronousStandbyNames: p?.synchronousStandbyNames ?? '',
      };
    });
  }

  /** one round: learn agent names, plan, act */
  async round(): Promise<ClusterAction[]> {
    if (this.running || this.o.busy()) return [];
    this.running = true;
    try {
      await this.o.members.learn();
      if (this.o.busy()) return [];
      const actions = planCluster(this.view(), this.o);
      for (const a of actions) {
        if (this.o.busy()) break;
        await this.apply(a);
      }
      if (actions.length) await this.o.monitor.checkNow([...new Set(actions.map((a) => a.on))]);
      if (!this.o.busy()) this.o.onRound?.(this.view());
      return actions;
    } finally {
      this.running = false;
    }
  }

  private async apply(a: ClusterAction): Promise<void> {
    const b = this.o.monitor.state(a.on);
    if (!b) return;
    const detail = a.kind === 'set-synchronous-standby-names' ? a.value : a.kind === 'advance-slot' ? `${a.slot} to ${formatLsn(a.to)}` : a.kind === 'repoint' ? a.to : a.slot;
    const result: ActionResult = { action: a.kind, on: a.on, detail, error: null, at: new Date().toISOString() };
    try {
      await withServer(b.address, this.o.sql, async (c) => {
        switch (a.kind) {
          case 'create-slot':
            await ensurePhysicalSlot(c, a.slot);
            break;
          case 'drop-slot':
            await c.query('SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [a.slot]);
            break;
          case 'advance-slot':
            try {
              await c.query('SELECT pg_replication_slot_advance($1, $2::pg_lsn)', [a.slot, formatLsn(a.to)]);
            } catch (e) {
              // a copy that never reserved WAL cannot be advanced: make it again at this position
              if ((e as { code?: string }).code !== '55000') throw e;
              await c.query('SELECT pg_drop_replication_slot($1)', [a.slot]);
              await ensurePhysicalSlot(c, a.slot);
            }
            break;
          case 'repoint': {
            const to = this.o.monitor.state(a.to);
            if (!to) break;
            const { rows } = await c.query<{ setting: string }>("SELECT setting FROM pg_settings WHERE name = 'primary_conninfo'");
            await setAndReload(c, 'primary_conninfo', retarget(rows[0]?.setting ?? '', to.address.host, to.address.port));
            break;
          }
          case 'set-primary-slot':
            await setAndReload(c, 'primary_slot_name', a.slot);
            break;
          case 'set-synchronous-standby-names':
            await setAndReload(c, 'synchronous_standby_names', a.value);
            break;
        }
      });
      if (a.kind !== 'advance-slot') this.o.log.info({ action: a.kind, on: a.on, detail, why: a.why }, 'cluster: applied');
    } catch (e) {
      result.error = (e as Error).message;
      this.o.log.warn({ action: a.kind, on: a.on, detail, err: result.error }, 'cluster: action failed');
    }
    if (a.kind !== 'advance-slot' || result.error) {
      this.recent.push(result);
      if (this.recent.length > 50) this.recent.shift();
    }
  }
}

/** host:port a primary_conninfo points at (keyword form or URI), null when it names none */
export function conninfoTarget(conninfo: string | null): string | null {
  if (!conninfo) return null;
  try {
    if (/^postgres(ql)?:\/\//.test(conninfo)) {
      const u = new URL(conninfo);
      return `${u.hostname.replace(/^\[|\]$/g, '')}:${u.port || '5432'}`;
    }
    const pairs = new Map(parseConninfo(conninfo));
    const host = pairs.get('host') ?? pairs.get('hostaddr');
    return host ? `${host}:${pairs.get('port') || '5432'}` : null;
  } catch {
    return null;
  }
}
