/**
 * instance/*, node/promote, node/fence, in_recovery: state and life cycle of this node's PostgreSQL.
 * A rejoin (instance/slave) and a start as primary (instance/master) run as jobs (one at a time,
 * 409 BUSY otherwise); with ?async=1 they answer 202 {"job": id} at once, else with the result.
 */
import { existsSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { fenceText, isFenced, writeFence } from '../../datadir/fence.js';
import { AgentClient } from '../../ship/client.js';
import { AgentApiError } from '../api-error.js';
import { rejoin, RejoinRefused } from '../../rejoin/execute.js';
import { migrateSlots } from '../../slots/migrate.js';
import { nodeState } from '../node-status.js';
import type { AgentContext } from '../server.js';

export { FENCE_MARKER } from '../../datadir/fence.js';

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

const wantsAsync = (req: FastifyRequest) => {
  const q = (req.query ?? {}) as { async?: string };
  return q.async === '1' || q.async === 'true';
};

export function registerInstanceRoutes(app: FastifyInstance, ctx: AgentContext): void {
  const { cfg, pg, jobs } = ctx;
  const current = async () => ({ [cfg.name]: await nodeState(pg) });
  /** right after pg_ctl start a standby may still refuse connections (57P03) for a moment: ask again */
  const currentOnceUp = async () => {
    const deadline = Date.now() + 15_000;
    for (;;) {
      try {
        return await current();
      } catch (e) {
        if (Date.now() > deadline || !pg.isRunning()) throw e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  };

  /** run fn as a job: 202 {job} at once with ?async=1, else the job's result (or its error) */
  const asJob = async <T>(req: FastifyRequest, reply: FastifyReply, kind: string, fn: (log: (m: string) => void) => Promise<T>) => {
    const { id, done } = jobs.start(kind, async (log) => {
      const both = (m: string) => {
        log(m);
        req.log.info({ job: kind }, m);
      };
      return fn(both);
    }, `${req.method} ${req.url}`);
    if (wantsAsync(req)) return reply.code(202).send({ job: id });
    return done;
  };

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
    if (isFenced(cfg.pgdata)) {
      throw new AgentApiError(`this node is fenced (${fenceText(cfg.pgdata)}): rejoin it (pgha rejoin / POST instance/slave) first`, 409, 'FENCED');
    }
  };

  app.post('/api/pg/v1/instance/current', async () => {
    jobs.assertIdle('POST instance/current');
    refuseIfFenced();
    ctx.lifecycle.stoppedOnRequest = false;
    if (!pg.isRunning()) await pg.start();
    return currentOnceUp();
  });

  app.post('/api/pg/v1/instance/master', async (req, reply) => {
    jobs.assertIdle('POST instance/master');
    refuseIfFenced();
    ctx.lifecycle.stoppedOnRequest = false;
    return asJob(req, reply, 'master', async (log) => {
      // checked again inside the job: a fence may have come in between
      refuseIfFenced();
      if (pg.isRunning()) {
        const [r] = await pg.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec');
        if (r.rec) {
          log('promoting the running standby');
          await pg.promote();
        }
      } else {
        for (const f of ['standby.signal', 'recovery.signal']) if (existsSync(join(pg.pgdata, f))) unlinkSync(join(pg.pgdata, f));
        log('starting as a primary');
        await pg.start();
      }
      return current();
    });
  });

  app.post('/api/pg/v1/instance/slave', async (req, reply) => {
    jobs.assertIdle('POST instance/slave');
    const primary = await findPrimary(ctx);
    if (!primary) throw new AgentApiError('no peer is a primary: cannot start as a standby', 409, 'NO_PRIMARY');
    const body = (req.body ?? {}) as { allowReclone?: boolean };
    ctx.lifecycle.stoppedOnRequest = false;
    return asJob(req, reply, 'rejoin', async (log) => {
      log(`rejoin as a standby of ${primary.name} (${primary.url})`);
      if (pg.isRunning()) log(`stopped PostgreSQL (${await pg.stop()})`);
      try {
        const result = await rejoin({
          pgdata: cfg.pgdata,
          applicationName: cfg.name,
          source: primary.url,
          token: cfg.token,
          binDir: cfg.pgBin,
          peers: Object.values(cfg.peers).filter((u) => u !== primary.url),
          allowReclone: body.allowReclone === true,
          log,
        });
        // rejoin() removed the fence marker once the node streams
        ctx.metrics.rejoins.inc({ result: result.streaming ? 'succeeded' : 'failed' });
        return { ...(await current()), rejoin: result };
      } catch (e) {
        ctx.metrics.rejoins.inc({ result: e instanceof RejoinRefused ? 'refused' : 'failed' });
        throw e;
      }
    });
  });

  app.delete('/api/pg/v1/instance/current', async () => {
    jobs.assertIdle('DELETE instance/current');
    // the automatic rejoin leaves a node stopped on request alone (until POST instance/*)
    ctx.lifecycle.stoppedOnRequest = true;
    const how = await pg.stop();
    return { ...(await current()), stopped: how };
  });

  // a failover path promotes through here; with {"migrateSlotsFrom": URL|DIR} the logical slots
  // are brought live right after (the old primary's files if readable, else the synced copies)
  app.post('/api/pg/v1/node/promote', async (req) => {
    jobs.assertIdle('POST node/promote');
    // a failsafe promise to a primary that runs without etcd (src/dcs/agent-session.ts)
    const blocked = ctx.dcs?.promotionBlocked();
    if (blocked) throw new AgentApiError(blocked, 409, 'FAILSAFE_PROMISE');
    if (!pg.isRunning()) throw new AgentApiError('PostgreSQL is not running', 409, 'NOT_RUNNING');
    await pg.promote();
    const from = (req.body as { migrateSlotsFrom?: string } | undefined)?.migrateSlotsFrom;
    if (!from) return current();
    const addr = app.server.address();
    const self = `${cfg.tlsCert ? 'https' : 'http'}://${cfg.host === '0.0.0.0' ? '127.0.0.1' : cfg.host}:${typeof addr === 'object' && addr ? addr.port : cfg.port}`;
    const slots = await migrateSlots({ from, to: self, token: cfg.token, log: (m) => req.log.info(m) });
    return { ...(await current()), slots };
  });

  // fencing (a failover path calls this on the old primary): stop PostgreSQL and leave it unable to
  // come back as a primary by itself: standby.signal makes a restart come up in recovery, and
  // FENCE_MARKER makes this agent refuse instance/master and instance/current until a rejoin.
  // Never refused (not even while a job runs) and bounded in time: the files first, then a fast
  // stop (5 s), an immediate one (5 s), then SIGKILL (a primary paused by SIGSTOP answers neither)
  app.post('/api/pg/v1/node/fence', async (req) => {
    const reason = String((req.body as { reason?: string } | undefined)?.reason ?? 'fenced');
    writeFence(cfg.pgdata, reason);
    const t0 = Date.now();
    const stopped = await pg.stopOrKill(5, 5);
    req.log.warn({ reason, stopped, ms: Date.now() - t0 }, 'node fenced');
    // fenced and stopped: what the node looks like now must not turn that into a failure
    const state = await current().catch((e: Error) => ({ [cfg.name]: `unknown (${e.message})` }));
    return { ...state, fenced: true, stopped, reason };
  });

  app.get('/api/pg/v1/in_recovery', async () => {
    if (!pg.isRunning()) throw new AgentApiError('PostgreSQL is not running', 409, 'NOT_RUNNING');
    const [r] = await pg.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec');
    return { in_recovery: r.rec ? 't' : 'f' };
  });
}
