/**
 * The one place pgha-proxy reaches into Node's private socket internals. Handing a session to the
 * native relay needs the socket's file descriptor and a way to stop libuv reading it, so that the
 * relay (which works on duplicates of the descriptors) is the only reader. Node exposes neither:
 * `socket._handle` is the libuv TCP wrap, with `fd` (Unix) and `readStop()`. Both have been there
 * since Node 0.x, but they are not an API; test/unit/socket-handle.test.ts fails loudly if a Node
 * release changes them, and without them sessions simply stay on the Node relay.
 */
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';

export interface SocketHandle {
  /** the socket's file descriptor */
  fd: number;
  /** stop libuv reading the socket (returns libuv's status, 0 on success) */
  readStop(): number;
}

/** The socket's descriptor and read switch, or null when this Node (or this socket type) has none. */
export function socketHandle(socket: Socket): SocketHandle | null {
  const handle = (socket as unknown as { _handle?: { fd?: unknown; readStop?: unknown } | null })._handle;
  if (!handle || typeof handle.readStop !== 'function' || typeof handle.fd !== 'number' || handle.fd < 0) return null;
  const readStop = handle.readStop as () => number;
  return { fd: handle.fd, readStop: () => readStop.call(handle) };
}

/**
 * The TCP socket a TLS socket runs on, to reset the connection (a TLSSocket has no
 * resetAndDestroy of its own): Node's private `_parent`. Null when there is none.
 */
export function tcpSocketUnder(s: Socket): Socket | null {
  if (!(s instanceof TLSSocket)) return s;
  const parent = (s as unknown as { _parent?: unknown })._parent;
  return parent && typeof (parent as Socket).resetAndDestroy === 'function' ? (parent as Socket) : null;
}

/**
 * OpenSSL's verdict on the peer's certificate. Node sets `.authorized` only on sockets a tls.Server
 * made; the proxy wraps its own after SSLRequest, so it asks the TLS wrap (`_handle.verifyError()`,
 * what tls.Server calls itself). Null when the certificate verified; an error when this Node has no
 * such call, so a change in Node refuses certificates rather than silently taking them as valid.
 */
export function peerVerifyError(t: TLSSocket): (Error & { code?: string }) | null {
  const handle = (t as unknown as { _handle?: { verifyError?: unknown } | null })._handle;
  if (!handle || typeof handle.verifyError !== 'function') return new Error(`Node ${process.version}: a TLS socket without _handle.verifyError(): client certificates cannot be checked`);
  return (handle.verifyError as () => (Error & { code?: string }) | null).call(handle) ?? null;
}
