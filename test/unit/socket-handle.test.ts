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

describe('TLS internals the proxy relies on', () => {
  it('peerVerifyError: null for a client certificate the CA signed, the reason for one it did not; tcpSocketUnder: the TCP socket below', async () => {
    const { makeCerts } = await import('../support/tls.js');
    const { readFileSync } = await import('node:fs');
    const { TLSSocket, connect: tlsConnect, createSecureContext } = await import('node:tls');
    const { peerVerifyError, tcpSocketUnder } = await import('../../proxy/session/socket-handle.js');
    const ours = makeCerts('pgha-test');
    const foreign = makeCerts('stranger');
    const verdictFor = async (client: typeof ours): Promise<{ error: string | null; tcpIsParent: boolean }> => {
      const server = createServer();
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      const accepted = new Promise<Socket>((r) => server.once('connection', r));
      const c = tlsConnect({ port: (server.address() as { port: number }).port, host: '127.0.0.1', ca: readFileSync(ours.caCert), cert: readFileSync(client.cert), key: readFileSync(client.key), checkServerIdentity: () => undefined });
      c.on('error', () => undefined);
      const raw = await accepted;
      const t = new TLSSocket(raw, {
        isServer: true,
        secureContext: createSecureContext({ cert: readFileSync(ours.cert), key: readFileSync(ours.key), ca: readFileSync(ours.caCert) }),
        requestCert: true,
        rejectUnauthorized: false,
      });
      await new Promise((r) => t.once('secure', r));
      const v = peerVerifyError(t);
      const result = { error: v ? (v.code ?? v.message) : null, tcpIsParent: tcpSocketUnder(t) === raw };
      t.destroy();
      c.destroy();
      server.close();
      return result;
    };
    expect(await verdictFor(ours)).toEqual({ error: null, tcpIsParent: true });
    const refused = await verdictFor(foreign);
    expect(refused.error).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT/);
    expect(refused.tcpIsParent).toBe(true);
  });
});
