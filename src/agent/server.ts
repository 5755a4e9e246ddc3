/**
 * `pgha agent`: a small authenticated HTTP service beside one PostgreSQL data directory (fastify).
 * Every route but GET /health needs `Authorization: Bearer <token>`. Routes live in routes/*.ts.
 * Life-cycle actions that take long run as jobs (jobs.ts); the automatic rejoin loop
 * (auto-rejoin.ts) runs beside the routes unless turned off.
 */
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { setAgentCa } from '../ship/client.js';
import { Registry, collectDefaultMetrics, Counter, Gauge } from 'prom-client';
import { PgInstance } from '../pg/instance.js';
import { removeStaleTempFiles } from '../ship/files.js';
import { walDir } from '../datadir/node-state.js';
import { FormatError } from '../formats/errors.js';
import { writeFence } from '../datadir/fence.js';
import { AgentSession } from '../dcs/agent-session.js';
import { AutoRejoinLoop } from './auto-rejoin.js';
import type { AgentConfig } from './config.js';
import { Jobs } from './jobs.js';
import { apiAnswer } from './api-error.js';
import { registerInstanceRoutes } from './routes/instance.js';
import { registerLsnRoutes } from './routes/lsn.js';
import { DEFAULT_UPLOAD_TIMEOUTS, registerWalRoutes, type UploadTimeouts } from './routes/wal.js';
import { registerSlotRoutes } from './routes/slots.js';
import { registerAliveRoutes } from './routes/alive.js';
import { registerJobRoutes } from './routes/jobs.js';
import { createLogger } from '../log/log.js';
import { RoutineAtDebug } from '../log/requests.js';
import { askFailsafe, registerFailsafeRoutes } from './routes/failsafe.js';

export interface AgentContext {
  cfg: AgentConfig;
  pg: PgInstance;
  metrics: {
    registry: Registry;
    requests: Counter<'route' | 'status'>;
    bytesSent: Counter<string>;
    bytesReceived: Counter<string>;
    up: Gauge<string>;
    rejoins: Counter<'result'>;
  };
  /** life-cycle jobs: one at a time */
  jobs: Jobs;
  lifecycle: {
    /** stopped through DELETE instance/current: the automatic rejoin leaves the node stopped */
    stoppedOnRequest: boolean;
  };
  /** the automatic rejoin loop, null when turned off */
  autoRejoin: AutoRejoinLoop | null;
  /** with --etcd: membership, the primary lease, self-fencing (src/dcs/agent-session.ts) */
  dcs: AgentSession | null;
}

/** after an early answer to an unfinished request body: drop what still comes for so long / so much */
const LINGER_MS = 2_000;
const LINGER_BYTES = 8 << 20;

function lingerThenClose(req: IncomingMessage, res: ServerResponse): void {
  const socket = req.socket;
  res.once('finish', () => {
    if (req.complete || socket.destroyed) return;
    const from = socket.bytesRead;
    const t0 = Date.now();
    req.resume();
    const timer = setInterval(() => {
      if (req.complete || socket.destroyed) clearInterval(timer);
      else if (Date.now() - t0 > LINGER_MS || socket.bytesRead - from > LINGER_BYTES) {
        clearInterval(timer);
        socket.destroy();
      }
    }, 25);
    timer.unref();
  });
}

