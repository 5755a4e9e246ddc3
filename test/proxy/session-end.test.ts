/**
 * The end of a session, through both relays: a client that sends its last query and Terminate in
 * one write and reads until EOF gets the answer and the EOF (the server's last bytes and its close
 * often arrive together — the native relay must read on to the EOF); one that also closes its own
 * side right away still gets the answer, as from PostgreSQL itself; and a client that said goodbye
 * is not one that vanished mid-query: no cancel request is sent for it.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { serialize } from 'pg-protocol';
import { describe, expect, it } from 'vitest';
import { sleep, waitFor } from '../harness/cluster.js';
import { serverBehindBothRelays } from '../support/both-relays.js';
import type { RunningProxy } from '../support/proxy.js';
import { rawSession } from '../support/raw-client.js';

const run = promisify(execFile);

const rig = serverBehindBothRelays({ name: 'proxy-session-end', conf: { max_connections: 300 } });
const { proxies, serverLog } = rig;
const forwardedCancels = async (p: RunningProxy) => Number(/pgha_proxy_cancel_requests\{result="forwarded"\} (\d+)/.exec(await p.metrics())?.[1] ?? NaN);

/** log in, send a query and Terminate in one write (and close our side when `halfClose`), read until EOF or 3 s */
async function lastQuery(port: number, tag: number, halfClose: boolean): Promise<{ eof: boolean; answered: boolean }> {
  const s = await rawSession(port);
  const chunks: Buffer[] = [];
  s.on('data', (b: Buffer) => chunks.push(b));
  const eof = new Promise<boolean>((resolve) => {
    s.once('end', () => resolve(true));
    s.once('close', () => resolve(true));
    setTimeout(() => resolve(false), 3000);
  });
  const bytes = Buffer.concat([serialize.query(`SELECT 'answer ${tag}'`), serialize.end()]);
  if (halfClose) s.end(bytes);
  else s.write(bytes);
  const got = await eof;
  s.destroy();
  return { eof: got, answered: Buffer.concat(chunks).includes(Buffer.from(`answer ${tag}`)) };
}

for (const relay of ['native', 'node'] as const) {
  describe(`session ends through the ${relay} relay`, () => {
    it('200 sessions: query + Terminate in one write, read until EOF: every one sees the answer and EOF within 3 s', async () => {
      const p = proxies[relay];
      for (const halfClose of [false, true]) {
        const started = Date.now();
        const results = await Promise.all(Array.from({ length: 200 }, (_, i) => lastQuery(p.port, i, halfClose)));
        const noEof = results.filter((r) => !r.eof).length;
        const noAnswer = results.filter((r) => !r.answered).length;
        console.log(`${relay} relay, ${halfClose ? 'client half-closes after Terminate' : 'client keeps its side open'}: ${noEof} of 200 without EOF, ${noAnswer} without the answer (${Date.now() - started} ms)`);
        expect({ noEof, noAnswer }, halfClose ? 'half-close' : 'open').toEqual({ noEof: 0, noAnswer: 0 });
      }
      const s = await p.status();
      expect(s.clients.rw).toBe(0);
    });

    it('30 × psql -c "select 1", and clients that close right after Terminate: no cancel request is sent', async () => {
      const p = proxies[relay];
      const before = await forwardedCancels(p);
      const logBefore = serverLog().length;
      const psql = join(rig.server.clientBinDir, 'psql');
      for (let i = 0; i < 30; i++) {
        const { stdout } = await run(psql, ['-X', '-At', '-d', `host=127.0.0.1 port=${p.port} user=postgres dbname=postgres`, '-c', 'select 1']);
        expect(stdout.trim()).toBe('1');
      }
      // a query still running when the client says goodbye and closes: the server finishes it and
      // ends the session itself (PostgreSQL does not cancel it either)
      await Promise.all(
        Array.from({ length: 10 }, async () => {
          const s = await rawSession(p.port);
          s.on('error', () => undefined);
          s.end(Buffer.concat([serialize.query('SELECT pg_sleep(0.2)'), serialize.end()]));
          await sleep(20);
          s.destroy();
        }),
      );
      // the server finished those queries and ended the sessions: a cancel forwarded on a goodbye
      // would have been sent while they ran
      await waitFor(async () => (await rig.server.sql("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(0.2)'")) === '0', 10_000, 'the sessions that said goodbye ended by the server');
      expect(await forwardedCancels(p)).toBe(before);
      expect(serverLog().slice(logBefore)).not.toMatch(/in cancel request did not match any process/);
    });
  });
}
