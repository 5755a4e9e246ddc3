/**
 * Retention. `--keep N`: the N newest backups. `--retention 5d`: a recovery window — every backup
 * that ended inside the window, plus the newest one before it (restoring to the window's first
 * moment needs it). Both: a backup either rule keeps is kept; the newest backup is always kept.
 * WAL (segments, .partial and .backup files) is removed only below the start segment of the oldest
 * kept backup, on every timeline; history files stay. `planExpire` decides (pure), `expire` acts.
 */
import { parseLsn, segmentOf } from '../formats/lsn.js';
import { RepoProblem, type BackupManifest, type Repository, type WalEntry } from './repo.js';

export interface RetentionRule {
  keep?: number;
  /** recovery window in milliseconds */
  windowMs?: number;
}

export interface ExpirePlan {
  keep: string[];
  remove: string[];
  /** WAL below this segment number goes (null: no WAL is removed) */
  walBelowSegno: bigint | null;
}

/** `5d`, `12h`, `30m`, `90s`, `2w` → milliseconds */
export function parseRetention(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$/.exec(text.trim());
  if (!m) throw new RepoProblem(`bad --retention "${text}": expected a number and a unit (s, m, h, d, w), e.g. 5d`);
  return Number(m[1]) * { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 604800e3 }[m[2] as 's' | 'm' | 'h' | 'd' | 'w'];
}

/** backups oldest first */
export function planExpire(backups: BackupManifest[], rule: RetentionRule, now: number, segmentSize: number): ExpirePlan {
  if (rule.keep === undefined && rule.windowMs === undefined) throw new RepoProblem('give --keep N or --retention AGE');
  if (rule.keep !== undefined && (!Number.isInteger(rule.keep) || rule.keep < 1)) throw new RepoProblem(`--keep must be a whole number of at least 1, got ${rule.keep}`);
  const sorted = [...backups].sort((a, b) => Date.parse(a.stopTime) - Date.parse(b.stopTime));
  const keep = new Set<string>();
  if (sorted.length) keep.add(sorted[sorted.length - 1].label);
  if (rule.keep !== undefined) for (const b of sorted.slice(-rule.keep)) keep.add(b.label);
  if (rule.windowMs !== undefined) {
    const since = now - rule.windowMs;
    const inside = sorted.filter((b) => Date.parse(b.stopTime) >= since);
    const before = sorted.filter((b) => Date.parse(b.stopTime) < since);
    for (const b of inside) keep.add(b.label);
    if (before.length) keep.add(before[before.length - 1].label);
  }
  const kept = sorted.filter((b) => keep.has(b.label));
  const walBelowSegno = kept.length ? kept.map((b) => segmentOf(parseLsn(b.startLsn), segmentSize)).reduce((a, b) => (a < b ? a : b)) : null;
  return { keep: kept.map((b) => b.label), remove: sorted.filter((b) => !keep.has(b.label)).map((b) => b.label), walBelowSegno };
}

export interface ExpireReport extends ExpirePlan {
  dryRun: boolean;
  walRemoved: string[];
  /** backups without a readable manifest: listed, never removed by a rule (remove them by hand) */
  unreadable: string[];
}

export async function expire(repo: Repository, rule: RetentionRule, opts: { dryRun?: boolean; now?: number } = {}): Promise<ExpireReport> {
  const cfg = await repo.config();
  if (!cfg) throw new RepoProblem(`${repo.location} is not a backup repository (no pgha-repo.json)`);
  const listing = await repo.backups();
  const manifests = listing.flatMap((b) => (b.manifest ? [b.manifest] : []));
  const plan = planExpire(manifests, rule, opts.now ?? Date.now(), cfg.segmentSize);
  const wal: WalEntry[] = plan.walBelowSegno === null ? [] : (await repo.walEntries()).filter((e) => e.kind !== 'history' && e.segno !== undefined && e.segno < plan.walBelowSegno!);
  const report: ExpireReport = { ...plan, dryRun: opts.dryRun === true, walRemoved: wal.map((e) => e.name), unreadable: listing.filter((b) => !b.manifest).map((b) => b.label) };
  if (opts.dryRun) return report;
  for (const label of plan.remove) {
    // the manifest first: from then on the backup is not listed, whatever happens to the rest
    await repo.storage.delete(`backups/${label}/manifest.json`);
    for (const o of await repo.storage.list(`backups/${label}/`)) await repo.storage.delete(o.key);
  }
  for (const e of wal) await repo.storage.delete(e.key);
  return report;
}
