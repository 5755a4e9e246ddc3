/**
 * The admin port (fastify): GET / (the status page), /status, /metrics, /health for anyone who can
 * reach it; GET /sessions with the admin token when there is one; POST /switchover and /failover
 * only with the admin bearer token (refused when none is configured).
 */
import { timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { RoutineAtDebug } from '../../src/log/requests.js';
import type { Registry } from 'prom-client';
import type { BackendAddress } from '../backend/connect.js';
import { FailoverError, type FailoverReport } from '../failover/failover.js';
import { STATUS_PAGE_HEADERS, STATUS_PAGE_HTML } from './status-page.js';

export interface AdminSurface {
  status(): unknown;
  sessions(): unknown[];
  primaryName(): string | null;
  registry: Registry;
  adminToken: string | undefined;
  switchover(to: string | undefined): Promise<FailoverReport>;
  failover(to: string): Promise<FailoverReport>;
  /** requests are logged here: reads that answered (/status, /metrics, the page) at debug, actions and refusals at info */
  log?: FastifyBaseLogger;
}

function tokenMatches(header: string | undefined, token: string): boolean {
  if (!header?.startsWith('Bearer ')) return false;
  const a = Buffer.from(header.slice(7));
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

export async function startAdmin(addr: BackendAddress, s: AdminSurface): Promise<{ app: FastifyInstance; address: BackendAddress }> {
  const app = s.log ? Fastify({ loggerInstance: s.log, logController: new RoutineAtDebug() }) : Fastify({ logger: false });
  app.setNotFoundHandler((req, reply) => reply.code(404).send({ error: 'NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}` }));
  app.get('/status', async () => s.status());
  // the read-only status page: what /status says, drawn; no token, as /status
  app.get('/', async (_req, reply) => reply.headers(STATUS_PAGE_HEADERS).send(STATUS_PAGE_HTML));
  // who is connected (users, databases, client addresses): only with the admin token when there is one
  app.get('/sessions', async (req, reply) => {
    if (s.adminToken && !tokenMatches(req.headers.authorization, s.adminToken)) {
      return reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'UNAUTHORIZED', message: 'GET /sessions needs the admin bearer token' });
    }
    return s.sessions();
  });
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', s.registry.contentType);
    return s.registry.metrics();
  });
  app.get('/health', async () => ({ ok: true, primary: s.primaryName() }));

  const guard = (authorization: string | undefined): { code: number; body: object } | null => {
    if (!s.adminToken) return { code: 403, body: { error: 'FORBIDDEN', message: 'no admin token configured (--admin-token or --token): actions on the admin port are refused' } };
    if (!tokenMatches(authorization, s.adminToken)) return { code: 401, body: { error: 'UNAUTHORIZED', message: 'missing or wrong bearer token' } };
    return null;
  };
  const act = async (authorization: string | undefined, run: () => Promise<FailoverReport>) => {
    const refused = guard(authorization);
    if (refused) return refused;
    try {
      const r = await run();
      return { code: r.error ? 409 : 200, body: r };
    } catch (e) {
      if (e instanceof FailoverError) return { code: e.status, body: { error: 'REFUSED', message: e.message } };
      throw e;
    }
  };
  app.post('/switchover', async (req, reply) => {
    const to = (req.body as { to?: unknown } | undefined)?.to;
    const r = await act(req.headers.authorization, () => s.switchover(typeof to === 'string' && to ? to : undefined));
    return reply.code(r.code).send(r.body);
  });
  app.post('/failover', async (req, reply) => {
    const to = (req.body as { to?: unknown } | undefined)?.to;
    if (typeof to !== 'string' || !to) return reply.code(400).send({ error: 'BAD_REQUEST', message: 'body must be {"to": "HOST:PORT"}' });
    const r = await act(req.headers.authorization, () => s.failover(to));
    return reply.code(r.code).send(r.body);
  });
  await app.listen({ host: addr.host, port: addr.port });
  const a = app.server.address();
  return { app, address: { host: addr.host, port: typeof a === 'object' && a ? a.port : addr.port } };
}
