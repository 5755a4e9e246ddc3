/**
 * POST dcs/failsafe: a primary whose etcd keep-alives go unanswered, run with --dcs-failsafe, asks
 * every member whether it sees another primary (src/dcs/agent-session.ts decides the answer and
 * keeps the promise not to be promoted). `askFailsafe` is the asking side.
 */
import type { FastifyInstance } from 'fastify';
import type { FailsafeAnswer, FailsafeRequest } from '../../dcs/agent-session.js';
import { AgentClient } from '../../ship/client.js';
import { AgentApiError } from '../api-error.js';
import type { AgentContext } from '../server.js';

export function registerFailsafeRoutes(app: FastifyInstance, ctx: AgentContext): void {
  app.post('/api/pg/v1/dcs/failsafe', async (req) => {
    const body = (req.body ?? {}) as Partial<FailsafeRequest>;
    if (typeof body.member !== 'string' || !body.member || typeof body.pg !== 'string' || !body.pg) {
      throw new AgentApiError('POST dcs/failsafe: expected a JSON body {"member": NAME, "pg": "HOST:PORT"}', 400, 'BAD_REQUEST');
    }
    if (!ctx.dcs) throw new AgentApiError('this agent runs without --etcd: it has no view of the cluster on etcd', 409, 'NO_DCS');
    return ctx.dcs.answerFailsafe({ member: body.member, pg: body.pg });
  });
}

/** ask one member's agent, within timeoutMs */
export async function askFailsafe(url: string, token: string, req: FailsafeRequest, timeoutMs: number): Promise<FailsafeAnswer> {
  return new AgentClient(url, token, timeoutMs).post<FailsafeAnswer>('dcs/failsafe', req);
}
