/** A bare protocol-3 client for tests that need the wire itself: startup (trust) up to the first ReadyForQuery. */
import { connect, type Socket } from 'node:net';
import { serialize } from 'pg-protocol';

/** ReadyForQuery, idle: 'Z', length 5, 'I' */
export const READY_IDLE = Buffer.from([0x5a, 0, 0, 0, 5, 0x49]);

export async function rawSession(port: number, host = '127.0.0.1'): Promise<Socket> {
  const s = connect({ host, port });
  await new Promise((r) => s.once('connect', r));
  s.write(serialize.startup({ user: 'postgres', database: 'postgres' }));
  let buf = Buffer.alloc(0);
  await new Promise<void>((resolve, reject) => {
    const onData = (b: Buffer) => {
      buf = Buffer.concat([buf, b]);
      if (buf.includes(READY_IDLE)) {
        s.off('data', onData);
        resolve();
      }
    };
    s.on('data', onData);
    s.once('error', reject);
  });
  return s;
}

/** a session logged in (trust) up to its first ReadyForQuery, with the BackendKeyData it received */
export interface TrustSession {
  s: Socket;
  pid: number;
  key: number;
  /** everything received so far */
  got: () => Buffer;
  /** resolved when the connection closes */
  closed: Promise<unknown>;
}

/** log in as postgres (trust) and read up to the first ReadyForQuery, keeping BackendKeyData */
export async function trustLogin(port: number, host = '127.0.0.1'): Promise<TrustSession> {
  const s = connect({ host, port });
  s.on('error', () => undefined);
  await new Promise((r) => s.once('connect', r));
  const closed = new Promise((r) => s.once('close', r));
  let buf = Buffer.alloc(0);
  s.on('data', (b: Buffer) => (buf = Buffer.concat([buf, b])));
  s.write(serialize.startup({ user: 'postgres', database: 'postgres' }));
  const deadline = Date.now() + 10_000;
  while (!buf.includes(READY_IDLE)) {
    if (Date.now() > deadline) throw new Error(`no ReadyForQuery from ${host}:${port} within 10 s`);
    await new Promise((r) => setTimeout(r, 10));
  }
  const k = buf.indexOf(Buffer.from([0x4b, 0, 0, 0, 12]));
  if (k < 0) throw new Error(`no BackendKeyData from ${host}:${port} before ReadyForQuery`);
  return { s, pid: buf.readInt32BE(k + 5), key: buf.readInt32BE(k + 9), got: () => buf, closed };
}
