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
