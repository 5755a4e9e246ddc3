/**
 * Cluster members as the proxy manages them: their names (the agent's node name when it has an
 * agent, else host_port) and the physical replication slot each one streams through on whichever
 * node it follows (`pgha_<name>`, the name `pgha slots sync` and the agents' automatic rejoin use).
 */
import { AgentClient } from '../../src/ship/client.js';
import { memberSlotName } from '../../src/slots/member-slot.js';

export { isMemberSlot, memberSlotName, MEMBER_SLOT_PREFIX } from '../../src/slots/member-slot.js';

/** backend (host:port) → agent URL, and the agents' node names, learnt once each */
export class MemberDirectory {
  private readonly names = new Map<string, string>();
  private asking = new Set<string>();

  constructor(
    readonly agents: Map<string, string>,
    private readonly token: string | undefined,
  ) {}

  agentOf(backend: string): string | null {
    return this.agents.get(backend) ?? null;
  }

  /** the member's name: its agent's node name once known, else host_port */
  nameOf(backend: string): string {
    return this.names.get(backend) ?? backend.replace(/[^A-Za-z0-9]/g, '_');
  }

  slotOf(backend: string): string {
    return memberSlotName(this.nameOf(backend));
  }

  /** ask the agents whose name is not known yet (never throws) */
  async learn(): Promise<void> {
    await Promise.all(
      [...this.agents].map(async ([backend, url]) => {
        if (this.names.has(backend) || this.asking.has(backend)) return;
        this.asking.add(backend);
        try {
          const sys = await new AgentClient(url, this.token ?? '', 3000).get<{ name: string }>('system');
          if (sys.name) this.names.set(backend, sys.name);
        } catch {
          // asked again at the next round
        } finally {
          this.asking.delete(backend);
        }
      }),
    );
  }
}
