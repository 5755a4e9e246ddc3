/**
 * The startup phase, byte for byte as PostgreSQL 15 answers it: every case is sent to a real server
 * directly and through pgha-proxy, and the client must receive the same thing — nothing where the
 * server only logs and closes (a bad or incomplete startup packet, a timeout, a CancelRequest of any
 * size, a Terminate before any startup packet), and where it answers, the same answers ('S'/'N',
 * an ErrorResponse with the same SQLSTATE, a protocol-2 error for a protocol-2 client), inside TLS
 * where the server answers inside TLS. GSSENCRequest is left out: Debian's server is built with
 * GSSAPI and answers 'G'; the proxy has no GSSAPI and answers 'N'.
 */
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

import { join } from 'node:path';
import pg from 'pg';
import { serialize } from 'pg-protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, PgCluster, waitFor } from '../harness/cluster.js';
import { startProxy, type RunningProxy } from '../support/proxy.js';
import { makeCerts, serveTls } from '../support/tls.js';

let server: PgCluster;
let tlsProxy: RunningProxy;
let plainProxy: RunningProxy;

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;

const pkt = (len: number, code: number, rest: Buffer = Buffer.alloc(0)) => {
  const b = Buffer.alloc(8);
  b.writeInt32BE(len, 0);
  b.writeInt32BE(code, 4);
  return Buffer.concat([b, rest]);
};
const startupWith = (params: Record<string, string>, code = 196608) => {
  const body = Buffer.from(Object.entries(params).map(([k, v]) => `${k}\0${v}\0`).join('') + '\0');
  return pkt(8 + body.length, code, body);
};

/**
 * What a client receives, as tokens: single answer bytes (S, N), `E:<SQLSTATE>` for an
 * ErrorResponse, `E2:<text>` for a protocol-2 error, other messages by their type; `closed` or not
 */
function describeBytes(d: Buffer): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < d.length) {
    const t = String.fromCharCode(d[i]);
    if ((t === 'S' || t === 'N') && (i + 1 === d.length || d.length - i < 5 || d.readInt32BE(i + 1) > 0x10000)) {
      out.push(t);
      i += 1;
    } else if (t === 'E' && d.subarray(i + 1, i + 8).toString('latin1') === 'FATAL: ') {
      const end = d.indexOf(0, i);
      out.push(`E2:${d.toString('latin1', i + 1, end).split(':').slice(0, 2).join(':')}`);
      i = end + 1;
    } else if (d.length - i >= 5) {
      const len = d.readInt32BE(i + 1);
      if (t === 'E') {
        const body = d.subarray(i + 5, i + 1 + len);
        const at = body.indexOf(Buffer.from('\0C'));
        out.push(`E:${at >= 0 ? body.toString('latin1', at + 2, body.indexOf(0, at + 2)) : '?'}`);
      } else out.push(t);
      i += 1 + len;
    } else {
      out.push(`bytes:${d.subarray(i).toString('hex')}`);
      break;
    }
  }
  return out;
}

interface Outcome {
  received: string[];
  closed: boolean;
}

/** send `bytes` (and end our side when asked), collect until the peer closes or `waitMs` */
interface ExchangeOptions {
  /** end our side after sending */
  end?: boolean;
  waitMs?: number;
  /** a login: send Terminate once ReadyForQuery is in */
  untilReady?: boolean;
  /** send this once the first answer is in (a client that waits for 'N' as libpq does) */
  afterAnswer?: Buffer;
}

async function exchange(port: number, bytes: Buffer | null, opts: ExchangeOptions = {}): Promise<Outcome> {
  const s = connect({ host: '127.0.0.1', port });
  s.on('error', () => undefined);
  await new Promise((r) => s.once('connect', r));
  const chunks: Buffer[] = [];
  s.on('data', (b: Buffer) => {
    chunks.push(b);
    if (opts.afterAnswer && chunks.length === 1) s.write(opts.afterAnswer);
    if (opts.untilReady && Buffer.concat(chunks).includes(Buffer.from([0x5a, 0, 0, 0, 5, 0x49]))) s.write(serialize.end());
  });
  const closed = new Promise<boolean>((resolve) => {
    s.once('close', () => resolve(true));
    setTimeout(() => resolve(false), opts.waitMs ?? 4000);
  });
  if (bytes) {
    if (opts.end) s.end(bytes);
    else s.write(bytes);
  }
  const c = await closed;
  s.destroy();
  return { received: describeBytes(Buffer.concat(chunks)), closed: c };
}

/**
 * SSLRequest (plus `extra` in the same write), 'S' expected, then a TLS handshake on the same socket
 * and `inside` sent through it: what comes back inside TLS
 */
