/**
 * SQL against another node's PostgreSQL at the address its agent reports (`GET system`): one short
 * connection per task, closed whatever happens, and a server dying mid-query never ends the process.
 */
import pg from 'pg';

/** what an agent's `GET system` says about reaching its server */
export interface NodeAddress {
  pgHost: string;
  pgPort: number;
  pgUser: string;
}

export async function withNodeSql<T>(node: NodeAddress, fn: (c: pg.Client) => Promise<T>, connectTimeoutMs = 5000): Promise<T> {
  const c = new pg.Client({ host: node.pgHost, port: node.pgPort, user: node.pgUser, database: 'postgres', connectionTimeoutMillis: connectTimeoutMs });
  // a server that dies mid-query makes the client emit 'error': never let that end the process
  c.on('error', () => undefined);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}
