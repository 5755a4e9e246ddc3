/**
 * The native relay's hand-over needs Node's private `socket._handle` (fd and readStop). This fails
 * loudly when a Node release changes it, rather than letting sessions silently stay on the Node relay.
 */
import { fstatSync, readSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { socketHandle } from '../../proxy/session/socket-handle.js';

describe('socketHandle (the native hand-over of a TCP socket)', () => {
  const sockets: Socket[] = [];
  const accepted: Socket[] = [];
  const server = createServer((s) => accepted.push(s));
  afterAll(() => {
    for (const s of [...sockets, ...accepted]) s.destroy();
    server.close();
  });

  it('gives the descriptor of the socket itself, and after readStop the bytes are left for its new reader', async () => {
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const client = connect((server.address() as { port: number }).port, '127.0.0.1');
    sockets.push(client);
    await new Promise((r) => client.once('connect', r));
    while (accepted.length < 1) await new Promise((r) => setTimeout(r, 5));
    const peer = accepted[0];

    const h = socketHandle(client);
    expect(h, `socket._handle of Node ${process.version} has no fd/readStop: the native relay cannot take sessions over`).not.toBeNull();
    expect(fstatSync(h!.fd).isSocket()).toBe(true);
    client.pause();
    expect(h!.readStop()).toBe(0);
    peer.write('hand over');
    const buf = Buffer.alloc(64);
    let got = '';
    const deadline = Date.now() + 5_000;
    while (got.length < 9 && Date.now() < deadline) {
      try {
        const n = readSync(h!.fd, buf, 0, buf.length, null);
        got += buf.subarray(0, n).toString();
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    expect(got).toBe('hand over');
    // Node read nothing of it: everything went to the descriptor's new reader
    expect(client.readableLength).toBe(0);
    expect(client.bytesRead).toBe(0);
  });

  it('says null for a socket that has no descriptor (not connected, or destroyed)', () => {
    const s = connect({ port: 1, host: '127.0.0.1' });
    s.on('error', () => undefined);
    s.destroy();
    expect(socketHandle(s)).toBeNull();
  });
});
