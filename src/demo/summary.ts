/**
 * The demo's result: the checks (each with what it found), the JSON object `pgha demo --json`
 * prints, and the human summary table.
 */
import type { Phase, Timeline } from './timeline.js';

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export interface NodeReport {
  name: string;
  /** in the proxy's /status at the end */
  role: string;
  pgPort: number;
  agent: string;
  dataDir: string;
  rows: number | null;
  counter: number | null;
  /** acknowledged writes this node lacks */
  missing: number | null;
  pids: { postgres: number[]; agent: number | null };
}

export interface DemoResult {
  ok: boolean;
  acknowledged: number;
  lost: number;
  phases: { detectMs: number | null; promoteMs: number | null; rerouteMs: number | null; firstWriteMs: number | null; rejoinMs: number | null; slotMs: number | null };
  failover: Timeline['failover'] & { fromNode: string; toNode: string | null };
  rejoin: Timeline['rejoin'] & { node: string };
  slot: Timeline['slot'] & { plugin: string; decodedAcknowledged: number; syncPasses: number };
  writes: { acknowledged: number; beforeKill: number; afterKill: number; inDoubt: number; clientErrors: number; lateAcksOnOldPrimary: number };
  checks: Check[];
  nodes: NodeReport[];
  proxy: { listen: string; admin: string; pid: number | null };
  pids: { postgres: number[]; agents: number[]; proxy: number | null; all: number[] };
  tempDir: string;
  kept: boolean;
  logs: Record<string, string>;
  durationMs: number;
}

const fmtMs = (ms: number | null) => (ms === null ? 'not seen' : `${(ms / 1000).toFixed(3)} s`);

export const PHASE_LABEL: Record<Phase, string> = {
  detect: 'detection (proxy sees the primary down)',
  promote: 'promotion (new primary accepts writes)',
  reroute: 're-routing (proxy sends clients there)',
  firstWrite: 'first acknowledged write after the kill',
  rejoin: 'old primary back as a streaming standby',
  slot: 'logical slot live on the new primary',
};

/** left-aligned columns with a rule under the header */
function table(rows: string[][], header: string[]): string {
  const all = [header, ...rows];
  const w = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (c ?? '').padEnd(w[i])).join('  ').trimEnd();
  return [line(header), w.map((x) => '-'.repeat(x)).join('  '), ...rows.map(line)].join('\n') + '\n';
}

export function renderSummary(r: DemoResult): string {
  const out: string[] = [];
  const p = r.phases;
  out.push('');
  out.push(
    table(
      [
        ['detect', fmtMs(p.detectMs), PHASE_LABEL.detect],
        ['promote', fmtMs(p.promoteMs), `${PHASE_LABEL.promote}: ${r.failover.toNode ?? '-'}`],
        ['reroute', fmtMs(p.rerouteMs), PHASE_LABEL.reroute],
        ['first write', fmtMs(p.firstWriteMs), PHASE_LABEL.firstWrite],
        ['rejoin', fmtMs(p.rejoinMs), `${PHASE_LABEL.rejoin} (${r.rejoin.path ?? '?'})`],
        ['slot', fmtMs(p.slotMs), PHASE_LABEL.slot],
      ],
      ['phase', 'after kill', 'what'],
    ),
  );
  out.push(
    table(
      [
        ['acknowledged writes', String(r.acknowledged), `${r.writes.beforeKill} before the kill, ${r.writes.afterKill} after`],
        ['writes lost', String(r.lost), 'acknowledged, but missing on some node'],
        ['in doubt', String(r.writes.inDoubt), 'COMMIT sent, no answer (not counted either way)'],
        ['rejoin path', r.rejoin.path ?? '-', `${r.rejoin.node}: ${r.rejoin.lostTransactions ?? '?'} transactions thrown away`],
        [
          'slot',
          r.slot.onNewPrimary ? `on ${r.slot.node}` : 'NOT on the new primary',
          `${r.slot.name}: confirmed_flush_lsn ${r.slot.confirmedFlush ?? '-'}, ${r.slot.decodedAcknowledged} of ${r.acknowledged} acknowledged writes decoded`,
        ],
      ],
      ['result', 'value', ''],
    ),
  );
  out.push(
    table(
      r.nodes.map((n) => [n.name, n.role, String(n.pgPort), n.rows === null ? '-' : String(n.rows), n.counter === null ? '-' : String(n.counter), n.missing === null ? '-' : String(n.missing)]),
      ['node', 'role at the end', 'port', 'rows', 'counter', 'missing'],
    ),
  );
  for (const c of r.checks) out.push(`${c.ok ? 'ok  ' : 'FAIL'}  ${c.name}: ${c.detail}`);
  out.push('');
  out.push(r.ok ? 'every check holds.' : `failed: ${r.checks.filter((c) => !c.ok).map((c) => c.name).join('; ')}`);
  out.push(r.kept ? `kept ${r.tempDir} — logs: ${Object.values(r.logs).join(' ')}` : `stopped every process it started and removed ${r.tempDir}.`);
  return out.join('\n') + '\n';
}
