/**
 * A real client library's own integration tests through pgha-proxy: psycopg2's test suite (its
 * PyPI sdist; ~700 tests: cursors, COPY, async and green connections, cancel, NOTIFY, large objects,
 * two-phase commit, logical and physical replication connections) run directly against PostgreSQL
 * and then through the proxy (native relay). Every test must end the same way both times. Then
 * through a session-mode pool: every test the same but those that depend on what a pooler cannot
 * give, named one by one.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, PgCluster } from '../harness/cluster.js';
import { startProxy, type RunningProxy } from '../support/proxy.js';
import { preparePsycopg2Suite, PSYCOPG2_VERSION, runPsycopg2Suite, type SuiteRun } from '../support/psycopg2-suite.js';

let primary: PgCluster;
let proxy: RunningProxy;
/** --pool-mode session, in the native loop and in the TypeScript pool (--relay node: where TLS clients go) */
const pooled: Record<'native' | 'node', RunningProxy | null> = { native: null, node: null };
let directRun: Promise<SuiteRun> | null = null;
/** the suite run directly against PostgreSQL, once for both comparisons */
const direct = () => (directRun ??= runPsycopg2Suite('127.0.0.1', primary.port));

const count = (r: SuiteRun, o: string) => [...r.results.values()].filter((x) => x === o).length;
const summary = (r: SuiteRun) => `${r.results.size} tests: ${count(r, 'ok')} ok, ${count(r, 'skipped')} skipped, ${count(r, 'FAIL')} failed, ${count(r, 'ERROR')} errors`;
const notOk = (r: SuiteRun) => [...r.results].filter(([, o]) => o === 'FAIL' || o === 'ERROR').map(([t, o]) => `${t} ${o}`);
const differences = (a: SuiteRun, b: SuiteRun) =>
  [...new Set([...a.results.keys(), ...b.results.keys()])].filter((t) => a.results.get(t) !== b.results.get(t)).map((t) => `${t}: direct ${a.results.get(t) ?? 'missing'}, proxy ${b.results.get(t) ?? 'missing'}`);

beforeAll(async () => {
  preparePsycopg2Suite();
  primary = await PgCluster.init({ name: 'psycopg2-suite', conf: { max_connections: 100, max_replication_slots: 10 } });
  await primary.start();
  await primary.sql('CREATE DATABASE psycopg2_test');
  proxy = await startProxy([primary.port], ['--backend-sslmode', 'disable', '--log-level', 'warn']);
  // the pool authenticates clients itself: the suite's user with a password (the server trusts it)
  const dir = mkdtempSync(join(tmpdir(), 'pgha-psycopg2-pool-'));
  writeFileSync(join(dir, 'userlist.txt'), '"postgres" "psycopg2-suite"\n', { mode: 0o600 });
  for (const relay of ['native', 'node'] as const) pooled[relay] = await startProxy([primary.port], ['--backend-sslmode', 'disable', '--log-level', 'warn', '--pool-mode', 'session', '--pool-size', '20', '--auth-file', join(dir, 'userlist.txt'), '--relay', relay]);
}, 600_000);

afterAll(async () => {
  await proxy?.stop();
  await pooled.native?.stop();
  await pooled.node?.stop();
  await cleanupAll();
});

describe(`psycopg2 ${PSYCOPG2_VERSION}'s own test suite`, () => {
  it('gives the same result for every test through the proxy as directly', async () => {
    const d = await direct();
    const proxied = await runPsycopg2Suite('127.0.0.1', proxy.port);
    console.log(`psycopg2 suite direct: ${summary(d)} ${JSON.stringify(notOk(d))}\npsycopg2 suite through pgha-proxy: ${summary(proxied)} ${JSON.stringify(notOk(proxied))}`);
    expect(d.results.size).toBeGreaterThan(500);
    const differing = differences(d, proxied);
    if (differing.length > 0) console.log(proxied.output.slice(-6000));
    expect(differing).toEqual([]);
    // the proxy carried real sessions
    expect((await proxy.status()).clients.accepted.rw).toBeGreaterThan(100);
  });

  it.each([['native'], ['node']] as const)('through --pool-mode session (%s relay): the same result for every test but those that need what no pooler gives', async (relay) => {
    const d = await direct();
    const p = pooled[relay]!;
    const before = (await p.status()).clients.accepted.rw;
    const viaPool = await runPsycopg2Suite('127.0.0.1', p.port, { PGPASSWORD: 'psycopg2-suite' });
    console.log(`psycopg2 suite through pgha-proxy --pool-mode session --relay ${relay}: ${summary(viaPool)} ${JSON.stringify(notOk(viaPool))}`);
    // A client's BackendKeyData is the pool's own key (a cancel goes to whichever server connection
    // it is on, as with PgBouncer): its backend_pid is not the server's pid, which pg_backend_pid()
    // and a NotificationResponse carry. Replication connections are not pooled: those tests are skipped.
    const pid = ['tests.test_connection.TestConnectionInfo.test_backend_pid', 'tests.test_async.AsyncTests.test_notify'];
    const notifyPid = ['test_many_notifies', 'test_notifies_received_on_commit', 'test_notifies_received_on_execute', 'test_notifies_received_on_poll', 'test_notifies_received_on_reset', 'test_notifies_received_on_rollback', 'test_notifies_received_on_set_client_encoding', 'test_notifies_received_on_set_session', 'test_notify_attributes', 'test_notify_payload'];
    const expected = new Set([...pid, ...notifyPid.map((t) => `tests.test_notify.NotifiesTests.${t}`)]);
    const differing = differences(d, viaPool);
    const replication = differing.filter((x) => /^tests\.test_replication\.\w+\.\w+: direct ok, proxy skipped$/.test(x));
    const unexpected = differing.filter((x) => !replication.includes(x) && !expected.has(x.split(':')[0]));
    if (unexpected.length > 0) console.log(viaPool.output.slice(-6000));
    expect(unexpected).toEqual([]);
    // what a pooler cannot give did differ (else this list is stale), and each as a failed assertion on a pid
    expect(differing.filter((x) => expected.has(x.split(':')[0])).sort()).toEqual([...expected].map((t) => `${t}: direct ok, proxy FAIL`).sort());
    expect(replication.length).toBeGreaterThan(5);
    expect((await p.status()).clients.accepted.rw - before).toBeGreaterThan(100);
    // carried by the pool asked for
    expect((await p.status()).relay).toBe(relay);
  });
});