async function insideTls(port: number, extra: Buffer, inside: Buffer | null): Promise<Outcome & { answer: string }> {
  const raw = connect({ host: '127.0.0.1', port });
  raw.on('error', () => undefined);
  await new Promise((r) => raw.once('connect', r));
  raw.write(Buffer.concat([pkt(8, SSL_REQUEST), extra]));
  const answer = await new Promise<Buffer>((r) => raw.once('data', r));
  const t = tlsConnect({ socket: raw, rejectUnauthorized: false });
  t.on('error', () => undefined);
  const chunks: Buffer[] = [];
  t.on('data', (b: Buffer) => chunks.push(b));
  const closed = new Promise<boolean>((resolve) => {
    t.once('close', () => resolve(true));
    setTimeout(() => resolve(false), 4000);
  });
  await new Promise((r) => t.once('secureConnect', r));
  if (inside) t.write(inside);
  const c = await closed;
  t.destroy();
  return { answer: answer.toString('latin1'), received: describeBytes(Buffer.concat(chunks)), closed: c };
}

const cases: Array<[string, Buffer | null, ExchangeOptions?]> = [
  ['Terminate before any startup packet', serialize.end()],
  ['Terminate before any startup packet, then EOF', serialize.end(), { end: true }],
  ['an HTTP request', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')],
  ['length 0', pkt(0, 196608)],
  ['length 4', pkt(4, 196608)],
  ['length 7', pkt(7, 196608)],
  ['length -1', pkt(-1, 196608)],
  ['length 10005 (body 10001)', pkt(10005, 196608)],
  ['length 2^31-1', pkt(0x7fffffff, 196608)],
  ['half a length word, then EOF', Buffer.from([0, 0]), { end: true }],
  ['half a startup packet, then EOF', pkt(40, 196608, Buffer.from('user\0post')), { end: true }],
  ['half a startup packet, then silence (timeout)', pkt(40, 196608, Buffer.from('user\0post'))],
  ['protocol 2.0 (answered in protocol 2)', pkt(9, 2 << 16, Buffer.from([0]))],
  ['protocol 4.0', startupWith({ user: 'postgres' }, 4 << 16)],
  ['protocol 1234.5677', pkt(8, 80877101)],
  ['no user', startupWith({ database: 'postgres' })],
  ['an empty user', startupWith({ user: '' })],
  ['no terminator', pkt(13, 196608, Buffer.from('user\0'))],
  ['only a protocol code', pkt(8, 196608)],
  ['CancelRequest with an unknown key', Buffer.concat([pkt(16, CANCEL_REQUEST), Buffer.from([0, 0, 0, 1, 0, 0, 0, 2])])],
  ['CancelRequest of 12 bytes', Buffer.concat([pkt(12, CANCEL_REQUEST), Buffer.from([0, 0, 0, 1])])],
  ['CancelRequest of 20 bytes', Buffer.concat([pkt(20, CANCEL_REQUEST), Buffer.alloc(12, 1)])],
  ['a startup packet of 10004 bytes is taken', startupWith({ user: 'postgres', application_name: 'x'.repeat(10004 - 8 - 14 - 18 - 1) }), { untilReady: true }],
  ['a startup packet of 10005 bytes is not', startupWith({ user: 'postgres', application_name: 'x'.repeat(10005 - 8 - 14 - 18 - 1) })],
  ['replication=bogus (the server answers)', startupWith({ user: 'postgres', replication: 'bogus' })],
];

/** cases run when the server has TLS and the proxy a certificate: 'S' */
const tlsCases: Array<[string, Buffer, ExchangeOptions?]> = [
  ['SSLRequest, then EOF', pkt(8, SSL_REQUEST), { end: true }],
  ['SSLRequest of 12 bytes, then EOF', pkt(12, SSL_REQUEST, Buffer.alloc(4)), { end: true }],
];

/** cases run when neither has TLS: 'N' */
const plainCases: Array<[string, Buffer, ExchangeOptions?]> = [
  ['SSLRequest, then EOF', pkt(8, SSL_REQUEST), { end: true }],
  ['SSLRequest of 12 bytes, then EOF', pkt(12, SSL_REQUEST, Buffer.alloc(4)), { end: true }],
  ['SSLRequest with data behind it', Buffer.concat([pkt(8, SSL_REQUEST), Buffer.from('hello')])],
  ['SSLRequest with a startup packet behind it', Buffer.concat([pkt(8, SSL_REQUEST), startupWith({ user: 'postgres' })])],
  ['two SSLRequests in one write', Buffer.concat([pkt(8, SSL_REQUEST), pkt(8, SSL_REQUEST)])],
  ["a second SSLRequest after 'N'", pkt(8, SSL_REQUEST), { afterAnswer: pkt(8, SSL_REQUEST) }],
  ["a startup packet after 'N'", pkt(8, SSL_REQUEST), { afterAnswer: startupWith({ user: 'postgres' }), untilReady: true }],
  ['a TLS ClientHello first (direct TLS) without TLS', Buffer.from([0x16, 3, 1, 0, 200, 1, 0, 0, 196])],
];

async function compare(list: Array<[string, Buffer | null, ExchangeOptions?]>, proxy: RunningProxy): Promise<void> {
  const results = await Promise.all(
    list.map(async ([name, bytes, opts]) => {
      const [direct, through] = await Promise.all([exchange(server.port, bytes, opts), exchange(proxy.port, bytes, opts)]);
      return { name, direct, through };
    }),
  );
  for (const r of results) {
    expect(r.through, `${r.name}: PostgreSQL gave ${JSON.stringify(r.direct)}`).toEqual(r.direct);
    expect(r.direct.closed, r.name).toBe(true);
  }
  console.log(results.map((r) => `${r.name}: ${r.direct.received.join(' ') || 'nothing'}`).join('\n'));
}

beforeAll(async () => {
  const certs = makeCerts();
  // authentication_timeout is the server's bound on the startup phase; the proxy's is --startup-timeout
  server = await PgCluster.init({ name: 'proxy-startup-parity', conf: { authentication_timeout: '1s' } });
  serveTls(server, certs);
  await server.start();
  const common = ['--startup-timeout', '1000', '--backend-sslmode', 'disable'];
  tlsProxy = await startProxy([server.port], [...common, '--tls-cert', certs.cert, '--tls-key', certs.key]);
  plainProxy = await startProxy([server.port], common);
}, 120_000);

afterAll(async () => {
  await tlsProxy?.stop();
  await plainProxy?.stop();
  await cleanupAll();
});

describe('the startup phase answered as PostgreSQL 15 answers it', () => {
  it('bad, incomplete and timed-out startup packets, bad protocol versions, CancelRequests: the same bytes', async () => {
    await compare(cases, tlsProxy);
  });

  it("SSLRequest answered 'S', and what PostgreSQL says inside TLS", async () => {
    await compare(tlsCases, tlsProxy);
    // data sent behind the SSLRequest was not encrypted: 08P01 once TLS is up
    const hello = Buffer.from('hello');
    const [d1, p1] = await Promise.all([insideTls(server.port, hello, null), insideTls(tlsProxy.port, hello, null)]);
    expect(d1).toMatchObject({ answer: 'S', received: ['E:08P01'], closed: true });
    expect(p1).toEqual(d1);
    // a second SSLRequest, or a GSSENCRequest, inside TLS is an unknown protocol code: 0A000
    for (const code of [SSL_REQUEST, GSSENC_REQUEST]) {
      const [d, p] = await Promise.all([insideTls(server.port, Buffer.alloc(0), pkt(8, code)), insideTls(tlsProxy.port, Buffer.alloc(0), pkt(8, code))]);
      expect(d, String(code)).toMatchObject({ answer: 'S', received: ['E:0A000'], closed: true });
      expect(p, String(code)).toEqual(d);
    }
  });

  it('node-postgres ending a client while it connects (Terminate before the startup packet): the same outcome, no error', async () => {
    const attempt = async (port: number) => {
      const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
      const events: string[] = [];
      c.on('error', (e) => events.push(`error: ${e.message}`));
      c.on('end', () => events.push('end'));
      const settle = <T>(p: Promise<T>) => Promise.race([p, new Promise((r) => setTimeout(() => r('pending'), 700))]);
      const connected = c.connect().then(
        () => 'connected',
        (e: Error) => `connect failed: ${e.message}`,
      );
      const ended = c.end().then(
        () => 'ended',
        (e: Error) => `end failed: ${e.message}`,
      );
      const out = { connected: await settle(connected), ended: await settle(ended), events };
      (c as unknown as { connection: { stream: Socket } }).connection.stream.destroy();
      return out;
    };
    const [direct, through] = await Promise.all([attempt(server.port), attempt(tlsProxy.port)]);
    expect(direct.events.filter((e) => e.startsWith('error'))).toEqual([]);
    expect(through).toEqual(direct);
  });

  it("without TLS on either side: 'N', and what follows it", async () => {
    server.psql('ALTER SYSTEM SET ssl = off');
    server.psql('SELECT pg_reload_conf()');
    try {
      await waitFor(async () => (await exchange(server.port, pkt(8, SSL_REQUEST), { end: true })).received[0] === 'N', 10_000, 'server without TLS');
      await compare(plainCases, plainProxy);
    } finally {
      server.psql('ALTER SYSTEM RESET ssl');
      server.psql('SELECT pg_reload_conf()');
    }
  });
});
