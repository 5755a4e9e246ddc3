/** jobs: the life-cycle jobs of this agent (rejoin, start as primary, automatic rejoin), newest first. */
import type { FastifyInstance } from 'fastify';
import { AgentApiError } from '../api-error.js';
import type { AgentContext } from '../server.js';

export function registerJobRoutes(app: FastifyInstance, ctx: AgentContext): void {
  app.get('/api/pg/v1/jobs', async () => ({ jobs: ctx.jobs.list() }));
  app.get<{ Params: { id: string } }>('/api/pg/v1/jobs/:id', async (req) => {
    const j = ctx.jobs.get(req.params.id);
    if (!j) throw new AgentApiError(`no job ${req.params.id} (the history keeps the newest 20)`, 404, 'NOT_FOUND');
    return j;
  });
}
