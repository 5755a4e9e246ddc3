/** Node agents for tests: in this process, on a free loopback port, stopped by stopAgents(). */
import type { FastifyInstance } from 'fastify';
import { buildAgent } from '../../src/agent/server.js';
import type { PgCluster } from '../harness/cluster.js';

const running: FastifyInstance[] = [];

export async function startAgent(name: string, c: PgCluster, token: string, peers: Record<string, string> = {}): Promise<string> {
  const { app } = buildAgent(
    { name, host: '127.0.0.1', port: 0, pgdata: c.dataDir, token, peers, pgBin: c.binDir, pgPort: c.port, pgHost: '127.0.0.1', replUser: 'postgres' },
    { logger: false },
  );
  await app.listen({ host: '127.0.0.1', port: 0 });
  running.push(app);
  const addr = app.server.address();
  return `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
}

export async function stopAgents(): Promise<void> {
  for (const a of running.splice(0)) await a.close();
}
