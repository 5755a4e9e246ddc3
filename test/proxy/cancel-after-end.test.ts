/**
 * Cancel requests after clean session ends, counted at scale: many short sessions of the kinds real
 * clients run (psql -c, node-postgres connect/query/end, the extended protocol, a query and
 * Terminate in one write, a client that closes while idle without Terminate, one that sends a
 * cancel request — waiting for its answer as libpq's PQcancel does — after its query finished and
 * then says goodbye), straight at PostgreSQL and through both relays. The server logs
 * `PID N in cancel request did not match any process` when a cancel request arrives for a backend
 * that is gone: directly that never happens for these sessions, so through the proxy it must not
 * either. PGHA_CANCEL_SESSIONS sets the number of sessions per run (default 200).
 *
 * The cause found: the proxy closed a client's cancel connection at once and forwarded the request
 * afterwards, while PostgreSQL closes it only once the backend has been signalled — so a client that
 * waits for that and then sends Terminate had its session gone before its cancel arrived. The
 * second part checks that order itself: while the postmaster is stopped (SIGSTOP) nobody takes a
 * cancel request, so its connection must stay open until the postmaster runs again.
 */
import { execFile } from 'node:child_process';
import { connect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { serialize } from 'pg-protocol';
import { describe, expect, it } from 'vitest';
import { sleep, waitFor } from '../harness/cluster.js';
import { trustLogin } from '../support/raw-client.js';
import { serverBehindBothRelays } from '../support/both-relays.js';

const run = promisify(execFile);
const SESSIONS = Number(process.env.PGHA_CANCEL_SESSIONS ?? 200);
const WORKERS = 10;

const rig = serverBehindBothRelays({ name: 'proxy-cancel-after-end', conf: { max_connections: 100 }, setup: (s) => s.psql('CREATE TABLE copied (a int)') });
const { proxies, serverLog } = rig;


/** ReadyForQuery messages received so far (after the startup's) */
const readies = (buf: Buffer) => {
  let n = 0;
  for (let i = buf.indexOf(Buffer.from([0x5a, 0, 0, 0, 5])); i >= 0; i = buf.indexOf(Buffer.from([0x5a, 0, 0, 0, 5]), i + 1)) n++;
  return n - 1;
};

type Kind = 'psql -c' | 'node-postgres' | 'extended protocol' | 'query + Terminate in one write' | 'idle close without Terminate' | 'COPY FROM STDIN' | 'cancel after the answer, then Terminate';
const KINDS: Kind[] = ['psql -c', 'node-postgres', 'extended protocol', 'query + Terminate in one write', 'idle close without Terminate', 'COPY FROM STDIN', 'cancel after the answer, then Terminate'];

async function session(port: number, kind: Kind, i: number): Promise<void> {
  switch (kind) {
    case 'psql -c': {
      const { stdout } = await run(join(rig.server.clientBinDir, 'psql'), ['-X', '-At', '-d', `host=127.0.0.1 port=${port} user=postgres dbname=postgres`, '-c', `select ${i}`]);
      expect(stdout.trim()).toBe(String(i));
      return;
    }
    case 'node-postgres':
    case 'extended protocol': {
      const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
      await c.connect();
      const r = kind === 'node-postgres' ? await c.query(`select ${i} as n`) : await c.query({ text: 'select $1::int as n', values: [i] });
      expect(r.rows[0].n).toBe(i);
      await c.end();
      return;
    }
    case 'query + Terminate in one write': {
      const w = await trustLogin(port);
      w.s.write(Buffer.concat([serialize.query(`select ${i}`), serialize.end()]));
      await w.closed;
      expect(readies(w.got())).toBe(1);
      return;
    }
    case 'idle close without Terminate': {
      const w = await trustLogin(port);
      w.s.write(serialize.query(`select ${i}`));
      await waitFor(async () => readies(w.got()) === 1, 10_000, 'the answer');
      w.s.end();
      await w.closed;
      return;
    }
    case 'COPY FROM STDIN': {
      const w = await trustLogin(port);
      w.s.write(serialize.query('COPY copied FROM STDIN'));
      await waitFor(async () => w.got().includes(Buffer.from([0x47, 0, 0, 0, 9])), 10_000, 'CopyInResponse');
      w.s.write(Buffer.concat([serialize.copyData(Buffer.from(`${i}\n`)), serialize.copyDone()]));
      await waitFor(async () => readies(w.got()) === 1, 10_000, 'the end of COPY');
      w.s.end(serialize.end());
      await w.closed;
      return;
    }
    case 'cancel after the answer, then Terminate': {
      const w = await trustLogin(port);
      w.s.write(serialize.query(`select ${i}`));
      await waitFor(async () => readies(w.got()) === 1, 10_000, 'the answer');
      // as PQcancel: send the request, wait until the other side closes that connection
      const c = connect({ host: '127.0.0.1', port });
      c.on('error', () => undefined);
      await new Promise((r) => c.once('connect', r));
      c.end(serialize.cancel(w.pid, w.key));
      c.resume();
      await new Promise((r) => c.once('close', r));
      w.s.end(serialize.end());
      await w.closed;
      return;
    }
  }
}

/** SESSIONS sessions, the kinds in turn, WORKERS at a time; the cancel-related lines the server logged meanwhile */
async function runAll(port: number): Promise<{ unmatched: number; wrongKey: number; ms: number }> {
  const from = serverLog().length;
  const started = Date.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: WORKERS }, async () => {
      for (let i = next++; i < SESSIONS; i = next++) await session(port, KINDS[i % KINDS.length], i);
    }),
  );
  // every backend of these sessions gone, and a cancel request sent late had time to arrive
  await waitFor(async () => rig.server.psql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name NOT LIKE 'pgha-proxy%'").trim() === '0', 20_000, 'sessions gone');
  await sleep(1000);
  const log = serverLog().slice(from);
  return {
    unmatched: log.match(/in cancel request did not match any process/g)?.length ?? 0,
    wrongKey: log.match(/wrong key in cancel request/g)?.length ?? 0,
    ms: Date.now() - started,
  };
}

