/**
 * A real client library's own integration tests through pgha-proxy: psycopg2's test suite (its
 * PyPI sdist; ~700 tests: cursors, COPY, async and green connections, cancel, NOTIFY, large objects,
 * two-phase commit, logical and physical replication connections) run directly against PostgreSQL
 * and then through the proxy (native relay). Every test must end the same way both times.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, PgCluster } from '../harness/cluster.js';
import { startProxy, type RunningProxy } from '../support/proxy.js';
import { preparePsycopg2Suite, PSYCOPG2_VERSION, runPsycopg2Suite } from '../support/psycopg2-suite.js';

let primary: PgCluster;
let proxy: RunningProxy;

beforeAll(async () => {
  preparePsycopg2Suite();
  primary = await PgCluster.init({ name: 'psycopg2-suite', conf: { max_connections: 100, max_replication_slots: 10 } });
  await primary.start();
  await primary.sql('CREATE DATABASE psycopg2_test');
  proxy = await startProxy([primary.port], ['--backend-sslmode', 'disable', '--log-level', 'warn']);
}, 600_000);

afterAll(async () => {
  await proxy?.stop();
  await cleanupAll();
});

describe(`psycopg2 ${PSYCOPG2_VERSION}'s own test suite`, () => {
  it('gives the same result for every test through the proxy as directly', async () => {
    const direct = await runPsycopg2Suite('127.0.0.1', primary.port);
    const proxied = await runPsycopg2Suite('127.0.0.1', proxy.port);
    const count = (r: typeof direct, o: string) => [...r.results.values()].filter((x) => x === o).length;
    const summary = (r: typeof direct) => `${r.results.size} tests: ${count(r, 'ok')} ok, ${count(r, 'skipped')} skipped, ${count(r, 'FAIL')} failed, ${count(r, 'ERROR')} errors`;
    const notOk = (r: typeof direct) => [...r.results].filter(([, o]) => o === 'FAIL' || o === 'ERROR').map(([t, o]) => `${t} ${o}`);
    console.log(`psycopg2 suite direct: ${summary(direct)} ${JSON.stringify(notOk(direct))}\npsycopg2 suite through pgha-proxy: ${summary(proxied)} ${JSON.stringify(notOk(proxied))}`);
    expect(direct.results.size).toBeGreaterThan(500);
    const differing = [...new Set([...direct.results.keys(), ...proxied.results.keys()])]
      .filter((t) => direct.results.get(t) !== proxied.results.get(t))
      .map((t) => `${t}: direct ${direct.results.get(t) ?? 'missing'}, proxy ${proxied.results.get(t) ?? 'missing'}`);
    if (differing.length > 0) console.log(proxied.output.slice(-6000));
    expect(differing).toEqual([]);
    // the proxy carried real sessions
    expect((await proxy.status()).clients.accepted.rw).toBeGreaterThan(100);
  });
});
