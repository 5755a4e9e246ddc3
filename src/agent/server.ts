/**
 * `pgha agent`: a small authenticated HTTP service beside one PostgreSQL data directory (fastify).
 * Every route but GET /health needs `Authorization: Bearer <token>`. Routes live in routes/*.ts.
 */
import { timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import { Registry, collectDefaultMetrics, Counter, Gauge } from 'prom-client';
import { PgInstance } from '../pg/instance.js';
import { ShipError } from '../ship/files.js';
import type { AgentConfig } from './config.js';
import { registerInstanceRoutes } from './routes/instance.js';
import { registerLsnRoutes } from './routes/lsn.js';
import { registerWalRoutes } from './routes/wal.js';
import { registerSlotRoutes } from './routes/slots.js';

export interface AgentContext {
  cfg: AgentConfig;
  pg: PgInstance;
  metrics: {
    registry: Registry;
    requests: Counter<'route' | 'status'>;
    bytesSent: Counter<string>;
    bytesReceived: Counter<string>;
    up: Gauge<string>;
  };
}

function tokenMatches(header: string | undefined, token: string): boolean {
  if (!header?.startsWith('Bearer ')) return false;
  const a = Buffer.from(header.slice(7));
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

export function buildAgent(cfg: AgentConfig, opts: { logger?: boolean | object } = {}): { app: FastifyInstance; ctx: AgentContext } {
  const app = Fastify({ logger: opts.logger ?? { level: process.env.PGHA_LOG_LEVEL ?? 'info' }, bodyLimit: 1 << 20 });
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
    },
  };
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
  app.setErrorHandler((err, req, reply) => {
    if (err instanceof ShipError) {
      req.log.warn({ err: err.message, code: err.code }, 'request refused');
      return reply.code(err.status).send({ error: err.code, message: err.message });
    }
    const status = (err as { statusCode?: number }).statusCode ?? 500;
    req.log.error({ err }, 'request failed');
    return reply.code(status).send({ error: status >= 500 ? 'INTERNAL' : 'BAD_REQUEST', message: (err as Error).message });
  });

  app.get('/health', async () => ({ ok: true, name: cfg.name }));
  app.get('/metrics', async (_req, reply) => {
    ctx.metrics.up.set(ctx.pg.isRunning() ? 1 : 0);
    reply.header('content-type', registry.contentType);
    return registry.metrics();
  });
  registerInstanceRoutes(app, ctx);
  registerLsnRoutes(app, ctx);
  registerWalRoutes(app, ctx);
  registerSlotRoutes(app, ctx);
  return { app, ctx };
}
