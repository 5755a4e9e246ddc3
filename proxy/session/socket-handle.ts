/**
 * The one place pgha-proxy reaches into Node's private socket internals. Handing a session to the
 * native relay needs the socket's file descriptor and a way to stop libuv reading it, so that the
 * relay (which works on duplicates of the descriptors) is the only reader. Node exposes neither:
 * `socket._handle` is the libuv TCP wrap, with `fd` (Unix) and `readStop()`. Both have been there
 * since Node 0.x, but they are not an API; test/unit/socket-handle.test.ts fails loudly if a Node
 * release changes them, and without them sessions simply stay on the Node relay.
 */
import type { Socket } from 'node:net';

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