describe(`${SESSIONS} short sessions that end cleanly: no cancel request reaches the server for a session that is gone`, () => {
  it('straight at PostgreSQL (the baseline)', async () => {
    const r = await runAll(rig.server.port);
    console.log(`direct: ${r.unmatched} unmatched cancel requests, ${r.wrongKey} with a wrong key (${r.ms} ms)`);
    expect(r).toMatchObject({ unmatched: 0, wrongKey: 0 });
  });

  for (const relay of ['native', 'node'] as const) {
    it(`through the ${relay} relay`, async () => {
      const r = await runAll(proxies[relay].port);
      console.log(`${relay} relay: ${r.unmatched} unmatched cancel requests, ${r.wrongKey} with a wrong key (${r.ms} ms)`);
      expect(r).toMatchObject({ unmatched: 0, wrongKey: 0 });
      expect((await proxies[relay].status()).clients.rw).toBe(0);
    });
  }
});

/**
 * cancel a running pg_sleep as PQcancel does (or closing our side of the cancel connection at once)
 * while the postmaster is stopped (SIGSTOP) for a second: nobody takes the request meanwhile, so the
 * cancel connection must stay open until the postmaster runs again — then it closes and the query
 * is cancelled.
 */
async function cancelWithPostmasterStopped(port: number, halfClose: boolean): Promise<{ closedWhileStopped: boolean; cancelled: boolean }> {
  const w = await trustLogin(port);
  w.s.write(serialize.query('SELECT pg_sleep(5)'));
  await waitFor(async () => rig.server.psql(`SELECT state FROM pg_stat_activity WHERE pid = ${w.pid}`).trim() === 'active', 10_000, 'pg_sleep running');
  const postmaster = rig.server.pid!;
  process.kill(postmaster, 'SIGSTOP');
  let closed = false;
  const c = connect({ host: '127.0.0.1', port });
  c.on('error', () => undefined);
  const gone = new Promise((r) => c.once('close', r)).then(() => (closed = true));
  try {
    await new Promise((r) => c.once('connect', r));
    if (halfClose) c.end(serialize.cancel(w.pid, w.key));
    else c.write(serialize.cancel(w.pid, w.key));
    c.resume();
    await sleep(1000);
  } finally {
    process.kill(postmaster, 'SIGCONT');
  }
  const closedWhileStopped = closed;
  await gone;
  let cancelled = true;
  await waitFor(async () => w.got().includes(Buffer.from('canceling statement due to user request')), 3000, 'the query cancelled').catch(() => (cancelled = false));
  w.s.end(serialize.end());
  await w.closed;
  return { closedWhileStopped, cancelled };
}

describe('a cancel request is answered (its connection closed) only once the server has taken it', () => {
  const expected = { closedWhileStopped: false, cancelled: true };
  it('straight at PostgreSQL (the baseline)', async () => {
    expect(await cancelWithPostmasterStopped(rig.server.port, false), 'PQcancel-like').toEqual(expected);
    expect(await cancelWithPostmasterStopped(rig.server.port, true), 'half-close').toEqual(expected);
  });
  for (const relay of ['native', 'node'] as const) {
    it(`through pgha-proxy (--relay ${relay})`, async () => {
      expect(await cancelWithPostmasterStopped(proxies[relay].port, false), 'PQcancel-like').toEqual(expected);
      expect(await cancelWithPostmasterStopped(proxies[relay].port, true), 'half-close').toEqual(expected);
    });
  }
});
