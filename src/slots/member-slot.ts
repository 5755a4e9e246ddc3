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
