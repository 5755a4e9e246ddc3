/** What a client session needs from the proxy around it. */
import type { Socket } from 'node:net';
import type { SecureContext } from 'node:tls';
import type { Logger } from 'pino';
import type { ProxyRelay } from '../../src/native/index.js';
import type { ProxyConfig } from '../config.js';
import type { BackendState, HealthMonitor } from '../health/monitor.js';
import type { CancelRegistry } from './cancel-registry.js';
import type { ClientSession } from './client-session.js';

export interface ProxyStats {
  bytesFromClients: number;
  bytesToClients: number;
  /** sessions ended by the proxy with an ErrorResponse (failover, lost backend) */
  terminated: number;
  protocolErrors: number;
  cancelsForwarded: number;
  cancelsUnknown: number;
  /** ReadyForQuery messages the Node relay passed to clients after the first (one per Query or Sync answered) */
  ready: number;
  /** of those, the ones saying idle: transactions (autocommit statements included) ended */
  readyIdle: number;
}

export interface ProxyContext {
  cfg: ProxyConfig;
  monitor: HealthMonitor;
  cancels: CancelRegistry;
  log: Logger;
  secureContext: SecureContext | null;
  stats: ProxyStats;
  /** the native relay sessions are handed to after startup (null: Node relays everything) */
  relay: ProxyRelay | null;
  nativeSessions: Map<number, ClientSession>;
  /**
   * send a CancelRequest to the server that owns this key (unknown keys are ignored, as PostgreSQL
   * does); resolved once the server has taken it (it closed that connection), never rejected
   */
  cancelFor(pid: number, key: Buffer): Promise<void>;
  /** the backend for a read-only session */
  pickReader(): BackendState | null;
  /**
   * hold a place for one more session on this backend, within what the server leaves to ordinary
   * clients (max_connections − superuser_reserved_connections, minus a little headroom); false: full
   */
  reserve(name: string): boolean;
  /** give back a place held by reserve() for a session that did not attach */
  release(name: string): void;
  /** a session that reserved a place is connected to its backend */
  attach(s: ClientSession): void;
  sessionsOn(name: string): number;
  detach(s: ClientSession): void;
  /** --pool-mode: the pool takes a client once its startup packet is read (null: no pooling) */
  pool: { adopt(socket: Socket, params: Record<string, string>, rest: Buffer, kind: 'rw' | 'ro', tls: boolean): void } | null;
}
