/**
 * A client in COPY FROM STDIN that disappears, through both relays, compared with the same client
 * straight at PostgreSQL: what the server logs for that backend must be the same. A client that
 * vanishes without Terminate must look to the server as it does directly (its socket closes: the
 * server logs `unexpected EOF`), not as a Terminate inside COPY (`unexpected message type 0x58`),
 * and the server must not receive a cancel request the client never sent. A client that does send
 * Terminate inside COPY, or a cancel request first, gets what it gets directly.
 */
import { connect } from 'node:net';
import { join } from 'node:path';
import { serialize } from 'pg-protocol';
import { describe, expect, it } from 'vitest';
import { sleep, waitFor } from '../harness/cluster.js';
import { trustLogin, type TrustSession } from '../support/raw-client.js';
import { serverBehindBothRelays } from '../support/both-relays.js';

const rig = serverBehindBothRelays({ name: 'proxy-copy-cancel', conf: { log_line_prefix: '%m [%p] ' }, setup: (s) => s.psql('CREATE TABLE copy_target (a int, b text)') });
const { proxies, serverLog } = rig;



/** the types of the whole messages in a server stream after the startup phase */
function messageTypes(buf: Buffer): string[] {
  const out: string[] = [];
  for (let i = 0; i + 5 <= buf.length; i += 1 + buf.readInt32BE(i + 1)) out.push(String.fromCharCode(buf[i]));
  return out;
}

/** a CancelRequest as libpq's PQcancel sends it: then wait until the server (or proxy) closes that connection */
async function cancel(port: number, pid: number, key: number): Promise<void> {
  const c = connect({ host: '127.0.0.1', port });
  c.on('error', () => undefined);
  await new Promise((r) => c.once('connect', r));
  c.write(serialize.cancel(pid, key));
  c.resume();
  await new Promise((r) => c.once('close', r));
}

type Ending = 'close' | 'reset' | 'terminate' | 'cancel, then close' | 'cancel, then terminate';

/** start COPY FROM STDIN, send a row, end as told; the server's log lines about that backend */
async function copyThenVanish(port: number, ending: Ending): Promise<string[]> {
  const w = await trustLogin(port);
  const logFrom = serverLog().length;
  w.s.write(serialize.query('COPY copy_target FROM STDIN'));
  await waitFor(async () => messageTypes(w.got()).includes('G'), 10_000, 'CopyInResponse');
  w.s.write(serialize.copyData(Buffer.from('1\tone\n')));
  await sleep(50);
  if (ending.startsWith('cancel')) await cancel(port, w.pid, w.key);
  if (ending.endsWith('terminate')) w.s.end(serialize.end());
  else if (ending === 'reset') w.s.resetAndDestroy();
  else w.s.end();
  // the backend is gone, and a cancel request sent on its behalf had time to arrive
  await waitFor(async () => rig.server.psql(`SELECT count(*) FROM pg_stat_activity WHERE pid = ${w.pid}`).trim() === '0', 10_000, `backend ${w.pid} gone`);
  await sleep(400);
  w.s.destroy();
  const lines = serverLog().slice(logFrom).split('\n');
  const out: string[] = [];
  let mine = false;
  for (const l of lines) {
    const m = /^\S+ \S+ \S+ \[(\d+)\] (.*)$/.exec(l);
    if (m) {
      mine = Number(m[1]) === w.pid || m[2].includes(`PID ${w.pid} `);
      if (mine) out.push(m[2].replace(String(w.pid), 'PID'));
    } else if (mine && l.startsWith('\t')) out.push(l);
  }
  return out;
}

const endings: Ending[] = ['close', 'reset', 'terminate', 'cancel, then close', 'cancel, then terminate'];
const direct: Partial<Record<Ending, string[]>> = {};

describe('COPY FROM STDIN, then the client goes', () => {
  it('straight at PostgreSQL: what the server logs for each ending', async () => {
    for (const e of endings) {
      direct[e] = await copyThenVanish(rig.server.port, e);
      console.log(`direct, ${e}:\n  ${direct[e]!.join('\n  ')}`);
      expect(direct[e]!.length, e).toBeGreaterThan(0);
    }
    expect(direct.close!.join('\n')).toMatch(/unexpected EOF on client connection/);
    expect(direct.terminate!.join('\n')).toMatch(/unexpected message type 0x58 during COPY from stdin/);
  });

  for (const relay of ['native', 'node'] as const) {
    it(`through the ${relay} relay the server logs the same lines`, async () => {
      expect(Object.keys(direct)).toHaveLength(endings.length);
      for (const e of endings) {
        const got = await copyThenVanish(proxies[relay].port, e);
        expect(got, `${relay} relay, ${e}`).toEqual(direct[e]);
      }
    });
  }
});
