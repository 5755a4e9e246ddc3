/**
 * One rule for "the server said FATAL" in both relays: the non-localized severity `V` when the
 * server sent one, else `S` (which lc_messages translates: `SCHWERWIEGEND`, `PANIK`…). The same byte
 * streams go through the TypeScript side (MessageWalker + backendFatal, what the Node relay uses) and
 * through the native relay itself (native/src/relay.rs over real sockets, its backend-fatal events),
 * and both must make the expected decisions.
 */
import { connect, createServer, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backendFatal } from '../../proxy/protocol/backend-messages.js';
import { MessageWalker } from '../../proxy/protocol/message-walker.js';
import { nativeProxyRelay, type ProxyRelay, type RelayEvent } from '../../src/native/index.js';
import { waitFor } from '../harness/cluster.js';

const msg = (type: string, body: Buffer) => {
  const head = Buffer.alloc(5);
  head[0] = type.charCodeAt(0);
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
};
const error = (fields: Array<[string, string]>) => msg('E', Buffer.concat([...fields.map(([k, v]) => Buffer.from(`${k}${v}\0`, 'utf8')), Buffer.from([0])]));
const ready = msg('Z', Buffer.from('I'));

/** [what, ErrorResponse fields, the decision: severity + SQLSTATE when it ends the session, else null] */
const cases: Array<[string, Array<[string, string]>, { severity: string; code: string } | null]> = [
  ['S=FATAL, V=FATAL', [['S', 'FATAL'], ['V', 'FATAL'], ['C', '57P01'], ['M', 'terminating connection due to administrator command']], { severity: 'FATAL', code: '57P01' }],
  ['S localized (German), V=FATAL', [['S', 'SCHWERWIEGEND'], ['V', 'FATAL'], ['C', '57P01'], ['M', 'Verbindung wird abgebrochen']], { severity: 'FATAL', code: '57P01' }],
  ['V before S', [['V', 'FATAL'], ['S', 'SCHWERWIEGEND'], ['C', '57P02']], { severity: 'FATAL', code: '57P02' }],
  ['S=FATAL, no V (a server before 9.6)', [['S', 'FATAL'], ['C', '08006'], ['M', 'gone']], { severity: 'FATAL', code: '08006' }],
  ['S localized, no V', [['S', 'SCHWERWIEGEND'], ['C', '57P01']], null],
  ['S localized PANIK, V=PANIC', [['S', 'PANIK'], ['V', 'PANIC'], ['C', 'XX000']], { severity: 'PANIC', code: 'XX000' }],
  ['S=FATAL but V=ERROR: V decides', [['S', 'FATAL'], ['V', 'ERROR'], ['C', '42601']], null],
  ['S=ERROR, V=ERROR', [['S', 'ERROR'], ['V', 'ERROR'], ['C', '42601'], ['M', 'syntax error']], null],
  ['S localized FEHLER, V=ERROR', [['S', 'FEHLER'], ['V', 'ERROR'], ['C', '22012']], null],
  ['an empty V is no V', [['S', 'FATAL'], ['V', ''], ['C', '53300']], { severity: 'FATAL', code: '53300' }],
];

const stream = Buffer.concat(cases.flatMap(([, fields]) => [error(fields), ready]));
const expected = cases.filter(([, , d]) => d).map(([, , d]) => d);

/** the TypeScript side, fed in `cuts` pieces */
function tsDecisions(cuts: number[]): Array<{ severity: string; code: string }> {
  const out: Array<{ severity: string; code: string }> = [];
  const w = new MessageWalker({
    peer: 'backend',
    maxLength: 0x7fffffff,
    wanted: (t) => t === 0x45,
    onMessage: (_t, body) => {
      const f = backendFatal(body);
      if (f) out.push({ severity: f.severity, code: f.code });
    },
  });
  let at = 0;
  for (const c of [...cuts, stream.length]) {
    w.feed(stream.subarray(at, c));
    at = c;
  }
  return out;
}

let relay: ProxyRelay | null;
const events: RelayEvent[] = [];
let server: ReturnType<typeof createServer>;
let port = 0;
const accepted: Socket[] = [];

/** a connected pair on loopback: [our far end, the accepted end whose descriptor the relay gets] */
async function pair(): Promise<[Socket, Socket]> {
  const got = new Promise<Socket>((r) => server.once('connection', r));
  const far = connect({ host: '127.0.0.1', port });
  await new Promise((r) => far.once('connect', r));
  const near = await got;
  accepted.push(near, far);
  return [far, near];
}
const fdOf = (s: Socket) => (s as unknown as { _handle: { fd: number; readStop(): void } })._handle;

beforeAll(async () => {
  relay = nativeProxyRelay((e) => events.push(e));
  server = createServer({ pauseOnConnect: true });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  port = (server.address() as { port: number }).port;
});

afterAll(() => {
  for (const s of accepted) s.destroy();
  server?.close();
});

describe('FATAL from the server: the same decision in the Node relay and the native relay', () => {
  it('the TypeScript side, whole and at every split', () => {
    expect(tsDecisions([])).toEqual(expected);
    for (let cut = 1; cut < stream.length; cut += 7) expect(tsDecisions([cut]), `cut at ${cut}`).toEqual(expected);
  });

  // in odd pieces, so that messages are split between reads; and in one write, so that one read
  // holds several FATALs (each is one decision: the relay once kept only a read's last)
  it.each([['in pieces', 37, 424242], ['in one write', 0, 424243]] as const)('the native relay over real sockets, the stream %s', async (_how, piece, id) => {
    expect(relay, 'the native addon is built').not.toBeNull();
    const [client, clientNear] = await pair();
    const [backend, backendNear] = await pair();
    for (const s of [clientNear, backendNear]) fdOf(s).readStop();
    relay!.add(id, fdOf(clientNear).fd, fdOf(backendNear).fd, 0x3fffffff - 1);
    let received = 0;
    client.on('data', (b: Buffer) => (received += b.length));
    if (piece === 0) backend.write(stream);
    else
      for (let at = 0; at < stream.length; at += piece) {
        backend.write(stream.subarray(at, Math.min(stream.length, at + piece)));
        await new Promise((r) => setTimeout(r, 2));
      }
    await waitFor(async () => received === stream.length, 5000, 'the stream relayed to the client');
    // events come through a thread-safe function, after the bytes: give them a moment
    const fatalEvents = () => events.filter((e) => e.id === id && e.kind === 'backend-fatal');
    await waitFor(async () => fatalEvents().length >= expected.length, 2000, 'the events').catch(() => undefined);
    await new Promise((r) => setTimeout(r, 50));
    const fatal = fatalEvents().map((e) => ({ severity: e.detail, code: e.sqlstate }));
    relay!.finish(id, null, null);
    expect(fatal).toEqual(expected);
    expect(fatal).toEqual(tsDecisions([]));
  });
});
