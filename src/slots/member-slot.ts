/**
 * The physical replication slot a cluster member streams through on whichever node it follows:
 * `pgha_<member name>` — what the proxy's cluster manager keeps on the primary, what the agent's
 * automatic rejoin creates before it points its node at the primary, and what `pgha slots sync` uses.
 */
export const MEMBER_SLOT_PREFIX = 'pgha_';

/** a replication slot name: lower-case letters, digits and underscores, at most 63 bytes */
export function memberSlotName(member: string): string {
  return (MEMBER_SLOT_PREFIX + member.toLowerCase().replace(/[^a-z0-9_]/g, '_')).slice(0, 63);
}

export const isMemberSlot = (slot: string): boolean => slot.startsWith(MEMBER_SLOT_PREFIX);

/** what can run a query (a pg Client): kept structural so this module needs no driver import */
interface Queryable {
  query(sql: string, params?: unknown[]): Promise<unknown>;
}

/**
 * Create a physical slot reserving WAL from now (PostgreSQL allows it on a standby too); one that
 * exists already is fine. True when this call created it.
 */
export async function createPhysicalSlot(c: Queryable, slot: string): Promise<boolean> {
  try {
    await c.query('SELECT pg_create_physical_replication_slot($1, true)', [slot]);
    return true;
  } catch (e) {
    if ((e as { code?: string }).code === '42710') return false; // duplicate_object: made before or meanwhile
    throw e;
  }
}
