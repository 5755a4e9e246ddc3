/**
 * SQL the proxy runs as an administrator (promotion, re-pointing, slots, synchronous standbys): one
 * short-lived connection per task with the health-check role, like the health checks themselves.
 */
import pg from 'pg';
import type { BackendAddress, BackendTls } from './connect.js';
import { healthClient, type HealthCredentials } from '../health/probe.js';

export interface AdminSqlOptions {
  credentials: HealthCredentials;
  tls: BackendTls;
  timeoutMs: number;
}

export async function withServer<T>(address: BackendAddress, o: AdminSqlOptions, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = healthClient(address, o.credentials, o.tls, o.timeoutMs);
  c.on('error', () => undefined);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** ALTER SYSTEM SET name = value, then reload (both settings used here take effect on reload) */
export async function setAndReload(c: pg.Client, name: 'primary_conninfo' | 'primary_slot_name' | 'synchronous_standby_names', value: string): Promise<void> {
  await c.query(`ALTER SYSTEM SET ${name} = ${c.escapeLiteral(value)}`);
  await c.query('SELECT pg_reload_conf()');
}

/** create a physical slot reserving WAL now; an existing one is fine (true: created) */
export { createPhysicalSlot as ensurePhysicalSlot } from '../../src/slots/member-slot.js';
