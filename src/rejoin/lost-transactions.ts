/**
 * The lost-transaction report: every transaction that committed on the old node's timeline after
 * the fork point (so it is not on the new primary and a rewind or re-clone throws it away), with its
 * commit time and the relations its records touched. Decoded from the old node's own WAL.
 */
import { formatLsn, segmentOf, type Lsn } from '../formats/lsn.js';
import { decodeRecord, recordEntries, streamMajor } from '../formats/wal/record.js';
import { selectSegments } from '../wal/segments.js';
import { scanWalStream, visitedRanges, type ScanImplementation } from '../wal/stream.js';

const RM_XACT_ID = 1;
const XLOG_XACT_COMMIT = 0x00;
const XLOG_XACT_COMMIT_PREPARED = 0x30;
const XLOG_XACT_OPMASK = 0x70;
const XLOG_XACT_HAS_INFO = 0x80;
const XACT_XINFO_HAS_DBINFO = 0x01;
const XACT_XINFO_HAS_SUBXACTS = 0x02;
const XACT_XINFO_HAS_RELFILENODES = 0x04;
const XACT_XINFO_HAS_INVALS = 0x08;
const XACT_XINFO_HAS_TWOPHASE = 0x10;
const XACT_XINFO_HAS_DROPPED_STATS = 0x100;
/** PostgreSQL's epoch (2000-01-01) in Unix milliseconds */
const PG_EPOCH_MS = 946_684_800_000;

export interface LostTransaction {
  xid: number;
  commitLsn: string;
  commitTime: string;
  twoPhase: boolean;
  subxacts: number[];
  /** relations touched, as tablespace/database/relfilenode */
  relations: string[];
}

export interface LostTransactionReport {
  forkLsn: string;
  timeline: number;
  endLsn: string;
  endReason: string;
  transactions: LostTransaction[];
}

interface ParsedCommit {
  time: bigint;
  subxacts: number[];
  twophaseXid: number | null;
}

/** ParseCommitRecord (xactdesc.c) for what the report needs; main data starts at `p` */
function parseCommit(rec: Uint8Array, p: number, end: number, info: number, major: number): ParsedCommit | null {
  const dv = new DataView(rec.buffer, rec.byteOffset, rec.byteLength);
  const need = (n: number) => p + n <= end;
  if (!need(8)) return null;
  const time = dv.getBigInt64(p, true);
  p += 8;
  let xinfo = 0;
  if (info & XLOG_XACT_HAS_INFO) {
    if (!need(4)) return null;
    xinfo = dv.getUint32(p, true);
    p += 4;
  }
  if (xinfo & XACT_XINFO_HAS_DBINFO) p += 8;
  const subxacts: number[] = [];
  if (xinfo & XACT_XINFO_HAS_SUBXACTS) {
    if (!need(4)) return null;
    const n = dv.getInt32(p, true);
    p += 4;
    if (n < 0 || !need(4 * n)) return null;
    for (let i = 0; i < n; i++) subxacts.push(dv.getUint32(p + 4 * i, true));
    p += 4 * n;
  }
  if (xinfo & XACT_XINFO_HAS_RELFILENODES) {
    if (!need(4)) return null;
    p += 4 + 12 * dv.getInt32(p, true);
  }
  if (xinfo & XACT_XINFO_HAS_DROPPED_STATS && major >= 15) {
    if (!need(4)) return null;
    p += 4 + (major >= 18 ? 16 : 12) * dv.getInt32(p, true);
  }
  if (xinfo & XACT_XINFO_HAS_INVALS) {
    if (!need(4)) return null;
    p += 4 + 16 * dv.getInt32(p, true);
  }
  let twophaseXid: number | null = null;
  if (xinfo & XACT_XINFO_HAS_TWOPHASE) {
    if (!need(4)) return null;
    twophaseXid = dv.getUint32(p, true);
  }
  return { time, subxacts, twophaseXid };
}

/**
 * Scan `walDir` on `timeline` from `forkLsn` to the end of valid WAL and report the transactions
 * that committed there.
 */
export async function lostTransactions(walDir: string, segmentSize: number, timeline: number, forkLsn: Lsn, impl: ScanImplementation): Promise<LostTransactionReport> {
  const sel = selectSegments(walDir, segmentSize, { timeline, fromSegno: segmentOf(forkLsn, segmentSize) });
  const touched = new Map<number, Set<string>>();
  const commits: LostTransaction[] = [];
  const summary = await scanWalStream({
    files: sel.files,
    segmentSize,
    mode: 'records',
    start: forkLsn,
    impl,
    onSegment: (visit) => {
      const major = streamMajor(visit.result.carry);
      const bs = visit.result.carry.blockSize;
      const ranges = visitedRanges(visit);
      for (const entry of recordEntries(visit.result)) {
        const { rmid, info, xid } = entry;
        const isCommit = rmid === RM_XACT_ID && [XLOG_XACT_COMMIT, XLOG_XACT_COMMIT_PREPARED].includes(info & XLOG_XACT_OPMASK);
        if (entry.blocks === 0 && !isCommit) continue;
        const rec = decodeRecord(ranges, entry, major, bs);
        if (!rec) continue;
        if (xid !== 0 && rec.blockRefs.length) {
          const set = touched.get(xid) ?? new Set<string>();
          for (const b of rec.blockRefs) set.add(`${b.spcNode}/${b.dbNode}/${b.relNode}`);
          touched.set(xid, set);
        }
        if (!isCommit) continue;
        const c = parseCommit(rec.bytes, rec.mainDataOffset, rec.bytes.length, info, major);
        if (!c) continue;
        const committed = c.twophaseXid ?? xid;
        commits.push({
          xid: committed,
          commitLsn: formatLsn(entry.lsn),
          commitTime: new Date(Number(c.time / 1000n) + PG_EPOCH_MS).toISOString(),
          twoPhase: c.twophaseXid !== null,
          subxacts: c.subxacts,
          relations: [],
        });
      }
    },
  });
  for (const t of commits) {
    const rels = new Set<string>();
    for (const x of [t.xid, ...t.subxacts]) for (const r of touched.get(x) ?? []) rels.add(r);
    t.relations = [...rels].sort();
  }
  return { forkLsn: formatLsn(forkLsn), timeline, endLsn: formatLsn(summary.endLsn), endReason: summary.endReason, transactions: commits };
}
