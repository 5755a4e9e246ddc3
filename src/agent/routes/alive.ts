/**
 * GET alive: is this node's PostgreSQL alive, as pg_isready means it — the postmaster runs and
 * answers a connection attempt, with success or with any error but a shutdown (a server full of
 * clients answers 53300 and is alive). A proxy asks before it fails a primary over, so an attacker
 * who fills the connection slots cannot make a healthy primary look dead.
 */
import pg from 'pg';
import type { FastifyInstance } from 'fastify';
import type { AgentContext } from '../server.js';

export interface AliveAnswer {
  running: boolean;
  answers: boolean;
  /** the SQLSTATE or network error the attempt ended with, null when it connected */
  detail: string | null;
}

export async function checkAlive(ctx: AgentContext, timeoutMs = 1500): Promise<AliveAnswer> {
  const running = ctx.pg.isRunning();
  if (!running) return { running, answers: false, detail: 'postmaster not running' };
  const c = new pg.Client({ host: '127.0.0.1', port: ctx.pg.port, user: ctx.pg.user, database: 'postgres', connectionTimeoutMillis: timeoutMs, application_name: 'pgha agent alive check' });
  c.on('error', () => undefined);
  try {
    await c.connect();
    return { running, answers: true, detail: null };
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    const severity = (e as { severity?: unknown }).severity;
    const answered = typeof code === 'string' && typeof severity === 'string' && !/^57P0[123]$/.test(code);
    return { running, answers: answered, detail: typeof code === 'string' ? `${code}: ${(e as Error).message}` : (e as Error).message };
  } finally {
    c.end().catch(() => undefined);
  }
}

export function registerAliveRoutes(app: FastifyInstance, ctx: AgentContext): void {
  app.get('/api/pg/v1/alive', async () => checkAlive(ctx));
}
