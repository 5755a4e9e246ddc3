/** instance/*, node/promote, in_recovery: state and life cycle of this node's PostgreSQL. */
import { existsSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { AgentClient } from '../../ship/client.js';
import { ownLikeDirectory, ShipError } from '../../ship/files.js';
import { rejoin } from '../../rejoin/execute.js';
import { migrateSlots } from '../../slots/migrate.js';
import { nodeState } from '../node-state.js';
import type { AgentContext } from '../server.js';

/** written into the data directory by node/fence; removed by a successful rejoin */
export const FENCE_MARKER = 'pgha.fenced';

/** the peer (or this node) that is currently a primary */
export async function findPrimary(ctx: AgentContext): Promise<{ name: string; url: string } | null> {
  for (const [name, url] of Object.entries(ctx.cfg.peers)) {
    try {
      const s = await new AgentClient(url, ctx.cfg.token, 5000).get<Record<string, string>>('instance/current');
      if (s[name] === 'master' || s[name] === 'single') return { name, url };
    } catch {
      // unreachable peers are simply not candidates
    }
  }
  return null;
}

export function registerInstanceRoutes(app: FastifyInstance, ctx: AgentContext): void {
  const { cfg, pg } = ctx;
  const current = async () => ({ [cfg.name]: await nodeState(pg) });

  app.get('/api/pg/v1/instance/current', current);

  app.get('/api/pg/v1/instance/all', async () => {
    const all: Record<string, string> = await current();
    await Promise.all(
      Object.entries(cfg.peers).map(async ([name, url]) => {
        try {
          Object.assign(all, await new AgentClient(url, cfg.token, 5000).get<Record<string, string>>('instance/current'));
        } catch {
          all[name] = 'unreachable';
        }
      }),
    );
    return all;
  });

  const refuseIfFenced = () => {
    const marker = join(cfg.pgdata, FENCE_MARKER);
    if (existsSync(marker)) {
      throw new ShipError(`this node is fenced (${readFileSync(marker, 'utf8').trim()}): rejoin it (pgha rejoin / POST instance/slave) first`, 409, 'FENCED');
    }
  };

  app.post('/api/pg/v1/instance/current', async () => {
    refuseIfFenced();
    if (!pg.isRunning()) pg.start();
    return current();
  });

  app.post('/api/pg/v1/instance/master', async () => {
    refuseIfFenced();
    if (pg.isRunning()) {
      const [r] = await pg.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec');
      if (r.rec) await pg.promote();
    } else {
      for (const f of ['standby.signal', 'recovery.signal']) if (existsSync(join(pg.pgdata, f))) unlinkSync(join(pg.pgdata, f));
      pg.start();
    }
    return current();
  });

  app.post('/api/pg/v1/instance/slave', async (req) => {
    const primary = await findPrimary(ctx);
    if (!primary) throw new ShipError('no peer is a primary: cannot start as a standby', 409, 'NO_PRIMARY');
    const body = (req.body ?? {}) as { allowReclone?: boolean };
    if (pg.isRunning()) pg.stop();
    const result = await rejoin({
      pgdata: cfg.pgdata,
      source: primary.url,
      token: cfg.token,
      binDir: cfg.pgBin,
      peers: Object.values(cfg.peers).filter((u) => u !== primary.url),
      allowReclone: body.allowReclone === true,
      log: (msg) => req.log.info(msg),
    });
    // a rejoined node follows the new primary: it is no longer fenced
    rmSync(join(cfg.pgdata, FENCE_MARKER), { force: true });
    return { ...(await current()), rejoin: result };
  });

  app.delete('/api/pg/v1/instance/current', async () => {
    const how = pg.stop();
    return { ...(await current()), stopped: how };
  });

  // a failover path promotes through here; with {"migrateSlotsFrom": URL|DIR} the logical slots
  // are brought live right after (the old primary's files if readable, else the synced copies)
  app.post('/api/pg/v1/node/promote', async (req) => {
    if (!pg.isRunning()) throw new ShipError('PostgreSQL is not running', 409, 'NOT_RUNNING');
    await pg.promote();
    const from = (req.body as { migrateSlotsFrom?: string } | undefined)?.migrateSlotsFrom;
    if (!from) return current();
    const addr = app.server.address();
    const self = `http://${cfg.host === '0.0.0.0' ? '127.0.0.1' : cfg.host}:${typeof addr === 'object' && addr ? addr.port : cfg.port}`;
    const slots = await migrateSlots({ from, to: self, token: cfg.token, log: (m) => req.log.info(m) });
    return { ...(await current()), slots };
  });

  // fencing (a failover path calls this on the old primary): stop PostgreSQL and leave it unable to
  // come back as a primary by itself: standby.signal makes a restart come up in recovery, and
  // FENCE_MARKER makes this agent refuse instance/master and instance/current until a rejoin
  app.post('/api/pg/v1/node/fence', async (req) => {
    const reason = String((req.body as { reason?: string } | undefined)?.reason ?? 'fenced');
    writeFileSync(join(cfg.pgdata, 'standby.signal'), '');
    writeFileSync(join(cfg.pgdata, FENCE_MARKER), JSON.stringify({ at: new Date().toISOString(), reason }) + '\n');
    for (const f of ['standby.signal', FENCE_MARKER]) ownLikeDirectory(join(cfg.pgdata, f), cfg.pgdata);
    const stopped = pg.stop();
    req.log.warn({ reason, stopped }, 'node fenced');
    return { ...(await current()), fenced: true, stopped, reason };
  });

  app.get('/api/pg/v1/in_recovery', async () => {
    if (!pg.isRunning()) throw new ShipError('PostgreSQL is not running', 409, 'NOT_RUNNING');
    const [r] = await pg.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec');
    return { in_recovery: r.rec ? 't' : 'f' };
  });
}
