/**
 * One PostgreSQL server with a pgha-proxy per relay in front, registered as vitest hooks (kept apart
 * from proxy.ts, which the benchmarks import outside vitest).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { cleanupAll, PgCluster } from '../harness/cluster.js';
import { startProxy, type RunningProxy } from './proxy.js';

export type Relay = 'native' | 'node';

/**
 * One PostgreSQL server with a pgha-proxy per relay (native and Node) in front, for the tests that
 * compare what the server sees through each relay with a direct connection. Registers its own
 * beforeAll/afterAll; `server` is there once beforeAll ran.
 */
export function serverBehindBothRelays(opts: { name: string; conf?: Record<string, string | number | boolean>; setup?: (server: PgCluster) => void }): {
  readonly server: PgCluster;
  proxies: Record<Relay, RunningProxy>;
  serverLog(): string;
} {
  let server: PgCluster | null = null;
  const proxies = {} as Record<Relay, RunningProxy>;
  beforeAll(async () => {
    server = await PgCluster.init({ name: opts.name, conf: opts.conf });
    await server.start();
    opts.setup?.(server);
    for (const relay of ['native', 'node'] as const) proxies[relay] = await startProxy([server.port], ['--backend-sslmode', 'disable', '--relay', relay]);
  }, 120_000);
  afterAll(async () => {
    for (const p of Object.values(proxies)) await p?.stop();
    await cleanupAll();
  });
  return {
    get server() {
      if (!server) throw new Error(`${opts.name}: the server is started in beforeAll`);
      return server;
    },
    proxies,
    serverLog: () => readFileSync(join(server!.root, 'server.log'), 'utf8'),
  };
}
