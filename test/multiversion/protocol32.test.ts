/**
 * Protocol 3.2 (PostgreSQL 18) through pgha-proxy, both relays, against an embedded 18.4 server, with
 * a raw client, compared with the same client straight at the server:
 *  - a client asking for 3.2 gets it (no NegotiateProtocolVersion) and the server's BackendKeyData
 *    with its longer cancel key (32 bytes from 18) byte for byte; a CancelRequest carrying that key,
 *    sent to the proxy, cancels the query (57014), and one with a single bit off cancels nothing;
 *  - a client asking for 3.9 or for an unknown `_pq_.` option gets the server's own
 *    NegotiateProtocolVersion (newest minor 2, the option named), then a normal session;
 *  - a 3.0 client gets a 4-byte key and its cancel works too.
 */
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, PgCluster, waitFor } from '../harness/cluster.js';
import { embeddedPostgres } from '../harness/embedded.js';
import { startProxy, type RunningProxy } from '../support/proxy.js';

const CANCEL_CODE = 80877102;
let server: PgCluster;
const targets: Record<string, () => number> = {};
const proxies: RunningProxy[] = [];

beforeAll(async () => {
  const e = embeddedPostgres(18);
  server = await PgCluster.init({ name: 'proto32', binDir: e.binDir, libDir: e.libDir });
  await server.start();
  targets.direct = () => server.port;
  for (const relay of ['native', 'node'] as const) {
    const p = await startProxy([server.port], ['--backend-sslmode', 'disable', '--relay', relay]);
    proxies.push(p);
    targets[`proxy (${relay} relay)`] = () => p.port;
  }
}, 120_000);

afterAll(async () => {
  for (const p of proxies) await p.stop();
  await cleanupAll();
});

interface Msg {
  type: string;
  body: Buffer;
}

function startupPacket(minor: number, extra: Record<string, string> = {}): Buffer {
  const params = { user: 'postgres', database: 'postgres', ...extra };
  const kv = Buffer.concat([...Object.entries(params).flatMap(([k, v]) => [Buffer.from(`${k}\0`), Buffer.from(`${v}\0`)]), Buffer.from([0])]);
  const head = Buffer.alloc(8);
  head.writeInt32BE(8 + kv.length, 0);
  head.writeInt32BE((3 << 16) | minor, 4);
  return Buffer.concat([head, kv]);
}

/** a connection and the messages it received, parsed as they come */
async function open(port: number): Promise<{ s: Socket; msgs: Msg[]; closed: Promise<unknown> }> {
  const s = connect({ host: '127.0.0.1', port });
  s.on('error', () => undefined);
  await new Promise((r) => s.once('connect', r));
  const msgs: Msg[] = [];
  let buf = Buffer.alloc(0);
  s.on('data', (b: Buffer) => {
    buf = Buffer.concat([buf, b]);
    while (buf.length >= 5 && buf.length >= 1 + buf.readInt32BE(1)) {
      const len = buf.readInt32BE(1);
      msgs.push({ type: String.fromCharCode(buf[0]), body: Buffer.from(buf.subarray(5, 1 + len)) });
      buf = buf.subarray(1 + len);
    }
  });
  return { s, msgs, closed: new Promise((r) => s.once('close', r)) };
}

async function login(port: number, minor: number, extra: Record<string, string> = {}) {
  const c = await open(port);
  c.s.write(startupPacket(minor, extra));
  await waitFor(async () => c.msgs.some((m) => m.type === 'Z' || m.type === 'E'), 15_000, 'first ReadyForQuery');
  const keyData = c.msgs.find((m) => m.type === 'K');
  return { ...c, keyData };
}

async function cancelThrough(port: number, keyData: Buffer): Promise<void> {
  const c = await open(port);
  const req = Buffer.alloc(8);
  req.writeInt32BE(8 + keyData.length, 0);
  req.writeInt32BE(CANCEL_CODE, 4);
  c.s.write(Buffer.concat([req, keyData]));
  await c.closed;
}

function errorCode(m: Msg | undefined): string | undefined {
  if (!m) return undefined;
  for (const f of m.body.toString('latin1').split('\0')) if (f.startsWith('C')) return f.slice(1);
  return undefined;
}

function query(s: Socket, sql: string): void {
  const b = Buffer.from(`${sql}\0`);
  const h = Buffer.alloc(5);
  h[0] = 0x51;
  h.writeInt32BE(4 + b.length, 1);
  s.write(Buffer.concat([h, b]));
}

describe('protocol 3.2 against PostgreSQL 18', () => {
  for (const name of ['direct', 'proxy (native relay)', 'proxy (node relay)']) {
    for (const minor of [2, 0]) {
      it(`${name}: a 3.${minor} client gets the server's BackendKeyData (${minor === 2 ? '32' : '4'}-byte key) and its cancel works`, async () => {
        const port = targets[name]();
        const c = await login(port, minor);
        expect(c.msgs.map((m) => m.type)).not.toContain('v');
        expect(c.msgs.map((m) => m.type)).not.toContain('E');
        expect(c.keyData, 'BackendKeyData').toBeDefined();
        expect(c.keyData!.body.length).toBe(4 + (minor === 2 ? 32 : 4));
        // the pid is the server's own
        query(c.s, 'SELECT pg_backend_pid()');
        await waitFor(async () => c.msgs.filter((m) => m.type === 'Z').length >= 2, 10_000, 'pg_backend_pid answered');
        const row = c.msgs.find((m) => m.type === 'D')!;
        expect(Number(row.body.subarray(6).toString())).toBe(c.keyData!.body.readInt32BE(0));
        query(c.s, 'SELECT pg_sleep(30)');
        await new Promise((r) => setTimeout(r, 300));
        // the key's last byte off by one: the cancel must reach nobody
        const wrong = Buffer.from(c.keyData!.body);
        wrong[wrong.length - 1] ^= 1;
        await cancelThrough(port, wrong);
        await new Promise((r) => setTimeout(r, 700));
        expect(c.msgs.map((m) => m.type)).not.toContain('E');
        await cancelThrough(port, c.keyData!.body);
        await waitFor(async () => c.msgs.some((m) => m.type === 'E'), 10_000, 'the query cancelled');
        expect(errorCode(c.msgs.find((m) => m.type === 'E'))).toBe('57014');
        c.s.end();
      }, 30_000);
    }

    it(`${name}: NegotiateProtocolVersion passes through as PostgreSQL sends it (3.9, an unknown _pq_ option)`, async () => {
      const port = targets[name]();
      const direct = await login(server.port, 9, { '_pq_.test_option': 'x' });
      const c = await login(port, 9, { '_pq_.test_option': 'x' });
      const v = c.msgs.find((m) => m.type === 'v');
      expect(v, 'NegotiateProtocolVersion').toBeDefined();
      expect(v!.body.readInt32BE(0)).toBe((3 << 16) | 2);
      expect(v!.body.readInt32BE(4)).toBe(1);
      expect(v!.body.subarray(8).toString()).toBe('_pq_.test_option\0');
      expect(v!.body).toEqual(direct.msgs.find((m) => m.type === 'v')!.body);
      // then a 3.2 session: the long key
      expect(c.keyData!.body.length).toBe(36);
      expect(c.msgs.map((m) => m.type)).toContain('Z');
      c.s.end();
      direct.s.end();
    }, 30_000);
  }
});
