/**
 * Cancel keys → the backend that issued them. Clients get the server's own BackendKeyData (so
 * NotificationResponse PIDs and pg_backend_pid() stay true); a CancelRequest arriving on a new proxy
 * connection is sent to the server that owns the key, whichever node that is now.
 */
import type { BackendAddress } from '../backend/connect.js';

export class CancelRegistry {
  private readonly byKey = new Map<string, BackendAddress>();

  private static id(pid: number, key: Buffer): string {
    return `${pid}:${key.toString('hex')}`;
  }

  add(pid: number, key: Buffer, backend: BackendAddress): string {
    const id = CancelRegistry.id(pid, key);
    this.byKey.set(id, backend);
    return id;
  }

  remove(id: string): void {
    this.byKey.delete(id);
  }

  find(pid: number, key: Buffer): BackendAddress | undefined {
    return this.byKey.get(CancelRegistry.id(pid, key));
  }

  get size(): number {
    return this.byKey.size;
  }
}
