/**
 * Cancel requests: a client's CancelRequest carries the key its server gave it (the proxy relays
 * BackendKeyData as is); the registry says which server that was, and the request goes there on a
 * fresh connection, as PostgreSQL expects. A pooled client's key is the proxy's own: the pool says
 * which server connection it is on now.
 */
import { serialize } from 'pg-protocol';
import type { Logger } from 'pino';
import { addressText, connectBackend, type BackendAddress, type BackendTls } from '../backend/connect.js';
import type { CancelRegistry } from '../session/cancel-registry.js';

export interface CancelForwarderOptions {
  registry: CancelRegistry;
  backendTls: BackendTls;
  connectTimeoutMs: number;
  log: Logger;
  /** counters the metrics read */
  stats: { cancelsForwarded: number; cancelsUnknown: number };
  /** --pool-mode: forwards a pooled client's cancel itself (resolved once the server took it) or does not know the key (null) */
  pool?: () => { cancel(pid: number, key: Buffer): Promise<void> | null } | null;
}

/** CancelRequest: Int32 length, Int32 80877102, Int32 pid, then the key (4 bytes in 3.0, up to 256 in 3.2) */
export function cancelRequest(pid: number, key: Buffer): Buffer {
  if (key.length === 4) return serialize.cancel(pid, key.readInt32BE(0));
  const b = Buffer.alloc(12 + key.length);
  b.writeInt32BE(b.length, 0);
  b.writeInt32BE(80877102, 4);
  b.writeInt32BE(pid, 8);
  key.copy(b, 12);
  return b;
}

export class CancelForwarder {
  constructor(private readonly o: CancelForwarderOptions) {}

  /** forward a client's cancel request; resolved once the server took it (or it could not be sent) */
  forward(pid: number, key: Buffer): Promise<void> {
    const pooled = this.o.pool?.()?.cancel(pid, key);
    if (pooled) {
      this.o.stats.cancelsForwarded++;
      return pooled;
    }
    const target = this.o.registry.find(pid, key);
    if (!target) {
      this.o.stats.cancelsUnknown++;
      return Promise.resolve();
    }
    this.o.stats.cancelsForwarded++;
    return this.send(target, pid, key).catch((e) => this.o.log.warn({ backend: addressText(target), err: (e as Error).message }, 'could not forward cancel request'));
  }

  /** send a cancel request to one server; resolved when the server closes the connection (it has signalled the backend) */
  async send(target: BackendAddress, pid: number, key: Buffer): Promise<void> {
    // PostgreSQL reads a CancelRequest on a fresh connection; TLS only when the backend demands it
    const mode = this.o.backendTls.mode === 'prefer' ? 'disable' : this.o.backendTls.mode;
    const s = await connectBackend(target, { ...this.o.backendTls, mode }, this.o.connectTimeoutMs);
    s.on('error', () => undefined);
    // the server closes this connection once the backend has been signalled: resolved then (or
    // after the connect timeout), so a client's cancel connection can be closed at the same point
    const closed = new Promise<void>((resolve) => {
      s.once('close', () => resolve());
      setTimeout(resolve, this.o.connectTimeoutMs).unref();
    });
    s.resume();
    s.end(cancelRequest(pid, key));
    await closed;
  }
}