function tokenMatches(header: string | undefined, token: string): boolean {
  if (!header?.startsWith('Bearer ')) return false;
  const a = Buffer.from(header.slice(7));
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

export interface BuildOptions {
  /** fastify's logger option (tests: false); without it and without loggerInstance, createLogger() (JSON, pretty on a terminal) */
  logger?: boolean | object;
  /** the pino logger to use (pgha agent: --log-format, --log-level) */
  loggerInstance?: FastifyBaseLogger;
  /** WAL uploads: the whole body within deadlineMs (120 s), no pause longer than idleMs (30 s) */
  uploadTimeouts?: Partial<UploadTimeouts>;
}

export function buildAgent(cfg: AgentConfig, opts: BuildOptions = {}): { app: FastifyInstance; ctx: AgentContext } {
  const uploadTimeouts: UploadTimeouts = { ...DEFAULT_UPLOAD_TIMEOUTS, ...opts.uploadTimeouts };
  // HTTPS with the node's certificate (the token never crosses the network in clear); the other
  // agents' certificates are checked against the cluster's CA
  if (cfg.agentCa !== undefined) setAgentCa(cfg.agentCa || null);
  const https = cfg.tlsCert && cfg.tlsKey ? { https: { cert: readFileSync(cfg.tlsCert), key: readFileSync(cfg.tlsKey) } } : {};
  const app = (Fastify as unknown as (o: object) => FastifyInstance)({
    ...https,
    ...(opts.logger !== undefined ? { logger: opts.logger } : { loggerInstance: opts.loggerInstance ?? createLogger({ base: { svc: 'pgha-agent' } }) }),
    // polls (GETs that answered) at debug, actions and refusals at info
    logController: new RoutineAtDebug(),
    bodyLimit: 1 << 20,
    // a request (headers and body) must have arrived within 120 s, its headers within 30 s; answers
    // may take longer (a rejoin run synchronously), so there is no socket inactivity timeout — an
    // upload's pauses are bounded by the WAL route itself
    requestTimeout: Math.max(uploadTimeouts.deadlineMs, DEFAULT_UPLOAD_TIMEOUTS.deadlineMs),
    http: { headersTimeout: 30_000, connectionsCheckingInterval: 5_000 },
  });
  // temp files of uploads and downloads an agent killed mid-transfer left behind
  const stale = removeStaleTempFiles(walDir(cfg.pgdata));
  if (stale.length) app.log.warn({ files: stale }, 'removed temp files of interrupted transfers from pg_wal');
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const ctx: AgentContext = {
    cfg,
    pg: new PgInstance({ pgdata: cfg.pgdata, binDir: cfg.pgBin, port: cfg.pgPort, user: cfg.replUser }),
    metrics: {
      registry,
      requests: new Counter({ name: 'pgha_agent_requests_total', help: 'HTTP requests by route and status', labelNames: ['route', 'status'], registers: [registry] }),
      bytesSent: new Counter({ name: 'pgha_agent_wal_bytes_sent_total', help: 'WAL/history bytes served', registers: [registry] }),
      bytesReceived: new Counter({ name: 'pgha_agent_wal_bytes_received_total', help: 'WAL/history bytes received and verified', registers: [registry] }),
      up: new Gauge({ name: 'pgha_agent_postgres_up', help: '1 when the PostgreSQL server is running', registers: [registry] }),
      rejoins: new Counter({ name: 'pgha_agent_rejoins_total', help: 'rejoins run by this agent (POST instance/slave and automatic), by result', labelNames: ['result'], registers: [registry] }),
    },
    jobs: new Jobs(),
    lifecycle: { stoppedOnRequest: false },
    autoRejoin: null,
    dcs: null,
  };
  if (cfg.etcd && cfg.cluster) ctx.dcs = agentSession(cfg, ctx, app.log.child({ component: 'etcd' }));
  if (cfg.autoRejoin !== false) {
    const loop = new AutoRejoinLoop(ctx, app.log.child({ component: 'auto-rejoin' }), { intervalMs: cfg.autoRejoinIntervalMs });
    ctx.autoRejoin = loop;
    app.addHook('onReady', async () => loop.start());
  }
  if (ctx.dcs) {
    const dcs = ctx.dcs;
    app.addHook('onReady', async () => dcs.start());
  }
  app.addHook('onClose', async () => {
    await ctx.dcs?.stop();
    await ctx.autoRejoin?.stop();
    // a job still running (a rejoin) is given a while to end; the process may exit after this
    await ctx.jobs.settle(60_000);
  });
  new Gauge({ name: 'pgha_agent_auto_rejoin', help: '1 when the automatic rejoin is on', registers: [registry], collect() { this.set(ctx.autoRejoin ? 1 : 0); } });
  new Gauge({ name: 'pgha_agent_job_running', help: '1 while a life-cycle job runs', registers: [registry], collect() { this.set(ctx.jobs.busy() ? 1 : 0); } });
  // WAL uploads are streamed to disk, never buffered: hand the raw request stream to the route
  app.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));

  app.addHook('onRequest', async (req, reply) => {
    if (req.routeOptions.url === '/health') return;
    if (!tokenMatches(req.headers.authorization, cfg.token)) {
      reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'UNAUTHORIZED', message: 'missing or wrong bearer token' });
    }
  });
  app.addHook('onResponse', async (req, reply) => {
    ctx.metrics.requests.inc({ route: req.routeOptions.url ?? 'unknown', status: String(reply.statusCode) });
  });
  // unknown routes answer in the documented shape, as every other error does
  app.setNotFoundHandler((req, reply) => reply.code(404).send({ error: 'NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}` }));
  app.setErrorHandler((err, req, reply) => {
    // a body not read to its end (refused before or while it arrived) is not stored: the answer
    // goes out, the rest is read and dropped for a moment so the sender sees the answer rather than
    // a reset; a body still arriving after that (2 s, 8 MiB) has its connection closed
    if (!req.raw.complete) lingerThenClose(req.raw, reply.raw);
    // a refusal: the agent's own, WAL shipping's, a slot file's
    const refused = apiAnswer(err);
    if (refused) {
      req.log.warn({ err: refused.message, code: refused.code }, 'request refused');
      return reply.code(refused.status).send({ error: refused.code, message: refused.message });
    }
    if (err instanceof FormatError) {
      // a file of this node that cannot be read as what it must be: name it, with the offset
      req.log.warn({ err: err.describe() }, 'bad file');
      return reply.code(422).send({ error: 'BAD_FILE', message: err.describe() });
    }
    const status = (err as { statusCode?: number }).statusCode ?? 500;
    req.log.error({ err }, 'request failed');
    return reply.code(status).send({ error: status >= 500 ? 'INTERNAL' : 'BAD_REQUEST', message: (err as Error).message });
  });

  // unauthenticated and cheap: it must answer while a job runs (nothing here waits on PostgreSQL)
  app.get('/health', async () => {
    const j = ctx.jobs.latest();
    return { ok: true, name: cfg.name, job: j && { id: j.id, kind: j.kind, state: j.state }, autoRejoin: ctx.autoRejoin !== null, ...(ctx.dcs ? { etcd: ctx.dcs.status() } : {}) };
  });
  app.get('/metrics', async (_req, reply) => {
    ctx.metrics.up.set(ctx.pg.isRunning() ? 1 : 0);
    reply.header('content-type', registry.contentType);
    return registry.metrics();
  });
  registerInstanceRoutes(app, ctx);
  registerLsnRoutes(app, ctx);
  registerWalRoutes(app, ctx, uploadTimeouts);
  registerSlotRoutes(app, ctx);
  registerAliveRoutes(app, ctx);
  registerJobRoutes(app, ctx);
  registerFailsafeRoutes(app, ctx);
  return { app, ctx };
}

/**
 * The agent's etcd session: its node registered, the primary lease held while its server is the
 * recorded primary, and the self-fence — the same as POST node/fence, with a quicker stop (1 s
 * fast, 2 s immediate, then SIGKILL): the point is to stop taking writes before the lease expires.
 */
function agentSession(cfg: AgentConfig, ctx: AgentContext, log: FastifyBaseLogger): AgentSession {
  const host = cfg.host === '0.0.0.0' || cfg.host === '::' ? cfg.pgHost : cfg.host;
  return new AgentSession({
    endpoints: cfg.etcd!,
    cluster: cfg.cluster!,
    ttlSeconds: cfg.etcdTtl ?? 5,
    member: { name: cfg.name, pg: `${cfg.pgHost}:${ctx.pg.port}`, agent: `${cfg.tlsCert ? "https" : "http"}://${host.includes(':') ? `[${host}]` : host}:${cfg.port}` },
    runningAsPrimary: async () => {
      if (!ctx.pg.isRunning()) return false;
      try {
        const rows = await Promise.race([
          ctx.pg.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec'),
          new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no answer within 1.5 s')), 1500).unref()),
        ]);
        return !rows[0].rec;
      } catch {
        return ctx.pg.isRunning() ? null : false;
      }
    },
    fence: async (reason) => {
      writeFence(cfg.pgdata, `self-fenced: ${reason}`);
      const stopped = await ctx.pg.stopOrKill(1, 2);
      log.warn({ reason, stopped }, 'node fenced by its agent');
      return stopped;
    },
    log: (level, msg, fields) => log[level](fields ?? {}, msg),
    failsafe: cfg.dcsFailsafe
      ? { peers: () => Object.entries(cfg.peers).map(([name, url]) => ({ name, url })), ask: (url, req, timeoutMs) => askFailsafe(url, cfg.token, req, timeoutMs) }
      : undefined,
  });
}
